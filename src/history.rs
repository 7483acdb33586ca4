//! The history: reports fetched before, kept by account and exact window for `history_days`,
//! so a comparison with an earlier span needs no new request. A cache beside the ledger, in
//! the same database, with its own table: losing it costs requests, never a digest.

use std::sync::Arc;

use chrono::NaiveDate;

use crate::clock::Clock;
use crate::db::Db;
use crate::schedule::Window;

#[derive(Clone)]
pub struct History {
    db: Db,
    clock: Arc<dyn Clock>,
}

/// [`History::recalled`] and the others' `Err`: why the history could not be used.
pub type Problem = String;

impl History {
    pub(crate) fn new(db: Db, clock: Arc<dyn Clock>) -> History {
        History { db, clock }
    }

    /// A report fetched before for `account` over exactly `window`, as the JSON it was
    /// remembered as.
    pub async fn recalled(
        &self,
        account: &str,
        window: &Window,
    ) -> Result<Option<String>, Problem> {
        let query = keyed(
            "SELECT report FROM history WHERE account = $1 AND window_start = $2
             AND window_end = $3 AND utc_offset = $4",
            account,
            window,
        );
        let rows = self.db.fetch_all(query).await?;
        use sqlx::Row;
        rows.first()
            .map(|row| row.try_get::<String, _>(0))
            .transpose()
            .map_err(|e| crate::db::causes(&e))
    }

    /// Keeps a report fetched for `account` over `window`, replacing one kept before.
    pub async fn remember(
        &self,
        account: &str,
        window: &Window,
        report: String,
    ) -> Result<(), Problem> {
        let query = keyed(
            "INSERT INTO history (account, window_start, window_end, utc_offset, report, fetched_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (account, window_start, window_end, utc_offset)
             DO UPDATE SET report = excluded.report, fetched_at = excluded.fetched_at",
            account,
            window,
        )
        .bind(report)
        .bind(self.clock.now().timestamp());
        self.db.execute(query).await.map(drop)
    }

    /// Drops the reports of windows that ended before `day`; how many.
    pub async fn forget_before(&self, day: NaiveDate) -> Result<u64, Problem> {
        let cutoff = format!("{} 00:00:00", day.format("%Y-%m-%d"));
        let query = sqlx::query("DELETE FROM history WHERE window_end < $1").bind(cutoff);
        Ok(self.db.execute(query).await?.rows_affected())
    }
}

/// A statement about one window: the account, and the window exactly as the API was asked
/// for it, as parameters $1 to $4.
fn keyed<'q>(
    sql: &'q str,
    account: &str,
    window: &Window,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(sql)
        .bind(account.to_owned())
        .bind(window.start_date())
        .bind(window.end_date())
        .bind(window.offset_text())
}
