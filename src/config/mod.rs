//! `config.toml`, parsed once into types that cannot hold an invalid value.
//!
//! Loading collects every problem it can find (syntax, unknown keys, bad values, unset
//! environment variables, broken templates) so `check` reports them all in one go; nothing
//! downstream re-validates.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::schedule::{Comparison, Schedule, Schedules, Zone};

mod places;

pub use places::Position;

pub const DEFAULT_BASE_URL: &str = "https://{account_id}.acquire.io/api";
pub const DEFAULT_PATH: &str = "config.toml";

// The bounds keep every config value small enough that date and timer arithmetic on it cannot
// overflow downstream, which is why nothing after `parse` checks them again.

/// A digest delivered more than a week late has lost its use, and an unbounded window
/// overflows the daemon's date arithmetic: the longest `catch_up` a config may set.
pub const MAX_CATCH_UP: Duration = Duration::from_secs(7 * 24 * 3600);
const CATCH_UP_ADVICE: &str =
    "use at most 7 days, e.g. \"12h\" or \"7d\" (\"0\" turns catch-up off)";
/// Faster would hammer a webhook or Acquire while it is down; slower than a day would miss
/// every retry within a catch-up window.
const RETRY_EVERY: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(24 * 3600));
const RECHECK: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(3600));
const RECHECK_ADVICE: &str =
    "use at least 10 seconds and at most 1 hour, e.g. \"15m\", or \"0\" to send at once";
const RETRY_EVERY_ADVICE: &str = "use at least 10 seconds and at most 1 day, e.g. \"10m\"";
/// A request that has not answered in 10 minutes has hung.
const MAX_TIMEOUT_SECS: u64 = 600;
/// Past an hour of retrying the digest is late anyway; the daemon's catch-up takes over.
const MAX_RETRY_BUDGET_SECS: u64 = 3600;
/// Webhook names end up in log lines, summaries and the ledger.
const MAX_WEBHOOK_NAME_CHARS: usize = 64;
/// Far more than any digest template needs, and small enough that a path naming a large file
/// can't take the daemon's memory.
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

/// A credential: API keys and webhook URLs. It never prints itself, so it cannot leak into a
/// log line or an error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A webhook URL is a credential (Slack's carries the token in its path), so only its scheme,
/// host, port and a short fingerprint are ever shown: enough to tell two Slack hooks apart.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text.trim()).map_err(|e| format!("is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "must be an http:// or https:// URL, not a {}: URL",
                url.scheme()
            ));
        }
        Ok(WebhookUrl(url))
    }
    pub fn expose(&self) -> &Url {
        &self.0
    }
    /// A short digest of the whole URL: tells two webhooks (or a changed URL) apart without
    /// showing the credential.
    pub fn fingerprint(&self) -> String {
        sha256_hex(self.0.as_str().as_bytes())[..12].to_owned()
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{} #{}",
            self.0.scheme(),
            self.0.host_str().unwrap_or("?"),
            self.0.port_or_known_default().unwrap_or(0),
            &self.fingerprint()[..8]
        )
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

