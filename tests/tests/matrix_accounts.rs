//! Black-box tests of the Matrix account endpoints: registration with user-interactive auth,
//! login and logout, devices, password change, deactivation, profiles, rate limits and the
//! spec's errors for bad input. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use estuary_tests::matrix::{Client, login_body};
use estuary_tests::{Backend, Instance, OPEN_CONFIG, both_backends, open_server};
use reqwest::Method;
use serde_json::json;

async fn registration_uia_flow(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let anon = Client::anonymous(&server);

    // First round: the challenge lists m.login.dummy; no account yet.
    let first = anon
        .post("register", json!({ "username": "alice", "password": "pw-alice" }))
        .await;
    assert_eq!(first.status, 401, "{}", first.body);
    assert_eq!(first.body["flows"], json!([{ "stages": ["m.login.dummy"] }]));
    let session = first.body["session"].as_str().unwrap();
    let avail = anon.get("register/available?username=alice").await;
    assert_eq!(avail.body["available"], true, "{}", avail.body);

    let done = anon
        .post(
            "register",
            json!({ "username": "alice", "password": "pw-alice", "initial_device_display_name": "phone",
            "auth": { "type": "m.login.dummy", "session": session } }),
        )
        .await
        .ok();
    assert_eq!(done["user_id"], "@alice:localhost");
    assert!(done["access_token"].as_str().is_some_and(|t| !t.is_empty()));

    // A replayed session is gone once used.
    anon.post(
        "register",
        json!({ "username": "alice2", "password": "x", "auth": { "type": "m.login.dummy", "session": session } }),
    )
    .await
    .err(400, "M_UNKNOWN");
    // Taken, invalid, and reserved names are refused before any UIA round.
    anon.post("register", json!({ "username": "alice", "password": "x" }))
        .await
        .err(400, "M_USER_IN_USE");
    anon.get("register/available?username=alice")
        .await
        .err(400, "M_USER_IN_USE");
    anon.post("register", json!({ "username": "a/b", "password": "x" }))
        .await
        .err(400, "M_INVALID_USERNAME");
    anon.post("register", json!({ "username": "_bridge", "password": "x" }))
        .await
        .err(400, "M_INVALID_USERNAME");
    // Upper case folds to lower case, as Synapse does.
    let bob = Client::register(&server, "Bob", "pw-bob").await;
    assert_eq!(bob.user_id, "@bob:localhost");
    // inhibit_login: an account but no session.
    let first = anon
        .post(
            "register",
            json!({ "username": "carl", "password": "pw", "inhibit_login": true }),
        )
        .await;
    let session = first.body["session"].as_str().unwrap();
    let done = anon
        .post("register", json!({ "username": "carl", "password": "pw", "inhibit_login": true, "auth": { "type": "m.login.dummy", "session": session } }))
        .await
        .ok();
    assert!(done.get("access_token").is_none(), "{done}");
    Client::login(&server, "carl", "pw").await;
}

async fn registration_closed_and_tokens(backend: Backend) {
    let inst = Instance::with_config(backend, "[registration]\nopen = false\ntokens = []\n").await;
    let server = inst.start().await;
    Client::anonymous(&server)
        .post("register", json!({ "username": "x", "password": "y" }))
        .await
        .err(403, "M_FORBIDDEN");
    drop(server);

    let inst = Instance::with_config(backend, "[registration]\nopen = false\ntokens = [\"let-me-in\"]\n").await;
    let server = inst.start().await;
    let anon = Client::anonymous(&server);
    assert_eq!(
        anon.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=let-me-in")
            .await
            .ok()["valid"],
        true
    );
    assert_eq!(
        anon.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=nope")
            .await
            .ok()["valid"],
        false
    );
    let first = anon
        .post("register", json!({ "username": "tok", "password": "pw" }))
        .await;
    assert_eq!(
        first.body["flows"],
        json!([{ "stages": ["m.login.registration_token"] }])
    );
    let session = first.body["session"].as_str().unwrap();
    // A wrong token: still 401, with the error of the failed stage.
    let wrong = anon
        .post("register", json!({ "username": "tok", "password": "pw", "auth": { "type": "m.login.registration_token", "token": "nope", "session": session } }))
        .await;
    wrong.err(401, "M_FORBIDDEN");
    assert_eq!(wrong.body["session"], session);
    // m.login.dummy is not among the flows.
    anon.post(
        "register",
        json!({ "username": "tok", "password": "pw", "auth": { "type": "m.login.dummy", "session": session } }),
    )
    .await
    .err(401, "M_UNRECOGNIZED");
    anon.post("register", json!({ "username": "tok", "password": "pw", "auth": { "type": "m.login.registration_token", "token": "let-me-in", "session": session } }))
        .await
        .ok();
}

