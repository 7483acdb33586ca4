//! The whole line for one team and one span: lease → fetch → rank → render → deliver →
//! record. `once`, `demo` and the daemon all come through here.
//!
//! Leases are taken before the API is asked, so a span another process is posting costs no
//! requests, and each answer is recorded the moment it arrives, so a kill re-sends only what
//! was on the wire.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::clock::Clock;
use crate::config::{Config, Team, Webhook};
use crate::deliver::{Deliverer, Posted};
use crate::fetch::{self, DayReport, FetchError};
use crate::history::{History, Totals};
use crate::http::RetryPolicy;
use crate::insight::{self, Direction, Metric, Unusual};
use crate::ledger::owed::{live_spans, window_closes};
use crate::ledger::{
    Claim, Entry, Finish, Key, Lease, Ledger, LedgerError, Permit, Reads, Requester, State,
};
use crate::rank::{Audience, Digest, rank};
use crate::render::Renderer;
use crate::schedule::{Comparison, Span, Window};

/// Reads again of data that looked incomplete, before it is sent as it is.
const MAX_RECHECKS: u32 = 3;

/// Baseline days (or weeks) one digest may fetch: a new team's line appears within days
/// without a burst of requests.
const BASELINE_FETCHES: usize = 14;

/// Quick retries of a 5xx within one round.
const QUICK_5XX_RETRIES: u32 = 2;

/// How often the daemon drops old history: pruning is a cheap delete, but not worth doing
/// for every digest.
const PRUNE_EVERY: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Everything a run needs, built once from the config and shared by every team.
#[derive(Clone)]
pub struct Pipeline {
    pub client: fetch::Client,
    pub renderer: Renderer,
    pub deliverer: Deliverer,
    /// None for dry runs and the demo: nothing is recorded.
    pub ledger: Option<Ledger>,
    /// Where fetched reports are kept for later comparisons: beside the ledger, or for a dry
    /// run beside one it only reads (with no ledger to record in, nothing is kept either).
    history: Option<History>,
    history_days: u32,
    /// `[state] keep_days`, in the daemon: digests whose spans ended longer ago are forgotten;
    /// with the teams' longest `catch_up`, which the ledger keeps more of (see
    /// [`Ledger::forget_all_but`]).
    keep_days: Option<(u32, Duration)>,
    /// When history and the ledger were last pruned, shared by the clones one run or daemon makes.
    pruned: Arc<std::sync::Mutex<Option<DateTime<Utc>>>>,
    /// Digests sent to a webhook that failed, by team and span: a later round sends the same
    /// body again instead of fetching every report anew. Dropped once no webhook of the span
    /// waits for another round.
    sent: Arc<std::sync::Mutex<Sent>>,
    retry: RetryPolicy,
    retry_every: Duration,
    clock: Arc<dyn Clock>,
}

/// By team and span: the digest sent, and when it was built; and when those no round will
/// want were last swept out (hourly, as history is pruned: during an outage of a webhook many
/// teams share, every team's digest waits here).
#[derive(Default)]
struct Sent {
    by_span: HashMap<(String, Span), (Arc<Digest>, DateTime<Utc>)>,
    swept: Option<DateTime<Utc>>,
}

