//! The delivery ledger: which (team, date, webhook) digests were delivered. It, not the
//! scheduler, is the record of what ran, so a restart, a reload or a second `once` never posts
//! a delivered digest again.
//!
//! Before a POST, the webhook's day is claimed in a transaction, so a daemon and an admin's
//! `once` (or two `once`s) never post it both. A delivery is recorded right after its POST
//! succeeds, replacing the claim. A crash between the two leaves a claim whose process is gone
//! (or, where that can't be seen from here, that expires), after which the digest is sent
//! again: at most one duplicate, never a lost digest.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

#[derive(Debug, thiserror::Error)]
#[error("delivery ledger {path}: {source}")]
pub struct LedgerError {
    path: PathBuf,
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// A handle to the ledger; clones share one connection.
#[derive(Clone)]
pub struct Ledger {
    path: PathBuf,
    owner: Owner,
    connection: Arc<Mutex<Connection>>,
}

/// Who holds a claim. The token says whether it is ours: pids can't, since two containers
/// sharing the ledger are both pid 1. The pid says whether the holder still runs, but only
/// where it means the same process: the same boot and pid namespace (`place`).
#[derive(Clone)]
struct Owner {
    token: String,
    pid: u32,
    place: String,
}

impl Owner {
    /// One identity for the whole process, so a ledger reopened on reload still knows the
    /// claims this process left as its own.
    fn this_process() -> Owner {
        static OWNER: std::sync::OnceLock<Owner> = std::sync::OnceLock::new();
        OWNER.get_or_init(Owner::new).clone()
    }