async fn login_logout_and_tokens(backend: Backend) {
    let (inst, server) = open_server(backend).await;
    // An account made with the CLI logs in over Matrix: one account store.
    assert!(
        inst.cli(&["user", "create", "dora", "--password", "pw-dora"])
            .status
            .success()
    );
    let anon = Client::anonymous(&server);
    let flows = anon.get("login").await.ok();
    assert_eq!(flows["flows"][0]["type"], "m.login.password");

    anon.post("login", login_body("dora", "wrong"))
        .await
        .err(403, "M_FORBIDDEN");
    anon.post("login", login_body("nobody", "pw"))
        .await
        .err(403, "M_FORBIDDEN");
    anon.post("login", login_body("@dora:elsewhere.org", "pw-dora"))
        .await
        .err(403, "M_FORBIDDEN");
    let a = Client::login(&server, "dora", "pw-dora").await;
    let b = Client::login(&server, "@dora:localhost", "pw-dora").await;
    assert_ne!(a.device_id, b.device_id);
    let who = a.get("account/whoami").await.ok();
    assert_eq!(
        (who["user_id"].as_str(), who["device_id"].as_str()),
        (Some("@dora:localhost"), Some(a.device_id.as_str()))
    );

    // Logging in again on a device revokes that device's old token.
    let mut relogin = login_body("dora", "pw-dora");
    relogin["device_id"] = json!(a.device_id);
    let again = anon.post("login", relogin).await.ok();
    assert_eq!(again["device_id"], a.device_id.as_str());
    a.get("account/whoami").await.err(401, "M_UNKNOWN_TOKEN");

    // Logout deletes the device; logout/all every device.
    b.post("logout", json!({})).await.ok();
    b.get("account/whoami").await.err(401, "M_UNKNOWN_TOKEN");
    let c = Client::login(&server, "dora", "pw-dora").await;
    let d = Client::login(&server, "dora", "pw-dora").await;
    let ids: Vec<String> = c.get("devices").await.ok()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        ids.contains(&c.device_id) && ids.contains(&d.device_id) && !ids.contains(&b.device_id),
        "{ids:?}"
    );
    c.post("logout/all", json!({})).await.ok();
    d.get("account/whoami").await.err(401, "M_UNKNOWN_TOKEN");
    c.get("account/whoami").await.err(401, "M_UNKNOWN_TOKEN");
}

