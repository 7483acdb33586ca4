//! The database the ledger and the history keep their tables in: a SQLite file (the default,
//! for one host) or a PostgreSQL database that any number of replicas share. Both are reached
//! through sqlx's `Any` driver, so each statement is written once; where the dialects differ
//! (how nulls compare, whose clock judges a lease) [`Dialect`] says so in one place.
//!
//! A SQLite file is guarded as the record of what was sent: it is created under a temporary
//! name and linked into place once its schema is written, so a file at the path is never half
//! made; one that is empty, damaged or not a ledger is refused rather than started afresh
//! (that would re-send every digest within the catch-up window); one deleted or replaced under
//! a running process stops deliveries until it is back.

use std::borrow::Cow;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use sqlx::AnyConnection;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyQueryResult, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, ConnectOptions, Executor};

use crate::config::StateStore;

#[doc(hidden)]
pub mod testing;

/// How long one call may take: a server that stops answering without closing the connection
/// (a failover to a stale address, a partition dropping packets) must not hang the reconciler
/// or a delivery for the kernel's quarter of an hour of retransmissions.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// Each database's migrations, in the binary: `migrations/` for both, `migrations/sqlite/`
/// and `migrations/postgres/` for each one's own (a change written in each dialect, such as a
/// trigger, has one version in both). Embedded by hand rather than by `migrate!`, whose proc
/// macro would build SQLite and both drivers a second time; a test checks this list against
/// the folders.
const LEDGER: (i64, &str, &str) = (1, "ledger", include_str!("../../migrations/1_ledger.sql"));
const HISTORY: (i64, &str, &str) = (2, "history", include_str!("../../migrations/2_history.sql"));
const WATERMARKS: (i64, &str, &str) = (
    4,
    "watermarks",
    include_str!("../../migrations/4_watermarks.sql"),
);
const INSIGHTS: (i64, &str, &str) = (
    5,
    "insights",
    include_str!("../../migrations/5_insights.sql"),
);
const DAY_INDEX: (i64, &str, &str) = (
    7,
    "day_index_narrowed_by_team",
    include_str!("../../migrations/7_day_index_narrowed_by_team.sql"),
);
const LAST_DELIVERIES: (i64, &str, &str) = (
    8,
    "last_deliveries",
    include_str!("../../migrations/8_last_deliveries.sql"),
);
const FORGOTTEN: (i64, &str, &str) = (
    10,
    "forgotten",
    include_str!("../../migrations/10_forgotten.sql"),
);
/// The last migration that rewrites a table (3, 6) or reads a whole one (8).
const LAST_REWRITE: i64 = 8;
const SQLITE: &[(i64, &str, &str)] = &[
    LEDGER,
    HISTORY,
    (
        3,
        "earlier_ledgers",
        include_str!("../../migrations/sqlite/3_earlier_ledgers.sql"),
    ),
    WATERMARKS,
    INSIGHTS,
    (
        6,
        "digests_by_team",
        include_str!("../../migrations/sqlite/6_digests_by_team.sql"),
    ),
    DAY_INDEX,
    LAST_DELIVERIES,
    (
        9,
        "last_delivery_trigger",
        include_str!("../../migrations/sqlite/9_last_delivery_trigger.sql"),
    ),
    FORGOTTEN,
];
const POSTGRES: &[(i64, &str, &str)] = &[
    LEDGER,
    HISTORY,
    WATERMARKS,
    INSIGHTS,
    DAY_INDEX,
    LAST_DELIVERIES,
    (
        9,
        "last_delivery_trigger",
        include_str!("../../migrations/postgres/9_last_delivery_trigger.sql"),
    ),
    FORGOTTEN,
];

