//! Load generator for `bench/run`: the Matrix and XMPP workloads of the side-by-side
//! benchmark (issue #8). Bounded in count and time, loopback only; each workload prints one
//! JSON object on stdout. Latency is measured here, on one clock, from send to arrival.

mod matrix;
mod scram;
mod stats;
mod xmpp;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, Subcommand};

/// Nanoseconds since this process started: the one clock every latency is measured on.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Refuse anything but `http://127.0.0.1` / `http://localhost` / `http://[::1]`.
pub fn check_loopback_url(base: &str) -> anyhow::Result<()> {
    let rest = base.strip_prefix("http://").unwrap_or("");
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        bail!("the load generator connects to loopback only (http://127.0.0.1:PORT), not {base}");
    }
    Ok(())
}

#[derive(Parser)]
#[command(name = "estuary-loadgen", about = "Benchmark load generator (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Matrix messaging: senders post into rooms, receivers long-poll /sync.
    MatrixMessaging {
        #[arg(long)]
        base: String,
        #[arg(long, default_value_t = 4)]
        senders: usize,
        #[arg(long, default_value_t = 4)]
        receivers: usize,
        #[arg(long, default_value_t = 2)]
        rooms: usize,
        /// Messages per sender.
        #[arg(long, default_value_t = 100)]
        messages: usize,
        /// Paced (open loop): send this many events per second in all, each timed from when
        /// it was due, not from when it went out. Without it, each sender sends its next
        /// message as soon as the last one was answered (closed loop, at saturation).
        #[arg(long)]
        rate: Option<f64>,
        /// Prefix of the localparts of this workload's senders and receivers.
        #[arg(long, default_value = "mm")]
        prefix: String,
        /// Stop sending after this many seconds, whatever is left.
        #[arg(long, default_value_t = 120)]
        deadline_secs: u64,
        /// The server's PID: report the CPU time it used.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Matrix initial sync of a user in ROOMS rooms of MEMBERS members each.
    MatrixInitialSync {
        #[arg(long)]
        base: String,
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 10)]
        members: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// Register accounts PREFIX0..PREFIX{COUNT-1} through the Matrix API (m.login.dummy).
    MatrixRegister {
        #[arg(long)]
        base: String,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        password: String,
    },
    /// XMPP messaging between client pairs (accounts PREFIX0..PREFIX{2*PAIRS-1} must exist).
    XmppMessaging {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        domain: String,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        password: String,
        #[arg(long, default_value_t = 4)]
        pairs: usize,
        /// Messages each client sends.
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// Messages in flight per direction.
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[arg(long, default_value_t = 120)]
        deadline_secs: u64,
        /// The server's PID: report the CPU time it used.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Idle c2s connections: RSS growth of server PID per authenticated connection.
    XmppIdle {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        domain: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        connections: usize,
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 600)]
        deadline_secs: u64,
    },
    /// Print the RSS of PID in MB (the idle server's footprint).
    Rss {
        #[arg(long)]
        pid: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let clock = Clock(Instant::now());
    // reqwest is built with `rustls-no-provider` in this workspace: ring is the one provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::MatrixMessaging {
            base,
            senders,
            receivers,
            rooms,
            messages,
            rate,
            prefix,
            deadline_secs,
            pid,
        } => {
            if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                anyhow::bail!("--rate must be a positive number of events per second");
            }
            let params = matrix::MessagingParams {
                senders,
                receivers,
                rooms,
                messages,
                rate,
                prefix,
                deadline: Duration::from_secs(deadline_secs),
                pid,
            };
            matrix::messaging(&base, clock, params).await
        }
        Command::MatrixInitialSync {
            base,
            rooms,
            members,
            repeats,
        } => {
            matrix::initial_sync(
                &base,
                matrix::InitialSyncParams {
                    rooms,
                    members,
                    repeats,
                },
            )
            .await
        }
        Command::MatrixRegister {
            base,
            prefix,
            count,
            password,
        } => matrix::register_accounts(&base, &prefix, count, &password).await,
        Command::XmppMessaging {
            addr,
            domain,
            prefix,
            password,
            pairs,
            messages,
            window,
            deadline_secs,
            pid,
        } => {
            let target = xmpp::Target::new(addr, &domain)?;
            let params = xmpp::MessagingParams {
                prefix,
                password,
                pairs,
                messages,
                window,
                deadline: Duration::from_secs(deadline_secs),
                pid,
            };
            xmpp::messaging(target, clock, params).await
        }
        Command::XmppIdle {
            addr,
            domain,
            user,
            password,
            connections,
            pid,
            concurrency,
            deadline_secs,
        } => {
            let target = xmpp::Target::new(addr, &domain)?;
            let params = xmpp::IdleParams {
                user,
                password,
                connections,
                pid,
                concurrency,
                deadline: Duration::from_secs(deadline_secs),
            };
            xmpp::idle(target, params).await
        }
        Command::Rss { pid } => {
            let kb = stats::rss_kb(pid)?;
            println!("{}", stats::round3(kb as f64 / 1024.0));
            Ok(())
        }
    }
}
