//! Accounts and sessions: POST /auth/create, /auth/login, /auth/logout, and
//! [`authenticate`], which every protected route calls.
//!
//! Unknown user and wrong password are indistinguishable: same status, same body and
//! an argon2 verification in both cases; the limit on failed logins (per username
//! and per client IP) is kept for unknown usernames exactly as for known ones, so
//! its 429 tells nothing either. Creating an account also issues its first token,
//! in the same SQL statement, so neither exists without the other.

use super::error::{ApiError, Error};
use super::json::Fields;
use super::request::{Reply, Request};
use super::state::State;
use super::tokens::{self, Principal, Tier, TokenHash};
use crate::store::db::DbError;
use crate::store::hex::{decode_hex, encode_hex};
use crate::store::notify;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Longest password accepted, in characters (Unicode scalar values, as
/// `json::Fields::string` counts them): argon2 hashes any length, so an unbounded
/// one is a cheap way to make the server work hard.
const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password accepted at sign-up, in characters (Unicode scalar values).
const MIN_PASSWORD_BYTES: usize = 8;

/// The caller behind the request's bearer token (as admission resolved it, when
/// it did).
pub fn authenticate(st: &State, req: &Request<'_>) -> Result<(Principal, TokenHash), Error> {
    if let Some(resolved) = &req.auth {
        return resolved.clone().map_err(Error::from);
    }
    let hash = req
        .authorization()
        .and_then(tokens::from_header)
        .ok_or(ApiError::Unauthorized)?;
    let principal = match known(st, &hash) {
        Known::Valid(p) => p,
        Known::Bad => return Err(ApiError::Unauthorized.into()),
        Known::Unknown => lookup(st, &hash)?,
    };
    Ok((principal, hash))
}

/// What the in-process caches say about a token hash.
pub enum Known {
    Valid(Principal),
    /// The database did not accept it: 401 without asking again.
    Bad,
    /// Only the database can tell.
    Unknown,
}

pub fn known(st: &State, hash: &TokenHash) -> Known {
    match st.tokens.get(hash) {
        Some(p) => Known::Valid(p),
        None if st.bad_tokens.contains(hash) => Known::Bad,
        None => Known::Unknown,
    }
}

/// Asks the database about a token and caches the answer either way; 401 for a
/// token it does not accept (unknown, expired or revoked).
pub fn lookup(st: &State, hash: &TokenHash) -> Result<Principal, ApiError> {
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let rows = db
        .client
        .query(&db.st.lookup_token, &[&&hash[..]])
        .map_err(|e| note(st, e))?;
    let Some(row) = rows.first() else {
        st.bad_tokens.insert(*hash);
        return Err(ApiError::Unauthorized);
    };
    let principal = Principal {
        user_id: row.get(0),
        tier: Tier::from_db(row.get(1)),
        admin: row.get::<_, &str>(3) == "admin",
    };
    let expires: OffsetDateTime = row.get(2);
    let ttl = (expires - OffsetDateTime::now_utc())
        .try_into()
        .unwrap_or_default();
    st.tokens.insert(*hash, principal, ttl);
    Ok(principal)
}

/// Tells every server process (through PostgreSQL) that it must forget a token
/// (`Revoked`) or what it cached of a user (`User`: a tier, role or tokens
/// changed); each applies it within the listener's poll period.
pub enum News {
    Revoked(TokenHash),
    User(i64),
}

impl News {
    fn payload(&self) -> String {
        match self {
            News::Revoked(hash) => format!("revoke:{}", encode_hex(hash)),
            News::User(id) => format!("user:{id}"),
        }
    }
}

/// Sends `news` on `client` (a failure is logged: this process already applied
/// it, and the others re-check their caches within `--token-recheck`).
pub fn tell(st: &State, client: &mut postgres::Client, news: &News) {
    if let Err(e) = notify::notify(client, &news.payload()) {
        let e = note(st, e);
        tracing::warn!("could not tell other processes about a token change: {e:?}");
    }
}

/// Applies news from another process (or this one: harmless).
fn apply(st: &State, payload: &str) {
    if let Some(hex) = payload.strip_prefix("revoke:") {
        let mut hash = [0u8; 32];
        if decode_hex(hex.as_bytes(), &mut hash).is_some() {
            st.tokens.remove(&hash);
            st.bad_tokens.insert(hash);
        }
    } else if let Some(id) = payload.strip_prefix("user:").and_then(|i| i.parse().ok()) {
        st.tokens.remove_user(id);
    } else if payload == notify::SAMPLES_CHANGED {
        st.reads.samples_changed();
    } else if payload == notify::FILES_CHANGED {
        st.reads.files_changed();
    }
}

/// Starts listening for other processes' news, for as long as `state` lives.
/// After every (re)connection the token cache is emptied: news sent while this
/// process was not listening is lost, so nothing cached may be trusted. While
/// it is not connected, cached reads are not served.
pub fn listen(state: &std::sync::Arc<State>) -> Result<(), String> {
    let (alive, news, resync, lost) = (
        std::sync::Arc::downgrade(state),
        std::sync::Arc::downgrade(state),
        std::sync::Arc::downgrade(state),
        std::sync::Arc::downgrade(state),
    );
    notify::listen(
        state.config.database_url.clone(),
        move || alive.strong_count() > 0,
        move |payload| {
            if let Some(st) = news.upgrade() {
                apply(&st, payload);
            }
        },
        move || {
            if let Some(st) = resync.upgrade() {
                st.tokens.clear();
                st.reads.heard_again();
            }
        },
        move || {
            if let Some(st) = lost.upgrade() {
                st.reads.deaf();
            }
        },
    )
    .map_err(|e| format!("cannot start the notification listener: {e}"))
}

/// Turns a query failure into an API error, noting a lost database.
pub fn note(st: &State, e: postgres::Error) -> ApiError {
    st.db.failed(e).into()
}

fn valid_username(u: &str) -> bool {
    u.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A deliberately plain address rule, the one /openapi.json states as a pattern:
/// visible ASCII only, one `@` with something before it, and a domain with a dot,
/// neither starting nor ending with one. (Internationalised addresses are refused.)
fn valid_email(e: &str) -> bool {
    match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && e.bytes().all(|b| (0x21..=0x7e).contains(&b))
        }
        None => false,
    }
}

