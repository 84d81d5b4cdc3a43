package pgstore

// The statements, with {t} standing for the quoted table. The columns of a
// session's own lifetime (idle_timeout_ms, absolute_timeout_ms, persistent)
// are NULL together when it follows Config; a timeout of -1 is none.
//
// Every statement on one session names its row by both key_hash and
// session_id ($1 and the last argument), the primary key: on a table
// distributed by session_id (Citus) each then runs on one shard. Only a
// token of the old form (key alone) loads by key_hash alone (sqlLoadByKey):
// on Citus that asks every shard, on PostgreSQL it uses the primary key's
// first column; the session's first write names the row by both.
// micros follows a parameter that is a time as microseconds since the Unix
// epoch (see timeArg), making it a timestamptz, exactly: the driver sends
// an integer rather than formatting a timestamp.
const micros = ` * interval '1 microsecond' + timestamptz 'epoch'`

const (
	// The columns a load reads: the data; the three times in one array,
	// which the driver receives as binary bytes (see loadedRow.scan):
	// created_at, accessed_at and rotated_at (NULL when never rotated), each
	// in its binary wire form (microseconds since 2000-01-01 UTC); and the
	// lifetime columns (NULL together when the session follows Config), as
	// the integers and boolean they are. PostgreSQL's cost per load is mostly
	// in setting up the statement's expressions and output columns, not in
	// evaluating them: this list costs about 11,000 instructions a load, the
	// times packed by concatenation with the lifetime flattened into them
	// (twenty function nodes) 24,000, and the seven columns with the times as
	// text 13,000 plus lib/pq's parsing of them (see docs/performance.md).
	sqlLoadColumns = `data, array_send(ARRAY[created_at, accessed_at, rotated_at]), idle_timeout_ms, absolute_timeout_ms, persistent`
	sqlLoad        = `SELECT ` + sqlLoadColumns + ` FROM {t} WHERE key_hash = $1 AND session_id = $2`
	// A token of the old form does not carry the session_id: it is read too.
	sqlLoadByKey = `SELECT ` + sqlLoadColumns + `, session_id FROM {t} WHERE key_hash = $1`
	// A key that names no row may be its session's predecessor (sqlRotate):
	// the row by session_id (one shard on Citus) and the partial index on
	// prev_key_hash, with the row's current key hash and the rotation's kind.
	sqlLoadPredecessor = `SELECT ` + sqlLoadColumns + `, key_hash, COALESCE(renewal, false) FROM {t}
		WHERE prev_key_hash = $1 AND session_id = $2`
	// A row already under the new key can only be this insert's own
	// earlier attempt (the key is 256 random bits), whose answer was lost:
	// the repeat then does nothing. No conflict target: the primary key is
	// (key_hash, session_id), or key_hash alone on a table created before
	// 0.2 (Migrate keeps it; see schema.sql), and either is this row's.
	sqlInsert = `INSERT INTO {t} (key_hash, data, created_at, accessed_at, principal, session_id,
			idle_timeout_ms, absolute_timeout_ms, persistent, expires_at, user_agent, client_addr)
		VALUES ($1, $2::jsonb, ($3` + micros + `), ($4` + micros + `), $5, $6, $7, $8, $9, ($10` + micros + `), $11, $12)
		ON CONFLICT DO NOTHING`
	// sqlInsert, dropping the expired row ($13, $14) it replaces. On Citus
	// the two rows may live on two shards: one distributed transaction.
	sqlInsertReplacing = `WITH dead AS (DELETE FROM {t} WHERE key_hash = $13 AND session_id = $14)
		` + sqlInsert
	// GREATEST ignores a NULL $n: the access time then stays as it is.
	sqlTouch = `UPDATE {t} SET accessed_at = GREATEST(accessed_at, ($2` + micros + `)), expires_at = GREATEST(expires_at, ($3` + micros + `))
		WHERE key_hash = $1 AND session_id = $4`
	// The common write: keys set ($2) and deleted ($3) in the data, nothing
	// else but the access time and expiry moving forward (as in sqlTouch).
	sqlPatch = `UPDATE {t} SET data = (data || $2::jsonb) - COALESCE($3::text[], '{}'),
		accessed_at = GREATEST(accessed_at, ($4` + micros + `)), expires_at = GREATEST(expires_at, ($5` + micros + `)) WHERE key_hash = $1 AND session_id = $6`
	// Every other write. $8 says the lifetime columns become $9-$11 and expires_at $12;
	// otherwise expires_at only moves forward. Citus refuses a function that
	// is not IMMUTABLE (micros' timestamptz arithmetic) inside a CASE or
	// COALESCE of an UPDATE: the CASE picks only between a column and NULL,
	// and GREATEST, which ignores a NULL, applies the time outside it.
	sqlUpdate = `UPDATE {t} SET data = CASE WHEN $2 THEN $3::jsonb ELSE (data || $3::jsonb) - COALESCE($4::text[], '{}') END,
		accessed_at = GREATEST(accessed_at, ($5` + micros + `)), principal = CASE WHEN $6 THEN $7 ELSE principal END,
		idle_timeout_ms = CASE WHEN $8 THEN $9 ELSE idle_timeout_ms END,
		absolute_timeout_ms = CASE WHEN $8 THEN $10 ELSE absolute_timeout_ms END,
		persistent = CASE WHEN $8 THEN $11 ELSE persistent END,
		expires_at = GREATEST(CASE WHEN $8 THEN NULL ELSE expires_at END, ($12` + micros + `))
		WHERE key_hash = $1 AND session_id = $13`
	// A rotation moves the row to its new key in place rather than deleting
	// it and inserting a copy: a concurrent DeleteByPrincipal that waits on
	// the row's lock then re-checks the updated row and deletes it too, where
	// it would not see a freshly inserted one (READ COMMITTED), and of
	// concurrent rotations of one key exactly one finds the old key. The
	// session_id stays, and so does the row's shard on Citus (which refuses
	// to change a distribution column). The old key hash becomes the row's
	// predecessor (replacing any earlier one), rotated at the access time.
	sqlRotate = `UPDATE {t} SET key_hash = $2, prev_key_hash = key_hash, rotated_at = ($7` + micros + `), renewal = $19,
		data = CASE WHEN $3 THEN $4::jsonb ELSE (data || $4::jsonb) - COALESCE($5::text[], '{}') END,
		created_at = ($6` + micros + `), accessed_at = ($7` + micros + `), principal = CASE WHEN $8 THEN $9 ELSE principal END,
		idle_timeout_ms = CASE WHEN $10 THEN $11 ELSE idle_timeout_ms END,
		absolute_timeout_ms = CASE WHEN $10 THEN $12 ELSE absolute_timeout_ms END,
		persistent = CASE WHEN $10 THEN $13 ELSE persistent END,
		expires_at = ($14` + micros + `),
		user_agent = CASE WHEN $15 THEN $16 ELSE user_agent END, client_addr = CASE WHEN $15 THEN $17 ELSE client_addr END
		WHERE key_hash = $1 AND session_id = $18`
	// The common rotation (a login): sqlRotate for a patch that keeps the
	// lifetime and the device columns, with a third of its parameters.
	sqlRotatePatch = `UPDATE {t} SET key_hash = $2, prev_key_hash = key_hash, rotated_at = ($6` + micros + `), renewal = $11,
		data = (data || $3::jsonb) - COALESCE($4::text[], '{}'),
		created_at = ($5` + micros + `), accessed_at = ($6` + micros + `), principal = CASE WHEN $7 THEN $8 ELSE principal END,
		expires_at = ($9` + micros + `)
		WHERE key_hash = $1 AND session_id = $10`
	sqlExists = `SELECT 1 FROM {t} WHERE key_hash = $1 AND session_id = $2`
	sqlDelete = `DELETE FROM {t} WHERE key_hash = $1 AND session_id = $2`
	// $2: only this session_id, $3: all but this one; NULL for no limit.
	sqlDeleteByPrincipal = `DELETE FROM {t} WHERE principal = $1
		AND ($2::bytea IS NULL OR session_id = $2) AND ($3::bytea IS NULL OR session_id <> $3)`
	sqlListByPrincipal = `SELECT key_hash, session_id, created_at, accessed_at, idle_timeout_ms, absolute_timeout_ms, persistent,
		user_agent, client_addr FROM {t} WHERE principal = $1 ORDER BY accessed_at DESC`
	// sqlExpired matches the rows past the cutoffs: accessed before $1 or
	// created before $2 (rows following Config), or expires_at before $4
	// (rows with a lifetime of their own).
	sqlExpired = `((idle_timeout_ms IS NULL AND (accessed_at < $1 OR created_at < $2)) OR expires_at < $4)`
	// = ANY(ARRAY(...)) rather than IN (...): the planner then deletes by
	// primary key instead of hash-joining against a scan of the whole table,
	// so a batch costs in proportion to its size, not the table's.
	sqlDeleteExpired = `DELETE FROM {t} WHERE key_hash = ANY(ARRAY(
		SELECT key_hash FROM {t} WHERE ` + sqlExpired + ` LIMIT $3 FOR UPDATE SKIP LOCKED))`
	// sqlDeleteExpired under the cleanup lock of the table $5: a
	// transaction-scoped advisory lock whose first key is "pgsm" in ASCII,
	// taken without waiting and released when the statement ends. When it
	// is not granted, the gating condition stops the scan before any row.
	sqlDeleteExpiredExclusive = `WITH lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(1886610285, hashtext($5)) AS ok),
		del AS (DELETE FROM {t} WHERE key_hash = ANY(ARRAY(
			SELECT key_hash FROM {t} WHERE (SELECT ok FROM lock) AND ` + sqlExpired + ` LIMIT $3 FOR UPDATE SKIP LOCKED)) RETURNING 1)
		SELECT (SELECT ok FROM lock), (SELECT count(*) FROM del)`
	// The cleanup of a table distributed by Citus, which refuses FOR UPDATE
	// across shards. Citus runs the inner SELECT first (each shard stops at
	// $3 rows, the coordinator keeps $3 of them), then the DELETE on every
	// shard, by primary key (its first column) for those $3 key hashes. With
	// no row lock between the two, the DELETE checks the cutoffs again: a
	// row a request touched meanwhile stays (READ COMMITTED re-checks a row
	// it waited for). A row locked by a request is waited for, not skipped.
	sqlDeleteExpiredDistributed = `DELETE FROM {t} WHERE key_hash = ANY(ARRAY(
		SELECT key_hash FROM {t} WHERE ` + sqlExpired + ` LIMIT $3)) AND ` + sqlExpired
	// sqlDeleteExpiredDistributed under the cleanup lock, as
	// sqlDeleteExpiredExclusive. Citus takes the lock on the node the
	// statement was sent to, before it runs the DELETE.
	sqlDeleteExpiredDistributedExclusive = `WITH lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(1886610285, hashtext($5)) AS ok),
		del AS (DELETE FROM {t} WHERE key_hash = ANY(ARRAY(
			SELECT key_hash FROM {t} WHERE (SELECT ok FROM lock) AND ` + sqlExpired + ` LIMIT $3)) AND ` + sqlExpired + ` RETURNING 1)
		SELECT (SELECT ok FROM lock), (SELECT count(*) FROM del)`
)
