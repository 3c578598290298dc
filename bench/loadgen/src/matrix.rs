//! Matrix Client-Server workloads: messaging (senders against long-polling `/sync` receivers)
//! and initial sync of a user in many rooms. Plain HTTP to a loopback base URL.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::stats::{Latencies, ServerCpu, print_result, round3};
use crate::{Clock, check_loopback_url};

/// A filter for receivers: no presence, and a timeline limit high enough that a long-poll
/// never truncates (a truncated timeline would drop events from the measurement).
const RECEIVER_FILTER: &str = r#"{"presence":{"types":[]},"room":{"timeline":{"limit":1000}}}"#;
/// The initial sync a client such as Element does first: one timeline event per room and
/// lazy-loaded members.
const LAZY_FILTER: &str = r#"{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}}}"#;
const FULL_FILTER: &str = r#"{"room":{"timeline":{"limit":1}}}"#;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

#[derive(Clone)]
pub struct User {
    pub token: String,
}

/// Percent-encode a path segment or query value (room IDs carry `!` and `:`).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(base: &str) -> anyhow::Result<Client> {
        check_loopback_url(base)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_matrix/client/v3{path}", self.base)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method, path, token, body).await?;
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {value}");
        }
        Ok(value)
    }

    /// Register with `m.login.dummy` (the interactive-auth round trip: Synapse answers the first
    /// request with 401 and a session).
    pub async fn register(&self, localpart: &str, password: &str) -> anyhow::Result<User> {
        let mut body = json!({
            "username": localpart,
            "password": password,
            "initial_device_display_name": "estuary-loadgen",
        });
        let mut session: Option<String> = None;
        for _ in 0..3 {
            if let Some(s) = &session {
                body["auth"] = json!({ "type": "m.login.dummy", "session": s });
            } else {
                body["auth"] = json!({ "type": "m.login.dummy" });
            }
            let (status, value) = self.call(reqwest::Method::POST, "/register", None, Some(&body)).await?;
            if status.is_success() {
                let token = value["access_token"]
                    .as_str()
                    .context("register: no access_token")?
                    .to_owned();
                return Ok(User { token });
            }
            match value["session"].as_str() {
                Some(s) if status == reqwest::StatusCode::UNAUTHORIZED && session.is_none() => {
                    session = Some(s.to_owned());
                }
                _ => bail!("register {localpart}: HTTP {status}: {value}"),
            }
        }
        bail!("register {localpart}: interactive auth did not complete")
    }

    pub async fn login(&self, localpart: &str, password: &str) -> anyhow::Result<User> {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": localpart },
            "password": password,
        });
        let value = self.ok(reqwest::Method::POST, "/login", None, Some(&body)).await?;
        let token = value["access_token"]
            .as_str()
            .context("login: no access_token")?
            .to_owned();
        Ok(User { token })
    }

    pub async fn create_room(&self, user: &User, name: &str) -> anyhow::Result<String> {
        let body = json!({ "preset": "public_chat", "name": name });
        let value = self
            .ok(reqwest::Method::POST, "/createRoom", Some(&user.token), Some(&body))
            .await?;
        Ok(value["room_id"].as_str().context("createRoom: no room_id")?.to_owned())
    }

    pub async fn join(&self, user: &User, room_id: &str) -> anyhow::Result<()> {
        let path = format!("/join/{}", seg(room_id));
        self.ok(reqwest::Method::POST, &path, Some(&user.token), Some(&json!({})))
            .await?;
        Ok(())
    }

    pub async fn send(&self, user: &User, room_id: &str, txn: &str, content: &Value) -> anyhow::Result<()> {
        let path = format!("/rooms/{}/send/m.room.message/{}", seg(room_id), seg(txn));
        self.ok(reqwest::Method::PUT, &path, Some(&user.token), Some(content))
            .await?;
        Ok(())
    }

    pub async fn sync(
        &self,
        user: &User,
        since: Option<&str>,
        filter: &str,
        timeout_ms: u64,
        full_state: bool,
    ) -> anyhow::Result<Value> {
        // reqwest is built without its `query` feature here: the query string by hand.
        let mut url = format!("{}?filter={}&timeout={timeout_ms}", self.url("/sync"), seg(filter));
        if let Some(s) = since {
            url.push_str(&format!("&since={}", seg(s)));
        }
        if full_state {
            url.push_str("&full_state=true");
        }
        let req = self.http.get(url).bearer_auth(&user.token);
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            bail!("/sync: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// Register `localparts` with at most `concurrency` requests in flight.
async fn register_all(
    client: &Client,
    localparts: Vec<String>,
    password: &str,
    concurrency: usize,
) -> anyhow::Result<Vec<User>> {
    let results: Vec<anyhow::Result<User>> = futures::stream::iter(localparts)
        .map(|lp| async move { client.register(&lp, password).await })
        .buffered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Every `(user, room)` join, at most `concurrency` in flight.
async fn join_all(client: &Client, joins: Vec<(User, String)>, concurrency: usize) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(joins)
        .map(|(u, r)| async move { client.join(&u, &r).await })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Register `count` accounts `{prefix}{i}` (used to create XMPP accounts on Estuary through
/// its Matrix API: one account store).
pub async fn register_accounts(base: &str, prefix: &str, count: usize, password: &str) -> anyhow::Result<()> {
    let client = Client::new(base)?;
    let names = (0..count).map(|i| format!("{prefix}{i}")).collect();
    register_all(&client, names, password, 4).await?;
    Ok(())
}

pub struct MessagingParams {
    pub senders: usize,
    pub receivers: usize,
    pub rooms: usize,
    pub messages: usize,
    /// Events per second in all (paced, open loop), or None (closed loop).
    pub rate: Option<f64>,
    pub prefix: String,
    pub deadline: Duration,
    /// The server's PID, to report the CPU time it used.
    pub pid: Option<u32>,
}

/// Workload 1: `senders` post `messages` each into `rooms` rooms; `receivers`, members of
/// every room, long-poll `/sync`. Closed loop (each sender's next message once the server has
/// answered the last: the server's saturation rate, and latency with its queues full), or
/// paced at `rate` events per second in all (open loop: sender `i`'s `k`-th message is due at
/// `(k * senders + i) / rate` seconds, and its latency counts from then, so a server that
/// falls behind the pace has its backlog measured rather than hidden).
pub async fn messaging(base: &str, clock: Clock, p: MessagingParams) -> anyhow::Result<()> {
    let client = Client::new(base)?;
    let password = "bench-password-1";
    let setup = Instant::now();
    let senders = register_all(
        &client,
        (0..p.senders).map(|i| format!("{}s{i}", p.prefix)).collect(),
        password,
        4,
    )
    .await?;
    let receivers = register_all(
        &client,
        (0..p.receivers).map(|i| format!("{}r{i}", p.prefix)).collect(),
        password,
        4,
    )
    .await?;
    let creator = senders.first().context("need at least one sender")?.clone();
    let mut rooms = Vec::new();
    for r in 0..p.rooms.max(1) {
        rooms.push(client.create_room(&creator, &format!("bench {r}")).await?);
    }
    let mut joins = Vec::new();
    for u in senders.iter().skip(1).chain(receivers.iter()) {
        for r in &rooms {
            joins.push((u.clone(), r.clone()));
        }
    }
    join_all(&client, joins, 8).await?;
    // Each receiver's first sync, to start long-polling from "now".
    let mut since = Vec::new();
    for u in &receivers {
        let v = client.sync(u, None, RECEIVER_FILTER, 0, false).await?;
        since.push(v["next_batch"].as_str().context("sync: no next_batch")?.to_owned());
    }
    let setup_s = setup.elapsed().as_secs_f64();
    eprintln!("matrix-messaging: setup done in {setup_s:.1}s");

    let delivered = Arc::new(AtomicU64::new(0));
    let sync_errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Latencies::default()));
    let mut receiver_tasks = Vec::new();
    for (u, mut next) in receivers.iter().cloned().zip(since) {
        let client = client.clone();
        let delivered = delivered.clone();
        let sync_errors = sync_errors.clone();
        let latencies = latencies.clone();
        receiver_tasks.push(tokio::spawn(async move {
            let mut seen = HashSet::new();
            loop {
                let v = match client.sync(&u, Some(&next), RECEIVER_FILTER, 5000, false).await {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("matrix-messaging: sync error: {e:#}");
                        sync_errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let now = clock.now_ns();
                let mut batch = Latencies::default();
                if let Some(rooms) = v["rooms"]["join"].as_object() {
                    for room in rooms.values() {
                        for ev in room["timeline"]["events"].as_array().into_iter().flatten() {
                            let (Some(sent), Some(seq)) =
                                (ev["content"]["bench_ns"].as_u64(), ev["content"]["bench_seq"].as_u64())
                            else {
                                continue;
                            };
                            if seen.insert(seq) {
                                batch.push(now.saturating_sub(sent) / 1000);
                            }
                        }
                    }
                }
                delivered.fetch_add(batch.len() as u64, Ordering::Relaxed);
                latencies.lock().await.extend(batch);
                if let Some(n) = v["next_batch"].as_str() {
                    next = n.to_owned();
                }
            }
        }));
    }

    let accepted = Arc::new(AtomicU64::new(0));
    let send_errors = Arc::new(AtomicU64::new(0));
    // Parts of the delivery latency, for the detail file: how late this process started each
    // send after it was due (its own timer, not the server), and each send's round trip.
    let start_lag = Arc::new(Mutex::new(Latencies::default()));
    let send_rtt = Arc::new(Mutex::new(Latencies::default()));
    let cpu = ServerCpu::start(p.pid);
    let start = Instant::now();
    let deadline = start + p.deadline;
    // The pace's origin on the latency clock: `start`, exactly.
    let start_ns = u64::try_from(start.saturating_duration_since(clock.0).as_nanos()).unwrap_or(u64::MAX);
    let mut sender_tasks = Vec::new();
    for (i, u) in senders.iter().cloned().enumerate() {
        let client = client.clone();
        let room = rooms[i % rooms.len()].clone();
        let accepted = accepted.clone();
        let send_errors = send_errors.clone();
        let (start_lag, send_rtt) = (start_lag.clone(), send_rtt.clone());
        let messages = p.messages;
        let (rate, senders) = (p.rate, p.senders);
        sender_tasks.push(tokio::spawn(async move {
            for k in 0..messages {
                let sent_ns = match rate {
                    Some(rate) => {
                        let due = Duration::from_secs_f64((k * senders + i) as f64 / rate);
                        on_time(start + due).await;
                        start_ns + u64::try_from(due.as_nanos()).unwrap_or(u64::MAX)
                    }
                    None => clock.now_ns(),
                };
                if Instant::now() > deadline {
                    break;
                }
                let seq = (i * messages + k) as u64;
                let content = json!({
                    "msgtype": "m.text",
                    "body": format!("bench message {seq}"),
                    "bench_seq": seq,
                    "bench_ns": sent_ns,
                });
                let before = clock.now_ns();
                match client.send(&u, &room, &format!("t{seq}"), &content).await {
                    Ok(()) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        start_lag.lock().await.push(before.saturating_sub(sent_ns) / 1000);
                        send_rtt.lock().await.push(clock.now_ns().saturating_sub(before) / 1000);
                    }
                    Err(e) => {
                        if send_errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("matrix-messaging: send error: {e:#}");
                        }
                    }
                }
            }
        }));
    }
    for t in sender_tasks {
        t.await?;
    }
    let send_s = start.elapsed().as_secs_f64();
    let accepted = accepted.load(Ordering::Relaxed);
    let expected = accepted * p.receivers as u64;
    // Let the receivers catch up: at most 15 s after the last send.
    let drain_deadline = Instant::now() + Duration::from_secs(15);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in &receiver_tasks {
        t.abort();
    }
    let delivered = delivered.load(Ordering::Relaxed);
    let lost = expected.saturating_sub(delivered);
    let send_errors = send_errors.load(Ordering::Relaxed);
    let sync_errors = sync_errors.load(Ordering::Relaxed);
    let latencies = std::mem::take(&mut *latencies.lock().await);

    let mut figures = Map::new();
    let mut detail = Map::new();
    figures.insert("events_per_s".into(), json!(round3(accepted as f64 / send_s)));
    latencies.report(&mut figures, &mut detail);
    figures.insert("errors".into(), json!(send_errors + sync_errors + lost));
    cpu.report(&mut detail, "event", accepted);
    let take = |l: &Mutex<Latencies>| std::mem::take(&mut *l.try_lock().expect("senders are done"));
    if p.rate.is_some() {
        detail.insert("send_start_lag".into(), take(&start_lag).summary());
    }
    detail.insert("send_round_trip".into(), take(&send_rtt).summary());
    detail.insert("senders".into(), json!(p.senders));
    detail.insert("paced_events_per_s".into(), json!(p.rate));
    detail.insert("receivers".into(), json!(p.receivers));
    detail.insert("rooms".into(), json!(rooms.len()));
    detail.insert("events_accepted".into(), json!(accepted));
    // Not an error: a server too slow to send them all before the deadline has its rate
    // measured on what it accepted.
    let planned = (p.senders * p.messages) as u64;
    detail.insert(
        "not_sent_before_deadline".into(),
        json!(planned.saturating_sub(accepted + send_errors)),
    );
    detail.insert("send_phase_s".into(), json!(round3(send_s)));
    detail.insert("deliveries_expected".into(), json!(expected));
    detail.insert("deliveries".into(), json!(delivered));
    detail.insert("lost_deliveries".into(), json!(lost));
    detail.insert("send_errors".into(), json!(send_errors));
    detail.insert("sync_errors".into(), json!(sync_errors));
    detail.insert("setup_s".into(), json!(round3(setup_s)));
    let workload = if p.rate.is_some() {
        "matrix_paced"
    } else {
        "matrix_messaging"
    };
    print_result(workload, figures, detail);
    Ok(())
}

/// Wait until `at`, to well under a millisecond: tokio's timer wakes on whole milliseconds and
/// late (by about 1 ms here), a lag that would count in every paced latency although it is
/// this process's, not the server's. The last 2 ms are spent yielding.
async fn on_time(at: Instant) {
    tokio::time::sleep_until((at - Duration::from_millis(2)).into()).await;
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

pub struct InitialSyncParams {
    pub rooms: usize,
    pub members: usize,
    pub repeats: usize,
}

/// Counts (rooms joined, state events in all of them) in a sync response.
fn sync_shape(v: &Value) -> (usize, usize) {
    let rooms = v["rooms"]["join"].as_object();
    let n = rooms.map_or(0, |r| r.len());
    let state = rooms.map_or(0, |r| {
        r.values()
            .map(|room| room["state"]["events"].as_array().map_or(0, |a| a.len()))
            .sum()
    });
    (n, state)
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied()
}

/// Workload 2: a user in `rooms` rooms of `members` members each (built through the API);
/// time of the first `/sync` with timeline limit 1 and lazy-loaded members, and of a
/// full-state one. Each measurement logs in afresh (a new device), so that no server can
/// answer from a cache of the same request; the median of `repeats` is reported.
pub async fn initial_sync(base: &str, p: InitialSyncParams) -> anyhow::Result<()> {
    let client = Client::new(base)?;
    let password = "bench-password-2";
    let setup = Instant::now();
    let main = client.register("isync", password).await?;
    let others = register_all(
        &client,
        (1..p.members.max(1)).map(|i| format!("ism{i}")).collect(),
        password,
        4,
    )
    .await?;
    let mut rooms = Vec::new();
    for r in 0..p.rooms {
        rooms.push(client.create_room(&main, &format!("sync {r}")).await?);
    }
    let mut joins = Vec::new();
    for r in &rooms {
        for u in &others {
            joins.push((u.clone(), r.clone()));
        }
    }
    join_all(&client, joins, 8).await?;
    for (i, r) in rooms.iter().enumerate() {
        let content = json!({ "msgtype": "m.text", "body": "latest" });
        client.send(&main, r, &format!("last{i}"), &content).await?;
    }
    let setup_s = setup.elapsed().as_secs_f64();
    eprintln!("matrix-initial-sync: fixture built in {setup_s:.1}s");

    let mut errors = 0u64;
    let mut lazy_ms = Vec::new();
    let mut full_ms = Vec::new();
    let mut lazy_state = 0;
    let mut full_state = 0;
    for _ in 0..p.repeats.max(1) {
        for (full, times, state) in [
            (false, &mut lazy_ms, &mut lazy_state),
            (true, &mut full_ms, &mut full_state),
        ] {
            let user = client.login("isync", password).await?;
            let filter = if full { FULL_FILTER } else { LAZY_FILTER };
            let t = Instant::now();
            match client.sync(&user, None, filter, 0, full).await {
                Ok(v) => {
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    let (n, s) = sync_shape(&v);
                    if n != rooms.len() {
                        eprintln!("matrix-initial-sync: {n} rooms in sync, expected {}", rooms.len());
                        errors += 1;
                    } else {
                        times.push(ms);
                        *state = s;
                    }
                }
                Err(e) => {
                    eprintln!("matrix-initial-sync: {e:#}");
                    errors += 1;
                }
            }
        }
    }
    let mut figures = Map::new();
    let mut detail = Map::new();
    figures.insert("initial_sync_ms".into(), json!(median(lazy_ms.clone()).map(round3)));
    figures.insert("full_state_sync_ms".into(), json!(median(full_ms.clone()).map(round3)));
    figures.insert("errors".into(), json!(errors));
    detail.insert("rooms".into(), json!(rooms.len()));
    detail.insert("members_per_room".into(), json!(p.members));
    detail.insert("initial_sync_runs_ms".into(), json!(lazy_ms));
    detail.insert("full_state_sync_runs_ms".into(), json!(full_ms));
    detail.insert("lazy_sync_state_events".into(), json!(lazy_state));
    detail.insert("full_state_sync_state_events".into(), json!(full_state));
    detail.insert("setup_s".into(), json!(round3(setup_s)));
    print_result("matrix_initial_sync", figures, detail);
    Ok(())
}
