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
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params_from_iter};

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

    /// A state this version doesn't know is an error, never "pending": read as pending, a
    /// digest someone marked otherwise would be sent again.
    fn parse(text: &str) -> Option<State> {
        [
            State::Pending,
            State::Delivered,
            State::Refused,
            State::Unknown,
            State::Expired,
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
const COLUMNS: &str = "team, first_day, last_day, webhook, state, attempts, unanswered, \
    next_attempt, last_error, refused_url, delivered_at, lease_until";
/// One (team, span, webhook): parameters ?1 to ?4.
const KEY: &str = "team = ?1 AND first_day = ?2 AND last_day = ?3 AND webhook = ?4";

impl Ledger {
    /// Opens the ledger, creating it (and its folder) on first use. A file that exists but is
    /// empty, damaged or not a ledger is refused: starting afresh would re-send every digest
    /// within the catch-up window, so only deleting the file asks for that.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Ledger, LedgerError> {
        let fail = |problem: String| LedgerError {
            path: path.to_owned(),
            problem,
        };
        let afresh = "restore it from a backup, or delete it to start a fresh ledger (digests within catch_up may then be sent again)";
        let existed = match settled_size(path) {
            Some(0) => {
                return Err(fail(format!(
                    "the file exists but is empty, so it holds no record of what was delivered; {afresh}"
                )));
            }
            size => size.is_some(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create its folder: {e}")))?;
        }
        let damaged = |e: rusqlite::Error| fail(format!("cannot be read ({e}); {afresh}"));
        let mut connection = Connection::open(path).map_err(damaged)?;
        // The busy timeout first: switching to WAL takes a lock, and two processes opening a
        // new ledger at once must wait for each other, not fail with "database is locked".
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(damaged)?;
        // NORMAL syncs at checkpoints: a killed process loses no commit; a power loss can undo
        // the last few, which costs a duplicate post, never a lost digest.
        switch_to_wal(&connection).map_err(damaged)?;
        if existed {
            let check: String = connection
                .query_row("PRAGMA quick_check", [], |row| row.get(0))
                .map_err(damaged)?;
            if check != "ok" {
                return Err(fail(format!("is damaged ({check}); {afresh}")));
            }
        }
        migrate(&mut connection, existed).map_err(|e| match e {
            Migration::Sql(e) => damaged(e),
            Migration::NotALedger => fail(
                "is not an acquire-digest ledger (it has none of its tables); check [state] path, or delete the file to start a fresh ledger".into(),
            ),
        })?;
        // The WAL is found by path: should the file be swapped and restored under a running
        // process, what sits only in the WAL is lost with it, so the schema goes to the file.
        connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(damaged)?;
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

    /// Every entry whose span ends on `since` or later: all the reconciler looks at in one
    /// pass, in one query. Fails while the file is not the one opened.
    pub async fn recent(&self, since: NaiveDate) -> Result<Entries, LedgerError> {
        self.blocking(true, move |inner, connection| {
            let now = inner.clock.now();
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM digests WHERE last_day >= ?1"
            ))?;
            let mut entries = Entries::new();
            let mut rows = statement.query([day(since)])?;
            while let Some(row) = rows.next()? {
                let (key, entry) = key_and_entry(row, now)?;
                entries
                    .entry((key.team, key.span))
                    .or_default()
                    .insert(key.webhook, entry);
            }
            Ok(entries)
        })
        .await
    }

    /// One webhook's entry, if it has one.
    pub async fn entry(&self, key: &Key) -> Result<Option<Entry>, LedgerError> {
        let values = key.values();
        self.blocking(false, move |inner, connection| {
            let now = inner.clock.now();
            connection
                .query_row(
                    &format!("SELECT {COLUMNS} FROM digests WHERE {KEY}"),
                    params_from_iter(values),
                    |row| key_and_entry(row, now).map(|(_, entry)| entry),
                )
                .optional()
        })
        .await
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
        let (values, url, owner) = (key.values(), url.to_owned(), token.clone());
        let force = requester == Requester::Admin { force: true };
        let claimed = self
            .blocking(true, move |inner, connection| {
                let now = inner.clock.now();
                let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let entry = tx
                    .query_row(
                        &format!("SELECT {COLUMNS} FROM digests WHERE {KEY}"),
                        params_from_iter(&values),
                        |row| key_and_entry(row, now).map(|(_, entry)| entry),
                    )
                    .optional()?;
                let mut reset = false;
                if let Some(entry) = entry {
                    if let Some(until) = entry.leased_until {
                        return Ok(Err(Claim::Busy(until)));
                    }
                    let settled = match entry.state {
                        State::Pending | State::Expired => false,
                        State::Delivered | State::Unknown => !force,
                        State::Refused => {
                            requester == Requester::Daemon
                                && entry.refused_url.as_deref() == Some(url.as_str())
                        }
                    };
                    if settled {
                        return Ok(Err(Claim::Settled(entry)));
                    }
                    reset = matches!(entry.state, State::Refused | State::Unknown | State::Expired);
                }
                let mut params = values;
                params.extend([owner.into(), expiry(now).into(), reset.into(), force.into()]);
                tx.execute(
                    "INSERT INTO digests (team, first_day, last_day, webhook, state, lease_owner, lease_until)
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6)
                     ON CONFLICT (team, first_day, last_day, webhook) DO UPDATE SET
                         lease_owner = ?5, lease_until = ?6,
                         state = CASE WHEN ?7 THEN 'pending' ELSE state END,
                         unanswered = CASE WHEN ?8 THEN 0 ELSE unanswered END",
                    params_from_iter(params),
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
        let mut values = key.values();
        self.blocking(false, move |inner, connection| {
            values.push(inner.clock.now().timestamp().into());
            let changed = connection.execute(
                &format!(
                    "UPDATE digests SET state = 'expired' WHERE {KEY}
                     AND state = 'pending' AND (lease_until IS NULL OR lease_until <= ?5)"
                ),
                params_from_iter(values),
            )?;
            Ok(changed == 1)
        })
        .await
    }

    /// Runs ledger work on the blocking pool: SQLite may wait on a lock or the disk, never on
    /// an async worker. `guarded` work first checks the file is still the one opened.
    async fn blocking<T: Send + 'static>(
        &self,
        guarded: bool,
        work: impl FnOnce(&Inner, &mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            if guarded {
                inner.check_identity()?;
            }
            inner.run(work)
        })
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
        work(self, &mut connection).map_err(|e| self.fail(e.to_string()))
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

    /// A write by a lease holder: `UPDATE digests SET {set}` on its key, only while its token
    /// still holds the lease (?5); `extra` binds ?6 on. `set` may end with `WHERE <condition>`
    /// to add one. The number of rows changed (0 or 1).
    fn fenced(
        &self,
        key: &Key,
        token: &str,
        set: &str,
        extra: Vec<Value>,
    ) -> Result<usize, LedgerError> {
        let (set, condition) = set.split_once(" WHERE ").unwrap_or((set, "1"));
        let mut params = key.values();
        params.push(token.to_owned().into());
        params.extend(extra);
        self.run(|_, connection| {
            connection.execute(
                &format!(
                    "UPDATE digests SET {set} WHERE {KEY} AND lease_owner = ?5 AND {condition}"
                ),
                params_from_iter(params),
            )
        })
    }
}

/// [`Inner::fenced`] on the blocking pool, with `extra` made from the ledger's clock; `guarded`
/// first checks the file is still the one opened.
async fn write_fenced(
    inner: Arc<Inner>,
    (key, token): (Key, String),
    guarded: bool,
    set: &'static str,
    extra: impl FnOnce(DateTime<Utc>) -> Vec<Value> + Send + 'static,
) -> Result<usize, LedgerError> {
    let failed = inner.clone();
    tokio::task::spawn_blocking(move || {
        if guarded {
            inner.check_identity()?;
        }
        inner.fenced(&key, &token, set, extra(inner.clock.now()))
    })
    .await
    .unwrap_or_else(|e| Err(failed.fail(format!("a ledger task failed: {e}"))))
}

impl Key {
    /// ?1 to ?4 of [`KEY`].
    fn values(&self) -> Vec<Value> {
        vec![
            self.team.clone().into(),
            day(self.span.first).into(),
            day(self.span.last).into(),
            self.webhook.clone().into(),
        ]
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
                // On the clock the expiry is judged by, so a clock that jumps renews too.
                let clock = ledger.inner.clock.clone();
                let every = chrono::Duration::from_std(lease_ttl() / 4).unwrap_or_default();
                loop {
                    clock.sleep_until(clock.now() + every).await;
                    let holder = (key.clone(), token.clone());
                    let set = "lease_until = ?6";
                    let renewed = write_fenced(ledger.inner.clone(), holder, false, set, |now| {
                        vec![expiry(now).into()]
                    })
                    .await;
                    match renewed {
                        Ok(1) => {}
                        Ok(_) => return,
                        Err(e) => {
                            tracing::warn!(team = %key.team, date = %key.span, webhook = %key.webhook, "could not renew the lease: {e}")
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

    /// What a kill -9 leaves: the lease stays in the ledger, unrenewed, until it expires.
    #[cfg(test)]
    fn abandon(mut self) {
        self.renewal.abort();
        self.ended = true;
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    async fn write(
        &self,
        guarded: bool,
        set: &'static str,
        extra: impl FnOnce(DateTime<Utc>) -> Vec<Value> + Send + 'static,
    ) -> Result<usize, LedgerError> {
        let holder = (self.key.clone(), self.token.clone());
        write_fenced(self.ledger.inner.clone(), holder, guarded, set, extra).await
    }

    /// Counts a POST as unanswered before it goes out (renewing the lease); refuses when too
    /// many already went unanswered or the lease was lost.
    pub async fn before_post(&self) -> Result<Permit, LedgerError> {
        let set = "unanswered = unanswered + 1, lease_until = ?6 WHERE unanswered < ?7";
        let extra = |now| vec![expiry(now).into(), MAX_UNANSWERED.into()];
        if self.write(true, set, extra).await? == 1 {
            return Ok(Permit::Go);
        }
        // A write that changes nothing tells whether the lease is still ours.
        let ours = self
            .write(false, "lease_until = lease_until", |_| vec![])
            .await?
            == 1;
        Ok(if ours {
            Permit::Exhausted
        } else {
            Permit::Lost
        })
    }

    /// Records one POST's answer the moment it arrives. Returns how many POSTs of this digest
    /// are now unanswered, or None when the lease was lost and nothing was recorded.
    pub async fn answered(&self, answer: Answer<'_>) -> Result<Option<u32>, LedgerError> {
        let (state, error, refused_url, answered) = match answer {
            Answer::Delivered => (Some(State::Delivered), None, None, true),
            Answer::Refused { error, refused_url } => {
                (Some(State::Refused), Some(error), Some(refused_url), true)
            }
            Answer::NotDelivered(error) => (None, Some(error), None, true),
            Answer::Unknown(error) => (None, Some(error), None, false),
        };
        let values: Vec<Value> = vec![
            state.map(|s| s.as_str().to_owned()).into(),
            answered.into(),
            error.map(str::to_owned).into(),
            refused_url.map(str::to_owned).into(),
        ];
        let (inner, key, token) = (
            self.ledger.inner.clone(),
            self.key.clone(),
            self.token.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut params = key.values();
            params.push(token.into());
            params.extend(values);
            params.push(inner.clock.now().timestamp().into());
            inner.run(|_, connection| {
                connection
                    .query_row(
                        &format!(
                            "UPDATE digests SET
                                 state = COALESCE(?6, state),
                                 attempts = attempts + 1,
                                 unanswered = MAX(unanswered - ?7, 0),
                                 last_error = ?8,
                                 refused_url = COALESCE(?9, refused_url),
                                 delivered_at = CASE WHEN ?6 = 'delivered' THEN ?10 ELSE delivered_at END,
                                 next_attempt = NULL
                             WHERE {KEY} AND lease_owner = ?5
                             RETURNING unanswered"
                        ),
                        params_from_iter(params),
                        |row| row.get(0),
                    )
                    .optional()
            })
        })
        .await
        .unwrap_or_else(|e| Err(self.ledger.inner.fail(format!("a ledger task failed: {e}"))))
    }

    /// Ends the lease: schedules the next attempt or gives up, and frees the digest.
    pub async fn finish(mut self, finish: Finish) -> Result<(), LedgerError> {
        self.ended = true;
        self.renewal.abort();
        let (next, give_up): (Option<i64>, Option<&str>) = match finish {
            Finish::Settled => (None, None),
            Finish::RetryAt(at) => (Some(at.timestamp()), None),
            Finish::GiveUp(state) => (None, Some(state.as_str())),
        };
        let give_up = give_up.map(str::to_owned);
        self.write(
            false,
            "next_attempt = ?6, state = COALESCE(?7, state), lease_owner = NULL, lease_until = NULL",
            move |_| vec![next.into(), give_up.into()],
        )
        .await
        .map(drop)
    }
}

impl Drop for Lease {
    /// A holder cancelled, aborted at shutdown or panicking frees the digest here; the
    /// unanswered count it left says whether a POST may have gone out. Synchronously, the one
    /// ledger write that may hold up a worker: released later on the blocking pool, it could
    /// be dropped unrun when the runtime shuts down, and the digest would wait out the lease.
    fn drop(&mut self) {
        self.renewal.abort();
        if self.ended {
            return;
        }
        let set = "lease_owner = NULL, lease_until = NULL";
        if let Err(e) = self
            .ledger
            .inner
            .fenced(&self.key, &self.token, set, vec![])
        {
            let ttl = lease_ttl();
            tracing::warn!("could not release a lease ({e}); it expires within {ttl:?}");
        }
    }
}

/// WAL with NORMAL syncing. Switching the journal mode while another process creates the same
/// ledger can answer "database is locked" without waiting in the busy handler, so the switch
/// waits here, within the same ten seconds.
fn switch_to_wal(connection: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;") {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            done => return done,
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

/// A row of [`COLUMNS`]. A lease that has expired reads as no lease.
fn key_and_entry(row: &rusqlite::Row, now: DateTime<Utc>) -> rusqlite::Result<(Key, Entry)> {
    let date = |i: usize| -> rusqlite::Result<NaiveDate> {
        let text: String = row.get(i)?;
        text.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    let time = |i: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
        Ok(row
            .get::<_, Option<i64>>(i)?
            .and_then(|s| DateTime::from_timestamp(s, 0)))
    };
    let key = Key {
        team: row.get(0)?,
        span: Span {
            first: date(1)?,
            last: date(2)?,
        },
        webhook: row.get(3)?,
    };
    let entry = Entry {
        state: State::parse(&row.get::<_, String>(4)?).ok_or_else(|| {
            let problem = "not a digest state".into();
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, problem)
        })?,
        attempts: row.get(5)?,
        unanswered: row.get(6)?,
        next_attempt: time(7)?,
        last_error: row.get(8)?,
        refused_url: row.get(9)?,
        delivered_at: time(10)?,
        leased_until: time(11)?.filter(|until| *until > now),
    };
    Ok((key, entry))
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
        let Claim::Leased(held) = lease(&theirs, &slack, Requester::Daemon).await else {
            panic!("released on drop")
        };
        // Killed mid-POST: no Drop, no release, no pid to look at; only the expiry frees it.
        held.abandon();
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
    async fn a_live_holder_keeps_its_lease_however_far_the_clock_moves() {
        let dir = tempfile::tempdir().unwrap();
        let clock = WallClock::new();
        let ours = open(&dir.path().join("l.db"), &clock);
        let slack = key("slack");
        let Claim::Leased(_held) = lease(&ours, &slack, Requester::Daemon).await else {
            panic!()
        };
        // Short of the lease by more than the second its stored expiry is rounded to; three
        // such jumps outlast it unless it is renewed.
        let almost =
            chrono::Duration::from_std(lease_ttl()).unwrap() - chrono::Duration::seconds(3);
        for _ in 0..3 {
            clock.jump(almost);
            // The renewal wakes on the jump and writes a new expiry.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(matches!(
                lease(&ours, &slack, Requester::Daemon).await,
                Claim::Busy(_)
            ));
        }
    }

    #[tokio::test]
    async fn a_state_this_version_does_not_know_is_an_error_not_pending() {
        let dir = tempfile::tempdir().unwrap();
        let clock = WallClock::new();
        let path = dir.path().join("l.db");
        let ledger = open(&path, &clock);
        let Claim::Leased(l) = lease(&ledger, &key("slack"), Requester::Daemon).await else {
            panic!()
        };
        l.finish(Finish::Settled).await.unwrap();
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE digests SET state = 'done'", [])
            .unwrap();
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
            lease(&ledger, &slack, Requester::Daemon).await,
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
        let late = Answer::Refused {
            error: "late",
            refused_url: "u",
        };
        assert_eq!(stale.answered(late).await.unwrap(), None, "fenced off");
        assert_eq!(stale.before_post().await.unwrap(), Permit::Lost);
        assert!(fresh.answered(Answer::Delivered).await.unwrap().is_some());
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
        let answered = forced.answered(Answer::NotDelivered("HTTP 503")).await;
        assert_eq!(answered.unwrap(), Some(0));
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
            lease(&reopened, &slack, Requester::Admin { force: false }).await,
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
        let recent = ledger.recent(day.span.first).await.unwrap();
        assert_eq!(recent[&("apac".to_owned(), day.span)].len(), 2);
        assert_eq!(recent[&("apac".to_owned(), weekend.span)].len(), 1);
        assert_ne!(day.webhook_id(), weekend.webhook_id());
        assert_eq!(day.webhook_id(), key("slack").webhook_id());
    }

    #[test]
    fn opening_a_new_ledger_is_safe_to_race() {
        for round in 0..20 {
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
        let since: NaiveDate = "2021-01-01".parse().unwrap();
        ledger.recent(since).await.unwrap();
        std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
        let err = ledger
            .lease(&key("slack"), Requester::Daemon, "u")
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("disappeared"), "{err}");
        drop(open(&path, &clock));
        let err = ledger.recent(since).await.unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
        std::fs::rename(dir.path().join("moved.db"), &path).unwrap();
        ledger.recent(since).await.unwrap();
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
