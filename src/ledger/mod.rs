//! The ledger: one row per (team, span, webhook) saying what happened to that digest, and the
//! one mechanism that keeps two processes from posting it both: a lease.
//!
//! A lease is an owner token and an expiry. It is taken before the first POST, renewed while
//! the POSTs and any pacing wait run, and released on success, failure, cancellation and panic
//! (by [`Lease`]'s `Drop`). Its expiry is always enforced: a holder that died, whatever its pid,
//! host or namespace, frees the digest at most [`lease_ttl`] after its last renewal. Every
//! write a holder makes is fenced by its token, so one whose lease expired and was taken over
//! records nothing over the new holder.
//!
//! Each POST is counted as unanswered before it is sent and uncounted when an answer arrives,
//! so a kill at any instant leaves the count saying what may have arrived; no digest is sent
//! while two POSTs of it went unanswered ([`MAX_UNANSWERED`]).
//!
//! Retry state (attempts, next attempt, last error) lives here too, so it survives restarts
//! and `once` and the daemon see the same.
//!
//! Two stores keep it, behind this one interface: a SQLite file ([`sqlite`], the default, for
//! one host) and a PostgreSQL database ([`postgres`]) that any number of replicas share, where
//! leases are judged by the database's clock rather than the replicas'. The rules live here
//! once, as functions of a row and the time ([`take`], [`expire`], [`fenced`]); a store only
//! locks a row, runs one of them on it and writes back what it returns.

mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::{StateStore, sha256_hex};
use crate::schedule::{Span, Window};

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
/// POSTs of one digest that may be sent without an answer: the first, and one resend.
pub const MAX_UNANSWERED: u32 = 2;

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
    /// Its catch-up window closed before it could be delivered.
    Expired,
    /// Nobody visited and the team has `skip_empty`: nothing was posted, and nothing will be
    /// unless an admin forces it.
    Skipped,
}

