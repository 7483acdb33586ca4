//! `status`: what happened to each team's recent digests, read from the ledger (either store),
//! for an admin asking "where is yesterday's digest?" and for a monitoring check (its exit code
//! says whether everything due was delivered).
//!
//! [`report`] is pure in (teams, ledger entries, now); the command only reads and prints.

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::config::Team;
use crate::ledger::owed::{LOOKBACK_DAYS, describe_next, live_spans};
use crate::ledger::{Entries, Ledger, LedgerError, State};
use crate::schedule::{Span, Zone};

mod page;

pub use page::page;

#[derive(Debug, Serialize)]
pub struct Status {
    /// Everything due was delivered.
    pub ok: bool,
    pub teams: Vec<TeamStatus>,
}

#[derive(Debug, Serialize)]
pub struct TeamStatus {
    pub team: String,
    /// When and what the next digest covers, in words.
    pub next_digest: String,
    pub next_digest_at: Option<DateTime<Utc>>,
    pub webhooks: Vec<WebhookStatus>,
}

#[derive(Debug, Serialize)]
pub struct WebhookStatus {
    pub webhook: String,
    /// Scheme, host, port and a fingerprint: the URL is a credential.
    pub host: String,
    /// Most recent first.
    pub spans: Vec<SpanStatus>,
}

#[derive(Debug, Serialize)]
pub struct SpanStatus {
    pub date: NaiveDate,
    pub end_date: NaiveDate,
    /// delivered, failed (tried, tried again later), pending (not tried yet), refused,
    /// unknown (outcome unknown), too_many_attempts (the bound on POSTs spent), expired (its catch-up window closed), missed (its firing
    /// went by while nothing ran), skipped, unreadable (a row this version can't read).
    pub state: &'static str,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Another process is delivering it right now, until then at the latest.
    pub leased_until: Option<DateTime<Utc>>,
}

/// Which spans to show.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    /// Everything the ledger holds since this date, and every span due now.
    Since(NaiveDate),
    /// The spans that contain this date.
    Containing(NaiveDate),
}

impl Which {
    /// What `status` shows without `--date`: every span the daemon may still act on.
    pub fn recent(now: DateTime<Utc>) -> Which {
        Which::Since(now.date_naive() - chrono::Days::new(LOOKBACK_DAYS))
    }
}

/// What `status` and the status page show: the ledger read for `which`, then [`report`].
pub async fn read(
    ledger: &Ledger,
    teams: &[&Team],
    now: DateTime<Utc>,
    which: Which,
) -> Result<Status, LedgerError> {
    let since = match which {
        Which::Since(date) | Which::Containing(date) => date,
    };
    let entries = ledger.recent(since).await?;
    Ok(report(teams, &entries, now, which))
}

/// Each team's webhooks and their spans: those the ledger holds, and those due now that it
/// doesn't hold yet (pending).
pub fn report(teams: &[&Team], entries: &Entries, now: DateTime<Utc>, which: Which) -> Status {
    let wanted = |span: &Span| match which {
        Which::Since(since) => span.last >= since,
        Which::Containing(date) => span.first <= date && date <= span.last,
    };
    // Once, not once a team: at 100,000 teams that is the difference between a page and a
    // stalled server.
    let mut recorded: HashMap<&str, Vec<Span>> = HashMap::new();
    for (team, span) in entries.keys() {
        recorded.entry(team.as_str()).or_default().push(*span);
    }
    // Teams share a few hundred schedules, zones and catch-up windows: the schedule searches
    // for each are made once, not once a team (they were most of the page at 100,000).
    let mut timings: HashMap<(&str, Zone, std::time::Duration), Timing> = HashMap::new();
    let mut ok = true;
    let teams = teams
        .iter()
        .map(|team| {
            let key = (team.schedule.as_str(), team.zone, team.catch_up);
            let (live, next_digest, next_digest_at) = timings.entry(key).or_insert_with(|| {
                (
                    live_spans(team, now).into_iter().collect(),
                    describe_next(team, now),
                    team.schedule.next_after(team.zone, now),
                )
            });
            let mut spans = live.clone();
            spans.extend(recorded.get(team.name.as_str()).into_iter().flatten());
            spans.retain(wanted);
            let webhooks = team
                .webhooks
                .iter()
                .map(|hook| {
                    let spans: Vec<SpanStatus> = spans
                        .iter()
                        .rev()
                        .filter_map(|span| {
                            let entry = entries
                                .get(&(team.name.clone(), *span))
                                .and_then(|hooks| hooks.get(&hook.name));
                            // A webhook added since a span was due was never owed it.
                            if entry.is_none() && !live.contains(span) {
                                return None;
                            }
                            let status = span_status(*span, entry);
                            ok &= matches!(status.state, "delivered" | "skipped");
                            Some(status)
                        })
                        .collect();
                    WebhookStatus {
                        webhook: hook.name.clone(),
                        host: hook.url.to_string(),
                        spans,
                    }
                })
                .collect();
            TeamStatus {
                team: team.name.clone(),
                next_digest: next_digest.clone(),
                next_digest_at: *next_digest_at,
                webhooks,
            }
        })
        .collect();
    Status { ok, teams }
}

