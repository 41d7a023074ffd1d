//! GET /openapi.json: an OpenAPI 3.1 description of every route, built from the
//! route table ([`ROUTE_LABELS`]): each slot's path and method come from there,
//! and [`operation`] says what it takes and answers. A route without a description
//! fails a unit test, so the table and the document cannot drift apart.
//!
//! Statuses are listed per operation as the server can answer them; the error
//! body is one shape everywhere (`Error`). The test routes (`--test-routes`) are
//! described too but listed only when they are routed.

use super::route::{ROUTE_LABELS, UNMATCHED};
use serde_json::{json, Map, Value};

/// Strings the server stores may not hold NUL (PostgreSQL text cannot).
const NO_NUL: &str = "^[^\\x00]*$";

/// The server's address rule (`auth::valid_email`): visible ASCII, one `@`, a
/// domain with a dot that neither starts nor ends it.
const EMAIL: &str = "^[!-?A-~]+@[!-\\-/-?A-~]([!-?A-~]*\\.)+[!-?A-~]*[!-\\-/-?A-~]$";

/// A JSON response with this schema.
fn body(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn error(description: &str) -> Value {
    body(description, json!({"$ref": "#/components/schemas/Error"}))
}

fn limited(description: &str) -> Value {
    let mut e = error(description);
    e["headers"] = json!({"Retry-After": {"$ref": "#/components/headers/Retry-After"}});
    e
}

/// What every operation of a kind may answer besides its own statuses.
#[derive(Clone, Copy)]
struct Traits {
    /// Needs a bearer token (401).
    auth: bool,
    /// Needs an admin's token (403).
    admin: bool,
    /// Rate-limited (429) and shed under overload (503).
    limited: bool,
    /// Uses the database (503 while it is unavailable).
    db: bool,
    /// Takes a JSON body (400 for an invalid one, 413, 415).
    json_body: bool,
}

const OPEN: Traits = Traits {
    auth: false,
    admin: false,
    limited: true,
    db: false,
    json_body: false,
};

/// The description of one route slot: summary, parameters, body, own responses.
fn operation(slot: usize) -> Option<(Value, Traits)> {
    let labels = ROUTE_LABELS.get(slot)?;
    let user = Traits {
        auth: true,
        db: true,
        ..OPEN
    };
    let admin = Traits { admin: true, ..user };
    let name_param = json!([{"name": "name", "in": "path", "required": true,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,32}$"}}]);
    let (op, traits) = match (labels.method, labels.template) {
        ("GET", "/health") => (
            json!({"summary": "Liveness: the process answers.",
                   "responses": {"200": body("Alive.", json!({"$ref": "#/components/schemas/Health"}))}}),
            Traits {
                limited: false,
                ..OPEN
            },
        ),
        ("GET", "/ready") => (
            json!({"summary": "Readiness: PostgreSQL answers; the database breaker's state.",
                   "responses": {
                       "200": body("Ready.", json!({"$ref": "#/components/schemas/Ready"})),
                       "503": {"description": "Not ready.", "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
                               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Ready"}}}}}}),
            Traits {
                limited: false,
                ..OPEN
            },
        ),
        ("GET", "/metrics") => (
            json!({"summary": "Prometheus metrics (text format 0.0.4); with --metrics-token, a bearer token.",
                   "responses": {
                       "200": {"description": "The exposition.", "content": {"text/plain": {"schema": {"type": "string"}}}},
                       "401": error("--metrics-token is set and the token is missing or wrong.")}}),
            Traits {
                limited: false,
                ..OPEN
            },
        ),
        ("POST", "/auth/create") => (
            json!({"summary": "Creates an account and its first API key.",
                   "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewAccount"}}}},
                   "responses": {
                       "201": body("Created.", json!({"$ref": "#/components/schemas/Key"})),
                       "409": error("The username or email is taken.")}}),
            Traits {
                db: true,
                json_body: true,
                ..OPEN
            },
        ),
        ("POST", "/auth/login") => (
            json!({"summary": "A new API key for a username and password.",
                   "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Login"}}}},
                   "responses": {
                       "200": body("Signed in.", json!({"$ref": "#/components/schemas/Key"})),
                       "401": error("Wrong username or password (the same answer for both).")}}),
            Traits {
                db: true,
                json_body: true,
                ..OPEN
            },
        ),
        ("POST", "/auth/logout") => (
            json!({"summary": "Revokes the key the request carries.",
                   "responses": {"204": {"description": "Revoked."}}}),
            user,
        ),
        ("POST", "/api/sample") => (
            json!({"summary": "Stores a sample's metadata (group-committed).",
                   "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewSample"}}}},
                   "responses": {
                       "201": body("Stored.", json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}})),
                       "409": error("A sample with this img_md5 exists.")}}),
            Traits {
                json_body: true,
                ..user
            },
        ),
        ("GET", "/api/sample/{id}") => (
            json!({"summary": "One sample.",
                   "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1, "maximum": i64::MAX}}],
                   "responses": {
                       "200": body("The sample.", json!({"$ref": "#/components/schemas/Sample"})),
                       "404": error("No such sample.")}}),
            user,
        ),
        ("GET", "/api/samples") => (
            json!({"summary": "Samples by id, a page at a time.",
                   "parameters": [
                       {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": i64::MAX}},
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}],
                   "responses": {"200": body("A page.", json!({"type": "object", "required": ["samples", "next_after"], "properties": {
                       "samples": {"type": "array", "items": {"$ref": "#/components/schemas/Sample"}},
                       "next_after": {"type": ["integer", "null"]}}}))}}),
            user,
        ),
        ("POST", "/api/file") => (
            json!({"summary": "Uploads a file (streamed; content-addressed by MD5).",
                   "requestBody": {"required": true, "content": {
                       "image/png": {"schema": {"type": "string", "format": "binary"}},
                       "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                   "responses": {
                       "201": body("Stored.", json!({"$ref": "#/components/schemas/Stored"})),
                       "200": body("These bytes were already stored.", json!({"$ref": "#/components/schemas/Stored"})),
                       "400": error("Not a PNG although declared one."),
                       "411": error("No Content-Length and not chunked."),
                       "413": error("Over --max-upload-bytes."),
                       "415": error("Another media type.")}}),
            user,
        ),
        ("GET", "/api/file/{md5}") => (
            json!({"summary": "A stored file, with an ETag (If-None-Match gives 304).",
                   "parameters": [{"name": "md5", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"}}],
                   "responses": {
                       "200": {"description": "The bytes.", "content": {
                           "image/png": {"schema": {"type": "string", "format": "binary"}},
                           "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                       "304": {"description": "Not modified."},
                       "404": error("No such file.")}}),
            user,
        ),
        ("POST", "/api/v1/counter") => (
            json!({"summary": "Increments the durable counter; its new value.",
                   "responses": {"200": body("Committed.", json!({"$ref": "#/components/schemas/Counter"}))}}),
            Traits { db: true, ..OPEN },
        ),
        ("GET", "/api/v1/counter") => (
            json!({"summary": "The counter's value.",
                   "responses": {"200": body("The value.", json!({"$ref": "#/components/schemas/Counter"}))}}),
            Traits { db: true, ..OPEN },
        ),
        ("POST", "/event") => (
            json!({"summary": "Counts one event (One Million Request Challenge).",
                   "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}}},
                   "responses": {"200": {"description": "Counted."}}}),
            Traits {
                json_body: true,
                ..OPEN
            },
        ),
        ("GET", "/stats") => (
            json!({"summary": "Exact statistics of the events counted.",
                   "responses": {"200": body("The statistics.", json!({"$ref": "#/components/schemas/Stats"}))}}),
            OPEN,
        ),
        ("GET", "/debug/panic") => (
            json!({"summary": "Test only (--test-routes): a handler that panics.",
                   "responses": {"500": error("The panic, answered.")}}),
            OPEN,
        ),
        ("GET", "/debug/sleep/{ms}") => (
            json!({"summary": "Test only (--test-routes): holds a worker this long.",
                   "parameters": [{"name": "ms", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0, "maximum": 1000}}],
                   "responses": {"200": body("Slept.", json!({"$ref": "#/components/schemas/Health"}))}}),
            OPEN,
        ),
        ("GET", "/relay/{path}") => (
            json!({"summary": "The upstream's resource at this path and query (--relay-upstream), through the two-level cache. Answers carry the upstream's fields, Age and X-Cache (HIT, MISS, STALE or REVALIDATED); If-None-Match is answered 304 from the cache.",
                   "parameters": [{"name": "path", "in": "path", "required": true, "schema": {"type": "string"}}],
                   "responses": {"200": {"description": "The upstream's answer (its own 4xx and 5xx are relayed as they are)."},
                                 "304": {"description": "The client's If-None-Match matches the cached ETag."},
                                 "502": error("The upstream is unreachable or its answer unusable."),
                                 "504": error("The upstream did not answer within --relay-timeout.")}}),
            OPEN,
        ),
        ("GET", "/openapi.json") => (
            json!({"summary": "This description.",
                   "responses": {"200": body("OpenAPI 3.1.", json!({"type": "object"}))}}),
            Traits {
                limited: false,
                ..OPEN
            },
        ),
        ("GET", "/admin") => (
            json!({"summary": "The admin dashboard (an HTML page that asks for an admin key).",
                   "responses": {"200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}}}),
            OPEN,
        ),
        ("GET", "/admin/api/stats") => (
            json!({"summary": "Every figure the dashboard draws, cumulative since start.",
                   "responses": {"200": body("The figures.", json!({"type": "object"}))}}),
            admin,
        ),
        ("GET", "/admin/api/breakers") => (
            json!({"summary": "The circuit breakers.",
                   "responses": {"200": body("The breakers.", json!({"$ref": "#/components/schemas/Breakers"}))}}),
            admin,
        ),
        ("POST", "/admin/api/breakers/database") => (
            json!({"summary": "Forces the database breaker open (for `seconds`) or closed.",
                   "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["state"],
                       "additionalProperties": false,
                       "properties": {"state": {"enum": ["open", "closed"]}, "seconds": {"type": "integer", "minimum": 1, "maximum": 86400}}}}}},
                   "responses": {"200": body("The breakers.", json!({"$ref": "#/components/schemas/Breakers"}))}}),
            Traits {
                json_body: true,
                ..admin
            },
        ),
        ("GET", "/admin/api/caches") => (
            json!({"summary": "The caches and their sizes.",
                   "responses": {"200": body("The caches.", json!({"$ref": "#/components/schemas/Caches"}))}}),
            admin,
        ),
        ("POST", "/admin/api/caches/{name}/clear") => (
            json!({"summary": "Empties a cache.",
                   "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"enum": ["tokens", "bad_tokens"]}}],
                   "responses": {
                       "200": body("The caches.", json!({"$ref": "#/components/schemas/Caches"})),
                       "404": error("No such cache.")}}),
            admin,
        ),
        ("GET", "/admin/api/users/{name}/tier") => (
            json!({"summary": "A user's tier and role.", "parameters": name_param,
                   "responses": {
                       "200": body("The tier.", json!({"type": "object", "required": ["username", "tier", "role"], "properties": {
                           "username": {"type": "string"}, "tier": {"$ref": "#/components/schemas/Tier"}, "role": {"enum": ["user", "admin"]}}})),
                       "404": error("No such user.")}}),
            admin,
        ),
        ("PUT", "/admin/api/users/{name}/tier") => (
            json!({"summary": "Sets a user's tier (in effect at once in this process).", "parameters": name_param,
                   "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["tier"],
                       "additionalProperties": false, "properties": {"tier": {"$ref": "#/components/schemas/Tier"}}}}}},
                   "responses": {
                       "200": body("Set.", json!({"type": "object", "required": ["username", "tier"], "properties": {
                           "username": {"type": "string"}, "tier": {"$ref": "#/components/schemas/Tier"}}})),
                       "404": error("No such user.")}}),
            Traits {
                json_body: true,
                ..admin
            },
        ),
        ("POST", "/admin/api/users/{name}/revoke-tokens") => (
            json!({"summary": "Revokes every live token of a user.", "parameters": name_param,
                   "responses": {
                       "200": body("Revoked.", json!({"type": "object", "required": ["username", "revoked"], "properties": {
                           "username": {"type": "string"}, "revoked": {"type": "integer", "minimum": 0}}})),
                       "404": error("No such user.")}}),
            admin,
        ),
        _ => return None,
    };
    Some((op, traits))
}