/// SHA-256 in hex: fingerprints of credentials and stable ids, not secrecy.
pub fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    // Not a format! a byte: every log line naming a webhook makes one of these.
    (digest.as_ref().iter())
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// An Acquire account id: it becomes part of a host name, so it must be one DNS label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text.len() <= 63
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if valid {
            Ok(AccountId(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{text:?} is not a DNS label: use 1-63 letters, digits and hyphens, not starting or ending with a hyphen (the part before .acquire.io)"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookKind {
    Slack,
    Generic,
    Discord,
    Teams,
    GoogleChat,
    Mattermost,
}

impl WebhookKind {
    pub const ALL: [WebhookKind; 6] = [
        WebhookKind::Slack,
        WebhookKind::Generic,
        WebhookKind::Discord,
        WebhookKind::Teams,
        WebhookKind::GoogleChat,
        WebhookKind::Mattermost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::Slack => "slack",
            WebhookKind::Generic => "generic",
            WebhookKind::Discord => "discord",
            WebhookKind::Teams => "teams",
            WebhookKind::GoogleChat => "google_chat",
            WebhookKind::Mattermost => "mattermost",
        }
    }

    fn parse(text: &str) -> Option<WebhookKind> {
        WebhookKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

const KINDS: &str =
    "\"slack\", \"discord\", \"teams\", \"google_chat\", \"mattermost\" or \"generic\"";

/// A webhook's own template, as read from the file its config names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFile {
    pub path: PathBuf,
    pub source: String,
}

impl TemplateFile {
    /// Reads a template that must be a regular file of at most [`MAX_TEMPLATE_BYTES`]. Opened
    /// without blocking, so a FIFO is refused at once instead of hanging `check`, and a
    /// device such as /dev/urandom is refused instead of read until memory runs out.
    pub fn read(path: &Path) -> Result<TemplateFile, String> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| format!("cannot read {} ({e})", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read {} ({e})", path.display()))?;
        if !meta.is_file() {
            return Err(format!(
                "{} is not a regular file: a template must be a file",
                path.display()
            ));
        }
        let mut source = String::new();
        file.take(MAX_TEMPLATE_BYTES + 1)
            .read_to_string(&mut source)
            .map_err(|e| format!("cannot read {} ({e})", path.display()))?;
        if source.len() as u64 > MAX_TEMPLATE_BYTES {
            return Err(format!(
                "{} is larger than {} KiB: a template must be smaller",
                path.display(),
                MAX_TEMPLATE_BYTES / 1024
            ));
        }
        Ok(TemplateFile {
            path: path.to_owned(),
            source,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Webhook {
    /// The webhook's name in the ledger and in summaries: `name`, or its kind (`slack`,
    /// `generic`) when it is the team's only webhook of that kind. A team with several
    /// webhooks of one kind must name each of them: the ledger records deliveries by name, so
    /// a default that depended on position would hand one webhook's record to another when the
    /// list changes. 1 to 64 characters, no control characters, unique within the team.
    pub name: String,
    pub kind: WebhookKind,
    pub url: WebhookUrl,
    pub template: Option<TemplateFile>,
    /// A generic webhook's Standard Webhooks signing secret (`whsec_` + base64).
    pub secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct Team {
    pub name: String,
    pub account_id: AccountId,
    pub api_base: Url,
    pub api_key: Secret,
    pub zone: Zone,
    pub schedule: Schedule,
    pub top: usize,
    pub catch_up: Duration,
    /// The earlier spans each digest is compared with (`compare`, default both).
    pub compare: Vec<Comparison>,
    /// What the digest says beyond the figures (`insights`, default both).
    pub insights: Insights,
    /// How long the daemon waits before reading again data that looked incomplete; zero
    /// sends it at once, marked provisional.
    pub recheck: Duration,
    /// A span with no visitors posts nothing and is recorded as skipped.
    pub skip_empty: bool,
    pub webhooks: Vec<Webhook>,
}

/// `insights`: which lines a digest adds to its figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insights {
    /// "What moved": the rows that drove a total's change against the previous span.
    pub moved: bool,
    /// "Unusual": a total far from what its weekday usually has (and the wait for data that
    /// looks incomplete).
    pub unusual: bool,
}

impl Insights {
    pub const NONE: Insights = Insights {
        moved: false,
        unusual: false,
    };

    fn with(self, name: &str) -> Result<Insights, String> {
        match name {
            "moved" => Ok(Insights {
                moved: true,
                ..self
            }),
            "unusual" => Ok(Insights {
                unusual: true,
                ..self
            }),
            other => Err(format!(
                "unknown insight {other:?}: use \"moved\" and/or \"unusual\", or [] for none"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Per request to Acquire.
    pub timeout: Duration,
    /// How long one fetch keeps retrying before the day counts as failed.
    pub fetch_retry_budget: Duration,
    pub concurrency: usize,
    pub delivery_timeout: Duration,
    pub delivery_retry_budget: Duration,
    /// Where the delivery ledger lives.
    pub state: StateStore,
    /// `[state] keep_days`: how many days the ledger remembers each digest's delivery; what
    /// ended before that is forgotten, and `once --date` asks for `--force` there. Unset, it
    /// remembers everything, as it did before there was a choice.
    pub keep_days: Option<u32>,
    /// How often the daemon tries a failed digest again within its catch-up window.
    pub retry_every: Duration,
    /// How many days of fetched reports the ledger keeps for comparisons; 0 keeps none.
    pub history_days: u32,
    pub teams: Vec<Team>,
    /// `[server] listen`: where the daemon serves metrics and health; None turns it off.
    pub listen: Option<std::net::SocketAddr>,
    /// `[alerts] webhooks`: where the daemon says a team's digest was given up.
    pub alerts: Vec<Webhook>,
}

/// One thing wrong with the config: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub place: String,
    pub message: String,
    /// Where in the file, once [`locate`]d.
    pub at: Option<Position>,
}

/// Finds where in the config `text` each problem's place is, for those not placed yet, and
/// puts them in the file's order.
pub fn locate(text: &str, problems: &mut [Problem]) {
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return;
    };
    for problem in problems.iter_mut().filter(|p| p.at.is_none()) {
        problem.at = Some(places::position_of(doc.get_ref(), text, &problem.place));
    }
    problems.sort_by_key(|p| p.at.map(|at| (at.line, at.column)));
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        let file = self.file.display();
        for p in &self.problems {
            match p.at {
                Some(Position { line, column }) => write!(f, "  {file}:{line}:{column}: ")?,
                None => write!(f, "  {file}: ")?,
            }
            writeln!(f, "{}: {}", p.place, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Deserialize, Default)]
struct RawConfig {
    acquire: Option<RawAcquire>,
    state: Option<RawState>,
    server: Option<RawServer>,
    delivery: Option<RawDelivery>,
    catch_up: Option<String>,
    retry_every: Option<String>,
    history_days: Option<i64>,
    alerts: Option<RawAlerts>,
    #[serde(default)]
    teams: Vec<RawTeam>,
}

#[derive(Deserialize)]
struct RawAlerts {
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
}

#[derive(Deserialize)]
struct RawAcquire {
    base_url: Option<String>,
    timeout_secs: Option<u64>,
    retry_budget_secs: Option<u64>,
    concurrency: Option<usize>,
}

#[derive(Deserialize)]
struct RawDelivery {
    timeout_secs: Option<u64>,
    retry_budget_secs: Option<u64>,
}

#[derive(Deserialize)]
struct RawServer {
    listen: Option<String>,
}

#[derive(Deserialize)]
struct RawState {
    path: Option<PathBuf>,
    url: Option<String>,
    url_env: Option<String>,
    keep_days: Option<i64>,
}

#[derive(Deserialize)]
struct RawTeam {
    name: Option<String>,
    account_id: Option<String>,
    api_key: Option<String>,
    api_key_env: Option<String>,
    timezone: Option<String>,
    schedule: Option<String>,
    top: Option<i64>,
    catch_up: Option<String>,
    compare: Option<Vec<String>>,
    insights: Option<Vec<String>>,
    recheck: Option<String>,
    skip_empty: Option<bool>,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
}

#[derive(Deserialize)]
struct RawWebhook {
    name: Option<String>,
    kind: Option<String>,
    url: Option<String>,
    url_env: Option<String>,
    template: Option<PathBuf>,
    secret: Option<String>,
    secret_env: Option<String>,
}

/// Where the config comes from: `--config`, else `$ACQUIRE_DIGEST_CONFIG`, else `./config.toml`
/// (clap applies the first two).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: path.to_owned(),
        problems: vec![Problem {
            place: "file".into(),
            message: format!(
                "cannot read it ({e}); pass --config PATH or set ACQUIRE_DIGEST_CONFIG"
            ),
            at: None,
        }],
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, base_dir, &|name| std::env::var(name).ok()).map_err(|problems| ConfigErrors {
        file: path.to_owned(),
        problems,
    })
}

/// Where the daemon run with this config file serves HTTP, from `[server] listen` alone, as
/// a URL to reach it: `reload` must reach a daemon whose new config has problems elsewhere.
/// An address on every interface (`0.0.0.0`, `::`) is reached on loopback.
pub fn endpoint_of(path: &Path) -> Result<url::Url, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {} ({e}) to find [server] listen: pass --url or --config",
            path.display()
        )
    })?;
    // Read past syntax errors elsewhere: the new config may be broken, and the daemon is the
    // one to say so.
    let (doc, _) = toml::de::DeTable::parse_recoverable(&text);
    let listen = (doc.get_ref().get("server"))
        .and_then(|server| {
            server
                .get_ref()
                .get("listen")?
                .get_ref()
                .as_str()
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            format!(
                "{} sets no [server] listen: pass --url, e.g. --url http://127.0.0.1:9187",
                path.display()
            )
        })?;
    let mut addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        format!(
            "{}: server.listen {listen:?} is not IP:PORT",
            path.display()
        )
    })?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    url::Url::parse(&format!("http://{addr}/")).map_err(|e| e.to_string())
}

/// The file's tables as our types, and the paths of the keys they don't know. A value of the
/// wrong type is a problem named by its team and key; that key is then left out and the rest
/// read on, so one mistake doesn't hide the file's others. None when the file isn't TOML.
fn deserialize(text: &str, problems: &mut Problems) -> Option<(RawConfig, Vec<String>)> {
    // The keys left out so far, by their paths: each round reads the file afresh without them,
    // rather than cloning a document of 100,000 teams up front for the rare broken file.
    let mut left_out: Vec<Vec<places::Step>> = Vec::new();
    // Each round leaves out one key, of at most a few hundred in a file.
    for _ in 0..1_000 {
        let mut doc = match toml::de::DeTable::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let at = Position::of(text, e.span().map_or(0, |s| s.start));
                problems.add_at(at, "syntax", without_values(e.message().trim()));
                return None;
            }
        };
        for path in &left_out {
            places::remove(doc.get_mut(), path);
        }
        let mut unknown = Vec::new();
        let read = serde_ignored::deserialize(toml::de::Deserializer::from(doc), |path| {
            unknown.push(path.to_string())
        });
        let error = match read {
            Ok(raw) => return Some((raw, unknown)),
            Err(e) => e,
        };
        // The document went into the attempt: read it again to find where the error is.
        let mut doc = toml::de::DeTable::parse(text).ok()?;
        for path in &left_out {
            places::remove(doc.get_mut(), path);
        }
        let message = without_values(error.message().trim());
        let found = (error.span()).and_then(|span| places::key_at(doc.get_ref(), &span));
        let Some((path, key)) = found else {
            let at = Position::of(text, error.span().map_or(0, |s| s.start));
            problems.add_at(at, "syntax", message);
            return None;
        };
        let place = places::describe(doc.get_ref(), &path);
        problems.1.insert(place.clone());
        problems.add_at(Position::of(text, key.start), place, message);
        if !places::remove(doc.get_mut(), &path) {
            return None;
        }
        left_out.push(path);
    }
    None
}