/// The spans a schedule makes due now, its next digest in words, and when that is.
type Timing = (BTreeSet<Span>, String, Option<DateTime<Utc>>);

fn span_status(span: Span, entry: Option<&crate::ledger::Entry>) -> SpanStatus {
    let Some(entry) = entry else {
        return SpanStatus {
            date: span.first,
            end_date: span.last,
            state: "pending",
            attempts: 0,
            last_error: None,
            next_attempt: None,
            delivered_at: None,
            leased_until: None,
        };
    };
    let state = match entry.state {
        State::Pending if entry.is_waiting() => "waiting",
        State::Pending if entry.attempts > 0 => "failed",
        state => state.as_str(),
    };
    SpanStatus {
        date: span.first,
        end_date: span.last,
        state,
        attempts: entry.attempts,
        last_error: entry.last_error.clone(),
        next_attempt: entry.next_attempt,
        delivered_at: entry.delivered_at,
        // PostgreSQL keeps leases to the millisecond; shown to the second, rounded up.
        leased_until: entry.leased_until.and_then(|until| {
            let rounded_up = until.timestamp() + i64::from(until.timestamp_subsec_nanos() > 0);
            DateTime::from_timestamp(rounded_up, 0)
        }),
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for team in &self.teams {
            writeln!(f, "{}: next digest {}", team.team, team.next_digest)?;
            for hook in &team.webhooks {
                writeln!(f, "  {} ({})", hook.webhook, hook.host)?;
                if hook.spans.is_empty() {
                    writeln!(f, "    nothing recorded")?;
                }
                for span in &hook.spans {
                    let days = Span {
                        first: span.date,
                        last: span.end_date,
                    };
                    let said = span.said(span.last_error.as_deref());
                    writeln!(f, "    {days:<22} {said}")?;
                }
            }
        }
        Ok(())
    }
}

