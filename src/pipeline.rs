//! The whole line for one team and one day: ledger check → fetch → rank → render → deliver →
//! record. `once`, `demo` and the daemon all come through here.

use std::fmt;

use chrono::NaiveDate;
use serde_json::Value;

use crate::config::{Config, Team, Webhook};
use crate::deliver::{Deliverer, DeliveryError};
use crate::fetch::{self, FetchError};
use crate::http::RetryPolicy;
use crate::ledger::{Claim, Ledger, LedgerError};

/// How long a claim on a delivery keeps other processes off where the claimant's liveness
/// can't be seen: longer than any POST with its retries and Slack pacing takes, short enough
/// that a crashed claimant delays the digest by a retry round or two of the daemon's.
const CLAIM_EXPIRY: std::time::Duration = std::time::Duration::from_secs(15 * 60);
use crate::rank::{Audience, Digest, rank};
use crate::render::{RenderError, Renderer};
use crate::schedule::Window;

/// Everything a run needs, built once from the config and shared by every team.
#[derive(Clone)]
pub struct Pipeline {
    pub client: fetch::Client,
    pub renderer: Renderer,
    pub deliverer: Deliverer,
    /// None for dry runs and the demo: nothing is recorded.
    pub ledger: Option<Ledger>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Send even what the ledger lists as delivered.
    pub force: bool,
    /// Render and return the bodies; post and record nothing.
    pub dry_run: bool,
}

/// What happened to one team's day.
#[derive(Debug)]
pub struct TeamReport {
    pub team: String,
    pub date: NaiveDate,
    pub outcome: Result<Vec<HookReport>, TeamError>,
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
    AlreadyDelivered,
    DryRun(Value),
    RenderFailed(RenderError),
    Failed(DeliveryError),
    /// Another process (the daemon, another `once`) is posting it right now.
    HeldElsewhere,
    /// Not posted: the ledger, which keeps it from being sent twice, could not be read.
    LedgerFailed(LedgerError),
    /// Posted, but the ledger could not record it: the next run may post it once more.
    NotRecorded(LedgerError),
}

#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
}

impl HookStatus {
    /// Nothing more to do for this webhook's day.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            HookStatus::Delivered
                | HookStatus::AlreadyDelivered
                | HookStatus::DryRun(_)
                | HookStatus::HeldElsewhere
        )
    }

    /// A failure a later try may mend: the receiver was unreachable or busy, not refusing.
    pub fn is_retryable(&self) -> bool {
        match self {
            HookStatus::Failed(e) => e.is_transient(),
            HookStatus::LedgerFailed(_) => true,
            _ => false,
        }
    }
}

impl TeamError {
    /// Whether a later try may succeed (a rejected key or a wrong account won't).
    pub fn is_retryable(&self) -> bool {
        match self {
            TeamError::Fetch(e) => !matches!(
                e.problem,
                fetch::Problem::Unauthorized(_) | fetch::Problem::NotFound
            ),
            TeamError::Ledger(_) => true,
        }
    }
}

impl fmt::Display for HookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookStatus::Delivered => f.write_str("delivered"),
            HookStatus::AlreadyDelivered => {
                f.write_str("already delivered, skipped (--force sends again)")
            }
            HookStatus::DryRun(_) => f.write_str("dry run, not sent"),
            HookStatus::HeldElsewhere => {
                f.write_str("being delivered by another acquire-digest process, skipped")
            }
            HookStatus::LedgerFailed(e) => write!(f, "FAILED, not sent: {e}"),
            HookStatus::RenderFailed(e) => write!(f, "FAILED to render: {e}"),
            HookStatus::Failed(e) => write!(f, "FAILED: {e}"),
            HookStatus::NotRecorded(e) => {
                write!(f, "delivered, but not recorded ({e}); it may be sent again")
            }
        }
    }
}

impl TeamReport {
    /// Whether anything still needs doing for this day.
    pub fn is_ok(&self) -> bool {
        match &self.outcome {
            Ok(hooks) => hooks.iter().all(|h| h.status.is_done()),
            Err(_) => false,
        }
    }

    /// "team date webhook (host): what happened".
    pub fn hook_line(&self, hook: &HookReport) -> String {
        format!(
            "{} {} {} ({}): {}",
            self.team, self.date, hook.webhook, hook.host, hook.status
        )
    }

    /// One line per webhook (or one for the team when nothing could be sent).
    pub fn summary_lines(&self) -> Vec<String> {
        match &self.outcome {
            Ok(hooks) if hooks.is_empty() => {
                vec![format!("{} {}: no webhooks", self.team, self.date)]
            }
            Ok(hooks) => hooks.iter().map(|h| self.hook_line(h)).collect(),
            Err(e) => vec![format!(
                "{} {}: FAILED, no digest sent: {e}",
                self.team, self.date
            )],
        }
    }
}

