//! The route table, and route policy as data: [`Api::plan`](super::Api::plan)
//! answers, from the request head alone, everything the connection driver must know
//! before it reads a body or runs a handler ([`Plan`]), so the driver never matches
//! on routes itself.

use super::error::ApiError;
use crate::http::parse::Method;
use crate::obs::metrics::RouteLabels;
use crate::obs::stats::Kind;
use crate::store::hex::decode_hex;

/// A resolved route, with its path parameters. Opaque to the connection driver,
/// which only hands it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Ready,
    /// GET /metrics (Prometheus).
    Metrics,
    /// GET /openapi.json.
    OpenApi,
    AuthCreate,
    AuthLogin,
    AuthLogout,
    SampleCreate,
    SampleGet(i64),
    SampleList,
    FileUpload,
    FileGet([u8; 16]),
    CounterIncrement,
    CounterGet,
    EventPost,
    EventStats,
    /// GET /admin: the dashboard page (it asks for the admin key itself).
    AdminPage,
    /// GET /admin/api/stats: the dashboard's figures.
    AdminStats,
    /// GET /admin/api/breakers, POST /admin/api/breakers/database.
    AdminBreakers,
    AdminBreakerSet,
    /// GET /admin/api/caches, POST /admin/api/caches/{name}/clear.
    AdminCaches,
    AdminCacheClear(CacheName),
    /// GET and PUT /admin/api/users/{name}/tier, POST /admin/api/users/{name}/revoke-tokens.
    AdminUserTier(Name),
    AdminUserSetTier(Name),
    AdminUserRevoke(Name),
    /// GET or HEAD /relay/<target>: the upstream's resource, through the caches
    /// (`--relay-upstream`).
    Relay,
    /// GET /debug/panic, routed only with `--test-routes`: its handler panics, so
    /// tests can show that a panic costs one connection and not a worker.
    InjectedPanic,
    /// GET /debug/sleep/{ms}, routed only with `--test-routes`: its handler holds
    /// its worker that many milliseconds (at most 1000), an overload on demand.
    InjectedSleep(u64),
}

/// The caches an admin can look at and clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheName {
    /// Valid tokens (owner, tier, expiry).
    Tokens,
    /// Tokens the database does not accept.
    BadTokens,
    /// The relay's level 1 (memory).
    Relay,
    /// The relay's level 2 (PostgreSQL, shared by every instance).
    RelayShared,
    /// Cached sample reads and listing pages.
    Reads,
}

impl CacheName {
    pub const ALL: [CacheName; 5] = [
        CacheName::Tokens,
        CacheName::BadTokens,
        CacheName::Relay,
        CacheName::RelayShared,
        CacheName::Reads,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheName::Tokens => "tokens",
            CacheName::BadTokens => "bad_tokens",
            CacheName::Relay => "relay",
            CacheName::RelayShared => "relay_shared",
            CacheName::Reads => "reads",
        }
    }
}

/// A username from a path (at most 32 characters, as accounts allow), kept
/// inline so a [`Route`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    bytes: [u8; 32],
    len: u8,
}

impl Name {
    /// A username given outside a request (`--create-admin`).
    pub fn parse_str(s: &str) -> Result<Name, ApiError> {
        Name::parse(s)
    }

    fn parse(s: &str) -> Result<Name, ApiError> {
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(ApiError::Invalid("not a username".into()));
        }
        let mut bytes = [0u8; 32];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Name {
            bytes,
            len: s.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// What a request must wait for before its handler runs. Waiting never holds a
/// worker: the connection itself waits, its request still in its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Nothing: the handler runs at once.
    Nothing,
    /// A permit of the password-hashing gate (argon2 is costly; the gate bounds how
    /// many hashes run at once).
    HashPermit,
    /// The commit of a group-commit batch on this lane: the request is staged
    /// (`Api::stage`), committed with others (`Api::commit`), then answered.
    Batch(Lane),
    /// A relayed resource: answered at once from the cache when it can be
    /// (`Api::relay_lookup`), otherwise the connection waits for the key's
    /// fetch (`Api::relay_wait`).
    Fetch,
}

/// A group-commit lane: requests of one lane are committed together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Counter,
    Samples,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Counter, Lane::Samples];

    /// Position in [`Lane::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where a request's body goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyUse {
    /// Buffered whole (at most `body_limit` bytes) and handed to the handler.
    Buffered,
    /// Streamed to disk as it arrives (`Api::admit_upload`), never buffered whole.
    Streamed,
}