/// A span's digest as fetched for its first round, or why nothing is sent this round.
enum Fresh<'a> {
    /// The digest, and the leases to send it under.
    Send(Arc<Digest>, Vec<(&'a Webhook, Option<Lease>)>),
    /// Waiting for its data, or an empty day skipped: each leased webhook's status.
    Done(Vec<HookReport>),
    Failed(FetchError),
}

/// What happened to one team's span.
#[derive(Debug)]
pub struct SpanReport {
    pub team: String,
    pub span: Span,
    pub outcome: Result<Vec<HookReport>, FetchError>,
}

#[derive(Debug)]
pub struct HookReport {
    pub webhook: String,
    /// Scheme and host only: the URL is a credential.
    pub host: String,
    pub status: HookStatus,
}

#[derive(Debug)]
pub enum HookStatus {
    Delivered,
    AlreadyDelivered(Option<DateTime<Utc>>),
    DryRun(Value),
    /// The webhook refused it for good, now or before (with this URL).
    Refused(String),
    /// Not delivered this time; the daemon tries again then, or (None) not at all: by then
    /// the team's catch-up window has closed, and it is given up.
    RetryAt {
        error: String,
        at: Option<DateTime<Utc>>,
    },
    /// Two POSTs went unanswered; not resent automatically.
    Unknown(String),
    /// [`crate::ledger::MAX_POSTS`] reached the receiver, none delivering it: not resent
    /// automatically.
    TooManyAttempts(String),
    /// Another process holds its lease until then.
    Busy(DateTime<Utc>),
    /// Its catch-up window closed before it could be delivered.
    Expired(Option<String>),
    /// Its firing (then) went by while no process was running, and its catch-up window had
    /// closed when one looked: given up without an attempt.
    Missed(Option<DateTime<Utc>>),
    /// Not posted: the ledger, which keeps it from being sent twice, could not be used.
    LedgerFailed(LedgerError),
    /// Posted and answered, but the answer could not be recorded: it may be sent again.
    NotRecorded(String),
    /// Its lease ran out while this process worked and another took the digest over (or it
    /// was given up): this process recorded nothing, and counts nothing as delivered.
    Superseded,
    /// Nobody visited and the team has `skip_empty`: nothing posted, now or later.
    Skipped,
    /// The data looked incomplete (a zero or unusually low total): nothing posted, and it is
    /// read again then.
    Waiting(DateTime<Utc>),
}

impl HookStatus {
    /// The digest is where it should be (or, for a dry run, was only shown).
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            HookStatus::Delivered
                | HookStatus::AlreadyDelivered(_)
                | HookStatus::DryRun(_)
                | HookStatus::Skipped
        )
    }

    /// A give-up: nobody will send it without an admin.
    pub fn is_given_up(&self) -> bool {
        matches!(
            self,
            HookStatus::Refused(_)
                | HookStatus::Unknown(_)
                | HookStatus::TooManyAttempts(_)
                | HookStatus::Expired(_)
                | HookStatus::Missed(_)
        )
    }

    /// The outcome `acquire_digest_deliveries` counts it as; None for what is not a delivery
    /// round.
    pub fn outcome(&self) -> Option<&'static str> {
        Some(match self {
            // Posted and answered; only the ledger's record of it failed.
            HookStatus::Delivered | HookStatus::NotRecorded(_) => "delivered",
            HookStatus::Superseded => "superseded",
            HookStatus::Missed(_) => "missed",
            HookStatus::Refused(_) => "refused",
            HookStatus::Unknown(_) => "unknown",
            HookStatus::TooManyAttempts(_) => "too_many_attempts",
            HookStatus::AlreadyDelivered(_) | HookStatus::Busy(_) | HookStatus::Skipped => {
                "skipped"
            }
            HookStatus::RetryAt { .. } | HookStatus::LedgerFailed(_) => "failed",
            // A give-up of rounds already counted as failed, a body only shown, and a wait
            // for data (counted as a recheck).
            HookStatus::Expired(_) | HookStatus::DryRun(_) | HookStatus::Waiting(_) => {
                return None;
            }
        })
    }
}

impl fmt::Display for HookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookStatus::Delivered => f.write_str("delivered"),
            HookStatus::AlreadyDelivered(at) => {
                f.write_str("already delivered")?;
                if let Some(at) = at {
                    write!(f, " at {}", at.format("%Y-%m-%d %H:%M:%S UTC"))?;
                }
                f.write_str(", skipped (--force sends again)")
            }
            HookStatus::DryRun(_) => f.write_str("dry run, not sent"),
            HookStatus::Refused(e) => write!(
                f,
                "FAILED: {e}; not sent again until its URL changes (`once` tries it again)"
            ),
            HookStatus::RetryAt {
                error,
                at: Some(at),
            } => write!(
                f,
                "FAILED: {error}; the daemon tries again at {}",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            HookStatus::RetryAt { error, at: None } => write!(
                f,
                "FAILED: {error}; the daemon does not try again, since the team's catch_up window closes first (`once` sends it)"
            ),
            HookStatus::Unknown(e) => write!(
                f,
                "FAILED, outcome unknown: {e}; two POSTs went unanswered, so it is not resent automatically (check the receiver; `once --force` sends it again)"
            ),
            HookStatus::TooManyAttempts(e) => write!(
                f,
                "FAILED: {e}; {} POSTs reached the receiver without one delivering it (a gateway that forwards and answers 5xx may have delivered some), so it is not resent automatically (`once --force` sends one more)",
                crate::ledger::MAX_POSTS
            ),
            HookStatus::Busy(until) => write!(
                f,
                "being delivered by another acquire-digest process (its lease runs until {}), skipped",
                until.format("%H:%M:%S UTC")
            ),
            HookStatus::Expired(e) => {
                f.write_str("FAILED: its catch_up window closed before it could be delivered")?;
                if let Some(e) = e {
                    write!(f, " (last error: {e})")?;
                }
                Ok(())
            }
            HookStatus::Missed(firing) => {
                f.write_str("MISSED: its catch_up window closed with nothing recorded of it (no acquire-digest process was running when it was due")?;
                if let Some(at) = firing {
                    write!(f, " at {}", at.format("%Y-%m-%d %H:%M:%S UTC"))?;
                }
                f.write_str(", or none could record it); `once --date` with its first day sends it")
            }
            HookStatus::LedgerFailed(e) => write!(f, "FAILED, not sent: {e}"),
            HookStatus::Skipped => f.write_str("skipped: no visitors"),
            HookStatus::NotRecorded(e) => {
                write!(f, "delivered, but not recorded ({e}); it may be sent again")
            }
            HookStatus::Superseded => f.write_str(
                "superseded: its lease ran out while this process worked, and another process took the digest over (or it was given up); nothing recorded here",
            ),
            HookStatus::Waiting(at) => write!(
                f,
                "waiting for data: a total looked incomplete (zero, or unusually low); read again at {}",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        }
    }
}

impl SpanReport {
    /// Whether the digest is everywhere it should be.
    pub fn is_ok(&self) -> bool {
        self.outcome
            .as_ref()
            .is_ok_and(|hooks| hooks.iter().all(|h| h.status.is_done()))
    }

