//! Latency samples and the figures a workload reports, printed as one JSON object.

use serde_json::{Map, Value, json};

/// Delivery latencies in microseconds, measured on one clock (this process).
#[derive(Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn push(&mut self, micros: u64) {
        self.0.push(micros);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `p50_ms`, `p99_ms` and the distribution (`latency_quantiles_ms`: 201 quantiles, 0 to
    /// 100 % in steps of 0.5 %, for the chart) to `figures`. With no samples the percentiles are
    /// null: nothing was delivered, so nothing was measured.
    pub fn report(mut self, figures: &mut Map<String, Value>, detail: &mut Map<String, Value>) {
        self.0.sort_unstable();
        figures.insert("p50_ms".into(), json!(self.quantile(0.50)));
        figures.insert("p99_ms".into(), json!(self.quantile(0.99)));
        detail.insert("latency_samples".into(), json!(self.0.len()));
        detail.insert("max_ms".into(), json!(self.quantile(1.0)));
        let quantiles: Vec<Option<f64>> = (0..=200).map(|i| self.quantile(i as f64 / 200.0)).collect();
        detail.insert("latency_quantiles_ms".into(), json!(quantiles));
    }

    /// `{"p50_ms", "p99_ms", "max_ms"}`: a part of the latency, for the detail file.
    pub fn summary(mut self) -> Value {
        self.0.sort_unstable();
        json!({
            "p50_ms": self.quantile(0.50),
            "p99_ms": self.quantile(0.99),
            "max_ms": self.quantile(1.0),
        })
    }

    /// The nearest-rank quantile `q` in milliseconds, of samples already sorted; `None` with no
    /// samples (nothing was measured).
    fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.0.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.0.get(rank - 1).map(|&us| round3(us as f64 / 1000.0))
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One workload's result: `figures` under the key names, `detail` for the rest.
pub fn print_result(workload: &str, figures: Map<String, Value>, detail: Map<String, Value>) {
    let out = json!({ "workload": workload, "figures": figures, "detail": detail });
    println!("{out}");
}

/// The resident set size of a process, in kB, from /proc/PID/status (VmRSS).
pub fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time (user + system) a process has used so far, in seconds, from /proc/PID/stat.
/// None when the process cannot be read.
pub fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports them in USER_HZ ticks, 100 a second on every architecture we run on.
    Some((utime + stime) / 100.0)
}

/// Measures the server's CPU time over a workload, when its PID is known.
pub struct ServerCpu {
    pid: Option<u32>,
    start: Option<f64>,
}

impl ServerCpu {
    pub fn start(pid: Option<u32>) -> ServerCpu {
        ServerCpu {
            pid,
            start: pid.and_then(cpu_s),
        }
    }

    /// Adds `server_cpu_s` and, per `unit`, `server_cpu_ms_per_<unit>` to `detail`.
    pub fn report(&self, detail: &mut Map<String, Value>, unit: &str, count: u64) {
        let (Some(pid), Some(start)) = (self.pid, self.start) else {
            return;
        };
        let Some(end) = cpu_s(pid) else { return };
        let used = end - start;
        detail.insert("server_cpu_s".into(), json!(round3(used)));
        if count > 0 {
            detail.insert(
                format!("server_cpu_ms_per_{unit}"),
                json!(round3(used * 1000.0 / count as f64)),
            );
        }
    }
}
