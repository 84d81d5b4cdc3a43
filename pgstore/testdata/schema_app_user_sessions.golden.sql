-- pgsession schema, for PostgreSQL 13 or later.
--
-- PostgresBackend.Migrate applies this file (with the table name it was given
-- in place of "sessions") under an advisory lock, so it is safe to call from
-- several instances at once. Users of goose, golang-migrate or atlas can copy
-- it into a migration instead. Each statement is idempotent.
--
-- To spread the table over a Citus cluster, distribute it by session_id
-- (PostgresBackend.Distribute, or SELECT create_distributed_table('sessions',
-- 'session_id')): every statement on one session then runs on one shard.
-- A table created before pgsession 0.2 has the primary key (key_hash), which
-- pgsession keeps working with; Citus needs (key_hash, session_id), and
-- Distribute changes it first (ALTER TABLE sessions DROP CONSTRAINT
-- sessions_pkey, ADD PRIMARY KEY (key_hash, session_id): an exclusive lock
-- on the table while the index is rebuilt).

CREATE TABLE IF NOT EXISTS "app"."user_sessions" (
    -- SHA-256 of the session key (32 bytes). The key itself is never
    -- stored, so the table's contents cannot be replayed as cookies.
    key_hash    bytea       NOT NULL,
    -- The session's data: one JSON object, top-level keys as set by Session.Set.
    data        jsonb       NOT NULL,
    -- When the session (or its current key) was created: absolute timeout.
    created_at  timestamptz NOT NULL,
    -- The last access written: idle timeout. Lags by up to TimeoutResolution.
    accessed_at timestamptz NOT NULL,
    -- Who is logged in (the value under Config.PrincipalKey), or NULL.
    principal   text,
    -- The session's lasting name: it stays when the key rotates (SessionID).
    session_id  bytea       NOT NULL DEFAULT uuid_send(gen_random_uuid()),
    -- The session's own lifetime (SetLifetime), all NULL when it follows
    -- Config: timeouts in milliseconds (-1: none) and whether the cookie
    -- persists; expires_at is when it expires under them, for cleanup.
    idle_timeout_ms     bigint,
    absolute_timeout_ms bigint,
    persistent          boolean,
    expires_at          timestamptz,
    -- The client that created or last rotated it, if Config.Device records
    -- it (personal data).
    user_agent  text,
    client_addr text,
    -- The key this row's key replaced (SHA-256, as key_hash), when, and
    -- whether that rotation kept who is signed in (a renewal): a request in
    -- flight with that key is recognised for Config.RotationGrace, served
    -- after a renewal, refused after a login or logout. One at most: the
    -- next rotation replaces it.
    prev_key_hash bytea,
    rotated_at    timestamptz,
    renewal       boolean,
    -- Every statement on one session names it by both (a token carries the
    -- session ID beside the key), so on Citus, distributed by session_id,
    -- each runs on one shard. key_hash first: a token of the old form (key
    -- alone) loads by the index's first column.
    PRIMARY KEY (key_hash, session_id)
)
-- Room on each page for updated rows: a data change within the timeout
-- resolution leaves every indexed column alone, so it is a HOT update.
WITH (fillfactor = 80);

-- Upgrades a table created by pgsession 0.1 (before session_id, lifetimes
-- and devices) or 0.2 (before the predecessor key) in place. Existing sessions get a random session_id and
-- follow Config as before. Each statement does nothing on a current table.
ALTER TABLE "app"."user_sessions" ADD COLUMN IF NOT EXISTS session_id bytea NOT NULL DEFAULT uuid_send(gen_random_uuid());
ALTER TABLE "app"."user_sessions" ADD COLUMN IF NOT EXISTS idle_timeout_ms bigint;
ALTER TABLE "app"."user_sessions" ADD COLUMN IF NOT EXISTS absolute_timeout_ms bigint;
ALTER TABLE "app"."user_sessions" ADD COLUMN IF NOT EXISTS persistent boolean;
ALTER TABLE "app"."user_sessions" ADD COLUMN IF NOT EXISTS expires_at timestamptz;
ALTER TABLE "app"."user_sessions" ADD COLUMN IF NOT EXISTS user_agent text;
ALTER TABLE "app"."user_sessions" ADD COLUMN IF NOT EXISTS client_addr text;
-- Since 0.3: the predecessor key (the regenerate race).
ALTER TABLE "app"."user_sessions" ADD COLUMN IF NOT EXISTS prev_key_hash bytea;
ALTER TABLE "app"."user_sessions" ADD COLUMN IF NOT EXISTS rotated_at timestamptz;
ALTER TABLE "app"."user_sessions" ADD COLUMN IF NOT EXISTS renewal boolean;
-- Since 0.3: no CHECK (octet_length(key_hash) = 32). PostgreSQL parses and
-- sets up a check's expression again for every INSERT and UPDATE: 18,000
-- instructions, an eighth of a write's UPDATE. Every key_hash pgsession
-- writes is a SHA-256 by its Go type.
ALTER TABLE "app"."user_sessions" DROP CONSTRAINT IF EXISTS "user_sessions_key_hash_check";

-- Both indexes serve DeleteExpired, which removes rows past either timeout.
CREATE INDEX IF NOT EXISTS "user_sessions_accessed_at_idx" ON "app"."user_sessions" (accessed_at);
CREATE INDEX IF NOT EXISTS "user_sessions_created_at_idx" ON "app"."user_sessions" (created_at);

-- Serves DeleteByPrincipal and ListByPrincipal ("log out everywhere").
CREATE INDEX IF NOT EXISTS "user_sessions_principal_idx" ON "app"."user_sessions" (principal) WHERE principal IS NOT NULL;

-- Serves Load for a key rotated away moments ago (only rotated rows have an
-- entry; a request with the current key never reads it).
CREATE INDEX IF NOT EXISTS "user_sessions_prev_key_hash_idx" ON "app"."user_sessions" (prev_key_hash) WHERE prev_key_hash IS NOT NULL;

-- Serves DeleteExpired for sessions with a lifetime of their own.
CREATE INDEX IF NOT EXISTS "user_sessions_expires_at_idx" ON "app"."user_sessions" (expires_at) WHERE expires_at IS NOT NULL;
