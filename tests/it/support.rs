//! Loopback servers and helpers shared by the integration tests.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A webhook URL as logs and summaries show it: scheme, host, port and a fingerprint.
pub fn shown(url: &str) -> String {
    acquire_digest::config::WebhookUrl::parse(url)
        .unwrap()
        .to_string()
}

/// Starts `router` on 127.0.0.1:0 for the rest of the test process.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// One scripted answer: status, headers, body, and a delay before answering.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (StatusCode::from_u16(self.status).unwrap(), self.body).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        response
    }
}

/// A request the scripted server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When the request arrived.
    pub at: std::time::Instant,
    /// When its answer was handed back; None while the server is still answering it.
    pub answered: Option<std::time::Instant>,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Script {
    /// Answers per path suffix, used in order; the last one repeats.
    replies: HashMap<String, VecDeque<Reply>>,
    seen: Vec<Seen>,
    in_flight: usize,
    most_in_flight: usize,
}

/// A loopback HTTP server that answers from a script and records what it was sent: the webhook
/// receiver, and a stand-in for Acquire when a test needs answers the simulator never gives.
#[derive(Clone)]
pub struct Scripted {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    default: Reply,
}

impl Scripted {
    /// Answers `default` to any path without a script.
    pub async fn start(default: Reply) -> Scripted {
        let script = Arc::new(Mutex::new(Script::default()));
        let state = (script.clone(), default.clone());
        let router = Router::new().fallback(handle).with_state(state);
        let addr = serve(router).await;
        Scripted {
            addr,
            script,
            default,
        }
    }

    /// A Slack-like webhook receiver: `200 ok` unless scripted otherwise.
    pub async fn webhooks() -> Scripted {
        Scripted::start(Reply::new(200, "ok")).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers requests whose path ends with `suffix` with `replies` in turn, then the last
    /// one forever.
    pub fn script(&self, suffix: &str, replies: Vec<Reply>) {
        self.script
            .lock()
            .unwrap()
            .replies
            .insert(suffix.to_owned(), replies.into());
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }

    /// The most requests this server was answering at one moment.
    pub fn most_in_flight(&self) -> usize {
        self.script.lock().unwrap().most_in_flight
    }

    /// The paths under `prefix` that were on the wire when a process was killed at `killed`:
    /// unanswered, or answered within a moment before, which the killed process may not have
    /// read or recorded yet (its record can wait behind other ledger work; one answer in six
    /// trials was recorded 50-250 ms late, debug build).
    pub fn on_the_wire_at(&self, prefix: &str, killed: std::time::Instant) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.starts_with(prefix))
            .filter(|s| {
                s.answered
                    .is_none_or(|at| at + Duration::from_millis(250) > killed)
            })
            .map(|s| s.path)
            .collect()
    }

    /// After a kill and a restart: each of `paths` got its digest at most twice, and twice
    /// only if it was on the wire at the kill. Returns how many got two.
    pub fn assert_resent_only_what_was_on_the_wire(
        &self,
        paths: &[String],
        on_wire: &[String],
        log: &dyn Fn() -> String,
    ) -> usize {
        let mut duplicates = 0;
        for path in paths {
            let copies = self.seen_at(path).len();
            assert!(copies <= 2, "{path} got {copies}:\n{}", log());
            if copies == 2 {
                duplicates += 1;
                assert!(
                    on_wire.contains(path),
                    "{path} was answered before the kill, yet sent again:\n{}",
                    log()
                );
            }
        }
        duplicates
    }

    pub fn seen_at(&self, suffix: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.ends_with(suffix))
            .collect()
    }
}

