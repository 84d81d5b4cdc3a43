package pgstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/pgsession/pgsession/backend"
)

// DeleteExpired implements backend.Backend, removing at most limit rows in one
// statement. Rows locked by a concurrent request are skipped (on a table
// distributed by Citus, waited for).
func (b *Backend) DeleteExpired(ctx context.Context, c backend.Cutoffs, limit int) (int, error) {
	args := []any{nullTime(c.IdleBefore), nullTime(c.CreatedBefore), limit, nullTime(c.Now)}
	var n int64
	err := b.cleanup(ctx, func(distributed bool) (err error) {
		query := sqlDeleteExpired
		if distributed {
			query = sqlDeleteExpiredDistributed
		}
		n, err = b.exec(ctx, query, args...)
		return err
	})
	return int(n), err
}

// DeleteExpiredExclusive implements backend.ExclusiveCleaner: DeleteExpired and
// the cleanup lock, a transaction-scoped advisory lock keyed by the table,
// in one statement. No connection or lock outlives the call, so it is safe
// behind any connection pooler.
func (b *Backend) DeleteExpiredExclusive(ctx context.Context, c backend.Cutoffs, limit int) (n int, ok bool, err error) {
	args := []any{nullTime(c.IdleBefore), nullTime(c.CreatedBefore), limit, nullTime(c.Now), b.table}
	err = b.cleanup(ctx, func(distributed bool) error {
		query := sqlDeleteExpiredExclusive
		if distributed {
			query = sqlDeleteExpiredDistributedExclusive
		}
		_, err := b.run(ctx, query, args, func(rows *sql.Rows) error {
			if !rows.Next() {
				return errors.Join(rows.Err(), errors.New("pgsession: cleanup returned no row"))
			}
			return rows.Scan(&ok, &n)
		})
		return err
	})
	if err != nil {
		return 0, false, err
	}
	return n, ok, nil
}

// Whether the table is distributed by Citus, as b.distributed holds it.
const (
	distributedUnknown int32 = iota
	distributedNo
	distributedYes
)

// cleanup runs one cleanup statement with do, which is told whether the
// table is distributed by Citus. That is looked up on first use (and set by
// Distribute); if the plain statement is refused as Citus refuses FOR
// UPDATE across shards (the table was distributed since), it is looked up
// again and the statement retried once.
func (b *Backend) cleanup(ctx context.Context, do func(distributed bool) error) error {
	for attempt := 0; ; attempt++ {
		state := b.distributed.Load()
		if state == distributedUnknown {
			dist, err := b.isDistributed(ctx)
			if err != nil {
				return err
			}
			state = distributedNo
			if dist {
				state = distributedYes
			}
			b.distributed.Store(state)
		}
		err := do(state == distributedYes)
		if err == nil || attempt > 0 || state != distributedNo || sqlState(err) != "0A000" {
			return err
		}
		b.distributed.Store(distributedUnknown) // feature_not_supported: look again
	}
}

// isDistributed reports whether the table is a Citus distributed table.
// Without the citus extension it costs one catalog query.
func (b *Backend) isDistributed(ctx context.Context) (bool, error) {
	if b.err != nil {
		return false, b.err
	}
	ctx, bound := b.withTimeout(ctx)
	defer bound.stop()
	table, err := quoteString(b.table)
	if err != nil {
		return false, err
	}
	p, err := b.stack(ctx)
	if p == nil {
		return false, fmt.Errorf("pgsession: %w", err)
	}
	var dist bool
	err = b.db.QueryRowContext(ctx, `SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL`, p.withMode()...).Scan(&dist)
	if err == nil && dist {
		err = b.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition
			WHERE logicalrelid = to_regclass(`+table+`) AND partmethod = 'h')`, p.withMode()...).Scan(&dist)
	}
	if err != nil {
		return false, b.explain(fmt.Errorf("pgsession: is %s distributed (Citus): %w", b.table, err))
	}
	return dist, nil
}
