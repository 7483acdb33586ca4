//! What each team is owed now: the one derivation the reconciler's plan, the pending gauge and
//! `status` all ask, so they can't disagree about what is due.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Entries, Entry, Requester};
use crate::config::{Team, Webhook};
use crate::schedule::Span;

/// With `catch_up = "0"` a firing is still delivered when the daemon wakes this close to it.
pub const ON_TIME: Duration = Duration::from_secs(60);

/// How many days back the ledger can hold a span still worth a look: `catch_up` is at most
/// seven days, and a zone's date can differ from UTC's by one.
pub const LOOKBACK_DAYS: u64 = 9;

/// One digest a team is owed now: a span its firings in `(now − catch_up, now]` cover, for
/// one of its webhooks, and what the ledger holds of it.
#[derive(Debug, Clone, Copy)]
pub struct Owed<'a> {
    pub team: &'a Team,
    pub span: Span,
    pub hook: &'a Webhook,
    pub entry: Option<&'a Entry>,
}

impl Owed<'_> {
    /// Nothing is left for the daemon to do: delivered, skipped, unknown, or refused at the
    /// URL the webhook has now.
    pub fn settled(&self) -> bool {
        self.entry
            .is_some_and(|e| e.settled_for(Requester::Daemon, &self.hook.url.fingerprint()))
    }
}

/// Every digest the teams are owed at `now`, team by team, oldest span first.
pub fn owed<'a>(teams: &'a [Team], now: DateTime<Utc>, entries: &'a Entries) -> Vec<Owed<'a>> {
    let mut owed = Vec::new();
    for team in teams {
        for span in live_spans(team, now) {
            let recorded = entries.get(&(team.name.clone(), span));
            owed.extend(team.webhooks.iter().map(|hook| Owed {
                team,
                span,
                hook,
                entry: recorded.and_then(|hooks| hooks.get(&hook.name)),
            }));
        }
    }
    owed
}

/// The spans a team's schedule makes due at `now`: what its firings in `(now − catch_up,
/// now]` cover.
pub fn live_spans(team: &Team, now: DateTime<Utc>) -> Vec<Span> {
    let reach = chrono::Duration::from_std(team.catch_up.max(ON_TIME)).unwrap_or_default();
    let mut spans: Vec<Span> = team
        .schedule
        .firing_dates(team.zone, now - reach, now)
        .into_iter()
        .map(|date| team.schedule.coverage_of(team.zone, date))
        .filter(|span| span.ends(team.zone) <= now)
        .collect();
    spans.dedup();
    spans
}

/// "Tue 24 Nov 09:00:00 Asia/Kolkata (03:30:00 UTC), covering 2026-11-23", or why there is none.
pub fn describe_next(team: &Team, now: DateTime<Utc>) -> String {
    match team.schedule.next_after(team.zone, now) {
        Some(next) => format!(
            "{} {} ({} UTC), covering {}",
            team.zone.local(next).format("%a %-d %b %H:%M:%S"),
            team.zone,
            next.format("%a %-d %b %H:%M:%S"),
            team.schedule.coverage(team.zone, next)
        ),
        None => "never (the schedule has no future firing)".to_owned(),
    }
}