    /// "team span webhook (host): what happened".
    pub fn hook_line(&self, hook: &HookReport) -> String {
        format!(
            "{} {} {} ({}): {}",
            self.team, self.span, hook.webhook, hook.host, hook.status
        )
    }

    /// One line per webhook (or one for the team when nothing could be sent).
    pub fn summary_lines(&self) -> Vec<String> {
        match &self.outcome {
            Ok(hooks) if hooks.is_empty() => {
                vec![format!("{} {}: no webhooks", self.team, self.span)]
            }
            Ok(hooks) => hooks.iter().map(|h| self.hook_line(h)).collect(),
            Err(e) => vec![format!(
                "{} {}: FAILED, no digest sent: {e}",
                self.team, self.span
            )],
        }
    }

    /// Each webhook's outcome as one event: done at INFO, a give-up at ERROR, the rest at
    /// WARN, with `team`, `date`, `webhook` and `host` as fields. The daemon's lines also name
    /// what they are about in the message; `once`'s JSON format puts only the outcome there.
    pub fn log(&self, by_daemon: bool) {
        let (team, date) = (&self.team, self.span.to_string());
        let hooks = match &self.outcome {
            Ok(hooks) => hooks,
            Err(e) if by_daemon => {
                return tracing::warn!(%team, %date, "{team} {date}: FAILED, no digest sent: {e}; the daemon tries again within retry_every");
            }
            Err(e) => return tracing::error!(%team, %date, "FAILED, no digest sent: {e}"),
        };
        for hook in hooks {
            let (webhook, host, status) = (&hook.webhook, &hook.host, &hook.status);
            let line = match by_daemon {
                true => self.hook_line(hook),
                false => status.to_string(),
            };
            if status.is_done() || matches!(status, HookStatus::Waiting(_)) {
                tracing::info!(%team, %date, %webhook, %host, "{line}");
            } else if by_daemon && matches!(status, HookStatus::Busy(_)) {
                // Replicas' everyday lot: each finds most digests taken by the others. One
                // held past the daemon's next look is said then, once (`say_held`).
                tracing::debug!(%team, %date, %webhook, %host, "{line}");
            } else if status.is_given_up() {
                let giving_up = if by_daemon { "giving up: " } else { "" };
                tracing::error!(%team, %date, %webhook, %host, "{giving_up}{line}");
            } else {
                tracing::warn!(%team, %date, %webhook, %host, "{line}");
            }
        }
    }
}

impl Pipeline {
    /// The daemon's: it also forgets the ledger's digests older than `[state] keep_days`, at
    /// most hourly, after it builds a digest. A `once` doesn't: it would forget the day it was
    /// asked for, and stop halfway at its exit.
    pub fn forgetting(self, config: &Config) -> Pipeline {
        let longest = (config.teams.iter().map(|t| t.catch_up).max()).unwrap_or_default();
        let keep_days = config.keep_days.map(|days| (days, longest));
        Pipeline { keep_days, ..self }
    }

    pub fn new(config: &Config, ledger: Option<Ledger>, clock: Arc<dyn Clock>) -> Pipeline {
        Pipeline {
            client: fetch::Client::with_retry(
                config.timeout,
                config.concurrency,
                RetryPolicy::within(config.fetch_retry_budget),
            ),
            renderer: Renderer::new(config.teams.iter().flat_map(|t| &t.webhooks)),
            deliverer: Deliverer::new(config.delivery_timeout),
            history: ledger.as_ref().map(Ledger::history),
            // Reports are kept only for comparisons and baselines: with none asked for, nothing
            // is kept and what was kept before is dropped.
            history_days: if config
                .teams
                .iter()
                .any(|t| !t.compare.is_empty() || t.insights.unusual)
            {
                config.history_days
            } else {
                0
            },
            keep_days: None,
            pruned: Arc::default(),
            sent: Arc::default(),
            ledger,
            retry: RetryPolicy::within(config.delivery_retry_budget),
            retry_every: config.retry_every,
            clock,
        }
    }

    /// The pipeline reading kept reports from `ledger` without writing any: a dry run's.
    pub fn reading_history(mut self, ledger: Ledger) -> Pipeline {
        self.history = Some(ledger.history());
        self
    }

    /// Builds and delivers one team's digest of `span` to each of `team.webhooks` that needs it
    /// from `requester`; without a ledger (a dry run) renders the bodies and posts nothing.
    pub async fn run(&self, team: &Team, span: Span, requester: Requester) -> SpanReport {
        let mut outcome = self.deliver_span(team, span, requester).await;
        // "The daemon tries again at" only if the reconciler will still find it due then.
        for hook in outcome.iter_mut().flatten() {
            if let HookStatus::RetryAt { at, .. } = &mut hook.status
                && at.is_some_and(|t| !live_spans(team, t).contains(&span))
            {
                *at = None;
            }
        }
        let again = (outcome.iter().flatten())
            .any(|h| matches!(h.status, HookStatus::RetryAt { at: Some(_), .. }));
        if !again {
            let mut sent = self.sent.lock().expect("sent digests");
            sent.by_span.remove(&(team.name.clone(), span));
        }
        let report = SpanReport {
            team: team.name.clone(),
            span,
            outcome,
        };
        let outcomes: Vec<(&str, &str)> = match &report.outcome {
            Ok(hooks) => hooks
                .iter()
                .filter_map(|h| Some((h.webhook.as_str(), h.status.outcome()?)))
                .collect(),
            // Nothing could be sent: a failed round for each webhook.
            Err(_) => team
                .webhooks
                .iter()
                .map(|h| (h.name.as_str(), "failed"))
                .collect(),
        };
        crate::telemetry::delivery_round(&team.name, outcomes, self.clock.now());
        report
    }

