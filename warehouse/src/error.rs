//! What can go wrong reading or writing a warehouse; every variant names the file, table or column.

use std::path::{Path, PathBuf};

use polars::prelude::PolarsError;

use crate::schema::{ColumnType, MANIFEST_FILE, Table};

/// Errors of the warehouse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WarehouseError {
    /// A file system operation failed.
    #[error("{context} ({path}): {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// polars failed.
    #[error("{context}: {source}")]
    Polars {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: PolarsError,
    },
    /// The folder has no `warehouse.json`.
    #[error(
        "{root} is not a parkcast warehouse (no {MANIFEST_FILE}); create one with `parkcast simulate` or `parkcast import`"
    )]
    NotAWarehouse {
        /// The folder.
        root: PathBuf,
    },
    /// `warehouse.json` could not be parsed.
    #[error("{path} is not a valid warehouse manifest: {source}")]
    BadManifest {
        /// The manifest.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The warehouse was written by a newer parkcast.
    #[error(
        "warehouse format version {found} is newer than this parkcast supports ({supported}); upgrade parkcast"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The newest version this code reads.
        supported: u32,
    },
    /// The table's folder does not exist.
    #[error("table {table} is missing from the warehouse at {root}")]
    MissingTable {
        /// The table.
        table: Table,
        /// The warehouse root.
        root: PathBuf,
    },
    /// A file lacks a column of its table.
    #[error(
        "{path}: table {table} needs column {column} ({column_type}), which the file does not have"
    )]
    MissingColumn {
        /// The table.
        table: Table,
        /// The column.
        column: &'static str,
        /// Its expected type.
        column_type: ColumnType,
        /// The file.
        path: PathBuf,
    },
    /// A column has the wrong type.
    #[error("{path}: column {table}.{column} should be {expected} but is {found}")]
    WrongColumnType {
        /// The table.
        table: Table,
        /// The column.
        column: &'static str,
        /// The expected logical type.
        expected: ColumnType,
        /// What the file holds, as polars names it.
        found: String,
        /// The file.
        path: PathBuf,
    },
    /// A non-nullable column holds nulls.
    #[error("column {table}.{column} must not be null but holds {nulls} null value(s)")]
    UnexpectedNull {
        /// The table.
        table: Table,
        /// The column.
        column: &'static str,
        /// How many nulls.
        nulls: usize,
    },
    /// A value cannot be represented in the row type.
    #[error("column {table}.{column} holds an out-of-range value: {value}")]
    OutOfRange {
        /// The table.
        table: Table,
        /// The column.
        column: &'static str,
        /// The offending value.
        value: String,
    },
    /// A frame handed to [`Warehouse::write_frame`] does not have the table's columns in order.
    #[error(
        "frame for {table} should have column {column} here with its schema type, found {found:?}"
    )]
    FrameMismatch {
        /// The table.
        table: Table,
        /// The expected column.
        column: &'static str,
        /// What the frame has at that position.
        found: Option<String>,
    },
    /// A writer name that would not make a safe file name.
    #[error("writer name {writer:?} must be non-empty ASCII letters, digits, '-' or '_'")]
    BadWriterName {
        /// The name given.
        writer: String,
    },
}

/// A warehouse result.
pub type Result<T> = std::result::Result<T, WarehouseError>;

pub(crate) fn io_error(
    context: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> WarehouseError {
    let path = path.to_path_buf();
    move |source| WarehouseError::Io {
        context,
        path,
        source,
    }
}

pub(crate) fn polars_error(
    context: impl Into<String>,
) -> impl FnOnce(PolarsError) -> WarehouseError {
    let context = context.into();
    move |source| WarehouseError::Polars { context, source }
}