impl State {
    /// The state's name in both stores, and in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Refused => "refused",
            State::Unknown => "unknown",
            State::Expired => "expired",
            State::Skipped => "skipped",
        }
    }

    /// A state this version doesn't know is an error, never "pending": read as pending, a
    /// digest someone marked otherwise would be sent again.
    fn parse(text: &str) -> Option<State> {
        [
            State::Pending,
            State::Delivered,
            State::Refused,
            State::Unknown,
            State::Expired,
            State::Skipped,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// A ledger row as the reconciler and `once` read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub state: State,
    pub attempts: u32,
    pub unanswered: u32,
    pub next_attempt: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The URL fingerprint of the webhook that refused.
    pub refused_url: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Until when another holder's lease keeps it off; None when nobody holds it.
    pub leased_until: Option<DateTime<Utc>>,
}

impl Entry {
    /// Whether `requester` has nothing to do for this digest: it is delivered, skipped or
    /// unknown (unless an admin forces it), or it was refused at this same URL and the daemon
    /// asks. `url` is the fingerprint of the webhook's URL now.
    pub fn settled_for(&self, requester: Requester, url: &str) -> bool {
        match self.state {
            State::Pending | State::Expired => false,
            State::Delivered | State::Skipped | State::Unknown => {
                requester != Requester::Admin { force: true }
            }
            State::Refused => {
                requester == Requester::Daemon && self.refused_url.as_deref() == Some(url)
            }
        }
    }
}

impl Entry {
    /// A digest nothing has happened to yet.
    fn pending() -> Entry {
        Entry {
            state: State::Pending,
            attempts: 0,
            unanswered: 0,
            next_attempt: None,
            last_error: None,
            refused_url: None,
            delivered_at: None,
            leased_until: None,
        }
    }

    /// An entry nobody holds, for the tests of what is decided from one.
    #[cfg(test)]
    pub(crate) fn settled_as(state: State, attempts: u32, last_error: Option<&str>) -> Entry {
        let last_error = last_error.map(str::to_owned);
        Entry {
            state,
            attempts,
            last_error,
            ..Entry::pending()
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
    /// [`MAX_UNANSWERED`] POSTs already went unanswered.
    Exhausted,
    /// The lease expired and someone else holds the digest now.
    Lost,
}

/// What one POST's answer was.
pub enum Answer {
    Delivered,
    Refused {
        error: String,
        /// The fingerprint of the URL that refused.
        refused_url: String,
    },
    /// Provably not delivered (connection refused, 429, 5xx).
    NotDelivered(String),
    /// Sent, but no answer came (timeout, reset).
    Unknown(String),
}

/// How a lease ends when its holder is done.
pub enum Finish {
    /// Refused, or the lease was lost: the answer is already recorded, or not ours to record.
    Settled,
    /// Delivered: recorded again, so a failed record of the answer can't leave it pending
    /// and sent a second time.
    Delivered,
    RetryAt(DateTime<Utc>),
    /// Failed before anything was posted (the API, a template): an attempt, with its error.
    FailedBefore {
        error: String,
        retry_at: DateTime<Utc>,
    },
    GiveUp(State),
    /// Nothing to post (an empty day under `skip_empty`): settled without a POST.
    Skipped,
}

/// A digest's row whole, as a store reads it under its lock and writes it back. The owner
/// stays after the lease expires, so a stalled holder's late answer is still recorded unless
/// another process has taken the lease since.
struct Record {
    entry: Entry,
    owner: Option<String>,
}

/// How far a change reaches. Only a lease creates a row; a lease and a POST first check (on
/// SQLite) that the file is still the one opened, so nothing new goes out while the record of
/// what went out is missing, while an answer or a release is recorded wherever the file went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Lease,
    Post,
    Record,
}

/// The changes below are the ledger's rules, in one place: each store runs them inside a
/// transaction that holds the row, with `now` on the clock leases are judged by (the
/// process's for SQLite, the server's for PostgreSQL), and writes back what they return.
///
/// Taking the lease: whether `requester` may send the digest (and how it starts over), or
/// what keeps it from doing so.
fn take(
    record: Option<Record>,
    requester: Requester,
    url: &str,
    token: String,
    until: DateTime<Utc>,
) -> (Option<Record>, Result<(), Claim>) {
    let mut entry = record.map_or_else(Entry::pending, |record| record.entry);
    if let Some(until) = entry.leased_until {
        return (None, Err(Claim::Busy(until)));
    }
    if entry.settled_for(requester, url) {
        return (None, Err(Claim::Settled(entry)));
    }
    if matches!(
        entry.state,
        State::Refused | State::Unknown | State::Expired
    ) {
        entry.state = State::Pending;
    }
    // An admin's `--force` also forgets the POSTs that went unanswered.
    if requester == (Requester::Admin { force: true }) {
        entry.unanswered = 0;
    }
    entry.leased_until = Some(until);
    let owner = Some(token);
    (Some(Record { entry, owner }), Ok(()))
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

/// A write by a lease holder, applied only while its token holds the lease; the answer is the
/// digest's unanswered count then (None: the lease is not ours, or the write was refused).
fn fenced(
    record: Option<Record>,
    token: &str,
    op: Fenced,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> (Option<Record>, Option<u32>) {
    let Some(mut record) = record.filter(|r| r.owner.as_deref() == Some(token)) else {
        return (None, None);
    };
    let entry = &mut record.entry;
    match op {
        // Nothing goes out once the digest is given up, whoever still holds a lease.
        Fenced::Renew | Fenced::BeforePost if entry.state == State::Expired => return (None, None),
        Fenced::BeforePost if entry.unanswered >= MAX_UNANSWERED => return (None, None),
        Fenced::Renew => entry.leased_until = Some(until),
        Fenced::BeforePost => {
            entry.unanswered += 1;
            entry.leased_until = Some(until);
        }
        Fenced::Answered(answer) => {
            entry.attempts = entry.attempts.saturating_add(1);
            entry.next_attempt = None;
            if !matches!(answer, Answer::Unknown(_)) {
                entry.unanswered = entry.unanswered.saturating_sub(1);
            }
            entry.last_error = match answer {
                Answer::Delivered => {
                    entry.state = State::Delivered;
                    entry.delivered_at = Some(now);
                    None
                }
                Answer::Refused { error, refused_url } => {
                    entry.state = State::Refused;
                    entry.refused_url = Some(refused_url);
                    Some(error)
                }
                Answer::NotDelivered(error) | Answer::Unknown(error) => Some(error),
            };
        }
        Fenced::Finish(finish) => {
            let (next_attempt, settled, error) = match finish {
                Finish::Settled => (None, None, None),
                Finish::Delivered => (None, Some(State::Delivered), None),
                Finish::Skipped => (None, Some(State::Skipped), None),
                Finish::RetryAt(at) => (Some(at), None, None),
                Finish::FailedBefore { error, retry_at } => (Some(retry_at), None, Some(error)),
                Finish::GiveUp(state) => (None, Some(state), None),
            };
            entry.next_attempt = next_attempt;
            if let Some(state) = settled {
                entry.state = state;
            }
            if settled == Some(State::Delivered) {
                entry.delivered_at.get_or_insert(now);
            }
            if error.is_some() {
                entry.attempts = entry.attempts.saturating_add(1);
                entry.last_error = error;
            }
            entry.leased_until = None;
            record.owner = None;
        }
        Fenced::Release => {
            entry.leased_until = None;
            record.owner = None;
        }
    }
    let unanswered = record.entry.unanswered;
    (Some(record), Some(unanswered))
}

/// A write by a lease holder.
enum Fenced {
    Renew,
    /// Counts a POST as unanswered, unless [`MAX_UNANSWERED`] already are.
    BeforePost,
    /// One POST's answer; one that never came leaves the POST counted as unanswered.
    Answered(Answer),
    Finish(Finish),
    Release,
}

/// A row as both stores read it, before it is trusted. `lease_until_ms` is already None when
/// the lease has expired (on the store's clock).
struct Row {
    team: String,
    first_day: String,
    last_day: String,
    webhook: String,
    state: String,
    attempts: i64,
    unanswered: i64,
    next_attempt: Option<i64>,
    last_error: Option<String>,
    refused_url: Option<String>,
    delivered_at: Option<i64>,
    lease_owner: Option<String>,
    lease_until_ms: Option<i64>,
}

impl Row {
    /// A row someone edited by hand or a later version wrote is an error, never a guess.
    fn parse(self) -> Result<(Key, Record), String> {
        let date = |text: &str| -> Result<NaiveDate, String> {
            text.parse().map_err(|e| {
                format!(
                    "a row for team {:?} has a bad date {text:?} ({e})",
                    self.team
                )
            })
        };
        let time = |seconds: Option<i64>| seconds.and_then(|s| DateTime::from_timestamp(s, 0));
        let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        let state = State::parse(&self.state).ok_or_else(|| {
            format!(
                "a row for team {:?} has {:?}, not a digest state this version knows",
                self.team, self.state
            )
        })?;
        let span = Span {
            first: date(&self.first_day)?,
            last: date(&self.last_day)?,
        };
        let entry = Entry {
            state,
            attempts: count(self.attempts),
            unanswered: count(self.unanswered),
            next_attempt: time(self.next_attempt),
            last_error: self.last_error,
            refused_url: self.refused_url,
            delivered_at: time(self.delivered_at),
            leased_until: self
                .lease_until_ms
                .and_then(DateTime::from_timestamp_millis),
        };
        let key = Key {
            team: self.team,
            span,
            webhook: self.webhook,
        };
        let owner = self.lease_owner;
        Ok((key, Record { entry, owner }))
    }
}

fn day(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// A history row's key: the account, and the window exactly as the API was asked for it.
fn window_key(account: &str, window: &Window) -> [String; 4] {
    [
        account.to_owned(),
        window.start_date(),
        window.end_date(),
        window.offset_text(),
    ]
}

/// One call of a store method, written once for both stores (they share each method's name
/// and arguments): SQLite's on the blocking pool, since it waits on locks and the disk;
/// PostgreSQL's within [`POSTGRES_CALL_LIMIT`]. The arguments must be owned, for SQLite's
/// thread.
macro_rules! on_store {
    ($ledger:expr, $db:ident => $call:expr) => {
        match &$ledger.inner.store {
            Store::Sqlite($db) => {
                let $db = $db.clone();
                blocking(move || $call).await
            }
            Store::Postgres($db) => answered_in_time($call).await,
        }
        .map_err(|e| $ledger.fail(e))
    };
}

/// A handle to the ledger; clones share one connection (SQLite) or one pool (PostgreSQL).
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    location: StateStore,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    /// Releases of leases dropped without a finish.
    releases: TaskTracker,
}

enum Store {
    Sqlite(Arc<sqlite::Sqlite>),
    Postgres(postgres::Postgres),
}

impl Ledger {
    /// Opens the ledger, creating it (a SQLite file and its folder, or the schema in a
    /// PostgreSQL database) on first use. SQLite's file may be refused: see [`sqlite`].
    pub async fn open(location: &StateStore, clock: Arc<dyn Clock>) -> Result<Ledger, LedgerError> {
        Ledger::open_with(location, clock, lease_ttl(), true).await
    }

    /// Opens the ledger to read it (`status`): a PostgreSQL schema is left as it is, so a
    /// read-only role will do.
    pub async fn open_to_read(
        location: &StateStore,
        clock: Arc<dyn Clock>,
    ) -> Result<Ledger, LedgerError> {
        Ledger::open_with(location, clock, lease_ttl(), false).await
    }

    async fn open_with(
        location: &StateStore,
        clock: Arc<dyn Clock>,
        ttl: Duration,
        migrate: bool,
    ) -> Result<Ledger, LedgerError> {
        let fail = |problem| LedgerError {
            place: location.to_string(),
            problem,
        };
        let store = match location {
            StateStore::Sqlite(path) => {
                let path = path.clone();
                let opened = tokio::task::spawn_blocking(move || sqlite::Sqlite::open(&path))
                    .await
                    .unwrap_or_else(|e| Err(format!("could not be opened: {e}")));
                Store::Sqlite(Arc::new(opened.map_err(fail)?))
            }
            StateStore::Postgres(url) => {
                let opened = answered_in_time(postgres::Postgres::open(url, migrate)).await;
                Store::Postgres(opened.map_err(fail)?)
            }
        };
        Ok(Ledger {
            inner: Arc::new(Inner {
                store,
                location: location.clone(),
                clock,
                ttl,
                releases: TaskTracker::new(),
            }),
        })
    }

    /// Where it lives, as the config says.
    pub fn location(&self) -> &StateStore {
        &self.inner.location
    }

    fn fail(&self, problem: String) -> LedgerError {
        LedgerError {
            place: self.inner.location.to_string(),
            problem,
        }
    }

    /// Every entry whose span ends on `since` or later: all the reconciler looks at in one
    /// pass, in one query.
    pub async fn recent(&self, since: NaiveDate) -> Result<Entries, LedgerError> {
        let now = self.inner.clock.now();
        let rows = on_store!(self, db => db.recent(since, now))?;
        let mut entries = Entries::new();
        for row in rows {
            let (key, record) = row.parse().map_err(|e| self.fail(e))?;
            entries
                .entry((key.team, key.span))
                .or_default()
                .insert(key.webhook, record.entry);
        }
        Ok(entries)
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
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let (now, ttl) = (self.inner.clock.now(), self.inner.ttl);
        let leased = {
            let (key, url, token) = (key.clone(), url.to_owned(), token.clone());
            on_store!(self, db => db.update(&key, Reach::Lease, now, move |record, now| {
                take(record, requester, &url, token, now + ttl)
            }))?
        };
        Ok(match leased {
            Err(claim) => claim,
            Ok(()) => Claim::Leased(Lease::new(self.clone(), key.clone(), token)),
        })
    }

    /// Marks a pending digest whose catch-up window closed, unless someone holds it.
    pub async fn expire(&self, key: &Key) -> Result<bool, LedgerError> {
        let (key, now) = (key.clone(), self.inner.clock.now());
        on_store!(self, db => db.update(&key, Reach::Record, now, |record, _| expire(record)))
    }

    /// A report fetched before for `account` over exactly `window`, as the JSON it was
    /// remembered as.
    pub async fn recalled(
        &self,
        account: &str,
        window: &Window,
    ) -> Result<Option<String>, LedgerError> {
        let window = window_key(account, window);
        on_store!(self, db => db.recalled(&window))
    }

    /// Keeps a report fetched for `account` over `window`, replacing one kept before.
    pub async fn remember(
        &self,
        account: &str,
        window: &Window,
        report: String,
    ) -> Result<(), LedgerError> {
        let (window, now) = (window_key(account, window), self.inner.clock.now());
        on_store!(self, db => db.remember(&window, &report, now))
    }

    /// Drops the reports of windows that ended before `day`; how many.
    pub async fn forget_before(&self, day: NaiveDate) -> Result<usize, LedgerError> {
        let cutoff = format!("{} 00:00:00", self::day(day));
        on_store!(self, db => db.forget_before(&cutoff))
    }

    /// Records an alert about a digest given up for `reason`: true the first time, from any
    /// process, so each alert is sent once however often the give-up is seen.
    pub async fn first_alert(&self, key: &Key, reason: &str) -> Result<bool, LedgerError> {
        let (key, reason, now) = (key.clone(), reason.to_owned(), self.inner.clock.now());
        on_store!(self, db => db.first_alert(&key, &reason, now))
    }

    /// Waits until the leases dropped so far are released (a process about to exit).
    pub async fn released(&self) {
        let releases = &self.inner.releases;
        releases.close();
        releases.wait().await;
        releases.reopen();
    }

    async fn fenced(&self, key: &Key, token: &str, op: Fenced) -> Result<Option<u32>, LedgerError> {
        let (now, ttl) = (self.inner.clock.now(), self.inner.ttl);
        let (key, token) = (key.clone(), token.to_owned());
        let reach = match op {
            Fenced::BeforePost => Reach::Post,
            _ => Reach::Record,
        };
        on_store!(self, db => db.update(&key, reach, now, move |record, now| {
            fenced(record, &token, op, now, now + ttl)
        }))
    }
}

/// A new, empty database on the server `url` names, for a test or a benchmark that needs a
/// PostgreSQL ledger of its own; its URL is `url` with the new database's name.
#[doc(hidden)]
pub async fn scratch_database(url: &str) -> Result<String, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot reach the test database server: {e}"))?;
    tokio::spawn(connection);
    let name = format!("scratch_{:016x}", fastrand::u64(..));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| e.to_string())?;
    let mut scratch = url::Url::parse(url).map_err(|e| e.to_string())?;
    scratch.set_path(&name);
    Ok(scratch.to_string())
}

/// How long a PostgreSQL call may take: a server that stops answering without closing the
/// connection (a failover to a stale address, a partition dropping packets) must not hang the
/// reconciler or a delivery for the kernel's quarter of an hour of retransmissions.
const POSTGRES_CALL_LIMIT: Duration = Duration::from_secs(30);

async fn answered_in_time<T>(
    call: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(POSTGRES_CALL_LIMIT, call)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the database did not answer within {} s",
                POSTGRES_CALL_LIMIT.as_secs()
            ))
        })
}