    async fn deliver_span(
        &self,
        team: &Team,
        span: Span,
        requester: Requester,
    ) -> Result<Vec<HookReport>, FetchError> {
        let mut reports = Vec::new();
        let mut leased = Vec::new();
        match &self.ledger {
            Some(ledger) => {
                for hook in &team.webhooks {
                    let key = Key::new(&team.name, span, &hook.name);
                    match ledger.lease(&key, requester, &hook.url.fingerprint()).await {
                        Ok(Claim::Leased(lease)) => leased.push((hook, Some(lease))),
                        Ok(Claim::Settled(entry)) => reports.push(report(hook, settled(entry))),
                        Ok(Claim::Busy(until)) => {
                            reports.push(report(hook, HookStatus::Busy(until)))
                        }
                        Err(e) => reports.push(report(hook, HookStatus::LedgerFailed(e))),
                    }
                }
            }
            None => leased.extend(team.webhooks.iter().map(|hook| (hook, None))),
        }
        // Nothing to send: don't spend four API calls on it.
        if leased.is_empty() {
            return Ok(reports);
        }
        let kept = (self.sent.lock().expect("sent digests"))
            .by_span
            .get(&(team.name.clone(), span))
            .map(|(digest, _)| digest.clone())
            // Sent unsettled: a later round reads again, in case the data is in by now.
            .filter(|digest| !digest.provisional);
        let (digest, leased) = match kept {
            // A later round of the same span: the same body, and no request.
            Some(digest) => (digest, leased),
            None => match self.fresh_digest(team, span, requester, leased).await {
                Fresh::Send(digest, leased) => (digest, leased),
                Fresh::Done(done) => {
                    reports.extend(done);
                    return Ok(reports);
                }
                Fresh::Failed(e) => return Err(e),
            },
        };
        let sends = leased.into_iter().map(|(hook, lease)| {
            let digest = &digest;
            async move {
                let status = match (self.renderer.body(hook, digest), lease) {
                    (Err(e), lease) => {
                        // A reload with a mended template gets it out at the next attempt.
                        let (error, at) = (format!("could not render: {e}"), self.next_attempt());
                        failed_before(lease, &error, at).await;
                        HookStatus::RetryAt {
                            error,
                            at: Some(at),
                        }
                    }
                    // Without a ledger nothing may be posted: it is what keeps a post single.
                    (Ok(body), None) => HookStatus::DryRun(body),
                    (Ok(body), Some(lease)) => self.send(team, hook, &body, lease).await,
                };
                report(hook, status)
            }
        });
        reports.extend(futures::future::join_all(sends).await);
        Ok(reports)
    }

