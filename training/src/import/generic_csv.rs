//! The generic counter CSV, for data of any operator (the format is documented in the `import`
//! module docs, which the README copies).

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, Utc};
use chrono_tz::Tz;
use parkcast_features::calendar::CalendarFile;
use parkcast_warehouse::Warehouse;

use super::common::{
    Header, KeyIndex, Record, SourceSite, csv_error, csv_reader, open_with_progress,
};
use super::counter::{
    Capacities, CountKind, CounterCleaning, CounterImport, CounterLot, RawCount,
    write_counter_import,
};
use super::coverage::GridCoverage;
use super::local_time::{DstCounts, parse_naive_datetime, resolve_local_time};
use super::{ImportError, ImportReport};
use crate::progress::Progress;

/// The rules, in the order they are applied.
const CLEANING: CounterCleaning = CounterCleaning {
    source_rules: &[],
    free_counts: true,
    longest_unchanged: None,
    capacities: Capacities::FromLot,
};

/// Settings of one generic CSV import.
#[derive(Debug, Clone)]
pub(crate) struct CsvOptions {
    /// `csv-<sanitized name>`.
    pub(crate) writer: String,
    /// Zone of naive timestamps and of the lots.
    pub(crate) timezone: Option<Tz>,
    /// Holiday region of the lots.
    pub(crate) holiday_region: Option<String>,
    /// A calendar file that adds or replaces regions (`--calendar-file`).
    pub(crate) calendar_file: Option<PathBuf>,
    /// How long a reading holds (`--fill-forward`), minutes, checked to be 1 to 7 days.
    pub(crate) hold_minutes: Option<u32>,
}

/// `csv-<name>` with the name lowercased and every character other than ASCII letters, digits, `-`
/// and `_` replaced by `-`, so the writer name is a safe file name; `csv-unnamed` for an empty name.
pub(crate) fn writer_name(name: &str) -> String {
    let sanitized: String = name
        .trim()
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || character == '_' || character == '-' {
                character.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if sanitized.is_empty() {
        "csv-unnamed".to_owned()
    } else {
        format!("csv-{sanitized}")
    }
}

/// How a timestamp field was written.
enum Timestamp {
    /// With an offset: the instant is known.
    Instant(DateTime<FixedOffset>),
    /// Local wall-clock time: needs the time zone.
    Naive(chrono::NaiveDateTime),
}

fn parse_timestamp(text: &str) -> Option<Timestamp> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(Timestamp::Instant(instant));
    }
    // The relaxed form also takes a space for the `T` and an offset without a colon.
    if let Ok(instant) = text.parse::<DateTime<FixedOffset>>() {
        return Some(Timestamp::Instant(instant));
    }
    parse_naive_datetime(text).map(Timestamp::Naive)
}

