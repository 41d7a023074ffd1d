//! Shared helpers for the black-box tests: a throw-away database per test, the
//! server binary started against it, and a raw HTTP/1.1 client that reports exactly
//! what came back on the wire (including whether the server closed).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// The one slack factor of the suite: every upper bound on time in `tests/` is a
/// figure measured on an idle machine times this factor (see [`bound`]), so a slow
/// or loaded machine gets more time while the bound keeps its meaning. Set by
/// `CRUDRS_TEST_SLACK`; the default, 8, is sized for a 2-core machine whose both
/// CPUs are busy with something else (`make test-stress`), where the debug build's
/// requests take up to about five times as long as on an idle machine.
pub fn slack() -> u32 {
    static SLACK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SLACK.get_or_init(|| {
        std::env::var("CRUDRS_TEST_SLACK")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|n| *n >= 1)
            .unwrap_or(8)
    })
}

/// `idle` (a bound that holds with room to spare on an idle machine) scaled by
/// [`slack`].
pub fn bound(idle: Duration) -> Duration {
    idle * slack()
}

/// The admin connection string `make test` exports.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must name a PostgreSQL database that may create databases: run the tests with `make test`")
}

/// `url` with its database name replaced (key=value or URL form).
pub fn with_dbname(url: &str, name: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let (before_query, query) = rest.split_once('?').map_or((rest, None), |(a, b)| (a, Some(b)));
        let authority = before_query.split('/').next().unwrap_or("");
        let q = query.map(|q| format!("?{q}")).unwrap_or_default();
        format!("postgres://{authority}/{name}{q}")
    } else {
        format!("{url} dbname={name}")
    }
}

/// A database of its own for one test, dropped afterwards.
pub struct TestDb {
    pub url: String,
    pub name: String,
    admin: String,
}