/// How the two databases differ, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Null-safe equality: a column is unchanged when both are null, too.
    pub(crate) fn same(self) -> &'static str {
        match self {
            Dialect::Sqlite => "IS",
            Dialect::Postgres => "IS NOT DISTINCT FROM",
        }
    }

    /// The time leases are judged by, in Unix milliseconds: on SQLite the process's clock,
    /// bound as parameter `$n`; on PostgreSQL the server's, so replicas whose clocks disagree
    /// still agree on who holds what. Milliseconds, since a lease of a few seconds (crash
    /// trials) must not lose one to rounding.
    pub(crate) fn now_ms(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("${n}"),
            Dialect::Postgres => {
                "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint".into()
            }
        }
    }

    /// Whether statements using [`Dialect::now_ms`] take the time as a parameter.
    pub(crate) fn binds_now(self) -> bool {
        self == Dialect::Sqlite
    }
}

/// Whether the database is opened to write (creating and migrating it) or only to read
/// (`status`, a dry run): then nothing is created, and a read-only role will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Write,
    Read,
}

#[derive(Clone)]
pub(crate) struct Db {
    pub(crate) pool: AnyPool,
    /// A SQLite ledger's writes, on one connection of their own. SQLite lets one connection
    /// write at a time, so writers on several only waited for each other (sleeping in its
    /// busy handler); and a connection taken from sqlx's pool is pinged on its way back (a
    /// trip to SQLite's worker thread, and a task) after every statement. Statements on it
    /// commit one by one: nothing is ever left open on it by a future dropped halfway.
    writer: Option<Arc<tokio::sync::Mutex<AnyConnection>>>,
    pub(crate) dialect: Dialect,
    /// A SQLite file's path, device and inode when opened.
    file: Option<(PathBuf, (u64, u64))>,
    /// Whether this open created the schema: nothing was recorded before.
    pub(crate) created: bool,
    /// A SQLite ledger opened to write: the check of its every page, run beside start-up
    /// (see [`Db::checked`]).
    checking: Option<Checking>,
}

impl Db {
    pub(crate) async fn open(location: &StateStore, access: Access) -> Result<Db, String> {
        sqlx::any::install_default_drivers();
        let url = match location {
            StateStore::Sqlite(path) => {
                let mut db = answered_in_time(open_sqlite(path, access)).await?;
                // Only where a digest could be sent from it: `status` may run each minute as a
                // monitoring check, and a read that meets a damaged page still fails, saying so.
                if access == Access::Write {
                    db.checking = Some(check_every_page(db.pool.clone(), path));
                    // Not within CALL_LIMIT: an upgrade may rewrite a large ledger's table
                    // (version 6 does), and a file on this host does not stall as a server can.
                    db.migrate().await?;
                    let writer = db.pool.acquire().await.map_err(|e| causes(&e))?.detach();
                    db.writer = Some(Arc::new(tokio::sync::Mutex::new(writer)));
                }
                return Ok(db);
            }
            StateStore::Postgres(url) => url.expose().as_str(),
        };
        let db = answered_in_time(async {
            let pool = pool(16, Dialect::Postgres)
                .connect_with(options(url).map_err(login_failed)?)
                .await
                .map_err(login_failed)?;
            let mut db = Db {
                pool,
                writer: None,
                dialect: Dialect::Postgres,
                file: None,
                created: false,
                checking: None,
            };
            if access == Access::Write {
                let existing = sqlx::query("SELECT to_regclass('digests') IS NULL");
                let fresh = db.fetch_all(existing).await?;
                db.created = fresh
                    .first()
                    .is_some_and(|row| sqlx::Row::try_get::<bool, _>(row, 0).unwrap_or(false));
            }
            Ok(db)
        })
        .await?;
        if access == Access::Write {
            // Not within CALL_LIMIT either: an upgrade may read every digest once (version 8
            // does), and the server has just answered.
            db.migrate().await?;
        }
        Ok(db)
    }

    /// Fails when a SQLite file is no longer the one opened, so nothing new goes out while the
    /// record of what went out is missing.
    pub(crate) fn guard(&self) -> Result<(), String> {
        let Some((path, identity)) = &self.file else {
            return Ok(());
        };
        match std::fs::metadata(path) {
            Ok(meta) if (meta.dev(), meta.ino()) == *identity => Ok(()),
            Ok(_) => Err("was replaced by another file while running; deliveries stop until the original is back (or restart to use the new one)".into()),
            Err(e) => Err(format!("has disappeared ({e}); deliveries stop until it is back")),
        }
    }

