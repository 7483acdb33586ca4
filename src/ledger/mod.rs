//! The ledger: one row per (team, span, webhook) saying what happened to that digest, and the
//! one mechanism that keeps two processes from posting it both: a lease.
//!
//! A lease is an owner token and an expiry. It is taken before the first POST, renewed by one
//! heartbeat while the holder works, and ended by its finish; a holder that dies, panics or is
//! cancelled frees the digest at most [`lease_ttl`] after its last renewal, whatever its pid,
//! host or namespace. Every write a holder makes is fenced by its token, so one whose lease
//! expired and was taken over records nothing over the new holder.
//!
//! Each POST is counted as unanswered before it is sent and uncounted when an answer arrives,
//! so a kill at any instant leaves the count saying what may have arrived; no digest is sent
//! while two POSTs of it went unanswered ([`MAX_UNANSWERED`]).
//!
//! Retry state (attempts, next attempt, last error) lives here too, so it survives restarts
//! and `once` and the daemon see the same: it is the only record of when to try again.
//!
//! The rules live here once, as functions of a row and the time ([`take`], [`expire`],
//! [`fenced`]); [`Ledger::update`] reads a row, runs one of them on it and writes back what
//! it returns only if the row is still as it was read, in either database ([`crate::db`]).
//! No lock is held between the read and the write: a process that loses the race reads again
//! and runs the rule on what the winner wrote. Where the row can be guessed (none yet, for a
//! new digest's lease; the row as a holder last wrote it) the guess stands in for the read,
//! so the usual change is one statement.

pub mod owed;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row as _;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::clock::Clock;
use crate::config::{StateStore, sha256_hex};
use crate::db::{Access, Db, Dialect, causes};
use crate::deliver::Posted;
use crate::history::History;
use crate::schedule::Span;

/// How long a lease outlives its holder's last renewal: 90 s, or `ACQUIRE_DIGEST_LEASE_SECS`
/// (2 to 120), which lets crash trials run in seconds. It is renewed four times as often.
pub fn lease_ttl() -> Duration {
    static TTL: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TTL.get_or_init(|| {
        let seconds = std::env::var("ACQUIRE_DIGEST_LEASE_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(90, |s| s.clamp(2, 120));
        Duration::from_secs(seconds)
    })
}
/// The first day the ledger remembers at `now` with `[state] keep_days`: digests whose spans
/// ended before it are forgotten, so whether they were sent is no longer known.
pub fn forgotten_before(now: DateTime<Utc>, keep_days: u32) -> NaiveDate {
    now.date_naive() - chrono::Days::new(u64::from(keep_days))
}

/// POSTs of one digest that may be sent without an answer: the first, and one resend.
pub const MAX_UNANSWERED: u32 = 2;
/// POSTs of one digest that may reach its receiver in all, whatever it answers, across
/// rounds, processes and `once` runs: a gateway that forwards each and answers 5xx gets no
/// more copies than this (an admin's `--force` may send one more).
pub const MAX_POSTS: u32 = 10;

#[derive(Debug, thiserror::Error)]
#[error("delivery ledger {place}: {problem}")]
pub struct LedgerError {
    /// The file, or the database as host, port and name: never its password.
    place: String,
    problem: String,
}

/// The ledger's entries by (team, span) and webhook.
pub type Entries = HashMap<(String, Span), HashMap<String, Entry>>;

/// What a ledger entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub team: String,
    pub span: Span,
    pub webhook: String,
}

impl Key {
    pub fn new(team: &str, span: Span, webhook: &str) -> Key {
        Key {
            team: team.to_owned(),
            span,
            webhook: webhook.to_owned(),
        }
    }

    /// The `webhook-id` a receiver can drop repeats by: the same for every POST of this
    /// digest to this webhook, from any process.
    pub fn webhook_id(&self) -> String {
        let text = format!(
            "{}\n{}\n{}\n{}",
            self.team, self.span.first, self.span.last, self.webhook
        );
        format!("msg_{}", &sha256_hex(text.as_bytes())[..32])
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.team, self.span, self.webhook)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not delivered yet; tried again at `next_attempt`.
    Pending,
    Delivered,
    /// The webhook answered with a permanent 4xx; not sent again until its URL changes.
    Refused,
    /// Two POSTs went unanswered: it may have arrived twice already, so nothing resends it.
    Unknown,
    /// [`MAX_POSTS`] reached the receiver without one delivering it: nothing resends it.
    TooManyAttempts,
    /// Its catch-up window closed before it could be delivered.
    Expired,
    /// Its firing went by while no process was looking, and its catch-up window had closed
    /// by the time one did: given up without an attempt.
    Missed,
    /// Nobody visited and the team has `skip_empty`: nothing was posted, and nothing will be
    /// unless an admin forces it.
    Skipped,
    /// A row this version can't read (edited by hand, or written by a newer version): left
    /// alone by everyone, and shown with what is wrong with it. Never written.
    Unreadable,
}

impl State {
    const ALL: [State; 8] = [
        State::Pending,
        State::Delivered,
        State::Refused,
        State::Unknown,
        State::TooManyAttempts,
        State::Expired,
        State::Missed,
        State::Skipped,
    ];

    /// The state's name in the database, and in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Refused => "refused",
            State::Unknown => "unknown",
            State::TooManyAttempts => "too_many_attempts",
            State::Expired => "expired",
            State::Missed => "missed",
            State::Skipped => "skipped",
            State::Unreadable => "unreadable",
        }
    }
}

/// A ledger row as the reconciler and `once` read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub state: State,
    pub attempts: u32,
    pub unanswered: u32,
    /// POSTs that may have reached the receiver, all told: bounded by [`MAX_POSTS`].
    pub posts: u32,
    pub next_attempt: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The URL fingerprint of the webhook that refused.
    pub refused_url: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Until when another holder's lease keeps it off; None when nobody holds it.
    pub leased_until: Option<DateTime<Utc>>,
    /// The reads of its data that looked incomplete, each followed by a wait for more.
    pub reads: u32,
    /// What the last of them read, so a read that agrees with it ends the wait.
    pub last_read: Option<String>,
}

impl Entry {
    /// Whether `requester` has nothing to do for this digest: it is delivered, skipped or
    /// unknown (unless an admin forces it), it was given up and the daemon asks (a job queued
    /// before the give-up must not post it after the alert), or it was refused at this same
    /// URL and the daemon asks. `url` is the fingerprint of the webhook's URL now.
    pub fn settled_for(&self, requester: Requester, url: &str) -> bool {
        match self.state {
            State::Pending => false,
            State::Unreadable => true,
            State::Expired | State::Missed => requester == Requester::Daemon,
            State::Delivered | State::Skipped | State::Unknown | State::TooManyAttempts => {
                requester != Requester::Admin { force: true }
            }
            State::Refused => {
                requester == Requester::Daemon && self.refused_url.as_deref() == Some(url)
            }
        }
    }

    /// A digest nothing has happened to yet.
    /// Pending because its data looked incomplete: read again at `next_attempt`, not failed.
    pub fn is_waiting(&self) -> bool {
        self.state == State::Pending && self.last_error.as_deref() == Some(WAITING_FOR_DATA)
    }

    pub fn pending() -> Entry {
        Entry {
            state: State::Pending,
            attempts: 0,
            unanswered: 0,
            posts: 0,
            next_attempt: None,
            last_error: None,
            refused_url: None,
            delivered_at: None,
            leased_until: None,
            reads: 0,
            last_read: None,
        }
    }
}

/// Who asks for a lease: the daemon leaves a refusal alone while the URL is the same; an
/// admin's `once` is an explicit request and tries a refused webhook again (and, forced, a
/// delivered or unknown one). When a retry is due is the reconciler's decision, not the lease's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    Daemon,
    Admin { force: bool },
}

/// What [`Ledger::lease`] found.
pub enum Claim {
    Leased(Lease),
    /// Nothing to do for this requester: delivered, skipped, refused, unknown or expired.
    Settled(Entry),
    /// Another process holds it until then.
    Busy(DateTime<Utc>),
}

/// Whether a POST may go out now.
#[derive(Debug, PartialEq, Eq)]
pub enum Permit {
    Go,
    /// [`MAX_UNANSWERED`] POSTs already went unanswered, or [`MAX_POSTS`] reached the receiver.
    Exhausted,
    /// The lease expired and someone else holds the digest now, or it was given up.
    Lost,
}

/// How a lease ends when its holder is done.
pub enum Finish {
    /// The round's last POST came to this; a digest it didn't settle is tried again then.
    Posted(Posted, DateTime<Utc>),
    /// Failed before anything was posted (the API, a template): an attempt, with its error.
    FailedBefore {
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// The ledger permitted no POST: [`MAX_UNANSWERED`] already went unanswered, or
    /// [`MAX_POSTS`] reached the receiver.
    Exhausted,
    /// Nothing to post (an empty day under `skip_empty`): settled without a POST.
    Skipped,
    /// Its data looked incomplete: nothing was posted, and it reads again at `retry_at`
    /// without counting a failed attempt. `read` is what this read saw.
    Waiting {
        read: String,
        retry_at: DateTime<Utc>,
    },
}

/// What a digest's row says of the reads of its data that looked incomplete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// How many: each was followed by a wait for more.
    pub count: u32,
    /// What the last one read.
    pub last: Option<String>,
}