/// Parses config text. Relative paths (templates, the ledger) are resolved against `base_dir`,
/// the config file's folder, so the daemon behaves the same from any working directory.
pub fn parse(
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems::default();
    let (raw, unknown) = match deserialize(text, &mut problems) {
        Some(read) => read,
        None => {
            locate(text, &mut problems.0);
            return Err(problems.0);
        }
    };
    for key in unknown {
        let (table, name) = key.rsplit_once('.').unwrap_or(("", &key));
        let known = places::known_keys(table).iter().copied();
        let guess = places::did_you_mean(name, known);
        problems.add(
            describe_path(&key, &raw),
            format!("unknown key{guess}: remove it or check its spelling against the config reference in README.md"),
        );
    }

    let acquire = raw.acquire.as_ref();
    let base_url = acquire
        .and_then(|a| a.base_url.clone())
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    if let Err(e) = api_base(&base_url, "example") {
        problems.add("acquire.base_url", e);
    }
    let delivery = raw.delivery.as_ref();
    let mut seconds = |key: &str, value: Option<u64>, default: u64, max: u64, what: &str| {
        match value {
            Some(0) => problems.add(
                key,
                format!("must be at least 1 second: use 1 to {max} ({what})"),
            ),
            Some(n) if n > max => {
                problems.add(key, format!("{n} is out of range: use 1 to {max} ({what})"))
            }
            _ => {}
        }
        Duration::from_secs(value.unwrap_or(default).clamp(1, max))
    };
    let timeout = seconds(
        "acquire.timeout_secs",
        acquire.and_then(|a| a.timeout_secs),
        30,
        MAX_TIMEOUT_SECS,
        "seconds per request to Acquire",
    );
    let fetch_retry_budget = seconds(
        "acquire.retry_budget_secs",
        acquire.and_then(|a| a.retry_budget_secs),
        30,
        MAX_RETRY_BUDGET_SECS,
        "seconds one fetch keeps retrying",
    );
    let delivery_timeout = seconds(
        "delivery.timeout_secs",
        delivery.and_then(|d| d.timeout_secs),
        10,
        MAX_TIMEOUT_SECS,
        "seconds per webhook POST",
    );
    let delivery_retry_budget = seconds(
        "delivery.retry_budget_secs",
        delivery.and_then(|d| d.retry_budget_secs),
        30,
        MAX_RETRY_BUDGET_SECS,
        "seconds one delivery keeps retrying",
    );
    let concurrency = acquire.and_then(|a| a.concurrency).unwrap_or(32);
    if !(1..=1024).contains(&concurrency) {
        problems.add(
            "acquire.concurrency",
            format!("{concurrency} is out of range: use 1 to 1024 (it caps concurrent requests to Acquire)"),
        );
    }
    let state = state_store(raw.state.as_ref(), base_dir, env, &mut problems);
    let default_catch_up = match raw.catch_up.as_deref().map(parse_catch_up).transpose() {
        Ok(d) => d.unwrap_or(Duration::from_secs(12 * 3600)),
        Err(e) => {
            problems.add("catch_up", e);
            Duration::ZERO
        }
    };
    let retry_every = match raw.retry_every.as_deref() {
        None => Duration::from_secs(600),
        Some(text) => {
            let (min, max) = RETRY_EVERY;
            match parse_duration("retry_every", text, min, max, RETRY_EVERY_ADVICE) {
                Ok(d) => d,
                Err(e) => {
                    problems.add("retry_every", e);
                    min
                }
            }
        }
    };
    let keep_days = match raw.state.as_ref().and_then(|s| s.keep_days) {
        None => None,
        Some(days @ 14..=3650) => Some(days as u32),
        Some(days) => {
            problems.add(
                "state.keep_days",
                format!(
                    "{days} is out of range: use 14 (two weeks: the longest catch_up and a weekly digest's span, with room) to 3650 days"
                ),
            );
            None
        }
    };
    let history_days = match raw.history_days {
        None => 60,
        Some(days @ 0..=400) => days as u32,
        Some(days) => {
            problems.add(
                "history_days",
                format!("{days} is out of range: use 0 (keep no reports) to 400 days"),
            );
            0
        }
    };

    let alerts = match &raw.alerts {
        None => Vec::new(),
        Some(alerts) => {
            for (index, hook) in alerts.webhooks.iter().enumerate() {
                if hook.template.is_some() {
                    problems.add(
                        format!("alerts.webhooks[{index}].template"),
                        "an alert is a short built-in message: remove template",
                    );
                }
            }
            parse_webhooks(
                &alerts.webhooks,
                "alerts",
                "[alerts]",
                base_dir,
                env,
                &mut problems,
            )
        }
    };

    let listen = raw.server.as_ref().and_then(|s| s.listen.as_deref()).and_then(|text| {
        text.parse()
            .map_err(|_| {
                problems.add(
                    "server.listen",
                    format!("{text:?} is not an address to listen on: use IP:PORT, e.g. \"127.0.0.1:9187\""),
                )
            })
            .ok()
    });

    if raw.teams.is_empty() {
        problems.add(
            "teams",
            "no [[teams]] defined: add at least one team (see config.toml in the repository)",
        );
    }
    let mut names = HashSet::new();
    let mut teams = Vec::new();
    let mut schedules = Schedules::default();
    for (index, raw_team) in raw.teams.iter().enumerate() {
        let place = match &raw_team.name {
            Some(name) => format!("team {name:?}"),
            None => format!("teams[{index}]"),
        };
        if let Some(name) = &raw_team.name
            && !names.insert(name.clone())
        {
            problems.add(
                format!("{place}.name"),
                "duplicate team name: each [[teams]] needs a unique name (it keys the delivery ledger)",
            );
        }
        let shared = Shared {
            base_url: &base_url,
            base_dir,
            default_catch_up,
            env,
        };
        let team = parse_team(raw_team, &place, &shared, &mut schedules, &mut problems);
        teams.extend(team);
    }

    match state {
        Some(state) if problems.0.is_empty() => Ok(Config {
            timeout,
            fetch_retry_budget,
            concurrency,
            delivery_timeout,
            delivery_retry_budget,
            state,
            keep_days,
            retry_every,
            history_days,
            teams,
            listen,
            alerts,
        }),
        _ => {
            locate(text, &mut problems.0);
            Err(problems.0)
        }
    }
}

/// What every team is read against: the file's settings and its environment.
struct Shared<'a> {
    base_url: &'a str,
    base_dir: &'a Path,
    default_catch_up: Duration,
    env: &'a dyn Fn(&str) -> Option<String>,
}

fn parse_team(
    raw: &RawTeam,
    place: &str,
    shared: &Shared<'_>,
    schedules: &mut Schedules,
    problems: &mut Problems,
) -> Option<Team> {
    let Shared {
        base_url,
        base_dir,
        default_catch_up,
        env,
    } = *shared;
    let name = problems.require(place, "name", raw.name.clone(), "a unique team name");
    let account_id = problems
        .require(
            place,
            "account_id",
            raw.account_id.as_deref(),
            "your Acquire account id",
        )
        .and_then(|id| problems.check(place, "account_id", AccountId::parse(id)));
    let api_base = account_id.as_ref().and_then(|id| {
        problems.check(
            place,
            "account_id",
            api_base(base_url, id.as_str()).map_err(|e| format!("with acquire.base_url: {e}")),
        )
    });
    let api_key = secret_from(
        place,
        ("api_key", raw.api_key.as_deref()),
        ("api_key_env", raw.api_key_env.as_deref()),
        env,
        problems,
    )
    .map(Secret);
    let zone = problems
        .require(
            place,
            "timezone",
            raw.timezone.as_deref(),
            "an IANA zone such as \"Asia/Kolkata\" or an offset such as \"+05:30\"",
        )
        .and_then(|tz| {
            let zone = Zone::parse(tz).map_err(|e| {
                let names = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name());
                match places::did_you_mean(tz, names) {
                    guess if guess.is_empty() => e,
                    guess => e.replacen(": use", &format!("{guess}: use"), 1),
                }
            });
            problems.check(place, "timezone", zone)
        });
    let schedule = problems
        .require(
            place,
            "schedule",
            raw.schedule.as_deref(),
            "a cron line such as \"0 9 * * *\"",
        )
        .and_then(|s| problems.check(place, "schedule", schedules.parse(s)));
    let top = match raw.top {
        None => Some(5),
        Some(n) if (1..=1000).contains(&n) => Some(n as usize),
        Some(n) => {
            problems.add(
                format!("{place}.top"),
                format!("{n} is out of range: use a number from 1 to 1000"),
            );
            None
        }
    };
    let catch_up = match raw.catch_up.as_deref() {
        None => Some(default_catch_up),
        Some(text) => problems.check(place, "catch_up", parse_catch_up(text)),
    };
    let compare = match &raw.compare {
        None => Some(vec![Comparison::Previous, Comparison::LastWeek]),
        Some(names) => {
            let mut compare: Vec<Comparison> = Vec::new();
            for name in names {
                let parsed = problems.check(place, "compare", Comparison::parse(name))?;
                if !compare.contains(&parsed) {
                    compare.push(parsed);
                }
            }
            Some(compare)
        }
    };
    let previous = (compare.as_ref()).is_some_and(|c| c.contains(&Comparison::Previous));
    let insights = match &raw.insights {
        // "What moved" is said against the previous span: without it, there is nothing to say.
        None => Some(Insights {
            moved: previous,
            unusual: true,
        }),
        Some(names) => names.iter().try_fold(Insights::NONE, |insights, name| {
            problems.check(place, "insights", insights.with(name))
        }),
    };
    let recheck = match raw.recheck.as_deref().map(str::trim) {
        None => Some(Duration::from_secs(15 * 60)),
        Some("0") => Some(Duration::ZERO),
        Some(text) => {
            let (min, max) = RECHECK;
            let parsed = parse_duration("recheck", text, min, max, RECHECK_ADVICE);
            problems.check(place, "recheck", parsed)
        }
    };
    if insights.is_some_and(|i| i.moved) && compare.is_some() && !previous {
        problems.add(
            format!("{place}.insights"),
            "\"moved\" names the rows that changed against the previous span, but compare leaves \"previous\" out: add it to compare, or drop \"moved\"",
        );
    }
    if raw.webhooks.is_empty() {
        problems.add(
            format!("{place}.webhooks"),
            "no [[teams.webhooks]]: add one so the digest has somewhere to go",
        );
    }
    let webhooks = parse_webhooks(&raw.webhooks, place, "this team", base_dir, env, problems);
    Some(Team {
        name: name?,
        account_id: account_id?,
        api_base: api_base?,
        api_key: api_key?,
        zone: zone?,
        schedule: schedule?,
        top: top?,
        catch_up: catch_up?,
        compare: compare?,
        insights: insights?,
        recheck: recheck?,
        skip_empty: raw.skip_empty.unwrap_or(false),
        webhooks,
    })
}

