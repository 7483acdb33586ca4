//! The ledger in a SQLite file: the default, for one host (WAL needs one host; a network
//! filesystem corrupts it). Leases are judged by this process's clock.
//!
//! The file is guarded as the record of what was sent: one that exists but is empty, damaged
//! or not a ledger is refused rather than started afresh (that would re-send every digest
//! within the catch-up window), and one deleted or replaced under a running process stops
//! deliveries until it is back.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params_from_iter};

use super::{Key, Reach, Record, Row, day};

const SCHEMA_VERSION: i64 = 3;
/// One (team, span, webhook): parameters ?1 to ?4.
const KEY: &str = "team = ?1 AND first_day = ?2 AND last_day = ?3 AND webhook = ?4";
const COLUMNS: &str = "team, first_day, last_day, webhook, state, attempts, unanswered, \
    next_attempt, last_error, refused_url, delivered_at, lease_owner, lease_until";

pub(super) struct Sqlite {
    path: PathBuf,
    /// The file's device and inode when opened.
    identity: (u64, u64),
    connection: Mutex<Connection>,
}

impl Sqlite {
    pub(super) fn open(path: &Path) -> Result<Sqlite, String> {
        let afresh = "restore it from a backup, or delete it to start a fresh ledger (digests within catch_up may then be sent again)";
        let existed = match settled_size(path) {
            Some(0) => {
                return Err(format!(
                    "the file exists but is empty, so it holds no record of what was delivered; {afresh}"
                ));
            }
            size => size.is_some(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create its folder: {e}"))?;
        }
        let damaged = |e: rusqlite::Error| format!("cannot be read ({e}); {afresh}");
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
                return Err(format!("is damaged ({check}); {afresh}"));
            }
        }
        migrate(&mut connection, existed).map_err(|e| match e {
            Migration::Sql(e) => damaged(e),
            Migration::NotALedger => "is not an acquire-digest ledger (it has none of its tables); check [state] path, or delete the file to start a fresh ledger".into(),
        })?;
        // The WAL is found by path: should the file be swapped and restored under a running
        // process, what sits only in the WAL is lost with it, so the schema goes to the file.
        connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(damaged)?;
        let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
        Ok(Sqlite {
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
            connection: Mutex::new(connection),
        })
    }

    /// Runs `work` on the connection; `guarded` work first checks the file is still the one
    /// opened, so nothing new goes out while the record of what went out is missing.
    fn run<T>(
        &self,
        guarded: bool,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, String> {
        if guarded {
            match std::fs::metadata(&self.path) {
                Ok(meta) if (meta.dev(), meta.ino()) == self.identity => {}
                Ok(_) => return Err(
                    "was replaced by another file while running; deliveries stop until the original is back (or restart to use the new one)".into(),
                ),
                Err(e) => {
                    return Err(format!(
                        "has disappeared ({e}); deliveries stop until it is back"
                    ));
                }
            }
        }
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut connection).map_err(|e| e.to_string())
    }

    pub(super) fn recent(&self, since: NaiveDate, now: DateTime<Utc>) -> Result<Vec<Row>, String> {
        self.run(true, |connection| {
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM digests WHERE last_day >= ?1"
            ))?;
            statement.query_map([day(since)], row(now))?.collect()
        })
    }

    /// Runs one of the ledger's changes (see [`Reach`]) on a row, holding the database's write
    /// lock from reading it to writing it back.
    pub(super) fn update<T>(
        &self,
        key: &Key,
        reach: Reach,
        now: DateTime<Utc>,
        change: impl FnOnce(Option<Record>, DateTime<Utc>) -> (Option<Record>, T),
    ) -> Result<T, String> {
        self.run(reach != Reach::Record, |connection| {
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM digests WHERE {KEY}"),
                    params_from_iter(values(key)),
                    row(now),
                )
                .optional()?;
            let record = match found.map(Row::parse).transpose() {
                Ok(found) => found.map(|(_, record)| record),
                Err(problem) => return Ok(Err(problem)),
            };
            let (write, answer) = change(record, now);
            if let Some(Record { entry, owner }) = write {
                let seconds = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp());
                let mut params = values(key);
                params.extend([
                    entry.state.as_str().to_owned().into(),
                    entry.attempts.into(),
                    entry.unanswered.into(),
                    seconds(entry.next_attempt).into(),
                    entry.last_error.into(),
                    entry.refused_url.into(),
                    seconds(entry.delivered_at).into(),
                    owner.into(),
                    seconds(entry.leased_until).into(),
                ]);
                tx.execute(
                    &format!(
                        "INSERT INTO digests ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                         ON CONFLICT (team, first_day, last_day, webhook) DO UPDATE SET
                             state = ?5, attempts = ?6, unanswered = ?7, next_attempt = ?8,
                             last_error = ?9, refused_url = ?10, delivered_at = ?11,
                             lease_owner = ?12, lease_until = ?13"
                    ),
                    params_from_iter(params),
                )?;
            }
            tx.commit()?;
            Ok(Ok(answer))
        })?
    }
}

