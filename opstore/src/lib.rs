//! The operational store: the relational database a parking operator's transactional backend
//! keeps (customers and their vehicles, tariffs per zone and time band, payments, refunds,
//! penalties), in Postgres, normalised.
//!
//! parkcast's own data is analytic (the Kafka archive, the Parquet star schema); reports and models
//! also need what the backend knows, joined with it. This crate owns the schema, as versioned
//! migrations embedded in the binary ([`MIGRATIONS`]), and applies them ([`migrate`]):
//!
//! - **Versioned, in order, once.** Each migration runs in its own transaction with its row in
//!   `parkcast_schema_migrations` (version, name, SHA-256 of its text), so a crash leaves a
//!   migration applied whole or not at all.
//! - **One migrator at a time.** A transaction-scoped advisory lock serialises concurrent
//!   `migrate` calls (two replicas starting at once); the second finds the work done.
//! - **Refuses what it does not know.** A database with a migration this binary lacks (written by
//!   a newer parkcast), or whose applied text differs from this binary's (edited after release), is
//!   refused with a message naming the version, and nothing is changed.
//!
//! The schema itself, and the columns the ETL extracts by, are documented in the migration files.
//! [`records`] writes it in bulk (a simulated city, a load from another system).

use sha2::{Digest, Sha256};

pub mod database;
pub mod records;

pub use database::{ScratchDatabase, create_database};

/// A migration: its version (applied in ascending order), name and SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly ascending, from 1.
    pub version: i64,
    /// What it does, in a few words.
    pub name: &'static str,
    /// The statements, run as one transaction.
    pub sql: &'static str,
}

impl Migration {
    /// SHA-256 of the SQL, hex: what the database records, to notice an edited migration.
    pub fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.as_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// Every migration of the operational schema, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "operational schema",
        sql: include_str!("../migrations/0001_operational_schema.sql"),
    },
    Migration {
        version: 2,
        name: "tariff plans and the ETL's transaction window",
        sql: include_str!("../migrations/0002_tariff_plans_and_etl_window.sql"),
    },
];

/// The tables of the schema, parents before children (the order a load respects).
pub const TABLES: &[&str] = &[
    "operator",
    "zone",
    "lot",
    "time_band",
    "tariff",
    "customer",
    "vehicle",
    "payment",
    "refund",
    "penalty",
];

/// The advisory lock key of the migrator ("pkcst-mg" in ASCII).
const MIGRATION_LOCK: i64 = 0x706b_6373_742d_6d67;

/// What went wrong with the operational store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpStoreError {
    /// The database could not be reached or refused a statement.
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// Streaming rows into a `COPY` failed.
    #[error("postgres: writing COPY data: {0}")]
    Copy(std::io::Error),
    /// A database name parkcast would create is not one of its own kind.
    #[error(
        "database name {0:?} is not lower-case letters, digits and underscores (parkcast creates only such names)"
    )]
    DatabaseName(String),
    /// The database has a migration this binary does not know: it was migrated by a newer parkcast.
    #[error(
        "the database is at schema version {found}, newer than this parkcast knows (up to {known}); upgrade parkcast"
    )]
    NewerSchema {
        /// The newest version applied.
        found: i64,
        /// The newest version this binary has.
        known: i64,
    },
    /// An applied migration's text differs from this binary's.
    #[error(
        "schema migration {version} ({name}) was applied with other SQL than this parkcast ships (checksum {applied} in the database, {shipped} here); a released migration must not change"
    )]
    Edited {
        /// The version.
        version: i64,
        /// Its name.
        name: &'static str,
        /// The checksum recorded.
        applied: String,
        /// This binary's.
        shipped: String,
    },
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The versions applied now, in order.
    pub applied: Vec<i64>,
    /// The schema version after.
    pub version: i64,
}

/// Brings the database to the newest schema: applies the migrations it lacks, each in its own
/// transaction, after checking those it has (see the crate documentation).
pub fn migrate(client: &mut postgres::Client) -> Result<Migrated, OpStoreError> {
    let mut applied = Vec::new();
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let mut transaction = client.transaction()?;
        // Held until this transaction ends: a concurrent migrator waits here, then finds the row
        // (the bookkeeping table too is created under the lock: two `CREATE TABLE IF NOT EXISTS`
        // at once can both try).
        transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        transaction.batch_execute(
            "CREATE TABLE IF NOT EXISTS parkcast_schema_migrations (
                 version     bigint PRIMARY KEY,
                 name        text NOT NULL,
                 checksum    text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )?;
        if index == 0 {
            check_applied(&mut transaction)?;
        }
        let done = transaction
            .query_opt(
                "SELECT 1 FROM parkcast_schema_migrations WHERE version = $1",
                &[&migration.version],
            )?
            .is_some();
        if done {
            continue;
        }
        transaction.batch_execute(migration.sql)?;
        transaction.execute(
            "INSERT INTO parkcast_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &migration.checksum()],
        )?;
        transaction.commit()?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "schema migration applied"
        );
        applied.push(migration.version);
    }
    Ok(Migrated {
        applied,
        version: schema_version(client)?,
    })
}