/// SQLite waits on locks and the disk on the blocking pool, never on an async worker.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(format!("a ledger task failed: {e}")))
}

/// Held while a process posts one digest to one webhook.
pub struct Lease {
    ledger: Ledger,
    key: Key,
    token: String,
    renewal: tokio::task::JoinHandle<()>,
    ended: bool,
}

impl Lease {
    fn new(ledger: Ledger, key: Key, token: String) -> Lease {
        let renewal = {
            let (ledger, key, token) = (ledger.clone(), key.clone(), token.clone());
            tokio::spawn(async move {
                // Whichever comes first: the process's clock reaching the next renewal (a clock
                // jumping forward renews at once, SQLite's leases are judged by it) or that
                // much real time passing (a clock stepped back must not hold renewals off while
                // PostgreSQL's server clock runs on).
                let clock = ledger.inner.clock.clone();
                let every = ledger.inner.ttl / 4;
                let mut failing = false;
                loop {
                    let next = clock.now() + chrono::Duration::from_std(every).unwrap_or_default();
                    tokio::select! {
                        () = clock.sleep_until(next) => {}
                        () = tokio::time::sleep(every) => {}
                    }
                    match ledger.fenced(&key, &token, Fenced::Renew).await {
                        Ok(Some(_)) => failing = false,
                        Ok(None) => return,
                        // Once per outage: the reconciler says "deliveries stopped" for all.
                        Err(e) if !std::mem::replace(&mut failing, true) => {
                            tracing::warn!(team = %key.team, date = %key.span, webhook = %key.webhook, "could not renew the lease: {e}")
                        }
                        Err(e) => tracing::debug!("could not renew the lease: {e}"),
                    }
                }
            })
        };
        Lease {
            ledger,
            key,
            token,
            renewal,
            ended: false,
        }
    }

