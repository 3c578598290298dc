//! Test support shared by the store tests and the black-box tests: throwaway databases on
//! both backends, and the real `estuary` binary started on free loopback ports with a fresh
//! data directory, as a user would start it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod matrix;
pub mod olm;

/// Environment variable holding an admin URL of the throwaway PostgreSQL server that
/// `scripts/test` starts (for example `postgres://postgres@127.0.0.1:5433/postgres`).
pub const PG_URL_VAR: &str = "ESTUARY_TEST_PG_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database. SQLite: a file in its own temp dir. PostgreSQL: a new database
/// on the test server (the whole throwaway cluster is removed by `scripts/test`).
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<TempDir>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The PostgreSQL admin URL. Fails the test, with instructions, when it is missing: a
/// PostgreSQL test that cannot run is a failure, not a skip.
pub fn pg_admin_url() -> String {
    std::env::var(PG_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{PG_URL_VAR} is not set, so the PostgreSQL half of this test cannot run.\n\
             Run the whole suite with ./scripts/test (it installs and starts a throwaway PostgreSQL),\n\
             or start one yourself and set {PG_URL_VAR}=postgres://USER@127.0.0.1:PORT/postgres"
        )
    })
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("estuary.db").display());
                TestDb {
                    url,
                    backend,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let admin = pg_admin_url();
                let name = unique_name("estuary_test");
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to {PG_URL_VAR}={admin}: {e}"));
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.ok();
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                TestDb {
                    url: format!("{base}/{name}"),
                    backend,
                    _dir: None,
                }
            }
        }
    }
}

/// Generates one `#[tokio::test]` per backend from an `async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await
                }
                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::Backend::Postgres).await
                }
            }
        )+
    };
}

/// Path of the `estuary` binary under test: `$ESTUARY_BIN`, or the one cargo built next to
/// this test executable (`target/<profile>/estuary`).
pub fn estuary_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ESTUARY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-exe>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("estuary");
    assert!(
        bin.exists(),
        "the estuary binary is not built at {}; run `cargo build -p estuary` first (./scripts/test does)",
        bin.display()
    );
    bin
}

/// `N` distinct free TCP ports on loopback for servers under test: all bound at once (so no
/// two are the same), then released for the server to take. They are drawn at random from
/// below the kernel's ephemeral range (`ip_local_port_range`): a port from inside it can be
/// handed to any outgoing connection (a test's HTTP or PostgreSQL client) in the moment
/// between its release and the server's bind, which failed a CI run with "Address already in
/// use".
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(N);
    for _ in 0..10_000 {
        if listeners.len() == N {
            break;
        }
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let port = low + u16::try_from(random % u64::from(high - low)).unwrap_or(0);
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(l);
        }
    }
    assert_eq!(listeners.len(), N, "no free ports below {high} on loopback");
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// A 1x1 PNG (media and avatar tests).
pub const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d,
    0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Open registration and no rate limits: the configuration most API tests start from.
pub const OPEN_CONFIG: &str = "[registration]\nopen = true\n\
    [rate_limits]\nlogin = { per_second = 0.0, burst = 0.0 }\nregistration = { per_second = 0.0, burst = 0.0 }\n\
    message = { per_second = 0.0, burst = 0.0 }\n";

/// A started server with [`OPEN_CONFIG`].
pub async fn open_server(backend: Backend) -> (Instance, Running) {
    let inst = Instance::with_config(backend, OPEN_CONFIG).await;
    let server = inst.start().await;
    (inst, server)
}

/// An installation: a data dir, a config file, a database. It can be started (and
/// restarted) as a server and administered with the CLI.
pub struct Instance {
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub db: TestDb,
    pub client_port: u16,
    pub federation_port: u16,
    /// Free ports for the XMPP listeners; used where the config says `{C2S_PORT}` and
    /// `{C2S_TLS_PORT}`.
    pub c2s_port: u16,
    pub c2s_tls_port: u16,
    runs: AtomicU32,
}

impl Instance {
    pub async fn new(backend: Backend) -> Instance {
        Self::with_config(backend, "").await
    }