/// A pending digest's `last_error` while it waits for its data: not a failure.
pub const WAITING_FOR_DATA: &str = "waiting for data: the span looked incomplete";

/// A digest's row whole, as read and written back. The owner stays after the
/// lease expires, so a stalled holder's late answer is still recorded unless another process
/// has taken the lease since.
#[derive(Debug, Clone)]
struct Record {
    entry: Entry,
    owner: Option<String>,
}

/// How far a change reaches. Only a lease creates a row; a lease and a POST first check (on
/// SQLite) that the file is still the one opened, so nothing new goes out while the record of
/// what went out is missing, while an answer or a release is recorded wherever the file went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Lease(Insert),
    Post,
    Record,
}

/// Which new rows a lease may make: any, or (an admin's unforced `once`) only one of a day
/// the ledger still remembers. The insert itself asks, so a day the daemon forgets while
/// `once` runs, after `once` looked, is refused rather than sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Insert {
    Any,
    Remembered,
}

/// Taking the lease: whether `requester` may send the digest (and how it starts over), or
/// what keeps it from doing so. This and the rules below run on a row as read, with `now` on
/// the clock leases are judged by; what they return is written only if the row is unchanged.
fn take(
    record: Option<Record>,
    requester: Requester,
    url: &str,
    token: String,
    until: DateTime<Utc>,
) -> (Option<Record>, Result<(u32, Reads), Claim>) {
    let mut entry = record.map_or_else(Entry::pending, |record| record.entry);
    if let Some(until) = entry.leased_until {
        return (None, Err(Claim::Busy(until)));
    }
    if entry.settled_for(requester, url) {
        return (None, Err(Claim::Settled(entry)));
    }
    if matches!(
        entry.state,
        State::Refused | State::Unknown | State::TooManyAttempts | State::Expired | State::Missed
    ) {
        entry.state = State::Pending;
    }
    // An admin's `--force` also forgets the POSTs that went unanswered, and may send one
    // more than the bound.
    let mut post_limit = MAX_POSTS;
    if requester == (Requester::Admin { force: true }) {
        entry.unanswered = 0;
        post_limit = post_limit.max(entry.posts + 1);
    }
    entry.leased_until = Some(until);
    let reads = Reads {
        count: entry.reads,
        last: entry.last_read.clone(),
    };
    let owner = Some(token);
    (Some(Record { entry, owner }), Ok((post_limit, reads)))
}

/// A pending digest nobody holds, whose catch-up window closed, is given up.
fn expire(record: Option<Record>) -> (Option<Record>, bool) {
    match record {
        Some(mut record)
            if record.entry.state == State::Pending && record.entry.leased_until.is_none() =>
        {
            record.entry.state = State::Expired;
            (Some(record), true)
        }
        _ => (None, false),
    }
}

/// A write by a lease holder.
enum Fenced<'a> {
    Renew,
    /// Counts a POST as unanswered and as posted, unless [`MAX_UNANSWERED`] already are
    /// unanswered or the holder's limit of posts is reached.
    BeforePost(u32),
    /// An answer before the round's last; one that never came leaves the POST counted.
    Answered(&'a Posted),
    Finish(Finish),
}

/// A write by a lease holder, applied only while its token holds the lease; the answer is the
/// entry as written (None: the lease is not ours, or the write was refused). `url` is the
/// fingerprint of the webhook's URL, recorded with a refusal.
fn fenced(
    record: Option<Record>,
    token: &str,
    url: &str,
    op: &Fenced,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> (Option<Record>, Option<Entry>) {
    let Some(mut record) = record.filter(|r| r.owner.as_deref() == Some(token)) else {
        return (None, None);
    };
    let entry = &mut record.entry;
    match op {
        // Nothing goes out once the digest is given up, whoever still holds a lease.
        Fenced::Renew | Fenced::BeforePost(_) if entry.state == State::Expired => {
            return (None, None);
        }
        Fenced::BeforePost(limit)
            if entry.unanswered >= MAX_UNANSWERED || entry.posts >= *limit =>
        {
            return (None, None);
        }
        Fenced::Renew => entry.leased_until = Some(until),
        Fenced::BeforePost(_) => {
            entry.unanswered += 1;
            entry.posts += 1;
            entry.leased_until = Some(until);
        }
        Fenced::Answered(posted) => answered(entry, posted, url, now),
        Fenced::Finish(finish) => {
            entry.next_attempt = match finish {
                Finish::Posted(posted, retry_at) => {
                    answered(entry, posted, url, now);
                    Some(*retry_at)
                }
                Finish::FailedBefore { error, retry_at } => {
                    entry.attempts = entry.attempts.saturating_add(1);
                    entry.last_error = Some(error.clone());
                    Some(*retry_at)
                }
                Finish::Exhausted => None,
                Finish::Skipped => {
                    entry.state = State::Skipped;
                    None
                }
                Finish::Waiting { read, retry_at } => {
                    entry.reads = entry.reads.saturating_add(1);
                    entry.last_read = Some(read.clone());
                    entry.last_error = Some(WAITING_FOR_DATA.to_owned());
                    Some(*retry_at)
                }
            };
            // Two POSTs unanswered: it may have arrived, so nothing resends it on its own; nor
            // once the bound on posts that reached the receiver is spent.
            if entry.state == State::Pending && entry.unanswered >= MAX_UNANSWERED {
                entry.state = State::Unknown;
            } else if entry.state == State::Pending && entry.posts >= MAX_POSTS {
                entry.state = State::TooManyAttempts;
            }
            if entry.state != State::Pending {
                entry.next_attempt = None;
            }
            entry.leased_until = None;
            record.owner = None;
        }
    }
    let written = record.entry.clone();
    (Some(record), Some(written))
}

/// Records one POST's answer.
fn answered(entry: &mut Entry, posted: &Posted, url: &str, now: DateTime<Utc>) {
    entry.attempts = entry.attempts.saturating_add(1);
    if !matches!(posted, Posted::Unknown(_)) {
        entry.unanswered = entry.unanswered.saturating_sub(1);
    }
    // Nothing reached the receiver, or it asked for another try before reading (429).
    if matches!(posted, Posted::NotDelivered { .. }) {
        entry.posts = entry.posts.saturating_sub(1);
    }
    entry.last_error = match posted {
        Posted::Delivered => {
            entry.state = State::Delivered;
            entry.delivered_at.get_or_insert(now);
            None
        }
        Posted::Refused { .. } => {
            entry.state = State::Refused;
            entry.refused_url = Some(url.to_owned());
            Some(posted.to_string())
        }
        Posted::NotDelivered { .. } | Posted::ServerError { .. } | Posted::Unknown(_) => {
            Some(posted.to_string())
        }
    };
}

/// The columns of a row, in the order they are read and written.
const COLUMNS: &str = "team, first_day, last_day, webhook, state, attempts, unanswered, \
    next_attempt, last_error, refused_url, delivered_at, lease_owner, lease_until, posts, reads, \
    last_read";
/// One (team, span, webhook): parameters $1 to $4.
const KEY: &str = "team = $1 AND first_day = $2 AND last_day = $3 AND webhook = $4";

/// [`COLUMNS`] as read: a lease shows only while it runs (now is parameter `$n` on SQLite).
fn read_columns(dialect: Dialect, n: usize) -> String {
    let live = format!(
        "CASE WHEN lease_until > {} THEN lease_until END",
        dialect.now_ms(n)
    );
    COLUMNS.replace("lease_until", &live)
}

/// A row of [`read_columns`], or of a change's read, whose lease the caller judges. A row
/// someone edited by hand or a later version wrote is an
/// error, never a guess: read as pending, a digest someone marked otherwise would be sent
/// again.
fn parse(row: &sqlx::any::AnyRow) -> Result<(Key, Record), String> {
    let text = |column| {
        row.try_get::<Option<String>, _>(column)
            .map_err(|e| causes(&e))
    };
    let number = |column| {
        row.try_get::<Option<i64>, _>(column)
            .map_err(|e| causes(&e))
    };
    let key = key_of(row)?;
    let state = text(4)?.unwrap_or_default();
    let state = (State::ALL.into_iter().find(|known| known.as_str() == state))
        .ok_or_else(|| format!("{key}: state {state:?} is not one this version knows"))?;
    let count =
        |column| Ok::<_, String>(number(column)?.map_or(0, |n| n.clamp(0, u32::MAX.into()) as u32));
    let seconds =
        |column| Ok::<_, String>(number(column)?.and_then(|s| DateTime::from_timestamp(s, 0)));
    let entry = Entry {
        state,
        attempts: count(5)?,
        unanswered: count(6)?,
        next_attempt: seconds(7)?,
        last_error: text(8)?,
        refused_url: text(9)?,
        delivered_at: seconds(10)?,
        leased_until: number(12)?.and_then(DateTime::from_timestamp_millis),
        posts: count(13)?,
        reads: count(14)?,
        last_read: text(15)?,
    };
    Ok((
        key,
        Record {
            entry,
            owner: text(11)?,
        },
    ))
}

/// What a row is about: its first four columns.
fn key_of(row: &sqlx::any::AnyRow) -> Result<Key, String> {
    let text = |column| {
        row.try_get::<Option<String>, _>(column)
            .map_err(|e| causes(&e))
    };
    let team = text(0)?.unwrap_or_default();
    let date = |column| -> Result<NaiveDate, String> {
        let day = text(column)?.unwrap_or_default();
        (day.parse()).map_err(|e| format!("a row for team {team:?} has a bad date {day:?} ({e})"))
    };
    let span = Span {
        first: date(1)?,
        last: date(2)?,
    };
    let webhook = text(3)?.unwrap_or_default();
    Ok(Key {
        team,
        span,
        webhook,
    })
}

fn day(date: NaiveDate) -> String {
    date.to_string()
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// A statement about one digest: its key as parameters $1 to $4.
fn bind_key<'q>(query: Query<'q>, key: &Key) -> Query<'q> {
    query
        .bind(key.team.clone())
        .bind(day(key.span.first))
        .bind(day(key.span.last))
        .bind(key.webhook.clone())
}

