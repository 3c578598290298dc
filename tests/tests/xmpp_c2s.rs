//! XMPP client-to-server: one account for Matrix and XMPP (a Matrix-registered user logs in
//! with SCRAM over XMPP), slixmpp interop, and stream errors for bad input. On SQLite and
//! PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use estuary_tests::matrix::Client;
use estuary_tests::{Backend, Instance, OPEN_CONFIG, both_backends, interop_script, run_interop_script};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Contact addresses, published over XMPP (XEP-0157) and Matrix (`/.well-known/matrix/support`).
const CONTACT: &str = r#"[contact]
admin = ["mailto:admin@localhost", "xmpp:admin@localhost", "matrix:u/admin:localhost?action=chat"]
abuse = ["https://localhost/abuse"]
support_page = "https://localhost/help"
"#;

async fn xmpp_instance(backend: Backend) -> (Instance, u16, u16) {
    let [plain, tls] = estuary_tests::free_ports();
    let extra = format!(
        "{OPEN_CONFIG}[xmpp]\nc2s_listen = [\"127.0.0.1:{plain}\"]\nc2s_tls_listen = [\"127.0.0.1:{tls}\"]\n{CONTACT}"
    );
    (Instance::with_config(backend, &extra).await, plain, tls)
}

async fn slixmpp_interop(backend: Backend) {
    let (inst, plain, tls) = xmpp_instance(backend).await;
    let server = inst.start().await;
    let alice = Client::register(&server, "alice", "alice-password").await;
    alice
        .put(
            "profile/@alice:localhost/displayname",
            serde_json::json!({ "displayname": "Alice from Matrix" }),
        )
        .await
        .ok();
    // alice's avatar, set through Matrix (the script expects these bytes in her vCard).
    let upload = alice
        .http
        .post(server.url("/_matrix/media/v3/upload"))
        .bearer_auth(alice.token.as_ref().unwrap())
        .header("content-type", "image/png")
        .body(estuary_tests::TINY_PNG.to_vec())
        .send()
        .await
        .unwrap();
    let mxc = upload.json::<serde_json::Value>().await.unwrap()["content_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .put(
            "profile/@alice:localhost/avatar_url",
            serde_json::json!({ "avatar_url": mxc }),
        )
        .await
        .ok();
    assert!(
        inst.cli(&["user", "create", "bob", "--password", "bob-password"])
            .status
            .success()
    );
    let args = [
        "--starttls-port".to_owned(),
        plain.to_string(),
        "--tls-port".to_owned(),
        tls.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = interop_script("slixmpp_c2s.py", &args, Duration::from_secs(120)).await;
    assert!(out.contains("bob receives alice's message"), "{out}");
    // The same contacts for Matrix clients (only e-mail and Matrix IDs have a field there).
    let anon = Client::anonymous(&server);
    let support: serde_json::Value = reqwest::get(server.url("/.well-known/matrix/support"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        support,
        serde_json::json!({
            "contacts": [
                { "role": "m.role.admin", "email_address": "admin@localhost" },
                { "role": "m.role.admin", "matrix_id": "@admin:localhost" },
            ],
            "support_page": "https://localhost/help",
        })
    );
    // The vCard bob set over XMPP is his Matrix display name and avatar.
    let profile = anon.get("profile/@bob:localhost").await.ok();
    assert_eq!(profile["displayname"], "Bob via XMPP");
    let avatar = profile["avatar_url"].as_str().expect("bob has an avatar");
    let r = alice.download(avatar).await;
    assert_eq!(r.headers()["content-type"], "image/gif");
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    );
    let log_path = server.log_path.clone();
    assert!(server.terminate().await.success());
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("alice-password"), "a password reached the log");
}

/// RFC 6121 roster, subscriptions and presence between two accounts, driven by slixmpp (the
/// script checks the stored roster through a second session).
async fn slixmpp_roster_and_presence(backend: Backend) {
    let (inst, plain, _tls) = xmpp_instance(backend).await;
    let server = inst.start().await;
    for (user, pw) in [("alice", "alice-password"), ("bob", "bob-password")] {
        assert!(inst.cli(&["user", "create", user, "--password", pw]).status.success());
    }
    let port = plain.to_string();
    let out = interop_script("slixmpp_roster.py", &["--port", &port], Duration::from_secs(120)).await;
    assert!(out.contains("subscription handshake ends at 'both'"), "{out}");
    assert!(server.terminate().await.success());
}