async fn handle(
    State((script, default)): State<(Arc<Mutex<Script>>, Reply)>,
    request: Request,
) -> Reply {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts.uri.path().to_owned();
    let index;
    let reply = {
        let mut script = script.lock().unwrap();
        script.in_flight += 1;
        script.most_in_flight = script.most_in_flight.max(script.in_flight);
        index = script.seen.len();
        script.seen.push(Seen {
            at: std::time::Instant::now(),
            answered: None,
            path: path.clone(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: parts.headers,
            body,
        });
        let queue = script
            .replies
            .iter_mut()
            .find(|(suffix, _)| path.ends_with(suffix.as_str()))
            .map(|(_, queue)| queue);
        match queue {
            Some(queue) if queue.len() > 1 => queue.pop_front().unwrap(),
            Some(queue) => queue.front().cloned().unwrap_or(default),
            None => default,
        }
    };
    tokio::time::sleep(reply.delay).await;
    let mut script = script.lock().unwrap();
    script.in_flight -= 1;
    if let Some(seen) = script.seen.get_mut(index) {
        seen.answered = Some(std::time::Instant::now());
    }
    reply
}

/// The body of a successful Acquire report with these rows.
pub fn report(key: &str, rows: Value) -> String {
    serde_json::json!({"data": {key: {"data": {"graphRow": {"data": rows}}, "success": true, "output": "json"}}})
        .to_string()
}

/// A fresh folder with a config.toml in it.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new(config: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        Workspace { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> PathBuf {
        self.path("config.toml")
    }

    /// Runs the binary in this folder with a clean environment plus `env`.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        run_in(self.dir.path(), args, env)
    }
}

pub fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_acquire-digest"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("ACQUIRE_DIGEST_CONFIG")
        .env("RUST_LOG", "debug");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// [`run_in`] off the test's runtime, so the loopback servers on it keep answering.
pub async fn run_beside(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let owned = |pairs: &[&str]| pairs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (dir, args) = (dir.to_owned(), owned(args));
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_in(&dir, &args, &env)
    })
    .await
    .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A `[[teams]]` block with the given webhooks (kind, url).
/// A team in Kolkata at 09:00, without insights (their baseline requests would change every
/// count of requests); [`with_insights`] turns them on.
pub fn team(name: &str, account: &str, hooks: &[(&str, &str)]) -> String {
    let mut text = format!(
        r#"
[[teams]]
name = "{name}"
account_id = "{account}"
api_key = "test-key-{name}"
timezone = "Asia/Kolkata"
insights = []
schedule = "0 9 * * *"
"#
    );
    for (kind, url) in hooks {
        text.push_str(&format!(
            "\n[[teams.webhooks]]\nkind = \"{kind}\"\nurl = \"{url}\"\n"
        ));
    }
    text
}

/// A config whose `[acquire] base_url` is `base_url`, with quick retries so failing tests
/// finish in seconds.
pub fn config(base_url: &str, teams: &[String]) -> String {
    format!(
        "[acquire]\nbase_url = \"{base_url}\"\nretry_budget_secs = 2\n\n[delivery]\nretry_budget_secs = 2\n\n[state]\npath = \"ledger.db\"\n{}",
        teams.concat()
    )
}

/// The daemon as a child process, its stderr collected as it runs.
pub struct Daemon {
    pub child: std::process::Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn start(work: &Workspace) -> Daemon {
        Daemon::start_in(work, &[])
    }

    /// The daemon run by `wrapper` (e.g. `unshare --pid --fork`), which it is the child of.
    pub fn start_in(work: &Workspace, wrapper: &[&str]) -> Daemon {
        Daemon::start_with(work, wrapper, &[])
    }