    fn new() -> Owner {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let namespace = std::fs::read_link("/proc/self/ns/pid")
            .map(|link| link.display().to_string())
            .unwrap_or_default();
        let boot = read("/proc/sys/kernel/random/boot_id");
        let place = if boot.is_empty() || namespace.is_empty() {
            String::new()
        } else {
            format!("{} {namespace}", boot.trim())
        };
        Owner {
            token: format!("{:016x}", fastrand::u64(..)),
            pid: std::process::id(),
            place,
        }
    }
}

impl Ledger {
    /// Opens the ledger, creating it (and its folder) on first use.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| LedgerError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(Box::new(e)))?;
        }
        let connection = Connection::open(path).map_err(|e| fail(Box::new(e)))?;
        // WAL and a busy timeout let `once` and a running daemon share the file. NORMAL
        // syncs at checkpoints, not at every commit: a commit survives the process dying, and
        // only a power loss can undo the last ones, which costs a duplicate post, never a lost
        // digest; an fsync per commit would stall the async workers on a slow disk.
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA busy_timeout = 5000;
                 CREATE TABLE IF NOT EXISTS deliveries (
                     team TEXT NOT NULL,
                     date TEXT NOT NULL,
                     webhook TEXT NOT NULL,
                     delivered_at TEXT NOT NULL,
                     PRIMARY KEY (team, date, webhook)
                 );
                 CREATE TABLE IF NOT EXISTS claims (
                     team TEXT NOT NULL,
                     date TEXT NOT NULL,
                     webhook TEXT NOT NULL,
                     claimed_at INTEGER NOT NULL,
                     token TEXT NOT NULL,
                     pid INTEGER NOT NULL,
                     place TEXT NOT NULL,
                     PRIMARY KEY (team, date, webhook)
                 );",
            )
            .map_err(|e| fail(Box::new(e)))?;
        Ok(Ledger {
            path: path.to_owned(),
            owner: Owner::this_process(),
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    fn fail(&self, e: rusqlite::Error) -> LedgerError {
        LedgerError {
            path: self.path.clone(),
            source: Box::new(e),
        }
    }

    /// The webhooks of a team's day that were delivered.
    pub fn delivered(&self, team: &str, date: NaiveDate) -> Result<HashSet<String>, LedgerError> {
        let connection = self.connection.lock().expect("ledger lock");
        let mut statement = connection
            .prepare_cached("SELECT webhook FROM deliveries WHERE team = ?1 AND date = ?2")
            .map_err(|e| self.fail(e))?;
        let rows = statement
            .query_map(params![team, date.to_string()], |row| row.get(0))
            .map_err(|e| self.fail(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.fail(e))
    }

    /// Claims a webhook's day for one POST, unless it was delivered (and `resend` is false) or
    /// another process holds it: one that still runs, where that can be seen, or else one that
    /// claimed it less than `expiry` ago.
    pub fn claim(
        &self,
        (team, date, webhook): (&str, NaiveDate, &str),
        resend: bool,
        expiry: Duration,
    ) -> Result<Claim, LedgerError> {
        let mut connection = self.connection.lock().expect("ledger lock");
        let mut claim = || -> rusqlite::Result<Claim> {
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let key = params![team, date.to_string(), webhook];
            let delivered = tx
                .query_row(
                    "SELECT 1 FROM deliveries WHERE team = ?1 AND date = ?2 AND webhook = ?3",
                    key,
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if delivered && !resend {
                return Ok(Claim::AlreadyDelivered);
            }
            let now = Utc::now().timestamp();
            let holder: Option<(i64, String, u32, String)> = tx
                .query_row(
                    "SELECT claimed_at, token, pid, place FROM claims
                     WHERE team = ?1 AND date = ?2 AND webhook = ?3",
                    key,
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )
                .optional()?;
            let held = holder.is_some_and(|(at, token, pid, place)| {
                let ours = &self.owner;
                let visible = !place.is_empty() && place == ours.place;
                token != ours.token
                    && if visible {
                        is_running(pid)
                    } else {
                        now - at < expiry.as_secs() as i64
                    }
            });
            if held {
                return Ok(Claim::HeldElsewhere);
            }
            tx.execute(
                "INSERT OR REPLACE INTO claims (team, date, webhook, claimed_at, token, pid, place)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    team,
                    date.to_string(),
                    webhook,
                    now,
                    self.owner.token,
                    self.owner.pid,
                    self.owner.place
                ],
            )?;
            tx.commit()?;
            Ok(Claim::Claimed)
        };
        claim().map_err(|e| self.fail(e))
    }

    /// Gives our claim back after a failed POST, so the next try may post. A claim another
    /// process has taken over since is theirs and stays.
    pub fn release(&self, team: &str, date: NaiveDate, webhook: &str) -> Result<(), LedgerError> {
        let connection = self.connection.lock().expect("ledger lock");
        connection
            .execute(
                "DELETE FROM claims WHERE team = ?1 AND date = ?2 AND webhook = ?3 AND token = ?4",
                params![team, date.to_string(), webhook, self.owner.token],
            )
            .map(drop)
            .map_err(|e| self.fail(e))
    }

    /// Records a delivery and drops its claim, in one transaction.
    pub fn record(&self, team: &str, date: NaiveDate, webhook: &str) -> Result<(), LedgerError> {
        let mut connection = self.connection.lock().expect("ledger lock");
        let mut record = || -> rusqlite::Result<()> {
            let tx = connection.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO deliveries (team, date, webhook, delivered_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![team, date.to_string(), webhook, Utc::now().to_rfc3339()],
            )?;
            tx.execute(
                "DELETE FROM claims WHERE team = ?1 AND date = ?2 AND webhook = ?3 AND token = ?4",
                params![team, date.to_string(), webhook, self.owner.token],
            )?;
            tx.commit()
        };
        record().map_err(|e| self.fail(e))
    }

    /// When a webhook got a day's digest, if it did.
    pub fn delivered_at(
        &self,
        team: &str,
        date: NaiveDate,
        webhook: &str,
    ) -> Result<Option<String>, LedgerError> {
        let connection = self.connection.lock().expect("ledger lock");
        connection
            .query_row(
                "SELECT delivered_at FROM deliveries WHERE team = ?1 AND date = ?2 AND webhook = ?3",
                params![team, date.to_string(), webhook],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.fail(e))
    }
}

/// Whether a process runs: signal 0 checks without signalling, and EPERM means it runs as
/// another user (which /proc may hide, with hidepid).
fn is_running(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let status = unsafe { libc::kill(pid, 0) };
    status == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// What [`Ledger::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This process may post it now.
    Claimed,
    AlreadyDelivered,
    /// Another process is posting it.
    HeldElsewhere,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_keeps_others_off_until_it_is_released_recorded_or_its_holder_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let day: NaiveDate = "2021-03-18".parse().unwrap();
        let key = ("apac", day, "slack");
        let minute = Duration::from_secs(60);
        // Another process in the same place: init, which always runs.
        let ours = Ledger::open(&path).unwrap();
        let mut theirs = Ledger::open(&path).unwrap();
        theirs.owner = Owner {
            pid: 1,
            ..Owner::new()
        };
        assert_eq!(ours.claim(key, false, minute).unwrap(), Claim::Claimed);
        // Reopened (a daemon's reload), this process still owns what it claimed.
        let reopened = Ledger::open(&path).unwrap();
        assert_eq!(reopened.claim(key, false, minute).unwrap(), Claim::Claimed);
        // Our own claim never blocks us (a try whose release failed).
        assert_eq!(ours.claim(key, false, minute).unwrap(), Claim::Claimed);
        assert_eq!(
            theirs.claim(key, false, minute).unwrap(),
            Claim::HeldElsewhere
        );
        assert_eq!(
            theirs.claim(key, true, minute).unwrap(),
            Claim::HeldElsewhere
        );
        // A live holder in view keeps its claim however old it is.
        assert_eq!(
            theirs.claim(key, false, Duration::ZERO).unwrap(),
            Claim::HeldElsewhere
        );

        // Releasing never drops another's claim.
        theirs.release("apac", day, "slack").unwrap();
        assert_eq!(
            theirs.claim(key, false, minute).unwrap(),
            Claim::HeldElsewhere
        );
        ours.record("apac", day, "slack").unwrap();
        assert_eq!(
            theirs.claim(key, false, minute).unwrap(),
            Claim::AlreadyDelivered
        );
        assert_eq!(theirs.claim(key, true, minute).unwrap(), Claim::Claimed);
    }

    #[test]
    fn a_dead_holder_frees_its_claim_at_once_and_an_unseen_one_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let key = ("apac", "2021-03-18".parse().unwrap(), "slack");
        let minute = Duration::from_secs(60);
        let ours = Ledger::open(&path).unwrap();

        // Killed mid-POST: a process that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let mut dead = Ledger::open(&path).unwrap();
        dead.owner = Owner {
            pid: child.id(),
            ..Owner::new()
        };
        child.wait().unwrap();
        assert_eq!(dead.claim(key, false, minute).unwrap(), Claim::Claimed);
        assert_eq!(ours.claim(key, false, minute).unwrap(), Claim::Claimed);

        // Another container (both pid 1, other namespaces): only time tells.
        let mut elsewhere = Ledger::open(&path).unwrap();
        elsewhere.owner = Owner {
            pid: 1,
            place: "another boot or pid namespace".into(),
            ..Owner::new()
        };
        assert_eq!(
            elsewhere.claim(key, false, minute).unwrap(),
            Claim::HeldElsewhere
        );
        assert_eq!(
            elsewhere.claim(key, false, Duration::ZERO).unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            ours.claim(key, false, minute).unwrap(),
            Claim::HeldElsewhere
        );
    }

    #[test]
    fn deliveries_survive_reopening_and_are_keyed_by_team_date_and_webhook() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/ledger.db");
        let day: NaiveDate = "2021-03-18".parse().unwrap();
        {
            let ledger = Ledger::open(&path).unwrap();
            ledger.record("apac", day, "slack").unwrap();
            ledger.record("apac", day, "slack").unwrap();
        }
        let ledger = Ledger::open(&path).unwrap();
        let delivered = ledger.delivered("apac", day).unwrap();
        assert_eq!(delivered, HashSet::from(["slack".to_owned()]));
        assert!(ledger.delivered("emea", day).unwrap().is_empty());
        assert!(
            ledger
                .delivered("apac", day.succ_opt().unwrap())
                .unwrap()
                .is_empty()
        );
        assert!(ledger.delivered_at("apac", day, "slack").unwrap().is_some());
        assert!(
            ledger
                .delivered_at("apac", day, "generic")
                .unwrap()
                .is_none()
        );
    }
}
