//! Helpers for tests and benchmarks that need a database of their own, or that change one
//! behind the ledger's back as a person with a SQL shell would.

use std::path::Path;

use sqlx::Executor;

/// Held for writing by [`hold_page_checks`]; each SQLite ledger's check of every page takes
/// it for reading first, which costs nothing while no test holds it.
pub(super) static CHECKS_HELD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Holds every SQLite ledger's check of every page that begins in this process until the
/// guard is dropped, as a large file's takes seconds: for tests of what waits for it.
#[doc(hidden)]
pub async fn hold_page_checks() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    CHECKS_HELD.write().await
}

/// A new, empty database on the server `url` names, for a test or a benchmark that needs a
/// PostgreSQL ledger of its own; its URL is `url` with the new database's name.
#[doc(hidden)]
pub async fn scratch_database(url: &str) -> Result<String, String> {
    let name = format!("scratch_{:016x}", fastrand::u64(..));
    execute_at(url, &format!("CREATE DATABASE {name}")).await?;
    let mut scratch = url::Url::parse(url).map_err(|e| e.to_string())?;
    scratch.set_path(&name);
    Ok(scratch.to_string())
}

/// Runs SQL on the database `url` names behind the ledger's back, as a person with a SQL shell
/// would: for tests.
#[doc(hidden)]
pub async fn execute_at(url: &str, sql: &str) -> Result<(), String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(url).await.map_err(|e| {
        format!(
            "cannot reach the test database server: {}",
            super::causes(&e)
        )
    })?;
    connection
        .execute(sql)
        .await
        .map(drop)
        .map_err(|e| super::causes(&e))
}

/// A SQLite file's URL for [`execute_at`].
#[doc(hidden)]
pub fn sqlite_file_url(path: &Path) -> String {
    super::sqlite_url(path, "rwc")
}

/// Gives a SQLite ledger a few thousand rows, then overwrites a page in the middle of its
/// file, as a failing disk would: a ledger whose damage only reading every page finds.
#[doc(hidden)]
pub async fn damage_a_middle_page(path: &Path) -> Result<(), String> {
    let rows = "WITH RECURSIVE t(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM t WHERE i < 4999)
        INSERT INTO digests (team, first_day, last_day, webhook, state)
        SELECT printf('team-%05d', i), '2026-07-15', '2026-07-15', 'slack', 'delivered' FROM t;
        PRAGMA wal_checkpoint(TRUNCATE);";
    execute_at(&sqlite_file_url(path), rows).await?;
    let mut bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let page = 4096;
    let middle = bytes.len() / page / 2 * page;
    bytes[middle..middle + 16].fill(0xff);
    std::fs::write(path, &bytes).map_err(|e| e.to_string())
}
