package pgstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Distribute makes the session table a distributed table of Citus, sharded
// by session_id, for a site whose session traffic outgrows one PostgreSQL
// server (see the README's "Scaling out on Citus"): every statement on one
// session then runs on one shard. It migrates the table first (see
// Migrate), and it is idempotent and safe to call from several instances at
// once, like Migrate. Rows already in the table move into the shards.
//
// Call it through the Citus coordinator. Without the citus extension in the
// database it returns an error and changes nothing beyond Migrate's; so it
// does for a table Citus already distributes by another column, or holds as
// a reference or local table (alter_distributed_table or
// undistribute_table change those).
func (b *Backend) Distribute(ctx context.Context) error {
	if err := b.Migrate(ctx); err != nil {
		return err
	}
	p := b.plan.Load() // chosen by Migrate
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("pgsession: distribute: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, p.withMode(int64(migrateLock))...); err != nil {
		return fmt.Errorf("pgsession: distribute: lock: %w", err)
	}
	var citus bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')`, p.withMode()...).Scan(&citus); err != nil {
		return fmt.Errorf("pgsession: distribute: %w", err)
	}
	if !citus {
		return fmt.Errorf("pgsession: distribute %s: the citus extension is not installed in this database (CREATE EXTENSION citus, on the coordinator)", b.table)
	}
	var method, column sql.NullString
	err = tx.QueryRowContext(ctx, `SELECT partmethod::text, column_to_column_name(logicalrelid, partkey)
		FROM pg_dist_partition WHERE logicalrelid = to_regclass($1)`, p.withMode(b.table)...).Scan(&method, &column)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// Citus wants every unique constraint to hold the distribution
		// column: a table that kept its primary key (key_hash) through
		// Migrate gets (key_hash, session_id) first.
		current, err := b.checkTable(ctx, tx, p)
		if err != nil {
			return fmt.Errorf("pgsession: distribute: %w", err)
		}
		if !current.primaryKey {
			if _, err := tx.ExecContext(ctx, b.upgradePrimaryKey(current.pkName)); err != nil {
				return fmt.Errorf("pgsession: distribute %s: primary key: %w", b.table, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `SELECT create_distributed_table($1, 'session_id')`, p.withMode(b.table)...); err != nil {
			return fmt.Errorf("pgsession: distribute %s: %w", b.table, err)
		}
		// The rows were copied into the shards; drop the coordinator's own.
		if _, err := tx.ExecContext(ctx, `SELECT truncate_local_data_after_distributing_table($1)`, p.withMode(b.table)...); err != nil {
			return fmt.Errorf("pgsession: distribute %s: %w", b.table, err)
		}
	case err != nil:
		return fmt.Errorf("pgsession: distribute %s: %w", b.table, err)
	case method.String != "h" || column.String != "session_id":
		return fmt.Errorf("pgsession: distribute %s: Citus already holds it (method %q, column %q), want it distributed by session_id: "+
			"SELECT alter_distributed_table('%s', distribution_column := 'session_id') for a distributed table",
			b.table, method.String, column.String, b.table)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("pgsession: distribute: commit: %w", err)
	}
	b.distributed.Store(distributedYes)
	return nil
}
