//! Black-box tests of the foundation: the real `estuary` binary, started as a user starts it,
//! on free loopback ports with a fresh data directory, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::time::Duration;

use estuary_tests::{
    Backend, Instance, Running, TestDb, both_backends, clear_estuary_env, estuary_bin, run_with_deadline,
};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
#[track_caller]
fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "command failed: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// `estuary serve` with no config file and no ESTUARY_* variables, in an empty directory:
/// it creates ./data and answers on the default client port, and over TLS on the default
/// federation port with the certificate it generated.
#[tokio::test]
async fn starts_with_no_config_at_all() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(estuary_bin());
    clear_estuary_env(&mut cmd);
    cmd.arg("serve")
        .current_dir(cwd.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let server = Running::spawn(
        cmd.into(),
        cwd.path().join("server.log"),
        "http://127.0.0.1:8008".to_owned(),
    )
    .await;

    let (status, body) = server.get_json("/_matrix/client/versions").await;
    assert_eq!(status, 200);
    assert!(body["versions"].as_array().is_some_and(|v| !v.is_empty()), "{body}");
    let health = server.http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "OK");

    let fed = server
        .http
        .get("https://127.0.0.1:8448/_matrix/federation/v1/version")
        .send()
        .await
        .unwrap();
    assert_eq!(fed.status(), 200);
    let fed: serde_json::Value = fed.json().await.unwrap();
    assert_eq!(fed["server"]["name"], "Estuary");

    let data = cwd.path().join("data");
    for f in [
        "estuary.db",
        "estuary.lock",
        "tls/self-signed.crt",
        "tls/self-signed.key",
    ] {
        assert!(data.join(f).exists(), "{f} missing in the data dir");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the data dir holds password hashes and keys: owner only");
    }
    assert!(server.terminate().await.success());
}

