package pgstore

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// schemaSQL is schema.sql, written for DefaultTable.
//
//go:embed schema.sql
var schemaSQL string

// migrateLock is the advisory lock key that serialises Migrate across
// instances ("pgsessio" in ASCII).
const migrateLock = 0x7067736573736970

// schemaName matches the table, index and constraint names in schema.sql.
var schemaName = regexp.MustCompile(`\bsessions(_[a-z_]+_idx|_pkey|_key_hash_check)?\b`)

// Schema returns the SQL that Migrate applies (schema.sql with this backend's
// table name), for users who run migrations with their own tool.
func (b *Backend) Schema() string {
	var out strings.Builder
	for line := range strings.Lines(schemaSQL) {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			line = schemaName.ReplaceAllStringFunc(line, b.quoteSchemaName)
		}
		out.WriteString(line)
	}
	return out.String()
}

// quoteSchemaName maps a table or index name of schema.sql to this backend's.
func (b *Backend) quoteSchemaName(name string) string {
	if suffix, _ := strings.CutPrefix(name, DefaultTable); suffix != "" {
		return pq.QuoteIdentifier(b.base + suffix)
	}
	return b.table
}

// upgradeColumns are the columns added since 0.1, which Migrate adds to an
// older table.
var upgradeColumns = map[string]string{
	"session_id":          "bytea NOT NULL",
	"idle_timeout_ms":     "bigint",
	"absolute_timeout_ms": "bigint",
	"persistent":          "boolean",
	"expires_at":          "timestamp with time zone",
	"user_agent":          "text",
	"client_addr":         "text",
	"prev_key_hash":       "bytea",
	"rotated_at":          "timestamp with time zone",
	"renewal":             "boolean",
}

// wantColumns is the shape Migrate requires of an existing table.
var wantColumns = map[string]string{
	"key_hash":    "bytea NOT NULL",
	"data":        "jsonb NOT NULL",
	"created_at":  "timestamp with time zone NOT NULL",
	"accessed_at": "timestamp with time zone NOT NULL",
	"principal":   "text",
}

