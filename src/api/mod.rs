//! The REST API: the route table and its policy, the shared application state, the
//! handlers, and the one error → status map.
//!
//! This layer never sees a socket or a read buffer position, and never imports the
//! engine. The engine calls this layer's logic only through [`Api`]: `plan` (from
//! the head alone: route, body limit and use, what the request waits for), `admit`
//! (client address, rate limits: once the body is in, before anything is done),
//! `handle` (a complete request → a [`Reply`] with its body written into a `Vec`),
//! `stage`/`commit` for group-committed requests, `relay_lookup`/`relay_wait` for
//! relayed requests, and `admit_upload`/`finish_upload` for streamed bodies; apart
//! from that it only encodes errors (`Error::encode`) and writes upload bytes
//! (`UploadBody::write`). Otherwise it uses this layer's data types: `Plan`, `Wait`,
//! `Lane`, `BodyUse`, `ROUTE_LABELS`, `UNMATCHED`, [`Request`]/[`Reply`],
//! `Error`/`ApiError`, `QuotaFields`, [`Staged`], `Looked`/`Ticket`/`Resume`/`Fetched`
//! and `UploadBody`.

mod admin;
mod admission;
mod auth;
mod counter;
pub(crate) mod error;
mod events;
mod files;
mod health;
mod json;
pub(crate) mod limits;
mod metrics;
mod openapi;
mod passwords;
mod reads;
mod relay;
pub(crate) mod request;
pub(crate) mod route;
mod samples;
mod state;
mod tokens;

use crate::config::Config;
use crate::http::error::HttpError;
use crate::http::parse::{Framing, Head};
use crate::obs::metrics::Metrics;
use admission::Admitted;
use error::{ApiError, Error};
use limits::QuotaFields;
use request::{Reply, Request};
use route::{BodyUse, Lane, Plan, Route};
use state::State;
use std::net::IpAddr;
use std::sync::Arc;

pub(crate) use crate::relay::{Fetched, Resume};
pub(crate) use files::UploadBody;
pub(crate) use relay::{Looked, Ticket};

/// A request staged for a group commit: validated, waiting for its batch.
pub(crate) enum Staged {
    Increment,
    Sample(Box<samples::NewSample>),
}

/// What one staged request got from its batch's commit: a value or id, or its own
/// error; the outer error is the whole batch's.
pub(crate) type Outcomes = Result<Vec<Result<i64, ApiError>>, ApiError>;

/// The handle on the API; cheap to clone (one per worker).
#[derive(Clone)]
pub(crate) struct Api {
    state: Arc<State>,
}

impl Api {
    /// Builds the shared state from the config: applies the schema, creates the
    /// pool (without waiting for its connections) and opens the data directory.
    pub fn open(config: &Config, metrics: Arc<Metrics>) -> Result<Api, String> {
        let state = Arc::new(State::open(config, metrics)?);
        auth::listen(&state)?;
        events::start_publishing(&state)?;
        admission::start_sweeping(&state)?;
        Ok(Api { state })
    }

    /// Makes `name` an admin (creating the account if need be) and returns a new
    /// key for it (`server --create-admin NAME`).
    pub fn create_admin(&self, name: &str) -> Result<String, String> {
        admin::create_admin(&self.state, name)
    }