async fn devices_and_uia(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let me = Client::register(&server, "eve", "pw-eve").await;
    let other = Client::login(&server, "eve", "pw-eve").await;
    let path = format!("devices/{}", other.device_id);

    me.put(&path, json!({ "display_name": "old phone" })).await.ok();
    assert_eq!(me.get(&path).await.ok()["display_name"], "old phone");
    me.get("devices/NOSUCHDEV").await.err(404, "M_NOT_FOUND");
    me.put("devices/NOSUCHDEV", json!({ "display_name": "x" }))
        .await
        .err(404, "M_NOT_FOUND");

    // Deleting needs the password; a wrong one keeps the session and says why.
    let first = me.delete(&path, json!({})).await;
    assert_eq!(first.status, 401);
    let session = first.body["session"].as_str().unwrap().to_owned();
    let wrong = me
        .delete(&path, json!({ "auth": me.password_auth("nope", &session) }))
        .await;
    wrong.err(401, "M_FORBIDDEN");
    other.get("account/whoami").await.ok();
    me.delete(&path, json!({ "auth": me.password_auth("pw-eve", &session) }))
        .await
        .ok();
    other.get("account/whoami").await.err(401, "M_UNKNOWN_TOKEN");
    me.get(&path).await.err(404, "M_NOT_FOUND");

    // A UIA session is bound to its operation: it cannot be reused to delete another device.
    let third = Client::login(&server, "eve", "pw-eve").await;
    let fourth = Client::login(&server, "eve", "pw-eve").await;
    let s3 = me.delete(&format!("devices/{}", third.device_id), json!({})).await.body["session"]
        .as_str()
        .unwrap()
        .to_owned();
    me.delete(
        &format!("devices/{}", fourth.device_id),
        json!({ "auth": me.password_auth("pw-eve", &s3) }),
    )
    .await
    .err(400, "M_UNKNOWN");
    let r = me
        .with_password_uia(
            Method::POST,
            "delete_devices",
            json!({ "devices": [third.device_id, fourth.device_id] }),
            "pw-eve",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    third.get("account/whoami").await.err(401, "M_UNKNOWN_TOKEN");
    fourth.get("account/whoami").await.err(401, "M_UNKNOWN_TOKEN");
    me.get("account/whoami").await.ok();
}

async fn password_change_and_deactivation(backend: Backend) {
    let (inst, server) = open_server(backend).await;
    let me = Client::register(&server, "fay", "first-pw").await;
    let other = Client::login(&server, "fay", "first-pw").await;
    let r = me
        .with_password_uia(
            Method::POST,
            "account/password",
            json!({ "new_password": "second-pw" }),
            "first-pw",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The caller's device stays; every other device is logged out (logout_devices defaults to true).
    me.get("account/whoami").await.ok();
    other.get("account/whoami").await.err(401, "M_UNKNOWN_TOKEN");
    Client::anonymous(&server)
        .post("login", login_body("fay", "first-pw"))
        .await
        .err(403, "M_FORBIDDEN");
    Client::login(&server, "fay", "second-pw").await;
    // The new password changed the XMPP (SCRAM) credentials too: the CLI sees the same account.
    let r = me
        .with_password_uia(
            Method::POST,
            "account/password",
            json!({ "new_password": "" }),
            "second-pw",
        )
        .await;
    r.err(400, "M_WEAK_PASSWORD");

    let r = me
        .with_password_uia(Method::POST, "account/deactivate", json!({}), "second-pw")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    me.get("account/whoami").await.err(401, "M_UNKNOWN_TOKEN");
    Client::anonymous(&server)
        .post("login", login_body("fay", "second-pw"))
        .await
        .err(403, "M_FORBIDDEN");
    Client::anonymous(&server)
        .post("register", json!({ "username": "fay", "password": "x" }))
        .await
        .err(400, "M_USER_IN_USE");
    let list = String::from_utf8(inst.cli(&["user", "list"]).stdout).unwrap();
    assert!(
        list.lines().any(|l| l.starts_with("fay ") && l.contains("deactivated")),
        "{list}"
    );
}

async fn profiles(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let gus = Client::register(&server, "gus", "pw").await;
    let hal = Client::register(&server, "hal", "pw").await;
    let anon = Client::anonymous(&server);
    assert_eq!(anon.get("profile/@gus:localhost").await.ok(), json!({}));
    gus.put("profile/@gus:localhost/displayname", json!({ "displayname": "Gus G." }))
        .await
        .ok();
    gus.put(
        "profile/@gus:localhost/avatar_url",
        json!({ "avatar_url": "mxc://localhost/abc" }),
    )
    .await
    .ok();
    assert_eq!(
        anon.get("profile/@gus:localhost").await.ok(),
        json!({ "displayname": "Gus G.", "avatar_url": "mxc://localhost/abc" })
    );
    assert_eq!(
        anon.get("profile/@gus:localhost/displayname").await.ok()["displayname"],
        "Gus G."
    );
    assert_eq!(
        anon.get("profile/@gus:localhost/avatar_url").await.ok()["avatar_url"],
        "mxc://localhost/abc"
    );
    hal.put(
        "profile/@gus:localhost/displayname",
        json!({ "displayname": "mine now" }),
    )
    .await
    .err(403, "M_FORBIDDEN");
    gus.put(
        "profile/@gus:localhost/displayname",
        json!({ "displayname": "x".repeat(300) }),
    )
    .await
    .err(400, "M_INVALID_PARAM");
    anon.get("profile/@nobody:localhost").await.err(404, "M_NOT_FOUND");
    anon.get("profile/not-a-user-id").await.err(400, "M_INVALID_PARAM");
    // Clearing the display name.
    gus.put("profile/@gus:localhost/displayname", json!({})).await.ok();
    assert!(
        anon.get("profile/@gus:localhost")
            .await
            .ok()
            .get("displayname")
            .is_none()
    );
}

both_backends!(
    registration_uia_flow,
    registration_closed_and_tokens,
    login_logout_and_tokens,
    devices_and_uia,
    password_change_and_deactivation,
    profiles
);

#[tokio::test]
async fn login_is_rate_limited() {
    let inst = Instance::with_config(
        Backend::Sqlite,
        "[registration]\nopen = true\n[rate_limits]\nlogin = { per_second = 0.1, burst = 3.0 }\n",
    )
    .await;
    let server = inst.start().await;
    assert!(
        inst.cli(&["user", "create", "ivy", "--password", "pw"])
            .status
            .success()
    );
    let anon = Client::anonymous(&server);
    for _ in 0..3 {
        anon.post("login", login_body("ivy", "wrong"))
            .await
            .err(403, "M_FORBIDDEN");
    }
    let limited = anon.post("login", login_body("ivy", "pw")).await;
    limited.err(429, "M_LIMIT_EXCEEDED");
    assert!(
        limited.body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{}",
        limited.body
    );
}

/// The spec's errors for bad input, as a table. Never a 500, never a dropped connection.
#[tokio::test]
async fn bad_input_gets_spec_errors() {
    let inst = Instance::with_config(
        Backend::Sqlite,
        &format!("{OPEN_CONFIG}[matrix]\nmax_request_bytes = 4096\n"),
    )
    .await;
    let server = inst.start().await;
    let user = Client::register(&server, "jo", "pw").await;
    let http = &server.http;
    let url = |p: &str| server.url(p);
    let token = user.token.clone().unwrap();

    struct Case {
        method: Method,
        path: &'static str,
        body: Option<Vec<u8>>,
        content_type: Option<&'static str>,
        auth: Option<String>,
        status: u16,
        errcode: &'static str,
    }
    let case = |method: Method,
                path: &'static str,
                body: Option<&[u8]>,
                auth: Option<&str>,
                status: u16,
                errcode: &'static str| Case {
        method,
        path,
        body: body.map(<[u8]>::to_vec),
        content_type: Some("application/json"),
        auth: auth.map(str::to_owned),
        status,
        errcode,
    };
    let t = Some(token.as_str());
    let big = vec![b' '; 5000];
    let mut cases = vec![
        case(
            Method::POST,
            "/_matrix/client/v3/login",
            Some(b"{not json"),
            None,
            400,
            "M_NOT_JSON",
        ),
        case(
            Method::POST,
            "/_matrix/client/v3/login",
            Some(b"[1, 2]"),
            None,
            400,
            "M_BAD_JSON",
        ),
        case(
            Method::POST,
            "/_matrix/client/v3/login",
            Some(b"{\"type\": 7}"),
            None,
            400,
            "M_BAD_JSON",
        ),
        case(
            Method::POST,
            "/_matrix/client/v3/login",
            Some(b"{\"type\":\"m.login.password\"}"),
            None,
            400,
            "M_BAD_JSON",
        ),
        case(
            Method::POST,
            "/_matrix/client/v3/register",
            Some(b"\xff\xfe"),
            None,
            400,
            "M_NOT_JSON",
        ),
        case(
            Method::GET,
            "/_matrix/client/v3/no/such/endpoint",
            None,
            None,
            404,
            "M_UNRECOGNIZED",
        ),
        case(
            Method::PATCH,
            "/_matrix/client/v3/login",
            None,
            None,
            405,
            "M_UNRECOGNIZED",
        ),
        case(
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            None,
            None,
            401,
            "M_MISSING_TOKEN",
        ),
        case(
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            None,
            Some("est_not_a_real_token"),
            401,
            "M_UNKNOWN_TOKEN",
        ),
        case(
            Method::GET,
            "/_matrix/client/v3/account/whoami?access_token=est_bogus",
            None,
            None,
            401,
            "M_UNKNOWN_TOKEN",
        ),
        case(
            Method::PUT,
            "/_matrix/client/v3/profile/@nobody:localhost/displayname",
            Some(b"{\"displayname\":\"x\"}"),
            t,
            403,
            "M_FORBIDDEN",
        ),
        case(
            Method::GET,
            "/_matrix/client/v3/profile/@nobody:localhost",
            None,
            None,
            404,
            "M_NOT_FOUND",
        ),
        case(
            Method::GET,
            "/_matrix/client/v3/devices/NOPE",
            None,
            t,
            404,
            "M_NOT_FOUND",
        ),
        case(
            Method::GET,
            "/_matrix/client/v3/profile/%40bad%20id",
            None,
            None,
            400,
            "M_INVALID_PARAM",
        ),
    ];
    cases.push(Case {
        body: Some(big),
        ..case(Method::POST, "/_matrix/client/v3/login", None, None, 413, "M_TOO_LARGE")
    });
    for c in cases {
        let mut req = http.request(c.method.clone(), url(c.path));
        if let Some(a) = &c.auth {
            req = req.bearer_auth(a);
        }
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = c.body {
            req = req.body(b);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", c.method, c.path));
        let status = res.status().as_u16();
        let body: serde_json::Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("{} {}: body is not JSON: {e}", c.method, c.path));
        assert_eq!(
            (status, body["errcode"].as_str()),
            (c.status, Some(c.errcode)),
            "{} {}: {body}",
            c.method,
            c.path
        );
    }
    // The server is still healthy and nothing panicked.
    user.get("account/whoami").await.ok();
    let log_path = server.log_path.clone();
    assert!(server.terminate().await.success());
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

/// SIGTERM while a request is in flight: the request still gets its answer, then the server
/// exits cleanly.
#[tokio::test]
async fn sigterm_drains_a_request_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (inst, server) = open_server(Backend::Sqlite).await;
    assert!(
        inst.cli(&["user", "create", "kim", "--password", "pw"])
            .status
            .success()
    );
    let body = serde_json::to_vec(&login_body("kim", "pw")).unwrap();
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", inst.client_port))
        .await
        .unwrap();
    let head = format!(
        "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    // Half the body: the handler is now waiting for the rest.
    let (first, rest) = body.split_at(body.len() / 2);
    sock.write_all(first).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let terminating = tokio::spawn(server.terminate());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sock.write_all(rest).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.windows(12).any(|w| w == b"access_token") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to the in-flight request");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let status = terminating.await.unwrap();
    assert!(status.success(), "{status}");
}