/// XEP-0191 blocking over slixmpp, kept in the Matrix ignore list (the script checks both
/// directions over HTTP with alice's Matrix token).
async fn slixmpp_blocking(backend: Backend) {
    let (inst, plain, _tls) = xmpp_instance(backend).await;
    let server = inst.start().await;
    for (user, pw) in [("alice", "alice-password"), ("bob", "bob-password")] {
        assert!(inst.cli(&["user", "create", user, "--password", pw]).status.success());
    }
    let alice = Client::login(&server, "alice", "alice-password").await;
    let args = [
        "--port".to_owned(),
        plain.to_string(),
        "--matrix-url".to_owned(),
        server.base_url.clone(),
        "--token".to_owned(),
        alice.token.clone().unwrap(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = interop_script("slixmpp_blocking.py", &args, Duration::from_secs(120)).await;
    assert!(out.contains("bob is in alice's Matrix ignore list"), "{out}");
    assert!(server.terminate().await.success());
}

/// One XMPP login with slixmpp; panics unless the outcome is `expect` ("ok" or "refused").
async fn xmpp_login(port: u16, jid: &str, password: &str, expect: &str) {
    let args = [
        "--port".to_owned(),
        port.to_string(),
        "--jid".to_owned(),
        jid.to_owned(),
        "--password".to_owned(),
        password.to_owned(),
        "--expect".to_owned(),
        expect.to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = interop_script("slixmpp_login.py", &args, Duration::from_secs(60)).await;
    assert!(out.contains(&format!("login {expect}")), "{out}");
}

/// One account, two protocols: a Matrix-registered user logs in over XMPP, and once Matrix
/// `account/password` changes the password, the old one fails on XMPP too.
async fn cross_protocol_password_change(backend: Backend) {
    let (inst, plain, _tls) = xmpp_instance(backend).await;
    let server = inst.start().await;
    let dora = Client::register(&server, "dora", "first-pw").await;
    xmpp_login(plain, "dora@localhost/a", "first-pw", "ok").await;
    let r = dora
        .with_password_uia(
            reqwest::Method::POST,
            "account/password",
            serde_json::json!({ "new_password": "second-pw" }),
            "first-pw",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    xmpp_login(plain, "dora@localhost/b", "first-pw", "refused").await;
    xmpp_login(plain, "dora@localhost/c", "second-pw", "ok").await;
    assert!(server.terminate().await.success());
}

/// XEP-0077 with slixmpp: in-band registration when registration is open (the account is a
/// Matrix account too), password change, removal (deactivation for both protocols); refused
/// when registration is closed.
async fn slixmpp_in_band_registration(backend: Backend) {
    let (inst, plain, _tls) = xmpp_instance(backend).await;
    let server = inst.start().await;
    let port = plain.to_string();
    let run = |phase: &'static str| {
        let port = port.clone();
        tokio::task::spawn_blocking(move || {
            run_interop_script(
                "slixmpp_register.py",
                &["--port", &port, "--phase", phase],
                Duration::from_secs(60),
            )
        })
    };
    run("open").await.unwrap();
    // The account is a Matrix account, with the password changed over XMPP.
    let anon = Client::anonymous(&server);
    let login = |pw: &str| serde_json::json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "carol" }, "password": pw });
    assert_eq!(anon.post("login", login("carol-pw-1")).await.status, 403);
    assert_eq!(anon.post("login", login("carol-pw-2")).await.status, 200);
    run("remove").await.unwrap();
    assert_eq!(
        anon.post("login", login("carol-pw-2")).await.status,
        403,
        "removed in band = deactivated"
    );
    assert!(server.terminate().await.success());

    let closed = Instance::with_config(backend, "[xmpp]\nc2s_listen = [\"127.0.0.1:{C2S_PORT}\"]\n").await;
    let server = closed.start().await;
    let port = closed.c2s_port.to_string();
    interop_script(
        "slixmpp_register.py",
        &["--port", &port, "--phase", "closed"],
        Duration::from_secs(60),
    )
    .await;
    assert!(server.terminate().await.success());
}

/// XEP-0163 PEP with slixmpp: publish-options, access models, notifications filtered by caps,
/// OMEMO device-list nodes, last item on login, configuration, retract, delete; bookmarks kept
/// alike in XEP-0402, private XML and the XEP-0048 PEP node.
async fn slixmpp_pep(backend: Backend) {
    let (inst, server) = estuary_tests::xmpp_server(backend, "", &["alice", "bob", "carol"]).await;
    let port = inst.c2s_port.to_string();
    let out = interop_script("slixmpp_pep.py", &["--port", &port], Duration::from_secs(120)).await;
    for step in ["and gets the node's last item", "the refused publishes changed nothing"] {
        assert!(out.contains(step), "{step}:\n{out}");
    }
    // The avatar alice published over PEP (and set again at the end) is her Matrix avatar.
    let anon = Client::anonymous(&server);
    let alice = Client::login(&server, "alice", "pw").await;
    let avatar = anon.get("profile/@alice:localhost").await.ok()["avatar_url"]
        .as_str()
        .expect("alice has an avatar")
        .to_owned();
    let r = alice.download(&avatar).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"\x89PNG\r\n\x1a\npep-avatar-bytes");
    assert!(!server.logs().contains("panicked"), "{}", server.logs());
    assert!(server.terminate().await.success());
}

