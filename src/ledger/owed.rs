//! What each team is owed now: the one derivation the reconciler's plan, the pending gauge and
//! `status` all ask, so they can't disagree about what is due.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Entries, Entry, Key, Requester};
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
pub fn owed<'a, T: Borrow<Team>>(
    teams: &'a [T],
    now: DateTime<Utc>,
    entries: &'a Entries,
) -> Vec<Owed<'a>> {
    let mut owed = Vec::new();
    for team in teams {
        let team = team.borrow();
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

/// Where a team's catch-up window starts at `now`: firings before it are no longer due.
pub fn window_start(team: &Team, now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::from_std(team.catch_up.max(ON_TIME)).unwrap_or_default()
}

/// When a span stops being due: its firing's catch-up window closes (None for a span no
/// firing of the schedule covers).
pub fn window_closes(team: &Team, span: Span) -> Option<DateTime<Utc>> {
    let date = span.last.succ_opt()?;
    let before = team.zone.start_of_day(date) - chrono::Duration::seconds(1);
    let firing = team.schedule.next_after(team.zone, before)?;
    let covered = team.schedule.coverage(team.zone, firing) == span;
    let reach = chrono::Duration::from_std(team.catch_up.max(ON_TIME)).unwrap_or_default();
    covered.then_some(firing + reach)
}

/// The spans a team's schedule makes due at `now`: what its firings in `(now − catch_up,
/// now]` cover.
pub fn live_spans(team: &Team, now: DateTime<Utc>) -> Vec<Span> {
    let mut spans: Vec<Span> = team
        .schedule
        .firing_dates(team.zone, window_start(team, now), now)
        .into_iter()
        .map(|(date, _)| team.schedule.coverage_of(team.zone, date))
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

/// A digest whose firing went by unseen: its catch-up window had closed before any process
/// recorded anything of it (the host was down, the daemon crash-looped, the clock jumped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    pub key: Key,
    /// The span's firing (its date's first, when the schedule fires more often).
    pub firing: DateTime<Utc>,
}

/// The firings between each team's watermark (the instant up to which its firings are
/// accounted for) and the start of its catch-up window at `now`: the digests of theirs the
/// ledger holds nothing of, and this process isn't delivering (`busy`), are missed. Also
/// where each watermark moves: a team seen for the first time starts at its window, so adding
/// a team never reports its past; a watermark never moves back.
pub fn unseen<T: Borrow<Team>>(
    teams: &[T],
    now: DateTime<Utc>,
    entries: &Entries,
    watermarks: &HashMap<String, DateTime<Utc>>,
    busy: &dyn Fn(&str, Span) -> bool,
) -> (Vec<Missed>, Vec<(String, DateTime<Utc>)>) {
    let (mut missed, mut moved) = (Vec::new(), Vec::new());
    for (team, firings) in walk(teams, now, watermarks) {
        moved.push((team.name.clone(), window_start(team, now)));
        let live = live_spans(team, now);
        for (date, firing) in firings {
            let span = team.schedule.coverage_of(team.zone, date);
            if live.contains(&span) || busy(&team.name, span) {
                continue;
            }
            let recorded = entries.get(&(team.name.clone(), span));
            for hook in &team.webhooks {
                if recorded.is_none_or(|hooks| !hooks.contains_key(&hook.name)) {
                    let key = Key::new(&team.name, span, &hook.name);
                    missed.push(Missed { key, firing });
                }
            }
        }
    }
    (missed, moved)
}

/// The first day [`unseen`] will look at, if any: how far back the ledger must be read.
pub fn unseen_since<T: Borrow<Team>>(
    teams: &[T],
    now: DateTime<Utc>,
    watermarks: &HashMap<String, DateTime<Utc>>,
) -> Option<chrono::NaiveDate> {
    (walk(teams, now, watermarks).into_iter())
        .flat_map(|(team, firings)| {
            (firings.into_iter()).map(|(date, _)| team.schedule.coverage_of(team.zone, date).first)
        })
        .min()
}

/// Local dates a schedule fires on, each with its first firing there.
type Firings = Vec<(chrono::NaiveDate, DateTime<Utc>)>;

/// Each team whose watermark is to move, with the firings from it to its window's start
/// (none for a team seen for the first time).
fn walk<'a, T: Borrow<Team>>(
    teams: &'a [T],
    now: DateTime<Utc>,
    watermarks: &HashMap<String, DateTime<Utc>>,
) -> Vec<(&'a Team, Firings)> {
    let mut walks = Vec::new();
    for team in teams {
        let team = team.borrow();
        let start = window_start(team, now);
        match watermarks.get(&team.name) {
            None => walks.push((team, Vec::new())),
            Some(&mark) => {
                let firings = team.schedule.firing_dates(team.zone, mark, start);
                if !firings.is_empty() {
                    walks.push((team, firings));
                }
            }
        }
    }
    walks
}