    /// The span's digest fetched now, once its data looks complete and it isn't an empty day
    /// to skip; else what became of each leased webhook. A digest to send is kept for the
    /// span's later rounds.
    async fn fresh_digest<'a>(
        &self,
        team: &Team,
        span: Span,
        requester: Requester,
        leased: Vec<(&'a Webhook, Option<Lease>)>,
    ) -> Fresh<'a> {
        let mut digest = match self.digest(team, span).await {
            Ok(digest) => digest,
            Err(e) => {
                let (error, at) = (e.to_string(), self.next_attempt());
                for (_, lease) in leased {
                    failed_before(lease, &error, at).await;
                }
                return Fresh::Failed(e);
            }
        };
        let reads = (leased.iter())
            .find_map(|(_, lease)| lease.as_ref().map(|l| l.reads().clone()))
            .unwrap_or_default();
        if let Some((read, again)) = self
            .wait_for_data(team, span, requester, reads, &mut digest)
            .await
        {
            let mut done = Vec::new();
            for (hook, lease) in leased {
                let Some(lease) = lease else { continue };
                let waiting = lease.finish(Finish::Waiting {
                    read: read.clone(),
                    retry_at: again,
                });
                let status = match waiting.await {
                    Ok(Some(_)) => HookStatus::Waiting(again),
                    Ok(None) => HookStatus::Superseded,
                    Err(e) => HookStatus::LedgerFailed(e),
                };
                done.push(report(hook, status));
            }
            return Fresh::Done(done);
        }
        // Forced by an admin, even an empty day goes out.
        if team.skip_empty && digest.is_empty && requester != (Requester::Admin { force: true }) {
            let mut done = Vec::new();
            for (hook, lease) in leased {
                if let Some(lease) = lease
                    && let Err(e) = lease.finish(Finish::Skipped).await
                {
                    done.push(report(hook, HookStatus::LedgerFailed(e)));
                    continue;
                }
                done.push(report(hook, HookStatus::Skipped));
            }
            return Fresh::Done(done);
        }
        let digest = Arc::new(digest);
        let mut sent = self.sent.lock().expect("sent digests");
        let now = self.clock.now();
        // A span some other process finished, or one given up while a reload came between,
        // is not kept past the longest catch-up.
        if hourly_due(sent.swept, now) {
            let longest = chrono::Duration::from_std(crate::config::MAX_CATCH_UP)
                .unwrap_or_default()
                + chrono::Duration::days(1);
            (sent.by_span).retain(|_, (_, at)| now.signed_duration_since(*at) < longest);
            sent.swept = Some(now);
        }
        (sent.by_span).insert((team.name.clone(), span), (digest.clone(), now));
        Fresh::Send(digest, leased)
    }

    /// The team's digest of `span`, fetched fresh, beside each earlier span `team.compare`
    /// asks for. An earlier span that can't be had leaves its comparison out, never the digest.
    pub async fn digest(&self, team: &Team, span: Span) -> Result<Digest, FetchError> {
        let window = Window::for_span(team.zone, span);
        let day = self.client.fetch_day(team, &window).await?;
        self.remember(team, &window, &day).await;
        let audience = Audience {
            team: &team.name,
            account_id: team.account_id.as_str(),
            zone: team.zone,
            top: team.top,
        };
        let mut digest = rank(&audience, &window, &day);
        let earlier: Vec<(Comparison, Span)> = team
            .compare
            .iter()
            .filter_map(|&which| Some((which, which.of(span)?)))
            .collect();
        let reports = futures::future::join_all(
            earlier
                .iter()
                .map(|&(_, earlier)| self.earlier_report(team, earlier)),
        )
        .await;
        for ((which, earlier), report) in earlier.into_iter().zip(reports) {
            match report {
                Ok(report) => {
                    crate::rank::compare(&mut digest, which, earlier, &report);
                    if which == Comparison::Previous && team.insights.moved {
                        digest.moved = insight::moved(&day, &report);
                    }
                }
                Err(e) => tracing::warn!(
                    team = %team.name,
                    date = %span,
                    compared = %earlier,
                    "no {} comparison: {e}",
                    which.as_str()
                ),
            }
        }
        if team.insights.unusual && self.history_days > insight::BASELINE_DAYS {
            digest.unusual = self.unusual(team, span, &digest.totals).await;
        }
        self.prune().await;
        Ok(digest)
    }

    /// An earlier span's report: the one kept from before, else fetched now (and kept).
    async fn earlier_report(&self, team: &Team, span: Span) -> Result<DayReport, FetchError> {
        let window = Window::for_span(team.zone, span);
        if let Some(history) = &self.history {
            match history.recalled(team.account_id.as_str(), &window).await {
                Ok(Some(json)) => match serde_json::from_str(&json) {
                    Ok(report) => return Ok(report),
                    // An older version's shape: fetching it again replaces it.
                    Err(e) => {
                        tracing::debug!(team = %team.name, date = %span, "a kept report could not be read ({e}); fetching it again")
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(team = %team.name, date = %span, "kept reports could not be read ({e}); fetching it again")
                }
            }
        }
        let report = self.client.fetch_day(team, &window).await?;
        self.remember(team, &window, &report).await;
        Ok(report)
    }

    /// Which of the span's totals are unusual against the days (or weeks) before it, in the
    /// team's zone: from the kept totals, and those missing fetched now from one report each,
    /// at most [`BASELINE_FETCHES`] per digest, the same weekday first, so a new team's digest
    /// can judge from its first day. A day that can't be had is left out, never an error.
    async fn unusual(&self, team: &Team, span: Span, totals: &crate::rank::Totals) -> Vec<Unusual> {
        let account = team.account_id.as_str();
        let mut earlier: Vec<Span> = match span.days() {
            1 => (1..=insight::BASELINE_DAYS)
                .filter_map(|k| span.first.checked_sub_days(chrono::Days::new(k.into())))
                .map(Span::day)
                .collect(),
            7 => (1..=insight::BASELINE_WEEKS)
                .filter_map(|k| {
                    let back = chrono::Days::new(7 * u64::from(k));
                    Some(Span {
                        first: span.first.checked_sub_days(back)?,
                        last: span.last.checked_sub_days(back)?,
                    })
                })
                .collect(),
            _ => return Vec::new(),
        };
        earlier.sort_by_key(|e| {
            (
                (span.first - e.first).num_days() % 7 != 0,
                span.first - e.first,
            )
        });
        let windows: Vec<Window> = earlier
            .iter()
            .map(|&e| Window::for_span(team.zone, e))
            .collect();
        let mut known = match &self.history {
            Some(history) => history.totals(account, &windows).await.unwrap_or_else(|e| {
                tracing::warn!(team = %team.name, date = %span, "kept totals could not be read ({e}); fetching them again");
                vec![None; windows.len()]
            }),
            None => vec![None; windows.len()],
        };
        let missing: Vec<usize> = (0..windows.len())
            .filter(|&i| known[i].is_none())
            .take(BASELINE_FETCHES)
            .collect();
        let fetches = missing.iter().map(|&i| {
            let window = &windows[i];
            async move { (i, self.client.fetch_countries(team, window).await) }
        });
        for (i, countries) in futures::future::join_all(fetches).await {
            match countries {
                Ok(countries) => {
                    let (visitors, chats) = insight::headline(&DayReport {
                        countries,
                        ..DayReport::default()
                    });
                    let totals = Totals { visitors, chats };
                    self.remember_totals(team, &windows[i], totals, false).await;
                    known[i] = Some(totals);
                }
                Err(e) => {
                    tracing::debug!(team = %team.name, date = %earlier[i], "a baseline day could not be had: {e}")
                }
            }
        }
        let (visitors, chats) = (totals.visitors, totals.chats);
        Metric::BOTH
            .into_iter()
            .filter_map(|metric| {
                let value = metric.of(visitors, chats);
                let values = earlier.iter().zip(&known).filter_map(|(e, totals)| {
                    totals.map(|t| (e.first, metric.of(t.visitors, t.chats)))
                });
                if span.days() == 1 {
                    let history: Vec<_> = values.collect();
                    insight::unusual_day(metric, span.first, value, &history)
                } else {
                    let weeks: Vec<u64> = values.map(|(_, v)| v).collect();
                    insight::unusual_week(metric, value, &weeks)
                }
            })
            .collect()
    }

    /// Whether the daemon should read the digest's data again before sending it: when a total
    /// looks incomplete (zero where many are usual, or unusually low), what this read saw and
    /// when to read again. Once waiting, it reads until two reads agree (a quiet day is quiet;
    /// a late day that stopped looking low may be half in), three rechecks are spent, or the
    /// next would fall after the window closes. Sent unsettled, the digest is marked
    /// provisional and its window isn't trusted later.
    async fn wait_for_data(
        &self,
        team: &Team,
        span: Span,
        requester: Requester,
        reads: Reads,
        digest: &mut Digest,
    ) -> Option<(String, DateTime<Utc>)> {
        let incomplete = (digest.unusual.iter())
            .any(|u| matches!(u.direction, Direction::Low | Direction::NoneRecorded));
        if reads.count == 0 && !incomplete {
            return None;
        }
        if reads.count > 0 {
            crate::telemetry::data_recheck(&team.name);
        }
        let read = fingerprint(digest);
        if reads.last.as_deref() == Some(read.as_str()) {
            return None;
        }
        // Neither kept as a baseline nor as a comparison: fetched again when needed.
        self.forget_provisional(team, span, digest).await;
        let recheck = chrono::Duration::from_std(team.recheck).unwrap_or_default();
        let again = self.clock.now() + recheck;
        let why = match requester {
            Requester::Admin { .. } => "`once` doesn't wait for more".to_owned(),
            _ if recheck.is_zero() => "recheck = \"0\" waits for nothing".to_owned(),
            _ if reads.count >= MAX_RECHECKS => {
                format!("still changed after {} rechecks", reads.count)
            }
            _ if window_closes(team, span).is_none_or(|closes| again >= closes) => {
                "no recheck fits before its catch_up window closes".to_owned()
            }
            _ => return Some((read, again)),
        };
        digest.provisional = true;
        let seen = match reads.count {
            0 => "the data looks incomplete (a zero or unusually low total)",
            _ => "the data was still changing",
        };
        tracing::warn!(team = %team.name, date = %span, "{seen} and {why}: sent marked provisional");
        None
    }

    /// Forgets what was kept of the span's own window, whose data looked incomplete: a later
    /// baseline or comparison fetches it again. Its totals stay, marked provisional.
    async fn forget_provisional(&self, team: &Team, span: Span, digest: &Digest) {
        let window = Window::for_span(team.zone, span);
        let totals = Totals {
            visitors: digest.totals.visitors,
            chats: digest.totals.chats,
        };
        self.remember_totals(team, &window, totals, true).await;
        let Some(history) = self.history.as_ref().filter(|_| self.ledger.is_some()) else {
            return;
        };
        if let Err(e) = history.forget(team.account_id.as_str(), &window).await {
            tracing::warn!(team = %team.name, date = %span, "could not drop the incomplete report kept for comparisons: {e}");
        }
    }

    async fn remember_totals(
        &self,
        team: &Team,
        window: &Window,
        totals: Totals,
        provisional: bool,
    ) {
        let Some(history) = self.history.as_ref().filter(|_| self.ledger.is_some()) else {
            return;
        };
        if self.history_days == 0 {
            return;
        }
        if let Err(e) = history
            .remember_totals(team.account_id.as_str(), window, totals, provisional)
            .await
        {
            tracing::warn!(team = %team.name, date = %window.span, "could not keep the totals for later baselines: {e}");
        }
    }

    /// Keeps a fetched report for the digests that will compare with it.
    async fn remember(&self, team: &Team, window: &Window, report: &DayReport) {
        let Some(history) = self.history.as_ref().filter(|_| self.ledger.is_some()) else {
            return;
        };
        if self.history_days == 0 {
            return;
        }
        let (visitors, chats) = insight::headline(report);
        self.remember_totals(team, window, Totals { visitors, chats }, false)
            .await;
        let json = serde_json::to_string(report).expect("a report serializes");
        if let Err(e) = history
            .remember(team.account_id.as_str(), window, json)
            .await
        {
            tracing::warn!(team = %team.name, date = %window.span, "could not keep the report for later comparisons: {e}");
        }
    }

    /// Drops reports older than `history_days` and digests older than `keep_days`, at most
    /// once an hour, beside the run rather than holding up this team's digest.
    async fn prune(&self) {
        let Some(ledger) = self.ledger.clone() else {
            return;
        };
        let now = self.clock.now();
        {
            let mut pruned = self.pruned.lock().expect("prune time");
            if !hourly_due(*pruned, now) {
                return;
            }
            *pruned = Some(now);
        }
        let history = self.history.clone();
        let keep = chrono::Days::new(u64::from(self.history_days));
        // history_days = 0 keeps nothing: a cutoff past today in every zone drops every window.
        let reports_cutoff = match self.history_days {
            0 => now.date_naive() + chrono::Days::new(2),
            _ => now.date_naive() - keep,
        };
        let keep_days = self.keep_days;
        tokio::spawn(async move {
            if let Some(history) = history {
                match history.forget_before(reports_cutoff).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::debug!("dropped {n} kept reports older than {reports_cutoff}")
                    }
                    Err(e) => tracing::warn!("could not drop old kept reports: {e}"),
                }
            }
            let Some((keep_days, catch_up)) = keep_days else {
                return;
            };
            match ledger.forget_all_but(keep_days, catch_up).await {
                Ok((0, _)) => {}
                Ok((n, upto)) => tracing::info!(
                    "forgot {n} ledger rows of digests that ended before {upto} ([state] keep_days = {keep_days})"
                ),
                Err(e) => tracing::warn!(
                    "could not forget the ledger's digests older than [state] keep_days = {keep_days}: {e}"
                ),
            }
        });
    }

    fn next_attempt(&self) -> DateTime<Utc> {
        self.clock.now() + chrono::Duration::from_std(self.retry_every).unwrap_or_default()
    }

    /// The next round after one that ended on a 5xx: `retry_every`, then twice that, and so
    /// on (a round spends up to three posts), within what is left of the team's catch-up
    /// window, so the bounded posts are spread over a long outage instead of spent at once.
    fn after_server_errors(&self, team: &Team, span: Span, posts: u32) -> DateTime<Utc> {
        let every = chrono::Duration::from_std(self.retry_every).unwrap_or_default();
        spaced_retry(self.clock.now(), every, posts, window_closes(team, span))
    }

    /// POSTs under a lease: retries within the budget what did not arrive, resends an
    /// unanswered POST only while the ledger allows, records each answer as it comes and the
    /// round's end once.
    async fn send(&self, team: &Team, hook: &Webhook, body: &Value, lease: Lease) -> HookStatus {
        let key = lease.key();
        let (span, webhook) = (key.span.to_string(), &key.webhook);
        let webhook_id = key.webhook_id();
        let mut backoff = self.retry.start();
        let mut server_errors = 0;
        let finish = loop {
            match lease.before_post().await {
                Ok(Permit::Go) => {}
                Ok(Permit::Exhausted) => break Finish::Exhausted,
                Ok(Permit::Lost) => return HookStatus::Superseded,
                Err(e) => {
                    failed_before(Some(lease), &e.to_string(), self.next_attempt()).await;
                    return HookStatus::LedgerFailed(e);
                }
            }
            tracing::debug!(team = %key.team, date = %span, %webhook, host = %hook.url, "posting");
            let posted = self.deliverer.post(hook, body, &webhook_id).await;
            let wait = match &posted {
                Posted::NotDelivered { after, .. } => backoff.next(*after),
                // A blip is retried at once, but a gateway may forward each: twice a round.
                Posted::ServerError { after, .. } if server_errors < QUICK_5XX_RETRIES => {
                    server_errors += 1;
                    backoff.next(*after)
                }
                Posted::Unknown(_) => backoff.next(None),
                Posted::Delivered | Posted::Refused { .. } | Posted::ServerError { .. } => None,
            };
            let Some(wait) = wait else {
                let retry_at = match posted {
                    Posted::ServerError { .. } => {
                        self.after_server_errors(team, key.span, lease.posts())
                    }
                    _ => self.next_attempt(),
                };
                break Finish::Posted(posted, retry_at);
            };
            // The round's last answer is logged once, as its outcome; the ones before here.
            tracing::debug!(team = %key.team, date = %span, %webhook, "POST attempt failed: {posted}");
            // One that failed to record leaves the POST counted as unanswered: the cautious
            // side of the bound.
            if let Ok(false) = lease.answered(&posted).await {
                return HookStatus::Superseded;
            }
            tokio::time::sleep(wait).await;
        };
        let delivered = matches!(finish, Finish::Posted(Posted::Delivered, _));
        match lease.finish(finish).await {
            Ok(Some(entry)) => finished(entry),
            Ok(None) => HookStatus::Superseded,
            Err(e) if delivered => HookStatus::NotRecorded(e.to_string()),
            Err(e) => HookStatus::LedgerFailed(e),
        }
    }
}

