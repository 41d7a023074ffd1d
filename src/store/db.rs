//! The database: a bounded r2d2 pool of blocking PostgreSQL connections, each with
//! every statement prepared once when it is opened, and the start-up schema step.
//!
//! Availability is decided here, by a circuit [`Breaker`]. A checkout waits at most
//! `db_timeout`; failed checkouts and queries that lost the database count as
//! failures, and `--breaker-failures` of them in a row open the breaker: then every
//! checkout fails at once (a dead database costs each request microseconds, not
//! seconds, and workers stay free for requests that need no database). After
//! `--breaker-reset` one probe may take an idle connection without waiting; r2d2
//! keeps reconnecting in the background, so once the database is back the probe
//! finds one and closes the breaker: the server recovers by itself.
//! SQL text lives in `sql.rs`; what the rows mean lives in `api/`.

use super::sql;
use crate::obs::metrics::AtomicHistogram;
use crate::traffic::breaker::{Admit, Breaker, State};
use parking_lot::Mutex;
use postgres::{Client, NoTls, Statement};
use r2d2::{ManageConnection, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
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
        // No server error: the socket failed or the connection is closed, which is
        // an outage; or this side failed (a value that does not convert to or
        // from its SQL type), which is a bug and must not trip the breaker.
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        if e.is_closed() || io {
            DbError::Unavailable(e.to_string())
        } else {
            DbError::Other(e.to_string())
        }
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

/// r2d2 manager that wraps r2d2_postgres's and prepares statements on connect. It
/// also tells the breaker about every connection handed back: one that survived
/// its use is a success (the database answered, whatever it answered).
pub struct Manager(PostgresConnectionManager<NoTls>, Arc<Breaker>);

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
        let broken = conn.client.is_closed();
        // A connection is handed back by the thread that used it, so the flag says
        // whether this use lost the database (already counted by `Db::note`).
        if !broken && !USE_FAILED.with(Cell::get) {
            self.1.success();
        }
        broken
    }
}

thread_local! {
    /// Whether this thread's current use of a pooled connection lost the database
    /// (`Db::note`); reset at each checkout (`Db::get`).
    static USE_FAILED: Cell<bool> = const { Cell::new(false) };
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
    breaker: Arc<Breaker>,
    /// How long checkouts took (for metrics).
    pub checkouts: AtomicHistogram,
}

impl Db {
    /// Builds the pool without waiting for any connection: the server starts serving
    /// requests that need no database even when it is down.
    pub fn new(url: &str, size: u32, timeout: Duration, breaker: Breaker) -> Result<Db, DbError> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| DbError::Other(format!("invalid database url: {e}")))?;
        let breaker = Arc::new(breaker);
        let manager = Manager(
            PostgresConnectionManager::new(config, NoTls),
            Arc::clone(&breaker),
        );
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(size))
            .connection_timeout(timeout)
            .test_on_check_out(false)
            .error_handler(Box::new(ErrorLog::default()))
            .build_unchecked(manager);
        Ok(Db {
            pool,
            breaker,
            checkouts: AtomicHistogram::default(),
        })
    }

    /// A connection: at once when the breaker is open (`Unavailable`), else waiting
    /// up to the configured timeout; the probe of a half-open breaker takes an idle
    /// connection or fails, without waiting.
    pub fn get(&self) -> Result<PooledConnection<Manager>, DbError> {
        let got = match self.breaker.admit(Instant::now()) {
            Err(_) => return Err(DbError::Unavailable("database circuit breaker open".into())),
            Ok(Admit::Pass) => {
                let start = Instant::now();
                let got = self.pool.get();
                self.checkouts.record(start.elapsed());
                got.map_err(|e| DbError::Unavailable(e.to_string()))
            }
            Ok(Admit::Probe) => self
                .pool
                .try_get()
                .ok_or_else(|| DbError::Unavailable("no database connection yet".into())),
        };
        // Success is reported when the connection comes back unbroken (see
        // `Manager::has_broken`): a checkout alone does not show the database works.
        match got {
            Ok(_) => USE_FAILED.with(|f| f.set(false)),
            Err(_) => self.breaker.failure(Instant::now()),
        }
        got
    }

    /// The breaker's state, for `/ready`.
    pub fn breaker_state(&self) -> State {
        self.breaker.state()
    }

    /// An operator's order: hold the breaker open for this long, or close it.
    pub fn force_breaker(&self, open: Option<Duration>) {
        self.breaker.force(open, Instant::now());
    }

    /// Times the breaker has opened.
    pub fn breaker_opened(&self) -> u64 {
        self.breaker.opened()
    }

    /// Pooled connections: open, and idle among them.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
    }

    /// The pool's size.
    pub fn pool_size(&self) -> u32 {
        self.pool.max_size()
    }

    /// Whether every connection of the pool is open (start-up opens them in the
    /// background; until then the pool is still connecting and allocating).
    pub fn is_filled(&self) -> bool {
        let state = self.pool.state();
        state.connections == self.pool.max_size()
    }

    /// Records that a query failed because the database went away: a failure for
    /// the breaker.
    /// A failed query as a [`DbError`], noted (a lost database counts for the
    /// breaker) and logged when it is neither an outage nor a conflict.
    pub fn failed(&self, e: postgres::Error) -> DbError {
        let e = DbError::from(e);
        self.note(&e);
        if let DbError::Other(ref detail) = e {
            tracing::error!("query failed: {detail}");
        }
        e
    }

    pub fn note(&self, e: &DbError) {
        if let DbError::Unavailable(_) = e {
            USE_FAILED.with(|f| f.set(true));
            self.breaker.failure(Instant::now());
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