/// A handle to the ledger; clones share one pool.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    location: StateStore,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    /// Rows this version can't read, each said once.
    unreadable: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Digests [`Ledger::read_ahead`] found held or settled, and when it read them.
    ahead: std::sync::Mutex<HashMap<Key, (Entry, DateTime<Utc>)>>,
    /// Whether anything failed since a write last applied: then a lease asks the database,
    /// whose answer is what tells the daemon that writes fail (and, later, that they work
    /// again), never a read from before.
    failed_since_a_write: std::sync::atomic::AtomicBool,
}

impl Ledger {
    /// Opens the ledger, creating it (a SQLite file and its folder, or the schema in a
    /// PostgreSQL database) on first use. A SQLite file may be refused: see [`crate::db`].
    pub async fn open(location: &StateStore, clock: Arc<dyn Clock>) -> Result<Ledger, LedgerError> {
        Ledger::open_with(location, clock, lease_ttl(), Access::Write).await
    }

    /// Opens the ledger to read it (`status`, a dry run): nothing is created or migrated, so a
    /// read-only role will do.
    pub async fn open_to_read(
        location: &StateStore,
        clock: Arc<dyn Clock>,
    ) -> Result<Ledger, LedgerError> {
        Ledger::open_with(location, clock, lease_ttl(), Access::Read).await
    }

    async fn open_with(
        location: &StateStore,
        clock: Arc<dyn Clock>,
        ttl: Duration,
        access: Access,
    ) -> Result<Ledger, LedgerError> {
        let db = Db::open(location, access)
            .await
            .map_err(|problem| LedgerError {
                place: location.to_string(),
                problem,
            })?;
        if db.created {
            tracing::warn!(
                "delivery ledger {location} is new: nothing is recorded as delivered yet, so digests due within each team's catch_up are sent now, even any a lost earlier ledger had delivered"
            );
        }
        Ok(Ledger {
            inner: Arc::new(Inner {
                db,
                location: location.clone(),
                clock,
                ttl,
                unreadable: Default::default(),
                ahead: Default::default(),
                failed_since_a_write: Default::default(),
            }),
        })
    }

    /// Once a SQLite ledger opened to write has had its every page checked: an error says it
    /// is damaged. Nothing is written to it before this is Ok, so no lease is taken and no
    /// digest sent; a caller that reads and then sends (the daemon's unsent alerts) waits
    /// for it first.
    pub async fn checked(&self) -> Result<(), LedgerError> {
        self.inner
            .db
            .checked()
            .await
            .map_err(|problem| LedgerError {
                place: self.inner.location.to_string(),
                problem,
            })
    }

    /// [`Ledger::checked`] without waiting: None while the check runs, else whether it passed.
    pub fn check_passed(&self) -> Option<bool> {
        self.inner.db.check_passed()
    }

    /// Where it lives, as the config says.
    pub fn location(&self) -> &StateStore {
        &self.inner.location
    }

    /// Whether other processes may lease the same digests: replicas share PostgreSQL, and a
    /// SQLite file is one daemon's.
    pub fn shared(&self) -> bool {
        self.inner.db.dialect == Dialect::Postgres
    }

    /// The time by the clock the ledger was opened with: the daemon's, which tests jump.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// The reports kept beside it, in the same database.
    pub fn history(&self) -> History {
        History::new(self.inner.db.clone(), self.inner.clock.clone())
    }

    /// An error of an operation (`read`, `lease` or `record`), counted for the operator.
    fn fail(&self, op: &'static str, problem: String) -> LedgerError {
        crate::telemetry::ledger_error(op);
        (self.inner.failed_since_a_write).store(true, std::sync::atomic::Ordering::Relaxed);
        LedgerError {
            place: self.inner.location.to_string(),
            problem,
        }
    }

    /// Every entry whose span ends on `since` or later, in one query.
    pub async fn recent(&self, since: NaiveDate) -> Result<Entries, LedgerError> {
        let mut entries = Entries::new();
        self.read_recent(since, since, None, &mut entries).await?;
        Ok(entries)
    }

    /// What a reconciler pass reads of these teams (every team's, if None): each entry whose
    /// span ends on `since` or later, and the pending ones back to `pending_since`. So a pass
    /// that looks at a few teams reads a few rows each, whatever the ledger holds; a few
    /// hundred teams a statement.
    pub async fn owed_of(
        &self,
        since: NaiveDate,
        pending_since: NaiveDate,
        teams: Option<&[&str]>,
    ) -> Result<Entries, LedgerError> {
        const TEAMS: usize = 400;
        let mut entries = Entries::new();
        match teams {
            None => (self.read_recent(since, pending_since, None, &mut entries)).await?,
            Some(teams) => {
                for chunk in teams.chunks(TEAMS) {
                    (self.read_recent(since, pending_since, Some(chunk), &mut entries)).await?;
                }
            }
        }
        Ok(entries)
    }

    /// The teams with a digest pending whose span ends on `since` or later.
    pub async fn pending_teams(&self, since: NaiveDate) -> Result<HashSet<String>, LedgerError> {
        let query = sqlx::query(
            "SELECT DISTINCT team FROM digests WHERE last_day >= $1 AND state = 'pending'",
        )
        .bind(day(since));
        let db = &self.inner.db;
        db.guard().map_err(|e| self.fail("read", e))?;
        let rows = db.fetch_all(query).await.map_err(|e| self.read_failed(e))?;
        (rows.iter())
            .map(|row| row.try_get(0).map_err(|e| self.fail("read", causes(&e))))
            .collect()
    }

    /// A read that failed; a ledger nothing has written to yet says so.
    fn read_failed(&self, e: String) -> LedgerError {
        if e.contains("digests") && e.contains("exist") {
            self.fail("read", "has no acquire-digest tables yet: nothing was delivered from it (`run` and `once` create them)".into())
        } else {
            self.fail("read", e)
        }
    }

    async fn read_recent(
        &self,
        since: NaiveDate,
        pending_since: NaiveDate,
        teams: Option<&[&str]>,
        entries: &mut Entries,
    ) -> Result<(), LedgerError> {
        let db = &self.inner.db;
        db.guard().map_err(|e| self.fail("read", e))?;
        // Of a few teams, SQLite's planner would rather walk the last_day index over every
        // team's recent rows than the key's team prefix: the unary + takes the index away.
        let last_day = match (teams, db.dialect) {
            (Some(_), crate::db::Dialect::Sqlite) => "+last_day",
            _ => "last_day",
        };
        let mut sql = format!(
            "SELECT {} FROM digests WHERE {last_day} >= $1 AND ({last_day} >= $2 OR state = 'pending')",
            read_columns(db.dialect, 3)
        );
        if let Some(teams) = teams {
            let first = 3 + usize::from(db.dialect.binds_now());
            let places: Vec<String> = (first..first + teams.len())
                .map(|i| format!("${i}"))
                .collect();
            sql.push_str(&format!(" AND team IN ({})", places.join(", ")));
        }
        let mut query = sqlx::query(&sql)
            .bind(day(pending_since.min(since)))
            .bind(day(since));
        if db.dialect.binds_now() {
            query = query.bind(self.inner.clock.now().timestamp_millis());
        }
        for team in teams.unwrap_or_default() {
            query = query.bind((*team).to_owned());
        }
        let rows = db.fetch_all(query).await.map_err(|e| self.read_failed(e))?;
        for row in rows {
            // A row this version can't read stops nothing but itself.
            let (key, entry) = match parse(&row) {
                Ok((key, record)) => (key, record.entry),
                Err(problem) => {
                    let mut said = self.inner.unreadable.lock().expect("unreadable rows");
                    if said.insert(problem.clone()) {
                        tracing::warn!(
                            "delivery ledger {}: {problem}; that row is left alone (a newer acquire-digest wrote it, or someone edited it)",
                            self.inner.location
                        );
                    }
                    let Ok(key) = key_of(&row) else { continue };
                    let last_error = Some(problem);
                    let state = State::Unreadable;
                    (
                        key,
                        Entry {
                            state,
                            last_error,
                            ..Entry::pending()
                        },
                    )
                }
            };
            entries
                .entry((key.team, key.span))
                .or_default()
                .insert(key.webhook, entry);
        }
        Ok(())
    }