// Migrate creates the table and its indexes if they are missing, and checks
// the shape of a table that already exists: a table of the same name that is
// not pgsession's (such as alexedwards/scs's "sessions") is reported as
// ErrSchemaMismatch and never used. It is idempotent and safe to call from
// several instances at once (it holds a PostgreSQL advisory lock).
func (b *Backend) Migrate(ctx context.Context) error {
	if b.err != nil {
		return b.err
	}
	// The driver stack is probed here, at startup, rather than at the
	// first request (see driverstack.go).
	p, err := b.stack(ctx)
	if err != nil {
		return fmt.Errorf("pgsession: migrate: %w", err)
	}
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("pgsession: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, p.withMode(int64(migrateLock))...); err != nil {
		return fmt.Errorf("pgsession: migrate: lock: %w", err)
	}
	current, err := b.checkTable(ctx, tx, p)
	if err != nil && !errors.Is(err, ErrNoTable) {
		return err
	}
	// Split schema.sql before the table name goes in: a quoted name may
	// itself contain a semicolon.
	for _, stmt := range splitSQL(schemaSQL) {
		if current.ok() && strings.HasPrefix(stmt, "ALTER TABLE") {
			continue // up to date: no ALTER TABLE, whose lock would stall requests
		}
		stmt = schemaName.ReplaceAllStringFunc(stmt, b.quoteSchemaName)
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("pgsession: migrate: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("pgsession: migrate: commit: %w", err)
	}
	return nil
}

// upgradePrimaryKey returns the statement that makes the table's primary
// key (key_hash, session_id), replacing the constraint named old (whatever
// its name; none if "").
func (b *Backend) upgradePrimaryKey(old string) string {
	stmt := "ALTER TABLE " + b.table + " "
	if old != "" {
		stmt += "DROP CONSTRAINT " + pq.QuoteIdentifier(old) + ", "
	}
	return stmt + "ADD CONSTRAINT " + pq.QuoteIdentifier(b.base+"_pkey") + " " + wantPrimaryKey
}

// tableState is what checkTable found.
type tableState struct {
	exists     bool   // the table exists with pgsession's columns
	columns    bool   // it has the columns added since 0.1 (upgradeColumns)
	primaryKey bool   // its primary key is (key_hash, session_id)
	pkName     string // the name of its primary key constraint, if any
	keyCheck   bool   // it has the check on key_hash's length that 0.3 drops
}

// ok reports whether the table is up to date.
func (s tableState) ok() bool { return s.exists && s.columns && !s.keyCheck }

// wantPrimaryKey is the primary key's definition since tokens carry the
// session ID (pg_get_constraintdef's form).
const wantPrimaryKey = "PRIMARY KEY (key_hash, session_id)"

// checkTable returns ErrSchemaMismatch if the table exists without
// pgsession's columns, and ErrNoTable if it does not exist. Otherwise it
// reports whether it is up to date: whether it has the columns added since
// 0.1 (upgradeColumns) and the primary key (key_hash, session_id).
func (b *Backend) checkTable(ctx context.Context, tx sqlx.QueryerContext, p *plan) (state tableState, err error) {
	rows, err := tx.QueryContext(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
		FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, p.withMode(b.table)...)
	if err != nil {
		return state, fmt.Errorf("pgsession: inspect table %s: %w", b.table, err)
	}
	defer rows.Close()
	have := map[string]string{}
	var found []string
	for rows.Next() {
		var name, typ string
		var notNull bool
		if err := rows.Scan(&name, &typ, &notNull); err != nil {
			return state, fmt.Errorf("pgsession: inspect table %s: %w", b.table, err)
		}
		if notNull {
			typ += " NOT NULL"
		}
		have[name] = typ
		found = append(found, name+" "+typ)
	}
	if err := rows.Err(); err != nil {
		return state, fmt.Errorf("pgsession: inspect table %s: %w", b.table, err)
	}
	if len(found) == 0 {
		return state, fmt.Errorf("%w: %s; %s", ErrNoTable, b.table, adviceMigrate)
	}
	for name, typ := range wantColumns {
		if have[name] != typ {
			return state, fmt.Errorf("%w: %s has columns (%s), want key_hash bytea, data jsonb, created_at and accessed_at timestamptz, all NOT NULL, and principal text; "+
				"if it belongs to another library (alexedwards/scs uses \"sessions\"), choose another name with WithTable",
				ErrSchemaMismatch, b.table, strings.Join(found, ", "))
		}
	}
	state.exists, state.columns = true, true
	for name, typ := range upgradeColumns {
		if have[name] != typ {
			state.columns = false
		}
	}
	// The primary key, and the check of key_hash's length by the name
	// schema.sql drops it by.
	rows, err = tx.QueryContext(ctx, `SELECT contype = 'p', conname, pg_get_constraintdef(oid) FROM pg_constraint
		WHERE conrelid = to_regclass($1) AND (contype = 'p' OR contype = 'c' AND conname = $2)`,
		p.withMode(b.table, b.base+"_key_hash_check")...)
	if err != nil {
		return state, fmt.Errorf("pgsession: inspect table %s: %w", b.table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var primary bool
		var name, def string
		if err := rows.Scan(&primary, &name, &def); err != nil {
			return state, fmt.Errorf("pgsession: inspect table %s: %w", b.table, err)
		}
		if primary {
			state.pkName, state.primaryKey = name, def == wantPrimaryKey
		} else {
			state.keyCheck = true
		}
	}
	if err := rows.Err(); err != nil {
		return state, fmt.Errorf("pgsession: inspect table %s: %w", b.table, err)
	}
	return state, nil
}

// adviceMigrate tells what to do about a missing or foreign table.
const adviceMigrate = "call Migrate at startup, or apply Schema() with your migration tool"

// Check reports whether the session table exists with the columns pgsession
// needs, for applications that create it with their own migration tool
// instead of Migrate: ErrNoTable if it is missing, ErrSchemaMismatch if a
// table of that name has another shape, both with advice on what to do. It
// costs one catalog query and changes nothing. Call it at startup so a
// missing migration fails there rather than at the first request.
func (b *Backend) Check(ctx context.Context) error {
	if b.err != nil {
		return b.err
	}
	ctx, bound := b.withTimeout(ctx)
	defer bound.stop()
	p, err := b.stack(ctx)
	if err != nil {
		return fmt.Errorf("pgsession: check table %s: %w", b.table, err)
	}
	// In a transaction, so that a pooler keeps the parameterised query on
	// one server connection whatever the driver does.
	tx, err := b.db.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return b.explain(fmt.Errorf("pgsession: check table %s: %w", b.table, err))
	}
	defer func() { _ = tx.Rollback() }()
	current, err := b.checkTable(ctx, tx, p)
	switch {
	case err != nil:
	case !current.columns:
		err = fmt.Errorf("%w: %s lacks the columns added since pgsession 0.1 (session_id, lifetime, device and predecessor columns); %s",
			ErrSchemaMismatch, b.table, adviceMigrate)
	}
	return err
}

// splitSQL splits a script into statements, dropping comments. schema.sql
// has no semicolons inside strings or comments.
func splitSQL(script string) []string {
	var lines []string
	for l := range strings.Lines(script) {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			lines = append(lines, l)
		}
	}
	var out []string
	for s := range strings.SplitSeq(strings.Join(lines, ""), ";") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