/// Imports a generic counter CSV.
pub(crate) fn import(
    path: &Path,
    options: &CsvOptions,
    warehouse: &Warehouse,
    progress: &dyn Progress,
) -> Result<ImportReport, ImportError> {
    let calendar_file = options
        .calendar_file
        .as_deref()
        .map(CalendarFile::read)
        .transpose()?;
    let site = SourceSite {
        writer: options.writer.clone(),
        zone_id: format!("{}:all", options.writer),
        zone_name: options.writer.clone(),
        city: options.writer.trim_start_matches("csv-").to_owned(),
        timezone: options.timezone.unwrap_or(Tz::UTC),
        holiday_region: options.holiday_region.clone(),
        calendar_file,
    };
    // A wrong region or calendar file should fail before a long read, not after it.
    site.check_calendar(warehouse)?;
    let mut reader = csv_reader(open_with_progress(path, "reading counters", progress)?);
    let header = Header::read(path, &mut reader)?;
    let lot_column = header.require("lot_id")?;
    let time_column = header.require("timestamp")?;
    let capacity_column = header.require("capacity")?;
    let (count_column, count_kind) = match (header.find("occupied"), header.find("free")) {
        (Some(column), None) => (column, CountKind::Occupied),
        (None, Some(column)) => (column, CountKind::Free),
        (Some(_), Some(_)) => {
            return Err(ImportError::ConflictingColumns {
                path: path.to_path_buf(),
                first: "occupied".to_owned(),
                second: "free".to_owned(),
            });
        }
        (None, None) => {
            return Err(ImportError::MissingColumn {
                path: path.to_path_buf(),
                column: "occupied or free".to_owned(),
            });
        }
    };

    let mut lots = KeyIndex::default();
    let mut previous_reading: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut dst_counts = DstCounts::default();
    let mut rows = Vec::new();
    let mut fields = csv::ByteRecord::new();
    while reader
        .read_byte_record(&mut fields)
        .map_err(|error| csv_error(path, error))?
    {
        let record = Record::new(path, &fields, &header)?;
        let lot = lots.index_of(record.required_text(lot_column)?);
        if previous_reading.len() < lots.len() {
            previous_reading.push(None);
        }
        let time_text = record.required_text(time_column)?;
        let ts = match parse_timestamp(time_text) {
            Some(Timestamp::Instant(instant)) => instant.with_timezone(&Utc),
            Some(Timestamp::Naive(local)) => {
                let Some(timezone) = options.timezone else {
                    return Err(record.malformed(
                        time_column,
                        format!(
                            "{time_text:?} has no UTC offset; pass --timezone with the IANA zone of the data \
                             (e.g. Europe/London) or write RFC 3339 timestamps with an offset"
                        ),
                    ));
                };
                let resolved = resolve_local_time(timezone, local, previous_reading[lot as usize])
                    .ok_or_else(|| {
                        record.malformed(
                            time_column,
                            format!("{time_text:?} has no instant in {timezone}"),
                        )
                    })?;
                dst_counts.record(resolved.kind);
                resolved.utc
            }
            None => {
                return Err(record.malformed(
                    time_column,
                    format!(
                        "{time_text:?} is not a timestamp; expected RFC 3339 (2016-10-30T01:30:00+01:00) or \
                         YYYY-MM-DD HH:MM[:SS] local time"
                    ),
                ));
            }
        };
        previous_reading[lot as usize] = Some(ts);
        let count = record.integer(count_column)?;
        let capacity = match record.text(capacity_column)? {
            "" => None,
            text => match text.parse::<i32>() {
                Ok(capacity) if capacity > 0 => Some(capacity),
                Ok(_) => {
                    return Err(record
                        .malformed(capacity_column, format!("capacity {text} is not positive")));
                }
                Err(_) => {
                    return Err(
                        record.malformed(capacity_column, format!("{text:?} is not an integer"))
                    );
                }
            },
        };
        rows.push(RawCount {
            lot,
            ts,
            count,
            capacity,
            line: record.line,
        });
    }
    if rows.is_empty() {
        return Err(ImportError::NoRows {
            path: path.to_path_buf(),
        });
    }
    let rows_read = rows.len() as u64;

    progress.stage("cleaning counters", None);
    let mut tally = CLEANING.tally();
    let cleaned = CLEANING.run(rows, count_kind, dst_counts, &mut tally);
    if let Some(lot) = cleaned.lots_without_capacity.first() {
        return Err(ImportError::LotWithoutCapacity {
            path: path.to_path_buf(),
            lot_id: lots.keys()[*lot as usize].clone(),
        });
    }
    let readings = cleaned.readings;
    let counter_lots: Vec<CounterLot> = lots
        .keys()
        .iter()
        .map(|lot_id| CounterLot {
            lot_id: format!("{}:{lot_id}", options.writer),
            name: lot_id.clone(),
            kind: "unknown",
            latitude: None,
            longitude: None,
        })
        .collect();
    let coverage = GridCoverage::measure(&options.writer, &readings, options.hold_minutes);
    if let Some(warning) = coverage.as_ref().and_then(GridCoverage::warning) {
        tracing::warn!(source = %options.writer, "{warning}");
    }
    let import = CounterImport {
        site: &site,
        lots: &counter_lots,
        readings: &readings,
        tally,
        rows_read,
        hold_minutes: options.hold_minutes,
        coverage,
    };
    write_counter_import(import, warehouse, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_names_are_safe_file_names() {
        assert_eq!(writer_name("Leeds"), "csv-leeds");
        assert_eq!(
            writer_name(" north garages/2024 "),
            "csv-north-garages-2024"
        );
        assert_eq!(writer_name("a_b-c"), "csv-a_b-c");
        assert_eq!(writer_name(""), "csv-unnamed");
    }

    #[test]
    fn timestamps_with_an_offset_are_instants_and_others_local() {
        assert!(matches!(
            parse_timestamp("2016-10-30T01:30:00+01:00"),
            Some(Timestamp::Instant(_))
        ));
        assert!(matches!(
            parse_timestamp("2016-10-30 00:30:00Z"),
            Some(Timestamp::Instant(_))
        ));
        assert!(matches!(
            parse_timestamp("2016-10-30 01:30"),
            Some(Timestamp::Naive(_))
        ));
        assert!(parse_timestamp("30/10/2016 01:30").is_none());
    }
}