/// OMEMO through the server with slixmpp-omemo: two clients publish their keys over PEP and
/// exchange encrypted messages both ways, one of them kept offline; the store holds only
/// ciphertext.
async fn slixmpp_omemo(backend: Backend) {
    let (inst, server) = estuary_tests::xmpp_server(backend, "", &["alice", "bob"]).await;
    let state = tempfile::tempdir().unwrap();
    let run = |phase: &'static str| {
        let port = inst.c2s_port.to_string();
        let state = state.path().display().to_string();
        tokio::task::spawn_blocking(move || {
            run_interop_script(
                "omemo_slixmpp.py",
                &["--port", &port, "--state", &state, "--phase", phase],
                Duration::from_secs(180),
            )
        })
    };
    let out = run("exchange").await.unwrap();
    assert!(out.contains("bob decrypts alice's OMEMO message"), "{out}");
    // The message kept for bob is in the store, as ciphertext only; so are the keys.
    estuary_tests::assert_not_in_store(&inst.db, "omemo-secret-4242", "xmpp_offline").await;
    estuary_tests::assert_not_in_store(&inst.db, "omemo-secret-4242", "pep_items").await;
    let out = run("offline").await.unwrap();
    assert!(
        out.contains("bob decrypts the OMEMO message the server kept offline"),
        "{out}"
    );
    let log_path = server.log_path.clone();
    assert!(server.terminate().await.success());
    assert!(!std::fs::read_to_string(log_path).unwrap().contains("omemo-secret-4242"));
}

/// Offline messages with delay, and XEP-0198 resumption after a dropped connection, with
/// slixmpp: nothing lost, nothing twice; after the resumption window, offline.
async fn slixmpp_offline_and_resumption(backend: Backend) {
    let (inst, server) = estuary_tests::xmpp_server(backend, "sm_resume_seconds = 2\n", &["alice", "bob"]).await;
    let port = inst.c2s_port.to_string();
    let out = interop_script(
        "slixmpp_sm.py",
        &["--port", &port, "--phase", "session"],
        Duration::from_secs(120),
    )
    .await;
    assert!(
        out.contains("messages for the expired session were kept offline"),
        "{out}"
    );
    assert!(!server.logs().contains("panicked"), "{}", server.logs());
    assert!(server.terminate().await.success());
}

/// SIGKILL during a burst from a stream-managed client to an offline account: after the
/// restart, every message the server had acknowledged (`<a h=…>`) is waiting offline, and is
/// in the recipient's archive.
async fn acked_messages_survive_sigkill(backend: Backend) {
    sigkill_during_burst(backend, false).await;
}

/// The same with the recipient online (stream-managed) during the burst: every acknowledged
/// message is in his archive (the DM room: a message between two local accounts is kept
/// there, not also in the offline store while his session is handed it), and what reached him
/// before the kill or waits offline after it comes in order, none twice.
async fn acked_messages_to_an_online_recipient_survive_sigkill(backend: Backend) {
    sigkill_during_burst(backend, true).await;
}

