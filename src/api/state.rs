//! [`State`]: everything handlers share, built once at start-up from the config
//! (schema applied, pool created, data directory opened).

use super::limits::Limits;
use super::passwords::Passwords;
use super::reads::Reads;
use super::tokens::{BadTokens, TokenCache};
use crate::cache::policy::Defaults;
use crate::config::Config;
use crate::obs::metrics::Metrics;
use crate::relay::{Relay, Settings};
use crate::store::db::{self, Db};
use crate::store::events::Events;
use crate::store::files::Store;
use crate::traffic::breaker::Breaker;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Everything handlers share.
pub struct State {
    pub config: Config,
    /// Shared with the relay's threads (its level-2 cache).
    pub db: Arc<Db>,
    /// Cached sample reads and listing pages (`--read-cache-bytes`).
    pub reads: Reads,
    /// The relay (`--relay-upstream`), when it is on.
    pub relay: Option<Arc<Relay>>,
    pub store: Store,
    pub events: Events,
    pub tokens: TokenCache,
    pub bad_tokens: BadTokens,
    pub passwords: Passwords,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// Counter increments committed, uploads stored and their bytes (for metrics).
    pub increments: AtomicU64,
    pub uploads: AtomicU64,
    pub upload_bytes: AtomicU64,
    /// GET /openapi.json, rendered once.
    pub openapi: Vec<u8>,
    /// Shutting down: /ready says so, so a load balancer stops sending.
    pub draining: std::sync::atomic::AtomicBool,
}

impl State {
    /// Applies the schema (waiting for the database up to `db_startup_wait`), then
    /// builds the pool without waiting for its connections, the password hasher and
    /// the data directory.
    pub fn open(config: &Config, metrics: Arc<Metrics>) -> Result<State, String> {
        db::apply_schema(&config.database_url, config.db_startup_wait)
            .map_err(|e| format!("cannot apply schema.sql: {e}"))?;
        let breaker = Breaker::new("database", config.breaker_failures, config.breaker_reset);
        let db = Arc::new(
            Db::new(
                &config.database_url,
                config.db_pool_size,
                config.db_timeout,
                breaker,
            )
            .map_err(|e| e.to_string())?,
        );
        let relay = match &config.relay {
            None => None,
            Some(r) => Some(Relay::start(
                Settings {
                    upstream: r.upstream.clone(),
                    timeout: r.timeout,
                    connections: r.connections,
                    max_body: r.max_body,
                    cache_bytes: config.cache_bytes,
                    defaults: Defaults {
                        ttl: r.default_ttl,
                        stale_while_revalidate: r.stale_while_revalidate,
                        stale_if_error: r.stale_if_error,
                    },
                    breaker_failures: config.breaker_failures,
                    breaker_reset: config.breaker_reset,
                },
                Arc::clone(&db),
            )?),
        };
        let passwords = Passwords::new(config.argon2_memory_kib, config.argon2_iterations)?;
        let store = Store::open(&config.data_dir)
            .map_err(|e| format!("cannot use data directory {}: {e}", config.data_dir.display()))?;
        Ok(State {
            store,
            events: Events::new(config.shared_stats),
            tokens: TokenCache::new(config.token_cache_size, config.token_recheck),
            bad_tokens: BadTokens::new(config.token_cache_size),
            passwords,
            limits: Limits::new(config),
            metrics,
            increments: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
            upload_bytes: AtomicU64::new(0),
            draining: std::sync::atomic::AtomicBool::new(false),
            openapi: super::openapi::document(config.test_routes, config.relay.is_some())
                .to_string()
                .into_bytes(),
            db,
            relay,
            reads: Reads::new(config.read_cache_bytes),
            config: config.clone(),
        })
    }
}
