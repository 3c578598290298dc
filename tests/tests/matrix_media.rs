//! Black-box tests of the content repository: upload, the authenticated download, thumbnail
//! and config endpoints, their errors, and that media survives a restart. On SQLite and
//! PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use estuary_tests::matrix::Client;
use estuary_tests::{Backend, Instance, OPEN_CONFIG, TINY_PNG as PNG, both_backends};
use serde_json::Value;

struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    #[track_caller]
    fn err(&self, status: u16, errcode: &str) {
        assert_eq!(
            (self.status, self.json()["errcode"].as_str()),
            (status, Some(errcode)),
            "{}",
            String::from_utf8_lossy(&self.body)
        );
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

async fn raw(c: &Client, method: reqwest::Method, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Raw {
    let mut req = c.http.request(method, format!("{}{path}", c.base)).body(body);
    if let Some(t) = &c.token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.unwrap();
    Raw {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

async fn upload(c: &Client, name: &str, content_type: &str, body: &[u8]) -> String {
    let r = raw(
        c,
        reqwest::Method::POST,
        &format!("/_matrix/media/v3/upload?filename={name}"),
        Some(content_type),
        body.to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["content_uri"].as_str().unwrap().to_owned()
}

/// POST an upload with `Transfer-Encoding: chunked` (no Content-Length); the status line.
async fn chunked_upload(c: &Client, chunks: usize, size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = c.base.strip_prefix("http://").unwrap();
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        c.token.as_ref().unwrap()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..chunks {
        tcp.write_all(format!("{size:x}\r\n").as_bytes()).await.unwrap();
        // The server may refuse (and close) before all of it is sent.
        if tcp.write_all(&vec![b'x'; size]).await.is_err() || tcp.write_all(b"\r\n").await.is_err() {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply).await;
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn download_path(mxc: &str) -> String {
    format!(
        "/_matrix/client/v1/media/download/{}",
        mxc.strip_prefix("mxc://").unwrap()
    )
}

async fn content_repository(backend: Backend) {
    let inst = Instance::with_config(backend, &format!("{OPEN_CONFIG}[media]\nmax_upload_bytes = 4096\n")).await;
    let server = inst.start().await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let anon = Client::anonymous(&server);
    let get = reqwest::Method::GET;

    let mxc = upload(&alice, "dot%20one.png", "image/png", PNG).await;
    assert!(mxc.starts_with("mxc://localhost/"), "{mxc}");
    // Any user of the server may download it; the bytes and type come back as uploaded.
    let r = raw(&bob, get.clone(), &download_path(&mxc), None, vec![]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, PNG);
    assert_eq!(r.header("content-type"), "image/png");
    assert_eq!(
        r.header("content-disposition"),
        "inline; filename*=utf-8''dot%20one.png"
    );
    assert!(r.header("content-security-policy").contains("sandbox"));
    let r = raw(
        &bob,
        get.clone(),
        &format!("{}/other.png", download_path(&mxc)),
        None,
        vec![],
    )
    .await;
    assert_eq!(
        (r.status, r.header("content-disposition")),
        (200, "inline; filename*=utf-8''other.png")
    );
    let thumb = mxc.replacen("mxc://", "/_matrix/client/v1/media/thumbnail/", 1);
    let r = raw(
        &bob,
        get.clone(),
        &format!("{thumb}?width=32&height=32&method=scale"),
        None,
        vec![],
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, PNG),
        "a thumbnail is the original image"
    );

    // HTML is never shown inline, and has no thumbnail.
    let html = upload(&alice, "page.html", "text/html", b"<script>alert(1)</script>").await;
    let r = raw(&bob, get.clone(), &download_path(&html), None, vec![]).await;
    assert!(
        r.header("content-disposition").starts_with("attachment"),
        "{}",
        r.header("content-disposition")
    );
    raw(
        &bob,
        get.clone(),
        &html.replacen("mxc://", "/_matrix/client/v1/media/thumbnail/", 1),
        None,
        vec![],
    )
    .await
    .err(404, "M_NOT_FOUND");

    // Errors.
    raw(&anon, get.clone(), &download_path(&mxc), None, vec![])
        .await
        .err(401, "M_MISSING_TOKEN");
    raw(
        &anon,
        reqwest::Method::POST,
        "/_matrix/media/v3/upload",
        Some("image/png"),
        PNG.to_vec(),
    )
    .await
    .err(401, "M_MISSING_TOKEN");
    // Unknown media, an id that tries to be a path, another server's media.
    for path in [
        "localhost/NoSuchMedia1",
        "localhost/..%2F..%2Fetc",
        "elsewhere.example/abc",
    ] {
        let url = format!("/_matrix/client/v1/media/download/{path}");
        raw(&bob, get.clone(), &url, None, vec![]).await.err(404, "M_NOT_FOUND");
    }
    raw(
        &alice,
        reqwest::Method::POST,
        "/_matrix/media/v3/upload",
        Some("application/octet-stream"),
        vec![0; 4097],
    )
    .await
    .err(413, "M_TOO_LARGE");
    // Without a Content-Length (chunked), the limit holds as the body is read.
    let status = chunked_upload(&alice, 5, 1000).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    let status = chunked_upload(&alice, 2, 1000).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let r = raw(&alice, get.clone(), "/_matrix/client/v1/media/config", None, vec![]).await;
    assert_eq!(r.json()["m.upload.size"], 4096);

    // Media outlives the process.
    assert!(server.terminate().await.success());
    let server = inst.start().await;
    let bob = Client::login(&server, "bob", "pw").await;
    let r = raw(&bob, get, &download_path(&mxc), None, vec![]).await;
    assert_eq!((r.status, r.body.as_slice()), (200, PNG));
    assert!(!server.logs().contains("panicked"));
    assert!(server.terminate().await.success());
}

both_backends!(content_repository);