/// Everything the connection driver needs to know about a request from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub route: Route,
    /// Most body bytes the request may carry; a Content-Length over it was refused.
    pub body_limit: u64,
    pub body: BodyUse,
    pub wait: Wait,
    /// How the request is counted.
    pub kind: Kind,
    /// Whether the request is refused while the server sheds load: every route but
    /// /health, /ready and /metrics ([`Route::sheddable`]). The engine decides, and
    /// never sheds a request that comes back from a wait.
    pub shed: bool,
    /// Rate-limit units the request costs; 0: never limited.
    pub cost: u64,
    /// Where the request is counted in the metrics ([`ROUTE_LABELS`]).
    pub slot: usize,
}

impl Route {
    pub fn kind(self) -> Kind {
        match self {
            Route::Health
            | Route::Ready
            | Route::Metrics
            | Route::OpenApi
            | Route::InjectedPanic
            | Route::InjectedSleep(_) => Kind::Health,
            Route::AdminPage
            | Route::AdminStats
            | Route::AdminBreakers
            | Route::AdminBreakerSet
            | Route::AdminCaches
            | Route::AdminCacheClear(_)
            | Route::AdminUserTier(_)
            | Route::AdminUserSetTier(_)
            | Route::AdminUserRevoke(_) => Kind::Auth,
            Route::AuthCreate | Route::AuthLogin | Route::AuthLogout => Kind::Auth,
            Route::SampleCreate | Route::SampleGet(_) | Route::SampleList => Kind::Sample,
            Route::FileUpload | Route::FileGet(_) => Kind::File,
            Route::CounterIncrement | Route::CounterGet => Kind::Counter,
            Route::EventPost | Route::EventStats => Kind::Event,
            Route::Relay => Kind::Relay,
        }
    }

    /// What the request waits for before its handler runs.
    pub fn wait(self) -> Wait {
        match self {
            Route::AuthCreate | Route::AuthLogin => Wait::HashPermit,
            Route::CounterIncrement => Wait::Batch(Lane::Counter),
            Route::SampleCreate => Wait::Batch(Lane::Samples),
            Route::Relay => Wait::Fetch,
            _ => Wait::Nothing,
        }
    }

    /// Rate-limit units the route costs: the probes, the metrics and the API
    /// description are free and never limited;
    /// what runs argon2 or stores a file costs more than a plain request.
    pub fn cost(self) -> u64 {
        match self {
            Route::Health | Route::Ready | Route::Metrics | Route::OpenApi => 0,
            Route::AuthCreate => 10,
            Route::AuthLogin | Route::FileUpload => 5,
            _ => 1,
        }
    }

    /// Whether the route is refused while the server sheds load.
    pub fn sheddable(self) -> bool {
        !matches!(self, Route::Health | Route::Ready | Route::Metrics)
    }

    /// The route's slot in [`ROUTE_LABELS`] (its metrics).
    pub fn slot(self) -> usize {
        match self {
            Route::Health => 0,
            Route::Ready => 1,
            Route::Metrics => 2,
            Route::AuthCreate => 3,
            Route::AuthLogin => 4,
            Route::AuthLogout => 5,
            Route::SampleCreate => 6,
            Route::SampleGet(_) => 7,
            Route::SampleList => 8,
            Route::FileUpload => 9,
            Route::FileGet(_) => 10,
            Route::CounterIncrement => 11,
            Route::CounterGet => 12,
            Route::EventPost => 13,
            Route::EventStats => 14,
            Route::InjectedPanic => 15,
            Route::InjectedSleep(_) => 16,
            Route::AdminPage => 17,
            Route::AdminStats => 18,
            Route::AdminBreakers => 19,
            Route::AdminBreakerSet => 20,
            Route::AdminCaches => 21,
            Route::AdminCacheClear(_) => 22,
            Route::AdminUserTier(_) => 23,
            Route::AdminUserSetTier(_) => 24,
            Route::AdminUserRevoke(_) => 25,
            Route::OpenApi => 26,
            Route::Relay => 27,
        }
    }

