//! Interop with matrix-js-sdk (npm), the library Element is built on, on SQLite and
//! PostgreSQL: two users log in, run the SDK's own sync loop, create a room, invite and join,
//! and exchange messages both ways (tests/interop/js/client_server.mjs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use estuary_tests::{Backend, Instance, both_backends, run_node_script};

const CONFIG: &str =
    "[rate_limits]\nmessage = { per_second = 0.0, burst = 0.0 }\nlogin = { per_second = 0.0, burst = 0.0 }\n";

async fn js_sdk_client_server(backend: Backend) {
    let inst = Instance::with_config(backend, CONFIG).await;
    for (user, pw) in [("alice", "alice-password"), ("bob", "bob-password")] {
        assert!(inst.cli(&["user", "create", user, "--password", pw]).status.success());
    }
    let server = inst.start().await;
    let base = server.base_url.clone();
    let out =
        tokio::task::spawn_blocking(move || run_node_script("client_server.mjs", &[&base], Duration::from_secs(180)))
            .await
            .unwrap();
    assert!(
        out.contains("bob receives alice's 20 messages once each, in order"),
        "{out}"
    );
    assert!(server.terminate().await.success());
}

both_backends!(js_sdk_client_server);