/// A list of webhooks (a team's, or `[alerts]`'s), each named uniquely in the list.
fn parse_webhooks(
    hooks: &[RawWebhook],
    place: &str,
    owner: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Vec<Webhook> {
    let mut hook_names = HashSet::new();
    let mut webhooks = Vec::new();
    for (index, hook) in hooks.iter().enumerate() {
        let hook_place = format!("{place}.webhooks[{index}]");
        let kind = match hook.kind.as_deref() {
            Some(text) => {
                let kind = WebhookKind::parse(text);
                if kind.is_none() {
                    problems.add(
                        format!("{hook_place}.kind"),
                        format!(
                            "unknown kind {text:?}{}: use {KINDS}",
                            places::did_you_mean(text, WebhookKind::ALL.map(WebhookKind::as_str))
                        ),
                    );
                }
                kind
            }
            None => problems.require(&hook_place, "kind", None, KINDS),
        };
        let url = secret_from(
            &hook_place,
            ("url", hook.url.as_deref()),
            ("url_env", hook.url_env.as_deref()),
            env,
            problems,
        )
        .and_then(|url| {
            let key = if hook.url.is_some() { "url" } else { "url_env" };
            let url = WebhookUrl::parse(&url).and_then(|url| fits_kind(url, kind));
            problems.check(&hook_place, key, url)
        });
        let template = hook.template.as_ref().and_then(|path| {
            let read = TemplateFile::read(&base_dir.join(path)).map_err(|e| {
                format!("{e}; fix the path (relative to the config file) or remove the key to use the built-in template")
            });
            problems.check(&hook_place, "template", read)
        });
        let signed = hook.secret.is_some() || hook.secret_env.is_some();
        let secret = if !signed {
            None
        } else if kind != Some(WebhookKind::Generic) {
            problems.add(
                format!("{hook_place}.secret"),
                "only a generic webhook is signed: remove secret / secret_env",
            );
            None
        } else {
            secret_from(
                &hook_place,
                ("secret", hook.secret.as_deref()),
                ("secret_env", hook.secret_env.as_deref()),
                env,
                problems,
            )
            .and_then(|secret| {
                let key = if hook.secret.is_some() {
                    "secret"
                } else {
                    "secret_env"
                };
                problems.check(&hook_place, key, signing_secret(&secret))
            })
        };
        let Some(kind) = kind else { continue };
        let of_kind = |h: &RawWebhook| h.kind.as_deref() == Some(kind.as_str());
        let hook_name = match &hook.name {
            Some(name) => problems.check(&hook_place, "name", webhook_name(name)),
            None => {
                let same_kind = hooks.iter().filter(|h| of_kind(h)).count();
                if same_kind == 1 {
                    Some(kind.as_str().to_owned())
                } else {
                    // Until names were required, unnamed webhooks were numbered in order;
                    // suggesting that number lets an existing delivery record carry over.
                    let before = hooks[..index]
                        .iter()
                        .filter(|h| of_kind(h) && h.name.is_none())
                        .count();
                    let was = match before {
                        0 => kind.as_str().to_owned(),
                        n => format!("{}-{}", kind.as_str(), n + 1),
                    };
                    problems.add(
                        format!("{hook_place}.name"),
                        format!(
                            "missing: {owner} has {same_kind} {kind} webhooks, and a webhook's name keys the delivery ledger, so it must not depend on their order: add name = {was:?} (its name until now, which keeps its delivery record) or another name unique in {owner}",
                            kind = kind.as_str()
                        ),
                    );
                    None
                }
            }
        };
        let Some(hook_name) = hook_name else { continue };
        if !hook_names.insert(hook_name.clone()) {
            problems.add(
                format!("{hook_place}.name"),
                format!("duplicate webhook name {hook_name:?} in {owner}: give each a unique name"),
            );
        }
        if let Some(url) = url
            && (hook.template.is_none() || template.is_some())
            && (!signed || secret.is_some())
        {
            webhooks.push(Webhook {
                name: hook_name,
                kind,
                url,
                template,
                secret,
            });
        }
    }
    webhooks
}

/// Teams' Office 365 connector URLs stopped taking messages when Microsoft retired them.
fn fits_kind(url: WebhookUrl, kind: Option<WebhookKind>) -> Result<WebhookUrl, String> {
    let host = url.expose().host_str().unwrap_or_default();
    let connector = host == "webhook.office.com"
        || host.ends_with(".webhook.office.com")
        || (host == "outlook.office.com" && url.expose().path().starts_with("/webhook"));
    if kind == Some(WebhookKind::Teams) && connector {
        return Err("is an Office 365 connector URL, which Microsoft has retired: in Teams, create a Workflows webhook (the channel's ⋯ → Workflows → \"Send webhook alerts to a channel\") and use its URL".to_owned());
    }
    Ok(url)
}

/// A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 random bytes. The value is
/// never echoed: it is a credential.
fn signing_secret(secret: &str) -> Result<Secret, String> {
    let advice = "use whsec_ followed by the base64 of 24 to 64 random bytes (e.g. `echo whsec_$(openssl rand -base64 32)`)";
    let Some(encoded) = secret.strip_prefix("whsec_") else {
        return Err(format!("is not a Standard Webhooks secret: {advice}"));
    };
    if !(32..=88).contains(&encoded.len()) || standardwebhooks::Webhook::new(encoded).is_err() {
        return Err(format!(
            "is not valid base64 of 24 to 64 bytes after whsec_: {advice}"
        ));
    }
    Ok(Secret::new(secret))
}

/// API keys too short to keep out of logs: one that short turns up inside ordinary words, so
/// no redaction can tell an echo of it from text. `check` refuses them; `run` and `once` say
/// so and carry on, so an upgrade never stops a deployment that worked.
pub fn short_api_keys(config: &Config) -> Vec<Problem> {
    (config.teams.iter())
        .filter(|team| team.api_key.expose().chars().count() < 8)
        .map(|team| Problem {
            place: format!("team {:?}.api_key", team.name),
            message: format!(
                "is {} characters long: an API key has at least 8 (check it was copied whole), and a shorter one can't be kept out of logs",
                team.api_key.expose().chars().count()
            ),
            at: None,
        })
        .collect()
}

/// Settings that work but don't do what their author likely meant: `check` prints them and
/// still passes, `run` logs them at start.
pub fn warnings(config: &Config) -> Vec<Problem> {
    let mut warnings = Vec::new();
    let unusual: Vec<&str> = (config.teams.iter())
        .filter(|team| team.insights.unusual)
        .map(|team| team.name.as_str())
        .collect();
    if !unusual.is_empty() && config.history_days <= crate::insight::BASELINE_DAYS {
        warnings.push(Problem {
            place: "history_days".into(),
            message: format!(
                "{} keeps too little for the \"unusual\" line, which judges a day against the 8 weeks before it: {} won't get one. Set history_days = 60 (the default), or insights = [\"moved\"] for those teams",
                config.history_days,
                unusual.join(", ")
            ),
            at: None,
        });
    }
    warnings
}

/// Reads a credential given inline (`key`) or through an environment variable (`key_env`).
fn secret_from(
    place: &str,
    (key, inline): (&str, Option<&str>),
    (env_key, var): (&str, Option<&str>),
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<String> {
    match (inline, var) {
        (Some(_), Some(_)) => {
            problems.add(
                format!("{place}.{key}"),
                format!("set either {key} or {env_key}, not both"),
            );
            None
        }
        (Some(value), None) if value.trim().is_empty() => {
            problems.add(format!("{place}.{key}"), "is empty");
            None
        }
        (Some(value), None) => Some(value.to_owned()),
        (None, Some(var)) => match env(var) {
            Some(value) if !value.trim().is_empty() => Some(value.trim().to_owned()),
            Some(_) => {
                problems.add(
                    format!("{place}.{env_key}"),
                    format!("environment variable {var} is empty: export it before starting acquire-digest"),
                );
                None
            }
            None => {
                problems.add(
                    format!("{place}.{env_key}"),
                    format!("environment variable {var} is not set: export it before starting acquire-digest"),
                );
                None
            }
        },
        (None, None) => {
            let left_out = [key, env_key].map(|k| format!("{place}.{k}"));
            if !left_out.iter().any(|place| problems.1.contains(place)) {
                problems.add(
                    format!("{place}.{env_key}"),
                    format!("missing: set {env_key} = \"NAME_OF_ENV_VAR\" (or {key} = \"...\")"),
                );
            }
            None
        }
    }
}

/// Where the ledger lives: a SQLite file (the default), or a PostgreSQL database that several
/// replicas share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateStore {
    Sqlite(PathBuf),
    Postgres(DatabaseUrl),
}

impl StateStore {
    /// Whether both are the same ledger, however the paths are spelt (`./l.db`, a symlinked
    /// folder, a hard link): a process that opened one SQLite file twice would drop its locks
    /// on it as either handle closed a descriptor.
    pub fn is_same(&self, other: &StateStore) -> bool {
        use std::os::unix::fs::MetadataExt;
        let file = |path: &Path| std::fs::metadata(path).map(|m| (m.dev(), m.ino()));
        match (self, other) {
            (StateStore::Sqlite(a), StateStore::Sqlite(b)) => {
                a == b || matches!((file(a), file(b)), (Ok(a), Ok(b)) if a == b)
            }
            _ => self == other,
        }
    }
}

impl fmt::Display for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateStore::Sqlite(path) => write!(f, "{}", path.display()),
            StateStore::Postgres(url) => write!(f, "{url}"),
        }
    }
}

