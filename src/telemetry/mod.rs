//! What an operator watches: the Prometheus metrics the daemon serves, and the log format.
//!
//! The metrics live in one process-wide registry so the stages record with a one-line call
//! (`telemetry::api_request(...)`) rather than a handle threaded through every type. Labels
//! are config names (team, webhook, endpoint, kind, outcome): bounded, and never a URL or key.

use std::borrow::Borrow;
use std::io::Write;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::Team;

mod teams;
use teams::Teams;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

struct Metrics {
    registry: Registry,
    teams: Teams,
    api_requests: Family<Labels, Counter>,
    api_duration: Histogram,
    webhook_duration: Family<Labels, Histogram, fn() -> Histogram>,
    pending: Gauge,
    ledger_errors: Family<Labels, Counter>,
    reload_ok: Gauge,
    reload_at: FloatGauge,
    alerts: Family<Labels, Counter>,
}

/// Every outcome `acquire_digest_deliveries` counts, each present from the first scrape.
pub const DELIVERY_OUTCOMES: [&str; 8] = [
    "delivered",
    "failed",
    "refused",
    "unknown",
    "too_many_attempts",
    "skipped",
    "superseded",
    "missed",
];

/// What became of an alert: posted and answered 2xx, or not.
const ALERT_OUTCOMES: [&str; 2] = ["sent", "failed"];

const LEDGER_OPS: [&str; 3] = ["read", "lease", "record"];

/// 5 ms to about 80 s: a quick loopback answer up to a request that hit its timeout.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let m = Metrics {
        registry: Registry::default(),
        teams: Teams::default(),
        api_requests: Family::default(),
        api_duration: seconds_histogram(),
        webhook_duration: Family::new_with_constructor(seconds_histogram),
        pending: Gauge::default(),
        ledger_errors: Family::default(),
        reload_ok: Gauge::default(),
        reload_at: FloatGauge::default(),
        alerts: Family::default(),
    };
    // Counters are registered without `_total`: the encoder appends it.
    registry.register_collector(Box::new(m.teams.clone()));
    registry.register(
        "acquire_digest_api_requests",
        "Requests to the Acquire API by endpoint and HTTP status (\"error\" when none came)",
        m.api_requests.clone(),
    );
    registry.register(
        "acquire_digest_api_request_duration_seconds",
        "Time until the Acquire API answered a request",
        m.api_duration.clone(),
    );
    registry.register(
        "acquire_digest_webhook_request_duration_seconds",
        "Time until a webhook answered a POST, by webhook kind",
        m.webhook_duration.clone(),
    );
    registry.register(
        "acquire_digest_pending_deliveries",
        "Digests due to a webhook and not yet settled (delivered, refused or unknown)",
        m.pending.clone(),
    );
    registry.register(
        "acquire_digest_ledger_errors",
        "Operations on the delivery ledger that failed, by op (read, lease, record)",
        m.ledger_errors.clone(),
    );
    registry.register(
        "acquire_digest_config_last_reload_successful",
        "Whether the last config (re)load was accepted (1) or rejected (0)",
        m.reload_ok.clone(),
    );
    registry.register(
        "acquire_digest_config_last_reload_success_timestamp_seconds",
        "When the config was last loaded successfully (Unix time)",
        m.reload_at.clone(),
    );
    registry.register(
        "acquire_digest_alerts",
        "Alerts that a digest was given up, by reason and outcome (sent, failed)",
        m.alerts.clone(),
    );
    let build: Family<Labels, Gauge> = Family::default();
    build
        .get_or_create(&vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("commit", env!("ACQUIRE_DIGEST_BUILD_COMMIT").to_owned()),
        ])
        .set(1);
    registry.register(
        "acquire_digest_build_info",
        "The running build: its version and commit, always 1",
        build,
    );
    registry.register_collector(Box::new(ProcessCollector));
    for op in LEDGER_OPS {
        let _ = m.ledger_errors.get_or_create(&vec![("op", op.to_owned())]);
    }
    for endpoint in crate::fetch::Endpoint::ALL {
        let labels = vec![
            ("endpoint", endpoint.path().to_owned()),
            ("status", "200".to_owned()),
        ];
        let _ = m.api_requests.get_or_create(&labels);
    }
    for reason in crate::alerts::Reason::ALL {
        for outcome in ALERT_OUTCOMES {
            let labels = vec![
                ("reason", reason.as_str().to_owned()),
                ("outcome", outcome.to_owned()),
            ];
            let _ = m.alerts.get_or_create(&labels);
        }
    }
    Metrics { registry, ..m }
});