    /// Whether the route takes a JSON body.
    pub fn takes_json(self) -> bool {
        matches!(
            self,
            Route::AuthCreate
                | Route::AuthLogin
                | Route::SampleCreate
                | Route::EventPost
                | Route::AdminBreakerSet
                | Route::AdminUserSetTier(_)
        )
    }
}

const fn labels(method: &'static str, template: &'static str) -> RouteLabels {
    RouteLabels { template, method }
}

/// Each route's template and method, by [`Route::slot`]; the last slot counts
/// requests that matched no route (404, 405, malformed). Metric labels come from
/// here only, so they stay bounded: never a raw path or an id.
pub const ROUTE_LABELS: &[RouteLabels] = &[
    labels("GET", "/health"),
    labels("GET", "/ready"),
    labels("GET", "/metrics"),
    labels("POST", "/auth/create"),
    labels("POST", "/auth/login"),
    labels("POST", "/auth/logout"),
    labels("POST", "/api/sample"),
    labels("GET", "/api/sample/{id}"),
    labels("GET", "/api/samples"),
    labels("POST", "/api/file"),
    labels("GET", "/api/file/{md5}"),
    labels("POST", "/api/v1/counter"),
    labels("GET", "/api/v1/counter"),
    labels("POST", "/event"),
    labels("GET", "/stats"),
    labels("GET", "/debug/panic"),
    labels("GET", "/debug/sleep/{ms}"),
    labels("GET", "/admin"),
    labels("GET", "/admin/api/stats"),
    labels("GET", "/admin/api/breakers"),
    labels("POST", "/admin/api/breakers/database"),
    labels("GET", "/admin/api/caches"),
    labels("POST", "/admin/api/caches/{name}/clear"),
    labels("GET", "/admin/api/users/{name}/tier"),
    labels("PUT", "/admin/api/users/{name}/tier"),
    labels("POST", "/admin/api/users/{name}/revoke-tokens"),
    labels("GET", "/openapi.json"),
    labels("GET", "/relay/{path}"),
    labels("_OTHER", ""),
];

/// The metrics slot of a request that matched no route.
pub const UNMATCHED: usize = ROUTE_LABELS.len() - 1;

/// Resolves method and path to a route: 404 for an unknown path, 405 with `Allow` for a
/// known path and another method, 400 for a malformed path parameter.
pub fn route(method: Method, path: &str) -> Result<Route, ApiError> {
    const GET: &str = "GET, HEAD";
    const POST: &str = "POST";
    let is_get = matches!(method, Method::Get | Method::Head);
    let is_post = method == Method::Post;
    let (route, allow, ok) = match path {
        "/health" => (Route::Health, GET, is_get),
        "/ready" => (Route::Ready, GET, is_get),
        "/metrics" => (Route::Metrics, GET, is_get),
        "/openapi.json" => (Route::OpenApi, GET, is_get),
        "/auth/create" => (Route::AuthCreate, POST, is_post),
        "/auth/login" => (Route::AuthLogin, POST, is_post),
        "/auth/logout" => (Route::AuthLogout, POST, is_post),
        "/api/sample" => (Route::SampleCreate, POST, is_post),
        "/api/samples" => (Route::SampleList, GET, is_get),
        "/api/file" => (Route::FileUpload, POST, is_post),
        "/api/v1/counter" => {
            return match method {
                Method::Post => Ok(Route::CounterIncrement),
                Method::Get | Method::Head => Ok(Route::CounterGet),
                _ => Err(ApiError::MethodNotAllowed("GET, HEAD, POST")),
            }
        }
        "/event" => (Route::EventPost, POST, is_post),
        "/stats" => (Route::EventStats, GET, is_get),
        "/admin" => (Route::AdminPage, GET, is_get),
        "/admin/api/stats" => (Route::AdminStats, GET, is_get),
        "/admin/api/breakers" => (Route::AdminBreakers, GET, is_get),
        "/admin/api/breakers/database" => (Route::AdminBreakerSet, POST, is_post),
        "/admin/api/caches" => (Route::AdminCaches, GET, is_get),
        _ => {
            if let Some(rest) = path.strip_prefix("/admin/api/") {
                return admin_route(method, rest);
            }
            if path
                .strip_prefix("/relay")
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
            {
                return if is_get {
                    Ok(Route::Relay)
                } else {
                    Err(ApiError::MethodNotAllowed(GET))
                };
            }
            let parsed = if let Some(id) = path.strip_prefix("/api/sample/") {
                parse_id(id).map(Route::SampleGet)
            } else if let Some(md5) = path.strip_prefix("/api/file/") {
                parse_md5(md5).map(Route::FileGet)
            } else {
                return Err(ApiError::NotFound);
            };
            if !is_get {
                return Err(ApiError::MethodNotAllowed(GET));
            }
            return parsed;
        }
    };
    if ok {
        Ok(route)
    } else {
        Err(ApiError::MethodNotAllowed(allow))
    }
}