/// A PostgreSQL URL. It carries the password, so only its host, port and database are shown.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(Url);

/// libpq's `sslmode` values this client honours; `verify-ca` would check a certificate without
/// its host name, which rustls doesn't offer.
const SSLMODES: [&str; 4] = ["disable", "prefer", "require", "verify-full"];

impl DatabaseUrl {
    pub fn parse(text: &str) -> Result<DatabaseUrl, String> {
        let url = Url::parse(text.trim()).map_err(|e| format!("is not a URL ({e})"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") || url.host_str().is_none() {
            return Err("must be a postgres://user:password@host:5432/database URL".to_owned());
        }
        for (key, value) in url.query_pairs() {
            if key == "sslmode" && !SSLMODES.contains(&value.as_ref()) {
                return Err(format!(
                    "sslmode={value} is not supported: use disable, prefer, require (encrypted, certificate not verified) or verify-full (verified against the system's roots)"
                ));
            }
        }
        Ok(DatabaseUrl(url))
    }

    pub fn expose(&self) -> &Url {
        &self.0
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.0.host_str().unwrap_or("?");
        let port = self.0.port().unwrap_or(5432);
        write!(f, "postgres://{host}:{port}{}", self.0.path())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

fn state_store(
    raw: Option<&RawState>,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<StateStore> {
    let default = || StateStore::Sqlite(base_dir.join("state/ledger.db"));
    let Some(raw) = raw else {
        return Some(default());
    };
    let (url, url_env) = (raw.url.as_deref(), raw.url_env.as_deref());
    match (&raw.path, url.is_some() || url_env.is_some()) {
        (Some(_), true) => {
            problems.add(
                "state",
                "set exactly one of path (SQLite) and url / url_env (PostgreSQL)",
            );
            None
        }
        (Some(path), false) => Some(StateStore::Sqlite(base_dir.join(path))),
        (None, false) => Some(default()),
        (None, true) => {
            let text = secret_from("state", ("url", url), ("url_env", url_env), env, problems)?;
            let key = if url.is_some() { "url" } else { "url_env" };
            problems
                .check("state", key, DatabaseUrl::parse(&text))
                .map(StateStore::Postgres)
        }
    }
}

/// The API base for one account: the `{account_id}` placeholder substituted, and only http(s).
pub fn api_base(template: &str, account_id: &str) -> Result<Url, String> {
    let text = template.replace("{account_id}", account_id);
    let url = Url::parse(&text).map_err(|e| format!("{template:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{template:?} must be an http:// or https:// URL"));
    }
    Ok(url)
}

/// `"12h"`, `"90m"`, `"1h 30m"`, up to 7 days; `"0"` turns catch-up off.
fn parse_catch_up(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(
        "catch_up",
        text,
        Duration::ZERO,
        MAX_CATCH_UP,
        CATCH_UP_ADVICE,
    )
}

/// A humantime duration (`"12h"`, `"1h 30m"`) for `key`, within `min..=max`. `advice` says
/// what to write instead and ends every error message.
fn parse_duration(
    key: &str,
    text: &str,
    min: Duration,
    max: Duration,
    advice: &str,
) -> Result<Duration, String> {
    let out_of_range = || format!("{text:?} is out of range for {key}: {advice}");
    let trimmed = text.trim();
    if !fits_humantime(trimmed) {
        return Err(out_of_range());
    }
    match humantime::parse_duration(trimmed) {
        Ok(d) if (min..=max).contains(&d) => Ok(d),
        Ok(_) | Err(humantime::DurationError::NumberOverflow) => Err(out_of_range()),
        Err(e) => Err(format!("{text:?} is not a duration ({e}): {advice}")),
    }
}

/// Whether humantime can parse `text` without panicking. It sums its terms with checked
/// arithmetic but then builds a `Duration` that panics when the seconds reach `u64::MAX` and
/// the nanoseconds carry (`"18446744073709551615s 500ms 500ms"`). Every term is less than
/// (its number + 1) years, so if that bound fits, the sum cannot reach the top.
fn fits_humantime(text: &str) -> bool {
    const YEAR_SECS: u64 = 31_557_600;
    let mut bound: u64 = 0;
    for run in text.split(|c: char| !c.is_ascii_digit()) {
        if run.is_empty() {
            continue;
        }
        let term = run
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(YEAR_SECS));
        match term.and_then(|t| bound.checked_add(t)) {
            Some(sum) if sum < u64::MAX => bound = sum,
            _ => return false,
        }
    }
    true
}

/// A webhook name as given: it keys the ledger, so it is kept verbatim, only checked.
fn webhook_name(name: &str) -> Result<String, String> {
    let chars = name.chars().count();
    if name.trim().is_empty() {
        Err("is empty: use a short label unique in this team, e.g. \"alerts\" (it keys the delivery ledger)".into())
    } else if chars > MAX_WEBHOOK_NAME_CHARS {
        Err(format!(
            "is {chars} characters long: use at most {MAX_WEBHOOK_NAME_CHARS}"
        ))
    } else if name.chars().any(char::is_control) {
        Err(
            "contains a control character (a tab, a newline, ...): use printable characters only"
                .into(),
        )
    } else {
        Ok(name.to_owned())
    }
}

/// Turns serde_ignored's `teams.0.webhooks.1.urll` into `team "x".webhooks[1].urll`.
fn describe_path(path: &str, raw: &RawConfig) -> String {
    let mut parts = path.split('.');
    let mut out = String::new();
    if path.starts_with("teams.")
        && let Some(index) = path.split('.').nth(1).and_then(|i| i.parse::<usize>().ok())
    {
        parts.next();
        parts.next();
        out = match raw.teams.get(index).and_then(|t| t.name.as_ref()) {
            Some(name) => format!("team {name:?}"),
            None => format!("teams[{index}]"),
        };
    }
    // serde_ignored writes `?` for the Option around a table.
    for part in parts.filter(|&p| p != "?") {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// serde's "invalid type: integer `1234`, expected a string" quotes the value, and the value
/// may be an API key or a webhook URL given the wrong type: keep the message, drop the value.
fn without_values(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // "<kind> <value>, expected <what>": the value is the file's, <what> our types'.
            let kind = rest.split_whitespace().next().unwrap_or_default();
            return match rest.rsplit_once(", expected ") {
                Some((_, expected)) => {
                    // Our integer types by the name a config's author knows.
                    let expected = match expected {
                        "i64" | "u64" | "usize" => "a whole number, without quotes",
                        other => other,
                    };
                    format!("{prefix}{kind}, expected {expected}")
                }
                None => format!("{prefix}{kind}"),
            };
        }
    }
    message.to_owned()
}

/// The problems found, and the places of the values left out for their type: those aren't
/// also "missing".
#[derive(Default)]
struct Problems(Vec<Problem>, HashSet<String>);

impl Problems {
    fn add(&mut self, place: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            place: place.into(),
            message: message.into(),
            at: None,
        });
    }

