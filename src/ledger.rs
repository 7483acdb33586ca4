//! The ledger: one row per (team, span, webhook) saying what happened to that digest, and the
//! one mechanism that keeps two processes from posting it both: a lease.
//!
//! A lease is an owner token and an expiry. It is taken before the first POST, renewed while
//! the POSTs and any pacing wait run, and released on success, failure, cancellation and panic
//! (by [`Lease`]'s `Drop`). Its expiry is always enforced: a holder that died, whatever its pid
//! or namespace, frees the digest at most [`lease_ttl`] after its last renewal. Every write a
//! holder makes is fenced by its token, so one whose lease expired and was taken over records
//! nothing over the new holder.
//!
//! Each POST is counted as unanswered before it is sent and uncounted when an answer arrives,
//! so a kill at any instant leaves the count saying what may have arrived; no digest is sent
//! while two POSTs of it went unanswered ([`MAX_UNANSWERED`]).
//!
//! Retry state (attempts, next attempt, last error) lives here too, so it survives restarts
//! and `once` and the daemon see the same.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::clock::Clock;
use crate::config::sha256_hex;
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
/// POSTs of one digest that may be sent without an answer: the first, and one resend.
pub const MAX_UNANSWERED: u32 = 2;

#[derive(Debug, thiserror::Error)]
#[error("delivery ledger {path}: {problem}")]
pub struct LedgerError {
    path: PathBuf,
    problem: String,
}

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
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Refused => "refused",
            State::Unknown => "unknown",
            State::Expired => "expired",
        }
    }

    fn parse(text: &str) -> State {
        match text {
            "delivered" => State::Delivered,
            "refused" => State::Refused,
            "unknown" => State::Unknown,
            "expired" => State::Expired,
            _ => State::Pending,
        }
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
    /// Nothing to do for this requester: delivered, refused, unknown or expired.
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
pub enum Answer<'a> {
    Delivered,
    Refused {
        error: &'a str,
        refused_url: &'a str,
    },
    /// Provably not delivered (connection refused, 429, 5xx).
    NotDelivered(&'a str),
    /// Sent, but no answer came (timeout, reset).
    Unknown(&'a str),
}

/// How a lease ends when its holder is done.
pub enum Finish {
    /// Delivered or refused: the answer is already recorded.
    Settled,
    RetryAt(DateTime<Utc>),
    GiveUp(State),
}

/// A handle to the ledger; clones share one connection.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The file's device and inode when opened: a ledger replaced or deleted under a running
    /// daemon must stop deliveries rather than let it re-send everything into a new file.
    identity: (u64, u64),
    connection: Mutex<Connection>,
    clock: Arc<dyn Clock>,
}

const SCHEMA_VERSION: i64 = 2;

impl Ledger {
    /// Opens the ledger, creating it (and its folder) on first use. A file that exists but is
    /// empty, damaged or not a ledger is refused: starting afresh would re-send every digest
    /// within the catch-up window, so only deleting the file asks for that.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Ledger, LedgerError> {
        let fail = |problem: String| LedgerError {
            path: path.to_owned(),
            problem,
        };
        let existed = match settled_size(path) {
            Some(0) => {
                return Err(fail(
                    "the file exists but is empty, so it holds no record of what was delivered; restore it from a backup, or delete it to start a fresh ledger (digests within catch_up may then be sent again)".into(),
                ));
            }
            Some(_) => true,
            None => false,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create its folder: {e}")))?;
        }
        let connection = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        let damaged = |e: rusqlite::Error| {
            fail(format!(
                "cannot be read ({e}); restore it from a backup, or delete it to start a fresh ledger (digests within catch_up may then be sent again)"
            ))
        };
        // The busy timeout first: switching to WAL takes a lock, and two processes opening a
        // new ledger at once must wait for each other, not fail with "database is locked".
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(|e| fail(e.to_string()))?;
        // NORMAL syncs at checkpoints: a killed process loses no commit; a power loss can undo
        // the last few, which costs a duplicate post, never a lost digest.
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(damaged)?;
        if existed {
            let check: String = connection
                .query_row("PRAGMA quick_check", [], |row| row.get(0))
                .map_err(damaged)?;
            if check != "ok" {
                return Err(fail(format!(
                    "is damaged ({check}); restore it from a backup, or delete it to start a fresh ledger"
                )));
            }
        }
        let mut connection = connection;
        migrate(&mut connection, existed).map_err(|e| match e {
            Migration::Sql(e) => damaged(e),
            Migration::NotALedger => fail(
                "is not an acquire-digest ledger (it has none of its tables); check [state] path, or delete the file to start a fresh ledger".into(),
            ),
        })?;
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                identity: (meta.dev(), meta.ino()),
                connection: Mutex::new(connection),
                clock,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the ledger file is still the one opened. Deliveries stop while it isn't.
    pub fn check_identity(&self) -> Result<(), LedgerError> {
        self.inner.check_identity()
    }

    /// Every webhook's entry for a team's span.
    pub async fn entries(
        &self,
        team: &str,
        span: Span,
    ) -> Result<HashMap<String, Entry>, LedgerError> {
        let team = team.to_owned();
        self.blocking(move |inner, connection| {
            let now = inner.clock.now();
            let mut statement = connection.prepare_cached(
                "SELECT webhook, state, attempts, unanswered, next_attempt, last_error, refused_url,
                        delivered_at, lease_until
                 FROM digests WHERE team = ?1 AND first_day = ?2 AND last_day = ?3",
            )?;
            let rows = statement
                .query_map(params![team, day(span.first), day(span.last)], |row| {
                    Ok((row.get::<_, String>(0)?, entry_of(row, 1, now)?))
                })?;
            rows.collect()
        })
        .await
    }

    /// One webhook's entry, if it has one.
    pub async fn entry(&self, key: &Key) -> Result<Option<Entry>, LedgerError> {
        Ok(self
            .entries(&key.team, key.span)
            .await?
            .remove(&key.webhook))
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
        let (k, url, owner) = (key.clone(), url.to_owned(), token.clone());
        let claimed = self
            .blocking(move |inner, connection| {
                inner.check_identity().map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                let now = inner.clock.now();
                let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let entry = tx
                    .query_row(
                        "SELECT state, attempts, unanswered, next_attempt, last_error, refused_url,
                                delivered_at, lease_until
                         FROM digests WHERE team = ?1 AND first_day = ?2 AND last_day = ?3 AND webhook = ?4",
                        params![k.team, day(k.span.first), day(k.span.last), k.webhook],
                        |row| entry_of(row, 0, now),
                    )
                    .optional()?;
                let mut reset = false;
                if let Some(entry) = &entry {
                    if let Some(until) = entry.leased_until {
                        return Ok(Err(Claim::Busy(until)));
                    }
                    let force = requester == Requester::Admin { force: true };
                    let settled = match entry.state {
                        State::Pending => false,
                        State::Delivered | State::Unknown => !force,
                        State::Refused => {
                            requester == Requester::Daemon && entry.refused_url.as_deref() == Some(url.as_str())
                        }
                        State::Expired => false,
                    };
                    if settled {
                        return Ok(Err(Claim::Settled(entry.clone())));
                    }
                    reset = entry.state != State::Pending && entry.state != State::Delivered;
                }
                tx.execute(
                    "INSERT INTO digests (team, first_day, last_day, webhook, state, lease_owner, lease_until)
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6)
                     ON CONFLICT (team, first_day, last_day, webhook) DO UPDATE SET
                         lease_owner = excluded.lease_owner, lease_until = excluded.lease_until,
                         state = CASE WHEN ?7 THEN 'pending' ELSE state END,
                         unanswered = CASE WHEN ?8 THEN 0 ELSE unanswered END",
                    params![
                        k.team,
                        day(k.span.first),
                        day(k.span.last),
                        k.webhook,
                        owner,
                        expiry(now),
                        reset,
                        requester == Requester::Admin { force: true }
                    ],
                )?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await?;
        Ok(match claimed {
            Err(claim) => claim,
            Ok(()) => Claim::Leased(Lease::new(self.clone(), key.clone(), token)),
        })
    }

    /// Marks a pending digest whose catch-up window closed, unless someone holds it.
    pub async fn expire(&self, key: &Key) -> Result<bool, LedgerError> {
        let key = key.clone();
        self.blocking(move |inner, connection| {
            let changed = connection.execute(
                "UPDATE digests SET state = 'expired'
                 WHERE team = ?1 AND first_day = ?2 AND last_day = ?3 AND webhook = ?4
                   AND state = 'pending' AND (lease_until IS NULL OR lease_until <= ?5)",
                params![
                    key.team,
                    day(key.span.first),
                    day(key.span.last),
                    key.webhook,
                    inner.clock.now().timestamp()
                ],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner, &mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let inner = self.inner.clone();
        // SQLite may wait on a lock or the disk: never on an async worker.
        tokio::task::spawn_blocking(move || inner.run(work))
            .await
            .unwrap_or_else(|e| Err(self.inner.fail(format!("a ledger task failed: {e}"))))
    }
}

impl Inner {
    fn fail(&self, problem: String) -> LedgerError {
        LedgerError {
            path: self.path.clone(),
            problem,
        }
    }

    fn run<T>(
        &self,
        work: impl FnOnce(&Inner, &mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(self, &mut connection).map_err(|e| match e {
            rusqlite::Error::ToSqlConversionFailure(inner) => self.fail(
                inner
                    .downcast::<LedgerError>()
                    .map(|e| e.problem)
                    .unwrap_or_else(|e| e.to_string()),
            ),
            e => self.fail(e.to_string()),
        })
    }

    fn check_identity(&self) -> Result<(), LedgerError> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => Ok(()),
            Ok(_) => Err(self.fail(
                "was replaced by another file while running; deliveries stop until the original is back (or restart to use the new one)".into(),
            )),
            Err(e) => Err(self.fail(format!(
                "has disappeared ({e}); deliveries stop until it is back"
            ))),
        }
    }
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
                loop {
                    tokio::time::sleep(lease_ttl() / 4).await;
                    let (k, t) = (key.clone(), token.clone());
                    let renewed = ledger
                        .blocking(move |inner, connection| {
                            connection.execute(
                                "UPDATE digests SET lease_until = ?6
                                 WHERE team = ?1 AND first_day = ?2 AND last_day = ?3 AND webhook = ?4 AND lease_owner = ?5",
                                params![k.team, day(k.span.first), day(k.span.last), k.webhook, t, expiry(inner.clock.now())],
                            )
                        })
                        .await;
                    match renewed {
                        Ok(1) => {}
                        Ok(_) => return,
                        Err(e) => {
                            tracing::warn!(team = %key.team, span = %key.span, webhook = %key.webhook, "could not renew the lease: {e}")
                        }
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

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Counts a POST as unanswered before it goes out; refuses when too many already went
    /// unanswered or the lease was lost.
    pub async fn before_post(&self) -> Result<Permit, LedgerError> {
        let (k, t) = (self.key.clone(), self.token.clone());
        self.ledger
            .blocking(move |inner, connection| {
                inner.check_identity().map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                let counted = connection.execute(
                    "UPDATE digests SET unanswered = unanswered + 1, lease_until = ?7
                     WHERE team = ?1 AND first_day = ?2 AND last_day = ?3 AND webhook = ?4
                       AND lease_owner = ?5 AND unanswered < ?6",
                    params![k.team, day(k.span.first), day(k.span.last), k.webhook, t, MAX_UNANSWERED, expiry(inner.clock.now())],
                )?;
                if counted == 1 {
                    return Ok(Permit::Go);
                }
                let ours: bool = connection.query_row(
                    "SELECT COUNT(*) FROM digests
                     WHERE team = ?1 AND first_day = ?2 AND last_day = ?3 AND webhook = ?4 AND lease_owner = ?5",
                    params![k.team, day(k.span.first), day(k.span.last), k.webhook, t],
                    |row| row.get(0),
                )?;
                Ok(if ours { Permit::Exhausted } else { Permit::Lost })
            })
            .await
    }

    /// How many POSTs of this digest went unanswered so far.
    pub async fn unanswered(&self) -> Result<u32, LedgerError> {
        Ok(self
            .ledger
            .entry(&self.key)
            .await?
            .map_or(0, |entry| entry.unanswered))
    }

    /// Records one POST's answer the moment it arrives. False when the lease was lost, so
    /// nothing was recorded.
    pub async fn answered(&self, answer: Answer<'_>) -> Result<bool, LedgerError> {
        let (state, error, refused_url, answered) = match answer {
            Answer::Delivered => (Some(State::Delivered), None, None, true),
            Answer::Refused { error, refused_url } => {
                (Some(State::Refused), Some(error), Some(refused_url), true)
            }
            Answer::NotDelivered(error) => (None, Some(error), None, true),
            Answer::Unknown(error) => (None, Some(error), None, false),
        };
        let (state, error, refused_url) = (
            state.map(State::as_str),
            error.map(str::to_owned),
            refused_url.map(str::to_owned),
        );
        let (k, t) = (self.key.clone(), self.token.clone());
        self.ledger
            .blocking(move |inner, connection| {
                let now = inner.clock.now();
                let changed = connection.execute(
                    "UPDATE digests SET
                         state = COALESCE(?6, state),
                         attempts = attempts + 1,
                         unanswered = CASE WHEN ?7 AND unanswered > 0 THEN unanswered - 1 ELSE unanswered END,
                         last_error = ?8,
                         refused_url = COALESCE(?9, refused_url),
                         delivered_at = CASE WHEN ?6 = 'delivered' THEN ?10 ELSE delivered_at END,
                         next_attempt = NULL
                     WHERE team = ?1 AND first_day = ?2 AND last_day = ?3 AND webhook = ?4 AND lease_owner = ?5",
                    params![k.team, day(k.span.first), day(k.span.last), k.webhook, t, state, answered, error, refused_url, now.timestamp()],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    /// Ends the lease: schedules the next attempt or gives up, and frees the digest.
    pub async fn finish(mut self, finish: Finish) -> Result<(), LedgerError> {
        self.ended = true;
        self.renewal.abort();
        let (next, give_up) = match finish {
            Finish::Settled => (None, None),
            Finish::RetryAt(at) => (Some(at.timestamp()), None),
            Finish::GiveUp(state) => (None, Some(state.as_str())),
        };
        let (k, t) = (self.key.clone(), self.token.clone());
        self.ledger
            .blocking(move |_, connection| {
                connection.execute(
                    "UPDATE digests SET next_attempt = ?6, state = COALESCE(?7, state),
                         lease_owner = NULL, lease_until = NULL
                     WHERE team = ?1 AND first_day = ?2 AND last_day = ?3 AND webhook = ?4 AND lease_owner = ?5",
                    params![k.team, day(k.span.first), day(k.span.last), k.webhook, t, next, give_up],
                )
            })
            .await
            .map(drop)
    }
}

impl Drop for Lease {
    /// A holder cancelled, aborted at shutdown or panicking frees the digest here; the
    /// unanswered count it left says whether a POST may have gone out.
    fn drop(&mut self) {
        self.renewal.abort();
        if self.ended {
            return;
        }
        let (inner, k, t) = (
            self.ledger.inner.clone(),
            self.key.clone(),
            self.token.clone(),
        );
        let release = move || {
            let released = inner.run(|_, connection| {
                connection.execute(
                    "UPDATE digests SET lease_owner = NULL, lease_until = NULL
                     WHERE team = ?1 AND first_day = ?2 AND last_day = ?3 AND webhook = ?4 AND lease_owner = ?5",
                    params![k.team, day(k.span.first), day(k.span.last), k.webhook, t],
                )
            });
            if let Err(e) = released {
                let ttl = lease_ttl();
                tracing::warn!("could not release a lease ({e}); it expires within {ttl:?}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(release)),
            Err(_) => release(),
        }
    }
}

/// The file's size, waiting a moment while it is empty: another process creating the ledger
/// right now has made the file and not yet written its header.
fn settled_size(path: &Path) -> Option<u64> {
    for _ in 0..50 {
        match std::fs::metadata(path) {
            Ok(meta) if meta.len() > 0 => return Some(meta.len()),
            Ok(_) => std::thread::sleep(Duration::from_millis(40)),
            Err(_) => return None,
        }
    }
    Some(0)
}

fn day(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

fn expiry(now: DateTime<Utc>) -> i64 {
    now.timestamp() + lease_ttl().as_secs() as i64
}

fn entry_of(row: &rusqlite::Row, at: usize, now: DateTime<Utc>) -> rusqlite::Result<Entry> {
    let time = |seconds: Option<i64>| seconds.and_then(|s| DateTime::from_timestamp(s, 0));
    let leased_until = time(row.get(at + 7)?).filter(|until| *until > now);
    Ok(Entry {
        state: State::parse(&row.get::<_, String>(at)?),
        attempts: row.get(at + 1)?,
        unanswered: row.get(at + 2)?,
        next_attempt: time(row.get(at + 3)?),
        last_error: row.get(at + 4)?,
        refused_url: row.get(at + 5)?,
        delivered_at: time(row.get(at + 6)?),
        leased_until,
    })
}

enum Migration {
    Sql(rusqlite::Error),
    NotALedger,
}

impl From<rusqlite::Error> for Migration {
    fn from(e: rusqlite::Error) -> Self {
        Migration::Sql(e)
    }
}

/// Creates the schema, or brings an older ledger up to it keeping its deliveries.
fn migrate(connection: &mut Connection, existed: bool) -> Result<(), Migration> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let has = |table: &str| -> rusqlite::Result<bool> {
        tx.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get(0),
        )
    };
    let old_deliveries = has("deliveries")?;
    if existed && !old_deliveries && !has("digests")? {
        let tables: i64 =
            tx.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))?;
        if tables > 0 {
            return Err(Migration::NotALedger);
        }
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS digests (
             team TEXT NOT NULL,
             first_day TEXT NOT NULL,
             last_day TEXT NOT NULL,
             webhook TEXT NOT NULL,
             state TEXT NOT NULL,
             attempts INTEGER NOT NULL DEFAULT 0,
             unanswered INTEGER NOT NULL DEFAULT 0,
             next_attempt INTEGER,
             last_error TEXT,
             refused_url TEXT,
             delivered_at INTEGER,
             lease_owner TEXT,
             lease_until INTEGER,
             PRIMARY KEY (team, first_day, last_day, webhook)
         );",
    )?;
    if old_deliveries {
        // Version 1 kept one row per delivered (team, date, webhook).
        tx.execute_batch(
            "INSERT OR IGNORE INTO digests (team, first_day, last_day, webhook, state, attempts, delivered_at)
                 SELECT team, date, date, webhook, 'delivered', 1, CAST(strftime('%s', delivered_at) AS INTEGER)
                 FROM deliveries;
             DROP TABLE deliveries;
             DROP TABLE IF EXISTS claims;",
        )?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::WallClock;

    fn key(webhook: &str) -> Key {
        Key::new("apac", Span::day("2021-03-18".parse().unwrap()), webhook)
    }

    fn open(path: &Path, clock: &Arc<WallClock>) -> Ledger {
        Ledger::open(path, clock.clone()).unwrap()
    }

    async fn lease(ledger: &Ledger, key: &Key, requester: Requester) -> Claim {
        ledger.lease(key, requester, "url-1").await.unwrap()
    }

    /// The lease once a dropped holder's release (on the blocking pool) has landed.
    async fn lease_after_release(ledger: &Ledger, key: &Key, requester: Requester) -> Claim {
        for _ in 0..100 {
            match ledger.lease(key, requester, "url-1").await.unwrap() {
                Claim::Busy(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                claim => return claim,
            }
        }
        panic!("the lease was never released")
    }

    #[tokio::test]
    async fn a_lease_keeps_others_off_until_released_and_a_dead_holders_expires() {
        let dir = tempfile::tempdir().unwrap();
        let clock = WallClock::new();
        let ours = open(&dir.path().join("l.db"), &clock);
        let theirs = open(&dir.path().join("l.db"), &clock);
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
        // Drop releases through the blocking pool.
        let Claim::Leased(held) = lease_after_release(&theirs, &slack, Requester::Daemon).await
        else {
            panic!("released on drop")
        };
        // Killed mid-POST: no Drop, no release, no pid to look at; only the expiry frees it.
        std::mem::forget(held);
        assert!(matches!(
            lease(&ours, &slack, Requester::Daemon).await,
            Claim::Busy(_)
        ));
        clock.jump(chrono::Duration::from_std(lease_ttl()).unwrap() + chrono::Duration::seconds(1));
        assert!(matches!(
            lease(&ours, &slack, Requester::Daemon).await,
            Claim::Leased(_)
        ));
    }

    #[tokio::test]
    async fn a_panicking_holder_releases_its_lease() {
        let dir = tempfile::tempdir().unwrap();
        let clock = WallClock::new();
        let ledger = open(&dir.path().join("l.db"), &clock);
        let slack = key("slack");
        let (l, k) = (ledger.clone(), slack.clone());
        let crashed = tokio::spawn(async move {
            let _lease = lease(&l, &k, Requester::Daemon).await;
            panic!("a bug mid-delivery");
        })
        .await;
        assert!(crashed.unwrap_err().is_panic());
        assert!(matches!(
            lease_after_release(&ledger, &slack, Requester::Daemon).await,
            Claim::Leased(_)
        ));
    }

    #[tokio::test]
    async fn an_expired_holder_records_nothing_over_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let clock = WallClock::new();
        let ledger = open(&dir.path().join("l.db"), &clock);
        let slack = key("slack");
        let Claim::Leased(stale) = lease(&ledger, &slack, Requester::Daemon).await else {
            panic!()
        };
        assert_eq!(stale.before_post().await.unwrap(), Permit::Go);
        clock.jump(chrono::Duration::from_std(lease_ttl() * 2).unwrap());
        let Claim::Leased(fresh) = lease(&ledger, &slack, Requester::Daemon).await else {
            panic!("the expired lease is taken over")
        };
        assert!(
            !stale
                .answered(Answer::Refused {
                    error: "late",
                    refused_url: "u"
                })
                .await
                .unwrap()
        );
        assert_eq!(stale.before_post().await.unwrap(), Permit::Lost);
        assert!(fresh.answered(Answer::Delivered).await.unwrap());
        fresh.finish(Finish::Settled).await.unwrap();
        stale.finish(Finish::GiveUp(State::Unknown)).await.unwrap();
        let entry = ledger.entry(&slack).await.unwrap().unwrap();
        assert_eq!(entry.state, State::Delivered);
        assert!(matches!(
            lease(&ledger, &slack, Requester::Daemon).await,
            Claim::Settled(_)
        ));
    }

    #[tokio::test]
    async fn at_most_two_posts_go_unanswered_whatever_asks() {
        let dir = tempfile::tempdir().unwrap();
        let clock = WallClock::new();
        let ledger = open(&dir.path().join("l.db"), &clock);
        let hook = key("generic");
        for round in 0..3 {
            let Claim::Leased(lease) = lease(&ledger, &hook, Requester::Daemon).await else {
                panic!("round {round}")
            };
            let permit = lease.before_post().await.unwrap();
            if round < 2 {
                assert_eq!(permit, Permit::Go, "round {round}");
                lease.answered(Answer::Unknown("timed out")).await.unwrap();
                lease.finish(Finish::RetryAt(clock.now())).await.unwrap();
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
        forced
            .answered(Answer::NotDelivered("HTTP 503"))
            .await
            .unwrap();
        assert_eq!(forced.unanswered().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_refusal_holds_for_the_daemon_until_the_url_changes_and_never_for_once() {
        let dir = tempfile::tempdir().unwrap();
        let clock = WallClock::new();
        let ledger = open(&dir.path().join("l.db"), &clock);
        let slack = key("slack");
        let Claim::Leased(l) = lease(&ledger, &slack, Requester::Daemon).await else {
            panic!()
        };
        l.before_post().await.unwrap();
        l.answered(Answer::Refused {
            error: "HTTP 404: no_service",
            refused_url: "url-1",
        })
        .await
        .unwrap();
        l.finish(Finish::Settled).await.unwrap();
        // A new process: still refused with the same URL.
        let reopened = open(&dir.path().join("l.db"), &clock);
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
        assert!(matches!(
            lease_after_release(&reopened, &slack, Requester::Admin { force: false }).await,
            Claim::Leased(_)
        ));
    }

    #[tokio::test]
    async fn spans_and_webhooks_key_entries_apart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = WallClock::new();
        let ledger = open(&dir.path().join("nested/l.db"), &clock);
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
        assert_eq!(ledger.entries("apac", day.span).await.unwrap().len(), 2);
        assert_ne!(day.webhook_id(), weekend.webhook_id());
        assert_eq!(day.webhook_id(), key("slack").webhook_id());
    }

    #[test]
    fn opening_a_new_ledger_is_safe_to_race() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("l.db");
            let openers: Vec<_> = (0..8)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || Ledger::open(&path, WallClock::new()).map(drop))
                })
                .collect();
            for opener in openers {
                opener
                    .join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
        }
    }

    #[tokio::test]
    async fn an_empty_damaged_or_foreign_ledger_is_refused_not_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let clock = WallClock::new();
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let err = Ledger::open(&empty, clock.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("empty") && err.contains("delete it"), "{err}");

        let good = dir.path().join("good.db");
        drop(open(&good, &clock));
        let bytes = std::fs::read(&good).unwrap();
        let truncated = dir.path().join("truncated.db");
        std::fs::write(&truncated, &bytes[..100]).unwrap();
        let err = Ledger::open(&truncated, clock.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("truncated.db"), "{err}");

        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE notes (x)")
            .unwrap();
        let err = Ledger::open(&foreign, clock.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not an acquire-digest ledger"), "{err}");
    }

    #[tokio::test]
    async fn a_ledger_deleted_or_replaced_under_a_running_process_stops_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let clock = WallClock::new();
        let path = dir.path().join("l.db");
        let ledger = open(&path, &clock);
        ledger.check_identity().unwrap();
        std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
        let err = ledger
            .lease(&key("slack"), Requester::Daemon, "u")
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("disappeared"), "{err}");
        drop(open(&path, &clock));
        let err = ledger.check_identity().unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
        std::fs::rename(dir.path().join("moved.db"), &path).unwrap();
        ledger.check_identity().unwrap();
    }

    #[test]
    fn a_version_1_ledger_keeps_its_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE deliveries (team TEXT, date TEXT, webhook TEXT, delivered_at TEXT, PRIMARY KEY (team, date, webhook));
                 INSERT INTO deliveries VALUES ('apac', '2021-03-18', 'slack', '2021-03-19T03:30:00+00:00');
                 CREATE TABLE claims (team TEXT);",
            )
            .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let ledger = Ledger::open(&path, WallClock::new()).unwrap();
        let entry = runtime
            .block_on(ledger.entry(&key("slack")))
            .unwrap()
            .unwrap();
        assert_eq!(entry.state, State::Delivered);
        assert_eq!(
            entry.delivered_at,
            Some("2021-03-19T03:30:00Z".parse().unwrap())
        );
    }
}
