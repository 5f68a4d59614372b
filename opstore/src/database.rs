//! Databases parkcast creates for itself on an operator's Postgres server: the demo's operator
//! database, a benchmark's scratch database, each test's own. One place for the two statements and
//! their rules: `CREATE DATABASE` and `DROP DATABASE` cannot run inside a transaction block, so each
//! is its own implicit transaction, and a drop ends the connections still open (`WITH (FORCE)`,
//! Postgres 13 and later) rather than failing on them.

use crate::OpStoreError;

/// Creates database `name` on `server` and returns the settings that connect to it; with `replace`,
/// a database of that name is dropped first (a rerun starts clean). `name` is one of parkcast's own
/// (lower-case letters, digits and `_`), refused otherwise, so it is safe to quote into SQL.
pub fn create_database(
    server: &postgres::Config,
    name: &str,
    replace: bool,
) -> Result<postgres::Config, OpStoreError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
    {
        return Err(OpStoreError::DatabaseName(name.to_owned()));
    }
    let mut admin = server.connect(postgres::NoTls)?;
    if replace {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))?;
    }
    admin.batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
    let mut config = server.clone();
    config.dbname(name);
    Ok(config)
}

/// A database created for one run (a benchmark, a test) and dropped with this value, its
/// connections ended. Dropping it is best effort: a server gone by then keeps the database.
#[derive(Debug)]
pub struct ScratchDatabase {
    server: postgres::Config,
    name: String,
    config: postgres::Config,
}

impl ScratchDatabase {
    /// Creates database `name` on `server` (see [`create_database`]; one of that name must not
    /// exist).
    pub fn create(server: &postgres::Config, name: &str) -> Result<ScratchDatabase, OpStoreError> {
        let config = create_database(server, name, false)?;
        Ok(ScratchDatabase {
            server: server.clone(),
            name: name.to_owned(),
            config,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings that connect to it.
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = self.server.connect(postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outside_parkcasts_own_are_refused_before_any_connection() {
        // Nothing listens on port 1: the refusal must come before a connection is tried.
        let server: postgres::Config = "host=127.0.0.1 port=1 user=nobody connect_timeout=1"
            .parse()
            .expect("a valid connection string");
        for name in ["", "Demo", "a\"b", "x; DROP DATABASE y", "café"] {
            assert!(
                matches!(
                    create_database(&server, name, true),
                    Err(OpStoreError::DatabaseName(refused)) if refused == name
                ),
                "{name:?} must be refused"
            );
        }
        assert!(
            matches!(
                create_database(&server, "parkcast_demo", true),
                Err(OpStoreError::Postgres(_))
            ),
            "a good name goes on to the server"
        );
    }
}
