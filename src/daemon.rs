//! The daemon (`run`): every team's digest on its schedule, exactly once per (team, date,
//! webhook) across restarts, DST changes and reloads.
//!
//! Each team has a loop that sleeps until its next firing, computed afresh every time by
//! [`Schedule::next_after`](crate::schedule::Schedule::next_after) in the team's zone, so a DST
//! change moves no digest. (tokio-cron-scheduler's cron jobs capture the zone's offset when
//! created, its issue #107, and its ticker reads the wall clock, which a test can't drive; we
//! keep croner, its cron engine, and our own timer.) A firing becomes a job: deliver
//! yesterday's digest, relative to the firing, to each webhook the ledger doesn't list, trying
//! again every `retry_every` until the `catch_up` window closes. The ledger, not the timer, is
//! the record of what ran, so however often a schedule fires, a day goes out once.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{self, Config, Team, WebhookUrl};
use crate::ledger::Ledger;
use crate::pipeline::{HookStatus, Pipeline, RunOptions};
use crate::schedule::Window;

/// How long in-flight deliveries may finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Where the daemon reads the time and waits for it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The wall clock. Sleeps in steps of at most a minute and re-reads the time after each, so a
/// clock step (NTP, a suspended VM) delays a digest by a minute at most.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            loop {
                let left = (at - Utc::now()).to_std().unwrap_or_default();
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(Duration::from_secs(60))).await;
            }
        })
    }
}

/// A clock that follows tokio's time from a chosen instant, so a test with paused time can
/// run a daemon across days and DST changes in milliseconds.
pub struct TokioClock {
    origin: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(origin: DateTime<Utc>) -> TokioClock {
        TokioClock {
            origin,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.origin + self.start.elapsed()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let wait = (at - self.origin).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep_until(self.start + wait))
    }
}

/// "Tue 24 Nov 09:00 Asia/Kolkata (03:30 UTC)", or why there is none.
pub fn describe_next(team: &Team, now: DateTime<Utc>) -> String {
    match team.schedule.next_after(team.zone, now) {
        Some(next) => format!(
            "{} {} ({} UTC)",
            team.zone.local(next).format("%a %-d %b %H:%M:%S"),
            team.zone,
            next.format("%a %-d %b %H:%M:%S")
        ),
        None => "never (the schedule has no future firing)".to_owned(),
    }
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

/// One message per SIGHUP, from the moment this is called.
pub fn reload_signal() -> std::io::Result<mpsc::Receiver<()>> {
    let mut hangups = signal(SignalKind::hangup())?;
    let (reload_tx, reloads) = mpsc::channel(4);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if reload_tx.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(reloads)
}

/// `run`: the daemon on the wall clock until `shutdown` resolves, reloading on `reloads`.
pub async fn run(
    path: PathBuf,
    config: Config,
    reloads: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve(&path, config, Arc::new(SystemClock), reloads, shutdown).await
}

/// One firing of a team's schedule (or a catch-up of a missed one).
struct Firing {
    team: Team,
    at: DateTime<Utc>,
}

/// What delivery jobs share: the days being worked on, so overlapping firings of one day (a
/// fast schedule, a catch-up racing a firing, a reload) never deliver it twice.
#[derive(Default)]
struct InFlight(Mutex<HashSet<(String, NaiveDate)>>);

/// The config in force and the pipeline built from it. A reload replaces both, and every
/// delivery job reads them afresh at each try, so a fixed URL or key reaches a day that is
/// already retrying.
struct Current {
    config: Config,
    pipeline: Pipeline,
}

impl Current {
    fn open(config: Config) -> Result<Current, crate::ledger::LedgerError> {
        let ledger = Ledger::open(&config.ledger_path)?;
        let pipeline = Pipeline::new(&config, Some(ledger));
        Ok(Current { config, pipeline })
    }
}

/// The daemon with its clock and its reload and shutdown triggers passed in, for tests.
pub async fn serve(
    path: &Path,
    config: Config,
    clock: Arc<dyn Clock>,
    mut reloads: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (current_tx, current) = watch::channel(Arc::new(Current::open(config)?));
    let in_flight = Arc::new(InFlight::default());
    let (stop_tx, stop) = watch::channel(false);
    // Unbounded: a restart after downtime queues a catch-up for every team at once, and a
    // bounded queue would drop those beyond its size.
    let (firings_tx, mut firings) = mpsc::unbounded_channel::<Firing>();
    let mut schedules = start_schedules(&current.borrow().config, &clock, &firings_tx);
    let mut deliveries = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = reloads.recv() => {
                let loaded = config::load(path).and_then(|new| {
                    Current::open(new).map_err(|e| config::ConfigErrors {
                        file: path.to_owned(),
                        problems: vec![config::Problem { place: "state.path".into(), message: e.to_string() }],
                    })
                });
                match loaded {
                    Ok(new) => {
                        tracing::info!(teams = new.config.teams.len(), "SIGHUP: config reloaded");
                        schedules.abort_all();
                        schedules = start_schedules(&new.config, &clock, &firings_tx);
                        current_tx.send_replace(Arc::new(new));
                    }
                    Err(errors) => {
                        tracing::error!("SIGHUP: new config rejected, still running the old one:\n{errors}");
                    }
                }
            }
            Some(firing) = firings.recv() => {
                let job = deliver(firing, current.clone(), clock.clone(), in_flight.clone(), stop.clone());
                deliveries.spawn(job);
            }
            Some(done) = deliveries.join_next(), if !deliveries.is_empty() => {
                if let Err(e) = done && e.is_panic() {
                    tracing::error!("a delivery job panicked: {e}");
                }
            }
        }
    }

    schedules.abort_all();
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while deliveries.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} deliveries still running after {SHUTDOWN_GRACE:?}; stopping them (the ledger lets the next start finish them)",
            deliveries.len()
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Starts each team's timer and queues a catch-up for any firing missed within `catch_up`.
fn start_schedules(
    config: &Config,
    clock: &Arc<dyn Clock>,
    firings: &mpsc::UnboundedSender<Firing>,
) -> JoinSet<()> {
    let now = clock.now();
    let mut schedules = JoinSet::new();
    for team in &config.teams {
        tracing::info!(team = %team.name, schedule = team.schedule.as_str(), "next digest {}", describe_next(team, now));
        let missed = chrono::Duration::from_std(team.catch_up)
            .ok()
            .filter(|window| !window.is_zero())
            .and_then(|window| team.schedule.last_at_or_before(team.zone, now, window));
        if let Some(at) = missed {
            tracing::info!(team = %team.name, firing = %at, "catching up on a missed firing");
            let _ = firings.send(Firing {
                team: team.clone(),
                at,
            });
        }
        schedules.spawn(timer(team.clone(), clock.clone(), firings.clone()));
    }
    schedules
}