/// Adds the statuses every operation with these traits may answer.
fn common(op: &mut Value, t: Traits) {
    let responses = &mut op["responses"];
    let mut add = |status: &str, v: Value| {
        if responses.get(status).is_none() {
            responses[status] = v;
        }
    };
    add("400", error("A malformed request or parameter."));
    add("431", error("Request head too large."));
    add("500", error("A bug (logged with the request ID)."));
    if t.auth {
        add("401", error("Missing, invalid, expired or revoked key."));
    }
    if t.admin {
        add("403", error("The key is not an admin's."));
    }
    if t.limited {
        add("429", limited("Over the rate limit (or the failed-login limit)."));
        add(
            "503",
            limited("Overloaded (shedding) or the database is unavailable."),
        );
    }
    if t.db {
        add("503", limited("The database is unavailable or overloaded."));
    }
    if t.json_body {
        add("413", error("Body over --max-json-bytes."));
        add("415", error("Not application/json."));
    }
}

/// The whole document. `test_routes`: whether the `/debug/` routes are routed;
/// `relay`: whether `/relay/` is.
pub fn document(test_routes: bool, relay: bool) -> Value {
    let mut paths = Map::new();
    for (slot, labels) in ROUTE_LABELS.iter().enumerate().take(UNMATCHED) {
        if (labels.template.starts_with("/debug/") && !test_routes)
            || (labels.template.starts_with("/relay/") && !relay)
        {
            continue;
        }
        let Some((mut op, traits)) = operation(slot) else {
            continue;
        };
        common(&mut op, traits);
        if traits.auth {
            op["security"] = json!([{"bearer": []}]);
        }
        op["operationId"] = json!(format!(
            "{}{}",
            labels.method.to_lowercase(),
            labels.template.replace(['/', '{', '}', '-', '.'], "_")
        ));
        let path = paths
            .entry(labels.template.to_string())
            .or_insert_with(|| json!({}));
        path[labels.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "crudrs", "version": env!("CARGO_PKG_VERSION"),
                 "description": "A REST API server backed by PostgreSQL. Every response carries X-Request-Id; limited routes carry RateLimit-Policy and RateLimit."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key from /auth/create or /auth/login (64 hex digits)."}},
            "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer", "minimum": 0}}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "detail"], "properties": {
                    "error": {"type": "string"}, "detail": {"type": "string"}}},
                "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
                "Ready": {"type": "object", "required": ["status", "database"], "properties": {
                    "status": {"enum": ["ready", "unavailable", "draining"]}, "database": {"enum": ["closed", "open", "half-open"]}}},
                "NewAccount": {"type": "object", "required": ["username", "password", "email"], "additionalProperties": false, "properties": {
                    "username": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{3,32}$"},
                    "password": {"type": "string", "minLength": 8, "maxLength": 1024, "pattern": NO_NUL},
                    "email": {"type": "string", "minLength": 3, "maxLength": 254, "pattern": EMAIL}}},
                "Login": {"type": "object", "required": ["username", "password"], "additionalProperties": false, "properties": {
                    "username": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": NO_NUL},
                    "password": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": NO_NUL}}},
                "Key": {"type": "object", "required": ["api_key", "expires_at"], "properties": {
                    "api_key": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "expires_at": {"type": "string", "format": "date-time"}}},
                "NewSample": {"type": "object", "additionalProperties": false,
                    "required": ["img_md5", "timestamp", "latitude", "longitude", "altitude", "metadata", "flora", "fauna", "calls"],
                    "properties": {
                        "img_md5": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
                        "timestamp": {"type": "string", "format": "date-time"},
                        "latitude": {"type": "number"}, "longitude": {"type": "number"}, "altitude": {"type": "number"},
                        "metadata": {"type": "integer", "minimum": -2147483648, "maximum": 2147483647},
                        "flora": {"$ref": "#/components/schemas/Names"},
                        "fauna": {"$ref": "#/components/schemas/Names"},
                        "calls": {"$ref": "#/components/schemas/Names"}}},
                "Names": {"type": "array", "maxItems": 64, "items": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": NO_NUL}},
                "Sample": {"type": "object", "required": ["id", "img_md5", "timestamp", "latitude", "longitude", "altitude", "metadata",
                    "flora", "fauna", "calls", "created_at", "owner", "image_present"], "properties": {
                    "id": {"type": "integer"}, "img_md5": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"},
                    "latitude": {"type": "number"}, "longitude": {"type": "number"}, "altitude": {"type": "number"},
                    "metadata": {"type": "integer"}, "flora": {"type": "array", "items": {"type": "string"}},
                    "fauna": {"type": "array", "items": {"type": "string"}}, "calls": {"type": "array", "items": {"type": "string"}},
                    "created_at": {"type": "string", "format": "date-time"}, "owner": {"type": "string"}, "image_present": {"type": "boolean"}}},
                "Stored": {"type": "object", "required": ["md5", "size"], "properties": {
                    "md5": {"type": "string", "pattern": "^[0-9a-f]{32}$"}, "size": {"type": "integer", "minimum": 0}}},
                "Counter": {"type": "object", "required": ["value"], "properties": {"value": {"type": "integer"}}},
                "Event": {"type": "object", "required": ["userId", "value"], "additionalProperties": false, "properties": {
                    "userId": {"type": "string", "minLength": 1, "maxLength": 256},
                    "value": {"type": "number", "multipleOf": 1e-9, "minimum": -1e18, "maximum": 1e18,
                              "description": "Counted exactly: at most nine decimal places."}}},
                "Stats": {"type": "object", "required": ["totalRequests", "uniqueUsers", "sum", "avg"], "properties": {
                    "totalRequests": {"type": "integer"}, "uniqueUsers": {"type": "integer"}, "sum": {"type": "number"}, "avg": {"type": "number"}}},
                "Tier": {"enum": ["free", "pro", "enterprise"]},
                "Breakers": {"type": "array", "items": {"type": "object", "required": ["dependency", "state", "opened"], "properties": {
                    "dependency": {"type": "string"}, "state": {"enum": ["closed", "open", "half-open"]}, "opened": {"type": "integer"}}}},
                "Caches": {"type": "array", "items": {"type": "object", "required": ["name", "entries"], "properties": {
                    "name": {"type": "string"}, "entries": {"type": "integer"}, "hits": {"type": "integer"},
                    "misses": {"type": "integer"}, "stale": {"type": "integer"}}}}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described() {
        for (slot, labels) in ROUTE_LABELS.iter().enumerate().take(UNMATCHED) {
            assert!(
                operation(slot).is_some(),
                "{} {} has no description in openapi.rs",
                labels.method,
                labels.template
            );
        }
        let doc = document(true, true);
        for labels in &ROUTE_LABELS[..UNMATCHED] {
            assert!(
                doc["paths"][labels.template][labels.method.to_lowercase()].is_object(),
                "{} {}",
                labels.method,
                labels.template
            );
        }
        assert!(document(false, false)["paths"].get("/debug/panic").is_none());
    }

    #[test]
    fn protected_operations_name_their_security_and_errors() {
        let doc = document(false, false);
        let get = &doc["paths"]["/api/samples"]["get"];
        assert_eq!(get["security"], json!([{"bearer": []}]));
        assert!(get["responses"]["401"].is_object());
        assert!(get["responses"]["429"]["headers"]["Retry-After"].is_object());
        assert!(doc["paths"]["/health"]["get"]["responses"].get("429").is_none());
        assert!(doc["paths"]["/admin/api/caches"]["get"]["responses"]["403"].is_object());
    }
}
