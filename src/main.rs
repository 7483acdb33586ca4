//! The command line: parse flags, hand over to the library, print the outcome, pick an exit code.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{Datelike, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;

use acquire_digest::clock::{Clock, WallClock};
use acquire_digest::config::{self, Config, Team};
use acquire_digest::ledger::Ledger;
use acquire_digest::pipeline::{HookStatus, Mode, Pipeline};
use acquire_digest::schedule::{Span, Window};
use acquire_digest::{check, daemon, demo, simulator};

#[derive(Parser)]
#[command(
    version,
    about = "Posts each team's daily visitor-analytics digest from Acquire to Slack and webhooks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate config.toml: everything that can be known before 9 am, all at once.
    Check(ConfigArg),
    /// Build and deliver digests now (default: every team, yesterday in its timezone).
    Once(OnceArgs),
    /// Run the daemon: every team's digest on its schedule, exactly once per day and webhook.
    Run(ConfigArg),
    /// Serve a local simulator of Acquire's Visitor Analytics API.
    Simulate(SimulateArgs),
    /// Print example digests built from the built-in simulator: no config, network or keys.
    Demo,
    /// Post one digest, marked as a test, to a team's webhook(s) now; record nothing.
    Test(TryArgs),
    /// Print what a team's webhook(s) would show, with their own templates; post nothing.
    Preview(TryArgs),
}

#[derive(Args)]
struct TryArgs {
    #[command(flatten)]
    config: ConfigArg,
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
struct SimulateArgs {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check(args) => Ok(check(&args.config)),
        Command::Once(args) => once(args).await,
        Command::Run(args) => {
            let shutdown = daemon::shutdown_signal()?;
            let reloads = daemon::reload_signal()?;
            let config = load(&args.config)?;
            daemon::run(args.config, config, reloads, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
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
            };
            simulator::serve(listener, options, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
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
            print!("{}", demo::run(bold).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    check::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))
}

fn check(path: &std::path::Path) -> ExitCode {
    match check::load(path) {
        Ok(config) => {
            println!(
                "{}: OK, {} team{}",
                path.display(),
                config.teams.len(),
                if config.teams.len() == 1 { "" } else { "s" }
            );
            let now = Utc::now();
            for team in &config.teams {
                let hooks: Vec<String> = team
                    .webhooks
                    .iter()
                    .map(|h| format!("{} ({})", h.name, h.url))
                    .collect();
                println!(
                    "  {}: {} in {}; next digest {}; to {}",
                    team.name,
                    team.schedule.as_str(),
                    team.zone,
                    daemon::describe_next(team, now),
                    hooks.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprint!("{errors}");
            ExitCode::FAILURE
        }
    }
}

async fn once(args: OnceArgs) -> anyhow::Result<ExitCode> {
    let config = load(&args.config.config)?;
    let unknown: Vec<&String> = args
        .teams
        .iter()
        .filter(|name| !config.teams.iter().any(|t| &t.name == *name))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = config.teams.iter().map(|t| t.name.as_str()).collect();
        bail!(
            "no team named {}: the config has {}",
            unknown
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            known.join(", ")
        );
    }
    let clock: Arc<dyn Clock> = WallClock::new();
    let now = clock.now();
    let teams: Vec<&Team> = config
        .teams
        .iter()
        .filter(|team| args.teams.is_empty() || args.teams.contains(&team.name))
        .collect();
    // A day that hasn't ended yet would be posted partial, recorded, and the real digest
    // skipped: refuse before anything is sent.
    if let Some(date) = args.date {
        // The API and the ledger both start long after; far-off years overflow date arithmetic.
        if date.year() < 2000 {
            bail!("--date {date} is before 2000: pick a day in the account's history");
        }
        let unfinished: Vec<String> = teams
            .iter()
            .filter(|team| Span::day(date).ends(team.zone) > now)
            .map(|team| {
                let ends = Span::day(date).ends(team.zone);
                format!(
                    "{} ({}: it ends at {} local time)",
                    team.name,
                    team.zone,
                    team.zone.local(ends).format("%Y-%m-%d %H:%M")
                )
            })
            .collect();
        if !unfinished.is_empty() {
            bail!(
                "--date {date} has not ended yet for {}; a digest of part of a day would be recorded and the real one skipped: pick a day that has ended",
                unfinished.join(", ")
            );
        }
    }
    let ledger = if args.dry_run {
        None
    } else {
        Some(Ledger::open(&config.ledger_path, clock.clone())?)
    };
    let pipeline = Pipeline::new(&config, ledger, clock);
    let mode = if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Admin { force: args.force }
    };
    let runs = teams.into_iter().map(|team| {
        let span = args
            .date
            .map_or_else(|| Window::yesterday(team.zone, now).span, Span::day);
        let (pipeline, team) = (pipeline.clone(), team.clone());
        let name = team.name.clone();
        // Spawned, not polled here: on the worker threads teams use every core, and
        // malloc there doesn't wade through what parsing a large config.toml left behind
        // in the main thread's heap (a third of the CPU at 10,000 teams).
        let run = tokio::spawn(async move { pipeline.run(&team, span, mode).await });
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
                let _ = writeln!(std::io::stderr(), "{line}");
                continue;
            }
        };
        ok &= report.is_ok();
        if let Ok(hooks) = &report.outcome {
            for hook in hooks {
                if let HookStatus::DryRun(body) = &hook.status {
                    let labelled = serde_json::json!({"team": report.team, "webhook": hook.webhook, "body": body});
                    let _ = writeln!(std::io::stdout(), "{labelled}");
                }
            }
        }
        for line in report.summary_lines() {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