    /// An instance whose config file is the test base config with `extra` (TOML) merged in,
    /// key by key, so `extra` may set keys of any section.
    pub async fn with_config(backend: Backend, extra: &str) -> Instance {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let [client_port, federation_port, c2s_port, c2s_tls_port] = free_ports();
        // Tests that enable XMPP refer to its ports by placeholder, so all four are distinct.
        let extra = extra
            .replace("{C2S_PORT}", &c2s_port.to_string())
            .replace("{C2S_TLS_PORT}", &c2s_tls_port.to_string())
            .replace("{CLIENT_PORT}", &client_port.to_string());
        let config_path = dir.path().join("estuary.toml");
        let base = format!(
            "server_name = \"localhost\"\n\
             data_dir = \"{data}\"\n\
             [database]\nurl = \"{url}\"\n\
             [matrix]\nclient_listen = [\"127.0.0.1:{client_port}\"]\n\
             federation_listen = [\"127.0.0.1:{federation_port}\"]\n\
             [xmpp]\nc2s_listen = []\nc2s_tls_listen = []\ns2s_listen = []\n",
            data = dir.path().join("data").display(),
            url = db.url,
        );
        let mut table: toml::Table = base.parse().unwrap();
        merge(&mut table, extra.parse().expect("extra config is valid TOML"));
        std::fs::write(&config_path, toml::to_string(&table).unwrap()).unwrap();
        Instance {
            dir,
            config_path,
            db,
            client_port,
            federation_port,
            c2s_port,
            c2s_tls_port,
            runs: AtomicU32::new(0),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `estuary --config <this instance's file>`, with no ESTUARY_* variables inherited.
    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(estuary_bin());
        clear_estuary_env(&mut cmd);
        cmd.arg("--config").arg(&self.config_path);
        cmd
    }

    /// Run a CLI command to completion (deadline 60 s).
    pub fn cli(&self, args: &[&str]) -> Output {
        run_with_deadline(self.command().args(args), Duration::from_secs(60))
    }

    /// Start `estuary serve` and wait until `/health` answers.
    pub async fn start(&self) -> Running {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let log_path = self.dir.path().join(format!("server-{run}.log"));
        let mut cmd = tokio::process::Command::from(self.command());
        cmd.arg("serve").stdin(Stdio::null()).stdout(Stdio::null());
        Running::spawn(cmd, log_path, format!("http://127.0.0.1:{}", self.client_port)).await
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Remove every ESTUARY_* variable so that the developer's environment cannot change a test.
pub fn clear_estuary_env(cmd: &mut std::process::Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("ESTUARY_") {
            cmd.env_remove(k);
        }
    }
}

/// Run a command to completion; kill it and fail the test after the deadline. Output is
/// drained while it runs, so a chatty child cannot block on a full pipe.
pub fn run_with_deadline(cmd: &mut std::process::Command, deadline: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline {
            child.kill().ok();
            child.wait().ok();
            let stderr = err.join().unwrap_or_default();
            let stdout = out.join().unwrap_or_default();
            panic!(
                "command {cmd:?} did not finish within {deadline:?}\n--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// A running server process. Dropping it kills the process (by PID).
pub struct Running {
    child: tokio::process::Child,
    pub base_url: String,
    pub log_path: PathBuf,
    pub http: reqwest::Client,
}

impl Running {
    /// Spawn a prepared `estuary serve` command with its stderr going to `log_path`, and
    /// wait until `base_url/health` answers (deadline 60 s).
    pub async fn spawn(mut cmd: tokio::process::Command, log_path: PathBuf, base_url: String) -> Running {
        let log = std::fs::File::create(&log_path).unwrap();
        cmd.stderr(log).kill_on_drop(true);
        let child = cmd.spawn().unwrap();
        let mut running = Running {
            child,
            base_url,
            log_path,
            http: http_client(),
        };
        running.wait_healthy(Duration::from_secs(60)).await;
        running
    }

    async fn wait_healthy(&mut self, deadline: Duration) {
        let start = Instant::now();
        let url = format!("{}/health", self.base_url);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("estuary exited during start-up with {status}; log:\n{}", self.logs());
            }
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            if start.elapsed() > deadline {
                panic!(
                    "estuary did not answer {url} within {deadline:?}; log:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// GET a path and return the status and the body parsed as JSON (Null if not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// Send SIGTERM and wait for the process to exit (deadline 30 s).
    pub async fn terminate(mut self) -> ExitStatus {
        signal(self.pid(), "TERM");
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("estuary did not exit within 30 s of SIGTERM; log:\n{}", self.logs()),
        }
    }

    /// SIGKILL: the process gets no chance to clean up (crash and durability tests).
    pub async fn kill(mut self) {
        signal(self.pid(), "KILL");
        self.child.wait().await.unwrap();
    }
}

/// An HTTP client for tests. It accepts any server certificate: test servers use the
/// self-signed certificate Estuary generates.
pub fn http_client() -> reqwest::Client {
    // Only ring is compiled in; make it the process default once (a second call is a no-op error).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{name} {pid}"))
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The Python of the repo's interop venv (`.venv`, made by `scripts/test`), or
/// `$ESTUARY_TEST_PYTHON`. Fails the test with instructions when it is missing.
pub fn interop_python() -> PathBuf {
    if let Ok(p) = std::env::var("ESTUARY_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "the interop venv is missing ({}); run ./scripts/test, which creates it with the client libraries in tests/interop/requirements.txt",
        venv.display()
    );
    venv
}

/// Run an interop script from `tests/interop/` with the venv's Python; fail the test with its
/// output unless it exits 0 and prints `ALL OK`.
pub fn run_interop_script(script: &str, args: &[&str], deadline: Duration) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop").join(script);
    let mut cmd = std::process::Command::new(interop_python());
    cmd.arg(&path).args(args);
    let out = run_with_deadline(&mut cmd, deadline);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

/// A started server for XMPP tests: open registration, no rate limits, a c2s listener (with
/// `xmpp_extra`, more lines for `[xmpp]`), and the accounts `users`, each with password "pw".
pub async fn xmpp_server(backend: Backend, xmpp_extra: &str, users: &[&str]) -> (Instance, Running) {
    let extra = format!("{OPEN_CONFIG}[xmpp]\nc2s_listen = [\"127.0.0.1:{{C2S_PORT}}\"]\n{xmpp_extra}");
    let inst = Instance::with_config(backend, &extra).await;
    let server = inst.start().await;
    for user in users {
        let out = inst.cli(&["user", "create", user, "--password", "pw"]);
        assert!(out.status.success(), "user create {user}: {out:?}");
    }
    (inst, server)
}

/// [`run_interop_script`] from async code, off the runtime's threads.
pub async fn interop_script(script: &str, args: &[&str], deadline: Duration) -> String {
    let script = script.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_interop_script(&script, &args, deadline)
    })
    .await
    .expect("interop script runner")
}

/// Run `node tests/interop/js/<script> <args>`; fail the test unless it exits 0 and prints
/// `ALL OK`. The packages come from `scripts/test` (npm ci in tests/interop/js).
pub fn run_node_script(script: &str, args: &[&str], deadline: Duration) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/js");
    assert!(
        dir.join("node_modules/matrix-js-sdk").exists() && dir.join("node_modules/@xmpp/client").exists(),
        "the JavaScript test clients are not installed in {}; run ./scripts/test (it runs npm ci there)",
        dir.display()
    );
    let mut cmd = std::process::Command::new("node");
    cmd.current_dir(&dir).arg(script).args(args);
    let out = run_with_deadline(&mut cmd, deadline);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "{script} failed ({}):\n--- stdout (last 8 KiB)\n{}\n--- stderr (last 8 KiB)\n{}",
        out.status,
        tail(&stdout, 8192),
        tail(&stderr, 8192)
    );
    stdout
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    &s[start..]
}

/// Run one SQL statement on the test database (to put it in a state an older version left).
pub async fn execute_sql(db: &TestDb, statement: &str) {
    use sqlx::Connection;
    let statement = sqlx::AssertSqlSafe(statement.to_owned());
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(statement).execute(&mut c).await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(statement).execute(&mut c).await.unwrap();
        }
    }
}

/// Privacy checks: `marker` (a plaintext) is nowhere in the store: not in the SQLite file or
/// its WAL, not in any PostgreSQL table. `table` must have rows, so the check looked at a
/// store that holds what the test wrote.
pub async fn assert_not_in_store(db: &TestDb, marker: &str, table: &str) {
    use sqlx::{Connection, Row};
    match db.backend {
        Backend::Sqlite => {
            let path = db.url.trim_start_matches("sqlite://");
            // The database file and its WAL: everything SQLite has written.
            for file in [path.to_owned(), format!("{path}-wal")] {
                if let Ok(bytes) = std::fs::read(&file) {
                    assert!(
                        !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                        "the plaintext is in {file}"
                    );
                }
            }
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut c)
                .await
                .unwrap();
            assert!(n > 0, "the check looked at a store with rows in {table}");
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap();
            assert!(tables.contains(&table.to_owned()), "{tables:?}");
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut c)
                .await
                .unwrap();
            assert!(n > 0, "the check looked at a store with rows in {table}");
            for t in tables {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT CAST(t AS TEXT) FROM \"{t}\" t")))
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
                for r in rows {
                    let text: String = r.get(0);
                    assert!(!text.contains(marker), "the plaintext is in table {t}");
                }
            }
        }
    }
}