    /// Waits for the check of a SQLite ledger's every page, which runs from its opening to
    /// write: nothing is written before it has passed, and the error says the file is
    /// damaged if it has not. It reads the whole file (6 s for a year of 10,000 teams'
    /// digests read from disk, ten times that at 100,000), so a process that waits for it
    /// can still answer meanwhile (the daemon its endpoint, its watchdog and a stop).
    pub(crate) async fn checked(&self) -> Result<(), String> {
        match &self.checking {
            Some(checking) => checking.answer.clone().await,
            None => Ok(()),
        }
    }

    /// Whether the check of every page (see [`Db::checked`]) has passed, without waiting
    /// for it: None while it runs.
    pub(crate) fn check_passed(&self) -> Option<bool> {
        match &self.checking {
            Some(checking) => checking.over.get().copied(),
            None => Some(true),
        }
    }

    /// Runs one statement, within [`CALL_LIMIT`] once the ledger is [checked](Db::checked).
    pub(crate) async fn execute<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<AnyQueryResult, String> {
        self.checked().await?;
        answered_in_time(async {
            let mut connection = self.writing().await.map_err(|e| causes(&e))?;
            query
                .execute(&mut *connection)
                .await
                .map_err(|e| causes(&e))
        })
        .await
    }

    /// A connection to write on: SQLite's writer, or one of PostgreSQL's pool.
    pub(crate) async fn writing(&self) -> Result<Writing, sqlx::Error> {
        Ok(match &self.writer {
            Some(writer) => Writing::Writer(writer.clone().lock_owned().await),
            None => Writing::Pooled(self.pool.acquire().await?),
        })
    }

    pub(crate) async fn fetch_all<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Vec<AnyRow>, String> {
        answered_in_time(async { query.fetch_all(&self.pool).await.map_err(|e| causes(&e)) }).await
    }

    /// Creates the schema, or brings an older one up to date; PostgreSQL's runs under an
    /// advisory lock, so replicas starting together take turns. A schema newer than this
    /// version knows is refused: its rows may mean what this version can't read.
    async fn migrate(&self) -> Result<(), String> {
        let embedded = match self.dialect {
            Dialect::Sqlite => SQLITE,
            Dialect::Postgres => POSTGRES,
        };
        let migrator = Migrator::new(Embedded(embedded))
            .await
            .map_err(|e| e.to_string())?;
        let known = embedded.last().map_or(0, |(version, _, _)| *version);
        let failed = |e: sqlx::migrate::MigrateError| match e {
            sqlx::migrate::MigrateError::VersionMissing(version) => format!(
                "has schema version {version}, newer than this version of acquire-digest knows ({known}): upgrade acquire-digest"
            ),
            e => format!("could not create or migrate its schema: {}", causes(&e)),
        };
        if let Some((path, _)) = &self.file {
            let applied: Result<Option<i64>, _> =
                sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
                    .fetch_one(&self.pool)
                    .await;
            // No record of migrations: a ledger from before them, upgraded from the start.
            let from = applied.ok().flatten().unwrap_or(0);
            // An upgrade that rewrites a table, or reads a whole one, never runs on a damaged
            // file; one that only adds a table does not hold up the start for the check.
            if from < LAST_REWRITE {
                self.checked().await?;
            }
            if from < known {
                tracing::info!(
                    "delivery ledger {}: upgrading its schema from version {from} to {known}, once; a large ledger can take a minute",
                    path.display()
                );
            }
        }
        // Two processes upgrading one SQLite file at once: the second's transaction fails on
        // the first's record of the migration, and looking again finds it done.
        match migrator.run(&self.pool).await {
            Err(_) if self.dialect == Dialect::Sqlite => migrator.run(&self.pool).await,
            ran => ran,
        }
        .map_err(failed)
    }
}