    /// Takes the lease on a digest for a webhook, unless the requester has nothing to do for
    /// it or another process holds it. `url` is the fingerprint of the webhook's URL now: a
    /// refusal holds only while the URL is the one that refused.
    pub async fn lease(
        &self,
        key: &Key,
        requester: Requester,
        url: &str,
    ) -> Result<Claim, LedgerError> {
        if let Some(claim) = self.known_taken(key, requester, url) {
            return Ok(claim);
        }
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let ttl = self.inner.ttl;
        let last_write = Arc::<LastWrite>::default();
        let insert = if requester == (Requester::Admin { force: false }) {
            Insert::Remembered
        } else {
            Insert::Any
        };
        let taken = self
            .update(
                key,
                Reach::Lease(insert),
                Some(&last_write),
                |record, now| take(record, requester, url, token.clone(), now + ttl),
            )
            .await?;
        Ok(match taken {
            Err(claim) => claim,
            Ok((post_limit, reads)) => {
                let url = url.to_owned();
                let holder = Holder {
                    key: key.clone(),
                    token,
                    post_limit,
                    url,
                    last_write,
                };
                Claim::Leased(Lease::new(self.clone(), holder, reads))
            }
        })
    }

    /// Reads, in one statement, the rows of digests this process is about to lease, so that
    /// leasing one another process holds or has settled costs no statement: replicas that
    /// share a database each try every digest due, and without this each digest cost every
    /// replica but its holder a losing attempt. What was read stands in for a lease only to
    /// say no, only for an eighth of the lease's ttl, and not after a failure until a write
    /// applies; a digest read as free is leased as always, so a read that is out of date
    /// never sends anything twice.
    pub async fn read_ahead(&self, keys: &[Key]) -> Result<(), LedgerError> {
        let Some(since) = keys.iter().map(|key| key.span.last).min() else {
            return Ok(());
        };
        let mut teams: Vec<&str> = keys.iter().map(|key| key.team.as_str()).collect();
        teams.sort_unstable();
        teams.dedup();
        // Timed from before the statement: the rows may be as old as that.
        let read = self.inner.clock.now();
        let mut entries = self.owed_of(since, since, Some(&teams)).await?;
        let mut ahead = self.inner.ahead.lock().expect("rows read ahead");
        let now = self.inner.clock.now();
        ahead.retain(|_, (_, at)| self.fresh(*at, now));
        for key in keys {
            let found = (entries.get_mut(&(key.team.clone(), key.span)))
                .and_then(|hooks| hooks.remove(&key.webhook));
            // A row this version can't read is left to the lease, which says so.
            let taken = found.filter(|entry| {
                entry.state != State::Unreadable
                    && (entry.leased_until.is_some() || entry.state != State::Pending)
            });
            if let Some(entry) = taken {
                ahead.insert(key.clone(), (entry, read));
            }
        }
        Ok(())
    }

    /// What a recent [`Ledger::read_ahead`] says of `key`, if it says the lease would be
    /// refused; it is used once.
    fn known_taken(&self, key: &Key, requester: Requester, url: &str) -> Option<Claim> {
        let mut ahead = self.inner.ahead.lock().expect("rows read ahead");
        let (entry, read) = ahead.remove(key)?;
        let now = self.inner.clock.now();
        let failing = self
            .inner
            .failed_since_a_write
            .load(std::sync::atomic::Ordering::Relaxed);
        if failing || !self.fresh(read, now) {
            return None;
        }
        // A lease run out by this process's clock goes to the database, whose clock judges.
        if entry.leased_until.is_some_and(|until| until <= now) {
            return None;
        }
        // The same rule as the lease's; only its refusal is used, so no token or lease end.
        let record = Record { entry, owner: None };
        take(Some(record), requester, url, String::new(), now)
            .1
            .err()
    }

    /// Whether a row read ahead at `read` may still answer for its lease at `now`: for an
    /// eighth of the ttl, and not once the clock went back.
    fn fresh(&self, read: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let ttl = chrono::Duration::from_std(self.inner.ttl / 8).unwrap_or_default();
        read <= now && now - read < ttl
    }

    /// Marks a pending digest whose catch-up window closed, unless someone holds it.
    pub async fn expire(&self, key: &Key) -> Result<bool, LedgerError> {
        self.update(key, Reach::Record, None, |record, _| expire(record))
            .await
    }

    /// Records a digest nothing was recorded of as missed: true the first time, from any
    /// process, so it is reported once.
    pub async fn miss(&self, key: &Key) -> Result<bool, LedgerError> {
        let query = sqlx::query(
            "INSERT INTO digests (team, first_day, last_day, webhook, state)
             VALUES ($1, $2, $3, $4, 'missed') ON CONFLICT DO NOTHING",
        );
        let inserted = self.inner.db.execute(bind_key(query, key)).await;
        inserted
            .map(|done| done.rows_affected() == 1)
            .map_err(|e| self.fail("record", e))
    }

    /// When each (team, webhook) last had a digest delivered: a row each, which the write
    /// that records a delivery keeps (a trigger, migrations 8 and 9), not a walk of every digest.
    pub async fn last_deliveries(
        &self,
    ) -> Result<Vec<(String, String, DateTime<Utc>)>, LedgerError> {
        let query = sqlx::query("SELECT team, webhook, delivered_at FROM last_deliveries");
        let rows = (self.inner.db.fetch_all(query).await).map_err(|e| self.fail("read", e))?;
        let mut last = Vec::with_capacity(rows.len());
        for row in rows {
            let read = |e| self.fail("read", causes(&e));
            let team: String = row.try_get(0).map_err(read)?;
            let webhook: String = row.try_get(1).map_err(read)?;
            let at: i64 = row.try_get(2).map_err(read)?;
            last.extend(DateTime::from_timestamp(at, 0).map(|at| (team, webhook, at)));
        }
        Ok(last)
    }

    /// Each team's watermark: the instant up to which its firings are accounted for.
    pub async fn watermarks(&self) -> Result<HashMap<String, DateTime<Utc>>, LedgerError> {
        let query = sqlx::query("SELECT team, planned_until FROM watermarks");
        let rows = self
            .inner
            .db
            .fetch_all(query)
            .await
            .map_err(|e| self.fail("read", e))?;
        let mut marks = HashMap::new();
        for row in rows {
            let team: String = row.try_get(0).map_err(|e| self.fail("read", causes(&e)))?;
            let until: i64 = row.try_get(1).map_err(|e| self.fail("read", causes(&e)))?;
            marks.extend(DateTime::from_timestamp_millis(until).map(|until| (team, until)));
        }
        Ok(marks)
    }