/// Whether an hourly chore last done `last` is due at `now`: also when the clock has stepped
/// back past it, rather than years from now when it catches up.
fn hourly_due(last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last.is_none_or(|at| now < at || now - at >= PRUNE_EVERY)
}

/// What a read of the data saw, short: two reads that agree have the same.
fn fingerprint(digest: &Digest) -> String {
    let figures = (
        &digest.totals,
        &digest.hours,
        &digest.countries,
        &digest.pages,
        &digest.referrers,
    );
    let json = serde_json::to_vec(&figures).expect("the figures serialize");
    crate::config::sha256_hex(&json)[..16].to_owned()
}

/// [`Pipeline::after_server_errors`], pure: `every` doubled for each round the `posts` spent
/// so far, but at most half of what is left before the window `closes`, and at least `every`.
fn spaced_retry(
    now: DateTime<Utc>,
    every: chrono::Duration,
    posts: u32,
    closes: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let rounds = posts.div_ceil(QUICK_5XX_RETRIES + 1).clamp(1, 16);
    let spaced = every * 2i32.pow(rounds - 1);
    let left = closes.map_or(spaced, |closes| (closes - now) / 2);
    now + spaced.min(left).max(every)
}

/// Ends a lease on a failure before anything was posted. A finish that fails only leaves the
/// lease to expire: nothing went out.
async fn failed_before(lease: Option<Lease>, error: &str, retry_at: DateTime<Utc>) {
    if let Some(lease) = lease {
        let error = error.to_owned();
        let _ = lease.finish(Finish::FailedBefore { error, retry_at }).await;
    }
}