pub(crate) enum Writing {
    Writer(tokio::sync::OwnedMutexGuard<AnyConnection>),
    Pooled(sqlx::pool::PoolConnection<sqlx::Any>),
}

impl std::ops::Deref for Writing {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            Writing::Writer(connection) => connection,
            Writing::Pooled(connection) => connection,
        }
    }
}

impl std::ops::DerefMut for Writing {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Writing::Writer(connection) => connection,
            Writing::Pooled(connection) => connection,
        }
    }
}

/// What to do about a SQLite ledger whose contents are damaged; never said of one that only
/// can't be opened, which deleting would turn into a re-send of everything.
const LEFT_AS_IT_IS: &str = "the file is left as it is: mend the cause (disk space, permissions, a read-only mount) and start again";
const AFRESH: &str = "restore it from a backup, or delete it to start a fresh ledger (digests within catch_up may then be sent again)";

/// Why a SQLite file could not be used, and what to do about it.
fn damaged(e: sqlx::Error) -> String {
    // SQLITE_CORRUPT and SQLITE_NOTADB, whatever their extended code.
    let code = match &e {
        sqlx::Error::Database(e) => e.code().and_then(|c| c.parse::<i32>().ok()),
        _ => None,
    };
    match code.map(|c| c & 0xff) {
        Some(11) => format!("is damaged ({}); {AFRESH}", causes(&e)),
        // Most likely another file named by mistake, which deleting would lose.
        Some(26) => format!(
            "is not a SQLite database ({}): check [state] path; if it is the ledger, it is damaged: {AFRESH}",
            causes(&e)
        ),
        _ => format!("cannot be used ({}); {LEFT_AS_IT_IS}", causes(&e)),
    }
}

/// The check of every page of a SQLite ledger: its answer, for every clone of the [`Db`]; and
/// stopped once none is left (an open that failed after it began, a reload refused), rather
/// than reading a large file for nobody.
#[derive(Clone)]
struct Checking {
    answer: Shared<BoxFuture<'static, Result<(), String>>>,
    /// Whether it passed, once it has ended: for those who only ask.
    over: Arc<std::sync::OnceLock<bool>>,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads every page of a SQLite ledger, on a connection of its own, from now on.
fn check_every_page(pool: AnyPool, path: &Path) -> Checking {
    let path = path.to_owned();
    let over = Arc::new(std::sync::OnceLock::new());
    let ending = over.clone();
    let check = tokio::spawn(async move {
        let _held = testing::CHECKS_HELD.read().await;
        let started = std::time::Instant::now();
        let check = sqlx::query_scalar::<_, String>("PRAGMA quick_check")
            .fetch_one(&pool)
            .await;
        let _ = ending.set(check.as_ref().is_ok_and(|answer| answer == "ok"));
        match check.map_err(damaged)? {
            ok if ok == "ok" => {}
            damage => return Err(format!("is damaged ({damage}); {AFRESH}")),
        }
        tracing::debug!(
            "delivery ledger {}: every page checked in {:.2} s",
            path.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    });
    let task = Arc::new(AbortOnDrop(check.abort_handle()));
    let answer = async move {
        check
            .await
            .unwrap_or_else(|e| Err(format!("could not be checked ({e})")))
    };
    Checking {
        answer: answer.boxed().shared(),
        over,
        _task: task,
    }
}

/// A SQLite file, created under a temporary name if it isn't there yet.
async fn open_sqlite(path: &Path, access: Access) -> Result<Db, String> {
    let mut created = false;
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => {
            return Err(format!(
                "the file exists but is empty, so it holds no record of what was delivered; {AFRESH}"
            ));
        }
        Ok(_) => {}
        Err(_) if access == Access::Read => {
            return Err("does not exist: nothing has been delivered from this config yet (`run` and `once` create it)".into());
        }
        Err(_) => created = create_sqlite(path).await?,
    }
    // Reading and writing it as the database will, for a cause in the words of the system;
    // closed before SQLite opens it: closing any descriptor of a file drops every POSIX lock
    // the process holds on it, SQLite's own shared lock included, and another process that
    // then finds itself alone on the file checkpoints and removes the write-ahead log from
    // under this one's connections, whose every read fails from then on (SQLite's 522).
    let probe = std::fs::OpenOptions::new()
        .read(true)
        .write(access == Access::Write)
        .open(path)
        .map(drop);
    if let Err(e) = probe {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "give the user acquire-digest runs as read and write access to it and its folder"
            }
            std::io::ErrorKind::ReadOnlyFilesystem => "mount its filesystem read-write",
            _ => "mend the cause and start again",
        };
        return Err(format!(
            "cannot be opened ({e}): {hint}; the file is left as it is"
        ));
    }
    let mode = match access {
        Access::Write => "rw",
        Access::Read => "ro",
    };
    let options = options(&sqlite_url(path, mode)).map_err(damaged)?;
    // A file damaged at its start fails each connection the pool makes, and the pool says only
    // that it timed out, after CALL_LIMIT: one connection first says why, at once, and whether
    // the file is a ledger at all. (SQLite keeps the process's locks on the file while any of
    // its connections is open.)
    let mut first = <AnyConnection as sqlx::Connection>::connect_with(&options)
        .await
        .map_err(damaged)?;
    let ours = async {
        first.execute("PRAGMA busy_timeout = 10000").await?;
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('digests', 'deliveries', '_sqlx_migrations')",
        )
        .fetch_one(&mut first)
        .await
    }
    .await;
    let _ = sqlx::Connection::close(first).await;
    if ours.map_err(damaged)? == 0 {
        return Err(
            "is not an acquire-digest ledger (it has none of its tables); check [state] path"
                .into(),
        );
    }
    let pool = pool(4, Dialect::Sqlite)
        .connect_with(options)
        .await
        .map_err(damaged)?;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    Ok(Db {
        pool,
        writer: None,
        dialect: Dialect::Sqlite,
        file: Some((path.to_owned(), (meta.dev(), meta.ino()))),
        created,
        checking: None,
    })
}

