//! The command line: parse flags, hand over to the library, print the outcome, pick an exit code.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use clap::{Args, CommandFactory, Parser, Subcommand};
use futures::StreamExt;

use acquire_digest::clock::{Clock, WallClock};
use acquire_digest::config::{self, Config, StateStore, Team};
use acquire_digest::ledger::{Ledger, Requester};
use acquire_digest::pipeline::{HookStatus, Pipeline};
use acquire_digest::schedule::{Span, Zone};
use acquire_digest::status::{self, Which};
use acquire_digest::telemetry::{self, LogFormat};
use acquire_digest::{check, daemon, demo, server, simulator};

#[derive(Parser)]
#[command(
    version = env!("ACQUIRE_DIGEST_VERSION"),
    about = "Posts each team's daily visitor-analytics digest from Acquire to Slack and webhooks"
)]
struct Cli {
    /// Log format on stderr: text, or json (one object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        ignore_case = true,
        env = "ACQUIRE_DIGEST_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate config.toml: everything that can be known before 9 am, all at once.
    Check(CheckArgs),
    /// Build and deliver digests now (default: every team, yesterday in its timezone).
    Once(OnceArgs),
    /// Run the daemon: every team's digest on its schedule, exactly once per day and webhook.
    Run(RunArgs),
    /// Serve a local simulator of Acquire's Visitor Analytics API.
    Simulate(SimulateArgs),
    /// What happened to each team's recent digests, from the ledger; exits 1 unless
    /// everything due was delivered, so it works as a monitoring check.
    Status(StatusArgs),
    /// Print example digests built from the built-in simulator: no config, network or keys.
    Demo,
    /// Print a shell completion script, e.g. `acquire-digest completions bash > /etc/bash_completion.d/acquire-digest`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Ask the running daemon to reload its config and say whether it took it: exits 1 when it
    /// was rejected (printing the problems), 2 when no daemon answered. For `ExecReload=`.
    Reload(EndpointArgs),
    /// Whether the running daemon is ready (its `/-/ready` answers 200): exits 0, else 1. For
    /// a container's HEALTHCHECK.
    Health(EndpointArgs),
    /// Post one digest, marked as a test, to a team's webhook(s) now; record nothing.
    Test(TryArgs),
    /// Print what a team's webhook(s) would show, with their own templates; post nothing.
    Preview(TryArgs),
}