/// The newest migration applied (0: none).
pub fn schema_version(client: &mut postgres::Client) -> Result<i64, OpStoreError> {
    let row = client.query_one(
        "SELECT coalesce(max(version), 0) FROM parkcast_schema_migrations",
        &[],
    )?;
    Ok(row.get(0))
}

/// Waits until every transaction that wrote before this call has finished, server-wide, so that
/// the next ETL run's window covers them (the window ends at the oldest transaction still running in
/// any database of the server). `false` if one is still open after `timeout`: its rows, and those
/// written after it, wait for a later run.
pub fn wait_for_window(
    client: &mut postgres::Client,
    timeout: std::time::Duration,
) -> Result<bool, postgres::Error> {
    let xid: i64 = client
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])?
        .get(0);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let xmin: i64 = client
            .query_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                &[],
            )?
            .get(0);
        if xmin > xid {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Refuses a database migrated by a newer parkcast, or with an edited migration.
fn check_applied(transaction: &mut postgres::Transaction<'_>) -> Result<(), OpStoreError> {
    let known = MIGRATIONS.last().map_or(0, |migration| migration.version);
    for row in transaction.query(
        "SELECT version, checksum FROM parkcast_schema_migrations ORDER BY version",
        &[],
    )? {
        let (version, checksum): (i64, String) = (row.get(0), row.get(1));
        let Some(migration) = MIGRATIONS
            .iter()
            .find(|migration| migration.version == version)
        else {
            return Err(OpStoreError::NewerSchema {
                found: version,
                known,
            });
        };
        let shipped = migration.checksum();
        if checksum != shipped {
            return Err(OpStoreError::Edited {
                version,
                name: migration.name,
                applied: checksum,
                shipped,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_ascend_from_one_and_every_table_is_in_the_first() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, i64::try_from(index).expect("few") + 1);
        }
        for table in TABLES {
            assert!(
                MIGRATIONS[0]
                    .sql
                    .contains(&format!("CREATE TABLE {table} (")),
                "{table}"
            );
            assert!(
                MIGRATIONS[0].sql.contains(&format!("'{table}'")),
                "{table} has no trigger"
            );
        }
        assert_eq!(MIGRATIONS[0].checksum().len(), 64);
    }
}

/// Databases for tests: each gets a fresh one on the server the test command starts.
#[doc(hidden)]
pub mod testing {
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The server's connection string (`PARKCAST_POSTGRES_DSN`), if set.
    pub fn server_dsn() -> Option<String> {
        std::env::var("PARKCAST_POSTGRES_DSN")
            .ok()
            .filter(|dsn| !dsn.trim().is_empty())
    }

    /// Skips a test without a Postgres server, unless `PARKCAST_REQUIRE_POSTGRES` is set (the test
    /// command sets it, so there a missing server fails the test).
    #[macro_export]
    macro_rules! require_postgres {
        () => {
            if $crate::testing::server_dsn().is_none() {
                assert!(
                    std::env::var_os("PARKCAST_REQUIRE_POSTGRES").is_none(),
                    "PARKCAST_REQUIRE_POSTGRES is set but PARKCAST_POSTGRES_DSN is not"
                );
                eprintln!("skipped: no Postgres server (PARKCAST_POSTGRES_DSN)");
                return;
            }
        };
    }

    /// Waits (up to 60 s) until every transaction that wrote before this call has finished,
    /// server-wide, so an ETL run's window covers them: the window ends at the oldest transaction
    /// still running in any database of the server, and the other tests' databases share it.
    pub fn settle(client: &mut postgres::Client) {
        let settled = crate::wait_for_window(client, std::time::Duration::from_secs(60))
            .expect("the server's transaction bound");
        assert!(
            settled,
            "transactions written before this call still running after 60 s"
        );
    }

    /// A database of its own on the test server, dropped with this value.
    pub struct FreshDatabase {
        database: crate::ScratchDatabase,
    }

    impl FreshDatabase {
        /// Creates an empty database named after `prefix`, the process and a counter.
        pub fn create(prefix: &str) -> FreshDatabase {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dsn = server_dsn().expect("PARKCAST_POSTGRES_DSN");
            let server: postgres::Config = dsn.parse().expect("a valid PARKCAST_POSTGRES_DSN");
            let name = format!(
                "{prefix}_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let database =
                crate::ScratchDatabase::create(&server, &name).expect("a database is created");
            FreshDatabase { database }
        }

        /// Its connection string: the server's with its database name.
        pub fn dsn(&self) -> String {
            format!(
                "{} dbname={}",
                server_dsn().expect("PARKCAST_POSTGRES_DSN"),
                self.database.name()
            )
        }

        /// A new connection to it.
        pub fn connect(&self) -> postgres::Client {
            self.database
                .config()
                .connect(postgres::NoTls)
                .expect("the database answers")
        }
    }
}