/// Writes a new ledger's schema under a temporary name and links it into place: a process
/// killed meanwhile leaves no file at the path, and of two creating it at once, one's file
/// wins whole and the other opens it. True when this one's won.
async fn create_sqlite(path: &Path) -> Result<bool, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create its folder: {e}"))?;
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{:016x}.new", fastrand::u64(..)));
    let temporary = PathBuf::from(name);
    let created = async {
        let pool = pool(1, Dialect::Sqlite)
            .connect_with(options(&sqlite_url(&temporary, "rwc")).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| format!("cannot be created: {}", causes(&e)))?;
        let db = Db {
            pool: pool.clone(),
            writer: None,
            dialect: Dialect::Sqlite,
            file: None,
            created: true,
            checking: None,
        };
        let mut migrated = db.migrate().await;
        // Everything into the file itself before it is linked: the log is found by name.
        if migrated.is_ok() {
            let checkpoint = pool.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;
            migrated = checkpoint.map(drop).map_err(|e| causes(&e));
        }
        pool.close().await;
        migrated?;
        match std::fs::hard_link(&temporary, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(format!("cannot be created: {e}")),
        }
    }
    .await;
    for leftover in ["", "-wal", "-shm"] {
        let mut name = temporary.as_os_str().to_owned();
        name.push(leftover);
        let _ = std::fs::remove_file(name);
    }
    created
}

/// Statements aren't logged: what went wrong is said by the error that reaches the log.
fn options(url: &str) -> Result<AnyConnectOptions, sqlx::Error> {
    Ok(url
        .parse::<AnyConnectOptions>()?
        .disable_statement_logging())
}

fn sqlite_url(path: &Path, mode: &str) -> String {
    let url = url::Url::from_file_path(path).map_or_else(
        |()| format!("sqlite://{}", path.display()),
        |url| url.as_str().replacen("file://", "sqlite://", 1),
    );
    format!("{url}?mode={mode}")
}