/// When this process started, near enough: the first thing `main` does is set up logs.
static STARTED: LazyLock<f64> = LazyLock::new(|| unix(Utc::now()));

/// The standard `process_*` metrics, read from /proc at each scrape (procfs parses it):
/// what every Prometheus client exports, so the usual dashboards and alerts work.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            let counter = ConstCounter::new(cpu);
            let help = "Total user and system CPU time spent in seconds";
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                help,
                None,
                counter.metric_type(),
            )?)?;
            let page = procfs::page_size();
            // /proc/stat, which has the boot time, is hidden by systemd's ProcSubset=pid.
            let started = (procfs::boot_time_secs())
                .map(|boot| boot as f64 + stat.starttime as f64 / ticks)
                .unwrap_or_else(|_| *STARTED);
            for (name, help, value) in [
                (
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    (stat.rss * page) as f64,
                ),
                (
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    stat.vsize as f64,
                ),
                (
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds",
                    started,
                ),
                (
                    "process_threads",
                    "Number of OS threads in the process",
                    stat.num_threads as f64,
                ),
            ] {
                gauge(&mut encoder, name, help, value)?;
            }
        }
        if let Ok(open) = me.fd_count() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                open as f64,
            )?;
        }
        let max_fds = me.limits().ok().map(|l| l.max_open_files.soft_limit);
        if let Some(procfs::process::LimitValue::Value(max)) = max_fds {
            let help = "Maximum number of open file descriptors";
            gauge(&mut encoder, "process_max_fds", help, max as f64)?;
        }
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// The config in force (at start and after each reload): every team's, webhook's and kind's
/// series exist from the first scrape, at zero, so a rate or an absence alert works before
/// anything has happened.
pub fn configured(teams: &[Team]) {
    let m = &*METRICS;
    for team in teams {
        m.teams
            .configured(&team.name, team.webhooks.iter().map(|h| h.name.as_str()));
        for hook in &team.webhooks {
            let kind = vec![("kind", hook.kind.as_str().to_owned())];
            let _ = m.webhook_duration.get_or_create(&kind);
        }
    }
}

/// When each (team, webhook) last had a digest delivered, as the ledger remembers it: set at
/// start, so a restart doesn't make every team look as if it had gone quiet.
pub fn delivered_before(last: impl IntoIterator<Item = (String, String, DateTime<Utc>)>) {
    for (team, webhook, at) in last {
        METRICS.teams.delivered_before(&team, &webhook, unix(at));
    }
}

/// An alert that a digest was given up: `sent` when its receiver took it, else `failed`.
pub fn alert(reason: &str, sent: bool) {
    let outcome = if sent { "sent" } else { "failed" };
    let labels = vec![
        ("reason", reason.to_owned()),
        ("outcome", outcome.to_owned()),
    ];
    METRICS.alerts.get_or_create(&labels).inc();
}

/// The metrics in the Prometheus text format (served with [`CONTENT_TYPE`]).
pub fn encode() -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &METRICS.registry)
        .expect("writing to a String cannot fail");
    text
}

fn unix(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// One team's delivery round: each webhook and its outcome (delivered, failed, refused,
/// unknown or skipped).
pub fn delivery_round<'a>(
    team: &str,
    outcomes: impl IntoIterator<Item = (&'a str, &'static str)>,
    now: DateTime<Utc>,
) {
    for (webhook, outcome) in outcomes {
        METRICS.teams.delivery(team, webhook, outcome, unix(now));
    }
}

/// One operation on the delivery ledger failed.
pub fn ledger_error(op: &'static str) {
    let labels = vec![("op", op.to_owned())];
    METRICS.ledger_errors.get_or_create(&labels).inc();
}

/// One read of a team's data again, after it looked incomplete.
pub fn data_recheck(team: &str) {
    METRICS.teams.data_recheck(team);
}

/// One request to the Acquire API; `status` is None when no HTTP answer came.
pub fn api_request(endpoint: &str, status: Option<u16>, took: Duration) {
    let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
    METRICS
        .api_requests
        .get_or_create(&vec![("endpoint", endpoint.to_owned()), ("status", status)])
        .inc();
    METRICS.api_duration.observe(took.as_secs_f64());
}