    /// Moves each team's watermark to its `until`, never back: another process may be further
    /// on.
    /// Many teams' at once, a few hundred rows a statement: the first pass over 100,000 teams
    /// is then hundreds of round trips to the database, not 100,000.
    pub async fn advance(&self, marks: &[(String, DateTime<Utc>)]) -> Result<(), LedgerError> {
        // Two parameters a row, well inside every SQLite's and PostgreSQL's limit.
        const ROWS: usize = 400;
        for chunk in marks.chunks(ROWS) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "INSERT INTO watermarks (team, planned_until) VALUES {}
                 ON CONFLICT (team) DO UPDATE SET planned_until = CASE
                     WHEN excluded.planned_until > watermarks.planned_until
                     THEN excluded.planned_until ELSE watermarks.planned_until END",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (team, until) in chunk {
                query = query.bind(team.clone()).bind(until.timestamp_millis());
            }
            (self.inner.db.execute(query).await).map_err(|e| self.fail("record", e))?;
        }
        Ok(())
    }

    /// Forgets a team's watermark: the team is no longer configured.
    pub async fn forget_watermark(&self, team: &str) -> Result<(), LedgerError> {
        let query = sqlx::query("DELETE FROM watermarks WHERE team = $1").bind(team.to_owned());
        let deleted = self.inner.db.execute(query).await;
        deleted.map(drop).map_err(|e| self.fail("record", e))
    }

    /// Forgets all but the last `keep_days` days' digests, and their alerts: those that ended
    /// before `keep_days` days ago by the clock, and before the `keep_days`-th newest day the
    /// ledger holds a digest of that some process tried, less the days a clock that ran ahead
    /// may have delivered digests of within `catch_up` (the longest of the teams'). So a young
    /// ledger forgets nothing, and neither does a clock that jumps years ahead: that would
    /// otherwise take the digests within `catch_up` too, which would be sent again once the
    /// clock is back. Missed firings don't count as days held: a clock that jumps ahead
    /// records one for every firing it skipped. A batch at a time, so a lease or a record
    /// waits for one batch at most, and each stays within the call limit. A live lease (an
    /// admin's `once --force --date` of an old day) is left to its holder. The day is recorded
    /// first (see [`Ledger::forgotten_before`]), and only when there is something to forget.
    /// How many rows it forgot, and the first day it remembers.
    pub async fn forget_all_but(
        &self,
        keep_days: u32,
        catch_up: std::time::Duration,
    ) -> Result<(u64, NaiveDate), LedgerError> {
        const BATCH: u64 = 2000;
        let db = &self.inner.db;
        let mut cutoff = forgotten_before(self.inner.clock.now(), keep_days);
        // The keep_days-th newest day held, each a look into the index by day, newest first,
        // in one statement: a round trip each was seconds an hour at 3650 days.
        let held = sqlx::query(
            "WITH RECURSIVE held (day, n) AS (
                SELECT max(last_day), 1 FROM digests WHERE state <> 'missed'
                UNION ALL
                SELECT (SELECT max(last_day) FROM digests
                        WHERE last_day < held.day AND state <> 'missed'), n + 1
                FROM held WHERE n < $1 AND held.day IS NOT NULL)
             SELECT day FROM held WHERE n = $1",
        )
        .bind(i64::from(keep_days));
        let rows = db.fetch_all(held).await.map_err(|e| self.read_failed(e))?;
        let held = (rows.first())
            .and_then(|row| row.try_get::<Option<String>, _>(0).ok().flatten())
            .and_then(|day| day.parse::<NaiveDate>().ok());
        // Fewer days than that: a young ledger forgets nothing.
        let Some(held) = held else {
            return Ok((0, cutoff));
        };
        // Each firing within catch_up covers a day of its own, and the due one's too.
        let ahead = catch_up.as_secs().div_ceil(24 * 3600) + 1;
        cutoff = cutoff.min(held - chrono::Days::new(ahead));
        let free = format!(
            "(lease_until IS NULL OR lease_until <= {})",
            db.dialect.now_ms(2)
        );
        let now = (db.dialect.binds_now()).then(|| self.inner.clock.now().timestamp_millis());
        fn bound(
            sql: &str,
            cutoff: NaiveDate,
            now: Option<i64>,
        ) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
            let query = sqlx::query(sql).bind(day(cutoff));
            match now {
                Some(now) => query.bind(now),
                None => query,
            }
        }
        let older = format!("SELECT 1 FROM digests WHERE last_day < $1 AND {free} LIMIT 1");
        let older = db.fetch_all(bound(&older, cutoff, now)).await;
        // Nothing free to forget is nothing recorded, and so nothing deleted: a lease that
        // ends meanwhile leaves its row to the next pass, which records its day first.
        let mut forgotten = 0;
        if !older.map_err(|e| self.read_failed(e))?.is_empty() {
            let record = sqlx::query(
                "INSERT INTO forgotten (id, before_day) VALUES (1, $1) ON CONFLICT (id)
                 DO UPDATE SET before_day = excluded.before_day
                 WHERE excluded.before_day > forgotten.before_day",
            );
            let recorded = db.execute(record.bind(day(cutoff))).await;
            recorded.map_err(|e| self.fail("record", e))?;
            // The lease is asked again outside the subquery: PostgreSQL checks only the outer
            // condition again on a row another transaction changed meanwhile.
            let sql = format!(
                "DELETE FROM digests WHERE (team, first_day, last_day, webhook) IN (
                    SELECT team, first_day, last_day, webhook FROM digests
                    WHERE last_day < $1 AND {free} LIMIT {BATCH}) AND {free}"
            );
            loop {
                let done = db.execute(bound(&sql, cutoff, now)).await;
                let done = done.map_err(|e| self.fail("record", e))?;
                forgotten += done.rows_affected();
                if done.rows_affected() < BATCH {
                    break;
                }
            }
        }
        let alerts = sqlx::query("DELETE FROM alerts WHERE last_day < $1").bind(day(cutoff));
        let done = db
            .execute(alerts)
            .await
            .map_err(|e| self.fail("record", e))?;
        Ok((forgotten + done.rows_affected(), cutoff))
    }

    /// The first day whose digests the ledger still remembers, if it has forgotten any: one
    /// that ended before may have been sent without a row saying so.
    pub async fn forgotten_before(&self) -> Result<Option<NaiveDate>, LedgerError> {
        let query = sqlx::query("SELECT before_day FROM forgotten");
        let rows = self.inner.db.fetch_all(query).await;
        let rows = rows.map_err(|e| self.read_failed(e))?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let text: String = row.try_get(0).map_err(|e| self.read_failed(causes(&e)))?;
        let day = text
            .parse()
            .map_err(|e| self.read_failed(format!("forgotten.before_day {text:?}: {e}")))?;
        Ok(Some(day))
    }

    /// Records an alert about a digest given up for `reason`: true the first time, from any
    /// process, so each alert is sent once however often the give-up is seen.
    pub async fn first_alert(
        &self,
        key: &Key,
        reason: &str,
        detail: &str,
    ) -> Result<bool, LedgerError> {
        let query = sqlx::query(
            "INSERT INTO alerts (team, first_day, last_day, webhook, reason, raised_at, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        );
        let query = bind_key(query, key)
            .bind(reason.to_owned())
            .bind(self.inner.clock.now().timestamp())
            .bind(detail.to_owned());
        let inserted = self.inner.db.execute(query).await;
        inserted
            .map(|done| done.rows_affected() == 1)
            .map_err(|e| self.fail("record", e))
    }

    /// Records that an alert went out (or was tried: a failed one is not tried again).
    pub async fn alert_sent(&self, key: &Key, reason: &str) -> Result<(), LedgerError> {
        let query = sqlx::query(
            "UPDATE alerts SET sent_at = $6 WHERE team = $1 AND first_day = $2 AND last_day = $3
             AND webhook = $4 AND reason = $5",
        );
        let query = bind_key(query, key)
            .bind(reason.to_owned())
            .bind(self.inner.clock.now().timestamp());
        let updated = self.inner.db.execute(query).await;
        updated.map(drop).map_err(|e| self.fail("record", e))
    }

    /// Alerts recorded longer than `age` ago and never sent: their process stopped first.
    /// Each with its reason and detail.
    pub async fn unsent_alerts(
        &self,
        age: Duration,
    ) -> Result<Vec<(Key, String, String)>, LedgerError> {
        let age = chrono::Duration::from_std(age).unwrap_or_default();
        let raised_before = self.inner.clock.now() - age;
        let query = sqlx::query(
            "SELECT team, first_day, last_day, webhook, reason, detail FROM alerts
             WHERE sent_at IS NULL AND raised_at < $1",
        )
        .bind(raised_before.timestamp());
        let rows = self.inner.db.fetch_all(query).await;
        let rows = rows.map_err(|e| self.fail("read", e))?;
        let mut unsent = Vec::new();
        for row in rows {
            let key = key_of(&row).map_err(|e| self.fail("read", e))?;
            let text = |i| row.try_get::<Option<String>, _>(i).map_err(|e| causes(&e));
            let reason = text(4)
                .map_err(|e| self.fail("read", e))?
                .unwrap_or_default();
            let detail = text(5)
                .map_err(|e| self.fail("read", e))?
                .unwrap_or_default();
            unsent.push((key, reason, detail));
        }
        Ok(unsent)
    }

    /// Runs one of the rules on a row and writes back what it returns. A write that took so
    /// long that a lease it wrote may be running out already (a stalled database, a lock
    /// wait) is followed at once by a renewal from the time then, before anything is posted
    /// under it; the lease lost meanwhile is an error, and nothing goes out. `last_write` is a
    /// lease holder's copy of the row as it last wrote it (see [`Ledger::swap`]).
    async fn update<T: Send>(
        &self,
        key: &Key,
        reach: Reach,
        last_write: Option<&LastWrite>,
        mut change: impl FnMut(Option<Record>, DateTime<Utc>) -> (Option<Record>, T) + Send,
    ) -> Result<T, LedgerError> {
        let db = &self.inner.db;
        let (op, creates) = match reach {
            Reach::Lease(insert) => ("lease", Some(insert)),
            _ => ("record", None),
        };
        // Outside the call's limit and before the lease's clock starts: a year's ledger may
        // take longer than either to check. And before the file is guarded: it may be
        // replaced meanwhile.
        db.checked().await.map_err(|e| self.fail(op, e))?;
        if reach != Reach::Record {
            db.guard().map_err(|e| self.fail(op, e))?;
        }
        let ttl = self.inner.ttl;
        let work = async {
            let mut connection = db.writing().await.map_err(|e| causes(&e))?;
            let mut answer = None;
            let mut written = self
                .swap(
                    &mut connection,
                    key,
                    creates,
                    last_write,
                    &mut |record, now| {
                        let (write, said) = change(record, now);
                        answer = Some(said);
                        write
                    },
                )
                .await?;
            let wrote = written.is_some();
            while let Some((record, true)) = &written {
                let Some(token) = record
                    .owner
                    .clone()
                    .filter(|_| record.entry.leased_until.is_some())
                else {
                    break;
                };
                let renew =
                    &mut |record, now| fenced(record, &token, "", &Fenced::Renew, now, now + ttl).0;
                written = (self.swap(&mut connection, key, None, last_write, renew)).await?;
                if written.is_none() {
                    return Err("answered too slowly to keep the lease just written, which is no longer this process's (another took the digest over, or it was given up or finished); nothing is posted under it".to_owned());
                }
            }
            Ok((answer.expect("the rule ran"), wrote))
        };
        let (answer, wrote) =
            (crate::db::answered_in_time(work).await).map_err(|e| self.fail(op, e))?;
        if wrote {
            (self.inner.failed_since_a_write).store(false, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(answer)
    }

    /// Reads the row, runs `change` on it and writes what it returns, if the row is still as
    /// read; else reads it again and runs `change` on what the other writer left. What was
    /// written (None: nothing), and whether writing it took longer than an eighth of the
    /// lease's ttl from the read, whose time a lease written counts from on SQLite (on
    /// PostgreSQL it counts from the write, and a late write only renews once more).
    ///
    /// A lease holder's row as it last wrote it (`last_write`) is a guess that stands in for
    /// the first read, each read a round trip. The guess is safe because the write checks it:
    /// it applies only if every column is still exactly as guessed, so a row another process
    /// (or the holder's own heartbeat) changed meanwhile is read after all. Without a read,
    /// PostgreSQL's time is the server's as of the last write plus the time since: a guess
    /// the holder's rules judge only by owner, so it stamps `delivered_at` and nothing else;
    /// the lease itself is timed by the server as it writes.
    ///
    /// A lease (`creates`) guesses that there is no row yet, as there is none the first time
    /// a digest is due: it inserts one, which applies only if there is still none, and reads
    /// the row only when there is one (PostgreSQL returns it from the insert). A new digest's
    /// lease is one statement, and so is a replica's finding that another holds it.
    async fn swap(
        &self,
        connection: &mut sqlx::AnyConnection,
        key: &Key,
        creates: Option<Insert>,
        last_write: Option<&LastWrite>,
        change: &mut (dyn FnMut(Option<Record>, DateTime<Utc>) -> Option<Record> + Send),
    ) -> Result<Option<(Record, bool)>, String> {
        /// Each lost race means another process's write landed, and the next read sees it:
        /// a digest is contended by its replicas and its own holder's heartbeat, no more.
        const RACES: usize = 16;
        let db = &self.inner.db;
        let sql = |e: sqlx::Error| causes(&e);
        let keyed = |text: &'static str| bind_key(sqlx::query(text), key);
        let (read, unchanged): (&'static str, &'static str) = match db.dialect {
            Dialect::Sqlite => (&READ_SQLITE, &UNCHANGED_SQLITE),
            Dialect::Postgres => (&READ_POSTGRES, &UNCHANGED_POSTGRES),
        };
        let remember = |written: Written| {
            let Some(last_write) = last_write else {
                return;
            };
            let mut last = last_write.lock().unwrap_or_else(|e| e.into_inner());
            // On PostgreSQL a holder and its heartbeat write on connections of their own, and
            // the earlier write's answer may come in last: a stale guess would cost a read.
            let latest = last.as_ref().and_then(|last| last.server_time);
            let stale = match (written.server_time, latest) {
                (Some((then, _)), Some((latest, _))) => then < latest,
                _ => false,
            };
            if !stale {
                *last = Some(written);
            }
        };
        let guess = last_write.and_then(|w| w.lock().unwrap_or_else(|e| e.into_inner()).clone());
        if let Some(last) = guess {
            let started = std::time::Instant::now();
            let now = match last.server_time {
                Some((then, at)) => {
                    then + chrono::Duration::from_std(at.elapsed()).unwrap_or_default()
                }
                None => self.inner.clock.now(),
            };
            let mut record = last.record.clone();
            record.entry.leased_until = record.entry.leased_until.filter(|t| *t > now);
            if let Some(mut write) = change(Some(record), now) {
                let query = bind_record(bind_record(keyed(unchanged), &write), &last.record);
                if let Some(written) = self.apply(connection, query, &mut write).await? {
                    remember(written);
                    let late = started.elapsed() > self.inner.ttl / 8;
                    return Ok(Some((write, late)));
                }
            }
        }
        // The row as the last statement saw it, when that statement said (Some), so the next
        // round need not read it. A lease's row is usually new (nothing made it but a lease of
        // the same digest): it writes before it reads, and a row already there is read after.
        let mut seen: Option<Option<sqlx::any::AnyRow>> = creates.is_some().then_some(None);
        for _ in 0..RACES {
            let started = std::time::Instant::now();
            let process_now = self.inner.clock.now();
            // No row as guessed, not as read: only a lease's first round.
            let guessed = matches!(seen, Some(None));
            let found = match seen.take() {
                Some(found) => found,
                None => {
                    let mut query = keyed(read);
                    if db.dialect.binds_now() {
                        query = query.bind(process_now.timestamp_millis());
                    }
                    query.fetch_optional(&mut *connection).await.map_err(sql)?
                }
            };
            let (record, now) = match &found {
                Some(row) => {
                    let now = row.try_get::<i64, _>(COLUMN_COUNT).map_err(sql)?;
                    let now = DateTime::from_timestamp_millis(now).unwrap_or(process_now);
                    let mut record = parse(row)?.1;
                    // A lease shows only while it runs.
                    record.entry.leased_until = record.entry.leased_until.filter(|t| *t > now);
                    (Some(record), now)
                }
                None => (None, process_now),
            };
            let Some(mut write) = change(record, now) else {
                // A rule that leaves no row alone may change the row that is there.
                if guessed {
                    continue;
                }
                return Ok(None);
            };
            let outcome = match &found {
                None => {
                    let insert = creates.unwrap_or(Insert::Any);
                    let inserted = self.insert(connection, key, insert, &mut write).await?;
                    if insert == Insert::Remembered {
                        self.still_remembered(connection, key, &inserted, guessed, &write)
                            .await?;
                    }
                    inserted
                }
                Some(row) => {
                    let query = bind_as_read(bind_record(keyed(unchanged), &write), row)?;
                    (self.apply(connection, query, &mut write).await?).ok_or(None)
                }
            };
            match outcome {
                Ok(written) => {
                    remember(written);
                    let late = started.elapsed() > self.inner.ttl / 8;
                    return Ok(Some((write, late)));
                }
                Err(there) => seen = there.map(Some),
            }
        }
        Err(format!(
            "the row of {key} changed under each of {RACES} writes to it"
        ))
    }

    /// Runs a write of `record` (an [`insert`] or an [`unchanged`]): the row as written, or
    /// None when it did not apply. PostgreSQL times the lease it writes by its own clock and
    /// says when it wrote, and `record` takes that lease.
    async fn apply(
        &self,
        connection: &mut sqlx::AnyConnection,
        query: Query<'_>,
        record: &mut Record,
    ) -> Result<Option<Written>, String> {
        let sql = |e: sqlx::Error| causes(&e);
        if self.inner.db.dialect == Dialect::Sqlite {
            let done = query.execute(&mut *connection).await.map_err(sql)?;
            let written = Written {
                record: as_stored(record),
                server_time: None,
            };
            return Ok((done.rows_affected() == 1).then_some(written));
        }
        let query = query.bind(self.ttl_ms());
        let Some(row) = query.fetch_optional(&mut *connection).await.map_err(sql)? else {
            return Ok(None);
        };
        written_by_server(&row, (0, 1), record).map(Some)
    }

    /// Writes a new row of `record` (a lease's: only a lease makes a row), unless there is one
    /// by now. Else on PostgreSQL the row that is there, read in the same round trip, as a
    /// replica that finds the digest taken needs it; None when it must be read (on SQLite, and
    /// on PostgreSQL when the other writer committed after the statement began).
    async fn insert(
        &self,
        connection: &mut sqlx::AnyConnection,
        key: &Key,
        insert: Insert,
        record: &mut Record,
    ) -> Result<Result<Written, Option<sqlx::any::AnyRow>>, String> {
        let sql = |e: sqlx::Error| causes(&e);
        if self.inner.db.dialect == Dialect::Sqlite {
            let text: &str = match insert {
                Insert::Any => &INSERT_SQLITE,
                Insert::Remembered => &INSERT_REMEMBERED_SQLITE,
            };
            let query = bind_record(bind_key(sqlx::query(text), key), record);
            return Ok(self.apply(connection, query, record).await?.ok_or(None));
        }
        let text: &str = match insert {
            Insert::Any => &INSERT_OR_READ_POSTGRES,
            Insert::Remembered => &INSERT_REMEMBERED_OR_READ_POSTGRES,
        };
        let query = bind_record(bind_key(sqlx::query(text), key), record);
        let query = query.bind(self.ttl_ms());
        match query.fetch_optional(&mut *connection).await.map_err(sql)? {
            Some(row) if row.try_get::<bool, _>(COLUMN_COUNT + 1).map_err(sql)? => {
                written_by_server(&row, (lease_until_column(), COLUMN_COUNT), record).map(Ok)
            }
            there => Ok(Err(there)),
        }
    }

    /// After an [`Insert::Remembered`]: an error if the span's day is forgotten and the insert
    /// either was refused for it, or, on PostgreSQL, made the row anew. SQLite runs the insert
    /// alone, so its guard is exact. PostgreSQL's sees `forgotten` as it was when the insert
    /// began, and an insert that waited on the forget's delete of the row makes it after all:
    /// it is undone, since whether the digest went out is no longer known.
    async fn still_remembered(
        &self,
        connection: &mut sqlx::AnyConnection,
        key: &Key,
        inserted: &Result<Written, Option<sqlx::any::AnyRow>>,
        guessed: bool,
        write: &Record,
    ) -> Result<(), String> {
        let asks = match inserted {
            // Refused with no row there as read, not as guessed: by the guard, or by a row
            // another process made meanwhile.
            Err(None) => !guessed,
            Ok(_) => self.inner.db.dialect == Dialect::Postgres,
            Err(Some(_)) => false,
        };
        if !asks {
            return Ok(());
        }
        let sql = |e: sqlx::Error| causes(&e);
        let forgotten = sqlx::query("SELECT before_day FROM forgotten WHERE before_day > $1")
            .bind(day(key.span.last))
            .fetch_optional(&mut *connection)
            .await
            .map_err(sql)?;
        let Some(row) = forgotten else {
            return Ok(());
        };
        let before: String = row.try_get(0).map_err(sql)?;
        if inserted.is_ok() {
            let undo = format!("DELETE FROM digests WHERE {KEY} AND lease_owner = $5");
            let undo = bind_key(sqlx::query(&undo), key).bind(write.owner.clone());
            undo.execute(&mut *connection).await.map_err(sql)?;
        }
        Err(format!(
            "it forgot the digests that ended before {before} ([state] keep_days) while this ran, so whether this digest was sent is no longer known: add --force to send it anyway"
        ))
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.inner.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    async fn fenced(
        &self,
        holder: &Holder,
        op: Fenced<'_>,
        heartbeat: Option<&CancellationToken>,
    ) -> Result<Option<Entry>, LedgerError> {
        let ttl = self.inner.ttl;
        let reach = match op {
            Fenced::BeforePost(_) => Reach::Post,
            _ => Reach::Record,
        };
        let last_write = Some(&*holder.last_write);
        self.update(&holder.key, reach, last_write, |record, now| {
            // A heartbeat stopped while it worked writes nothing.
            if heartbeat.is_some_and(CancellationToken::is_cancelled) {
                return (None, None);
            }
            fenced(record, &holder.token, &holder.url, &op, now, now + ttl)
        })
        .await
    }
}

/// How many of [`COLUMNS`] there are: the time is read after them.
const COLUMN_COUNT: usize = {
    let (bytes, mut i, mut commas) = (COLUMNS.as_bytes(), 0, 0);
    while i < bytes.len() {
        commas += (bytes[i] == b',') as usize;
        i += 1;
    }
    commas + 1
};
/// The columns of [`COLUMNS`] after the key that hold text; the others hold integers.
const TEXT_COLUMNS: [&str; 5] = [
    "state",
    "last_error",
    "refused_url",
    "lease_owner",
    "last_read",
];

static READ_SQLITE: LazyLock<String> = LazyLock::new(|| read(Dialect::Sqlite));
static READ_POSTGRES: LazyLock<String> = LazyLock::new(|| read(Dialect::Postgres));
static UNCHANGED_SQLITE: LazyLock<String> = LazyLock::new(|| unchanged(Dialect::Sqlite));
static UNCHANGED_POSTGRES: LazyLock<String> = LazyLock::new(|| unchanged(Dialect::Postgres));
static INSERT_SQLITE: LazyLock<String> = LazyLock::new(|| insert(Dialect::Sqlite, Insert::Any));
static INSERT_REMEMBERED_SQLITE: LazyLock<String> =
    LazyLock::new(|| insert(Dialect::Sqlite, Insert::Remembered));
static INSERT_OR_READ_POSTGRES: LazyLock<String> = LazyLock::new(|| insert_or_read(Insert::Any));
static INSERT_REMEMBERED_OR_READ_POSTGRES: LazyLock<String> =
    LazyLock::new(|| insert_or_read(Insert::Remembered));

/// On PostgreSQL, whose clock judges leases, a write times the lease it writes by the server's
/// clock (a lease runs the ttl, the last parameter, from the write) and returns it with the
/// server's time. Any write by a holder that keeps its lease renews it, an answer's too.
fn timed_by_server(column: usize, ttl: usize) -> String {
    let now = Dialect::Postgres.now_ms(0);
    format!("CASE WHEN ${column}::bigint IS NULL THEN NULL ELSE {now} + ${ttl} END")
}

/// What a write on PostgreSQL returns: see [`timed_by_server`].
fn returning_lease_and_time() -> String {
    format!(" RETURNING lease_until, {}", Dialect::Postgres.now_ms(0))
}

/// The place of lease_until among [`COLUMNS`], from 0.
fn lease_until_column() -> usize {
    let until = COLUMNS.split(", ").position(|c| c == "lease_until");
    until.expect("a lease_until column")
}

/// A new row, unless one is there by now (or, [`Insert::Remembered`], its day is forgotten).
/// Only a lease makes a row.
fn insert(dialect: Dialect, insert: Insert) -> String {
    let mut values: Vec<String> = (1..=COLUMN_COUNT).map(|i| format!("${i}")).collect();
    if dialect == Dialect::Postgres {
        let until = lease_until_column();
        values[until] = timed_by_server(until + 1, COLUMN_COUNT + 1);
    }
    let values = values.join(", ");
    match insert {
        Insert::Any => {
            format!("INSERT INTO digests ({COLUMNS}) VALUES ({values}) ON CONFLICT DO NOTHING")
        }
        // $3 is the span's last day; days compare as text, as the forget deletes by them.
        Insert::Remembered => format!(
            "INSERT INTO digests ({COLUMNS}) SELECT {values} \
             WHERE NOT EXISTS (SELECT 1 FROM forgotten WHERE before_day > $3) \
             ON CONFLICT DO NOTHING"
        ),
    }
}

/// On PostgreSQL, an [`insert`] that, when the row is there, returns it instead: its columns
/// and the time as [`read`] gives them, then whether it was written. Rows a statement
/// inserts are not among those it reads, so it returns one row, or none when another
/// writer's row was committed after it began.
fn insert_or_read(insert_kind: Insert) -> String {
    let now = Dialect::Postgres.now_ms(0);
    format!(
        "WITH inserted AS ({} RETURNING {COLUMNS}) \
         SELECT {COLUMNS}, {now}, true FROM inserted \
         UNION ALL SELECT {COLUMNS}, {now}, false FROM digests WHERE {KEY}",
        insert(Dialect::Postgres, insert_kind)
    )
}

/// A row PostgreSQL wrote, from its answer's lease and time at `(until, now)`: `record`
/// takes the lease the server timed.
fn written_by_server(
    row: &sqlx::any::AnyRow,
    (until, now): (usize, usize),
    record: &mut Record,
) -> Result<Written, String> {
    let answered = std::time::Instant::now();
    let sql = |e: sqlx::Error| causes(&e);
    let until = row.try_get::<Option<i64>, _>(until).map_err(sql)?;
    record.entry.leased_until = until.and_then(DateTime::from_timestamp_millis);
    let then = row.try_get::<i64, _>(now).map_err(sql)?;
    let then = DateTime::from_timestamp_millis(then)
        .ok_or_else(|| format!("the database's clock reads {then} ms, out of range"))?;
    Ok(Written {
        record: as_stored(record),
        server_time: Some((then, answered)),
    })
}

/// The row of [`KEY`] as stored, and the time leases are judged by.
fn read(dialect: Dialect) -> String {
    format!(
        "SELECT {COLUMNS}, {} FROM digests WHERE {KEY}",
        dialect.now_ms(5)
    )
}

/// Writes the row of [`KEY`] (its other columns as parameters $5 on) only if each column is
/// still what was read (parameters after those); on PostgreSQL the ttl comes last (see
/// [`timed_by_server`]).
fn unchanged(dialect: Dialect) -> String {
    let columns: Vec<&str> = COLUMNS.split(", ").skip(4).collect();
    let ttl = 5 + 2 * columns.len();
    let set: Vec<String> = (columns.iter().enumerate())
        .map(|(i, &column)| match (dialect, column) {
            (Dialect::Postgres, "lease_until") => {
                format!("{column} = {}", timed_by_server(i + 5, ttl))
            }
            _ => format!("{column} = ${}", i + 5),
        })
        .collect();
    let same: Vec<String> = (columns.iter().enumerate())
        .map(|(i, column)| format!("{column} {} ${}", dialect.same(), i + 5 + columns.len()))
        .collect();
    let returning = match dialect {
        Dialect::Sqlite => String::new(),
        Dialect::Postgres => returning_lease_and_time(),
    };
    format!(
        "UPDATE digests SET {} WHERE {KEY} AND {}{returning}",
        set.join(", "),
        same.join(" AND ")
    )
}

/// A record's columns after the key, as parameters $5 to $16.
fn bind_record<'q>(query: Query<'q>, record: &Record) -> Query<'q> {
    let entry = &record.entry;
    let seconds = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp());
    query
        .bind(entry.state.as_str())
        .bind(i64::from(entry.attempts))
        .bind(i64::from(entry.unanswered))
        .bind(seconds(entry.next_attempt))
        .bind(entry.last_error.clone())
        .bind(entry.refused_url.clone())
        .bind(seconds(entry.delivered_at))
        .bind(record.owner.clone())
        .bind(entry.leased_until.map(|t| t.timestamp_millis()))
        .bind(i64::from(entry.posts))
        .bind(i64::from(entry.reads))
        .bind(entry.last_read.clone())
}

