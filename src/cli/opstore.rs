//! `parkcast opstore`: the operator's transactional database in Postgres (the operational store):
//! bring its schema up to date, or say which version it is at.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

/// Arguments of `parkcast opstore`.
#[derive(Debug, Args)]
pub struct OpStoreArgs {
    /// Postgres connection string (`host=... port=... user=... dbname=...`, or a
    /// `postgresql://` URL).
    #[arg(long, env = "PARKCAST_POSTGRES_DSN", hide_env_values = true)]
    pub postgres: String,
    #[command(subcommand)]
    pub action: OpStoreAction,
}

/// What to do with the operational store.
#[derive(Debug, Subcommand)]
pub enum OpStoreAction {
    /// Apply the schema migrations the database lacks (each in its own transaction; a database
    /// migrated by a newer parkcast, or with an edited migration, is refused and left alone).
    Migrate,
    /// Print the schema version the database is at and the newest this parkcast ships.
    Status,
}

pub fn run(args: OpStoreArgs) -> Result<()> {
    let mut client = postgres::Client::connect(&args.postgres, postgres::NoTls)
        .context("could not connect to the operational store (--postgres)")?;
    let newest = parkcast_opstore::MIGRATIONS
        .last()
        .map_or(0, |migration| migration.version);
    match args.action {
        OpStoreAction::Migrate => {
            let migrated = parkcast_opstore::migrate(&mut client)
                .context("the operational store's schema was not migrated")?;
            if migrated.applied.is_empty() {
                println!("schema at version {}: up to date", migrated.version);
            } else {
                let applied: Vec<String> =
                    migrated.applied.iter().map(ToString::to_string).collect();
                println!(
                    "schema at version {}: applied {}",
                    migrated.version,
                    applied.join(", ")
                );
            }
        }
        OpStoreAction::Status => {
            let version = parkcast_opstore::schema_version(&mut client).or_else(|error| {
                // No bookkeeping table yet: a database never migrated.
                match &error {
                    parkcast_opstore::OpStoreError::Postgres(source)
                        if source.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) =>
                    {
                        Ok(0)
                    }
                    _ => Err(error),
                }
            })?;
            println!("schema at version {version}; this parkcast ships up to {newest}");
        }
    }
    Ok(())
}