    /// Shutdown has begun: /ready answers 503 from now on. False when it had
    /// begun already.
    pub fn begin_drain(&self) -> bool {
        !self
            .state
            .draining
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether shutdown has begun (`begin_drain`).
    pub fn is_draining(&self) -> bool {
        self.state.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether every pooled database connection is open (start-up fills the pool
    /// in the background).
    pub fn pool_filled(&self) -> bool {
        self.state.db.is_filled()
    }

    /// Decides, from the head alone, which route serves the request and how (see
    /// [`Plan`]); a Content-Length over the route's body limit (413) and a JSON
    /// route's wrong media type (415) are refused here, before any body byte is
    /// read.
    pub fn plan(&self, head: &Head, buf: &[u8]) -> Result<Plan, Error> {
        let cfg = &self.state.config;
        let path = head.path.str(buf);
        let route = match cfg.test_routes.then(|| path.strip_prefix("/debug/")).flatten() {
            Some(test) => route::test_route(test)?,
            None => route::route(head.method, path)?,
        };
        if route == Route::Metrics && !cfg.metrics {
            return Err(ApiError::NotFound.into());
        }
        // Routes without a meaningful body still read (and ignore) a small one.
        let (body, body_limit) = match route {
            Route::FileUpload => (BodyUse::Streamed, cfg.max_upload_bytes),
            _ => (BodyUse::Buffered, cfg.max_json_bytes as u64),
        };
        if let Framing::Length(n) = head.framing {
            if n > body_limit {
                return Err(HttpError::BodyTooLarge.into());
            }
        }
        // A JSON route refuses another media type before its body is read.
        if route.takes_json() {
            json::check_content_type(head.content_type.map(|c| c.str(buf)))?;
        }
        Ok(Plan {
            route,
            body_limit,
            body,
            wait: route.wait(),
            kind: route.kind(),
            shed: route.sheddable(),
            cost: route.cost(),
            slot: route.slot(),
        })
    }

    /// Admits a request whose body has arrived, before anything is done for it:
    /// its client address, its token when rate limits need it, and its charge
    /// (see `admission`; `charge` false for a request admitted before it
    /// waited). `quota` gets the response's rate-limit fields.
    pub fn admit(
        &self,
        plan: &Plan,
        head: &Head,
        buf: &[u8],
        peer: IpAddr,
        charge: bool,
        quota: &mut QuotaFields,
    ) -> Result<Admitted, Error> {
        admission::admit(&self.state, plan, head, buf, peer, charge, quota).map_err(Error::from)
    }

    /// The body limit for a request whose routing failed: the engine still reads
    /// (and discards) a body up to this size to keep the connection.
    pub fn unrouted_body_limit(&self) -> u64 {
        self.state.config.max_json_bytes as u64
    }

    /// Serves a complete request, writing the response body into `out`.
    pub fn handle(&self, route: Route, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
        let st = &*self.state;
        match route {
            Route::Health => health::health(out),
            Route::Ready => health::ready(st, out),
            Route::Metrics => metrics::metrics(st, req, out),
            Route::OpenApi => {
                out.extend_from_slice(&st.openapi);
                // The same for as long as this binary runs.
                Ok(Reply {
                    cache_control: Some("public, max-age=300"),
                    ..Reply::json(200)
                })
            }
            Route::Relay => relay::answer(req),
            Route::AdminPage => admin::page(out),
            Route::AdminStats => admin::stats(st, req, out),
            Route::AdminBreakers => admin::breakers(st, req, out),
            Route::AdminBreakerSet => admin::set_breaker(st, req, out),
            Route::AdminCaches => admin::caches(st, req, out),
            Route::AdminCacheClear(cache) => admin::clear_cache(st, req, cache, out),
            Route::AdminUserTier(name) => admin::tier(st, req, name, out),
            Route::AdminUserSetTier(name) => admin::set_tier(st, req, name, out),
            Route::AdminUserRevoke(name) => admin::revoke(st, req, name, out),
            Route::AuthCreate => auth::create(st, req, out),
            Route::AuthLogin => auth::login(st, req, out),
            Route::AuthLogout => auth::logout(st, req),
            Route::SampleCreate => samples::created(req, out),
            Route::SampleGet(id) => samples::get(st, req, id, out),
            Route::SampleList => samples::list(st, req, out),
            Route::FileGet(md5) => files::get(st, req, md5),
            Route::CounterIncrement => counter::increment(req, out),
            Route::CounterGet => counter::get(st, out),
            Route::EventPost => events::post(st, req),
            Route::EventStats => events::stats(st, out),
            Route::InjectedPanic => panic!("injected panic (--test-routes)"),
            Route::InjectedSleep(ms) => {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                health::health(out)
            }
            Route::FileUpload => {
                Err(ApiError::Internal("uploads are streamed, not dispatched".into()).into())
            }
        }
    }

    /// A relayed request (`Wait::Fetch`) that has not been given anything yet:
    /// what the cache has for it now, or the ticket to wait with.
    pub fn relay_lookup(&self, req: &Request<'_>, request_id: &[u8]) -> Result<Looked, Error> {
        relay::lookup(&self.state, req, request_id)
    }

    /// Makes a relayed request wait for its key's fetch; `resume` is called
    /// once, from a fetch thread (or at once when the fetch queue is full).
    pub fn relay_wait(&self, ticket: Ticket, resume: Resume) {
        match &self.state.relay {
            Some(relay) => relay.wait(&ticket.key, &ticket.request_id, resume),
            None => resume(Fetched::unavailable()),
        }
    }

    /// Validates a request whose route waits for a batch (`Wait::Batch`) and stages
    /// it; an error is the request's answer.
    pub fn stage(&self, route: Route, req: &Request<'_>) -> Result<Staged, Error> {
        match route {
            Route::CounterIncrement => Ok(Staged::Increment),
            Route::SampleCreate => Ok(Staged::Sample(Box::new(samples::stage(&self.state, req)?))),
            _ => Err(ApiError::Internal(format!("{route:?} is not committed in batches")).into()),
        }
    }

    /// Commits a batch of staged requests of one lane, in order; one outcome each.
    pub fn commit<'a>(&self, lane: Lane, items: impl ExactSizeIterator<Item = &'a Staged>) -> Outcomes {
        match lane {
            Lane::Counter => {
                let n = items.len();
                Ok(counter::commit(&self.state, n)?.into_iter().map(Ok).collect())
            }
            Lane::Samples => {
                let mut samples = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Staged::Sample(s) => samples.push(&**s),
                        Staged::Increment => {
                            return Err(ApiError::Internal("an increment on the samples lane".into()))
                        }
                    }
                }
                samples::commit(&self.state, &samples)
            }
        }
    }

    /// Whether an upload may start, and where its body goes; see `files::admit`.
    pub fn admit_upload(&self, req: &Request<'_>) -> Result<UploadBody, Error> {
        files::admit(&self.state, req)
    }

    /// Stores a complete upload and records it; the response body goes into `out`.
    pub fn finish_upload(&self, body: UploadBody, out: &mut Vec<u8>) -> Result<Reply, Error> {
        files::finish(&self.state, body, out)
    }
}