/// A row's columns after the key exactly as read, not as [`parse`] understood them, so a
/// write can require them unchanged whatever they hold.
fn bind_as_read<'q>(mut query: Query<'q>, row: &sqlx::any::AnyRow) -> Result<Query<'q>, String> {
    for (column, name) in COLUMNS.split(", ").enumerate().skip(4) {
        query = if TEXT_COLUMNS.contains(&name) {
            query.bind(
                row.try_get::<Option<String>, _>(column)
                    .map_err(|e| causes(&e))?,
            )
        } else {
            query.bind(
                row.try_get::<Option<i64>, _>(column)
                    .map_err(|e| causes(&e))?,
            )
        };
    }
    Ok(query)
}

/// Who holds a lease: what every fenced write names.
#[derive(Clone)]
struct Holder {
    key: Key,
    token: String,
    /// How many POSTs may have reached the receiver when this holder stops: [`MAX_POSTS`].
    post_limit: u32,
    /// The fingerprint of the webhook's URL when leased, recorded with a refusal.
    url: String,
    /// The row as this holder (its heartbeat included) last wrote it.
    last_write: Arc<LastWrite>,
}

/// A row as one process last wrote it, kept to write against without reading it first.
type LastWrite = std::sync::Mutex<Option<Written>>;

#[derive(Clone)]
struct Written {
    record: Record,
    /// On PostgreSQL, whose clock judges leases: the server's time as it wrote, and this
    /// process's instant once it heard so. That time plus the instant's elapsed stands in for
    /// the server's clock until the next read (behind it by a round trip, unless the server's
    /// clock is stepped).
    server_time: Option<(DateTime<Utc>, std::time::Instant)>,
}

