//! What an operator watches: the Prometheus metrics the daemon serves, and the log format.
//!
//! The metrics live in one process-wide registry so the stages record with a one-line call
//! (`telemetry::api_request(...)`) rather than a handle threaded through every type. Labels
//! are config names (team, webhook, endpoint, kind, outcome): bounded, and never a URL or key.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::Team;
use crate::daemon::Plan;
use crate::ledger::{Entries, Ledger, State};
use crate::pipeline::{HookStatus, SpanReport};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

struct Metrics {
    registry: Registry,
    deliveries: Family<Labels, Counter>,
    api_requests: Family<Labels, Counter>,
    api_duration: Histogram,
    webhook_duration: Family<Labels, Histogram, fn() -> Histogram>,
    last_delivery: Family<Labels, FloatGauge>,
    next_digest: Family<Labels, FloatGauge>,
    pending: Gauge,
    reload_ok: Gauge,
    reload_at: FloatGauge,
}

/// 5 ms to about 80 s: a quick loopback answer up to a request that hit its timeout.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let m = Metrics {
        registry: Registry::default(),
        deliveries: Family::default(),
        api_requests: Family::default(),
        api_duration: seconds_histogram(),
        webhook_duration: Family::new_with_constructor(seconds_histogram),
        last_delivery: Family::default(),
        next_digest: Family::default(),
        pending: Gauge::default(),
        reload_ok: Gauge::default(),
        reload_at: FloatGauge::default(),
    };
    // Counters are registered without `_total`: the encoder appends it.
    registry.register(
        "acquire_digest_deliveries",
        "Deliveries of a digest to a webhook by outcome (delivered, failed, refused, unknown, skipped), one per delivery round",
        m.deliveries.clone(),
    );
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
        "acquire_digest_last_delivery_timestamp_seconds",
        "When a team's digest last reached a webhook (Unix time)",
        m.last_delivery.clone(),
    );
    registry.register(
        "acquire_digest_next_digest_timestamp_seconds",
        "When a team's next new digest fires (Unix time)",
        m.next_digest.clone(),
    );
    registry.register(
        "acquire_digest_pending_deliveries",
        "Digests due to a webhook and not yet settled (delivered, refused or unknown)",
        m.pending.clone(),
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
    Metrics { registry, ..m }
});

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

/// The metric name for what happened to one webhook; None for what is not a delivery round.
pub fn outcome(status: &HookStatus) -> Option<&'static str> {
    Some(match status {
        // Posted and answered; only the ledger's record of it failed.
        HookStatus::Delivered | HookStatus::NotRecorded(_) => "delivered",
        HookStatus::Refused(_) => "refused",
        HookStatus::Unknown(_) => "unknown",
        HookStatus::AlreadyDelivered(_) | HookStatus::Busy(_) | HookStatus::Skipped => "skipped",
        HookStatus::RetryAt { .. } | HookStatus::LedgerFailed(_) => "failed",
        // A give-up of rounds already counted as failed, and a body only shown.
        HookStatus::Expired(_) | HookStatus::DryRun(_) => return None,
    })
}