    pub fn start_with(work: &Workspace, wrapper: &[&str], env: &[(&str, &str)]) -> Daemon {
        use std::io::BufRead;
        let binary = env!("CARGO_BIN_EXE_acquire-digest");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command.envs(env.iter().copied());
        let mut child = command
            .args(["run", "--config", "config.toml"])
            .current_dir(work.dir.path())
            .env_remove("ACQUIRE_DIGEST_CONFIG")
            .env("RUST_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `text` (panics with the log after `timeout`).
    pub async fn wait_for_log(&self, text: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {text:?} in the daemon's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; None if it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `done()`, or panics after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, done: impl FnMut() -> bool) {
    wait_until_or_show(what, timeout, done, String::new).await
}

/// [`wait_until`], whose panic shows `context()` (a daemon's log) as it is then.
pub async fn wait_until_or_show(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fixed offset where it is now about `hour` o'clock, so a test of a few seconds never
/// straddles a local midnight (and rightly sees two days).
pub fn zone_at(hour: i64) -> (String, chrono::FixedOffset) {
    let hours = (hour - chrono::Timelike::hour(&chrono::Utc::now()) as i64 + 36) % 24 - 12;
    let offset = chrono::FixedOffset::east_opt(hours as i32 * 3600).unwrap();
    let sign = if hours < 0 { '-' } else { '+' };
    (format!("{sign}{:02}:00", hours.abs()), offset)
}

/// The daemon's HTTP endpoint's base URL, from the line it logs when it starts serving.
pub async fn endpoint(daemon: &Daemon) -> String {
    let marker = "/-/reload on http://";
    daemon.wait_for_log(marker, Duration::from_secs(20)).await;
    let log = daemon.log();
    let at = log.find(marker).unwrap() + marker.len();
    let addr: String = (log[at..].chars())
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    format!("http://{addr}")
}

/// The test PostgreSQL server `scripts/with-postgres` started. Outside CI, None (the test
/// says it skipped); in CI its absence fails the test.
pub fn test_database_url() -> Option<String> {
    match std::env::var("ACQUIRE_DIGEST_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!(
                "ACQUIRE_DIGEST_TEST_DATABASE_URL is not set: in CI the tests need PostgreSQL (run them through scripts/with-postgres)"
            )
        }
        Err(_) => {
            eprintln!("skipped: needs PostgreSQL (run the tests through scripts/with-postgres)");
            None
        }
    }
}

/// `config`'s text with the ledger in the PostgreSQL database named by $ACQUIRE_DIGEST_DATABASE_URL.
pub fn on_postgres(config: String) -> String {
    config.replace(
        "[state]\npath = \"ledger.db\"",
        "[state]\nurl_env = \"ACQUIRE_DIGEST_DATABASE_URL\"",
    )
}

/// The daemon in this test's process, on a wall clock that starts at `at` and that the test
/// can jump.
pub struct InProcess {
    stop: tokio::sync::oneshot::Sender<()>,
    daemon: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    pub fn start(
        work: &Workspace,
        at: chrono::DateTime<chrono::Utc>,
    ) -> (std::sync::Arc<acquire_digest::daemon::WallClock>, InProcess) {
        use acquire_digest::daemon::{Clock, WallClock, serve};
        let loaded = acquire_digest::config::load(&work.config()).unwrap();
        let clock = WallClock::starting_at(at);
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let path = work.config();
        let daemon = tokio::spawn({
            let clock: std::sync::Arc<dyn Clock> = clock.clone();
            async move {
                let _reloads_open = reload_tx;
                serve(&path, loaded, clock, reloads, async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        (clock, InProcess { stop, daemon })
    }

    pub async fn finish(self) {
        self.stop.send(()).unwrap();
        self.daemon.await.unwrap().unwrap();
    }

    /// What the daemon ended with, having stopped by itself.
    pub async fn ended(self) -> anyhow::Result<()> {
        self.daemon.await.unwrap()
    }
}

/// A [`team`] with the default insights: what moved and unusual days.
pub fn with_insights(team: String) -> String {
    team.replace("insights = []\n", "")
}

/// Jumps an in-process daemon's clock 8 minutes at a time until `sent()` is true, for a digest
/// that waits for its data; the minutes it took (at most two hours, else the test fails).
pub async fn minutes_until(
    clock: &acquire_digest::daemon::WallClock,
    mut sent: impl FnMut() -> bool,
) -> u32 {
    let mut minutes = 0;
    while !sent() {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        clock.jump(chrono::Duration::minutes(8));
        minutes += 8;
        assert!(minutes <= 120, "not sent after two hours");
    }
    minutes
}

/// Makes the workspace's SQLite ledger (`ledger.db`) as the binary would, then runs `sql` on
/// it behind its back, as a person with a SQL shell would; its URL, for more.
pub async fn ledger_with(work: &Workspace, sql: &str) -> String {
    use acquire_digest::{clock::WallClock, config::StateStore, db::testing, ledger::Ledger};
    let location = StateStore::Sqlite(work.path("ledger.db"));
    drop(Ledger::open(&location, WallClock::new()).await.unwrap());
    let url = testing::sqlite_file_url(&work.path("ledger.db"));
    testing::execute_at(&url, sql).await.unwrap();
    url
}