/// The admin routes with a path parameter (`rest` follows `/admin/api/`).
fn admin_route(method: Method, rest: &str) -> Result<Route, ApiError> {
    let is_post = method == Method::Post;
    if let Some(cache) = rest
        .strip_prefix("caches/")
        .and_then(|r| r.strip_suffix("/clear"))
    {
        let name = CacheName::ALL
            .into_iter()
            .find(|c| c.as_str() == cache)
            .ok_or(ApiError::NotFound)?;
        return if is_post {
            Ok(Route::AdminCacheClear(name))
        } else {
            Err(ApiError::MethodNotAllowed("POST"))
        };
    }
    let Some((user, action)) = rest.strip_prefix("users/").and_then(|r| r.split_once('/')) else {
        return Err(ApiError::NotFound);
    };
    match (action, method) {
        ("tier", Method::Get | Method::Head) => Name::parse(user).map(Route::AdminUserTier),
        ("tier", Method::Put) => Name::parse(user).map(Route::AdminUserSetTier),
        ("tier", _) => Err(ApiError::MethodNotAllowed("GET, HEAD, PUT")),
        ("revoke-tokens", Method::Post) => Name::parse(user).map(Route::AdminUserRevoke),
        ("revoke-tokens", _) => Err(ApiError::MethodNotAllowed("POST")),
        _ => Err(ApiError::NotFound),
    }
}

/// The routes under `/debug/` that `--test-routes` adds (`rest` is the path after
/// that prefix).
pub fn test_route(rest: &str) -> Result<Route, ApiError> {
    if rest == "panic" {
        return Ok(Route::InjectedPanic);
    }
    match rest.strip_prefix("sleep/").map(str::parse::<u64>) {
        Some(Ok(ms)) if ms <= 1000 => Ok(Route::InjectedSleep(ms)),
        Some(_) => Err(ApiError::Invalid("sleep takes 0 to 1000 milliseconds".into())),
        None => Err(ApiError::NotFound),
    }
}

fn parse_id(s: &str) -> Result<i64, ApiError> {
    match s.parse::<i64>() {
        Ok(id) if id > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(ApiError::Invalid("id must be a positive integer".into())),
    }
}