impl Sqlite {
    pub(super) fn recalled(&self, window: &[String; 4]) -> Result<Option<String>, String> {
        self.run(false, |connection| {
            connection
                .query_row(
                    "SELECT report FROM history WHERE account = ?1 AND window_start = ?2
                     AND window_end = ?3 AND utc_offset = ?4",
                    params_from_iter(window),
                    |row| row.get(0),
                )
                .optional()
        })
    }

    pub(super) fn remember(
        &self,
        window: &[String; 4],
        report: &str,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let [account, start, end, offset] = window;
        self.run(false, |connection| {
            connection
                .execute(
                    "INSERT INTO history (account, window_start, window_end, utc_offset, report, fetched_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (account, window_start, window_end, utc_offset)
                     DO UPDATE SET report = ?5, fetched_at = ?6",
                    rusqlite::params![account, start, end, offset, report, now.timestamp()],
                )
                .map(drop)
        })
    }

    pub(super) fn forget_before(&self, cutoff: &str) -> Result<usize, String> {
        self.run(false, |connection| {
            connection.execute("DELETE FROM history WHERE window_end < ?1", [cutoff])
        })
    }

    pub(super) fn first_alert(
        &self,
        key: &Key,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, String> {
        let mut params = values(key);
        params.extend([reason.to_owned().into(), now.timestamp().into()]);
        self.run(false, |connection| {
            connection
                .execute(
                    "INSERT INTO alerts (team, first_day, last_day, webhook, reason, raised_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    params_from_iter(params),
                )
                .map(|inserted| inserted == 1)
        })
    }
}

/// ?1 to ?4 of [`KEY`].
fn values(key: &Key) -> Vec<Value> {
    vec![
        key.team.clone().into(),
        day(key.span.first).into(),
        day(key.span.last).into(),
        key.webhook.clone().into(),
    ]
}

/// Reads a row of [`COLUMNS`]; a lease that expired by `now` reads as none.
fn row(now: DateTime<Utc>) -> impl Fn(&rusqlite::Row) -> rusqlite::Result<Row> {
    move |row| {
        Ok(Row {
            team: row.get(0)?,
            first_day: row.get(1)?,
            last_day: row.get(2)?,
            webhook: row.get(3)?,
            state: row.get(4)?,
            attempts: row.get(5)?,
            unanswered: row.get(6)?,
            next_attempt: row.get(7)?,
            last_error: row.get(8)?,
            refused_url: row.get(9)?,
            delivered_at: row.get(10)?,
            lease_owner: row.get(11)?,
            lease_until_ms: row
                .get::<_, Option<i64>>(12)?
                .filter(|until| *until > now.timestamp())
                .map(|until| until * 1000),
        })
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
         );
         CREATE TABLE IF NOT EXISTS history (
             account TEXT NOT NULL,
             window_start TEXT NOT NULL,
             window_end TEXT NOT NULL,
             utc_offset TEXT NOT NULL,
             report TEXT NOT NULL,
             fetched_at INTEGER NOT NULL,
             PRIMARY KEY (account, window_start, window_end, utc_offset)
         );
         CREATE INDEX IF NOT EXISTS history_by_window_end ON history (window_end);
         CREATE TABLE IF NOT EXISTS alerts (
             team TEXT NOT NULL,
             first_day TEXT NOT NULL,
             last_day TEXT NOT NULL,
             webhook TEXT NOT NULL,
             reason TEXT NOT NULL,
             raised_at INTEGER NOT NULL,
             PRIMARY KEY (team, first_day, last_day, webhook, reason)
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
