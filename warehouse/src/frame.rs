//! Rows to and from polars frames: the polars type of each logical column type, and the
//! conversions the typed rows derive ([`FrameRow`], through [`PolarsValue`] per field type).

use chrono::{DateTime, NaiveDate, Utc};
use polars::prelude::*;

use crate::error::{Result, WarehouseError, polars_error};
use crate::schema::{ColumnType, Table, TableRow};

/// The polars data type of a logical column type.
pub fn polars_type(column_type: ColumnType) -> DataType {
    match column_type {
        ColumnType::Text => DataType::String,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::UInt64 => DataType::UInt64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Date => DataType::Date,
        ColumnType::Timestamp => DataType::Datetime(TimeUnit::Milliseconds, None),
    }
}

/// A Rust value stored in one polars column.
pub trait PolarsValue: Sized {
    /// Builds a column from values.
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column
    where
        Self: 'a;
    /// Reads a column back; the caller has checked the column's type.
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>>;
}

/// A row type that converts to and from a polars `DataFrame`.
pub trait FrameRow: TableRow {
    /// The rows as a frame with the table's columns in order.
    fn to_frame(rows: &[Self]) -> PolarsResult<DataFrame>;
    /// The rows of a frame that has (at least) the table's columns with their types.
    fn from_frame(frame: &DataFrame) -> Result<Vec<Self>>;
}

fn required<T>(table: Table, name: &'static str, values: Vec<Option<T>>) -> Result<Vec<T>> {
    let nulls = values.iter().filter(|value| value.is_none()).count();
    if nulls > 0 {
        return Err(WarehouseError::UnexpectedNull {
            table,
            column: name,
            nulls,
        });
    }
    Ok(values.into_iter().flatten().collect())
}

fn typed<'a, T>(table: Table, name: &'static str, result: PolarsResult<&'a T>) -> Result<&'a T> {
    result.map_err(polars_error(format!("reading column {table}.{name}")))
}

macro_rules! polars_primitive {
    ($($rust:ty => $chunked:ident, $accessor:ident);+ $(;)?) => {
        $(
            impl PolarsValue for $rust {
                fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
                    $chunked::from_iter_values(name.into(), values.copied()).into_column()
                }
                fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
                    let chunked = typed(table, name, column.$accessor())?;
                    required(table, name, chunked.iter().collect())
                }
            }
            impl PolarsValue for Option<$rust> {
                fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
                    $chunked::from_iter_options(name.into(), values.copied()).into_column()
                }
                fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
                    Ok(typed(table, name, column.$accessor())?.iter().collect())
                }
            }
        )+
    };
}

polars_primitive! {
    bool => BooleanChunked, bool;
    i32 => Int32Chunked, i32;
    i64 => Int64Chunked, i64;
    u64 => UInt64Chunked, u64;
    f64 => Float64Chunked, f64;
}

impl PolarsValue for String {
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
        StringChunked::from_iter_values(name.into(), values.map(String::as_str)).into_column()
    }
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
        let chunked = typed(table, name, column.str())?;
        required(
            table,
            name,
            chunked
                .iter()
                .map(|value| value.map(str::to_owned))
                .collect(),
        )
    }
}

impl PolarsValue for Option<String> {
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
        StringChunked::from_iter_options(name.into(), values.map(Option::as_deref)).into_column()
    }
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
        let chunked = typed(table, name, column.str())?;
        Ok(chunked
            .iter()
            .map(|value| value.map(str::to_owned))
            .collect())
    }
}

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

fn date_to_days(date: &NaiveDate) -> i32 {
    use chrono::Datelike;
    date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE
}

fn days_to_date(table: Table, name: &'static str, days: i32) -> Result<NaiveDate> {
    days.checked_add(UNIX_EPOCH_DAYS_FROM_CE)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .ok_or_else(|| WarehouseError::OutOfRange {
            table,
            column: name,
            value: format!("{days} days"),
        })
}

fn millis_to_timestamp(table: Table, name: &'static str, millis: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis).ok_or_else(|| WarehouseError::OutOfRange {
        table,
        column: name,
        value: format!("{millis} ms"),
    })
}

impl PolarsValue for NaiveDate {
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
        Int32Chunked::from_iter_values(name.into(), values.map(date_to_days))
            .into_date()
            .into_column()
    }
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
        let chunked = typed(table, name, column.date())?;
        required(table, name, chunked.physical().iter().collect())?
            .into_iter()
            .map(|days| days_to_date(table, name, days))
            .collect()
    }
}

impl PolarsValue for Option<NaiveDate> {
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
        Int32Chunked::from_iter_options(
            name.into(),
            values.map(|value| value.as_ref().map(date_to_days)),
        )
        .into_date()
        .into_column()
    }
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
        let chunked = typed(table, name, column.date())?;
        chunked
            .physical()
            .iter()
            .map(|days| days.map(|days| days_to_date(table, name, days)).transpose())
            .collect()
    }
}

impl PolarsValue for DateTime<Utc> {
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
        Int64Chunked::from_iter_values(name.into(), values.map(DateTime::timestamp_millis))
            .into_datetime(TimeUnit::Milliseconds, None)
            .into_column()
    }
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
        let chunked = typed(table, name, column.datetime())?;
        required(table, name, chunked.physical().iter().collect())?
            .into_iter()
            .map(|millis| millis_to_timestamp(table, name, millis))
            .collect()
    }
}

impl PolarsValue for Option<DateTime<Utc>> {
    fn to_column<'a>(name: &str, values: impl Iterator<Item = &'a Self>) -> Column {
        Int64Chunked::from_iter_options(
            name.into(),
            values.map(|value| value.as_ref().map(DateTime::timestamp_millis)),
        )
        .into_datetime(TimeUnit::Milliseconds, None)
        .into_column()
    }
    fn from_column(table: Table, name: &'static str, column: &Column) -> Result<Vec<Self>> {
        let chunked = typed(table, name, column.datetime())?;
        chunked
            .physical()
            .iter()
            .map(|millis| {
                millis
                    .map(|millis| millis_to_timestamp(table, name, millis))
                    .transpose()
            })
            .collect()
    }
}
