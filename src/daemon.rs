//! The daemon (`run`): one level-triggered reconciler.
//!
//! At start, after a reload, whenever it wakes (on time, late, or after the clock stepped)
//! and when a delivery ends, it computes what should exist from the config and the clock,
//! reads what does from the ledger, and acts on the difference:
//!
//! 1. Each team's firings in `(now − catch_up, now]`, found by stepping forward with croner
//!    in the team's zone, become the spans they cover ([`Schedule::coverage_of`]).
//! 2. Each (span, webhook) the ledger doesn't hold as settled, whose next attempt is due and
//!    whose lease nobody holds, is delivered ([`plan`], a pure function).
//! 3. It sleeps until the next thing that can change the answer: a team's next new span, a
//!    next attempt, a lease's expiry.
//!
//! Level-triggered per team: the first pass after start or a reload looks at every team; after
//! that a pass looks only at the teams whose next look has come (their firing, a retry, a
//! lease's expiry, their window closing, an hourly resync while a digest is pending), kept in
//! a heap, and those whose delivery here just ended, and reads only their rows. So a pass
//! when nothing is due reads nothing, and one at 09:00 costs what that minute's teams do.
//!
//! So missed firings, retries, late wake-ups and restarts are one code path, and the ledger,
//! not the timer, is the record of what ran. (tokio-cron-scheduler's cron jobs capture the
//! zone's offset when created, its issue #107; we keep croner, its cron engine.)

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use crate::alerts::{Alerts, GiveUp, Reason, give_ups};
pub use crate::clock::{Clock, WallClock};
use crate::config::{self, Config, Team};
use crate::deliver::Deliverer;
use crate::ledger::owed::{
    Missed, describe_next, live_spans, owed, unseen, unseen_since, window_closes, window_start,
};
use crate::ledger::{Entries, Key, Ledger, LedgerError, Requester, State};
use crate::pipeline::{HookReport, HookStatus, Pipeline, SpanReport};
use crate::schedule::Span;

/// How long in-flight deliveries may finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often a digest another process holds is looked at again.
const HELD_RECHECK: Duration = Duration::from_secs(15);
/// Missed digests of one team reported one by one; beyond, in one line and one alert.
const MISSED_ONE_BY_ONE: usize = 100;
/// Digests found held by another process in one pass said one by one; beyond, in one line.
const HELD_ONE_BY_ONE: usize = 100;

/// A team's span and the webhooks to deliver it to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub team: String,
    pub span: Span,
    pub webhooks: Vec<String>,
}

/// What the reconciler decided.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub due: Vec<Due>,
    /// Pending digests of configured webhooks whose catch-up window has closed: given up.
    pub expired: Vec<Key>,
    /// Digests a lease keeps off, and until when: this process's own deliveries or another's.
    pub held: Vec<(Key, DateTime<Utc>)>,
    /// Each team's part of it, so the daemon looks again at a team only when it may change.
    pub looks: HashMap<String, Look>,
}

impl Plan {
    /// When to look again, if nothing else wakes the daemon first.
    pub fn wake(&self) -> Option<DateTime<Utc>> {
        self.looks.values().filter_map(|look| look.at).min()
    }

    /// Digests owed and not settled (delivered, skipped, refused or unknown), including those
    /// in delivery and those waiting for a retry: `acquire_digest_pending_deliveries`.
    pub fn pending(&self) -> usize {
        self.looks.values().map(|look| look.pending).sum()
    }
}

/// When one team may next need a look, and how many of its digests are pending now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    pub at: Option<DateTime<Utc>>,
    pub pending: usize,
}

impl Look {
    fn no_later_than(&mut self, at: DateTime<Utc>) {
        self.at = Some(self.at.map_or(at, |was| was.min(at)));
    }
}

/// However quiet, a team with a digest pending is looked at this often, as level-triggered
/// controllers resync: another replica's progress shows up within it.
const RESYNC: chrono::Duration = chrono::Duration::hours(1);

/// The decision, pure in (teams, now, ledger state). `retry_now` ignores next-attempt times,
/// for the first look after a reload that may have mended a webhook or a key. `teams` may be
/// a few of the config's: the plan is then theirs.
pub fn plan<T: Borrow<Team>>(
    teams: &[T],
    now: DateTime<Utc>,
    entries: &Entries,
    retry_now: bool,
) -> Plan {
    let mut plan = Plan::default();
    let mut looks = HashMap::with_capacity(teams.len());
    for team in teams {
        let team = team.borrow();
        // Every firing, not just the next new date's: a later firing can bring a span
        // whose window had closed back into it.
        let mut look = Look::default();
        if let Some(next) = team.schedule.next_after(team.zone, now) {
            look.no_later_than(next);
        }
        looks.insert(team.name.as_str(), look);
    }
    let owed = owed(teams, now, entries);
    let mut live = HashSet::new();
    for digest in &owed {
        live.insert((digest.team.name.as_str(), digest.span));
        if digest.settled() {
            continue;
        }
        let look = looks
            .get_mut(digest.team.name.as_str())
            .expect("a team of the plan");
        look.pending += 1;
        look.no_later_than(now + RESYNC);
        if let Some(closes) = window_closes(digest.team, digest.span).filter(|at| *at > now) {
            look.no_later_than(closes);
        }
        if let Some(entry) = digest.entry {
            if let Some(until) = entry.leased_until {
                let key = Key::new(&digest.team.name, digest.span, &digest.hook.name);
                plan.held.push((key, until));
                // The holder may finish (or fail) long before its lease would expire.
                let soon = now + chrono::Duration::from_std(HELD_RECHECK).unwrap_or_default();
                look.no_later_than(until.min(soon));
                continue;
            }
            if let Some(at) = entry.next_attempt.filter(|at| *at > now && !retry_now) {
                look.no_later_than(at);
                continue;
            }
        }
        match plan.due.last_mut() {
            Some(due) if due.team == digest.team.name && due.span == digest.span => {
                due.webhooks.push(digest.hook.name.clone());
            }
            _ => plan.due.push(Due {
                team: digest.team.name.clone(),
                span: digest.span,
                webhooks: vec![digest.hook.name.clone()],
            }),
        }
    }
    let by_name: HashMap<&str, &Team> = (teams.iter())
        .map(|t| (t.borrow().name.as_str(), t.borrow()))
        .collect();
    for ((team_name, span), hooks) in entries {
        let Some(team) = by_name.get(team_name.as_str()) else {
            continue;
        };
        if live.contains(&(team_name.as_str(), *span)) {
            continue;
        }
        for (webhook, entry) in hooks {
            let configured = team.webhooks.iter().any(|h| &h.name == webhook);
            if configured && entry.state == State::Pending {
                match entry.leased_until {
                    None => plan.expired.push(Key::new(team_name, *span, webhook)),
                    // Given up once its holder lets go.
                    Some(until) => {
                        let look = looks
                            .get_mut(team_name.as_str())
                            .expect("a team of the plan");
                        look.no_later_than(until);
                    }
                }
            }
        }
    }
    plan.expired
        .sort_by(|a, b| (&a.team, a.span, &a.webhook).cmp(&(&b.team, b.span, &b.webhook)));
    plan.looks = (looks.into_iter())
        .map(|(name, look)| (name.to_owned(), look))
        .collect();
    plan
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when
/// the future is first polled, so a signal during start-up stops the daemon cleanly.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        }
    })
}

/// One message per SIGHUP, from the moment this is called: the reload's source, for the log.
pub fn reload_signal() -> std::io::Result<mpsc::Receiver<&'static str>> {
    let mut hangups = signal(SignalKind::hangup())?;
    let (reload_tx, reloads) = mpsc::channel(4);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if reload_tx.send("SIGHUP").await.is_err() {
                return;
            }
        }
    });
    Ok(reloads)
}

/// Waits until `wake`, feeding systemd's watchdog `every` so often meanwhile: only while the
/// loop waits here, so a loop stuck anywhere else starves it.
async fn idle_until(clock: &Arc<dyn Clock>, wake: DateTime<Utc>, every: Option<Duration>) {
    let Some(every) = every else {
        return clock.sleep_until(wake).await;
    };
    let sleep = clock.sleep_until(wake);
    tokio::pin!(sleep);
    let mut beat = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = &mut sleep => return,
            _ = beat.tick() => crate::server::feed_watchdog(),
        }
    }
}

