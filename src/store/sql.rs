//! Every SQL statement the server runs, as constants. All are parameterised and
//! prepared once per pooled connection (see `db::Statements`).

/// The whole schema, applied idempotently at start-up.
pub const SCHEMA: &str = include_str!("../../schema.sql");

/// Creates a user and its first token in one statement, so neither exists without
/// the other. $1 username, $2 email, $3 PHC hash, $4 token hash, $5 TTL seconds.
pub const CREATE_USER_WITH_TOKEN: &str = "\
WITH u AS (
    INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3)
    RETURNING id, tier
)
INSERT INTO api_tokens (token_hash, user_id, expires_at)
SELECT $4, u.id, now() + make_interval(secs => $5) FROM u
RETURNING user_id, (SELECT tier FROM u), expires_at";

/// $1 username.
pub const FIND_USER: &str = "SELECT id, password_hash, tier FROM users WHERE username = $1";

/// $1 token hash, $2 user id, $3 TTL seconds.
pub const INSERT_TOKEN: &str = "\
INSERT INTO api_tokens (token_hash, user_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
RETURNING expires_at";

/// $1 token hash. Only live tokens are found.
pub const LOOKUP_TOKEN: &str = "\
SELECT t.user_id, u.tier, t.expires_at
FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now()";

/// $1 token hash.
pub const REVOKE_TOKEN: &str =
    "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL";

/// Inserts a batch of samples: $1 is a JSON array of objects with the keys of the
/// column list below (img_md5 as hex, taken_at as RFC 3339, the arrays as JSON
/// arrays of strings). A sample whose image_md5 exists already is skipped, so the
/// caller learns which were inserted from the returned md5s.
pub const INSERT_SAMPLES: &str = "\
INSERT INTO samples (user_id, image_md5, taken_at, latitude, longitude, altitude, metadata, flora, fauna, calls)
SELECT r.user_id, decode(r.img_md5, 'hex'), r.taken_at, r.latitude, r.longitude, r.altitude, r.metadata,
       r.flora, r.fauna, r.calls
FROM jsonb_to_recordset($1::jsonb) AS r(user_id bigint, img_md5 text, taken_at timestamptz,
     latitude double precision, longitude double precision, altitude double precision,
     metadata integer, flora text[], fauna text[], calls text[])
ON CONFLICT (image_md5) DO NOTHING
RETURNING id, image_md5";

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
pub const INSERT_FILE: &str = "\
INSERT INTO files (md5, size, content_type, uploader) VALUES ($1, $2, $3, $4)
ON CONFLICT (md5) DO NOTHING";

/// $1 md5.
pub const GET_FILE: &str = "SELECT content_type FROM files WHERE md5 = $1";