/// SQLite's settings, set on every connection: wait for another writer rather than fail, and
/// keep a write-ahead log synced at checkpoints (a killed process loses no commit; a power
/// loss can undo the last few, which costs a duplicate post, never a lost digest).
fn pool(size: u32, dialect: Dialect) -> AnyPoolOptions {
    let options = AnyPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(CALL_LIMIT);
    match dialect {
        Dialect::Postgres => options,
        // A connection to a file in this process can't have gone away while idle; pinging it
        // at each checkout is a trip to SQLite's worker thread and back (7% of the thread
        // wake-ups, futex calls, of a delivered digest).
        Dialect::Sqlite => options
            .test_before_acquire(false)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    connection
                        .execute("PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL;")
                        .await?;
                    // A read-only connection can't switch, and needn't: the file says WAL.
                    let _ = connection.execute("PRAGMA journal_mode = WAL;").await;
                    Ok(())
                })
            }),
    }
}

/// A server that refused the login says so (with its reason, which never holds the
/// password); anything else is "cannot reach".
fn login_failed(e: sqlx::Error) -> String {
    let refused = matches!(&e, sqlx::Error::Database(db)
        if db.code().is_some_and(|code| code == "28P01" || code == "28000"));
    if refused {
        format!(
            "the database refused the login: {} (check the user and password in the URL)",
            causes(&e)
        )
    } else {
        format!("cannot reach the database: {}", causes(&e))
    }
}

/// An error and its causes in one line, without repeats.
pub(crate) fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

pub(crate) async fn answered_in_time<T>(
    call: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(CALL_LIMIT, call)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the database did not answer within {} s",
                CALL_LIMIT.as_secs()
            ))
        })
}

