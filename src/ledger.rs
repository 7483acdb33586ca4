//! The delivery ledger: which (team, date, webhook) digests were delivered. It, not the
//! scheduler, is the record of what ran, so a restart, a reload or a second `once` never posts
//! a delivered digest again.
//!
//! A delivery is recorded right after its POST succeeds. A crash between the two can cause one
//! duplicate post on the next run, never a lost digest.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, params};

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
    connection: Arc<Mutex<Connection>>,
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
        // WAL and a busy timeout let `once` and a running daemon share the file.
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA busy_timeout = 5000;
                 CREATE TABLE IF NOT EXISTS deliveries (
                     team TEXT NOT NULL,
                     date TEXT NOT NULL,
                     webhook TEXT NOT NULL,
                     delivered_at TEXT NOT NULL,
                     PRIMARY KEY (team, date, webhook)
                 );",
            )
            .map_err(|e| fail(Box::new(e)))?;
        Ok(Ledger {
            path: path.to_owned(),
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

    pub fn record(&self, team: &str, date: NaiveDate, webhook: &str) -> Result<(), LedgerError> {
        let connection = self.connection.lock().expect("ledger lock");
        connection
            .execute(
                "INSERT OR REPLACE INTO deliveries (team, date, webhook, delivered_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![team, date.to_string(), webhook, Utc::now().to_rfc3339()],
            )
            .map(drop)
            .map_err(|e| self.fail(e))
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

#[cfg(test)]
mod tests {
    use super::*;

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