#[derive(Args)]
struct TryArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The team, by its `name` in the config.
    #[arg(long, value_name = "NAME")]
    team: String,
    /// Only this webhook. Default: every webhook of the team.
    #[arg(long, value_name = "NAME")]
    webhook: Option<String>,
    /// The day, YYYY-MM-DD. Default: yesterday in the team's timezone.
    #[arg(long)]
    date: Option<NaiveDate>,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Also ask each account's API once with its key, and open and write the ledger.
    #[arg(long)]
    online: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Serve /metrics, /-/healthy, /-/ready and /-/reload here (overrides `[server] listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
struct EndpointArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The running daemon's HTTP endpoint, e.g. http://127.0.0.1:9187. Default: the config's
    /// `[server] listen` (an address on every interface is reached on loopback).
    #[arg(long, value_name = "URL")]
    url: Option<url::Url>,
}

impl EndpointArgs {
    fn url(&self, path: &str) -> anyhow::Result<url::Url> {
        let base = match &self.url {
            Some(url) => url.clone(),
            None => config::endpoint_of(&self.config.config).map_err(anyhow::Error::msg)?,
        };
        Ok(base.join(path)?)
    }
}

#[derive(Args)]
struct ConfigArg {
    /// The config file.
    #[arg(long, env = "ACQUIRE_DIGEST_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
}

#[derive(Args)]
struct OnceArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Only this team (repeatable). Default: every team.
    #[arg(long = "team", value_name = "NAME")]
    teams: Vec<String>,
    /// The day to report, YYYY-MM-DD; it must have ended in each team's timezone. Default:
    /// yesterday in each team's timezone.
    #[arg(long)]
    date: Option<NaiveDate>,
    /// Print each rendered payload to stdout, one JSON document per line labelled with its team
    /// and webhook ({"team", "webhook", "body"}); post and record nothing.
    #[arg(long)]
    dry_run: bool,
    /// Send again what the ledger lists as delivered, or whose outcome is unknown.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Only this team (repeatable). Default: every team.
    #[arg(long = "team", value_name = "NAME")]
    teams: Vec<String>,
    /// Only the digests that cover this day, YYYY-MM-DD. Default: the last days the daemon
    /// may still act on.
    #[arg(long)]
    date: Option<NaiveDate>,
    /// text for people, or json (one document) for scripts.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Args)]
struct SimulateArgs {
    /// Where to serve the simulated API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Added to every response.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fraction of requests (0-1) answered with a 503 maintenance page.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Accept only this bearer token (default: any non-empty one).
    #[arg(long, env = "ACQUIRE_SIMULATOR_API_KEY")]
    api_key: Option<String>,
    /// Make an account's day an outage (zeros), a spike (3×) or late (empty on the first read,
    /// half on the second); repeatable.
    #[arg(long = "event", value_name = "ACCOUNT:DATE:KIND")]
    events: Vec<simulator::SimulatedEvent>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logs(cli.log_format);
    // The daemon's errors are log events (one line, JSON when asked); a command's go to the
    // person who typed it.
    let logged = matches!(cli.command, Command::Run(_)) || cli.log_format == LogFormat::Json;
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(dispatch(cli.command, cli.log_format)) {
        Ok(code) => code,
        Err(e) if logged => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check(args) if args.online => check_online(&args.config.config).await,
        Command::Check(args) => Ok(check(&args.config.config)),
        Command::Once(args) => once(args, log_format == LogFormat::Json).await,
        Command::Run(args) => run(args).await,
        Command::Status(args) => status(args).await,
        Command::Simulate(args) => {
            if !(0.0..=1.0).contains(&args.fail_rate) {
                bail!("--fail-rate must be between 0 and 1");
            }
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            let addr = listener.local_addr()?;
            // Not eprintln!: a closed stderr must not take the simulator down with a panic.
            let _ = writeln!(
                std::io::stderr(),
                "Acquire API simulator on http://{addr}; point a team at it with\n  base_url = \"http://{addr}/{{account_id}}/api\""
            );
            let options = simulator::SimulatorOptions {
                latency: Duration::from_millis(args.latency_ms),
                fail_rate: args.fail_rate,
                api_key: args.api_key,
                events: args.events,
            };
            simulator::serve(listener, options, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload(args) => reload(&args).await,
        Command::Health(args) => health(&args).await,
        Command::Test(args) => {
            let config = load(&args.config.config)?;
            let tried = acquire_digest::trial::test(
                &config,
                &args.team,
                args.webhook.as_deref(),
                args.date,
            );
            let tried = tried.await?;
            for t in &tried {
                let _ = writeln!(std::io::stderr(), "{}: {}", t.label, t.text);
            }
            Ok(if tried.iter().all(|t| t.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Preview(args) => {
            let config = load(&args.config.config)?;
            let tried = acquire_digest::trial::preview(
                &config,
                &args.team,
                args.webhook.as_deref(),
                args.date,
            );
            for t in tried.await? {
                let _ = writeln!(std::io::stdout(), "┌─ {}\n\n{}", t.label, t.text);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            let bold = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let _ = write!(std::io::stdout(), "{}", demo::run(bold).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "acquire-digest", &mut script);
            let _ = std::io::stdout().write_all(&script);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `reload`: `POST /-/reload`, which answers once the daemon took or rejected the config.
async fn reload(args: &EndpointArgs) -> anyhow::Result<ExitCode> {
    const NO_DAEMON: u8 = 2;
    let url = match args.url("-/reload") {
        Ok(url) => url,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            return Ok(ExitCode::from(NO_DAEMON));
        }
    };
    // The daemon waits up to a minute for the reload to be taken.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(75))
        .build()?;
    let answer = match client.post(url.clone()).send().await {
        Ok(answer) => answer,
        Err(e) => {
            let why = acquire_digest::http::NoAnswer::of(
                &e,
                Duration::from_secs(75),
                Duration::from_secs(75),
            );
            let host = acquire_digest::http::host_of(&url);
            let _ = writeln!(
                std::io::stderr(),
                "error: no daemon answered at {host}: {} (is `acquire-digest run` serving there? --url or [server] listen)",
                why.cause
            );
            return Ok(ExitCode::from(NO_DAEMON));
        }
    };
    let status = answer.status();
    let said = answer.text().await.unwrap_or_default();
    if status.is_success() {
        let _ = write!(std::io::stdout(), "{said}");
        return Ok(ExitCode::SUCCESS);
    }
    let _ = write!(std::io::stderr(), "{said}");
    // 400 is the daemon's "rejected"; anything else (stopping, busy, not our daemon at all)
    // means no daemon took the question.
    Ok(match status {
        reqwest::StatusCode::BAD_REQUEST => ExitCode::FAILURE,
        _ => ExitCode::from(NO_DAEMON),
    })
}

/// `health`: `GET /-/ready`, 200 or not.
async fn health(args: &EndpointArgs) -> anyhow::Result<ExitCode> {
    let url = args.url("-/ready")?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    match client.get(url.clone()).send().await {
        Ok(answer) => {
            let ready = answer.status() == reqwest::StatusCode::OK;
            let said = answer.text().await.unwrap_or_default();
            let _ = write!(std::io::stdout(), "{said}");
            Ok(if ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(e) => {
            let why = acquire_digest::http::NoAnswer::of(
                &e,
                Duration::from_secs(10),
                Duration::from_secs(10),
            );
            let host = acquire_digest::http::host_of(&url);
            let _ = writeln!(
                std::io::stdout(),
                "not ready: no daemon answered at {host}: {}",
                why.cause
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `run`: the daemon, with its HTTP endpoint when one is configured. SIGHUP and
/// `POST /-/reload` feed the one reload channel the daemon listens on.
async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let shutdown = daemon::shutdown_signal()?;
    let mut hangups = daemon::reload_signal()?;
    let config = load(&args.config.config)?;
    telemetry::config_loaded(Ok(()));
    let (reload, reloads) = tokio::sync::mpsc::channel(4);
    let endpoint = match args.listen.or(config.listen) {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} (--listen or [server] listen)")
            })?;
            tracing::info!(
                "serving /metrics, /-/healthy, /-/ready and /-/reload on http://{}",
                listener.local_addr()?
            );
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let serving = tokio::spawn(server::serve(listener, reload.clone(), async {
                let _ = stopped.await;
            }));
            Some((stop, serving))
        }
        None => None,
    };
    tokio::spawn(async move {
        while let Some(source) = hangups.recv().await {
            if reload.send(source).await.is_err() {
                return;
            }
        }
    });
    daemon::run(args.config.config, config, reloads, shutdown).await?;
    // Serving until the daemon stopped lets a scrape see its last deliveries.
    if let Some((stop, serving)) = endpoint {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), serving).await;
    }
    Ok(ExitCode::SUCCESS)
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    let config = check::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    for short in located(path, config::short_api_keys(&config)) {
        tracing::warn!("{} (`check` refuses it)", said(path, &short));
    }
    for warning in located(path, config::warnings(&config)) {
        tracing::warn!("{}", said(path, &warning));
    }
    Ok(config)
}

/// `problems` with their places in the file at `path` found.
fn located(path: &std::path::Path, mut problems: Vec<config::Problem>) -> Vec<config::Problem> {
    if !problems.is_empty() {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        config::locate(&text, &mut problems);
    }
    problems
}

/// A problem as one line: `config.toml:12:1: team "apac".api_key: …`.
fn said(path: &std::path::Path, problem: &config::Problem) -> String {
    let file = path.display();
    let (place, message) = (&problem.place, &problem.message);
    match problem.at {
        Some(config::Position { line, column }) => {
            format!("{file}:{line}:{column}: {place}: {message}")
        }
        None => format!("{file}: {place}: {message}"),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match check::load(path) {
        Ok(config) if !config::short_api_keys(&config).is_empty() => {
            let problems = located(path, config::short_api_keys(&config));
            let errors = config::ConfigErrors {
                file: path.to_owned(),
                problems,
            };
            let _ = write!(std::io::stderr(), "{errors}");
            ExitCode::FAILURE
        }
        Ok(config) => {
            for warning in located(path, config::warnings(&config)) {
                let _ = writeln!(std::io::stderr(), "warning: {}", said(path, &warning));
            }
            // Written whole and errors ignored: `check | head` closes the pipe early.
            let _ = std::io::stdout().write_all(check_report(path, &config).as_bytes());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            let _ = write!(std::io::stderr(), "{errors}");
            ExitCode::FAILURE
        }
    }
}

fn check_report(path: &std::path::Path, config: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let n = config.teams.len();
    let _ = writeln!(
        out,
        "{}: OK, {n} team{}",
        path.display(),
        if n == 1 { "" } else { "s" }
    );
    let now = Utc::now();
    // 100,000 teams share a few hundred schedules and zones: working out and wording each
    // one's next firing was a quarter of `check`.
    let mut next_digests = HashMap::new();
    for team in &config.teams {
        let hooks: Vec<String> = team
            .webhooks
            .iter()
            .map(|h| format!("{} ({})", h.name, h.url))
            .collect();
        let next = next_digests
            .entry((team.schedule.as_str(), team.zone))
            .or_insert_with(|| acquire_digest::ledger::owed::describe_next(team, now));
        let _ = writeln!(
            out,
            "  {}: {} in {}; next digest {next}; to {}",
            team.name,
            team.schedule.as_str(),
            team.zone,
            hooks.join(", ")
        );
    }
    out
}

/// `check --online`: the offline check, then each account's API asked once per key, and the
/// ledger opened and written. Fails when anything is rejected or unreachable.
async fn check_online(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            let _ = write!(std::io::stderr(), "{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut out = check_report(path, &config);
    let mut ok = true;
    // One request per account and key, however many teams share them.
    let client = acquire_digest::fetch::Client::with_retry(
        config.timeout,
        config.concurrency,
        acquire_digest::http::RetryPolicy::within(Duration::ZERO),
    );
    let mut asked: Vec<(&Team, Vec<&str>)> = Vec::new();
    for team in &config.teams {
        match asked
            .iter_mut()
            .find(|(first, _)| first.api_base == team.api_base && first.api_key == team.api_key)
        {
            Some((_, names)) => names.push(&team.name),
            None => asked.push((team, vec![&team.name])),
        }
    }
    // The ledger beside the accounts: its first write waits for every page to be read.
    let written = async {
        let ledger = Ledger::open(&config.state, WallClock::new()).await?;
        // A write that changes nothing: it still needs the file's write lock.
        let nothing = acquire_digest::ledger::Key::new("", Span::day(Utc::now().date_naive()), "");
        ledger.expire(&nothing).await.map(drop)
    };
    let (answers, written) = tokio::join!(
        futures::future::join_all(asked.iter().map(|(team, _)| client.check_key(team))),
        written
    );
    for ((team, names), answer) in asked.iter().zip(answers) {
        let who = format!("account {} (team {})", team.account_id, names.join(", "));
        let line = match answer {
            Ok(()) => format!("  {who}: API key accepted"),
            Err(e) => {
                ok = false;
                match e.problem {
                    acquire_digest::fetch::Problem::Unauthorized(status) => format!(
                        "  {who}: API key REJECTED (HTTP {status}): fix api_key / api_key_env"
                    ),
                    _ => format!("  {who}: could not check the API key: {e}"),
                }
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    match written.map_err(anyhow::Error::from) {
        Ok(()) => out.push_str(&format!("  ledger {}: opened and written\n", config.state)),
        Err(e) => {
            ok = false;
            out.push_str(&format!("  ledger: FAILED: {e:#}\n"));
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The teams `--team` names, every team without it; an error naming each unknown one.
fn chosen_teams<'a>(config: &'a Config, names: &[String]) -> anyhow::Result<Vec<&'a Team>> {
    let unknown: Vec<String> = names
        .iter()
        .filter(|name| !config.teams.iter().any(|t| &t.name == *name))
        .map(|name| format!("{name:?}"))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = config.teams.iter().map(|t| t.name.as_str()).collect();
        bail!(
            "no team named {}: the config has {}",
            unknown.join(", "),
            known.join(", ")
        );
    }
    Ok((config.teams.iter())
        .filter(|team| names.is_empty() || names.contains(&team.name))
        .collect())
}

/// The span each team's digest covers: the one containing `date`, or the latest by `now`.
/// Once for each schedule and zone: a span is a few searches of the schedule, and 100,000
/// teams share a few dozen schedules and zones.
fn spans_of(teams: &[&Team], date: Option<NaiveDate>, now: DateTime<Utc>) -> Vec<Span> {
    let mut known: HashMap<(&str, Zone), Span> = HashMap::new();
    (teams.iter())
        .map(|team| {
            let key = (team.schedule.as_str(), team.zone);
            *known.entry(key).or_insert_with(|| match date {
                Some(date) => team.schedule.span_containing(team.zone, date),
                None => team.schedule.latest_span(team.zone, now),
            })
        })
        .collect()
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = load(&args.config.config)?;
    let teams = chosen_teams(&config, &args.teams)?;
    if let StateStore::Sqlite(path) = &config.state
        && !path.exists()
    {
        bail!(
            "no delivery ledger at {}: nothing has been delivered from this config yet (`run` and `once` create it)",
            path.display()
        );
    }
    let ledger = Ledger::open_to_read(&config.state, WallClock::new()).await?;
    let now = Utc::now();
    let which = args.date.map_or(Which::recent(now), Which::Containing);
    // By the spans that contain the day, as `once` refuses it: a week's digest ending after
    // what was forgotten is still there. A ledger of an older version, not yet upgraded, has
    // forgotten nothing.
    if let Some(date) = args.date
        && let Some(forgotten) = ledger.forgotten_before().await.ok().flatten()
        && (spans_of(&teams, Some(date), now).iter()).any(|span| span.last < forgotten)
    {
        // On stderr: the JSON on stdout stays one document.
        let _ = writeln!(
            std::io::stderr(),
            "--date {date}: the ledger has forgotten the digests that ended before {forgotten} ([state] keep_days), so it may no longer hold this day's"
        );
    }
    let status = status::read(&ledger, &teams, now, which).await?;
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&status)?,
        Format::Text => status.to_string(),
    };
    // A closed pipe (`status | head`) is not a failure of the check.
    let _ = writeln!(std::io::stdout(), "{}", text.trim_end());
    Ok(if status.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn once(args: OnceArgs, json: bool) -> anyhow::Result<ExitCode> {
    let config = load(&args.config.config)?;
    let teams = chosen_teams(&config, &args.teams)?;
    let clock: Arc<dyn Clock> = WallClock::new();
    let now = clock.now();
    // The digest the daemon sends for that day, under the same ledger key and webhook-id, so
    // a span never goes out in two shapes: the one containing --date, or the latest.
    // The API and the ledger both start long after; far-off years overflow date arithmetic.
    if let Some(date) = args.date
        && date.year() < 2000
    {
        bail!("--date {date} is before 2000: pick a day in the account's history");
    }
    let spans = spans_of(&teams, args.date, now);
    // A span that hasn't ended yet would be posted partial, recorded, and the real digest
    // skipped: refuse before anything is sent.
    if let Some(date) = args.date {
        let unfinished: Vec<String> = (teams.iter().zip(&spans))
            .filter(|(team, span)| span.ends(team.zone) > now)
            .map(|(team, span)| {
                format!(
                    "{} (its digest covers {span}, which ends at {} {} local time)",
                    team.name,
                    team.zone
                        .local(span.ends(team.zone))
                        .format("%Y-%m-%d %H:%M"),
                    team.zone,
                )
            })
            .collect();
        if !unfinished.is_empty() {
            bail!(
                "--date {date} has not ended yet for {}; a digest of part of it would be recorded and the real one skipped: pick a day that has ended",
                unfinished.join(", ")
            );
        }
    }
    let ledger = if args.dry_run {
        None
    } else {
        let ledger = Ledger::open(&config.state, clock.clone()).await?;
        // Said once here, not by every team's first write.
        ledger.checked().await?;
        // Its record may be gone: a digest sent then would go out again, unasked.
        if let Some(date) = args.date.filter(|_| !args.force)
            && let Some(forgotten) = ledger.forgotten_before().await?
            && spans.iter().any(|span| span.last < forgotten)
        {
            bail!(
                "--date {date} is older than the ledger remembers: it has forgotten the digests that ended before {forgotten} ([state] keep_days), so whether this one was sent is no longer known: add --force to send it anyway, or --dry-run to see it"
            );
        }
        Some(ledger)
    };
    let mut pipeline = Pipeline::new(&config, ledger.clone(), clock.clone());
    if args.dry_run
        && let Some(history) = history_for_a_dry_run(&config.state, clock).await
    {
        pipeline = pipeline.reading_history(history);
    }
    let requester = Requester::Admin { force: args.force };
    let runs = teams.into_iter().zip(spans).map(|(team, span)| {
        let (pipeline, team) = (pipeline.clone(), team.clone());
        let name = team.name.clone();
        // Spawned, not polled here: on the worker threads teams use every core, and
        // malloc there doesn't wade through what parsing a large config.toml left behind
        // in the main thread's heap (a third of the CPU at 10,000 teams). Boxed, so the task
        // tokio moves around (into its cell, through each of its stages) is a pointer, not
        // the run's kilobytes: those copies were 6% of a dry run's instructions.
        let run = tokio::spawn(async move { Box::pin(pipeline.run(&team, span, requester)).await });
        // A bug in one team's run is that team's failure; the others still report.
        async move {
            run.await.map_err(|e| {
                format!("{name} {span}: FAILED, no digest sent: a bug stopped the run ({e})")
            })
        }
    });
    // Twice the upstream cap keeps every request slot busy while other teams deliver; more
    // teams in flight would only hold memory, so 10,000 teams run in the space of 64.
    let mut reports = futures::stream::iter(runs).buffer_unordered(config.concurrency * 2);

    // writeln!, not println!: `once --dry-run | head` closes the pipe, and a digest must not
    // go undelivered (or a run panic) because nobody reads the summary any more.
    let mut ok = true;
    while let Some(report) = reports.next().await {
        let report = match report {
            Ok(report) => report,
            Err(line) => {
                ok = false;
                if json {
                    tracing::error!("{line}");
                } else {
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
                continue;
            }
        };
        ok &= report.is_ok();
        if let Ok(hooks) = &report.outcome {
            for hook in hooks {
                if let HookStatus::DryRun(body) = &hook.status {
                    #[derive(serde::Serialize)]
                    struct Labelled<'a> {
                        team: &'a str,
                        webhook: &'a str,
                        body: &'a serde_json::Value,
                    }
                    let labelled = Labelled {
                        team: &report.team,
                        webhook: &hook.webhook,
                        body,
                    };
                    let mut line = serde_json::to_vec(&labelled).expect("a body serializes");
                    line.push(b'\n');
                    let _ = std::io::stdout().write_all(&line);
                }
            }
        }
        if json {
            report.log(false);
            continue;
        }
        // One write a line: stderr is unbuffered, and writeln! writes the newline apart.
        for line in report.summary_lines() {
            let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The ledger's kept reports for a dry run to compare with, read only. A SQLite ledger that
/// isn't there yet is left uncreated: a dry run leaves no file behind.
async fn history_for_a_dry_run(state: &StateStore, clock: Arc<dyn Clock>) -> Option<Ledger> {
    if let StateStore::Sqlite(path) = state
        && !path.exists()
    {
        return None;
    }
    match Ledger::open_to_read(state, clock).await {
        Ok(ledger) => Some(ledger),
        Err(e) => {
            tracing::warn!("comparisons fetch every earlier span: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21: `--help` explains every flag and argument of every subcommand.
    #[test]
    fn every_flag_has_help() {
        fn undocumented(command: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && !matches!(id, "help" | "version") {
                    out.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                undocumented(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "acquire-digest", &mut missing);
        assert!(missing.is_empty(), "no help: {missing:?}");
    }
}
