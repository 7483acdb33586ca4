//! The ledger in PostgreSQL: one database that any number of replicas and `once` runs share.
//! A lease's expiry is written and judged by the server's clock, so replicas whose clocks
//! disagree still agree on who holds what; the lease transaction locks the row, so two
//! replicas asking at once get one lease between them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Key, Reach, Record, Row, day};
use crate::config::DatabaseUrl;

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// The server's time in Unix milliseconds: what leases are judged by. Milliseconds, since a
/// lease of a few seconds (crash trials) must not lose one to rounding.
const SERVER_NOW: &str = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint";
/// One (team, span, webhook): parameters $1 to $4.
const KEY: &str = "team = $1 AND first_day = $2 AND last_day = $3 AND webhook = $4";
/// Held while the schema is created or migrated, so replicas starting together take turns.
const MIGRATION_LOCK: i64 = 0x6163_7164_6967_0001;

pub(super) struct Postgres {
    pool: Pool,
}

/// The columns of a row, in the order both stores read and write them.
const COLUMNS: &str = "team, first_day, last_day, webhook, state, attempts, unanswered, \
    next_attempt, last_error, refused_url, delivered_at, lease_owner, lease_until";

/// A row, its lease shown only while it runs on the server's clock.
fn columns() -> String {
    COLUMNS.replace(
        "lease_until",
        &format!("CASE WHEN lease_until > {SERVER_NOW} THEN lease_until END"),
    )
}

impl Postgres {
    /// Connects (the first connection says at once whether the server is there and the
    /// credentials work) and, unless only reading, brings the schema up to date.
    pub(super) async fn open(url: &DatabaseUrl, migrate: bool) -> Result<Postgres, String> {
        // Only ring is compiled in; installing it makes that explicit for rustls.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut url = url.expose().clone();
        let verify = url
            .query_pairs()
            .any(|(key, value)| key == "sslmode" && value == "verify-full");
        if verify {
            // tokio-postgres knows only disable, prefer and require; the verifying is ours.
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .map(|(k, v)| {
                    if k == "sslmode" {
                        (k, "require".into())
                    } else {
                        (k, v)
                    }
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        let mut config: tokio_postgres::Config = url
            .as_str()
            .parse()
            .map_err(|e| format!("is not a usable PostgreSQL URL ({})", causes(&e)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // A server that went silent is noticed in seconds, not the kernel's fifteen minutes.
        config.keepalives_idle(Duration::from_secs(30));
        config.tcp_user_timeout(Duration::from_secs(30));
        let tls = if verify {
            MakeRustlsConnect::with_native_certs()
                .map(|(tls, _)| tls)
                .map_err(|_| {
                    "sslmode=verify-full: no root certificates could be loaded from the system (install ca-certificates)".to_owned()
                })?
        } else {
            unverified_tls()
        };
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| e.to_string())?;
        let db = Postgres { pool };
        if migrate {
            db.migrate().await?;
        } else {
            // Still says at once whether the server is there and the credentials work.
            drop(db.client().await?);
        }
        Ok(db)
    }

    async fn client(&self) -> Result<Object, String> {
        self.pool.get().await.map_err(|e| {
            let refused = [SqlState::INVALID_PASSWORD, SqlState::INVALID_AUTHORIZATION_SPECIFICATION];
            match &e {
                PoolError::Backend(e) if e.code().is_some_and(|code| refused.contains(code)) => {
                    format!(
                        "the database refused the login: {} (check the user and password in the URL)",
                        causes(e)
                    )
                }
                _ => format!("cannot reach the database: {}", causes(&e)),
            }
        })
    }

    async fn migrate(&self) -> Result<(), String> {
        let mut client = self.client().await?;
        let failed = |e: tokio_postgres::Error| {
            format!("could not create or migrate its schema: {}", causes(&e))
        };
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(failed)?;
        // An older binary still runs beside a newer schema during a rolling deploy: migrations
        // only ever add.
        let ran = embedded::migrations::runner()
            .set_abort_missing(false)
            .run_async(&mut **client)
            .await
            .map_err(|e| format!("could not create or migrate its schema: {e}"));
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(failed)?;
        ran.map(drop)
    }

    /// `_now`, and every other instant a lease is judged by, is the server's.
    pub(super) async fn recent(
        &self,
        since: NaiveDate,
        _now: DateTime<Utc>,
    ) -> Result<Vec<Row>, String> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {} FROM digests WHERE last_day >= $1", columns()),
                &[&day(since)],
            )
            .await
            .map_err(|e| match e.code() {
                Some(&SqlState::UNDEFINED_TABLE) => {
                    "has no acquire-digest tables yet: nothing was delivered from it (`run` and `once` create them)".to_owned()
                }
                _ => causes(&e),
            })?;
        rows.iter().map(row).collect()
    }

    /// Runs one of the ledger's changes (see [`Reach`]) on a row it locks, on the server's
    /// clock. A lease first inserts the row if it is missing, so a second replica waits on
    /// the lock and then sees the first one's lease rather than inserting beside it.
    pub(super) async fn update<T>(
        &self,
        key: &Key,
        reach: Reach,
        _now: DateTime<Utc>,
        change: impl FnOnce(Option<Record>, DateTime<Utc>) -> (Option<Record>, T),
    ) -> Result<T, String> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| causes(&e))?;
        let (first, last) = (day(key.span.first), day(key.span.last));
        let params: [&(dyn ToSql + Sync); 4] = [&key.team, &first, &last, &key.webhook];
        // Prepared once per connection: a statement prepared afresh costs a round trip more.
        let transaction = &tx;
        let prepared = |sql: String| async move {
            let prepared = transaction.prepare_cached(&sql).await;
            prepared.map_err(|e| causes(&e))
        };
        if reach == Reach::Lease {
            let insert = prepared(
                "INSERT INTO digests (team, first_day, last_day, webhook, state)
                 VALUES ($1, $2, $3, $4, 'pending') ON CONFLICT DO NOTHING"
                    .into(),
            );
            tx.execute(&insert.await?, &params)
                .await
                .map_err(|e| causes(&e))?;
        }
        // The server's time is read once the row's lock is held: PostgreSQL computes a locked
        // row's own columns before waiting for the lock, so a lease begun at that time could
        // end before it is written and another process take it while this one posts. The
        // outer SELECT runs on what the materialized one returns, after any wait.
        let locked = format!(
            "WITH locked AS MATERIALIZED (SELECT * FROM digests WHERE {KEY} FOR UPDATE)
             SELECT {}, {SERVER_NOW} FROM locked",
            columns()
        );
        let found = tx.query_opt(&prepared(locked).await?, &params).await;
        let (record, now_ms) = match found.map_err(|e| causes(&e))? {
            Some(found) => {
                let now = found.try_get(13).map_err(|e| causes(&e))?;
                (Some(row(&found)?.parse()?.1), now)
            }
            // Only a lease makes a row, and it made one above: nothing to change.
            None => {
                let now = tx.query_one(&format!("SELECT {SERVER_NOW}"), &[]).await;
                (None, now.map_err(|e| causes(&e))?.get(0))
            }
        };
        let now = DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
        let (write, answer) = change(record, now);
        if let Some(Record { entry, owner }) = write {
            let seconds = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp());
            let upsert = prepared(format!(
                "INSERT INTO digests ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (team, first_day, last_day, webhook) DO UPDATE SET
                     state = $5, attempts = $6, unanswered = $7, next_attempt = $8,
                     last_error = $9, refused_url = $10, delivered_at = $11,
                     lease_owner = $12, lease_until = $13"
            ));
            tx.execute(
                &upsert.await?,
                &[
                    &key.team,
                    &first,
                    &last,
                    &key.webhook,
                    &entry.state.as_str(),
                    &i64::from(entry.attempts),
                    &i64::from(entry.unanswered),
                    &seconds(entry.next_attempt),
                    &entry.last_error,
                    &entry.refused_url,
                    &seconds(entry.delivered_at),
                    &owner,
                    &entry.leased_until.map(|t| t.timestamp_millis()),
                ],
            )
            .await
            .map_err(|e| causes(&e))?;
        }
        tx.commit().await.map_err(|e| causes(&e))?;
        Ok(answer)
    }
}

