package pgstore

import (
	"context"
	"database/sql"

	"github.com/pgsession/pgsession/backend"
)

// DeleteByPrincipal implements backend.PrincipalBackend.
func (b *Backend) DeleteByPrincipal(ctx context.Context, principal string, only, except backend.SessionID) (int, error) {
	n, err := b.exec(ctx, sqlDeleteByPrincipal, principal, nullSessionID(only), nullSessionID(except))
	return int(n), err
}

// ListByPrincipal implements backend.PrincipalBackend.
func (b *Backend) ListByPrincipal(ctx context.Context, principal string) ([]backend.Record, error) {
	var out []backend.Record
	_, err := b.run(ctx, sqlListByPrincipal, []any{principal}, func(rows *sql.Rows) error {
		for rows.Next() {
			var r backend.Record
			var id, sid []byte
			var lt storedLifetime
			var ua, addr sql.NullString
			if err := rows.Scan(&id, &sid, &r.Created, &r.Accessed, &lt.idle, &lt.absolute, &lt.persistent, &ua, &addr); err != nil {
				return err
			}
			copy(r.ID[:], id)
			copy(r.SessionID[:], sid)
			r.Lifetime, r.Device = lt.lifetime(), backend.Device{UserAgent: ua.String, Addr: addr.String}
			out = append(out, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