async fn sigkill_during_burst(backend: Backend, online: bool) {
    let (inst, server) = estuary_tests::xmpp_server(backend, "", &["alice", "bob"]).await;
    let dir = tempfile::tempdir().unwrap();
    let acked = dir.path().join("acked.txt");
    let received = dir.path().join("received.txt");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/slixmpp_sm.py");
    let mut burst = tokio::process::Command::new(estuary_tests::interop_python());
    burst
        .arg(&script)
        .args(["--port", &inst.c2s_port.to_string(), "--phase", "burst", "--acked"])
        .arg(&acked);
    if online {
        burst.arg("--received").arg(&received);
    }
    let mut burst = burst
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill once a few hundred messages were acknowledged, while the burst goes on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = std::fs::read_to_string(&acked).map(|s| s.lines().count()).unwrap_or(0);
        if n >= 300 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the burst was not acknowledged in time ({n} acked)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().await;
    let done = tokio::time::timeout(Duration::from_secs(60), burst.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(done.success(), "the burst client failed");
    let acked: Vec<String> = std::fs::read_to_string(&acked)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();

    let server = inst.start().await;
    let (got_path, archive_path) = (dir.path().join("got.txt"), dir.path().join("archive.txt"));
    let port = inst.c2s_port.to_string();
    let (got, archive) = (got_path.display().to_string(), archive_path.display().to_string());
    interop_script(
        "slixmpp_sm.py",
        &[
            "--port",
            &port,
            "--phase",
            "collect",
            "--out",
            &got,
            "--archive",
            &archive,
        ],
        Duration::from_secs(120),
    )
    .await;
    let lines = |p: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(p).unwrap().lines().map(str::to_owned).collect()
    };
    let (got, archive) = (lines(&got_path), lines(&archive_path));
    let before: std::collections::HashSet<String> = std::fs::read_to_string(&received)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        !online || !before.is_empty(),
        "the online recipient received nothing during the burst"
    );
    let all_in = |found: &[String], where_: &str| {
        let missing: Vec<&String> = acked.iter().filter(|b| !found.contains(b)).collect();
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged messages are not {where_}: {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(10)]
        );
    };
    all_in(&archive, "in the archive");
    if !online {
        all_in(&got, "waiting offline");
    }
    // In order, and none twice.
    let numbers: Vec<u32> = got
        .iter()
        .filter_map(|b| b.strip_prefix("burst-")?.parse().ok())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "out of order or duplicated: {numbers:?}"
    );
    assert!(server.terminate().await.success());
}

both_backends!(
    slixmpp_omemo,
    slixmpp_pep,
    slixmpp_in_band_registration,
    slixmpp_offline_and_resumption,
    acked_messages_survive_sigkill,
    acked_messages_to_an_online_recipient_survive_sigkill,
    slixmpp_interop,
    slixmpp_roster_and_presence,
    cross_protocol_password_change,
    slixmpp_blocking
);

/// XEP-0280 carbons between three sessions of one account, driven by slixmpp. Carbons live in
/// memory only, so one backend is enough.
#[tokio::test]
async fn slixmpp_carbons() {
    let (inst, plain, _tls) = xmpp_instance(Backend::Sqlite).await;
    let server = inst.start().await;
    for (user, pw) in [("alice", "alice-password"), ("bob", "bob-password")] {
        assert!(inst.cli(&["user", "create", user, "--password", pw]).status.success());
    }
    let port = plain.to_string();
    let out = interop_script("slixmpp_carbons.py", &["--port", &port], Duration::from_secs(120)).await;
    assert!(out.contains("a <private/> message is not copied"), "{out}");
    assert!(server.terminate().await.success());
}

/// xmpp.js: over WebSocket (RFC 7395, found through host-meta, XEP-0156) and over TCP with
/// STARTTLS: login, a wrong password, an IQ, messages both ways between the two, bad frames,
/// a clean close. The session code is the same for both, so one backend is enough.
#[tokio::test]
async fn xmpp_js_websocket_and_tcp() {
    let extra = format!(
        "{OPEN_CONFIG}[matrix]\npublic_base_url = \"http://127.0.0.1:{{CLIENT_PORT}}\"\n[xmpp]\nc2s_listen = [\"127.0.0.1:{{C2S_PORT}}\"]\n"
    );
    let inst = Instance::with_config(Backend::Sqlite, &extra).await;
    let server = inst.start().await;
    for user in ["alice", "bob"] {
        assert!(
            inst.cli(&["user", "create", user, "--password", "ws-password"])
                .status
                .success()
        );
    }
    let base = server.url("");
    let port = inst.c2s_port.to_string();
    let out = tokio::task::spawn_blocking(move || {
        estuary_tests::run_node_script(
            "xmpp_js.mjs",
            &[&base, "localhost", "ws-password", &port],
            Duration::from_secs(120),
        )
    })
    .await
    .unwrap();
    assert!(out.contains("bob got alice's 50 messages in order"), "{out}");
    // Without a public URL there is nothing to announce.
    let plain = Instance::new(Backend::Sqlite).await;
    let server2 = plain.start().await;
    let r = reqwest::get(server2.url("/.well-known/host-meta.json")).await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(server2.terminate().await.success());
    assert!(!server.logs().contains("panicked"), "{}", server.logs());
    assert!(server.terminate().await.success());
}