impl Postgres {
    pub(super) async fn recalled(&self, window: &[String; 4]) -> Result<Option<String>, String> {
        let [account, start, end, offset] = window;
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT report FROM history WHERE account = $1 AND window_start = $2
                 AND window_end = $3 AND utc_offset = $4",
                &[account, start, end, offset],
            )
            .await
            .map_err(|e| causes(&e))?;
        Ok(row.map(|row| row.get(0)))
    }

    pub(super) async fn remember(
        &self,
        window: &[String; 4],
        report: &str,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let [account, start, end, offset] = window;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO history (account, window_start, window_end, utc_offset, report, fetched_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (account, window_start, window_end, utc_offset)
                 DO UPDATE SET report = $5, fetched_at = $6",
                &[account, start, end, offset, &report, &now.timestamp()],
            )
            .await
            .map(drop)
            .map_err(|e| causes(&e))
    }

    pub(super) async fn forget_before(&self, cutoff: &str) -> Result<usize, String> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM history WHERE window_end < $1", &[&cutoff])
            .await
            .map(|n| n as usize)
            .map_err(|e| causes(&e))
    }

    pub(super) async fn first_alert(
        &self,
        key: &Key,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, String> {
        let (first, last) = (day(key.span.first), day(key.span.last));
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO alerts (team, first_day, last_day, webhook, reason, raised_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &key.team,
                    &first,
                    &last,
                    &key.webhook,
                    &reason,
                    &now.timestamp(),
                ],
            )
            .await
            .map(|inserted| inserted == 1)
            .map_err(|e| causes(&e))
    }
}

fn row(row: &tokio_postgres::Row) -> Result<Row, String> {
    let read = || -> Result<Row, tokio_postgres::Error> {
        Ok(Row {
            team: row.try_get(0)?,
            first_day: row.try_get(1)?,
            last_day: row.try_get(2)?,
            webhook: row.try_get(3)?,
            state: row.try_get(4)?,
            attempts: row.try_get(5)?,
            unanswered: row.try_get(6)?,
            next_attempt: row.try_get(7)?,
            last_error: row.try_get(8)?,
            refused_url: row.try_get(9)?,
            delivered_at: row.try_get(10)?,
            lease_owner: row.try_get(11)?,
            lease_until_ms: row.try_get(12)?,
        })
    };
    read().map_err(|e| causes(&e))
}

/// An error and its causes in one line ("error connecting to server: Connection refused"),
/// without repeats. tokio-postgres never puts the password in one.
fn causes(e: &dyn std::error::Error) -> String {
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

/// libpq's `sslmode=require` (and `prefer`): encrypted, the certificate not verified.
fn unverified_tls() -> MakeRustlsConnect {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

/// Accepts any certificate but still checks the handshake's signatures, as libpq's `require`.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