impl Pipeline {
    pub fn new(config: &Config, ledger: Option<Ledger>) -> Pipeline {
        Pipeline {
            client: fetch::Client::with_retry(
                config.timeout,
                config.concurrency,
                RetryPolicy::within(config.fetch_retry_budget),
            ),
            renderer: config.renderer.clone(),
            deliverer: Deliverer::new(
                config.delivery_timeout,
                RetryPolicy::within(config.delivery_retry_budget),
            ),
            ledger,
        }
    }

    /// Builds and delivers one team's digest for `date`, to every webhook not yet delivered.
    pub async fn run_team(&self, team: &Team, date: NaiveDate, options: RunOptions) -> TeamReport {
        let outcome = self.deliver_day(team, date, options).await;
        TeamReport {
            team: team.name.clone(),
            date,
            outcome,
        }
    }

    async fn deliver_day(
        &self,
        team: &Team,
        date: NaiveDate,
        options: RunOptions,
    ) -> Result<Vec<HookReport>, TeamError> {
        let delivered = match (&self.ledger, options.force || options.dry_run) {
            (Some(ledger), false) => ledger.delivered(&team.name, date)?,
            _ => Default::default(),
        };
        let (done, pending): (Vec<&Webhook>, Vec<&Webhook>) = team
            .webhooks
            .iter()
            .partition(|hook| delivered.contains(&hook.name));
        let mut reports: Vec<HookReport> = done
            .into_iter()
            .map(|hook| report(hook, HookStatus::AlreadyDelivered))
            .collect();
        // Nothing to send: don't spend four API calls on it.
        if pending.is_empty() {
            return Ok(reports);
        }

        let digest = self.digest(team, date).await?;
        let sends = pending.into_iter().map(|hook| async {
            let status = self.send(team, &digest, hook, options).await;
            report(hook, status)
        });
        reports.extend(futures::future::join_all(sends).await);
        Ok(reports)
    }

    pub async fn digest(&self, team: &Team, date: NaiveDate) -> Result<Digest, FetchError> {
        let window = Window::for_date(team.zone, date);
        let day = self.client.fetch_day(team, &window).await?;
        let audience = Audience {
            team: &team.name,
            account_id: team.account_id.as_str(),
            timezone: team.zone.to_string(),
            top: team.top,
        };
        Ok(rank(&audience, &window, &day))
    }

    async fn send(
        &self,
        team: &Team,
        digest: &Digest,
        hook: &Webhook,
        options: RunOptions,
    ) -> HookStatus {
        let body = match self.renderer.body(hook, digest) {
            Ok(body) => body,
            Err(e) => return HookStatus::RenderFailed(e),
        };
        if options.dry_run {
            return HookStatus::DryRun(body);
        }
        let date = digest.date.parse().expect("the digest's own date");
        if let Some(ledger) = &self.ledger {
            match ledger.claim((&team.name, date, &hook.name), options.force, CLAIM_EXPIRY) {
                Ok(Claim::Claimed) => {}
                Ok(Claim::AlreadyDelivered) => return HookStatus::AlreadyDelivered,
                Ok(Claim::HeldElsewhere) => return HookStatus::HeldElsewhere,
                Err(e) => return HookStatus::LedgerFailed(e),
            }
        }
        if let Err(e) = self.deliverer.post(hook, &body).await {
            tracing::warn!(team = %team.name, date = %digest.date, webhook = %hook.name, host = %hook.url, error = %e, "delivery failed");
            if let Some(ledger) = &self.ledger
                && let Err(e) = ledger.release(&team.name, date, &hook.name)
            {
                tracing::warn!(team = %team.name, date = %digest.date, webhook = %hook.name, error = %e, "could not release the claim; it expires in {CLAIM_EXPIRY:?}");
            }
            return HookStatus::Failed(e);
        }
        tracing::info!(team = %team.name, date = %digest.date, webhook = %hook.name, host = %hook.url, "delivered");
        match &self.ledger {
            Some(ledger) => match ledger.record(&team.name, date, &hook.name) {
                Ok(()) => HookStatus::Delivered,
                Err(e) => HookStatus::NotRecorded(e),
            },
            None => HookStatus::Delivered,
        }
    }
}

fn report(hook: &Webhook, status: HookStatus) -> HookReport {
    HookReport {
        webhook: hook.name.clone(),
        host: hook.url.to_string(),
        status,
    }
}