fn write_token(out: &mut Vec<u8>, key: &str, expires: OffsetDateTime) -> Result<(), Error> {
    let expires_at = expires
        .format(&Rfc3339)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    serde_json::to_writer(
        out,
        &serde_json::json!({ "api_key": key, "expires_at": expires_at }),
    )
    .map_err(|e| ApiError::Internal(e.to_string()).into())
}

fn ttl_secs(st: &State) -> f64 {
    st.config.token_ttl.as_secs_f64()
}

pub fn create(st: &State, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
    let mut f = Fields::parse(req.body, &["username", "password", "email"])?;
    let username = f.string("username", 3, 32);
    let password = f.string("password", MIN_PASSWORD_BYTES, MAX_PASSWORD_BYTES);
    let email = f.string("email", 3, 254);
    if username.as_deref().is_some_and(|u| !valid_username(u)) {
        f.problem("username", "may contain only letters, digits, '_', '-' and '.'");
    }
    if email.as_deref().is_some_and(|e| !valid_email(e)) {
        f.problem("email", "must be an address like name@example.org");
    }
    f.finish()?;
    let (Some(username), Some(password), Some(email)) = (username, password, email) else {
        return Err(ApiError::Internal("validated fields missing".into()).into());
    };

    let phc = st.passwords.hash(&password).map_err(ApiError::Internal)?;
    let (key, hash) = tokens::generate().map_err(ApiError::Internal)?;
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let row = db
        .client
        .query_one(
            &db.st.create_user_with_token,
            &[&username, &email, &phc, &&hash[..], &ttl_secs(st)],
        )
        .map_err(|e| match DbError::from(e) {
            DbError::Conflict(c) if c.contains("email") => ApiError::Conflict("email already registered"),
            DbError::Conflict(_) => ApiError::Conflict("username taken"),
            other => {
                st.db.note(&other);
                other.into()
            }
        })?;
    let principal = Principal {
        user_id: row.get(0),
        tier: Tier::from_db(row.get(1)),
        admin: row.get::<_, &str>(3) == "admin",
    };
    let expires: OffsetDateTime = row.get(2);
    st.tokens.insert(hash, principal, st.config.token_ttl);
    write_token(out, &key, expires)?;
    Ok(Reply::json(201))
}

pub fn login(st: &State, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
    let mut f = Fields::parse(req.body, &["username", "password"])?;
    let username = f.string("username", 1, 256);
    let password = f.string("password", 1, MAX_PASSWORD_BYTES);
    f.finish()?;
    let (Some(username), Some(password)) = (username, password) else {
        return Err(ApiError::Internal("validated fields missing".into()).into());
    };
    // Before any lookup or hash: the same answer whether the user exists or not.
    st.limits.login_allowed(&username, req.client)?;

    let user = {
        let mut pooled = st.db.get()?;
        let db = &mut *pooled;
        let rows = db
            .client
            .query(&db.st.find_user, &[&username])
            .map_err(|e| note(st, e))?;
        rows.first().map(|r| {
            let admin = r.get::<_, &str>(3) == "admin";
            (
                r.get::<_, i64>(0),
                r.get::<_, String>(1),
                Tier::from_db(r.get(2)),
                admin,
            )
        })
    };
    // Verify even for an unknown user, against a dummy hash, so timing tells nothing.
    if !st
        .passwords
        .verify(&password, user.as_ref().map(|u| u.1.as_str()))
    {
        st.limits.login_failed(&username, req.client);
        return Err(ApiError::BadCredentials.into());
    }
    let Some((user_id, _, tier, admin)) = user else {
        return Err(ApiError::BadCredentials.into());
    };
    let (key, hash) = tokens::generate().map_err(ApiError::Internal)?;
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let row = db
        .client
        .query_one(&db.st.insert_token, &[&&hash[..], &user_id, &ttl_secs(st)])
        .map_err(|e| note(st, e))?;
    let expires: OffsetDateTime = row.get(0);
    let principal = Principal { user_id, tier, admin };
    st.tokens.insert(hash, principal, st.config.token_ttl);
    write_token(out, &key, expires)?;
    Ok(Reply::json(200))
}

pub fn logout(st: &State, req: &Request<'_>) -> Result<Reply, Error> {
    let (_, hash) = authenticate(st, req)?;
    // Forget it here first: even if the database write fails, this process stops
    // accepting the token at once, and never accepts it again.
    st.tokens.remove(&hash);
    st.bad_tokens.insert(hash);
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    db.client
        .execute(&db.st.revoke_token, &[&&hash[..]])
        .map_err(|e| note(st, e))?;
    tell(st, &mut db.client, &News::Revoked(hash));
    Ok(Reply::empty(204))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_and_emails_are_checked() {
        assert!(valid_username("alice_01.x-y"));
        assert!(!valid_username("al ice"));
        assert!(!valid_username("alice@x"));
        assert!(valid_email("a@b.org"));
        for bad in [
            "a.b.org",
            "@b.org",
            "a@b",
            "a@.b",
            "a@b.",
            "a b@c.org",
            "a@b@c.org",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