async fn user_create_then_list(backend: Backend) {
    let inst = Instance::new(backend).await;
    assert_ok(&inst.cli(&["user", "create", "alice", "--password", "correct horse"]));
    // Upper case is folded, as Synapse does on registration.
    let out = inst.cli(&["user", "create", "Bob", "--admin"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("@bob:localhost"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("password: "),
        "a generated password is printed once"
    );

    let list = inst.cli(&["user", "list"]);
    assert_ok(&list);
    let text = stdout(&list);
    let alice = text
        .lines()
        .find(|l| l.starts_with("alice "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        alice.contains("@alice:localhost") && alice.contains("alice@localhost") && alice.contains("active"),
        "{alice}"
    );
    let bob = text
        .lines()
        .find(|l| l.starts_with("bob "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(bob.trim_end().ends_with("yes"), "bob is an admin: {bob}");

    // Refusals say why and exit non-zero.
    let dup = inst.cli(&["user", "create", "alice", "--password", "x"]);
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("already taken"), "{}", stderr(&dup));
    let bad = inst.cli(&["user", "create", "a/b", "--password", "x"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("not allowed"), "{}", stderr(&bad));
    let missing = inst.cli(&["user", "set-password", "nobody", "--password", "x"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no account"), "{}", stderr(&missing));
}

/// The stored credentials of an account, read straight from the database.
async fn credentials(db: &TestDb, localpart: &str) -> (Option<String>, Option<Vec<u8>>, Option<Vec<u8>>) {
    use sqlx::Connection;
    const SQL: &str =
        "SELECT password_hash, scram_sha1_stored_key, scram_sha256_stored_key FROM accounts WHERE localpart = $1";
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_as(SQL).bind(localpart).fetch_one(&mut c).await.unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_as(SQL).bind(localpart).fetch_one(&mut c).await.unwrap()
        }
    }
}

async fn set_password_changes_hash_and_scram(backend: Backend) {
    let inst = Instance::new(backend).await;
    assert_ok(&inst.cli(&["user", "create", "carol", "--password", "first password"]));
    let before = credentials(&inst.db, "carol").await;
    assert!(
        before.0.as_deref().is_some_and(|h| h.starts_with("$argon2id$")),
        "{before:?}"
    );

    let mut cmd = inst.command();
    cmd.args(["user", "set-password", "carol", "--password-stdin"])
        .stdin(std::process::Stdio::piped());
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"second password\n").unwrap();
    }
    assert_ok(&child.wait_with_output().unwrap());

    let after = credentials(&inst.db, "carol").await;
    assert!(after.0.is_some() && after.1.is_some() && after.2.is_some(), "{after:?}");
    assert_ne!(before.0, after.0, "Argon2 hash changed");
    assert_ne!(before.1, after.1, "SCRAM-SHA-1 credentials changed");
    assert_ne!(before.2, after.2, "SCRAM-SHA-256 credentials changed");

    assert_ok(&inst.cli(&["user", "deactivate", "carol"]));
    assert_eq!(
        credentials(&inst.db, "carol").await,
        (None, None, None),
        "deactivation erases credentials"
    );
    let list = stdout(&inst.cli(&["user", "list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("carol ") && l.contains("deactivated")),
        "{list}"
    );
}

/// Accounts survive a clean restart and a crash; the CLI works beside a running server.
async fn restart_keeps_every_account(backend: Backend) {
    let inst = Instance::new(backend).await;
    assert_ok(&inst.cli(&["user", "create", "one", "--password", "pw1"]));
    let server = inst.start().await;
    assert_ok(&inst.cli(&["user", "create", "two", "--password", "pw2"]));
    assert!(server.terminate().await.success());

    let server = inst.start().await;
    assert_ok(&inst.cli(&["user", "create", "three", "--password", "pw3"]));
    server.kill().await;

    let server = inst.start().await;
    let list = stdout(&inst.cli(&["user", "list"]));
    for name in ["one", "two", "three"] {
        assert!(
            list.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} lost after restart:\n{list}"
        );
    }
    assert!(server.terminate().await.success());
}

async fn sigterm_exits_cleanly(backend: Backend) {
    let inst = Instance::new(backend).await;
    let server = inst.start().await;
    // A request in flight when the signal comes still gets its answer.
    let (status, _) = server.get_json("/_matrix/client/versions").await;
    assert_eq!(status, 200);
    let log_path = server.log_path.clone();
    let status = server.terminate().await;
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(
        log.contains("SIGTERM received") && log.contains("shutdown complete"),
        "{log}"
    );
    // The lock is released: the same data dir starts again at once.
    let again = inst.start().await;
    assert!(again.terminate().await.success());
}

/// An account deactivated by the CLI beside a running server loses its token there too: the
/// server holds a token it has checked for at most 5 seconds (`TOKEN_HELD_FOR`).
async fn cli_deactivation_revokes_tokens_of_a_running_server(backend: Backend) {
    let inst = Instance::new(backend).await;
    assert_ok(&inst.cli(&["user", "create", "erin", "--password", "pw-erin-1"]));
    let server = inst.start().await;
    let erin = estuary_tests::matrix::Client::login(&server, "erin", "pw-erin-1").await;
    erin.get("account/whoami").await.ok();
    assert_ok(&inst.cli(&["user", "deactivate", "erin"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = erin.get("account/whoami").await;
        if r.status == 401 {
            assert_eq!(r.body["errcode"], "M_UNKNOWN_TOKEN", "{}", r.body);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            std::time::Instant::now() < deadline,
            "the token still works 15 s after the account was deactivated"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(server.terminate().await.success());
}

both_backends!(
    user_create_then_list,
    set_password_changes_hash_and_scram,
    restart_keeps_every_account,
    sigterm_exits_cleanly,
    cli_deactivation_revokes_tokens_of_a_running_server
);

#[tokio::test]
async fn second_server_on_the_same_data_dir_is_refused() {
    let inst = Instance::new(Backend::Sqlite).await;
    let first = inst.start().await;
    let out = inst.cli(&["serve"]);
    assert!(!out.status.success(), "second server started: {}", stderr(&out));
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
    // The first one is unharmed.
    let (status, _) = first.get_json("/_matrix/client/versions").await;
    assert_eq!(status, 200);
    assert!(first.terminate().await.success());
}

/// A bad configuration: one clear error naming the key (and the file or variable), exit 2,
/// for `check-config` and for `serve` alike.
#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // (config file text, environment variables, the key the error must name)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "[database]\nurl = \"\"\nmax_connections = 5\n",
            &[],
            "database.max_connections",
        ),
        ("colour = \"blue\"\n", &[], "colour"),
        ("[registration]\nopen = \"yes\"\n", &[], "registration.open"),
        (
            "[matrix]\nclient_listen = \"127.0.0.1:8008\"\n",
            &[],
            "matrix.client_listen",
        ),
        ("[database]\nurl = \"mysql://localhost/estuary\"\n", &[], "database.url"),
        (
            "[database]\nurl = \"postgres://u@host:notaport/db\"\n",
            &[],
            "database.url",
        ),
        ("server_name = \"not a name\"\n", &[], "server_name"),
        ("[contact]\nadmin = [\"admin@example.org\"]\n", &[], "contact.admin"),
        (
            "[contact]\nsupport_page = \"http://example.org/help\"\n",
            &[],
            "contact.support_page",
        ),
        (
            "",
            &[("ESTUARY_FEDERATION__ENABLED", "sometimes")],
            "federation.enabled",
        ),
        ("", &[("ESTUARY_DATABASE__URL", "ftp://x")], "database.url"),
    ];
    for (i, (text, env, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        for sub in [&["check-config"][..], &["serve"][..], &["user", "list"][..]] {
            let mut cmd = std::process::Command::new(estuary_bin());
            clear_estuary_env(&mut cmd);
            cmd.current_dir(dir.path())
                .arg("--config")
                .arg(&path)
                .args(sub)
                .envs(env.iter().copied());
            let out = run_with_deadline(&mut cmd, Duration::from_secs(30));
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{sub:?} with {text:?} {env:?}: {err}");
            assert!(
                err.contains(&format!("key `{key}`")),
                "{sub:?} with {text:?}: error does not name {key}: {err}"
            );
            let origin = env
                .first()
                .map_or(path.display().to_string(), |(var, _)| var.to_string());
            assert!(err.contains(&origin), "error does not name {origin}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    // A missing file is an error too, naming the file.
    let mut cmd = std::process::Command::new(estuary_bin());
    clear_estuary_env(&mut cmd);
    cmd.args(["--config", "/nonexistent/estuary.toml", "check-config"]);
    let out = run_with_deadline(&mut cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/estuary.toml"), "{}", stderr(&out));
}

#[tokio::test]
async fn check_config_prints_the_effective_config() {
    let inst = Instance::new(Backend::Sqlite).await;
    let mut cmd = inst.command();
    cmd.arg("check-config").env("ESTUARY_REGISTRATION__OPEN", "true");
    let out = run_with_deadline(&mut cmd, Duration::from_secs(30));
    assert_ok(&out);
    let effective: toml::Table = stdout(&out).parse().unwrap();
    assert_eq!(
        effective["registration"]["open"].as_bool(),
        Some(true),
        "env override applied"
    );
    assert_eq!(
        effective["xmpp"]["domain"].as_str(),
        Some("localhost"),
        "derived default filled in"
    );
    assert_eq!(effective["xmpp"]["muc_domain"].as_str(), Some("conference.localhost"));
    assert_eq!(effective["database"]["url"].as_str(), Some(inst.db.url.as_str()));
}

#[tokio::test]
async fn migrate_is_idempotent() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let inst = Instance::new(backend).await;
        assert_ok(&inst.cli(&["migrate"]));
        assert_ok(&inst.cli(&["user", "create", "kept", "--password", "pw"]));
        assert_ok(&inst.cli(&["migrate"]));
        assert!(stdout(&inst.cli(&["user", "list"])).contains("kept"));
    }
}

/// Matrix-shaped errors for what the server does not serve.
#[tokio::test]
async fn unknown_endpoints_get_matrix_errors() {
    let inst = Instance::new(Backend::Sqlite).await;
    let server = inst.start().await;
    let (status, body) = server.get_json("/_matrix/client/v3/no_such_thing").await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")));
    // Discovery documents nobody configured are 404 with M_NOT_FOUND, never an empty answer.
    for doc in ["client", "server", "support"] {
        let (status, body) = server.get_json(&format!("/.well-known/matrix/{doc}")).await;
        assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{doc}");
    }
    let r = server
        .http
        .delete(server.url("/_matrix/client/versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    let fed = format!(
        "https://127.0.0.1:{}/_matrix/federation/v1/nothing",
        inst.federation_port
    );
    let r = server.http.get(fed).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(server.terminate().await.success());
}

/// Privacy: client addresses appear in the logs only when the operator turns on
/// `privacy.log_ips`, and access tokens in query strings never do.
#[tokio::test]
async fn client_ips_are_logged_only_when_configured() {
    for log_ips in [false, true] {
        let inst = Instance::with_config(
            Backend::Sqlite,
            &format!("[logging]\nlevel = \"debug\"\n[privacy]\nlog_ips = {log_ips}\n"),
        )
        .await;
        let server = inst.start().await;
        let (status, _) = server
            .get_json("/_matrix/client/versions?access_token=SECRET_TOKEN_123")
            .await;
        assert_eq!(status, 200);
        let log_path = server.log_path.clone();
        assert!(server.terminate().await.success());
        let log = std::fs::read_to_string(log_path).unwrap();
        assert!(
            log.contains("/_matrix/client/versions"),
            "the request is logged at debug: {log}"
        );
        assert!(
            !log.contains("SECRET_TOKEN_123"),
            "query strings must not be logged: {log}"
        );
        assert_eq!(log.contains("peer="), log_ips, "log_ips = {log_ips}: {log}");
    }
}

/// The commented example file documents the defaults: it must parse and equal them.
#[test]
fn example_config_is_valid_and_shows_the_defaults() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../estuary.example.toml");
    let run = |args: &[&std::ffi::OsStr]| {
        let mut cmd = std::process::Command::new(estuary_bin());
        clear_estuary_env(&mut cmd);
        cmd.args(args);
        let out = run_with_deadline(&mut cmd, Duration::from_secs(30));
        assert_ok(&out);
        stdout(&out)
    };
    let from_example = run(&["--config".as_ref(), example.as_os_str(), "check-config".as_ref()]);
    let from_defaults = run(&["check-config".as_ref()]);
    assert_eq!(from_example, from_defaults);
}
