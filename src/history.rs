//! The history: reports fetched before, kept by account and exact window for `history_days`,
//! so a comparison with an earlier span needs no new request. A cache beside the ledger, in
//! the same database, with its own table: losing it costs requests, never a digest. Beside the
//! reports, each window's two headline totals: the baselines of unusual days, which a new team
//! fetches from one report a day.

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

/// A window's two headline totals, what an unusual day is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub visitors: u64,
    pub chats: u64,
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

    /// Forgets the report kept for `account` over exactly `window`.
    pub async fn forget(&self, account: &str, window: &Window) -> Result<(), Problem> {
        let query = keyed(
            "DELETE FROM history WHERE account = $1 AND window_start = $2 AND window_end = $3
             AND utc_offset = $4",
            account,
            window,
        );
        self.db.execute(query).await.map(drop)
    }

    /// The totals kept for those of `windows` that are known and not provisional, in the
    /// order of `windows`, `None` where one isn't.
    pub async fn totals(
        &self,
        account: &str,
        windows: &[Window],
    ) -> Result<Vec<Option<Totals>>, Problem> {
        let starts = windows.iter().map(Window::start_date);
        let (Some(from), Some(to)) = (starts.clone().min(), starts.max()) else {
            return Ok(Vec::new());
        };
        let query = sqlx::query(
            "SELECT window_start, window_end, utc_offset, visitors, chats FROM totals
             WHERE account = $1 AND window_start >= $2 AND window_start <= $3 AND provisional = 0",
        )
        .bind(account.to_owned())
        .bind(from)
        .bind(to);
        use sqlx::Row;
        let mut known = std::collections::HashMap::new();
        for row in self.db.fetch_all(query).await? {
            let read = || -> Result<_, sqlx::Error> {
                let window: (String, String, String) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                let count = |i| row.try_get::<i64, _>(i).map(|n| n.max(0) as u64);
                Ok((
                    window,
                    Totals {
                        visitors: count(3)?,
                        chats: count(4)?,
                    },
                ))
            };
            let (window, totals) = read().map_err(|e| crate::db::causes(&e))?;
            known.insert(window, totals);
        }
        Ok(windows
            .iter()
            .map(|w| {
                known
                    .get(&(w.start_date(), w.end_date(), w.offset_text()))
                    .copied()
            })
            .collect())
    }

    /// Keeps a window's totals, replacing those kept before; a `provisional` one is kept only
    /// so that it is known to be fetched again.
    pub async fn remember_totals(
        &self,
        account: &str,
        window: &Window,
        totals: Totals,
        provisional: bool,
    ) -> Result<(), Problem> {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let query = keyed(
            "INSERT INTO totals (account, window_start, window_end, utc_offset, visitors, chats,
             provisional, fetched_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (account, window_start, window_end, utc_offset)
             DO UPDATE SET visitors = excluded.visitors, chats = excluded.chats,
             provisional = excluded.provisional, fetched_at = excluded.fetched_at",
            account,
            window,
        )
        .bind(count(totals.visitors))
        .bind(count(totals.chats))
        .bind(i32::from(provisional))
        .bind(self.clock.now().timestamp());
        self.db.execute(query).await.map(drop)
    }

    /// Drops the reports and totals of windows that ended before `day`; how many.
    pub async fn forget_before(&self, day: NaiveDate) -> Result<u64, Problem> {
        let cutoff = format!("{} 00:00:00", day.format("%Y-%m-%d"));
        let mut forgotten = 0;
        for sql in [
            "DELETE FROM history WHERE window_end < $1",
            "DELETE FROM totals WHERE window_end < $1",
        ] {
            let query = sqlx::query(sql).bind(cutoff.clone());
            forgotten += self.db.execute(query).await?.rows_affected();
        }
        Ok(forgotten)
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
