//! Interop with matrix-nio, a real client library from PyPI, on SQLite and PostgreSQL: the
//! script in tests/interop/ registers, logs in, creates rooms, sends 100 messages while
//! another client long-polls, fills a sync gap by pagination, paginates both ways, edits,
//! reacts, changes state and leaves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use estuary_tests::{Backend, Instance, both_backends, interop_script};

const CONFIG: &str = "[registration]\nopen = true\n\
    [rate_limits]\nlogin = { per_second = 0.0, burst = 0.0 }\nregistration = { per_second = 0.0, burst = 0.0 }\n\
    message = { per_second = 0.0, burst = 0.0 }\n";

async fn nio_client_server(backend: Backend) {
    let inst = Instance::with_config(backend, CONFIG).await;
    let server = inst.start().await;
    let base = server.base_url.clone();
    let out = interop_script(
        "nio_client_server.py",
        &["--homeserver", &base],
        Duration::from_secs(300),
    )
    .await;
    assert!(out.contains("100 messages delivered once each and in order"), "{out}");
    let log_path = server.log_path.clone();
    assert!(server.terminate().await.success());
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

both_backends!(nio_client_server);