/// Waits for the ledger's check of every page (see [`Ledger::checked`]) before the daemon
/// does anything with it, feeding the watchdog meanwhile (`/-/ready` says why deliveries
/// wait). None if asked to stop first.
async fn checked(
    ledger: &Ledger,
    watchdog: Option<Duration>,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<Result<(), LedgerError>> {
    let check = ledger.checked();
    tokio::pin!(check);
    if let Some(done) = futures::FutureExt::now_or_never(&mut check) {
        return Some(done);
    }
    tracing::info!(
        "delivery ledger {}: checking every page before anything is sent from it",
        ledger.location()
    );
    let started = std::time::Instant::now();
    let beat = async {
        let Some(every) = watchdog else {
            return std::future::pending().await;
        };
        let mut beat = tokio::time::interval(every);
        loop {
            beat.tick().await;
            crate::server::feed_watchdog();
        }
    };
    let done = tokio::select! {
        done = &mut check => Some(done),
        () = &mut shutdown => None,
        () = beat => None,
    };
    if let Some(Ok(())) = done {
        tracing::info!(
            "delivery ledger {}: every page checked in {:.2} s; deliveries may start",
            ledger.location(),
            started.elapsed().as_secs_f64()
        );
    }
    done
}

/// `run`: the daemon on the wall clock until `shutdown` resolves, reloading on `reloads`.
pub async fn run(
    path: PathBuf,
    config: Config,
    reloads: mpsc::Receiver<&'static str>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve(&path, config, WallClock::new(), reloads, shutdown).await
}

/// The config in force and what was built from it.
struct Current {
    /// Shared with the status page, which shows what this config schedules.
    config: Arc<Config>,
    ledger: Ledger,
    pipeline: Pipeline,
    /// Teams in delivery at once. A job leases its digest only once it has a slot, so
    /// replicas sharing a database take what they can work on now and leave the rest to the
    /// others, instead of one replica leasing every team due at 09:00.
    slots: Arc<tokio::sync::Semaphore>,
    alerts: Alerts,
    /// Alerts being sent, waited for at shutdown: the ledger already records them as sent.
    alerting: TaskTracker,
    /// The teams' places in `config.teams`, in the order of their names: a map would keep a
    /// second copy of every name.
    by_name: Vec<u32>,
}

impl Current {
    async fn open(
        config: Config,
        clock: &Arc<dyn Clock>,
        before: Option<&Current>,
    ) -> Result<Current, String> {
        let ledger = match before.filter(|b| b.ledger.location().is_same(&config.state)) {
            Some(before) => before.ledger.clone(),
            None => {
                let ledger = (Ledger::open(&config.state, clock.clone()).await)
                    .map_err(|e| e.to_string())?;
                // A reload to a damaged ledger is refused, keeping the one in use, and so is one
                // whose check holds the loop longer than a call may; at start-up the daemon
                // waits for the check serving its endpoint and its watchdog (`serve`).
                if before.is_some() {
                    let check = async { ledger.checked().await.map_err(|e| e.to_string()) };
                    crate::db::answered_in_time(check).await?;
                }
                ledger
            }
        };
        let pipeline =
            Pipeline::new(&config, Some(ledger.clone()), clock.clone()).forgetting(&config);
        // Jobs started before a reload keep their slots in the same semaphore, so a reload
        // never lets twice the concurrency run at once.
        let slots = match before.filter(|b| b.config.concurrency == config.concurrency) {
            Some(before) => before.slots.clone(),
            None => Arc::new(tokio::sync::Semaphore::new(config.concurrency * 2)),
        };
        let alerting = before.map_or_else(TaskTracker::new, |b| b.alerting.clone());
        let config = Arc::new(config);
        // Before the endpoint says ready: the first scrape has every series.
        crate::telemetry::configured(&config.teams);
        if let Some(before) = before {
            let now: HashSet<&str> = config.teams.iter().map(|t| t.name.as_str()).collect();
            let gone = (before.config.teams.iter()).filter(|t| !now.contains(t.name.as_str()));
            crate::telemetry::unscheduled(gone);
        }
        crate::telemetry::next_digests(&config.teams, clock.now());
        match ledger.last_deliveries().await {
            // A team or webhook since removed would only look as if it had gone quiet.
            Ok(last) => {
                let configured: HashSet<(&str, &str)> = (config.teams.iter())
                    .flat_map(|t| {
                        t.webhooks
                            .iter()
                            .map(|h| (t.name.as_str(), h.name.as_str()))
                    })
                    .collect();
                crate::telemetry::delivered_before(
                    last.into_iter().filter(|(team, hook, _)| {
                        configured.contains(&(team.as_str(), hook.as_str()))
                    }),
                )
            }
            Err(e) => tracing::warn!("could not read the last deliveries for the metrics: {e}"),
        }
        crate::server::in_use(&ledger, &config);
        let alerts = Alerts::new(
            config.alerts.clone(),
            ledger.clone(),
            Deliverer::new(config.delivery_timeout),
        );
        let mut by_name: Vec<u32> = (0..config.teams.len() as u32).collect();
        by_name.sort_unstable_by(|&a, &b| {
            (config.teams[a as usize].name).cmp(&config.teams[b as usize].name)
        });
        Ok(Current {
            config,
            ledger,
            pipeline,
            slots,
            alerts,
            alerting,
            by_name,
        })
    }

    /// A delivery round or a give-up is over: its log lines, and an alert for each give-up.
    fn finished(&self, report: &SpanReport) {
        report.log(true);
        self.alert(give_ups(report));
    }

    /// Alerts sent beside the reconciler, so a slow alerts webhook never holds it up.
    fn alert(&self, give_ups: Vec<GiveUp>) {
        if !give_ups.is_empty() {
            let alerts = self.alerts.clone();
            self.alerting
                .spawn(async move { alerts.raise(give_ups).await });
        }
    }

    /// A configured team, by name.
    fn team(&self, name: &str) -> Option<&Team> {
        self.index_of(name).map(|i| &self.config.teams[i])
    }

    /// A team's place in `config.teams`.
    fn index_of(&self, name: &str) -> Option<usize> {
        let teams = &self.config.teams;
        (self.by_name)
            .binary_search_by(|&i| teams[i as usize].name.as_str().cmp(name))
            .ok()
            .map(|at| self.by_name[at] as usize)
    }

    /// A configured webhook's scheme and host, for a report the pipeline didn't make.
    fn host(&self, key: &Key) -> String {
        (self.team(&key.team))
            .and_then(|t| t.webhooks.iter().find(|h| h.name == key.webhook))
            .map_or_else(String::new, |h| h.url.to_string())
    }

    /// Records each missed digest, once across processes, and reports what this process
    /// recorded: one line and one alert per digest, or per team beyond [`MISSED_ONE_BY_ONE`].
    async fn record_missed(
        &self,
        missed: Vec<Missed>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut recorded: BTreeMap<String, Vec<Missed>> = BTreeMap::new();
        let mut failed = None;
        for missed in missed {
            match self.ledger.miss(&missed.key).await {
                Ok(true) => recorded
                    .entry(missed.key.team.clone())
                    .or_default()
                    .push(missed),
                Ok(false) => {}
                // What was recorded is still reported: the next pass finds it settled.
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        for (team, missed) in recorded {
            let webhooks = missed.iter().map(|m| (m.key.webhook.as_str(), "missed"));
            crate::telemetry::delivery_round(&team, webhooks, now);
            let spans: BTreeSet<(Span, DateTime<Utc>)> =
                missed.iter().map(|m| (m.key.span, m.firing)).collect();
            if spans.len() <= MISSED_ONE_BY_ONE {
                for Missed { key, firing } in missed {
                    let host = self.host(&key);
                    let status = HookStatus::Missed(Some(firing));
                    let (webhook, span, team) = (key.webhook, key.span, key.team);
                    let hooks = vec![HookReport {
                        webhook,
                        host,
                        status,
                    }];
                    self.finished(&SpanReport {
                        team,
                        span,
                        outcome: Ok(hooks),
                    });
                }
                continue;
            }
            let (first, last) = (spans.first().expect("many"), spans.last().expect("many"));
            let detail = format!(
                "{} digests, due from {} to {}",
                spans.len(),
                first.1.format("%Y-%m-%d %H:%M:%S UTC"),
                last.1.format("%Y-%m-%d %H:%M:%S UTC")
            );
            let all = Span {
                first: first.0.first,
                last: last.0.last,
            };
            tracing::error!(%team, date = %all, "giving up: {team} {all}: MISSED {detail}: their catch_up windows closed with nothing recorded of them (no acquire-digest process was running, or none could record them); `status` lists them, `once --date` sends one");
            let webhooks: BTreeSet<&str> = missed.iter().map(|m| m.key.webhook.as_str()).collect();
            self.alert(
                webhooks
                    .into_iter()
                    .map(|webhook| GiveUp {
                        key: Key::new(&team, all, webhook),
                        reason: Reason::Missed,
                        detail: detail.clone(),
                    })
                    .collect(),
            );
        }
        failed.map_or(Ok(()), Err)
    }

    /// A reload: reading the config and its templates is file I/O, done off the async
    /// workers.
    async fn reload(
        path: &Path,
        clock: &Arc<dyn Clock>,
        before: &Current,
    ) -> Result<Current, String> {
        let path = path.to_owned();
        let config = tokio::task::spawn_blocking(move || {
            config::load(&path).and_then(|config| crate::check::templates(&path, config))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        Current::open(config, clock, Some(before)).await
    }
}

/// The ledger failing: a pass that could not read it (or record a give-up), or a delivery
/// that could not take or record a lease though the ledger reads (a failover to a read-only
/// node, a revoked role, a full disk). Deliveries wait, 1 s doubling up to `retry_every`,
/// then one digest tries it before the rest follow: a few lines a minute, not a spin.
struct Outage {
    /// Only a delivery that writes ends an outage its deliveries began; a pass, one of its own.
    writes: bool,
    wait: Duration,
    /// When the next try may start.
    retry_at: DateTime<Utc>,
    /// The one digest let through to try, while it runs.
    trying: Option<tokio::task::Id>,
}

impl Outage {
    /// A failure: of a try (`tried`: a pass, or the digest let through), which doubles the
    /// wait, or of a delivery begun before the outage, which only ends. The first of an
    /// outage is its one ERROR line.
    fn failed(
        outage: &mut Option<Outage>,
        writes: bool,
        error: &str,
        now: DateTime<Utc>,
        cap: Duration,
        tried: bool,
    ) {
        let after = |wait| now + chrono::Duration::from_std(wait).unwrap_or_default();
        // `/-/ready` says the latest cause: a failover's first error is often the old
        // connection's end, its next the read-only node's refusal.
        crate::server::ledger_writes_failing(Some(error.to_owned()));
        let Some(o) = outage else {
            tracing::error!("deliveries stopped: {error}; trying again in 1 s, then less often");
            let wait = Duration::from_secs(1);
            let (retry_at, trying) = (after(wait), None);
            *outage = Some(Outage {
                writes,
                wait,
                retry_at,
                trying,
            });
            return;
        };
        o.writes |= writes;
        if tried {
            o.wait = (o.wait * 2).min(cap.max(Duration::from_secs(1)));
            (o.retry_at, o.trying) = (after(o.wait), None);
            tracing::debug!(
                "the delivery ledger still fails ({error}); trying again in {:?}",
                o.wait
            );
        }
    }

    /// The ledger did what the outage kept failing at.
    fn ended(outage: &mut Option<Outage>, by_a_write: bool) {
        if outage.as_ref().is_some_and(|o| by_a_write || !o.writes) {
            *outage = None;
            crate::server::ledger_writes_failing(None);
            tracing::info!("the delivery ledger is usable again: deliveries resume");
        }
    }

    /// The digest let through ended without telling whether writes work: another may try
    /// after the same wait.
    fn undecided(outage: &mut Option<Outage>, job: tokio::task::Id, now: DateTime<Utc>) {
        if let Some(o) = outage.as_mut().filter(|o| o.trying == Some(job)) {
            o.retry_at = now + chrono::Duration::from_std(o.wait).unwrap_or_default();
            o.trying = None;
        }
    }
}

/// Whether a delivery round could write the ledger: Some(Err) with the error when a lease or
/// a record failed, None when it says nothing either way (the data could not be fetched).
fn ledger_writes(report: &SpanReport) -> Option<Result<(), String>> {
    let hooks = report
        .outcome
        .as_ref()
        .ok()
        .filter(|hooks| !hooks.is_empty())?;
    let failed = hooks.iter().find_map(|hook| match &hook.status {
        HookStatus::LedgerFailed(e) => Some(e.to_string()),
        HookStatus::NotRecorded(e) => Some(e.clone()),
        _ => None,
    });
    Some(failed.map_or(Ok(()), Err))
}

/// The daemon with its clock and its reload and shutdown triggers passed in, for tests.
pub async fn serve(
    path: &Path,
    config: Config,
    clock: Arc<dyn Clock>,
    mut reloads: mpsc::Receiver<&'static str>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut current = Current::open(config, &clock, None)
        .await
        .map_err(anyhow::Error::msg)?;
    let now = clock.now();
    for team in &current.config.teams {
        tracing::info!(team = %team.name, schedule = team.schedule.as_str(), "next digest {}", describe_next(team, now));
    }
    crate::server::notify_ready(current.config.teams.len());
    let watchdog = crate::server::watchdog_every();
    tokio::pin!(shutdown);
    match checked(&current.ledger, watchdog, shutdown.as_mut()).await {
        Some(Ok(())) => {}
        // As a damaged ledger found while opening stops the daemon: nothing has been written
        // to it, so nothing was leased or sent.
        Some(Err(damaged)) => {
            crate::server::notify_stopping();
            return Err(damaged.into());
        }
        None => {
            crate::server::notify_stopping();
            return Ok(());
        }
    }
    let alerts = current.alerts.clone();
    (current.alerting).spawn(async move { alerts.send_unsent().await });
    let mut jobs: JoinSet<SpanReport> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, (String, Span)> = HashMap::new();
    // The same, by what they deliver: kept beside it, not rebuilt each pass, as 100,000
    // teams due at once are 100,000 jobs.
    let mut busy: HashSet<(String, Span)> = HashSet::new();
    let mut outage: Option<Outage> = None;
    let mut retry_now = false;
    let mut agenda = Agenda::new(&current.config.teams);
    // Digests held by another process, each said once while it holds them.
    let mut waiting: HashSet<Key> = HashSet::new();

    loop {
        let now = clock.now();
        // A ledger that failed a pass is not asked again before its wait is over.
        let resting = (outage.as_ref())
            .filter(|o| !o.writes && o.retry_at > now)
            .map(|o| o.retry_at);
        let passed = match resting {
            Some(at) => Err(at),
            None => {
                let retry = std::mem::take(&mut retry_now);
                let first = agenda.marks.is_none();
                let passed = reconcile(&current, now, &busy, retry, &mut agenda).await;
                if first && agenda.marks.is_some() {
                    // Start-up's peak (the config's parse, the first pass over every team)
                    // is over: what it freed would otherwise stay resident while idle.
                    crate::release_free_memory();
                }
                Ok(passed)
            }
        };
        let wake = match passed {
            Err(resting) => resting,
            Ok(Ok((plan, mut start))) => {
                Outage::ended(&mut outage, false);
                let held: Vec<&(Key, DateTime<Utc>)> = (plan.held.iter())
                    .filter(|(key, _)| !busy.contains(&(key.team.clone(), key.span)))
                    .collect();
                let still: HashSet<&Key> = held.iter().map(|(key, _)| key).collect();
                // Only the teams this pass looked at say whether they are still held.
                waiting.retain(|key| !plan.looks.contains_key(&key.team) || still.contains(key));
                let newly: Vec<&(Key, DateTime<Utc>)> = (held.into_iter())
                    .filter(|(key, _)| waiting.insert(key.clone()))
                    .collect();
                say_held(&newly);
                // Replicas sharing a database each start what is due in their own order, so
                // their leases spread the work instead of all racing for the same team first.
                fastrand::shuffle(&mut start);
                // While writes fail, one digest at a time tries, once its wait is over.
                let trying = outage
                    .as_ref()
                    .map(|o| o.trying.is_none() && o.retry_at <= now);
                if let Some(may) = trying {
                    // The rest are looked at again once the next may try.
                    for due in start.drain(usize::from(may).min(start.len())..) {
                        agenda.touch(&current, &due.team);
                    }
                }
                // Shared with the read ahead, if any, rather than copied for it.
                let start: Arc<[Due]> = start.into();
                let ahead = ReadAhead::of(&current, &start);
                for (place, due) in start.iter().enumerate() {
                    let Some(team) = current.team(&due.team) else {
                        continue;
                    };
                    let mut team = team.clone();
                    team.webhooks.retain(|h| due.webhooks.contains(&h.name));
                    let (pipeline, slots) = (current.pipeline.clone(), current.slots.clone());
                    let (span, ahead) = (due.span, ahead.clone());
                    let job = jobs.spawn(async move {
                        let _slot = slots.acquire_owned().await;
                        if let Some(ahead) = ahead {
                            ahead.before(place).await;
                        }
                        // Made only once it has a slot: a delivery's future is kilobytes,
                        // and 100,000 teams due at once would hold a gigabyte of them.
                        Box::pin(pipeline.run(&team, span, Requester::Daemon)).await
                    });
                    if let Some(o) = outage.as_mut() {
                        o.trying = Some(job.id());
                    }
                    busy.insert((due.team.clone(), due.span));
                    running.insert(job.id(), (due.team.clone(), due.span));
                }
                // Woken by the agenda's next look, at the latest in an hour to re-read the
                // clock; while writes fail, also when the next digest may try.
                let next_try = (outage.as_ref())
                    .filter(|o| o.trying.is_none() && o.retry_at > now)
                    .map(|o| o.retry_at);
                (agenda.next().into_iter().chain(next_try)).fold(now + RESYNC, DateTime::min)
            }
            Ok(Err(e)) => {
                let cap = current.config.retry_every;
                Outage::failed(&mut outage, false, &e.to_string(), now, cap, true);
                outage.as_ref().map_or(now, |o| o.retry_at)
            }
        };

        tokio::select! {
            () = &mut shutdown => break,
            Some(source) = reloads.recv() => {
                match Current::reload(path, &clock, &current).await {
                    Ok(new) => {
                        crate::telemetry::config_loaded(Ok(()));
                        let now = clock.now();
                        tracing::info!(teams = new.config.teams.len(), "{source}: config reloaded; failed digests are tried again now");
                        for team in &new.config.teams {
                            tracing::info!(team = %team.name, "next digest {}", describe_next(team, now));
                        }
                        current = new;
                        agenda = Agenda::new(&current.config.teams);
                        retry_now = true;
                    }
                    Err(errors) => {
                        crate::telemetry::config_loaded(Err(&errors));
                        tracing::error!("{source}: new config rejected, still running the old one: {}", errors.trim_end().replace('\n', "; "));
                    }
                }
            }
            Some(first) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                // And whatever else ended meanwhile: one pass looks at them all.
                let mut next = Some(first);
                while let Some(done) = next {
                    match done {
                        Ok((id, mut report)) => {
                            if let Some(delivered) = running.remove(&id) {
                                agenda.touch(&current, &delivered.0);
                                busy.remove(&delivered);
                            }
                            match ledger_writes(&report) {
                                Some(Err(e)) => {
                                    // The ledger's failure is said once for the outage, not once
                                    // per digest; the rest of the round as always.
                                    if let (Some(_), Ok(hooks)) = (&outage, &mut report.outcome) {
                                        hooks.retain(|h| !matches!(h.status, HookStatus::LedgerFailed(_)));
                                    }
                                    current.finished(&report);
                                    let tried = outage.as_ref().is_some_and(|o| o.trying == Some(id));
                                    let cap = current.config.retry_every;
                                    Outage::failed(&mut outage, true, &e, clock.now(), cap, tried);
                                }
                                Some(Ok(())) => {
                                    Outage::ended(&mut outage, true);
                                    current.finished(&report);
                                }
                                None => {
                                    Outage::undecided(&mut outage, id, clock.now());
                                    current.finished(&report);
                                }
                            }
                        }
                        Err(e) => {
                            Outage::undecided(&mut outage, e.id(), clock.now());
                            // Its leases stay until they expire, which holds the span off for that
                            // long rather than panicking in a loop.
                            if let Some((team, span)) = running.remove(&e.id()) {
                                agenda.touch(&current, &team);
                                busy.remove(&(team.clone(), span));
                                tracing::error!(team = %team, date = %span, "a bug stopped this digest's delivery ({e}); it is tried again once its leases expire, within {:?}", crate::ledger::lease_ttl());
                            }
                        }
                    }
                    next = jobs.try_join_next_with_id();
                }
            }
            () = idle_until(&clock, wake, watchdog) => {}
        }
    }

    crate::server::notify_stopping();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(done) = jobs.join_next().await {
            if let Ok(report) = done {
                current.finished(&report);
            }
        }
        current.alerting.close();
        current.alerting.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} deliveries and {} alerts still running after {SHUTDOWN_GRACE:?}; stopping them (their leases expire within {:?}, and the next start or another replica finishes them)",
            jobs.len(),
            current.alerting.len(),
            crate::ledger::lease_ttl()
        );
        jobs.abort_all();
        while jobs.join_next().await.is_some() {}
    }
    tracing::info!("stopped");
    Ok(())
}

/// Digests another process holds, said once each while it holds them; more than
/// [`HELD_ONE_BY_ONE`] at once (replicas sharing a firing) in one line.
fn say_held(newly: &[&(Key, DateTime<Utc>)]) {
    if let Some(line) = held_in_one_line(newly) {
        return tracing::info!(digests = newly.len(), "{line}");
    }
    for (key, until) in newly {
        let (team, date, webhook) = (&key.team, key.span, &key.webhook);
        tracing::info!(%team, %date, %webhook, "{key}: another acquire-digest process holds its lease until {} ({HELD_BY}); waiting", until.format("%H:%M:%S UTC"));
    }
}

const HELD_BY: &str = "a replica delivering it, or one that stopped, whose lease then expires";

fn held_in_one_line(newly: &[&(Key, DateTime<Utc>)]) -> Option<String> {
    if newly.len() <= HELD_ONE_BY_ONE {
        return None;
    }
    let last = newly.iter().map(|(_, until)| until).max()?;
    let teams: BTreeSet<&str> = newly.iter().map(|(key, _)| key.team.as_str()).collect();
    Some(format!(
        "{} digests of {} teams are held by other acquire-digest processes, their leases read as running until {} at the latest ({HELD_BY}); waiting",
        newly.len(),
        teams.len(),
        last.format("%H:%M:%S UTC")
    ))
}

/// The ledger's rows of a pass's digests, read ahead a few hundred at a time in about the
/// order the jobs get their slots (the semaphore is fair, and jobs mostly ask in the order
/// they were started), so that a replica learns in one statement which of them another
/// replica has taken instead of losing a lease on each (see [`Ledger::read_ahead`]).
struct ReadAhead {
    ledger: Ledger,
    digests: Arc<[Due]>,
    /// Whether the digest at each place has been read ahead.
    read: std::sync::Mutex<Vec<bool>>,
    /// Held while a read is under way: one at a time.
    reading: tokio::sync::Mutex<()>,
}

impl ReadAhead {
    const DIGESTS: usize = 256;

    /// Only where other processes may lease the same digests: alone, a daemon would spend a
    /// statement to learn nothing.
    fn of(current: &Current, start: &Arc<[Due]>) -> Option<Arc<ReadAhead>> {
        (current.ledger.shared() && start.len() > 1).then(|| {
            Arc::new(ReadAhead {
                ledger: current.ledger.clone(),
                digests: start.clone(),
                read: std::sync::Mutex::new(vec![false; start.len()]),
                reading: tokio::sync::Mutex::new(()),
            })
        })
    }

    /// Before the job at `place` leases: its digest and the next ones not read yet, unless
    /// a read did already. A job whose digest is unread waits for the read under way, if
    /// any, and reads only if that one did not cover it.
    async fn before(&self, place: usize) {
        let unread = |read: &[bool]| !read[place];
        if !unread(&self.read.lock().expect("read ahead")) {
            return;
        }
        let _reading = self.reading.lock().await;
        let places: Vec<usize> = {
            let read = self.read.lock().expect("read ahead");
            if !unread(&read) {
                return;
            }
            (place..read.len())
                .filter(|&p| !read[p])
                .take(Self::DIGESTS)
                .collect()
        };
        let keys: Vec<Key> = (places.iter())
            .flat_map(|&p| {
                let due = &self.digests[p];
                (due.webhooks.iter()).map(|hook| Key::new(&due.team, due.span, hook))
            })
            .collect();
        // Without it each lease asks the database itself, as it always may.
        if let Err(e) = self.ledger.read_ahead(&keys).await {
            tracing::debug!("could not read ahead the digests to lease: {e}");
        }
        let mut read = self.read.lock().expect("read ahead");
        for p in places {
            read[p] = true;
        }
    }
}

/// What the reconciler keeps between passes so that a pass looks only at the teams something
/// may have changed for: each team's next look (its next firing, a retry, a lease's expiry,
/// its window closing, an hourly resync while it has a digest pending) in a heap, and the
/// teams whose delivery here just ended. The first pass after start or a reload looks at
/// every team; a pass when nothing is due reads nothing.
struct Agenda {
    /// (when, team's index in the config); an entry that no longer matches `next_look` was
    /// superseded and is skipped.
    heap: BinaryHeap<Reverse<(DateTime<Utc>, usize)>>,
    next_look: Vec<Option<DateTime<Utc>>>,
    dirty: BTreeSet<usize>,
    /// Each team's watermark, read from the ledger at the first pass and kept here after.
    marks: Option<HashMap<String, DateTime<Utc>>>,
    /// Each team's pending digests as its last look counted them, and their sum.
    pending: Vec<usize>,
    pending_total: usize,
}

impl Agenda {
    fn new(teams: &[Team]) -> Agenda {
        Agenda {
            heap: BinaryHeap::new(),
            next_look: vec![None; teams.len()],
            dirty: BTreeSet::new(),
            marks: None,
            pending: vec![0; teams.len()],
            pending_total: 0,
        }
    }

    /// A delivery of this team's ended: the next pass looks at it.
    fn touch(&mut self, current: &Current, team: &str) {
        if let Some(i) = current.index_of(team) {
            self.dirty.insert(i);
        }
    }

    /// The teams to look at now, taken off the agenda.
    fn due(&mut self, now: DateTime<Utc>) -> Vec<usize> {
        if self.marks.is_none() {
            self.heap.clear();
            self.dirty.clear();
            return (0..self.next_look.len()).collect();
        }
        while let Some(&Reverse((at, i))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.next_look[i] == Some(at) {
                self.next_look[i] = None;
                self.dirty.insert(i);
            }
        }
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    fn look_at(&mut self, team: usize, look: Look) {
        // An unmoved look is on the heap already: pushing it again would only pile up.
        if self.next_look[team] != look.at {
            self.next_look[team] = look.at;
            self.heap.extend(look.at.map(|at| Reverse((at, team))));
        }
        self.pending_total = self.pending_total - self.pending[team] + look.pending;
        self.pending[team] = look.pending;
    }

    fn next(&mut self) -> Option<DateTime<Utc>> {
        while let Some(&Reverse((at, i))) = self.heap.peek() {
            if self.next_look[i] == Some(at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }
}

/// The reconciler's passes without the daemon's loop, which starts nothing: what a benchmark
/// times.
pub struct Reconciler {
    current: Current,
    agenda: Agenda,
}

impl Reconciler {
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<Reconciler, String> {
        let current = Current::open(config, &clock, None).await?;
        let agenda = Agenda::new(&current.config.teams);
        Ok(Reconciler { current, agenda })
    }

    /// What [`Reconciler::pass`] said to start has ended: the next pass looks at the team.
    pub fn ended(&mut self, team: &str) {
        self.agenda.touch(&self.current, team);
    }

    /// One pass at `now`: what it would start, and how many teams it looked at.
    pub async fn pass(&mut self, now: DateTime<Utc>) -> Result<(Vec<Due>, usize), LedgerError> {
        let (plan, start) =
            reconcile(&self.current, now, &HashSet::new(), false, &mut self.agenda).await?;
        Ok((start, plan.looks.len()))
    }
}

/// One pass over the teams the agenda says are due: read their part of the ledger, decide,
/// record the give-ups, and say what to start (what isn't running here already). If it
/// fails, the same teams are looked at in the next.
async fn reconcile(
    current: &Current,
    now: DateTime<Utc>,
    busy: &HashSet<(String, Span)>,
    retry_now: bool,
    agenda: &mut Agenda,
) -> Result<(Plan, Vec<Due>), LedgerError> {
    let due = agenda.due(now);
    let passed = look(current, now, busy, retry_now, agenda, &due).await;
    if passed.is_err() {
        agenda.dirty.extend(due);
    }
    passed
}

async fn look(
    current: &Current,
    now: DateTime<Utc>,
    busy: &HashSet<(String, Span)>,
    retry_now: bool,
    agenda: &mut Agenda,
    due: &[usize],
) -> Result<(Plan, Vec<Due>), LedgerError> {
    if due.is_empty() {
        return Ok((Plan::default(), Vec::new()));
    }
    let ledger = &current.ledger;
    let every_team = agenda.marks.is_none();
    let lookback = now.date_naive() - chrono::Days::new(crate::ledger::owed::LOOKBACK_DAYS);
    let teams: Vec<&Team> = due.iter().map(|&i| &current.config.teams[i]).collect();
    let marks = match &mut agenda.marks {
        Some(marks) => marks,
        None => {
            let mut marks = ledger.watermarks().await?;
            // Down since before what the ledger has forgotten: the firings before that are not
            // reported as missed, since what `once` recorded of them may be gone. From two
            // days on, every firing's span ends on or after the first day remembered.
            if let Some(forgotten) = ledger.forgotten_before().await? {
                let kept = (forgotten + chrono::Days::new(2)).and_time(chrono::NaiveTime::MIN);
                for mark in marks.values_mut() {
                    *mark = (*mark).max(kept.and_utc());
                }
            }
            // A team no longer configured is forgotten: added again later, it is a new
            // team, whose absence is not a run of missed digests.
            let gone: Vec<String> = (marks.keys())
                .filter(|name| current.index_of(name).is_none())
                .cloned()
                .collect();
            for team in gone {
                ledger.forget_watermark(&team).await?;
                marks.remove(&team);
            }
            agenda.marks.insert(marks)
        }
    };
    // Of all the teams, the first pass reads only those with something to look at: a span
    // in its window, a firing that went by unseen, or a digest pending.
    let looked: Vec<&Team> = if every_team {
        let pending = ledger.pending_teams(lookback).await?;
        (teams.iter().copied())
            .filter(|team| {
                pending.contains(&team.name)
                    || !live_spans(team, now).is_empty()
                    || unseen_since(&[*team], now, marks).is_some()
            })
            .collect()
    } else {
        teams.clone()
    };
    // Back to the firings the watermarks say are unaccounted for, and the spans in the
    // windows: a span ends the day before its firing's local date.
    let windows = (looked.iter())
        .map(|team| team.zone.local(window_start(team, now)).date() - chrono::Days::new(1))
        .min()
        .unwrap_or(lookback);
    let since = unseen_since(&looked, now, marks).map_or(windows, |first| first.min(windows));
    let entries = if looked.is_empty() {
        Entries::new()
    } else if looked.len() == current.config.teams.len() {
        ledger.owed_of(since, lookback, None).await?
    } else {
        let names: Vec<&str> = looked.iter().map(|t| t.name.as_str()).collect();
        ledger.owed_of(since, lookback, Some(&names)).await?
    };
    // Recorded before the watermarks move past them: a crash between repeats nothing.
    let running = |team: &str, span: Span| busy.contains(&(team.to_owned(), span));
    let (missed, moved) = unseen(&teams, now, &entries, marks, &running);
    current.record_missed(missed, now).await?;
    ledger.advance(&moved).await?;
    for (team, until) in moved {
        let mark = marks.entry(team).or_insert(until);
        *mark = (*mark).max(until);
    }
    let plan = plan(&looked, now, &entries, retry_now);
    for (&i, team) in due.iter().zip(&teams) {
        let look = plan.looks.get(&team.name).copied().unwrap_or_else(|| Look {
            at: team.schedule.next_after(team.zone, now),
            pending: 0,
        });
        agenda.look_at(i, look);
    }
    // A digest this pass gives up is no longer pending.
    crate::telemetry::pending_deliveries(agenda.pending_total);
    if !every_team {
        // The first pass's were set as the config was opened, at the same instant.
        crate::telemetry::next_digests(&teams, now);
    }
    for key in &plan.expired {
        if current.ledger.expire(key).await? {
            let entry = &entries[&(key.team.clone(), key.span)][&key.webhook];
            let host = current.host(key);
            current.finished(&SpanReport {
                team: key.team.clone(),
                span: key.span,
                outcome: Ok(vec![HookReport {
                    webhook: key.webhook.clone(),
                    host,
                    status: HookStatus::Expired(entry.last_error.clone()),
                }]),
            });
        }
    }
    let start = plan
        .due
        .iter()
        .filter(|due| !busy.contains(&(due.team.clone(), due.span)))
        .cloned()
        .collect();
    Ok((plan, start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Entry;
    use crate::schedule::Zone;
    use chrono::NaiveDate;

    fn team(timezone: &str, schedule: &str, catch_up: &str) -> Team {
        let text = format!(
            r#"
[[teams]]
name = "t"
account_id = "acme"
api_key = "key-1234"
timezone = "{timezone}"
schedule = "{schedule}"
catch_up = "{catch_up}"
[[teams.webhooks]]
kind = "generic"
url = "http://127.0.0.1:9/"
"#
        );
        config::parse(&text, Path::new("."), &|_| None)
            .unwrap()
            .teams
            .remove(0)
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn day(text: &str) -> Span {
        Span::day(text.parse().unwrap())
    }

    fn delivered() -> Entry {
        Entry::settled_as(State::Delivered, 1, None)
    }

    /// Runs the reconciler's decisions at each instant, delivering whatever is due at once,
    /// and returns the spans in the order they went out.
    fn deliveries(team: &Team, instants: impl IntoIterator<Item = DateTime<Utc>>) -> Vec<Span> {
        let mut entries = Entries::new();
        let mut sent = Vec::new();
        for now in instants {
            for due in plan(std::slice::from_ref(team), now, &entries, false).due {
                sent.push(due.span);
                entries
                    .entry((due.team, due.span))
                    .or_default()
                    .insert("generic".into(), delivered());
            }
        }
        sent
    }

    #[test]
    fn firings_between_the_watermark_and_the_window_are_missed_unless_recorded() {
        use crate::ledger::owed::{Missed, unseen, unseen_since};
        let idle = |_: &str, _: Span| false;
        // 09:00 in Kolkata is 03:30Z; at 06:30Z with a one-hour catch_up, today's is past.
        let kolkata = team("Asia/Kolkata", "0 9 * * *", "1h");
        let teams = std::slice::from_ref(&kolkata);
        let now = utc("2026-11-25T06:30:00Z");
        let window = utc("2026-11-25T05:30:00Z");
        let marks = |at: &str| HashMap::from([("t".to_owned(), utc(at))]);
        let missed =
            |entries: &Entries, mark: &str| unseen(teams, now, entries, &marks(mark), &idle);

        // Seen for the first time: nothing of its past, and the watermark starts at the window.
        let (none, moved) = unseen(teams, now, &Entries::new(), &HashMap::new(), &idle);
        assert_eq!((none, moved), (vec![], vec![("t".to_owned(), window)]));

        // Last looked three days ago: each day's firing since, once, with its time.
        let (found, moved) = missed(&Entries::new(), "2026-11-22T06:30:00Z");
        let at = |day: &str, firing: &str| Missed {
            key: Key::new("t", self::day(day), "generic"),
            firing: utc(firing),
        };
        assert_eq!(
            found,
            [
                at("2026-11-22", "2026-11-23T03:30:00Z"),
                at("2026-11-23", "2026-11-24T03:30:00Z"),
                at("2026-11-24", "2026-11-25T03:30:00Z"),
            ]
        );
        assert_eq!(moved, [("t".to_owned(), window)]);
        // The ledger is read back to the first of them; with nothing to walk, not at all.
        let since = unseen_since(teams, now, &marks("2026-11-22T06:30:00Z"));
        assert_eq!(since, Some("2026-11-22".parse().unwrap()));
        assert_eq!(
            unseen_since(teams, now, &marks("2026-11-25T05:00:00Z")),
            None
        );
        // One this process is delivering (queued for a slot) is not missed, whatever its row.
        let queued = |_: &str, span: Span| span == day("2026-11-23");
        let (found, _) = unseen(
            teams,
            now,
            &Entries::new(),
            &marks("2026-11-22T06:30:00Z"),
            &queued,
        );
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|m| m.key.span != day("2026-11-23")));

        // What any process recorded (delivered by `once`, given up, tried) is not missed.
        let mut entries = Entries::new();
        let recorded = Entry::settled_as(State::Pending, 1, None);
        for (span, entry) in [("2026-11-22", delivered()), ("2026-11-24", recorded)] {
            let hooks = entries.entry(("t".into(), day(span))).or_default();
            hooks.insert("generic".into(), entry);
        }
        let (found, _) = missed(&entries, "2026-11-22T06:30:00Z");
        assert_eq!(found, [at("2026-11-23", "2026-11-24T03:30:00Z")]);

        // Nothing fired since the watermark (or the clock went back): nothing moves.
        assert_eq!(
            missed(&Entries::new(), "2026-11-25T05:00:00Z"),
            (vec![], vec![])
        );
        assert_eq!(
            missed(&Entries::new(), "2026-11-26T00:00:00Z"),
            (vec![], vec![])
        );

        // A span still inside a longer catch_up is due, not missed.
        let patient = team("Asia/Kolkata", "0 9 * * *", "2d");
        let (found, _) = unseen(
            std::slice::from_ref(&patient),
            now,
            &Entries::new(),
            &marks("2026-11-20T00:00:00Z"),
            &idle,
        );
        // Its window opens at 11-23 06:30Z: the firings of 11-24 and 11-25 are still due.
        let days: Vec<Span> = found.iter().map(|m| m.key.span).collect();
        let before = ["2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22"];
        assert_eq!(days, before.map(day));
    }

    fn every(step: chrono::Duration, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        std::iter::successors(Some(from), |t| Some(*t + step))
            .take_while(|t| *t <= to)
            .collect()
    }

    #[test]
    fn three_days_asleep_delivers_the_day_due_now_not_the_oldest() {
        let kolkata = team("Asia/Kolkata", "0 9 * * *", "12h");
        // Delivered on the 22nd, then the laptop slept until 10:00 on the 25th.
        let mut entries = Entries::new();
        entries
            .entry(("t".into(), day("2026-11-21")))
            .or_default()
            .insert("generic".into(), delivered());
        let woke = utc("2026-11-25T04:30:00Z");
        let plan = plan(std::slice::from_ref(&kolkata), woke, &entries, false);
        let spans: Vec<Span> = plan.due.iter().map(|d| d.span).collect();
        assert_eq!(spans, [day("2026-11-24")]);
        // Looked at hourly while it is owed; once delivered, at the next firing.
        assert_eq!(plan.wake(), Some(woke + RESYNC));
        entries
            .entry(("t".into(), day("2026-11-24")))
            .or_default()
            .insert("generic".into(), delivered());
        let settled = super::plan(std::slice::from_ref(&kolkata), woke, &entries, false);
        assert_eq!(settled.wake(), Some(utc("2026-11-26T03:30:00Z")));
        // With catch-up off, a late wake delivers nothing; on time, the day due now.
        let strict = team("Asia/Kolkata", "0 9 * * *", "0");
        assert!(
            super::plan(std::slice::from_ref(&strict), woke, &Entries::new(), false)
                .due
                .is_empty()
        );
        let on_time = super::plan(
            std::slice::from_ref(&strict),
            utc("2026-11-25T03:30:20Z"),
            &Entries::new(),
            false,
        );
        assert_eq!(on_time.due.len(), 1);
        assert_eq!(on_time.due[0].span, day("2026-11-24"));
    }

    #[tokio::test]
    async fn a_pass_looks_only_at_the_teams_something_is_due_for() {
        let dir = tempfile::tempdir().unwrap();
        let team = |name: &str, zone: &str, schedule: &str| {
            format!(
                "[[teams]]\nname = \"{name}\"\naccount_id = \"{name}\"\napi_key = \"key-of-{name}-0123\"\n\
                 timezone = \"{zone}\"\nschedule = \"{schedule}\"\n\
                 [[teams.webhooks]]\nkind = \"generic\"\nurl = \"http://127.0.0.1:9/{name}\"\n"
            )
        };
        let text = format!(
            "catch_up = \"1h\"\n[state]\npath = \"ledger.db\"\n{}{}{}",
            team("nine", "Europe/Berlin", "0 9 * * *"),
            team("half-past", "Europe/Berlin", "30 9 * * *"),
            team("kolkata", "Asia/Kolkata", "0 9 * * *"),
        );
        let config = crate::config::parse(&text, dir.path(), &|_| None).unwrap();
        let start = utc("2026-11-24T06:00:00Z");
        let clock = WallClock::starting_at(start);
        let mut reconciler = Reconciler::open(config, clock).await.unwrap();
        let names = |due: &[Due]| due.iter().map(|d| d.team.clone()).collect::<Vec<_>>();

        // Kolkata's 09:00 was 03:30 UTC, outside its hour: nobody has anything to read.
        let (due, looked) = reconciler.pass(start).await.unwrap();
        assert_eq!((names(&due), looked), (vec![], 0));
        let (due, looked) = reconciler.pass(utc("2026-11-24T07:59:00Z")).await.unwrap();
        assert_eq!((names(&due), looked), (vec![], 0), "nothing fired");
        let (due, looked) = reconciler.pass(utc("2026-11-24T08:00:00Z")).await.unwrap();
        assert_eq!((names(&due), looked), (vec!["nine".to_owned()], 1));
        // Not delivered and nothing ended: the next pass leaves it to the delivery in flight.
        let (due, looked) = reconciler.pass(utc("2026-11-24T08:10:00Z")).await.unwrap();
        assert_eq!((names(&due), looked), (vec![], 0));
        // Its delivery ended without recording anything: looked at, and due again.
        reconciler.ended("nine");
        let (due, looked) = reconciler.pass(utc("2026-11-24T08:11:00Z")).await.unwrap();
        assert_eq!((names(&due), looked), (vec!["nine".to_owned()], 1));
        let (due, looked) = reconciler.pass(utc("2026-11-24T08:30:00Z")).await.unwrap();
        assert_eq!((names(&due), looked), (vec!["half-past".to_owned()], 1));
        // Kolkata's next 09:00 is tomorrow's; "nine" is looked at again when its window closes.
        let (due, looked) = reconciler.pass(utc("2026-11-24T09:00:00Z")).await.unwrap();
        assert_eq!((names(&due), looked), (vec![], 1));
        let (due, looked) = reconciler.pass(utc("2026-11-25T03:30:00Z")).await.unwrap();
        assert_eq!(names(&due), ["kolkata"]);
        assert!(looked >= 1);
    }

    /// A daemon down since before what the ledger has forgotten reports as missed only the
    /// firings whose record it would still hold: older ones' may be gone.
    #[tokio::test]
    async fn down_since_before_what_was_forgotten_reports_only_the_days_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let text = "catch_up = \"1h\"\n[state]\npath = \"ledger.db\"\n\
            [[teams]]\nname = \"nine\"\naccount_id = \"nine\"\napi_key = \"key-of-nine-0123\"\n\
            timezone = \"Europe/Berlin\"\nschedule = \"0 9 * * *\"\n\
            [[teams.webhooks]]\nkind = \"generic\"\nurl = \"http://127.0.0.1:9/nine\"\n";
        let config = crate::config::parse(text, dir.path(), &|_| None).unwrap();
        let start = utc("2026-11-24T06:00:00Z");
        let clock = WallClock::starting_at(start);
        // Last looked 30 days before: down since.
        let ledger = Ledger::open(&config.state, clock.clone()).await.unwrap();
        let marks = [("nine".to_owned(), start - chrono::Duration::days(30))];
        ledger.advance(&marks).await.unwrap();
        // Forgotten up to 14 days before (by a daemon with `keep_days = 14`, since gone).
        let forgotten = "INSERT INTO forgotten (id, before_day) VALUES (1, '2026-11-10')";
        let url = crate::db::testing::sqlite_file_url(&dir.path().join("ledger.db"));
        crate::db::testing::execute_at(&url, forgotten)
            .await
            .unwrap();
        let mut reconciler = Reconciler::open(config, clock).await.unwrap();
        reconciler.pass(start).await.unwrap();
        let entries = ledger.recent("2026-10-01".parse().unwrap()).await.unwrap();
        let mut missed: Vec<NaiveDate> = (entries.iter())
            .filter(|(_, hooks)| {
                hooks
                    .values()
                    .any(|e| e.state == crate::ledger::State::Missed)
            })
            .map(|((_, span), _)| span.last)
            .collect();
        missed.sort();
        // Forgotten before 11-10; from 11-12 00:00 UTC on, the firings of 11-12 to 11-23
        // (each covering the day before), not the 30 before.
        let days: Vec<NaiveDate> = (11..=22)
            .map(|d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap())
            .collect();
        assert_eq!(missed, days);
    }

    #[test]
    fn a_clock_stepped_back_or_forward_sends_each_span_once() {
        let berlin = team("Europe/Berlin", "0 9 * * *", "12h");
        let start = utc("2026-11-20T00:00:00Z");
        let mut instants = every(
            chrono::Duration::minutes(20),
            start,
            start + chrono::Duration::days(2),
        );
        // NTP steps back two hours, then forward a day and a half (a suspend).
        let back = *instants.last().unwrap() - chrono::Duration::hours(2);
        instants.extend(every(
            chrono::Duration::minutes(20),
            back,
            back + chrono::Duration::hours(6),
        ));
        let jump = *instants.last().unwrap() + chrono::Duration::hours(36);
        instants.extend(every(
            chrono::Duration::minutes(20),
            jump,
            jump + chrono::Duration::hours(3),
        ));
        let sent = deliveries(&berlin, instants);
        // The day whose firing the 36-hour suspend left outside the 12-hour catch-up is not
        // sent late; the one due when it woke is.
        assert_eq!(
            sent,
            [day("2026-11-19"), day("2026-11-20"), day("2026-11-22")]
        );
    }

    #[test]
    fn every_dst_change_of_2026_gets_each_day_once() {
        for zone_name in [
            "America/New_York",
            "Australia/Sydney",
            "America/Santiago",
            "Africa/Cairo",
            "America/Havana",
        ] {
            let zone = Zone::parse(zone_name).unwrap();
            let changes: Vec<NaiveDate> = "2026-01-02"
                .parse::<NaiveDate>()
                .unwrap()
                .iter_days()
                .take(363)
                .filter(|d| {
                    let noon = |d: NaiveDate| zone.start_of_day(d) + chrono::Duration::hours(12);
                    zone.offset_at(noon(*d)) != zone.offset_at(noon(d.pred_opt().unwrap()))
                })
                .collect();
            assert!(changes.len() >= 2, "{zone_name}: {changes:?}");
            for schedule in ["30 0 * * *", "30 2 * * *", "30 1 * * *"] {
                let team = team(zone_name, schedule, "2h");
                for change in &changes {
                    let from = zone.start_of_day(*change - chrono::Days::new(2));
                    let to = zone.start_of_day(*change + chrono::Days::new(3));
                    let sent = deliveries(&team, every(chrono::Duration::minutes(7), from, to));
                    let expected: Vec<Span> = (-3..=1)
                        .map(|offset: i64| Span::day(*change + chrono::Duration::days(offset)))
                        .collect();
                    assert_eq!(sent, expected, "{zone_name} {schedule} around {change}");
                }
            }
        }
    }

    #[test]
    fn retries_leases_and_refusals_follow_the_ledger() {
        let kolkata = team("Asia/Kolkata", "0 9 * * *", "12h");
        let now = utc("2026-11-25T05:00:00Z");
        let key = ("t".to_owned(), day("2026-11-24"));
        let with = |entry: Entry| -> Entries {
            let mut entries = Entries::new();
            entries
                .entry(key.clone())
                .or_default()
                .insert("generic".into(), entry);
            entries
        };
        let later = now + chrono::Duration::minutes(10);
        let pending = Entry {
            state: State::Pending,
            next_attempt: Some(later),
            ..delivered()
        };
        let waiting = plan(
            std::slice::from_ref(&kolkata),
            now,
            &with(pending.clone()),
            false,
        );
        assert!(waiting.due.is_empty());
        assert_eq!(waiting.wake(), Some(later));
        assert_eq!(
            plan(
                std::slice::from_ref(&kolkata),
                now,
                &with(pending.clone()),
                true
            )
            .due
            .len(),
            1,
            "a reload tries again now"
        );
        assert_eq!(
            plan(std::slice::from_ref(&kolkata), later, &with(pending), false)
                .due
                .len(),
            1
        );

        let held = Entry {
            state: State::Pending,
            leased_until: Some(later),
            ..delivered()
        };
        let busy = plan(std::slice::from_ref(&kolkata), now, &with(held), true);
        assert!(busy.due.is_empty());
        assert_eq!(
            busy.wake(),
            Some(now + chrono::Duration::seconds(15)),
            "looked at again soon, before the lease would expire"
        );

        let fingerprint = kolkata.webhooks[0].url.fingerprint();
        let refused = Entry {
            state: State::Refused,
            refused_url: Some(fingerprint),
            ..delivered()
        };
        assert!(
            plan(
                std::slice::from_ref(&kolkata),
                now,
                &with(refused.clone()),
                true
            )
            .due
            .is_empty()
        );
        let mended = Entry {
            refused_url: Some("another URL".into()),
            ..refused
        };
        assert_eq!(
            plan(std::slice::from_ref(&kolkata), now, &with(mended), false)
                .due
                .len(),
            1
        );
        let unknown = Entry {
            state: State::Unknown,
            ..delivered()
        };
        assert!(
            plan(std::slice::from_ref(&kolkata), now, &with(unknown), true)
                .due
                .is_empty()
        );
    }

    #[test]
    fn a_weekday_schedule_reports_the_weekend_on_monday() {
        let berlin = team("Europe/Berlin", "30 8 * * 1-5", "12h");
        let week = every(
            chrono::Duration::minutes(30),
            utc("2026-11-19T00:00:00Z"),
            utc("2026-11-25T00:00:00Z"),
        );
        let sent = deliveries(&berlin, week);
        let weekend = Span {
            first: "2026-11-20".parse().unwrap(),
            last: "2026-11-22".parse().unwrap(),
        };
        assert_eq!(
            sent,
            [
                day("2026-11-18"),
                day("2026-11-19"),
                weekend,
                day("2026-11-23")
            ]
        );
    }

    #[test]
    fn a_pending_digest_outside_the_window_is_given_up_once_nobody_holds_it() {
        let kolkata = team("Asia/Kolkata", "0 9 * * *", "12h");
        let now = utc("2026-11-25T05:00:00Z");
        let pending = Entry {
            state: State::Pending,
            ..delivered()
        };
        let mut entries = Entries::new();
        let mut put = |team: &str, span: Span, webhook: &str, entry: Entry| {
            entries
                .entry((team.to_owned(), span))
                .or_default()
                .insert(webhook.to_owned(), entry);
        };
        // Still live: retried, not given up.
        put("t", day("2026-11-24"), "generic", pending.clone());
        // Left the window: given up, unless delivered, held, or no longer configured.
        put("t", day("2026-11-22"), "generic", pending.clone());
        put("t", day("2026-11-21"), "generic", delivered());
        let held = Entry {
            leased_until: Some(now + chrono::Duration::seconds(30)),
            ..pending.clone()
        };
        put("t", day("2026-11-20"), "generic", held);
        put("t", day("2026-11-19"), "removed-hook", pending.clone());
        put("removed-team", day("2026-11-22"), "generic", pending);
        let plan = plan(std::slice::from_ref(&kolkata), now, &entries, false);
        assert_eq!(plan.expired, [Key::new("t", day("2026-11-22"), "generic")]);
        assert_eq!(plan.due.len(), 1);
        assert_eq!(plan.due[0].span, day("2026-11-24"));
    }

    fn two_webhooks() -> Team {
        let text = r#"
[[teams]]
name = "t"
account_id = "acme"
api_key = "key-1234"
timezone = "UTC"
schedule = "0 9 * * *"
[[teams.webhooks]]
kind = "generic"
url = "http://127.0.0.1:9/a"
[[teams.webhooks]]
kind = "slack"
url = "http://127.0.0.1:9/b"
"#;
        config::parse(text, Path::new("."), &|_| None)
            .unwrap()
            .teams
            .remove(0)
    }

    /// Jobs read ahead from their own place the next digests not read yet, so each digest
    /// is read once, whatever order the jobs come in.
    #[tokio::test]
    async fn jobs_read_ahead_each_digest_once_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = config::StateStore::Sqlite(dir.path().join("l.db"));
        let ledger = Ledger::open(&store, WallClock::new()).await.unwrap();
        ledger.checked().await.unwrap();
        let n = 600;
        let digests: Arc<[Due]> = (0..n)
            .map(|i| Due {
                team: format!("team-{i}"),
                span: day("2026-03-01"),
                webhooks: vec!["slack".into()],
            })
            .collect();
        let ahead = ReadAhead {
            ledger,
            digests,
            read: std::sync::Mutex::new(vec![false; n]),
            reading: tokio::sync::Mutex::new(()),
        };
        let read = || -> Vec<usize> {
            let read = ahead.read.lock().unwrap();
            (0..n).filter(|&p| read[p]).collect()
        };
        ahead.before(0).await;
        assert_eq!(read(), (0..256).collect::<Vec<_>>());
        ahead.before(5).await;
        assert_eq!(read().len(), 256, "a job already read reads nothing");
        ahead.before(300).await;
        assert_eq!(read(), (0..256).chain(300..556).collect::<Vec<_>>());
        // Out of order: from its own place, skipping what was read.
        ahead.before(260).await;
        let expected: Vec<usize> = (0..256).chain(260..n).collect();
        assert_eq!(read(), expected);
        ahead.before(256).await;
        assert_eq!(read(), (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn a_hundred_held_digests_are_said_one_by_one_and_more_in_one_line() {
        let held: Vec<(Key, DateTime<Utc>)> = (0..=HELD_ONE_BY_ONE)
            .map(|i| {
                let team = format!("team-{}", i % 3);
                let until = utc("2026-03-02T09:00:00Z") + chrono::Duration::seconds(i as i64);
                (
                    Key::new(&team, day("2026-03-01"), &format!("hook-{i}")),
                    until,
                )
            })
            .collect();
        let newly: Vec<&(Key, DateTime<Utc>)> = held.iter().collect();
        assert_eq!(held_in_one_line(&newly[..HELD_ONE_BY_ONE]), None);
        let line = held_in_one_line(&newly).expect("one line");
        assert!(
            line.starts_with("101 digests of 3 teams are held by other acquire-digest processes, their leases read as running until 09:01:40 UTC at the latest"),
            "{line}"
        );
    }

    #[test]
    fn pending_counts_what_is_due_and_not_settled() {
        let team = two_webhooks();
        let entry = |state| Entry::settled_as(state, 1, None);
        let due: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        let day = Span::day("2026-11-24".parse().unwrap());
        let teams = std::slice::from_ref(&team);
        let pending = |now, entries: &Entries| plan(teams, now, entries, false).pending();
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
}