/// A record as a read of the row it was written to would give it back: times in the
/// precision they are stored in.
fn as_stored(record: &Record) -> Record {
    let mut record = record.clone();
    let entry = &mut record.entry;
    let seconds =
        |t: Option<DateTime<Utc>>| t.and_then(|t| DateTime::from_timestamp(t.timestamp(), 0));
    entry.next_attempt = seconds(entry.next_attempt);
    entry.delivered_at = seconds(entry.delivered_at);
    entry.leased_until =
        (entry.leased_until).and_then(|t| DateTime::from_timestamp_millis(t.timestamp_millis()));
    record
}

/// Held while a process posts one digest to one webhook. Dropped without a finish (a panic,
/// a cancelled job), its heartbeat stops and the lease expires within [`lease_ttl`]; the
/// unanswered count it left says whether a POST may have gone out.
pub struct Lease {
    ledger: Ledger,
    holder: Holder,
    /// The reads of the digest's data that looked incomplete before this lease.
    reads: Reads,
    /// POSTs that may have reached the receiver, as of this holder's last one.
    posts: std::sync::atomic::AtomicU32,
    heartbeat: CancellationToken,
    _stops_heartbeat: DropGuard,
}

impl Lease {
    fn new(ledger: Ledger, holder: Holder, reads: Reads) -> Lease {
        let heartbeat = CancellationToken::new();
        tokio::spawn(beat(ledger.clone(), holder.clone(), heartbeat.clone()));
        Lease {
            ledger,
            holder,
            reads,
            posts: Default::default(),
            _stops_heartbeat: heartbeat.clone().drop_guard(),
            heartbeat,
        }
    }