impl TestDb {
    pub fn new(tag: &str) -> TestDb {
        let admin = admin_url();
        let name = format!(
            "crudrs_t_{tag}_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let mut c =
            postgres::Client::connect(&admin, postgres::NoTls).expect("connect to the admin database");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create test database");
        TestDb {
            url: with_dbname(&admin, &name),
            name,
            admin,
        }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// The server binary, running against a test database.
pub struct Server {
    /// Lines the server printed on stdout after the first (the address).
    pub stdout: std::sync::mpsc::Receiver<String>,
    pub child: Child,
    pub addr: SocketAddr,
    /// The server's data directory (uploaded files), private to this server.
    pub data_dir: std::path::PathBuf,
    /// What it logged on stderr, when started with [`Server::start_logged`]
    /// (otherwise its stderr is the test's).
    log: Option<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
}

/// Settings every test server gets through the environment twins of the flags, so
/// a test's own flags override them: a free port, cheap password hashing, and no
/// rate limits (most tests send far more from one address than the anonymous tier
/// allows; `tests/limits.rs` turns them on with flags).
const BASE_ENV: &[(&str, &str)] = &[
    ("PORT", "0"),
    ("ARGON2_MEMORY_KIB", "8"),
    ("ARGON2_ITERATIONS", "1"),
    ("RATE_LIMITS", "off"),
    ("LOGIN_LIMITS", "off"),
];

impl Server {
    pub fn start(db_url: &str, args: &[&str]) -> Server {
        Server::start_with(db_url, args, false)
    }

    /// [`Server::start`], logging at info level into [`Server::log`] instead of
    /// the test's stderr.
    pub fn start_logged(db_url: &str, args: &[&str]) -> Server {
        Server::start_with(db_url, args, true)
    }

    /// The lines logged so far (with `start_logged`; empty otherwise).
    pub fn log(&self) -> Vec<String> {
        self.log
            .as_ref()
            .map(|l| l.lock().unwrap().clone())
            .unwrap_or_default()
    }

    fn start_with(db_url: &str, args: &[&str], logged: bool) -> Server {
        let data_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "data-{}-{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_server"));
        cmd.env("DATA_DIR", &data_dir);
        cmd.args(args)
            .arg("--no-stats")
            .envs(BASE_ENV.iter().copied())
            .env("DATABASE_URL", db_url)
            // Shedding starts when the queue wait stays above its target; on a
            // loaded machine a worker waits for a CPU that long without any
            // overload, so the target gets the suite's slack.
            .env(
                "SHED_TARGET",
                format!("{}ms", bound(Duration::from_millis(20)).as_millis()),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if logged {
            cmd.env("RUST_LOG", "info").stderr(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("spawn server");
        let log = child.stderr.take().map(|stderr| {
            let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = std::sync::Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Every line goes to the test (the receiver may be gone: then they are
            // dropped, and the pipe still never fills).
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(bound(Duration::from_secs(30)))
            .expect("server printed its address");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Server {
            stdout: rx,
            child,
            addr,
            data_dir,
            log,
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.wait_exit()
    }

    /// Waits (up to 20 s, times the slack) for the process to exit on its own.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + bound(Duration::from_secs(20));
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// One response as received.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(bound(Duration::from_secs(10))))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Reads responses from a connection. `head_only` says which of them answer HEAD.
pub struct Reader {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pub closed: bool,
}

impl Reader {
    pub fn new(stream: TcpStream) -> Reader {
        Reader {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                self.closed = true;
                false
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// The next response, or `None` when the server closed first.
    pub fn next(&mut self, head_only: bool) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf).expect("a valid response") {
                httparse::Status::Complete(n) => {
                    let status = resp.code.expect("status");
                    let headers: Vec<(String, String)> = resp
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .map(|(_, v)| v.parse().expect("numeric content-length"))
                        .unwrap_or(0);
                    let len = if head_only || status == 100 { 0 } else { len };
                    while self.buf.len() < n + len {
                        assert!(self.fill(), "connection closed inside a response body");
                    }
                    let body = self.buf[n..n + len].to_vec();
                    self.buf.drain(..n + len);
                    return Some(Response {
                        status,
                        headers,
                        body,
                    });
                }
                httparse::Status::Partial => {
                    if !self.fill() {
                        assert!(
                            self.buf.is_empty(),
                            "partial response before close: {:?}",
                            String::from_utf8_lossy(&self.buf)
                        );
                        return None;
                    }
                }
            }
        }
    }

    /// Reads until the server closes; returns every response seen.
    pub fn until_close(&mut self) -> Vec<Response> {
        let mut all = Vec::new();
        while let Some(r) = self.next(false) {
            all.push(r);
        }
        all
    }
}

/// Sends `raw` on a new connection and collects every response until the server
/// closes or `want` responses arrived (then checks nothing else is pending).
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> (Vec<Response>, bool) {
    let mut s = connect(addr);
    s.write_all(raw).expect("write");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut r = Reader::new(s);
    let all = r.until_close();
    (all, r.closed)
}

/// GET `path` on a new connection, with extra header lines (each ending in CRLF).
pub fn get_with(addr: SocketAddr, path: &str, headers: &str) -> Response {
    let mut s = connect(addr);
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").unwrap();
    Reader::new(s).next(false).expect("a response")
}

/// A small JSON client over one keep-alive connection per call.
pub struct Api {
    pub addr: SocketAddr,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api { addr }
    }

    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Response {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        let mut s = connect(self.addr);
        s.write_all(req.as_bytes()).expect("write");
        Reader::new(s).next(method == "HEAD").expect("a response")
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &serde_json::Value) -> Response {
        self.call("POST", path, token, Some(&body.to_string()))
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.call("GET", path, token, None)
    }

    /// Creates a user and returns its token.
    pub fn user(&self, name: &str) -> String {
        let r = self.post(
            "/auth/create",
            None,
            &serde_json::json!({"username": name, "password": "correct horse", "email": format!("{name}@example.org")}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["api_key"].as_str().expect("api_key").to_string()
    }
}

/// Waits for `f` to hold, polling, up to `timeout` (an idle-machine figure, scaled
/// by the slack factor here).
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound(timeout);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The C project's example image.
pub fn png() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/example.png")).unwrap()
}

/// The head of POST /api/file for a body of `len` bytes of type `ct`.
pub fn upload_head(token: &str, ct: &str, len: usize, expect: bool) -> String {
    format!(
        "POST /api/file HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\n{}\r\n",
        if expect { "Expect: 100-continue\r\n" } else { "" }
    )
}

/// Uploads `body` on a connection of its own and returns the answer.
pub fn upload(addr: SocketAddr, token: &str, ct: &str, body: &[u8]) -> Response {
    let mut s = connect(addr);
    s.write_all(upload_head(token, ct, body.len(), false).as_bytes())
        .unwrap();
    s.write_all(body).unwrap();
    Reader::new(s).next(false).unwrap()
}

/// The C project's sample body.
pub fn fixture_body() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/body.json"))
        .expect("fixture")
}

/// A PostgreSQL cluster of a test's own (scripts/pg.sh on a private unix socket),
/// for tests that stop and start the database; stopped and removed on drop.
pub struct Cluster {
    dir: PathBuf,
    port: String,
}

impl Cluster {
    pub fn new(tag: &str) -> Cluster {
        Cluster {
            dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pg-{tag}-{}", std::process::id())),
            port: "5499".into(),
        }
    }

    fn script() -> String {
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh").to_string()
    }

    pub fn start(&self) -> String {
        let out = Command::new("bash")
            .arg(Self::script())
            .arg("start")
            .arg(&self.dir)
            .arg(&self.port)
            .output()
            .expect("run pg.sh");
        assert!(
            out.status.success(),
            "pg.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn stop(&self) {
        let st = Command::new("bash")
            .arg(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .status()
            .expect("run pg.sh");
        assert!(st.success());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `load` on `threads` threads until the database has been restarted under
/// it, and returns what each thread collected. Each call of `load` makes a few
/// requests and returns (acknowledged, refused with 503, its own record). The
/// phases end by what they show, never by a sleep: 100 writes acknowledged, the
/// cluster stopped until a 503 is seen, started again until 100 more are
/// acknowledged.
pub fn restart_under_load<R: Send + 'static>(
    cluster: &Cluster,
    threads: usize,
    load: impl Fn() -> (usize, usize, Vec<R>) + Send + Sync + 'static,
) -> Vec<R> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let load = Arc::new(load);
    let done = Arc::new(AtomicBool::new(false));
    let (acked, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (load, done, acked, refused) = (
                Arc::clone(&load),
                Arc::clone(&done),
                Arc::clone(&acked),
                Arc::clone(&refused),
            );
            std::thread::spawn(move || {
                let mut all = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let (ok, unavailable, record) = load();
                    acked.fetch_add(ok, Ordering::Relaxed);
                    refused.fetch_add(unavailable, Ordering::Relaxed);
                    all.extend(record);
                    std::thread::sleep(Duration::from_millis(10));
                }
                all
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || acked
        .load(Ordering::Relaxed)
        >= 100));
    cluster.stop();
    assert!(
        eventually(Duration::from_secs(10), || refused.load(Ordering::Relaxed) > 0),
        "the outage was not noticed"
    );
    cluster.start();
    let before = acked.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(15), || acked.load(Ordering::Relaxed)
            >= before + 100),
        "no write acknowledged after the database came back"
    );
    done.store(true, Ordering::Relaxed);
    workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
}

/// The key `--create-admin` printed (the server's next stdout line).
pub fn admin_key(server: &Server) -> String {
    let line = server
        .stdout
        .recv_timeout(bound(Duration::from_secs(10)))
        .expect("the admin key line");
    let key = line
        .split("key ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    assert_eq!(key.len(), 64, "{line}");
    key.to_string()
}

/// The relay's test upstream (`tools/test-upstream.rs`), on a port of its own;
/// killed when dropped.
pub struct Upstream {
    child: Child,
    pub addr: SocketAddr,
}

impl Upstream {
    /// On a free port.
    pub fn start() -> Upstream {
        Upstream::start_at("127.0.0.1:0")
    }

    /// On `addr` (to bring a stopped upstream back on its old port).
    pub fn start_at(addr: &str) -> Upstream {
        let mut child = Command::new(env!("CARGO_BIN_EXE_test-upstream"))
            .args(["--listen", addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn test-upstream");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("test-upstream printed its address");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Upstream { child, addr }
    }

    /// The base URL the relay is given (with a base path, so tests see that it
    /// is kept).
    pub fn url(&self) -> String {
        format!("http://{}/base", self.addr)
    }

    /// Requests the upstream counted for `target` (its path with `/base`, and query).
    pub fn count(&self, target: &str) -> u64 {
        let encoded: String = target
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let r = Api::new(self.addr).get(&format!("/__count?target={encoded}"), None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["n"].as_u64().expect("n")
    }

    /// Every request it counted.
    pub fn total(&self) -> u64 {
        Api::new(self.addr).get("/__count", None).json()["total"]
            .as_u64()
            .expect("total")
    }

    /// `POST /__fail?mode=...` (500, close, hang, off).
    pub fn fail(&self, mode: &str) {
        let r = Api::new(self.addr).call("POST", &format!("/__fail?mode={mode}"), None, None);
        assert_eq!(r.status, 204, "{}", r.text());
    }

    /// A new version of `path`: a new ETag and Last-Modified.
    pub fn bump(&self, path: &str) {
        let r = Api::new(self.addr).call("POST", &format!("/__bump?path={path}"), None, None);
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// Stops it (the relay then finds its port closed).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}
