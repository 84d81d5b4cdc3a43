-- pgsession schema, for PostgreSQL 12 or later.
--
-- PostgresBackend.Migrate applies this file (with the table name it was given
-- in place of "sessions") under an advisory lock, so it is safe to call from
-- several instances at once. Users of goose, golang-migrate or atlas can copy
-- it into a migration instead. Each statement is idempotent.

CREATE TABLE IF NOT EXISTS sessions (
    -- SHA-256 of the session key. The key itself is never stored, so the
    -- table's contents cannot be replayed as cookies.
    key_hash    bytea       PRIMARY KEY CHECK (octet_length(key_hash) = 32),
    -- The session's data: one JSON object, top-level keys as set by Session.Set.
    data        jsonb       NOT NULL,
    -- When the session (or its current key) was created: absolute timeout.
    created_at  timestamptz NOT NULL,
    -- The last access written: idle timeout. Lags by up to TimeoutResolution.
    accessed_at timestamptz NOT NULL,
    -- Who is logged in (the value under Config.PrincipalKey), or NULL.
    principal   text
)
-- Room on each page for updated rows: a data change within the timeout
-- resolution leaves every indexed column alone, so it is a HOT update.
WITH (fillfactor = 80);

-- Both indexes serve DeleteExpired, which removes rows past either timeout.
CREATE INDEX IF NOT EXISTS sessions_accessed_at_idx ON sessions (accessed_at);
CREATE INDEX IF NOT EXISTS sessions_created_at_idx ON sessions (created_at);

-- Serves DeleteByPrincipal and ListByPrincipal ("log out everywhere").
CREATE INDEX IF NOT EXISTS sessions_principal_idx ON sessions (principal) WHERE principal IS NOT NULL;
