//! Every SQL statement the server runs, as constants. All are parameterised and
//! prepared once per pooled connection (see `db::Statements`).

/// The whole schema, applied idempotently at start-up.
pub const SCHEMA: &str = include_str!("../../schema.sql");

/// Creates a user and its first token in one statement, so neither exists without
/// the other. $1 username, $2 email, $3 PHC hash, $4 token hash, $5 TTL seconds.
pub const CREATE_USER_WITH_TOKEN: &str = "\
WITH u AS (
    INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3)
    RETURNING id, tier, role
)
INSERT INTO api_tokens (token_hash, user_id, expires_at)
SELECT $4, u.id, now() + make_interval(secs => $5) FROM u
RETURNING user_id, (SELECT tier FROM u), expires_at, (SELECT role FROM u)";

/// $1 username.
pub const FIND_USER: &str = "SELECT id, password_hash, tier, role FROM users WHERE username = $1";

/// $1 token hash, $2 user id, $3 TTL seconds.
pub const INSERT_TOKEN: &str = "\
INSERT INTO api_tokens (token_hash, user_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
RETURNING expires_at";

/// $1 token hash. Only live tokens are found.
pub const LOOKUP_TOKEN: &str = "\
SELECT t.user_id, u.tier, t.expires_at, u.role
FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now()";

/// Creates an admin account, or makes an existing user one. $1 username, $2
/// email (for a new account), $3 PHC hash (of a password nobody is told).
pub const CREATE_ADMIN: &str = "\
INSERT INTO users (username, email, password_hash, role) VALUES ($1, $2, $3, 'admin')
ON CONFLICT (username) DO UPDATE SET role = 'admin'
RETURNING id, tier";

/// $1 username.
pub const USER_TIER: &str = "SELECT id, tier, role FROM users WHERE username = $1";

/// $1 username, $2 tier.
pub const SET_TIER: &str = "UPDATE users SET tier = $2 WHERE username = $1 RETURNING id";

/// Revokes every live token of a user. $1 username.
pub const REVOKE_USER_TOKENS: &str = "\
UPDATE api_tokens t SET revoked_at = now()
FROM users u
WHERE u.id = t.user_id AND u.username = $1 AND t.revoked_at IS NULL
RETURNING t.token_hash";

/// Adds a published delta of events. $1 count, $2 sum in nano-units (text).
pub const ADD_EVENT_TOTALS: &str =
    "UPDATE event_totals SET count = count + $1, sum_nanos = sum_nanos + $2::text::numeric WHERE id = 1";

/// Adds users first seen. $1 text[] of user ids.
pub const ADD_EVENT_USERS: &str =
    "INSERT INTO event_users (user_id) SELECT unnest($1::text[]) ON CONFLICT (user_id) DO NOTHING";

/// The shared statistics: count, sum in nano-units (text), unique users.
pub const SHARED_EVENT_STATS: &str =
    "SELECT count, sum_nanos::text, (SELECT count(*) FROM event_users) FROM event_totals WHERE id = 1";

/// Leases units from a shared rate-limit bucket (GCRA on PostgreSQL's clock, in
/// nanoseconds). $1 key, $2 the units' cost (units × emission), $3 the bucket's
/// capacity. Returns the new TAT (NULL when the lease does not fit), the TAT
/// before (NULL for a new key) and now.
pub const LEASE_RATE: &str = "\
WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint AS ns),
upd AS (
    INSERT INTO rate_buckets AS b (key, tat)
    SELECT $1, now.ns + $2 FROM now WHERE $2 <= $3
    ON CONFLICT (key) DO UPDATE SET tat = greatest(b.tat, (SELECT ns FROM now)) + $2
        WHERE greatest(b.tat, (SELECT ns FROM now)) + $2 <= (SELECT ns FROM now) + $3
    RETURNING tat
)
SELECT (SELECT tat FROM upd), (SELECT tat FROM rate_buckets WHERE key = $1), (SELECT ns FROM now)";

