//! The database: a bounded r2d2 pool of blocking PostgreSQL connections, each with
//! every statement prepared once when it is opened, and the start-up schema step.
//!
//! Availability is decided here. A checkout waits at most `db_timeout`; after one
//! fails, checkouts stop waiting (they take a ready connection or fail at once) until
//! a connection succeeds again, so a dead database costs each request microseconds,
//! not seconds, and workers stay free for requests that need no database. r2d2 keeps
//! reconnecting in the background, which is how the server recovers by itself.
//! SQL text lives in `sql.rs`; what the rows mean lives in `api/`.

use super::sql;
use parking_lot::Mutex;
use postgres::{Client, NoTls, Statement};
use r2d2::{ManageConnection, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;
use std::fmt;
use std::time::{Duration, Instant};

/// What can go wrong talking to the database, as far as callers care.
#[derive(Debug)]
pub enum DbError {
    /// No connection could be had in time, or the connection broke: retry later (503).
    Unavailable(String),
    /// A unique constraint was violated; holds the constraint name.
    Conflict(String),
    /// Anything else: a bug or a schema mismatch (500).
    Other(String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Unavailable(e) => write!(f, "database unavailable: {e}"),
            DbError::Conflict(c) => write!(f, "unique constraint {c} violated"),
            DbError::Other(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::UNIQUE_VIOLATION {
                return DbError::Conflict(db.constraint().unwrap_or("").to_string());
            }
            // Class 08 (connection exception) and 57 (operator intervention: shutdown,
            // crash recovery) mean the server is going or gone, not that we erred.
            if code.code().starts_with("08") || code.code().starts_with("57") {
                return DbError::Unavailable(db.message().to_string());
            }
            return DbError::Other(format!("{}: {}", code.code(), db.message()));
        }
        // No server error: the socket failed or the connection is closed.
        DbError::Unavailable(e.to_string())
    }
}

/// Statements prepared on each new connection.
pub struct Statements {
    pub create_user_with_token: Statement,
    pub find_user: Statement,
    pub insert_token: Statement,
    pub lookup_token: Statement,
    pub revoke_token: Statement,
    pub insert_samples: Statement,
    pub get_sample: Statement,
    pub list_samples: Statement,
    pub ping: Statement,
    pub insert_file: Statement,
    pub get_file: Statement,
    pub counter_add: Statement,
    pub counter_get: Statement,
}

impl Statements {
    fn prepare(c: &mut Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            create_user_with_token: c.prepare(sql::CREATE_USER_WITH_TOKEN)?,
            find_user: c.prepare(sql::FIND_USER)?,
            insert_token: c.prepare(sql::INSERT_TOKEN)?,
            lookup_token: c.prepare(sql::LOOKUP_TOKEN)?,
            revoke_token: c.prepare(sql::REVOKE_TOKEN)?,
            insert_samples: c.prepare(sql::INSERT_SAMPLES)?,
            get_sample: c.prepare(&sql::get_sample())?,
            list_samples: c.prepare(&sql::list_samples())?,
            ping: c.prepare(sql::PING)?,
            insert_file: c.prepare(sql::INSERT_FILE)?,
            get_file: c.prepare(sql::GET_FILE)?,
            counter_add: c.prepare(sql::COUNTER_ADD)?,
            counter_get: c.prepare(sql::COUNTER_GET)?,
        })
    }
}

/// A pooled connection with its prepared statements.
pub struct DbConn {
    pub client: Client,
    pub st: Statements,
}

/// r2d2 manager that wraps r2d2_postgres's and prepares statements on connect.
pub struct Manager(PostgresConnectionManager<NoTls>);

impl ManageConnection for Manager {
    type Connection = DbConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<DbConn, postgres::Error> {
        let mut client = self.0.connect()?;
        let st = Statements::prepare(&mut client)?;
        Ok(DbConn { client, st })
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), postgres::Error> {
        self.0.is_valid(&mut conn.client)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        conn.client.is_closed()
    }
}

/// Logs pool errors (failed connection attempts) at most once a second.
#[derive(Debug, Default)]
struct ErrorLog {
    last: Mutex<Option<Instant>>,
}

impl r2d2::HandleError<postgres::Error> for ErrorLog {
    fn handle_error(&self, error: postgres::Error) {
        let mut last = self.last.lock();
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            tracing::warn!("database connection failed: {error}");
        }
    }
}

pub struct Db {
    pool: r2d2::Pool<Manager>,
    /// Set while the database is believed down: checkouts do not wait.
    down: std::sync::atomic::AtomicBool,
}

impl Db {
    /// Builds the pool without waiting for any connection: the server starts serving
    /// requests that need no database even when it is down.
    pub fn new(url: &str, size: u32, timeout: Duration) -> Result<Db, DbError> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| DbError::Other(format!("invalid database url: {e}")))?;
        let manager = Manager(PostgresConnectionManager::new(config, NoTls));
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(size))
            .connection_timeout(timeout)
            .test_on_check_out(false)
            .error_handler(Box::new(ErrorLog::default()))
            .build_unchecked(manager);
        Ok(Db {
            pool,
            down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A connection, waiting up to the configured timeout unless the database is known
    /// to be down, in which case only an idle connection is taken.
    pub fn get(&self) -> Result<PooledConnection<Manager>, DbError> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.down.load(Relaxed) {
            return match self.pool.try_get() {
                Some(c) => {
                    self.down.store(false, Relaxed);
                    tracing::info!("database reachable again");
                    Ok(c)
                }
                None => Err(DbError::Unavailable("database is down".into())),
            };
        }
        self.pool.get().map_err(|e| {
            if !self.down.swap(true, Relaxed) {
                tracing::warn!("database unavailable: {e}");
            }
            DbError::Unavailable(e.to_string())
        })
    }

    /// Whether every connection of the pool is open (start-up opens them in the
    /// background; until then the pool is still connecting and allocating).
    pub fn is_filled(&self) -> bool {
        let state = self.pool.state();
        state.connections == self.pool.max_size()
    }

    /// Records that a query failed because the database went away, so later checkouts
    /// fail fast until a connection works again.
    pub fn note(&self, e: &DbError) {
        if let DbError::Unavailable(_) = e {
            self.down.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Applies `schema.sql`, retrying connection failures for up to `wait`.
pub fn apply_schema(url: &str, wait: Duration) -> Result<(), DbError> {
    let deadline = Instant::now() + wait;
    loop {
        let attempt = Client::connect(url, NoTls).and_then(|mut c| c.batch_execute(sql::SCHEMA));
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) => {
                let e = DbError::from(e);
                match e {
                    DbError::Unavailable(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    _ => return Err(e),
                }
            }
        }
    }
}
