//! The daemon's HTTP endpoint (`run --listen`, `[server] listen`), on Prometheus's and
//! Alertmanager's paths: `GET /metrics`, `GET /-/healthy`, `GET /-/ready`, `POST /-/reload`;
//! and `GET /`, the status page.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use sd_notify::NotifyState;
use tokio::sync::mpsc;

use std::sync::Arc;

use crate::config::Config;
use crate::ledger::Ledger;
use crate::status::{self, Which};
use crate::telemetry;

/// The ledger the daemon uses now, for `GET /-/ready` to probe, and the config in force, for
/// the status page.
static IN_USE: std::sync::Mutex<Option<(Ledger, Arc<Config>)>> = std::sync::Mutex::new(None);

/// The daemon opened (or kept, on a reload) this ledger, under this config.
pub fn in_use(ledger: &Ledger, config: &Arc<Config>) {
    *IN_USE.lock().expect("in-use slot") = Some((ledger.clone(), config.clone()));
}

/// Why a daemon just started waits (see [`Ledger::checked`]).
const CHECKING: &str = "every page of the ledger is being checked before anything is sent from it (a large one takes seconds)";

/// Why the daemon can't write its ledger now, while it can't.
static WRITES_FAILING: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The daemon found it can't write its ledger (Some, with the error), or can again (None).
pub fn ledger_writes_failing(error: Option<String>) {
    *WRITES_FAILING.lock().expect("writes slot") = error;
}

/// Tells systemd (`Type=notify`) that the daemon is ready, its config loaded and its ledger
/// open. Outside systemd (no `NOTIFY_SOCKET`) nothing is sent.
pub fn notify_ready(teams: usize) {
    let status = format!("{teams} teams scheduled");
    let said = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    if let Err(e) = said {
        tracing::warn!("could not tell systemd the daemon is ready: {e}");
    }
}

/// How often the daemon's loop must feed systemd's watchdog (`WatchdogSec=`): half its timeout.
pub fn watchdog_every() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// The daemon's loop came round: a loop stuck in a pass or a hung ledger call stops feeding
/// the watchdog, and systemd restarts it.
pub fn feed_watchdog() {
    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
}

/// Tells systemd the daemon is stopping, so a restart waits for in-flight deliveries.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// How long `POST /-/reload` waits for the daemon to take the new config.
const RELOAD_WAIT: Duration = Duration::from_secs(60);

/// Serves the endpoint on `listener` until `shutdown` resolves. `reload` is the daemon's
/// reload trigger, the one SIGHUP feeds, told where each reload came from.
pub async fn serve(
    listener: tokio::net::TcpListener,
    reload: mpsc::Sender<&'static str>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route(
            "/-/healthy",
            get(|| async { "acquire-digest is healthy.\n" }),
        )
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload_config))
        .with_state(reload);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// What `acquire-digest status` would say, as a page, with a red banner for what stops
/// deliveries: a ledger that can't be read or written, or a reload that was rejected.
async fn status_page() -> Response {
    let in_use = IN_USE.lock().expect("in-use slot").clone();
    // The daemon's clock, through its ledger; before there is one, the wall clock's.
    let now = in_use
        .as_ref()
        .map_or_else(chrono::Utc::now, |(ledger, _)| ledger.now());
    let mut alarms = Vec::new();
    if let Err(problems) = &telemetry::reloads().borrow().1 {
        let first = problems
            .lines()
            .find(|l| l.starts_with("  "))
            .unwrap_or(problems);
        alarms.push(format!(
            "The last config reload was rejected, and the previous config still runs: {} (`acquire-digest check` lists every problem)",
            first.trim()
        ));
    }
    if let Some(error) = WRITES_FAILING.lock().expect("writes slot").clone() {
        alarms.push(format!(
            "Deliveries wait: the ledger takes no writes: {error}"
        ));
    }
    let Some((ledger, config)) = in_use else {
        alarms.push("Starting: the ledger is not open yet.".to_owned());
        return Html(status::page(None, &alarms, now)).into_response();
    };
    if ledger.check_passed().is_none() {
        alarms.push(format!("Deliveries wait: {CHECKING}."));
    }
    let teams: Vec<&crate::config::Team> = config.teams.iter().collect();
    let status = match status::read(&ledger, &teams, now, Which::recent(now)).await {
        Ok(status) => Some(status),
        Err(e) => {
            alarms.push(format!("The ledger is unreachable: {e}"));
            None
        }
    };
    Html(status::page(status.as_ref(), &alarms, now)).into_response()
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)],
        telemetry::encode(),
    )
        .into_response()
}