impl SpanStatus {
    /// What happened to it, in words: its state, `error` (the last error, or the part of it
    /// to show), the next attempt and a lease another process holds.
    fn said(&self, error: Option<&str>) -> String {
        let time = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let mut line = String::new();
        let _ = match self.state {
            "delivered" => write!(
                line,
                "delivered{}",
                (self.delivered_at)
                    .map(|at| format!(" at {}", time(at)))
                    .unwrap_or_default()
            ),
            "failed" => write!(
                line,
                "FAILED after {} attempt{}",
                self.attempts,
                if self.attempts == 1 { "" } else { "s" }
            ),
            "pending" if self.leased_until.is_some() => {
                write!(line, "pending, being delivered now")
            }
            "pending" => write!(line, "pending, not tried yet"),
            "waiting" => write!(
                line,
                "waiting for data: it looked incomplete{}",
                (self.next_attempt)
                    .map(|at| format!("; read again at {}", time(at)))
                    .unwrap_or_default()
            ),
            "skipped" => write!(line, "skipped: no visitors"),
            "refused" => write!(line, "REFUSED (not sent again until its URL changes)"),
            "unknown" => write!(line, "OUTCOME UNKNOWN (two POSTs went unanswered)"),
            "too_many_attempts" => write!(
                line,
                "GIVEN UP after {} POSTs reached the receiver",
                crate::ledger::MAX_POSTS
            ),
            "missed" => write!(
                line,
                "MISSED: nothing recorded of it within its catch_up window (`once --date {}` sends it)",
                self.date
            ),
            "unreadable" => write!(line, "UNREADABLE by this version"),
            _ => write!(line, "GIVEN UP: its catch_up window closed"),
        };
        if !matches!(self.state, "delivered" | "waiting")
            && let Some(error) = error
        {
            let _ = write!(line, ": {error}");
        }
        if let Some(at) = self.next_attempt.filter(|_| self.state == "failed") {
            let _ = write!(line, "; next attempt {}", time(at));
        }
        if let Some(until) = self.leased_until {
            let _ = write!(line, " (leased until {})", time(until));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::ledger::Entry;

    fn team() -> Team {
        let text = r#"
[[teams]]
name = "apac"
account_id = "acme"
api_key = "key-1234"
timezone = "+05:30"
schedule = "0 9 * * *"
[[teams.webhooks]]
kind = "slack"
url = "https://hooks.example/T0/B0/secret"
[[teams.webhooks]]
kind = "generic"
url = "https://warehouse.example/in"
"#;
        crate::config::parse(text, Path::new("."), &|_| None)
            .unwrap()
            .teams
            .remove(0)
    }

    #[test]
    fn a_day_due_and_not_delivered_fails_the_check_and_says_why() {
        let team = team();
        // 10:00 in +05:30 on the 24th: the 23rd is due, the 22nd was due the day before.
        let now: DateTime<Utc> = "2026-11-24T04:30:00Z".parse().unwrap();
        let day = |d: &str| Span::day(d.parse().unwrap());
        let mut entries = Entries::new();
        let yesterday = entries
            .entry(("apac".into(), day("2026-11-23")))
            .or_default();
        yesterday.insert("slack".into(), Entry::settled_as(State::Delivered, 1, None));
        yesterday.insert(
            "generic".into(),
            Entry::settled_as(State::Pending, 2, Some("HTTP 503: maintenance")),
        );
        let before = entries
            .entry(("apac".into(), day("2026-11-22")))
            .or_default();
        before.insert("slack".into(), Entry::settled_as(State::Delivered, 1, None));
        before.insert(
            "generic".into(),
            Entry::settled_as(State::Refused, 1, Some("HTTP 404")),
        );
        // Another team's entries are not this team's.
        entries
            .entry(("emea".into(), day("2026-11-23")))
            .or_default()
            .insert("slack".into(), Entry::settled_as(State::Expired, 3, None));

        let since = "2026-11-15".parse().unwrap();
        let status = report(&[&team], &entries, now, Which::Since(since));
        assert!(!status.ok);
        let hooks = &status.teams[0].webhooks;
        let states = |i: usize| -> Vec<(String, &str)> {
            hooks[i]
                .spans
                .iter()
                .map(|s| (s.date.to_string(), s.state))
                .collect()
        };
        assert_eq!(
            states(0),
            [
                ("2026-11-23".into(), "delivered"),
                ("2026-11-22".into(), "delivered")
            ]
        );
        assert_eq!(
            states(1),
            [
                ("2026-11-23".into(), "failed"),
                ("2026-11-22".into(), "refused")
            ]
        );
        assert!(hooks[0].host.starts_with("https://hooks.example:443 #"));
        let text = status.to_string();
        assert!(
            text.contains("FAILED after 2 attempts: HTTP 503: maintenance"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");

        // Only the 23rd, with the slack webhook delivered: still not ok (generic failed).
        let status = report(
            &[&team],
            &entries,
            now,
            Which::Containing(day("2026-11-23").first),
        );
        assert!(!status.ok);
        assert_eq!(status.teams[0].webhooks[0].spans.len(), 1);
    }

    /// Schedules are worked out once per schedule, zone and catch-up, so teams that share
    /// two of them still get their own days and next digest.
    #[test]
    fn teams_sharing_a_schedule_are_each_owed_their_own_days() {
        let now: DateTime<Utc> = "2026-11-24T04:30:00Z".parse().unwrap();
        let named = |name: &str| Team {
            name: name.into(),
            ..team()
        };
        let (apac, twin) = (named("apac"), named("twin"));
        let prompt = Team {
            catch_up: std::time::Duration::ZERO,
            ..named("prompt")
        };
        let later = Team {
            zone: Zone::Fixed(chrono::FixedOffset::east_opt(0).unwrap()),
            ..named("later")
        };
        let weekly = Team {
            schedule: crate::schedule::Schedule::parse("0 9 * * 1").unwrap(),
            ..named("weekly")
        };
        let mut entries = Entries::new();
        entries
            .entry(("twin".into(), Span::day("2026-11-23".parse().unwrap())))
            .or_default()
            .insert("slack".into(), Entry::settled_as(State::Delivered, 1, None));
        let since = "2026-11-15".parse().unwrap();
        let teams = [&apac, &prompt, &twin, &later, &weekly];
        let status = report(&teams, &entries, now, Which::Since(since));
        let first = |i: usize| -> Vec<&str> {
            let hooks = &status.teams[i].webhooks;
            hooks
                .iter()
                .map(|h| h.spans.first().map_or("-", |s| s.state))
                .collect()
        };
        // 10:00 in +05:30: apac's 09:00 firing an hour ago is due; prompt's (catch_up "0")
        // went by; the twin delivered to slack; at 04:30 UTC `later`'s 09:00 is to come, and
        // its last one, 19.5 hours ago, is past the 12 hours of catch-up; `weekly` fired on
        // Monday, 25 hours ago.
        assert_eq!(first(0), ["pending", "pending"]);
        assert_eq!(first(1), ["-", "-"]);
        assert_eq!(first(2), ["delivered", "pending"]);
        assert_eq!(first(3), ["-", "-"]);
        assert_eq!(first(4), ["-", "-"]);
        assert!(
            status.teams[4]
                .next_digest
                .starts_with("Mon 30 Nov 09:00:00")
        );
        let at = |i: usize| status.teams[i].next_digest_at.unwrap().to_rfc3339();
        assert_eq!(at(0), "2026-11-25T03:30:00+00:00");
        assert_eq!(at(3), "2026-11-24T09:00:00+00:00");
        assert_eq!(at(4), "2026-11-30T03:30:00+00:00");
        assert!(
            status.teams[0]
                .next_digest
                .starts_with("Wed 25 Nov 09:00:00")
        );
        assert!(
            status.teams[3]
                .next_digest
                .starts_with("Tue 24 Nov 09:00:00")
        );
        assert_eq!(status.teams[0].next_digest, status.teams[1].next_digest);
    }

    #[test]
    fn a_day_due_that_the_ledger_has_not_seen_is_pending_and_everything_delivered_is_ok() {
        let team = team();
        let now: DateTime<Utc> = "2026-11-24T04:30:00Z".parse().unwrap();
        let since = "2026-11-15".parse().unwrap();
        let status = report(&[&team], &Entries::new(), now, Which::Since(since));
        assert!(!status.ok);
        assert_eq!(status.teams[0].webhooks[0].spans[0].state, "pending");
        assert_eq!(
            status.teams[0].webhooks[0].spans[0].date.to_string(),
            "2026-11-23"
        );

        let mut entries = Entries::new();
        let hooks = entries
            .entry(("apac".into(), Span::day("2026-11-23".parse().unwrap())))
            .or_default();
        hooks.insert("slack".into(), Entry::settled_as(State::Delivered, 1, None));
        hooks.insert(
            "generic".into(),
            Entry::settled_as(State::Delivered, 2, Some("HTTP 503")),
        );
        // A day no longer due that only the slack webhook got: the generic one was added
        // since, and never owed it.
        entries
            .entry(("apac".into(), Span::day("2026-11-20".parse().unwrap())))
            .or_default()
            .insert("slack".into(), Entry::settled_as(State::Delivered, 1, None));
        let status = report(&[&team], &entries, now, Which::Since(since));
        assert!(status.ok, "{status}");
        assert_eq!(status.teams[0].webhooks[0].spans.len(), 2);
        assert_eq!(status.teams[0].webhooks[1].spans.len(), 1);
    }

    #[test]
    fn a_day_skipped_for_no_visitors_is_ok_and_says_so() {
        let team = team();
        let now: DateTime<Utc> = "2026-11-24T04:30:00Z".parse().unwrap();
        let day = Span::day("2026-11-23".parse().unwrap());
        let mut entries = Entries::new();
        let hooks = entries.entry(("apac".into(), day)).or_default();
        hooks.insert("slack".into(), Entry::settled_as(State::Skipped, 0, None));
        hooks.insert("generic".into(), Entry::settled_as(State::Skipped, 0, None));
        let status = report(&[&team], &entries, now, Which::Containing(day.first));
        assert!(status.ok);
        assert_eq!(status.teams[0].webhooks[0].spans[0].state, "skipped");
        let text = status.to_string();
        assert!(text.contains(" skipped: no visitors\n"), "{text}");

        let hooks = entries.get_mut(&("apac".into(), day)).unwrap();
        hooks.insert("generic".into(), Entry::settled_as(State::Pending, 1, None));
        assert!(!report(&[&team], &entries, now, Which::Containing(day.first)).ok);
    }
}