async fn timer(team: Team, clock: Arc<dyn Clock>, firings: mpsc::UnboundedSender<Firing>) {
    let mut after = clock.now();
    loop {
        let Some(at) = team.schedule.next_after(team.zone, after) else {
            tracing::warn!(team = %team.name, "the schedule never fires again");
            return;
        };
        clock.sleep_until(at).await;
        tracing::debug!(team = %team.name, firing = %at, "schedule fired");
        if firings
            .send(Firing {
                team: team.clone(),
                at,
            })
            .is_err()
        {
            return;
        }
        // A late wake-up (suspend, overload) fires once, not once per missed slot.
        after = clock.now().max(at);
    }
}

/// Delivers the day a firing stands for, retrying until its catch-up window closes. Each try
/// uses the config in force then; a webhook that refused the day for good (a 4xx, a broken
/// template) is not sent it again unless a reload gives it another URL.
async fn deliver(
    firing: Firing,
    mut current: watch::Receiver<Arc<Current>>,
    clock: Arc<dyn Clock>,
    in_flight: Arc<InFlight>,
    mut stop: watch::Receiver<bool>,
) {
    let name = firing.team.name;
    let date = Window::yesterday(firing.team.zone, firing.at).date;
    let key = (name.clone(), date);
    if !in_flight
        .0
        .lock()
        .expect("in-flight lock")
        .insert(key.clone())
    {
        tracing::debug!(team = %name, %date, "already being delivered");
        return;
    }
    let mut refused: Vec<(String, WebhookUrl)> = Vec::new();
    loop {
        let now = current.borrow_and_update().clone();
        let Some(mut team) = now.config.teams.iter().find(|t| t.name == name).cloned() else {
            tracing::warn!(team = %name, %date, "the team is no longer in the config; its digest is not sent");
            break;
        };
        team.webhooks.retain(|hook| {
            !refused
                .iter()
                .any(|(n, url)| *n == hook.name && *url == hook.url)
        });
        if team.webhooks.is_empty() {
            break;
        }
        let report = now
            .pipeline
            .run_team(&team, date, RunOptions::default())
            .await;
        let next_try = clock.now() + now.config.retry_every;
        let in_window = next_try <= firing.at + team.catch_up;
        let mut retry = false;
        match &report.outcome {
            Ok(hooks) => {
                for hook in hooks {
                    let line = report.hook_line(hook);
                    // Another process (an admin's `once`) is posting it: if that post fails,
                    // nobody else will, so look again later rather than count it done.
                    if matches!(hook.status, HookStatus::HeldElsewhere) && in_window {
                        retry = true;
                        tracing::info!("{line}; checking again at {next_try}");
                    } else if hook.status.is_done() {
                        tracing::debug!("{line}");
                    } else if hook.status.is_retryable() && in_window {
                        retry = true;
                        tracing::warn!("{line}; trying again at {next_try}");
                    } else {
                        if !hook.status.is_retryable()
                            && let Some(refusing) =
                                team.webhooks.iter().find(|h| h.name == hook.webhook)
                        {
                            refused.push((refusing.name.clone(), refusing.url.clone()));
                        }
                        tracing::error!("giving up: {line}");
                    }
                }
            }
            Err(e) => {
                retry = e.is_retryable() && in_window;
                for line in report.summary_lines() {
                    if retry {
                        tracing::warn!("{line}; trying again at {next_try}");
                    } else {
                        tracing::error!("giving up: {line}");
                    }
                }
            }
        }
        if !retry {
            // A reload during this try may have added a webhook or fixed one that refused.
            if current.has_changed().unwrap_or(false) {
                continue;
            }
            break;
        }
        tokio::select! {
            () = clock.sleep_until(next_try) => {}
            Ok(()) = current.changed() => {
                tracing::info!(team = %name, %date, "config reloaded: trying again now");
            }
            _ = stop.changed() => break,
        }
    }
    in_flight.0.lock().expect("in-flight lock").remove(&key);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team(timezone: &str, schedule: &str) -> Team {
        let text = format!(
            r#"
[[teams]]
name = "t"
account_id = "acme"
api_key = "k"
timezone = "{timezone}"
schedule = "{schedule}"
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

    /// Runs a team's timer on a paused clock from `origin` and returns its first `n` firings.
    async fn firings(team: Team, origin: &str, n: usize) -> Vec<DateTime<Utc>> {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(utc(origin)));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handle = tokio::spawn(timer(team, clock.clone(), tx));
        let mut out = Vec::new();
        while out.len() < n {
            let firing = rx.recv().await.unwrap();
            // The timer woke when the clock said so, not an hour early or late.
            assert_eq!(clock.now(), firing.at);
            out.push(firing.at);
        }
        handle.abort();
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_timer_follows_berlin_across_both_changes() {
        let berlin = team("Europe/Berlin", "0 9 * * *");
        let spring = firings(berlin.clone(), "2026-03-27T12:00:00Z", 3).await;
        assert_eq!(
            spring,
            [
                utc("2026-03-28T08:00:00Z"),
                utc("2026-03-29T07:00:00Z"),
                utc("2026-03-30T07:00:00Z")
            ]
        );
        let autumn = firings(berlin, "2026-10-24T12:00:00Z", 2).await;
        assert_eq!(
            autumn,
            [utc("2026-10-25T08:00:00Z"), utc("2026-10-26T08:00:00Z")]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_timer_fires_skipped_and_repeated_times_once() {
        // Sydney: 02:30 is skipped on 2026-10-04 and repeated on 2026-04-05.
        let sydney = team("Australia/Sydney", "30 2 * * *");
        let spring = firings(sydney.clone(), "2026-10-02T12:00:00Z", 3).await;
        assert_eq!(
            spring,
            [
                utc("2026-10-02T16:30:00Z"),
                utc("2026-10-03T16:00:00Z"),
                utc("2026-10-04T15:30:00Z")
            ]
        );
        let autumn = firings(sydney, "2026-04-03T12:00:00Z", 3).await;
        assert_eq!(
            autumn,
            [
                utc("2026-04-03T15:30:00Z"),
                utc("2026-04-04T15:30:00Z"),
                utc("2026-04-05T16:30:00Z")
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_firing_reports_yesterday_in_the_team_zone() {
        let kolkata = team("Asia/Kolkata", "0 9 * * *");
        let at = firings(kolkata.clone(), "2026-07-15T00:00:00Z", 1).await[0];
        assert_eq!(at, utc("2026-07-15T03:30:00Z"));
        assert_eq!(
            Window::yesterday(kolkata.zone, at).date,
            "2026-07-14".parse::<NaiveDate>().unwrap()
        );
    }
}