/// One team's delivery round: each webhook's outcome, or failed for each when the data could
/// not be fetched.
pub fn delivery_round(team: &Team, report: &SpanReport, now: DateTime<Utc>) {
    let m = &*METRICS;
    let count = |webhook: &str, outcome: &'static str| {
        m.deliveries
            .get_or_create(&vec![
                ("team", team.name.clone()),
                ("webhook", webhook.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    };
    match &report.outcome {
        Ok(hooks) => {
            for hook in hooks {
                let Some(outcome) = outcome(&hook.status) else {
                    continue;
                };
                count(&hook.webhook, outcome);
                if outcome == "delivered" {
                    m.last_delivery
                        .get_or_create(&vec![
                            ("team", team.name.clone()),
                            ("webhook", hook.webhook.clone()),
                        ])
                        .set(unix(now));
                }
            }
        }
        Err(_) => team.webhooks.iter().for_each(|h| count(&h.name, "failed")),
    }
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

/// Each team's next firing as last computed, and the schedule it was computed for: the
/// daemon's loop runs once per finished delivery, and a cron search per team each time would
/// cost more than the pass itself at 10,000 teams.
static SCHEDULED: Mutex<Vec<(String, String, DateTime<Utc>)>> = Mutex::new(Vec::new());

/// Each configured team's next firing; a team a reload removed drops its series.
pub fn next_digests(teams: &[Team], now: DateTime<Utc>) {
    let family = &METRICS.next_digest;
    let mut scheduled = SCHEDULED.lock().expect("scheduled teams");
    let configured: HashSet<&str> = teams.iter().map(|t| t.name.as_str()).collect();
    for (gone, _, _) in scheduled
        .iter()
        .filter(|(t, _, _)| !configured.contains(t.as_str()))
    {
        family.remove(&vec![("team", gone.clone())]);
    }
    let mut known: std::collections::HashMap<String, (String, DateTime<Utc>)> = scheduled
        .drain(..)
        .map(|(team, schedule, next)| (team, (schedule, next)))
        .collect();
    for team in teams {
        let schedule = format!("{} {}", team.schedule.as_str(), team.zone);
        let next = match known.remove(&team.name) {
            Some((same, next)) if same == schedule && next > now => Some(next),
            // The next firing that brings a new digest: a schedule firing every minute re-fires
            // today's span, and the daemon would not wake to move a gauge that went stale.
            _ => team.schedule.next_new_date(team.zone, now),
        };
        let labels = vec![("team", team.name.clone())];
        match next {
            Some(next) => {
                family.get_or_create(&labels).set(unix(next));
                scheduled.push((team.name.clone(), schedule, next));
            }
            None => {
                family.remove(&labels);
            }
        }
    }
}

/// Digests due and not settled: the ledger's pending ones for configured webhooks, less those
/// this pass gives up, plus those due with no pending record (never tried, refused by an
/// earlier URL, expired and live again).
pub fn pending_count(teams: &[Team], entries: &Entries, plan: &Plan) -> usize {
    let configured: HashSet<(&str, &str)> = teams
        .iter()
        .flat_map(|t| {
            t.webhooks
                .iter()
                .map(move |h| (t.name.as_str(), h.name.as_str()))
        })
        .collect();
    let recorded_pending = entries
        .iter()
        .flat_map(|((team, _), hooks)| hooks.iter().map(move |(hook, entry)| (team, hook, entry)))
        .filter(|(team, hook, entry)| {
            entry.state == State::Pending && configured.contains(&(team.as_str(), hook.as_str()))
        })
        .count();
    let due_unrecorded = plan
        .due
        .iter()
        .flat_map(|due| due.webhooks.iter().map(move |hook| (due, hook)))
        .filter(|(due, hook)| {
            entries
                .get(&(due.team.clone(), due.span))
                .and_then(|hooks| hooks.get(*hook))
                .is_none_or(|entry| entry.state != State::Pending)
        })
        .count();
    (recorded_pending + due_unrecorded).saturating_sub(plan.expired.len())
}

/// Sets `acquire_digest_pending_deliveries` from a reconcile pass's view of the ledger.
pub fn pending_deliveries(teams: &[Team], entries: &Entries, plan: &Plan) {
    METRICS
        .pending
        .set(pending_count(teams, entries, plan) as i64);
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

/// The ledger the daemon uses now, for `GET /-/ready` to probe.
static LEDGER: Mutex<Option<Ledger>> = Mutex::new(None);

/// The daemon opened (or kept, on a reload) this ledger.
pub fn ledger_in_use(ledger: &Ledger) {
    *LEDGER.lock().expect("ledger slot") = Some(ledger.clone());
}

pub fn current_ledger() -> Option<Ledger> {
    LEDGER.lock().expect("ledger slot").clone()
}

// ---- Logs ----

/// `once` in the JSON log format: its summary, one event per webhook (or per team when
/// nothing could be sent), with `team`, `date` and `webhook` as fields.
pub fn log_summary(report: &SpanReport) {
    let (team, date) = (&report.team, report.span.to_string());
    match &report.outcome {
        Ok(hooks) => {
            for hook in hooks {
                let (webhook, host, status) = (&hook.webhook, &hook.host, &hook.status);
                if status.is_done() {
                    tracing::info!(%team, %date, %webhook, %host, "{status}");
                } else if status.is_given_up() {
                    tracing::error!(%team, %date, %webhook, %host, "{status}");
                } else {
                    tracing::warn!(%team, %date, %webhook, %host, "{status}");
                }
            }
        }
        Err(e) => tracing::error!(%team, %date, "FAILED, no digest sent: {e}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr at `RUST_LOG` (default info), one event per line in either format.
pub fn init_logs(format: LogFormat) {
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
    use crate::ledger::Entry;
    use crate::schedule::Span;
    use std::path::Path;

    #[test]
    fn an_event_is_one_line_whatever_its_message_holds() {
        assert_eq!(one_line(b"a\n"), b"a\n");
        assert_eq!(one_line(b"a"), b"a\n");
        assert_eq!(
            one_line(b"rejected: c.toml: 2 problems\r\n  x: bad\n  y: worse\n"),
            b"rejected: c.toml: 2 problems |   x: bad |   y: worse\n"
        );
    }

    fn team() -> Team {
        let text = r#"
[[teams]]
name = "t"
account_id = "acme"
api_key = "k"
timezone = "UTC"
schedule = "0 9 * * *"
[[teams.webhooks]]
kind = "generic"
url = "http://127.0.0.1:9/a"
[[teams.webhooks]]
kind = "slack"
url = "http://127.0.0.1:9/b"
"#;
        crate::config::parse(text, Path::new("."), &|_| None)
            .unwrap()
            .teams
            .remove(0)
    }

    #[test]
    fn pending_counts_what_is_due_and_not_settled() {
        let team = team();
        let entry = |state| Entry::settled_as(state, 1, None);
        let due: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        let day = Span::day("2026-11-24".parse().unwrap());
        let teams = std::slice::from_ref(&team);
        let pending = |now, entries: &Entries| {
            let plan = crate::daemon::plan(teams, now, entries, false);
            pending_count(teams, entries, &plan)
        };
        assert_eq!(pending(due, &Entries::new()), 2);
        let mut entries = Entries::new();
        let hooks = entries.entry(("t".into(), day)).or_default();
        hooks.insert("generic".into(), entry(State::Delivered));
        // Waiting for its next attempt: not due now, still pending.
        let waiting = Entry {
            next_attempt: Some(due + chrono::Duration::minutes(10)),
            ..entry(State::Pending)
        };
        hooks.insert("slack".into(), waiting);
        assert_eq!(pending(due, &entries), 1);
        let refused_here = Entry {
            refused_url: Some(team.webhooks[1].url.fingerprint()),
            ..entry(State::Refused)
        };
        let mut put = |entry: Entry| {
            entries
                .get_mut(&("t".into(), day))
                .unwrap()
                .insert("slack".into(), entry);
            pending(due, &entries)
        };
        assert_eq!(put(refused_here.clone()), 0);
        // Refused by a URL since changed: due again.
        let refused_before = Entry {
            refused_url: Some("another URL".into()),
            ..refused_here
        };
        assert_eq!(put(refused_before), 1);
        // Before the firing nothing is due; a pending record whose window closed is given up
        // in this pass, so no longer pending.
        let before: DateTime<Utc> = "2026-11-25T08:00:00Z".parse().unwrap();
        assert_eq!(pending(before, &Entries::new()), 0);
        let mut stale = Entries::new();
        stale
            .entry(("t".into(), Span::day("2026-11-20".parse().unwrap())))
            .or_default()
            .insert("generic".into(), entry(State::Pending));
        assert_eq!(pending(before, &stale), 0);
        // A removed webhook's record doesn't count.
        stale
            .entry(("t".into(), day))
            .or_default()
            .insert("removed".into(), entry(State::Pending));
        assert_eq!(pending(before, &stale), 0);
    }

    #[test]
    fn outcomes_use_the_documented_names() {
        assert_eq!(outcome(&HookStatus::Delivered), Some("delivered"));
        assert_eq!(outcome(&HookStatus::Refused("x".into())), Some("refused"));
        assert_eq!(outcome(&HookStatus::Unknown("x".into())), Some("unknown"));
        assert_eq!(outcome(&HookStatus::Busy(Utc::now())), Some("skipped"));
        let retry = HookStatus::RetryAt {
            error: "x".into(),
            at: Utc::now(),
        };
        assert_eq!(outcome(&retry), Some("failed"));
        assert_eq!(outcome(&HookStatus::Expired(None)), None);
    }
}