#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        let migration = |&(version, name, sql): &(i64, &'static str, &'static str)| {
            let (name, sql) = (Cow::Borrowed(name), Cow::Borrowed(sql));
            Migration::new(version, name, MigrationType::Simple, sql, false)
        };
        Box::pin(async move { Ok(self.0.iter().map(migration).collect()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_in_the_folders_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let files = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.is_file())
                .map(|path| path.strip_prefix(&root).unwrap().display().to_string())
                .collect()
        };
        let mut on_disk = files(&root);
        on_disk.extend(files(&root.join("sqlite")));
        on_disk.extend(files(&root.join("postgres")));
        on_disk.sort();
        let shared = |migration| SQLITE.contains(migration) && POSTGRES.contains(migration);
        let sqlite = SQLITE
            .iter()
            .map(|m| (m, if shared(m) { "" } else { "sqlite/" }));
        let postgres = (POSTGRES.iter().filter(|m| !shared(m))).map(|m| (m, "postgres/"));
        let mut embedded: Vec<String> = (sqlite.chain(postgres))
            .map(|((version, name, _), folder)| format!("{folder}{version}_{name}.sql"))
            .collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
        // Each version means one change of the schema, in either dialect.
        for (version, name, _) in POSTGRES {
            let same = SQLITE.iter().find(|m| m.0 == *version);
            assert!(
                same.is_none_or(|m| m.1 == *name),
                "{version}_{name}: SQLite's {version} is another change"
            );
        }
    }

    /// Every column of every row, as text, and the table's definition.
    async fn digests_of(pool: &AnyPool) -> (Vec<String>, String) {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('digests') ORDER BY name")
                .fetch_all(pool)
                .await
                .unwrap();
        let rows = sqlx::query_scalar(&format!(
            "SELECT json_array({}) FROM digests ORDER BY team, webhook",
            columns.join(", ")
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        let table = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'digests'")
            .fetch_one(pool)
            .await
            .unwrap();
        (rows, table)
    }

    /// A SQLite ledger at `path` as versions before `version` left it.
    async fn sqlite_ledger_before(version: i64, path: &Path) -> AnyPool {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .connect(&testing::sqlite_file_url(path))
            .await
            .unwrap();
        let earlier = &SQLITE[..SQLITE.iter().position(|m| m.0 == version).unwrap()];
        let migrator = Migrator::new(Embedded(earlier)).await.unwrap();
        migrator.run(&pool).await.unwrap();
        pool
    }

    /// An upgrade that only adds a table doesn't hold up a start for the check of every page
    /// (a large ledger's takes seconds, before systemd hears it has started); one that
    /// rewrites a table waits for it.
    #[tokio::test]
    async fn only_an_upgrade_that_rewrites_a_table_waits_for_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let (adds, rewrites) = (dir.path().join("9.db"), dir.path().join("7.db"));
        sqlite_ledger_before(10, &adds).await.close().await;
        sqlite_ledger_before(8, &rewrites).await.close().await;
        let hold = testing::hold_page_checks().await;
        let open = |path: PathBuf| async move {
            Db::open(&StateStore::Sqlite(path), Access::Write)
                .await
                .map(drop)
        };
        let opened = tokio::time::timeout(Duration::from_secs(5), open(adds)).await;
        assert!(opened.expect("waited for the check").is_ok());
        let waiting = tokio::spawn(open(rewrites));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "rewrote a table before the check");
        drop(hold);
        assert!(waiting.await.unwrap().is_ok());
    }

    /// A ledger from before migration 8 starts with each webhook's last delivery as its
    /// digests say, which until then every start read from them.
    #[tokio::test]
    async fn upgrading_a_ledger_keeps_each_webhooks_last_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let before_8 = sqlite_ledger_before(8, &path).await;
        sqlx::query(
            "INSERT INTO digests (team, first_day, last_day, webhook, state, delivered_at) VALUES
                ('apac', '2026-03-28', '2026-03-28', 'slack', 'delivered', 1774771200),
                ('apac', '2026-03-29', '2026-03-29', 'slack', 'delivered', 1774857600),
                ('apac', '2026-03-30', '2026-03-30', 'slack', 'pending', NULL),
                ('apac', '2026-03-29', '2026-03-29', 'generic', 'refused', NULL),
                ('emea', '2026-03-29', '2026-03-29', 'slack', 'delivered', 1774800000)",
        )
        .execute(&before_8)
        .await
        .unwrap();
        before_8.close().await;

        let db = Db::open(&StateStore::Sqlite(path), Access::Write)
            .await
            .unwrap();
        let last: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT team, webhook, delivered_at FROM last_deliveries ORDER BY team")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        let row = |team: &str, at| (team.to_owned(), "slack".to_owned(), at);
        assert_eq!(last, [row("apac", 1774857600), row("emea", 1774800000)]);
    }

    #[tokio::test]
    async fn rekeying_sqlites_digests_by_team_keeps_every_column_of_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let before_6 = sqlite_ledger_before(6, &path).await;
        sqlx::query(
            "INSERT INTO digests VALUES
                ('apac', '2026-03-28', '2026-03-29', 'slack', 'pending', 2, 1, 1774771200, 'HTTP 503', 'fp', NULL, 'owner', 1774771300000, 3, 1, 'sum'),
                ('emea', '2026-03-29', '2026-03-29', 'generic', 'delivered', 1, 0, NULL, NULL, NULL, 1774800000, NULL, NULL, 1, 0, NULL)",
        )
        .execute(&before_6)
        .await
        .unwrap();
        let (rows, table) = digests_of(&before_6).await;
        assert!(!table.contains("WITHOUT ROWID"));
        before_6.close().await;

        let db = Db::open(&StateStore::Sqlite(path), Access::Write)
            .await
            .unwrap();
        let (rekeyed, table) = digests_of(&db.pool).await;
        assert_eq!(rekeyed, rows);
        assert!(table.contains("WITHOUT ROWID"), "{table}");
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'digests' ORDER BY name",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        // The key is the table itself: no separate index of it.
        assert_eq!(indexes, ["digests_by_last_day"]);
    }
}