/// Forgets shared buckets that are full again (they answer like absent ones).
pub const SWEEP_RATE_BUCKETS: &str =
    "DELETE FROM rate_buckets WHERE tat < (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint";

/// $1 token hash.
pub const REVOKE_TOKEN: &str =
    "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL";

/// Inserts a batch of samples, one array parameter per column, element i of each
/// making row i: $1 user ids, $2 md5s, $3 taken_at, $4 latitudes, $5 longitudes,
/// $6 altitudes, $7 metadata, and $8 flora, $9 fauna, $10 calls, each element an
/// array literal (`{"a","b"}`), since SQL arrays cannot nest unevenly. An
/// image_md5 that exists already fails the whole statement (unique violation);
/// the caller then inserts the batch's samples one by one to tell which. Measured
/// on this project's machine: unnest costs PostgreSQL about two thirds of what
/// jsonb_to_recordset does per row, and ON CONFLICT DO NOTHING about a quarter
/// more than a plain INSERT, for a conflict that is rare.
/// The batch insert also tells every server process that sample listings
/// changed (`notify::SAMPLES_CHANGED`, delivered at commit), in the same round
/// trip.
pub const INSERT_SAMPLES: &str = "\
WITH ins AS (
INSERT INTO samples (user_id, image_md5, taken_at, latitude, longitude, altitude, metadata, flora, fauna, calls)
SELECT r.user_id, r.md5, r.taken_at, r.lat, r.lon, r.alt, r.meta, r.flora::text[], r.fauna::text[], r.calls::text[]
FROM unnest($1::bigint[], $2::bytea[], $3::timestamptz[], $4::float8[], $5::float8[], $6::float8[],
            $7::integer[], $8::text[], $9::text[], $10::text[])
     AS r(user_id, md5, taken_at, lat, lon, alt, meta, flora, fauna, calls)
RETURNING id, image_md5)
SELECT ins.id, ins.image_md5 FROM ins, (SELECT pg_notify('crudrs_news', 'samples')) AS news";

const SAMPLE_COLUMNS: &str = "s.id, s.image_md5, s.taken_at, s.latitude, s.longitude, s.altitude, \
s.metadata, s.flora, s.fauna, s.calls, s.created_at, u.username, \
EXISTS (SELECT 1 FROM files f WHERE f.md5 = s.image_md5)";

/// $1 sample id.
pub fn get_sample() -> String {
    format!("SELECT {SAMPLE_COLUMNS} FROM samples s JOIN users u ON u.id = s.user_id WHERE s.id = $1")
}

/// Keyset pagination: $1 the last id seen, $2 page size.
pub fn list_samples() -> String {
    format!(
        "SELECT {SAMPLE_COLUMNS} FROM samples s JOIN users u ON u.id = s.user_id \
         WHERE s.id > $1 ORDER BY s.id LIMIT $2"
    )
}

pub const PING: &str = "SELECT 1";

/// Adds $1 to the counter (one batch of $1 increments) and returns the new value.
pub const COUNTER_ADD: &str =
    "UPDATE counter SET value = value + $1, commits = commits + 1 WHERE id = 1 RETURNING value";

pub const COUNTER_GET: &str = "SELECT value FROM counter WHERE id = 1";

/// Records a stored file; does nothing when the md5 is already recorded.
/// $1 md5, $2 size, $3 content type, $4 uploader.
/// A new file changes `image_present` of the samples that name it: every server
/// process is told (`notify::FILES_CHANGED`). One row when the file is new,
/// none when it was known.
pub const INSERT_FILE: &str = "\
WITH ins AS (
INSERT INTO files (md5, size, content_type, uploader) VALUES ($1, $2, $3, $4)
ON CONFLICT (md5) DO NOTHING RETURNING md5)
SELECT pg_notify('crudrs_news', 'files') FROM ins";

/// $1 md5.
pub const GET_FILE: &str = "SELECT content_type FROM files WHERE md5 = $1";