    /// Stops the heartbeat as a stalled process's would stop: for tests.
    #[cfg(test)]
    fn stall(&self) {
        self.heartbeat.cancel();
    }

    pub fn key(&self) -> &Key {
        &self.holder.key
    }

    /// POSTs of this digest that may have reached the receiver, counting this holder's last.
    /// The reads of the digest's data that looked incomplete before this lease was taken.
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    pub fn posts(&self) -> u32 {
        self.posts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a POST as unanswered before it goes out (renewing the lease); refuses when too
    /// many already went unanswered or the lease was lost.
    pub async fn before_post(&self) -> Result<Permit, LedgerError> {
        let (ledger, holder) = (&self.ledger, &self.holder);
        let counted = ledger.fenced(holder, Fenced::BeforePost(holder.post_limit), None);
        if let Some(entry) = counted.await? {
            self.posts
                .store(entry.posts, std::sync::atomic::Ordering::Relaxed);
            return Ok(Permit::Go);
        }
        // A renewal tells whether the lease is still ours.
        let ours = ledger.fenced(holder, Fenced::Renew, None).await?;
        Ok(if ours.is_some() {
            Permit::Exhausted
        } else {
            Permit::Lost
        })
    }

    /// Records an answer the moment it arrives, when the round goes on after it. False when
    /// the lease was lost and nothing was recorded.
    pub async fn answered(&self, posted: &Posted) -> Result<bool, LedgerError> {
        let written = self
            .ledger
            .fenced(&self.holder, Fenced::Answered(posted), None);
        Ok(written.await?.is_some())
    }

    /// Ends the lease: records how the round ended, schedules the next attempt or gives up,
    /// and frees the digest. Returns the entry as recorded, or None when the lease was lost
    /// (another process holds the digest, or it was given up) and nothing was recorded.
    pub async fn finish(self, finish: Finish) -> Result<Option<Entry>, LedgerError> {
        self.heartbeat.cancel();
        let finished = Fenced::Finish(finish);
        self.ledger.fenced(&self.holder, finished, None).await
    }
}

/// Renews a lease four times per ttl until it ends: whichever comes first, the process's
/// clock reaching the next renewal (a clock jumping forward renews at once; SQLite's leases
/// are judged by it) or that much real time passing (a clock stepped back must not hold
/// renewals off while PostgreSQL's server clock runs on).
async fn beat(ledger: Ledger, holder: Holder, heartbeat: CancellationToken) {
    let clock = ledger.inner.clock.clone();
    let every = ledger.inner.ttl / 4;
    let key = &holder.key;
    let mut failing = false;
    loop {
        let next = clock.now() + chrono::Duration::from_std(every).unwrap_or_default();
        tokio::select! {
            () = heartbeat.cancelled() => return,
            () = clock.sleep_until(next) => {}
            () = tokio::time::sleep(every) => {}
        }
        match ledger
            .fenced(&holder, Fenced::Renew, Some(&heartbeat))
            .await
        {
            Ok(Some(_)) => failing = false,
            Ok(None) => return,
            // Once per outage: the reconciler says "deliveries stopped" for all.
            Err(e) if !std::mem::replace(&mut failing, true) => {
                tracing::warn!(team = %key.team, date = %key.span, webhook = %key.webhook, "could not renew the lease: {e}")
            }
            Err(e) => tracing::debug!("could not renew the lease: {e}"),
        }
    }
}