/// Talk raw XML to the STARTTLS port and return what the server sent back before closing.
async fn raw_exchange(port: u16, send: &[&str]) -> String {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    for chunk in send {
        sock.write_all(chunk.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut out = Vec::new();
    // A server that keeps the stream open (waiting for the client) is read for 2 s.
    let _ = tokio::time::timeout(Duration::from_secs(2), sock.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Like `raw_exchange`, for a header then bytes that need not be UTF-8; a write the server
/// refuses midway (it closed the stream) is not an error.
async fn raw_bytes_exchange(port: u16, header: &[u8], body: &[u8]) -> String {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    sock.write_all(header).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (mut rd, mut wr) = sock.into_split();
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut out)).await;
    drop(writer);
    String::from_utf8_lossy(&out).into_owned()
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0' to='localhost'>";

/// Bad input gets the RFC 6120 stream error it deserves, never silence or a crash.
#[tokio::test]
async fn stream_errors_for_bad_input() {
    let (inst, plain, _tls) = xmpp_instance(Backend::Sqlite).await;
    let server = inst.start().await;

    let wrong_host = HEADER.replace("to='localhost'", "to='elsewhere.example'");
    let r = raw_exchange(plain, &[&wrong_host]).await;
    assert!(r.contains("host-unknown"), "{r}");

    // RFC 6120 §4.9.3.10: a stream in other namespaces (a server stream, a wrong streams
    // namespace) gets invalid-namespace.
    for header in [
        HEADER.replace("xmlns='jabber:client'", "xmlns='jabber:server'"),
        HEADER.replace("http://etherx.jabber.org/streams", "http://wrong.example/streams"),
    ] {
        let r = raw_exchange(plain, &[&header]).await;
        assert!(r.contains("<invalid-namespace"), "{header}: {r}");
    }

    let r = raw_exchange(plain, &[HEADER]).await;
    assert!(
        r.contains("starttls") && r.contains("required"),
        "STARTTLS is offered and required: {r}"
    );
    assert!(
        r.contains("<limits xmlns='urn:xmpp:stream-limits:0'><max-bytes>10240</max-bytes>"),
        "XEP-0478 announces the pre-authentication stanza limit: {r}"
    );

    let r = raw_exchange(
        plain,
        &[
            HEADER,
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>",
        ],
    )
    .await;
    assert!(r.contains("policy-violation"), "no authentication before TLS: {r}");

    // RFC 6120 §13.12: an oversized stanza ends the stream with policy-violation (10 KiB
    // before authentication; the slixmpp test checks the limit after it).
    let big = format!("<message><body>{}</body></message>", "a".repeat(20_000));
    let r = raw_exchange(plain, &[HEADER, &big]).await;
    assert!(r.contains("policy-violation") && r.contains("stanza too large"), "{r}");

    // RFC 6120 §4.4: a client that closes its stream before authenticating gets our closing
    // tag back, not a bare end of the connection.
    let r = raw_exchange(plain, &[HEADER, "</stream:stream>"]).await;
    assert!(r.trim_end().ends_with("</stream:stream>"), "{r}");

    let r = raw_exchange(plain, &[HEADER, "<message><<<"]).await;
    assert!(r.contains("not-well-formed"), "{r}");

    // The hostile-input table: each gets its stream error, and the server keeps serving.
    let nested = "<a>".repeat(10_000);
    let laughs = "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]><lolz>&lol2;</lolz>";
    let cases: [(&str, &[u8], &str); 6] = [
        ("10 MB stanza", &[], "policy-violation"),
        ("10,000 nested elements", nested.as_bytes(), "policy-violation"),
        ("billion laughs (a DTD)", laughs.as_bytes(), "restricted-xml"),
        ("a comment", b"<!-- hello -->", "restricted-xml"),
        (
            "invalid UTF-8",
            b"<message><body>\xff\xfe</body></message>",
            "not-well-formed",
        ),
        (
            "a stanza before authentication",
            b"<message to='bob@localhost'><body>hi</body></message>",
            "policy-violation",
        ),
    ];
    for (what, bytes, condition) in cases {
        let big;
        let bytes = if bytes.is_empty() {
            big = format!("<message><body>{}</body></message>", "x".repeat(10 << 20));
            big.as_bytes()
        } else {
            bytes
        };
        let r = raw_bytes_exchange(plain, HEADER.as_bytes(), bytes).await;
        println!("{what}: {r:?}");
        assert!(
            r.contains(condition),
            "{what}: expected {condition}, got {r}\n{}",
            server.logs()
        );
    }

    // The server is fine afterwards.
    let r = raw_exchange(plain, &[HEADER]).await;
    assert!(r.contains("starttls"), "{r}");
    let log_path = server.log_path.clone();
    assert!(server.terminate().await.success());
    assert!(!std::fs::read_to_string(log_path).unwrap().contains("panicked"));
}