/// Ready when the daemon has its config and a ledger that answers a read and took its last
/// write; the ledger is asked now, so a file deleted or replaced under the daemon shows at
/// once, not at its next wake-up.
async fn ready() -> Response {
    let Some((ledger, _)) = IN_USE.lock().expect("in-use slot").clone() else {
        return unavailable("not ready: the config is loaded but the ledger is not open yet");
    };
    match readiness(&ledger).await {
        Ok(()) => (StatusCode::OK, "acquire-digest is ready.\n").into_response(),
        Err(why) => unavailable(&format!("not ready: {why}")),
    }
}

/// Why a daemon using `ledger` can't deliver now, if it can't.
async fn readiness(ledger: &Ledger) -> Result<(), String> {
    match ledger.check_passed() {
        None => return Err(format!("deliveries wait: {CHECKING}")),
        Some(false) => return Err("the ledger is damaged (the log says how)".into()),
        Some(true) => {}
    }
    if let Some(error) = WRITES_FAILING.lock().expect("writes slot").clone() {
        return Err(format!("deliveries wait: {error}"));
    }
    // A read of nothing: a day after tomorrow holds no span yet, but the query still runs.
    let tomorrow = ledger.now().date_naive() + chrono::Days::new(2);
    ledger
        .recent(tomorrow)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

fn unavailable(reason: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response()
}

/// The same as SIGHUP, answered with the outcome: 200, or 400 with the config's problems.
async fn reload_config(State(reload): State<mpsc::Sender<&'static str>>) -> Response {
    let mut outcomes = telemetry::reloads();
    outcomes.mark_unchanged();
    if reload.send("POST /-/reload").await.is_err() {
        return unavailable("the daemon is stopping");
    }
    let outcome = tokio::time::timeout(RELOAD_WAIT, outcomes.changed()).await;
    match outcome {
        Ok(Ok(())) => match outcomes.borrow_and_update().1.clone() {
            Ok(()) => (StatusCode::OK, "config reloaded\n").into_response(),
            Err(problems) => (
                StatusCode::BAD_REQUEST,
                format!("config rejected, still running the old one:\n{problems}\n"),
            )
                .into_response(),
        },
        _ => unavailable("the daemon did not take the reload in time; see its log"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::WallClock;
    use crate::config::StateStore;

    /// A large ledger's check of every page takes seconds after the daemon has started:
    /// meanwhile it is not ready, saying why.
    #[tokio::test]
    async fn not_ready_while_every_page_of_the_ledger_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let location = StateStore::Sqlite(dir.path().join("ledger.db"));
        drop(Ledger::open(&location, WallClock::new()).await.unwrap());
        let hold = crate::db::testing::hold_page_checks().await;
        let ledger = Ledger::open(&location, WallClock::new()).await.unwrap();
        let waiting = readiness(&ledger).await.unwrap_err();
        assert!(waiting.contains("being checked"), "{waiting}");
        drop(hold);
        ledger.checked().await.unwrap();
        readiness(&ledger).await.unwrap();

        crate::db::testing::damage_a_middle_page(&dir.path().join("ledger.db"))
            .await
            .unwrap();
        let damaged = Ledger::open(&location, WallClock::new()).await.unwrap();
        assert!(damaged.checked().await.is_err());
        let refused = readiness(&damaged).await.unwrap_err();
        assert!(refused.contains("damaged"), "{refused}");
    }
}