fn parse_md5(s: &str) -> Result<[u8; 16], ApiError> {
    let mut md5 = [0u8; 16];
    decode_hex(s.as_bytes(), &mut md5)
        .map(|()| md5)
        .ok_or_else(|| ApiError::Invalid("md5 must be 32 hexadecimal digits".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_with_404_405_and_400() {
        assert_eq!(route(Method::Get, "/health"), Ok(Route::Health));
        assert_eq!(route(Method::Head, "/health"), Ok(Route::Health));
        assert_eq!(route(Method::Get, "/api/sample/42"), Ok(Route::SampleGet(42)));
        assert!(matches!(route(Method::Get, "/nope"), Err(ApiError::NotFound)));
        assert!(matches!(
            route(Method::Post, "/health"),
            Err(ApiError::MethodNotAllowed("GET, HEAD"))
        ));
        assert!(matches!(
            route(Method::Get, "/auth/login"),
            Err(ApiError::MethodNotAllowed("POST"))
        ));
        assert!(matches!(
            route(Method::Get, "/api/sample/x1"),
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            route(Method::Get, "/api/sample/-1"),
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            route(Method::Get, "/api/sample/+1"),
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            route(Method::Get, "/debug/panic"),
            Err(ApiError::NotFound)
        ));
    }

    #[test]
    fn every_route_has_its_own_labels() {
        let all = [
            Route::Health,
            Route::Ready,
            Route::Metrics,
            Route::AuthCreate,
            Route::AuthLogin,
            Route::AuthLogout,
            Route::SampleCreate,
            Route::SampleGet(1),
            Route::SampleList,
            Route::FileUpload,
            Route::FileGet([0; 16]),
            Route::CounterIncrement,
            Route::CounterGet,
            Route::EventPost,
            Route::EventStats,
            Route::InjectedPanic,
            Route::InjectedSleep(1),
            Route::AdminPage,
            Route::AdminStats,
            Route::AdminBreakers,
            Route::AdminBreakerSet,
            Route::AdminCaches,
            Route::AdminCacheClear(CacheName::Tokens),
            Route::AdminUserTier(Name::parse("a").expect("name")),
            Route::AdminUserSetTier(Name::parse("a").expect("name")),
            Route::AdminUserRevoke(Name::parse("a").expect("name")),
            Route::OpenApi,
            Route::Relay,
        ];
        let slots: std::collections::HashSet<usize> = all.iter().map(|r| r.slot()).collect();
        assert_eq!(slots.len(), all.len());
        assert!(all.iter().all(|r| r.slot() < UNMATCHED));
        assert_eq!(ROUTE_LABELS.len(), all.len() + 1);
        assert_eq!(
            ROUTE_LABELS[Route::SampleGet(9).slot()].template,
            "/api/sample/{id}"
        );
    }

    #[test]
    fn relay_paths_take_get_and_head_only() {
        for path in ["/relay", "/relay/", "/relay/a/b"] {
            assert_eq!(route(Method::Get, path).ok(), Some(Route::Relay), "{path}");
            assert_eq!(route(Method::Head, path).ok(), Some(Route::Relay), "{path}");
        }
        assert!(matches!(
            route(Method::Post, "/relay/a"),
            Err(ApiError::MethodNotAllowed(_))
        ));
        assert!(matches!(route(Method::Get, "/relayed"), Err(ApiError::NotFound)));
    }

    #[test]
    fn admin_paths_take_names_and_refuse_the_rest() {
        let tier = route(Method::Get, "/admin/api/users/al.ice_1/tier").expect("route");
        assert!(matches!(tier, Route::AdminUserTier(n) if n.as_str() == "al.ice_1"));
        assert!(matches!(
            route(Method::Put, "/admin/api/users/bob/tier"),
            Ok(Route::AdminUserSetTier(_))
        ));
        assert!(matches!(
            route(Method::Post, "/admin/api/users/bob/tier"),
            Err(ApiError::MethodNotAllowed(_))
        ));
        assert!(matches!(
            route(Method::Get, "/admin/api/users/bad%20name/tier"),
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            route(Method::Post, "/admin/api/caches/bad_tokens/clear"),
            Ok(Route::AdminCacheClear(CacheName::BadTokens))
        ));
        assert!(matches!(
            route(Method::Post, "/admin/api/caches/other/clear"),
            Err(ApiError::NotFound)
        ));
        assert!(matches!(
            route(Method::Get, "/admin/api/users/bob"),
            Err(ApiError::NotFound)
        ));
    }

    #[test]
    fn lanes_index_their_table() {
        for (i, lane) in Lane::ALL.iter().enumerate() {
            assert_eq!(lane.index(), i);
        }
    }
}
