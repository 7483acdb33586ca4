//! Helpers for tests and benchmarks that need a database of their own, or that change one
//! behind the ledger's back as a person with a SQL shell would.

use std::path::Path;

use sqlx::Executor;

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
