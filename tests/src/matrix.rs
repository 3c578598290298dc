//! A minimal Matrix client for black-box tests: raw JSON over HTTP, so that tests see exactly
//! what a client sees (status codes and error bodies included).

use serde_json::{Value, json};

use crate::Running;

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
    pub user_id: String,
    pub device_id: String,
}

/// A response: the status and the JSON body (Null if the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn errcode(&self) -> Option<&str> {
        self.body["errcode"].as_str()
    }
    #[track_caller]
    pub fn ok(self) -> Value {
        assert!(
            (200..300).contains(&self.status),
            "expected success, got {}: {}",
            self.status,
            self.body
        );
        self.body
    }
    #[track_caller]
    pub fn err(&self, status: u16, errcode: &str) {
        assert_eq!((self.status, self.errcode()), (status, Some(errcode)), "{}", self.body);
    }
}

impl Client {
    pub fn anonymous(server: &Running) -> Client {
        Client {
            http: server.http.clone(),
            base: server.base_url.clone(),
            token: None,
            user_id: String::new(),
            device_id: String::new(),
        }
    }

    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let url = if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/_matrix/client/v3/{path}", self.base)
        };
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request failed");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// Download an `mxc://` URI's content (authenticated media, v1), as the raw response.
    pub async fn download(&self, mxc: &str) -> reqwest::Response {
        let path = mxc.strip_prefix("mxc://").expect("an mxc:// URI");
        let mut req = self
            .http
            .get(format!("{}/_matrix/client/v1/media/download/{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("download failed")
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.request(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str, body: Value) -> Reply {
        self.request(reqwest::Method::DELETE, path, Some(body)).await
    }

    /// Register through user-interactive auth with `m.login.dummy` (registration open).
    pub async fn register(server: &Running, username: &str, password: &str) -> Client {
        let anon = Client::anonymous(server);
        let first = anon
            .post("register", json!({ "username": username, "password": password }))
            .await;
        assert_eq!(first.status, 401, "expected a UIA challenge: {}", first.body);
        let session = first.body["session"].as_str().expect("session").to_owned();
        let done = anon
            .post("register", json!({ "username": username, "password": password, "auth": { "type": "m.login.dummy", "session": session } }))
            .await
            .ok();
        anon.with_session(&done)
    }

    pub async fn login(server: &Running, user: &str, password: &str) -> Client {
        let anon = Client::anonymous(server);
        let body = anon.post("login", login_body(user, password)).await.ok();
        anon.with_session(&body)
    }

    fn with_session(mut self, body: &Value) -> Client {
        self.token = Some(body["access_token"].as_str().expect("access_token").to_owned());
        self.user_id = body["user_id"].as_str().expect("user_id").to_owned();
        self.device_id = body["device_id"].as_str().expect("device_id").to_owned();
        self
    }

    /// `auth` for an `m.login.password` UIA stage.
    pub fn password_auth(&self, password: &str, session: &str) -> Value {
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": self.user_id }, "password": password, "session": session })
    }

    /// Run a UIA-protected request: first round for the session, second with the password.
    pub async fn with_password_uia(
        &self,
        method: reqwest::Method,
        path: &str,
        mut body: Value,
        password: &str,
    ) -> Reply {
        let first = self.request(method.clone(), path, Some(body.clone())).await;
        if first.status != 401 {
            return first;
        }
        let session = first.body["session"].as_str().expect("UIA session").to_owned();
        body["auth"] = self.password_auth(password, &session);
        self.request(method, path, Some(body)).await
    }
}

pub fn login_body(user: &str, password: &str) -> Value {
    json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password })
}

/// The `next_batch` of a sync response.
pub fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}