/// What the round came to, as the ledger recorded it.
fn finished(entry: Entry) -> HookStatus {
    let error = entry.last_error.clone().unwrap_or_default();
    match entry.state {
        State::Delivered => HookStatus::Delivered,
        State::Pending => HookStatus::RetryAt {
            error,
            at: entry.next_attempt,
        },
        _ => settled(entry),
    }
}

/// What a settled entry means to the one who asked. A lease settles every state but
/// pending (and, for an admin, expired).
fn settled(entry: Entry) -> HookStatus {
    let error = entry.last_error.clone().unwrap_or_default();
    match entry.state {
        State::Expired => HookStatus::Expired(entry.last_error),
        State::Missed => HookStatus::Missed(None),
        State::Refused => HookStatus::Refused(error),
        State::Unknown => HookStatus::Unknown(error),
        State::TooManyAttempts => HookStatus::TooManyAttempts(error),
        State::Skipped => HookStatus::Skipped,
        _ => HookStatus::AlreadyDelivered(entry.delivered_at),
    }
}

fn report(hook: &Webhook, status: HookStatus) -> HookReport {
    HookReport {
        webhook: hook.name.clone(),
        host: hook.url.to_string(),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_after_a_5xx_spread_the_bounded_posts_over_a_long_outage() {
        let start: DateTime<Utc> = "2026-11-25T03:30:00Z".parse().unwrap();
        let every = chrono::Duration::minutes(10);
        let closes = Some(start + chrono::Duration::hours(12));
        // A receiver answering 503 for an hour: three posts a round, rounds 10, 20, 40 min
        // apart; the fourth round, 70 min in, finds it answering again with a post to spare.
        let (mut now, mut posts, mut rounds) = (start, 0, vec![]);
        while now < start + chrono::Duration::hours(1) {
            rounds.push((now - start).num_minutes());
            posts += 3;
            now = spaced_retry(now, every, posts, closes);
        }
        assert_eq!(rounds, [0, 10, 30]);
        assert_eq!(((now - start).num_minutes(), posts), (70, 9));
        assert!(posts < crate::ledger::MAX_POSTS);
        // Near the window's end, half of what is left, but never sooner than retry_every.
        let soon = Some(start + chrono::Duration::minutes(30));
        let at = spaced_retry(start, every, 9, soon);
        assert_eq!(at - start, chrono::Duration::minutes(15));
        let at = spaced_retry(start, every, 9, Some(start + chrono::Duration::minutes(4)));
        assert_eq!(at - start, every);
    }

    #[test]
    fn an_hourly_chore_is_due_after_an_hour_or_a_clock_stepped_back() {
        let at: DateTime<Utc> = "2026-11-25T03:30:00Z".parse().unwrap();
        let minutes = |m| at + chrono::Duration::minutes(m);
        assert!(hourly_due(None, at));
        assert!(!hourly_due(Some(at), minutes(59)));
        assert!(hourly_due(Some(at), minutes(60)));
        assert!(hourly_due(Some(at), minutes(-1)), "the clock stepped back");
    }

    #[test]
    fn outcomes_use_the_documented_names() {
        assert_eq!(HookStatus::Delivered.outcome(), Some("delivered"));
        assert_eq!(HookStatus::Refused("x".into()).outcome(), Some("refused"));
        assert_eq!(HookStatus::Unknown("x".into()).outcome(), Some("unknown"));
        assert_eq!(HookStatus::Busy(Utc::now()).outcome(), Some("skipped"));
        let retry = HookStatus::RetryAt {
            error: "x".into(),
            at: Some(Utc::now()),
        };
        assert_eq!(retry.outcome(), Some("failed"));
        assert_eq!(HookStatus::Expired(None).outcome(), None);
    }
}