/// One POST to a webhook of this kind, answered or not.
pub fn webhook_request(kind: &str, took: Duration) {
    METRICS
        .webhook_duration
        .get_or_create(&vec![("kind", kind.to_owned())])
        .observe(took.as_secs_f64());
}

/// These teams' next firings: each configured team's at start and reload, and after that the
/// teams each reconciler pass looked at (a team is looked at when it fires, so its series
/// never goes stale).
pub fn next_digests<T: Borrow<Team>>(teams: &[T], now: DateTime<Utc>) {
    for team in teams {
        let team = team.borrow();
        // The next firing that brings a new digest: a schedule firing every minute re-fires
        // today's span.
        let next = team.schedule.next_new_date(team.zone, now);
        METRICS.teams.next_digest(&team.name, next.map(unix));
    }
}

/// A reload removed these teams: their next-digest series go.
pub fn unscheduled<'a>(teams: impl IntoIterator<Item = &'a Team>) {
    for team in teams {
        METRICS.teams.next_digest(&team.name, None);
    }
}

/// Digests due to a webhook and not yet settled, as the daemon's last pass counted them.
pub fn pending_deliveries(count: usize) {
    METRICS.pending.set(count as i64);
}

/// The outcome of a config load or reload, for the metrics and for `POST /-/reload` waiting
/// on it: Ok, or the config's problems.
pub type ReloadOutcome = Result<(), String>;

/// Each reload's outcome, numbered so a waiter can tell a new one from the last.
static RELOADS: LazyLock<watch::Sender<(u64, ReloadOutcome)>> =
    LazyLock::new(|| watch::Sender::new((0, Ok(()))));

/// The config was loaded (at start or by a reload), or a reload was rejected.
pub fn config_loaded(outcome: Result<(), &str>) {
    METRICS.reload_ok.set(i64::from(outcome.is_ok()));
    if outcome.is_ok() {
        METRICS.reload_at.set(unix(Utc::now()));
    }
    let outcome = outcome.map_err(str::to_owned);
    RELOADS.send_modify(|(n, last)| {
        *n += 1;
        *last = outcome;
    });
}

/// Watches reload outcomes from now on.
pub fn reloads() -> watch::Receiver<(u64, ReloadOutcome)> {
    RELOADS.subscribe()
}

// ---- Logs ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr at `RUST_LOG` (default info), one event per line in either format.
pub fn init_logs(format: LogFormat) {
    LazyLock::force(&STARTED);
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // HTTP internals may log request URIs, and a webhook URL is a credential: whatever
    // RUST_LOG asks for, these stay at warnings.
    for quiet in [
        "hyper",
        "hyper_util",
        "reqwest",
        "h2",
        "rustls",
        "tower",
        "axum",
        "handlebars",
        // Its notices ("relation … already exists, skipping") are the migrator's chatter.
        "sqlx",
        "sqlx_postgres",
        "sqlx_sqlite",
        "sqlx_core",
    ] {
        filter = filter.add_directive(format!("{quiet}=warn").parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(Millis)
        .with_writer(|| OneLine);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// RFC 3339 in UTC to the millisecond: what log pipelines parse without a hint.
struct Millis;

impl tracing_subscriber::fmt::time::FormatTime for Millis {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }
}

/// Stderr, one line per event: the formatter hands over each event whole, and a newline
/// inside one (a message quoting a multi-line error) would make log pipelines split it.
struct OneLine;

impl Write for OneLine {
    fn write(&mut self, event: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().lock().write_all(&one_line(event));
        // A closed stderr must not fail (or, through the formatter, panic) the daemon.
        Ok(event.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The event with inner line breaks made " | " and one newline at the end.
pub fn one_line(event: &[u8]) -> Vec<u8> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let mut line = Vec::with_capacity(event.len() + 8);
    let mut rest = body;
    while let Some(at) = rest.iter().position(|&b| b == b'\n') {
        let before = rest[..at].strip_suffix(b"\r").unwrap_or(&rest[..at]);
        line.extend_from_slice(before);
        line.extend_from_slice(b" | ");
        rest = &rest[at + 1..];
    }
    line.extend_from_slice(rest);
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_line_whatever_its_message_holds() {
        assert_eq!(one_line(b"a\n"), b"a\n");
        assert_eq!(one_line(b"a"), b"a\n");
        assert_eq!(
            one_line(b"rejected: c.toml: 2 problems\r\n  x: bad\n  y: worse\n"),
            b"rejected: c.toml: 2 problems |   x: bad |   y: worse\n"
        );
    }
}