    /// What a kill -9 leaves: the lease stays in the ledger, unrenewed, until it expires.
    #[cfg(test)]
    fn abandon(mut self) {
        self.renewal.abort();
        self.ended = true;
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Counts a POST as unanswered before it goes out (renewing the lease); refuses when too
    /// many already went unanswered or the lease was lost.
    pub async fn before_post(&self) -> Result<Permit, LedgerError> {
        let ledger = &self.ledger;
        if ledger
            .fenced(&self.key, &self.token, Fenced::BeforePost)
            .await?
            .is_some()
        {
            return Ok(Permit::Go);
        }
        // A renewal tells whether the lease is still ours.
        let ours = ledger.fenced(&self.key, &self.token, Fenced::Renew).await?;
        Ok(if ours.is_some() {
            Permit::Exhausted
        } else {
            Permit::Lost
        })
    }

    /// Records one POST's answer the moment it arrives. Returns how many POSTs of this digest
    /// are now unanswered, or None when the lease was lost and nothing was recorded.
    pub async fn answered(&self, answer: Answer) -> Result<Option<u32>, LedgerError> {
        self.ledger
            .fenced(&self.key, &self.token, Fenced::Answered(answer))
            .await
    }

    /// Ends the lease: schedules the next attempt or gives up, and frees the digest.
    pub async fn finish(mut self, finish: Finish) -> Result<(), LedgerError> {
        self.ended = true;
        self.renewal.abort();
        self.ledger
            .fenced(&self.key, &self.token, Fenced::Finish(finish))
            .await
            .map(drop)
    }
}

impl Drop for Lease {
    /// A holder cancelled, aborted at shutdown or panicking frees the digest here; the
    /// unanswered count it left says whether a POST may have gone out. The release never runs
    /// on the async worker dropping the lease: SQLite's on a thread of its own (a runtime
    /// shutting down may never start a task or a blocking-pool job), PostgreSQL's on a task.
    /// [`Ledger::released`] waits for both before the process exits.
    fn drop(&mut self) {
        self.renewal.abort();
        if self.ended {
            return;
        }
        let ttl = self.ledger.inner.ttl;
        let warn = move |e: &dyn std::fmt::Display| {
            tracing::warn!("could not release a lease ({e}); it expires within {ttl:?}")
        };
        let (key, token) = (self.key.clone(), self.token.clone());
        let runtime = tokio::runtime::Handle::try_current();
        match &self.ledger.inner.store {
            Store::Sqlite(db) => {
                let (db, now) = (db.clone(), self.ledger.inner.clock.now());
                let (done, released) = tokio::sync::oneshot::channel::<()>();
                let release = move || {
                    let release = |record, now| fenced(record, &token, Fenced::Release, now, now);
                    if let Err(e) = db.update(&key, Reach::Record, now, release) {
                        warn(&e);
                    }
                    drop(done);
                };
                if let Ok(runtime) = runtime {
                    let wait = async move { drop(released.await) };
                    self.ledger.inner.releases.spawn_on(wait, &runtime);
                }
                let thread = std::thread::Builder::new().name("lease-release".into());
                if let Err(e) = thread.spawn(release) {
                    warn(&e);
                }
            }
            Store::Postgres(_) => {
                let Ok(runtime) = runtime else {
                    return warn(&"no runtime left to release it on");
                };
                let ledger = self.ledger.clone();
                let release = async move {
                    if let Err(e) = ledger.fenced(&key, &token, Fenced::Release).await {
                        warn(&e);
                    }
                };
                self.ledger.inner.releases.spawn_on(release, &runtime);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use crate::clock::WallClock;
    use crate::config::DatabaseUrl;

    /// Every test here runs against both stores.
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Sqlite,
        Postgres,
    }

    /// A PostgreSQL test lease is short, since only real time moves the server's clock.
    const POSTGRES_TTL: Duration = Duration::from_secs(4);

    struct Fixture {
        kind: Kind,
        _dir: tempfile::TempDir,
        location: StateStore,
        clock: Arc<WallClock>,
    }

    impl Fixture {
        /// None when PostgreSQL isn't there outside CI (the tests say so and pass); in CI a
        /// missing PostgreSQL fails them.
        async fn new(kind: Kind) -> Option<Fixture> {
            let dir = tempfile::tempdir().unwrap();
            let location = match kind {
                Kind::Sqlite => StateStore::Sqlite(dir.path().join("nested/l.db")),
                Kind::Postgres => {
                    let url = test_database_url()?;
                    let scratch = scratch_database(&url).await.unwrap();
                    StateStore::Postgres(DatabaseUrl::parse(&scratch).unwrap())
                }
            };
            Some(Fixture {
                kind,
                _dir: dir,
                location,
                clock: WallClock::new(),
            })
        }

        /// Another process's handle on the same ledger.
        async fn open(&self) -> Ledger {
            let ttl = match self.kind {
                Kind::Sqlite => lease_ttl(),
                Kind::Postgres => POSTGRES_TTL,
            };
            Ledger::open_with(&self.location, self.clock.clone(), ttl, true)
                .await
                .unwrap()
        }

        fn ttl(&self) -> Duration {
            match self.kind {
                Kind::Sqlite => lease_ttl(),
                Kind::Postgres => POSTGRES_TTL,
            }
        }

        /// Lets `time` pass for the leases: SQLite's are judged by the process's clock, which
        /// jumps; PostgreSQL's by the server's, so the test waits.
        async fn pass(&self, time: Duration) {
            match self.kind {
                Kind::Sqlite => {
                    self.clock.jump(chrono::Duration::from_std(time).unwrap());
                    // Renewals wake on the jump; let them write.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Kind::Postgres => tokio::time::sleep(time).await,
            }
        }

        /// Writes behind the ledger's back, as a person with a SQL shell would.
        async fn tamper(&self, sql: &str) {
            match &self.location {
                StateStore::Sqlite(path) => {
                    rusqlite::Connection::open(path)
                        .unwrap()
                        .execute_batch(sql)
                        .unwrap();
                }
                StateStore::Postgres(url) => {
                    let (client, connection) =
                        tokio_postgres::connect(url.expose().as_str(), tokio_postgres::NoTls)
                            .await
                            .unwrap();
                    tokio::spawn(connection);
                    client.batch_execute(sql).await.unwrap();
                }
            }
        }
    }

    fn test_database_url() -> Option<String> {
        match std::env::var("ACQUIRE_DIGEST_TEST_DATABASE_URL") {
            Ok(url) => Some(url),
            Err(_) if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
                "ACQUIRE_DIGEST_TEST_DATABASE_URL is not set: in CI the ledger tests need PostgreSQL (run them through scripts/with-postgres)"
            ),
            Err(_) => {
                eprintln!(
                    "PostgreSQL ledger tests skipped: run through scripts/with-postgres to include them"
                );
                None
            }
        }
    }

    /// Each test, once per store.
    macro_rules! on_both_stores {
        ($($test:ident),* $(,)?) => {
            mod sqlite_store {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(fx) = super::Fixture::new(super::Kind::Sqlite).await {
                        super::$test(fx).await
                    }
                })*
            }
            mod postgres_store {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(fx) = super::Fixture::new(super::Kind::Postgres).await {
                        super::$test(fx).await
                    }
                })*
            }
        };
    }

    on_both_stores!(
        a_lease_keeps_others_off_until_released_and_a_dead_holders_expires,
        a_live_holder_keeps_its_lease_however_far_the_clock_moves,
        a_live_holder_keeps_its_lease_when_the_clock_steps_back,
        how_a_lease_ends_is_recorded_even_when_the_answer_was_not,
        a_stalled_holder_posts_nothing_once_the_digest_is_given_up,
        a_state_this_version_does_not_know_is_an_error_not_pending,
        a_panicking_holder_releases_its_lease,
        an_expired_holder_records_nothing_over_the_new_one,
        at_most_two_posts_go_unanswered_whatever_asks,
        a_refusal_holds_for_the_daemon_until_the_url_changes_and_never_for_once,
        spans_and_webhooks_key_entries_apart,
        processes_racing_for_one_digest_get_one_lease,
        opening_a_new_ledger_is_safe_to_race,
        reports_are_remembered_by_exact_window_and_forgotten_when_old,
        each_alert_is_recorded_once_across_processes,
        a_skipped_digest_is_settled_for_all_but_a_forced_admin,
    );

    fn key(webhook: &str) -> Key {
        Key::new("apac", Span::day("2021-03-18".parse().unwrap()), webhook)
    }

    async fn lease(ledger: &Ledger, key: &Key, requester: Requester) -> Claim {
        ledger.lease(key, requester, "url-1").await.unwrap()
    }

    async fn entry(ledger: &Ledger, key: &Key) -> Option<Entry> {
        let mut entries = ledger.recent(key.span.last).await.unwrap();
        entries
            .remove(&(key.team.clone(), key.span))?
            .remove(&key.webhook)
    }

    async fn a_lease_keeps_others_off_until_released_and_a_dead_holders_expires(fx: Fixture) {
        let (ours, theirs) = (fx.open().await, fx.open().await);
        let slack = key("slack");
        let Claim::Leased(held) = lease(&ours, &slack, Requester::Daemon).await else {
            panic!("the first lease")
        };
        assert!(matches!(
            lease(&theirs, &slack, Requester::Daemon).await,
            Claim::Busy(_)
        ));
        assert!(matches!(
            lease(&theirs, &slack, Requester::Admin { force: true }).await,
            Claim::Busy(_)
        ));
        drop(held);
        ours.released().await;
        let Claim::Leased(held) = lease(&theirs, &slack, Requester::Daemon).await else {
            panic!("released on drop")
        };
        // Killed mid-POST: no Drop, no release, no pid to look at; only the expiry frees it.
        held.abandon();
        assert!(matches!(
            lease(&ours, &slack, Requester::Daemon).await,
            Claim::Busy(_)
        ));
        fx.pass(fx.ttl() + Duration::from_secs(1)).await;
        match lease(&ours, &slack, Requester::Daemon).await {
            Claim::Leased(_) => {}
            Claim::Busy(until) => panic!("still held until {until}, now {}", fx.clock.now()),
            Claim::Settled(entry) => panic!("settled: {entry:?}"),
        }
    }

    async fn a_live_holder_keeps_its_lease_however_far_the_clock_moves(fx: Fixture) {
        let ours = fx.open().await;
        let slack = key("slack");
        let Claim::Leased(_held) = lease(&ours, &slack, Requester::Daemon).await else {
            panic!()
        };
        // Three steps of three quarters of the lease outlast it unless it is renewed.
        for _ in 0..3 {
            fx.pass(fx.ttl() * 3 / 4).await;
            assert!(matches!(
                lease(&ours, &slack, Requester::Daemon).await,
                Claim::Busy(_)
            ));
        }
    }

    async fn a_live_holder_keeps_its_lease_when_the_clock_steps_back(fx: Fixture) {
        let ours = fx.open().await;
        let slack = key("slack");
        let Claim::Leased(_held) = lease(&ours, &slack, Requester::Daemon).await else {
            panic!()
        };
        fx.clock.jump(-chrono::Duration::seconds(600));
        // Real time passes; on PostgreSQL the server's clock judges the lease. (On SQLite the
        // step back lengthens the lease: that run holds whatever renewal does.)
        tokio::time::sleep(POSTGRES_TTL + Duration::from_secs(1)).await;
        fx.clock.jump(chrono::Duration::seconds(600));
        assert!(matches!(
            lease(&ours, &slack, Requester::Daemon).await,
            Claim::Busy(_)
        ));
    }

    async fn how_a_lease_ends_is_recorded_even_when_the_answer_was_not(fx: Fixture) {
        let ledger = fx.open().await;
        // Delivered, but the answer's own record failed: the finish records it.
        let slack = key("slack");
        let Claim::Leased(l) = lease(&ledger, &slack, Requester::Daemon).await else {
            panic!()
        };
        assert_eq!(l.before_post().await.unwrap(), Permit::Go);
        l.finish(Finish::Delivered).await.unwrap();
        let delivered = entry(&ledger, &slack).await.unwrap();
        assert_eq!(delivered.state, State::Delivered);
        assert!(delivered.delivered_at.is_some());
        assert!(matches!(
            lease(&ledger, &slack, Requester::Daemon).await,
            Claim::Settled(_)
        ));
        // Failed before any POST: an attempt, with its reason, tried again later.
        let generic = key("generic");
        let Claim::Leased(l) = lease(&ledger, &generic, Requester::Daemon).await else {
            panic!()
        };
        let retry_at = fx.clock.now() + chrono::Duration::minutes(10);
        let error = "API key rejected (HTTP 401)".to_owned();
        l.finish(Finish::FailedBefore { error, retry_at })
            .await
            .unwrap();
        let failed = entry(&ledger, &generic).await.unwrap();
        assert_eq!((failed.state, failed.attempts), (State::Pending, 1));
        assert_eq!(
            failed.last_error.as_deref(),
            Some("API key rejected (HTTP 401)")
        );
        assert_eq!(
            failed.next_attempt.map(|t| t.timestamp()),
            Some(retry_at.timestamp())
        );
    }

    async fn a_stalled_holder_posts_nothing_once_the_digest_is_given_up(fx: Fixture) {
        let ledger = fx.open().await;
        let slack = key("slack");
        let Claim::Leased(stalled) = lease(&ledger, &slack, Requester::Daemon).await else {
            panic!()
        };
        stalled.renewal.abort();
        fx.pass(fx.ttl() + Duration::from_secs(1)).await;
        // The reconciler finds its window closed and the lease run out. Looked at again for a
        // moment: under a loaded CI this once read false (cause not found; see the session
        // note), and the entry is printed if it stays so.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while !ledger.expire(&slack).await.unwrap() {
            let now = fx.clock.now();
            let found = entry(&ledger, &slack).await;
            assert!(
                std::time::Instant::now() < deadline,
                "not expired at {now}: {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(stalled.before_post().await.unwrap(), Permit::Lost);
        assert_eq!(entry(&ledger, &slack).await.unwrap().state, State::Expired);
    }

    async fn a_state_this_version_does_not_know_is_an_error_not_pending(fx: Fixture) {
        let ledger = fx.open().await;
        let Claim::Leased(l) = lease(&ledger, &key("slack"), Requester::Daemon).await else {
            panic!()
        };
        l.finish(Finish::Settled).await.unwrap();
        fx.tamper("UPDATE digests SET state = 'done'").await;
        let err = ledger
            .recent("2021-01-01".parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a digest state"), "{err}");
        assert!(
            ledger
                .lease(&key("slack"), Requester::Daemon, "u")
                .await
                .is_err()
        );
    }

    async fn a_panicking_holder_releases_its_lease(fx: Fixture) {
        let ledger = fx.open().await;
        let slack = key("slack");
        let (l, k) = (ledger.clone(), slack.clone());
        let crashed = tokio::spawn(async move {
            let _lease = lease(&l, &k, Requester::Daemon).await;
            panic!("a bug mid-delivery");
        })
        .await;
        assert!(crashed.unwrap_err().is_panic());
        ledger.released().await;
        assert!(matches!(
            lease(&ledger, &slack, Requester::Daemon).await,
            Claim::Leased(_)
        ));
    }

    async fn an_expired_holder_records_nothing_over_the_new_one(fx: Fixture) {
        let ledger = fx.open().await;
        let slack = key("slack");
        let Claim::Leased(stale) = lease(&ledger, &slack, Requester::Daemon).await else {
            panic!()
        };
        assert_eq!(stale.before_post().await.unwrap(), Permit::Go);
        // Stalled: its renewals stop, as a process paused by the kernel or a debugger.
        stale.renewal.abort();
        fx.pass(fx.ttl() + Duration::from_secs(1)).await;
        let Claim::Leased(fresh) = lease(&ledger, &slack, Requester::Daemon).await else {
            panic!("the expired lease is taken over")
        };
        let late = Answer::Refused {
            error: "late".into(),
            refused_url: "u".into(),
        };
        assert_eq!(stale.answered(late).await.unwrap(), None, "fenced off");
        assert_eq!(stale.before_post().await.unwrap(), Permit::Lost);
        assert!(fresh.answered(Answer::Delivered).await.unwrap().is_some());
        fresh.finish(Finish::Settled).await.unwrap();
        stale.finish(Finish::GiveUp(State::Unknown)).await.unwrap();
        let entry = entry(&ledger, &slack).await.unwrap();
        assert_eq!(entry.state, State::Delivered);
        assert!(matches!(
            lease(&ledger, &slack, Requester::Daemon).await,
            Claim::Settled(_)
        ));
    }

    async fn at_most_two_posts_go_unanswered_whatever_asks(fx: Fixture) {
        let ledger = fx.open().await;
        let hook = key("generic");
        for round in 0..3 {
            let Claim::Leased(lease) = lease(&ledger, &hook, Requester::Daemon).await else {
                panic!("round {round}")
            };
            let permit = lease.before_post().await.unwrap();
            if round < 2 {
                assert_eq!(permit, Permit::Go, "round {round}");
                lease
                    .answered(Answer::Unknown("timed out".into()))
                    .await
                    .unwrap();
                lease.finish(Finish::RetryAt(fx.clock.now())).await.unwrap();
            } else {
                assert_eq!(permit, Permit::Exhausted);
                lease.finish(Finish::GiveUp(State::Unknown)).await.unwrap();
            }
        }
        assert!(
            matches!(lease(&ledger, &hook, Requester::Daemon).await, Claim::Settled(e) if e.state == State::Unknown)
        );
        assert!(matches!(
            lease(&ledger, &hook, Requester::Admin { force: false }).await,
            Claim::Settled(_)
        ));
        // Only an admin's --force sends it again, and resets the count.
        let Claim::Leased(forced) = lease(&ledger, &hook, Requester::Admin { force: true }).await
        else {
            panic!()
        };
        assert_eq!(forced.before_post().await.unwrap(), Permit::Go);
        // An answered POST (even a 503) does not count as unanswered.
        let answered = forced
            .answered(Answer::NotDelivered("HTTP 503".into()))
            .await;
        assert_eq!(answered.unwrap(), Some(0));
    }

    async fn a_refusal_holds_for_the_daemon_until_the_url_changes_and_never_for_once(fx: Fixture) {
        let ledger = fx.open().await;
        let slack = key("slack");
        let Claim::Leased(l) = lease(&ledger, &slack, Requester::Daemon).await else {
            panic!()
        };
        l.before_post().await.unwrap();
        l.answered(Answer::Refused {
            error: "HTTP 404: no_service".into(),
            refused_url: "url-1".into(),
        })
        .await
        .unwrap();
        l.finish(Finish::Settled).await.unwrap();
        // A new process: still refused with the same URL.
        let reopened = fx.open().await;
        assert!(
            matches!(lease(&reopened, &slack, Requester::Daemon).await, Claim::Settled(e) if e.state == State::Refused)
        );
        assert!(matches!(
            reopened
                .lease(&slack, Requester::Daemon, "url-2")
                .await
                .unwrap(),
            Claim::Leased(_)
        ));
        reopened.released().await;
        assert!(matches!(
            lease(&reopened, &slack, Requester::Admin { force: false }).await,
            Claim::Leased(_)
        ));
    }

    async fn a_skipped_digest_is_settled_for_all_but_a_forced_admin(fx: Fixture) {
        let ledger = fx.open().await;
        let slack = key("slack");
        let Claim::Leased(l) = lease(&ledger, &slack, Requester::Daemon).await else {
            panic!()
        };
        l.finish(Finish::Skipped).await.unwrap();
        let recorded = entry(&ledger, &slack).await.unwrap();
        assert_eq!(recorded.state, State::Skipped);
        assert_eq!((recorded.attempts, recorded.leased_until), (0, None));
        let reopened = fx.open().await;
        for requester in [Requester::Daemon, Requester::Admin { force: false }] {
            assert!(
                matches!(lease(&reopened, &slack, requester).await, Claim::Settled(e) if e.state == State::Skipped)
            );
        }
        assert!(matches!(
            lease(&reopened, &slack, Requester::Admin { force: true }).await,
            Claim::Leased(_)
        ));
    }

    async fn spans_and_webhooks_key_entries_apart(fx: Fixture) {
        let ledger = fx.open().await;
        let day = key("slack");
        let Claim::Leased(l) = lease(&ledger, &day, Requester::Daemon).await else {
            panic!()
        };
        l.answered(Answer::Delivered).await.unwrap();
        l.finish(Finish::Settled).await.unwrap();
        let weekend = Key::new(
            "apac",
            Span {
                first: "2021-03-16".parse().unwrap(),
                last: "2021-03-18".parse().unwrap(),
            },
            "slack",
        );
        assert!(matches!(
            lease(&ledger, &weekend, Requester::Daemon).await,
            Claim::Leased(_)
        ));
        assert!(matches!(
            lease(&ledger, &key("generic"), Requester::Daemon).await,
            Claim::Leased(_)
        ));
        let recent = ledger.recent(day.span.first).await.unwrap();
        assert_eq!(recent[&("apac".to_owned(), day.span)].len(), 2);
        assert_eq!(recent[&("apac".to_owned(), weekend.span)].len(), 1);
        assert_ne!(day.webhook_id(), weekend.webhook_id());
        assert_eq!(day.webhook_id(), key("slack").webhook_id());
    }

    async fn processes_racing_for_one_digest_get_one_lease(fx: Fixture) {
        let mut ledgers = Vec::new();
        for _ in 0..6 {
            ledgers.push(fx.open().await);
        }
        for round in 0..20 {
            let hook = key(&format!("hook-{round}"));
            // Odd rounds race for a digest the ledger already has a row of (a retry).
            if round % 2 == 1 {
                let Claim::Leased(first) = lease(&ledgers[0], &hook, Requester::Daemon).await
                else {
                    panic!()
                };
                first.finish(Finish::RetryAt(fx.clock.now())).await.unwrap();
            }
            let claims = futures::future::join_all(
                ledgers
                    .iter()
                    .map(|ledger| ledger.lease(&hook, Requester::Daemon, "u")),
            )
            .await;
            let leased = claims
                .into_iter()
                .filter(|c| matches!(c.as_ref().unwrap(), Claim::Leased(_)))
                .count();
            assert_eq!(leased, 1, "round {round}");
        }
    }

    async fn opening_a_new_ledger_is_safe_to_race(fx: Fixture) {
        let opened = futures::future::join_all((0..8).map(|_| {
            let (location, clock) = (fx.location.clone(), fx.clock.clone());
            // Each on a thread of its own, as separate processes would.
            tokio::task::spawn_blocking(move || {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(Ledger::open(&location, clock))
                    .map(drop)
            })
        }))
        .await;
        for result in opened {
            result.unwrap().unwrap();
        }
    }

    async fn reports_are_remembered_by_exact_window_and_forgotten_when_old(fx: Fixture) {
        use crate::schedule::Zone;
        let ledger = fx.open().await;
        let kolkata = Zone::parse("Asia/Kolkata").unwrap();
        let day = |d: &str| Window::for_date(kolkata, d.parse().unwrap());
        assert_eq!(
            ledger.recalled("acme", &day("2026-11-20")).await.unwrap(),
            None
        );
        ledger
            .remember("acme", &day("2026-11-20"), "{\"v\":1}".into())
            .await
            .unwrap();
        ledger
            .remember("acme", &day("2026-11-20"), "{\"v\":2}".into())
            .await
            .unwrap();
        ledger
            .remember("acme", &day("2026-10-01"), "{}".into())
            .await
            .unwrap();
        let recalled = ledger.recalled("acme", &day("2026-11-20")).await.unwrap();
        assert_eq!(recalled.as_deref(), Some("{\"v\":2}"));
        // Another account, another zone's window of the same date: not the same report.
        assert_eq!(
            ledger.recalled("globex", &day("2026-11-20")).await.unwrap(),
            None
        );
        let utc = Window::for_date(
            Zone::parse("+00:00").unwrap(),
            "2026-11-20".parse().unwrap(),
        );
        assert_eq!(ledger.recalled("acme", &utc).await.unwrap(), None);
        // Another process sees it too.
        let other = fx.open().await;
        assert!(
            other
                .recalled("acme", &day("2026-11-20"))
                .await
                .unwrap()
                .is_some()
        );
        let forgotten = ledger.forget_before("2026-11-01".parse().unwrap()).await;
        assert_eq!(forgotten.unwrap(), 1);
        assert_eq!(
            ledger.recalled("acme", &day("2026-10-01")).await.unwrap(),
            None
        );
        assert!(
            ledger
                .recalled("acme", &day("2026-11-20"))
                .await
                .unwrap()
                .is_some()
        );
    }

    async fn each_alert_is_recorded_once_across_processes(fx: Fixture) {
        let (ours, theirs) = (fx.open().await, fx.open().await);
        let slack = key("slack");
        assert!(ours.first_alert(&slack, "refused").await.unwrap());
        assert!(!theirs.first_alert(&slack, "refused").await.unwrap());
        assert!(!ours.first_alert(&slack, "refused").await.unwrap());
        // Another reason, or another webhook, is another alert.
        assert!(theirs.first_alert(&slack, "window_closed").await.unwrap());
        assert!(
            theirs
                .first_alert(&key("generic"), "refused")
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_empty_damaged_or_foreign_sqlite_ledger_is_refused_not_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let clock: Arc<dyn Clock> = WallClock::new();
        let open = |path: PathBuf| {
            let clock = clock.clone();
            async move {
                Ledger::open(&StateStore::Sqlite(path), clock)
                    .await
                    .map(drop)
                    .err()
                    .unwrap()
                    .to_string()
            }
        };
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let err = open(empty).await;
        assert!(err.contains("empty") && err.contains("delete it"), "{err}");

        let good = dir.path().join("good.db");
        let ledger = Ledger::open(&StateStore::Sqlite(good.clone()), clock.clone()).await;
        drop(ledger.unwrap());
        let bytes = std::fs::read(&good).unwrap();
        let truncated = dir.path().join("truncated.db");
        std::fs::write(&truncated, &bytes[..100]).unwrap();
        let err = open(truncated).await;
        assert!(err.contains("truncated.db"), "{err}");

        let foreign = dir.path().join("foreign.db");
        rusqlite::Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE notes (x)")
            .unwrap();
        let err = open(foreign).await;
        assert!(err.contains("not an acquire-digest ledger"), "{err}");
    }

    #[tokio::test]
    async fn a_sqlite_ledger_deleted_or_replaced_under_a_running_process_stops_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let location = StateStore::Sqlite(path.clone());
        let ledger = Ledger::open(&location, WallClock::new()).await.unwrap();
        let since: NaiveDate = "2021-01-01".parse().unwrap();
        ledger.recent(since).await.unwrap();
        std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
        let err = ledger
            .lease(&key("slack"), Requester::Daemon, "u")
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("disappeared"), "{err}");
        drop(Ledger::open(&location, WallClock::new()).await.unwrap());
        let err = ledger.recent(since).await.unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
        std::fs::rename(dir.path().join("moved.db"), &path).unwrap();
        ledger.recent(since).await.unwrap();
    }

    #[tokio::test]
    async fn a_version_1_sqlite_ledger_keeps_its_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE deliveries (team TEXT, date TEXT, webhook TEXT, delivered_at TEXT, PRIMARY KEY (team, date, webhook));
                 INSERT INTO deliveries VALUES ('apac', '2021-03-18', 'slack', '2021-03-19T03:30:00+00:00');
                 CREATE TABLE claims (team TEXT);",
            )
            .unwrap();
        let ledger = Ledger::open(&StateStore::Sqlite(path), WallClock::new())
            .await
            .unwrap();
        let entry = entry(&ledger, &key("slack")).await.unwrap();
        assert_eq!(entry.state, State::Delivered);
        assert_eq!(
            entry.delivered_at,
            Some("2021-03-19T03:30:00Z".parse().unwrap())
        );
        // Brought up to the current schema, alerts and history included.
        assert!(ledger.first_alert(&key("slack"), "refused").await.unwrap());
    }

    #[tokio::test]
    async fn sslmode_require_encrypts_unverified_and_verify_full_refuses_an_unknown_certificate() {
        let Some(server) = test_database_url() else {
            return;
        };
        if std::env::var("ACQUIRE_DIGEST_TEST_DATABASE_TLS").is_err() {
            eprintln!("skipped: the test server has no TLS (scripts/with-postgres needs openssl)");
            return;
        }
        let scratch = scratch_database(&server).await.unwrap();
        let name = scratch.rsplit('/').next().unwrap().to_owned();
        let with = |mode: &str| {
            StateStore::Postgres(DatabaseUrl::parse(&format!("{scratch}?sslmode={mode}")).unwrap())
        };
        let (admin, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let encrypted = || async {
            let row = admin
                .query_one(
                    "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s
                     JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
                    &[&name],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0), row.get::<_, Option<bool>>(1))
        };

        // The server's certificate is self-signed: require takes it, and encrypts.
        let ledger = Ledger::open(&with("require"), WallClock::new())
            .await
            .unwrap();
        ledger.recent("2021-01-01".parse().unwrap()).await.unwrap();
        let (connections, all_tls) = encrypted().await;
        assert!(
            connections >= 1 && all_tls == Some(true),
            "{connections} {all_tls:?}"
        );
        drop(ledger);

        // verify-full checks it against the system's roots, which don't know it.
        let err = Ledger::open(&with("verify-full"), WallClock::new())
            .await
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificate"), "{err}");

        // And disable is plain text.
        let plain = Ledger::open(&with("disable"), WallClock::new())
            .await
            .unwrap();
        plain.recent("2021-01-01".parse().unwrap()).await.unwrap();
        let row = admin
            .query_one(
                "SELECT bool_or(s.ssl) FROM pg_stat_ssl s
                 JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
                &[&name],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, Option<bool>>(0), Some(false));
    }

    #[tokio::test]
    async fn an_unreachable_database_is_named_without_its_password() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://digest:hunter2-secret@127.0.0.1:{port}/ledger");
        let location = StateStore::Postgres(DatabaseUrl::parse(&url).unwrap());
        let err = Ledger::open(&location, WallClock::new())
            .await
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            err.contains(&format!("postgres://127.0.0.1:{port}/ledger"))
                && err.contains("cannot reach the database"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_refused_password_is_named_as_such_and_never_shown() {
        let (Some(server), Ok(role)) = (
            test_database_url(),
            std::env::var("ACQUIRE_DIGEST_TEST_PASSWORD_ROLE"),
        ) else {
            return;
        };
        let (admin, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        // Tests run in parallel and more than once per cluster: the role may be there already.
        let _ = admin
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD 'the-right-one'"
            ))
            .await;
        let with_password = |password: &str| {
            let mut url = url::Url::parse(&server).unwrap();
            url.set_username(&role).unwrap();
            url.set_password(Some(password)).unwrap();
            StateStore::Postgres(DatabaseUrl::parse(url.as_str()).unwrap())
        };
        let err = Ledger::open_to_read(&with_password("hunter2-wrong"), WallClock::new())
            .await
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            err.contains("refused the login") && err.contains("password authentication failed"),
            "{err}"
        );
        // The same role with its password gets in: it was the password that was refused.
        Ledger::open_to_read(&with_password("the-right-one"), WallClock::new())
            .await
            .unwrap();
    }

    /// Another session holds the row's lock without writing it (as a transaction that only
    /// looked does) until the returned sender fires.
    async fn lock_row_without_writing(
        fx: &Fixture,
        webhook: &str,
    ) -> tokio::sync::oneshot::Sender<()> {
        let StateStore::Postgres(url) = &fx.location else {
            unreachable!("PostgreSQL only")
        };
        let (mut client, connection) =
            tokio_postgres::connect(url.expose().as_str(), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        let (locked_tx, locked) = tokio::sync::oneshot::channel();
        let (unlock, unlocked) = tokio::sync::oneshot::channel::<()>();
        let webhook = webhook.to_owned();
        tokio::spawn(async move {
            let tx = client.transaction().await.unwrap();
            tx.query(
                "SELECT 1 FROM digests WHERE webhook = $1 FOR UPDATE",
                &[&webhook],
            )
            .await
            .unwrap();
            locked_tx.send(()).unwrap();
            let _ = unlocked.await;
            tx.commit().await.unwrap();
        });
        locked.await.unwrap();
        unlock
    }

    /// A lease taken after waiting longer than its ttl for the row's lock still runs its whole
    /// ttl from when it was taken, so nobody else takes it at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_taken_after_a_lock_wait_runs_its_whole_ttl() {
        let Some(fx) = Fixture::new(Kind::Postgres).await else {
            return;
        };
        let (ours, theirs) = (fx.open().await, fx.open().await);
        let slack = key("slack");
        let Claim::Leased(first) = lease(&ours, &slack, Requester::Daemon).await else {
            panic!()
        };
        drop(first);
        ours.released().await;
        let unlock = lock_row_without_writing(&fx, "slack").await;
        let taking = {
            let (ours, slack) = (ours.clone(), slack.clone());
            tokio::spawn(async move { lease(&ours, &slack, Requester::Daemon).await })
        };
        tokio::time::sleep(POSTGRES_TTL + Duration::from_secs(1)).await;
        unlock.send(()).unwrap();
        let Claim::Leased(_held) = taking.await.unwrap() else {
            panic!()
        };
        assert!(matches!(
            lease(&theirs, &slack, Requester::Daemon).await,
            Claim::Busy(_)
        ));
    }

    /// The same for the lease a POST's permit renews: no second holder while the POST is out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_post_permitted_after_a_lock_wait_is_not_posted_twice() {
        let Some(fx) = Fixture::new(Kind::Postgres).await else {
            return;
        };
        let (ours, theirs) = (fx.open().await, fx.open().await);
        let slack = key("slack");
        let Claim::Leased(held) = lease(&ours, &slack, Requester::Daemon).await else {
            panic!()
        };
        held.renewal.abort();
        let unlock = lock_row_without_writing(&fx, "slack").await;
        let permit = tokio::spawn(async move { (held.before_post().await.unwrap(), held) });
        tokio::time::sleep(POSTGRES_TTL + Duration::from_secs(1)).await;
        unlock.send(()).unwrap();
        let (permit, _held) = permit.await.unwrap();
        assert_eq!(permit, Permit::Go);
        if let Claim::Leased(second) = lease(&theirs, &slack, Requester::Daemon).await {
            let permit = second.before_post().await.unwrap();
            panic!("a second holder while our POST is out, its permit: {permit:?}");
        }
    }

    /// A lease still held when its runtime shuts down (a panic out of `once` or the daemon)
    /// is released on the way out, not left to expire.
    #[test]
    fn a_sqlite_lease_alive_at_runtime_shutdown_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let location = StateStore::Sqlite(dir.path().join("l.db"));
        let clock = WallClock::new();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let ledger = runtime
            .block_on(Ledger::open(&location, clock.clone()))
            .unwrap();
        let slack = key("slack");
        let Claim::Leased(held) = runtime.block_on(lease(&ledger, &slack, Requester::Daemon))
        else {
            panic!()
        };
        runtime.spawn(async move {
            let _held = held;
            std::future::pending::<()>().await
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(runtime);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let other = runtime.block_on(Ledger::open(&location, clock)).unwrap();
        // The release runs on a thread beside the shutdown: a moment, not the lease's 90 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match runtime.block_on(lease(&other, &slack, Requester::Daemon)) {
                Claim::Leased(_) => break,
                _ if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => panic!("the lease was left to expire"),
            }
        }
    }
}