    fn add_at(&mut self, at: Position, place: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            place: place.into(),
            message: message.into(),
            at: Some(at),
        });
    }

    fn require<T>(&mut self, place: &str, key: &str, value: Option<T>, what: &str) -> Option<T> {
        if value.is_none() && !self.1.contains(&format!("{place}.{key}")) {
            self.add(
                format!("{place}.{key}"),
                format!("missing: set {key} to {what}"),
            );
        }
        value
    }

    fn check<T>(&mut self, place: &str, key: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| self.add(format!("{place}.{key}"), message))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids in the ledger and webhook-ids are made of these: they must never change.
    #[test]
    fn sha256_hex_is_the_standard_lowercase_digest() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    const VALID: &str = r#"
[acquire]
timeout_secs = 10

[[teams]]
name = "support-apac"
account_id = "acme"
api_key_env = "ACME_KEY"
timezone = "Asia/Kolkata"
schedule = "0 9 * * *"

[[teams.webhooks]]
kind = "slack"
url_env = "APAC_SLACK"

[[teams.webhooks]]
kind = "generic"
url = "https://example.com/hook"
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "ACME_KEY" => Some("k-1234567".into()),
            "APAC_SLACK" => Some("https://hooks.slack.com/services/T0/B0/SECRET".into()),
            "EMPTY" => Some("  ".into()),
            _ => None,
        }
    }

    #[test]
    fn insights_default_to_both_and_moved_needs_the_previous_span() {
        let with = |lines: &str| VALID.replace("schedule =", &format!("{lines}\nschedule ="));
        let insights = |text: &str| parse(text, Path::new("."), &env).unwrap().teams[0].insights;
        assert_eq!(
            insights(VALID),
            Insights {
                moved: true,
                unusual: true
            }
        );
        assert_eq!(insights(&with("insights = []")), Insights::NONE);
        assert_eq!(
            insights(&with("insights = [\"unusual\"]")),
            Insights {
                moved: false,
                unusual: true
            }
        );
        // Without the previous span "moved" has nothing to say: off by default, refused if asked.
        let last_week = with("compare = [\"last_week\"]");
        assert_eq!(
            insights(&last_week),
            Insights {
                moved: false,
                unusual: true
            }
        );
        assert_problem(
            &with("compare = []\ninsights = [\"moved\"]"),
            "team \"support-apac\".insights",
            "add it to compare",
        );
        assert_problem(
            &with("insights = [\"moves\"]"),
            "team \"support-apac\".insights",
            "use \"moved\" and/or \"unusual\"",
        );
    }

    #[test]
    fn recheck_is_fifteen_minutes_by_default_zero_or_ten_seconds_to_an_hour() {
        let with = |line: &str| VALID.replace("schedule =", &format!("{line}\nschedule ="));
        let recheck = |text: &str| parse(text, Path::new("."), &env).unwrap().teams[0].recheck;
        assert_eq!(recheck(VALID), Duration::from_secs(900));
        assert_eq!(recheck(&with("recheck = \"0\"")), Duration::ZERO);
        assert_eq!(recheck(&with("recheck = \"10s\"")), Duration::from_secs(10));
        assert_eq!(
            recheck(&with("recheck = \"1h\"")),
            Duration::from_secs(3600)
        );
        for bad in ["9s", "61m", "soon"] {
            assert_problem(
                &with(&format!("recheck = \"{bad}\"")),
                "team \"support-apac\".recheck",
                "at most 1 hour",
            );
        }
    }

    #[test]
    fn history_too_short_for_unusual_days_is_a_warning_naming_the_teams() {
        let config = |text: &str| parse(text, Path::new("."), &env).unwrap();
        assert!(warnings(&config(VALID)).is_empty());
        let short = format!("history_days = 56\n{VALID}");
        let said = warnings(&config(&short));
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].message.contains("support-apac") && said[0].message.contains("60"));
        assert!(warnings(&config(&format!("history_days = 57\n{VALID}"))).is_empty());
        let off = short.replace("schedule =", "insights = [\"moved\"]\nschedule =");
        assert!(warnings(&config(&off)).is_empty());
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text, Path::new("."), &env) {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(problems) => problems,
        }
    }

    /// Asserts one problem sits at `place` and its message mentions `words`.
    fn assert_problem(text: &str, place: &str, words: &str) {
        let problems = problems(text);
        assert!(
            problems
                .iter()
                .any(|p| p.place == place && p.message.contains(words)),
            "no problem at {place:?} mentioning {words:?} in {problems:#?}"
        );
    }

    #[test]
    fn a_valid_config_parses_into_types() {
        let config = parse(VALID, Path::new("/etc/acquire-digest"), &env).unwrap();
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert_eq!(config.concurrency, 32);
        assert_eq!(
            config.state,
            StateStore::Sqlite("/etc/acquire-digest/state/ledger.db".into())
        );
        let team = &config.teams[0];
        assert_eq!(team.name, "support-apac");
        assert_eq!(team.api_base.as_str(), "https://acme.acquire.io/api");
        assert_eq!(team.api_key.expose(), "k-1234567");
        assert_eq!(team.zone.to_string(), "Asia/Kolkata");
        assert_eq!(team.top, 5);
        assert_eq!(team.catch_up, Duration::from_secs(12 * 3600));
        let names: Vec<_> = team.webhooks.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["slack", "generic"]);
        // Scheme, host, port and a fingerprint: two Slack hooks tell apart, the token stays out.
        let shown = team.webhooks[0].url.to_string();
        assert!(
            shown.starts_with("https://hooks.slack.com:443 #"),
            "{shown}"
        );
        assert_eq!(shown.len(), "https://hooks.slack.com:443 #".len() + 8);
    }

    #[test]
    fn secrets_never_print_themselves() {
        let config = parse(VALID, Path::new("."), &env).unwrap();
        let debug = format!("{:?}", config.teams);
        assert!(!debug.contains("k-1234567"), "{debug}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(!debug.contains("/services/"), "{debug}");
    }

    #[test]
    fn an_api_key_too_short_to_keep_out_of_logs_is_named() {
        let with_key = |key: &str| {
            let key = format!("api_key = \"{key}\"");
            let text = VALID.replace("api_key_env = \"ACME_KEY\"", &key);
            short_api_keys(&parse(&text, Path::new("."), &env).unwrap())
        };
        let shown = format!("{:?}", with_key("abc"));
        assert!(
            shown.contains(".api_key") && shown.contains("is 3 characters long"),
            "{shown}"
        );
        assert!(!shown.contains("abc\""), "the key is not echoed: {shown}");
        assert!(with_key("abcd1234").is_empty());
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_echoed() {
        let text = VALID.replace("api_key_env = \"ACME_KEY\"", "api_key = 98765432101234");
        let shown = format!("{:?}", problems(&text));
        assert!(!shown.contains("98765432101234"), "{shown}");
        assert!(
            shown.contains("invalid type: integer, expected a string"),
            "{shown}"
        );
        let url = "https://hooks.slack.com/services/T0/B0/SECRETSECRET";
        let text = VALID.replace(
            "schedule = \"0 9 * * *\"",
            &format!("schedule = \"0 9 * * *\"\ntop = \"{url}\""),
        );
        let shown = format!("{:?}", problems(&text));
        assert!(!shown.contains("SECRETSECRET"), "{shown}");
        assert!(shown.contains("invalid type: string, expected"), "{shown}");
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let problems = problems("[acquire]\ntimeout_secs = = 3\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].place, "syntax");
        assert_eq!(problems[0].at.map(|at| at.line), Some(2), "{problems:?}");
    }

    #[test]
    fn unknown_keys_are_all_reported_with_their_team() {
        let text = VALID
            .replace("timezone =", "time_zone = \"UTC\"\ntimezone =")
            .replace("kind = \"generic\"", "kind = \"generic\"\nurll = \"x\"")
            .replace("[acquire]", "[acquire]\nbase = \"x\"");
        let problems = problems(&text);
        let places: Vec<_> = problems.iter().map(|p| p.place.as_str()).collect();
        assert!(
            places.contains(&"team \"support-apac\".time_zone"),
            "{places:?}"
        );
        assert!(
            places.contains(&"team \"support-apac\".webhooks[1].urll"),
            "{places:?}"
        );
        assert!(places.contains(&"acquire.base"), "{places:?}");
        assert!(problems.iter().all(|p| p.message.contains("unknown key")));
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let text = VALID
            .replace("Asia/Kolkata", "Asia/Kolkatta")
            .replace("0 9 * * *", "0 9 * *")
            .replace("\"acme\"", "\"acme.evil.com/x\"")
            .replace("https://example.com/hook", "ftp://example.com/hook")
            .replace("APAC_SLACK", "UNSET_VAR");
        let problems = problems(&text);
        assert_eq!(problems.len(), 5, "{problems:#?}");
    }

    #[test]
    fn each_rejection_names_the_key_and_the_fix() {
        let team = "team \"support-apac\"";
        assert_problem(
            &VALID.replace("Asia/Kolkata", "Mars/Olympus"),
            &format!("{team}.timezone"),
            "IANA",
        );
        assert_problem(
            &VALID.replace("0 9 * * *", "0 99 * * *"),
            &format!("{team}.schedule"),
            "not a valid cron",
        );
        assert_problem(
            &VALID.replace("\"acme\"", "\"acme.evil\""),
            &format!("{team}.account_id"),
            "DNS label",
        );
        assert_problem(
            &VALID.replace("\"acme\"", "\"-acme\""),
            &format!("{team}.account_id"),
            "DNS label",
        );
        assert_problem(
            &VALID.replace("https://example.com/hook", "javascript:alert(1)"),
            &format!("{team}.webhooks[1].url"),
            "http",
        );
        assert_problem(
            &VALID.replace("APAC_SLACK", "NOT_SET"),
            &format!("{team}.webhooks[0].url_env"),
            "NOT_SET is not set",
        );
        assert_problem(
            &VALID.replace("ACME_KEY", "EMPTY"),
            &format!("{team}.api_key_env"),
            "EMPTY is empty",
        );
        assert_problem(
            &VALID.replace("api_key_env = \"ACME_KEY\"", ""),
            &format!("{team}.api_key_env"),
            "missing",
        );
        assert_problem(
            &VALID.replace("kind = \"generic\"", "kind = \"telegram\""),
            &format!("{team}.webhooks[1].kind"),
            "\"mattermost\" or \"generic\"",
        );
        assert_problem(
            &VALID.replace("timeout_secs = 10", "concurrency = 9223372036854775807"),
            "acquire.concurrency",
            "1 to 1024",
        );
        assert_problem(
            &VALID.replace("timeout_secs = 10", "timeout_secs = 0"),
            "acquire.timeout_secs",
            "at least 1",
        );
        assert_problem(
            &VALID.replace("[acquire]", "catch_up = \"soon\"\n[acquire]"),
            "catch_up",
            "12h",
        );
        assert_problem(
            &VALID.replace(
                "schedule = \"0 9 * * *\"",
                "schedule = \"0 9 * * *\"\ntop = 0",
            ),
            &format!("{team}.top"),
            "1 to 1000",
        );
    }

    /// VALID with `line` added to the top level, before `[acquire]`.
    #[test]
    fn alerts_webhooks_are_checked_like_any_webhook() {
        let alerts = |hooks: &str| format!("{VALID}\n[alerts]\nwebhooks = [{hooks}]\n");
        let config = parse(
            &alerts(r#"{ kind = "slack", url_env = "APAC_SLACK" }, { kind = "generic", url = "https://ops.example/in" }"#),
            Path::new("."),
            &env,
        )
        .unwrap();
        let names: Vec<&str> = config.alerts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["slack", "generic"]);
        assert_problem(
            &alerts(r#"{ kind = "pager", url = "https://x.example" }"#),
            "alerts.webhooks[0].kind",
            "unknown kind",
        );
        assert_problem(
            &alerts(r#"{ kind = "slack", url_env = "UNSET_VAR" }"#),
            "alerts.webhooks[0].url_env",
            "not set",
        );
        assert_problem(
            &alerts(
                r#"{ kind = "slack", url = "https://a.example" }, { kind = "slack", url = "https://b.example" }"#,
            ),
            "alerts.webhooks[0].name",
            "[alerts] has 2 slack webhooks",
        );
        assert_problem(
            &alerts(r#"{ kind = "slack", url = "https://a.example", template = "x.hbs" }"#),
            "alerts.webhooks[0].template",
            "remove template",
        );
        assert!(
            parse(VALID, Path::new("."), &env)
                .unwrap()
                .alerts
                .is_empty()
        );
    }

    fn with_top(line: &str) -> String {
        VALID.replace("[acquire]", &format!("{line}\n[acquire]"))
    }

    /// VALID with `line` added to the team.
    fn with_team(line: &str) -> String {
        VALID.replace(
            "schedule = \"0 9 * * *\"",
            &format!("schedule = \"0 9 * * *\"\n{line}"),
        )
    }

    #[test]
    fn catch_up_is_at_most_seven_days() {
        let team = "team \"support-apac\".catch_up";
        for (text, expected) in [("7d", 7 * 24 * 3600), ("1w", 7 * 24 * 3600), ("0", 0)] {
            let line = format!("catch_up = \"{text}\"");
            let config = parse(&with_top(&line), Path::new("."), &env).unwrap();
            assert_eq!(
                config.teams[0].catch_up,
                Duration::from_secs(expected),
                "{text}"
            );
            let config = parse(&with_team(&line), Path::new("."), &env).unwrap();
            assert_eq!(
                config.teams[0].catch_up,
                Duration::from_secs(expected),
                "{text}"
            );
        }
        for text in ["7d 1s", "8d", "1000000y"] {
            let line = format!("catch_up = \"{text}\"");
            for words in ["out of range for catch_up", "at most 7 days", "\"12h\""] {
                assert_problem(&with_top(&line), "catch_up", words);
                assert_problem(&with_team(&line), team, words);
            }
        }
    }

    #[test]
    fn the_ledger_keeps_everything_unless_told_between_two_weeks_and_ten_years() {
        let keep = |text: &str| parse(text, Path::new("."), &env).map(|c| c.keep_days);
        assert_eq!(keep(VALID).unwrap(), None);
        let days = |n: i64| format!("{VALID}\n[state]\nkeep_days = {n}\n");
        assert_eq!(keep(&days(14)).unwrap(), Some(14));
        assert_eq!(keep(&days(3650)).unwrap(), Some(3650));
        for n in [13, 0, -1, 3651] {
            assert_problem(&days(n), "state.keep_days", "use 14 (two weeks");
        }
    }

    #[test]
    fn a_ledger_is_the_same_however_its_path_is_spelt() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("state");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("ledger.db"), "x").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let at = |path: PathBuf| StateStore::Sqlite(path);
        let ledger = at(real.join("ledger.db"));
        assert!(ledger.is_same(&at(dir.path().join("link/ledger.db"))));
        assert!(ledger.is_same(&at(real.join("../state/ledger.db"))));
        std::fs::hard_link(real.join("ledger.db"), dir.path().join("hard.db")).unwrap();
        assert!(ledger.is_same(&at(dir.path().join("hard.db"))));
        std::fs::write(real.join("other.db"), "x").unwrap();
        assert!(!ledger.is_same(&at(real.join("other.db"))));
        let not_yet = at(real.join("new.db"));
        assert!(not_yet.is_same(&at(real.join("new.db"))));
    }

    #[test]
    fn durations_too_large_for_humantime_are_errors_not_panics() {
        for text in [
            "99999999999999999999y",
            "18446744073709551615s 500ms 500ms",
            "584942417355y",
            "213503982334601d 1s",
        ] {
            let line = format!("catch_up = \"{text}\"");
            assert_problem(&with_top(&line), "catch_up", "at most 7 days");
            assert_problem(
                &with_team(&line),
                "team \"support-apac\".catch_up",
                "at most 7 days",
            );
            let line = format!("retry_every = \"{text}\"");
            assert_problem(&with_top(&line), "retry_every", "at most 1 day");
        }
    }

    #[test]
    fn retry_every_is_between_ten_seconds_and_a_day() {
        for (text, expected) in [("10s", 10), ("10m", 600), ("1d", 24 * 3600)] {
            let line = format!("retry_every = \"{text}\"");
            let config = parse(&with_top(&line), Path::new("."), &env).unwrap();
            assert_eq!(config.retry_every, Duration::from_secs(expected), "{text}");
        }
        for text in ["0", "9s", "1d 1s", "1000000y"] {
            assert_problem(
                &with_top(&format!("retry_every = \"{text}\"")),
                "retry_every",
                "use at least 10 seconds and at most 1 day",
            );
        }
        assert_problem(
            &with_top("retry_every = \"often\""),
            "retry_every",
            "not a duration",
        );
    }

    #[test]
    fn timeouts_and_retry_budgets_are_bounded() {
        for (table, key, max) in [
            ("acquire", "timeout_secs", 600),
            ("acquire", "retry_budget_secs", 3600),
            ("delivery", "timeout_secs", 600),
            ("delivery", "retry_budget_secs", 3600),
        ] {
            let with = |n: u64| {
                VALID.replace(
                    "[acquire]\ntimeout_secs = 10",
                    &format!("[{table}]\n{key} = {n}"),
                )
            };
            let place = format!("{table}.{key}");
            parse(&with(max), Path::new("."), &env).unwrap();
            assert_problem(&with(0), &place, "at least 1");
            assert_problem(&with(max + 1), &place, &format!("use 1 to {max}"));
            assert_problem(&with(u64::MAX / 2), &place, "out of range");
        }
    }

    /// VALID's team with these webhooks (name, kind) instead of its own.
    fn with_hooks(hooks: &[(Option<&str>, &str)]) -> String {
        let mut text = VALID[..VALID.find("[[teams.webhooks]]").unwrap()].to_owned();
        for (index, (name, kind)) in hooks.iter().enumerate() {
            text.push_str("\n[[teams.webhooks]]\n");
            if let Some(name) = name {
                let quoted: String = name
                    .chars()
                    .map(|c| match c {
                        '"' | '\\' => format!("\\{c}"),
                        c if c.is_control() => format!("\\u{:04X}", c as u32),
                        c => c.to_string(),
                    })
                    .collect();
                text.push_str(&format!("name = \"{quoted}\"\n"));
            }
            text.push_str(&format!(
                "kind = \"{kind}\"\nurl = \"https://example.com/{index}\"\n"
            ));
        }
        text
    }

    fn hook_names(text: &str) -> Vec<String> {
        let config = parse(text, Path::new("."), &env).unwrap();
        config.teams[0]
            .webhooks
            .iter()
            .map(|h| h.name.clone())
            .collect()
    }

    #[test]
    fn several_webhooks_of_one_kind_each_need_a_name() {
        let text = with_hooks(&[(None, "slack"), (None, "slack"), (None, "generic")]);
        let found = problems(&text);
        assert_eq!(found.len(), 2, "{found:#?}");
        let team = "team \"support-apac\"";
        for (index, was) in [(0, "slack"), (1, "slack-2")] {
            for words in [
                "this team has 2 slack webhooks",
                "keys the delivery ledger",
                "must not depend on their order",
                &format!("add name = \"{was}\""),
            ] {
                assert_problem(&text, &format!("{team}.webhooks[{index}].name"), words);
            }
        }

        // One named is not enough: the other would still be named by its kind.
        let text = with_hooks(&[(Some("alerts"), "slack"), (None, "slack")]);
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].place, format!("{team}.webhooks[1].name"));
    }

    #[test]
    fn a_webhook_keeps_its_name_when_another_is_removed() {
        let both = with_hooks(&[
            (Some("alerts"), "slack"),
            (Some("digest"), "slack"),
            (None, "generic"),
        ]);
        assert_eq!(hook_names(&both), ["alerts", "digest", "generic"]);
        let second = with_hooks(&[(Some("digest"), "slack"), (None, "generic")]);
        assert_eq!(hook_names(&second), ["digest", "generic"]);
        let alone = with_hooks(&[(None, "generic"), (None, "slack")]);
        assert_eq!(hook_names(&alone), ["generic", "slack"]);
    }

    #[test]
    fn webhook_names_are_checked() {
        let place = "team \"support-apac\".webhooks[0].name";
        let long = "n".repeat(64);
        assert_eq!(hook_names(&with_hooks(&[(Some(&long), "slack")])), [long]);
        for (name, words) in [
            ("", "is empty"),
            ("   ", "is empty"),
            (&"n".repeat(65), "is 65 characters long: use at most 64"),
            ("a\tb", "control character"),
            ("a\nb", "control character"),
            ("a\u{7f}b", "control character"),
        ] {
            assert_problem(&with_hooks(&[(Some(name), "slack")]), place, words);
        }
        assert_problem(
            &with_hooks(&[(Some("same"), "slack"), (Some("same"), "generic")]),
            "team \"support-apac\".webhooks[1].name",
            "duplicate webhook name \"same\"",
        );
        assert_problem(
            &with_hooks(&[(Some("generic"), "slack"), (None, "generic")]),
            "team \"support-apac\".webhooks[1].name",
            "duplicate webhook name \"generic\"",
        );
    }

    #[test]
    fn duplicate_team_names_are_rejected() {
        let text = format!("{VALID}\n{}", &VALID[VALID.find("[[teams]]").unwrap()..]);
        assert_problem(&text, "team \"support-apac\".name", "duplicate");
    }
}
