-- crudrs schema. Idempotent: applied by every server at start-up. The advisory lock
-- serialises concurrent start-ups, since CREATE ... IF NOT EXISTS alone can still race
-- on the system catalogs when two servers start at once.
SET client_min_messages = warning;
BEGIN;
SELECT pg_advisory_xact_lock(7262150001);

CREATE TABLE IF NOT EXISTS users (
    id            bigserial PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    email         text NOT NULL,
    -- argon2id PHC string; the password itself is never stored.
    password_hash text NOT NULL,
    -- Rate-limit tier (see README, "Limits and tiers"); an admin changes it.
    tier          text NOT NULL DEFAULT 'free' CONSTRAINT users_tier_check CHECK (tier IN ('free', 'pro', 'enterprise')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (lower(email));
-- Tiers were standard/premium/internal before rate limiting: renamed free/pro/
-- enterprise, once (the check runs only while the old constraint is there).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'users'::regclass AND conname = 'users_tier_check'
                 AND pg_get_constraintdef(oid) LIKE '%standard%') THEN
        ALTER TABLE users DROP CONSTRAINT users_tier_check;
        UPDATE users SET tier = CASE tier WHEN 'premium' THEN 'pro'
                                          WHEN 'internal' THEN 'enterprise'
                                          ELSE 'free' END;
        ALTER TABLE users ALTER COLUMN tier SET DEFAULT 'free';
        ALTER TABLE users ADD CONSTRAINT users_tier_check
            CHECK (tier IN ('free', 'pro', 'enterprise'));
    END IF;
END $$;
-- Who may use the admin API and dashboard (`server --create-admin NAME`).
ALTER TABLE users ADD COLUMN IF NOT EXISTS role text NOT NULL DEFAULT 'user'
    CONSTRAINT users_role_check CHECK (role IN ('user', 'admin'));

CREATE TABLE IF NOT EXISTS api_tokens (
    -- SHA-256 of the 256-bit token; the token itself is shown once and never stored.
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS api_tokens_user_idx ON api_tokens (user_id);

-- The C server's geo_metadata row, typed.
CREATE TABLE IF NOT EXISTS samples (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    image_md5  bytea NOT NULL UNIQUE CHECK (octet_length(image_md5) = 16),
    taken_at   timestamptz NOT NULL,
    latitude   double precision NOT NULL,
    longitude  double precision NOT NULL,
    altitude   double precision NOT NULL,
    -- The C server's bit-packed metadata integer, kept as is.
    metadata   integer NOT NULL,
    flora      text[] NOT NULL,
    fauna      text[] NOT NULL,
    calls      text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Uploaded files, content-addressed by MD5; the bytes live under the data directory.
CREATE TABLE IF NOT EXISTS files (
    md5          bytea PRIMARY KEY CHECK (octet_length(md5) = 16),
    size         bigint NOT NULL CHECK (size >= 0),
    content_type text NOT NULL,
    uploader     bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- The durable counter: one row, changed only by group commits of increments.
CREATE TABLE IF NOT EXISTS counter (
    id    smallint PRIMARY KEY CHECK (id = 1),
    value bigint NOT NULL
);
INSERT INTO counter (id, value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
-- How many commits (batches) carried those increments: value / commits is the
-- group-commit batch size.
ALTER TABLE counter ADD COLUMN IF NOT EXISTS commits bigint NOT NULL DEFAULT 0;

-- The 1MRC statistics shared by instances run with --shared-stats: each adds what
-- it counted since its last publication (every 250 ms, and before answering
-- GET /stats). Unlogged, like the in-memory aggregate they extend: a crash of
-- PostgreSQL empties them.
CREATE UNLOGGED TABLE IF NOT EXISTS event_totals (
    id        smallint PRIMARY KEY CHECK (id = 1),
    count     bigint NOT NULL,
    sum_nanos numeric NOT NULL
);
INSERT INTO event_totals (id, count, sum_nanos) VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING;
CREATE UNLOGGED TABLE IF NOT EXISTS event_users (user_id text PRIMARY KEY);

-- Rate-limit buckets shared by instances run with --shared-limits: a key's GCRA
-- theoretical arrival time, in nanoseconds of PostgreSQL's clock. Instances lease
-- units from here (a twentieth of the quota at a time) and spend them locally.
CREATE UNLOGGED TABLE IF NOT EXISTS rate_buckets (
    key text PRIMARY KEY,
    tat bigint NOT NULL
);

-- The relay's level-2 cache, shared by every instance (--relay-upstream): one
-- row per upstream URL, written behind the responses. UNLOGGED: a crash may
-- empty it, which costs only upstream requests. Times are milliseconds since
-- the Unix epoch, lifetimes seconds (see cache::policy::Lifetime).
CREATE UNLOGGED TABLE IF NOT EXISTS http_cache (
    key           text PRIMARY KEY,
    status        smallint NOT NULL,
    header_lines  bytea NOT NULL,
    body          bytea NOT NULL,
    stored_at     bigint NOT NULL,
    initial_age   bigint NOT NULL,
    fresh         bigint NOT NULL,
    swr           bigint NOT NULL,
    sie           bigint NOT NULL,
    useless_after bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS http_cache_useless_after ON http_cache (useless_after);
-- Which instance is fetching a key that no level holds (single flight across
-- instances): a lease until `until` (ms since the epoch), released once the
-- fetched entry is in http_cache (or known not to be stored).
CREATE UNLOGGED TABLE IF NOT EXISTS http_cache_leases (
    key    text PRIMARY KEY,
    holder text NOT NULL,
    until  bigint NOT NULL
);

COMMIT;
