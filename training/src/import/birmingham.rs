//! UCI "Parking Birmingham": occupancy counters of about 30 car parks, Oct-Dec 2016.
//!
//! `parking_birmingham.csv` has `SystemCodeNumber,Capacity,Occupancy,LastUpdated`, the time local
//! (Europe/London) with seconds, about every 30 minutes from 08:00 to 16:30. Each car park's rows
//! are in time order. Its defects (exact duplicate rows, counts above capacity, a few negative
//! counts) are handled by the shared counter rules; nothing is specific to this source.

use std::path::Path;

use chrono::{DateTime, Utc};
use chrono_tz::Europe::London;
use parkcast_warehouse::Warehouse;

use super::common::{
    Header, KeyIndex, Record, SourceSite, csv_error, csv_reader, open_with_progress,
};
use super::counter::{
    Capacities, CountKind, CounterCleaning, CounterImport, CounterLot, RawCount,
    write_counter_import,
};
use super::local_time::{DstCounts, parse_naive_datetime, resolve_local_time};
use super::{ImportError, ImportReport};
use crate::progress::Progress;

/// Writer name and `source` of the rows.
pub(crate) const WRITER: &str = "birmingham";

/// The rules, in the order they are applied.
const CLEANING: CounterCleaning = CounterCleaning {
    source_rules: &[],
    free_counts: false,
    longest_unchanged: None,
    capacities: Capacities::Given,
};

fn site() -> SourceSite {
    SourceSite {
        writer: WRITER.to_owned(),
        zone_id: "bhm:birmingham".to_owned(),
        zone_name: "Birmingham".to_owned(),
        city: "Birmingham".to_owned(),
        timezone: London,
        holiday_region: Some("GB-ENG".to_owned()),
        calendar_file: None,
    }
}

/// Imports `parking_birmingham.csv`.
pub(crate) fn import(
    path: &Path,
    warehouse: &Warehouse,
    progress: &dyn Progress,
) -> Result<ImportReport, ImportError> {
    let site = site();
    let mut reader = csv_reader(open_with_progress(
        path,
        "reading Birmingham counters",
        progress,
    )?);
    let header = Header::read(path, &mut reader)?;
    let code_column = header.require("SystemCodeNumber")?;
    let capacity_column = header.require("Capacity")?;
    let occupancy_column = header.require("Occupancy")?;
    let time_column = header.require("LastUpdated")?;

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
        let code = record.required_text(code_column)?;
        let capacity = record.integer(capacity_column)?;
        if capacity <= 0 {
            return Err(record.malformed(
                capacity_column,
                format!("capacity {capacity} is not positive"),
            ));
        }
        let occupancy = record.integer(occupancy_column)?;
        let time_text = record.required_text(time_column)?;
        let local = parse_naive_datetime(time_text).ok_or_else(|| {
            record.malformed(
                time_column,
                format!("{time_text:?} is not a time of the form YYYY-MM-DD HH:MM:SS"),
            )
        })?;
        let lot = lots.index_of(code);
        if previous_reading.len() < lots.len() {
            previous_reading.push(None);
        }
        let resolved = resolve_local_time(site.timezone, local, previous_reading[lot as usize])
            .ok_or_else(|| {
                record.malformed(
                    time_column,
                    format!("{time_text:?} has no instant in {}", site.timezone),
                )
            })?;
        dst_counts.record(resolved.kind);
        previous_reading[lot as usize] = Some(resolved.utc);
        rows.push(RawCount {
            lot,
            ts: resolved.utc,
            count: occupancy,
            capacity: Some(capacity),
            line: record.line,
        });
    }
    if rows.is_empty() {
        return Err(ImportError::NoRows {
            path: path.to_path_buf(),
        });
    }
    let rows_read = rows.len() as u64;

    progress.stage("cleaning Birmingham counters", None);
    let mut tally = CLEANING.tally();
    let readings = CLEANING
        .run(rows, CountKind::Occupied, dst_counts, &mut tally)
        .readings;
    let counter_lots: Vec<CounterLot> = lots
        .keys()
        .iter()
        .map(|code| CounterLot {
            lot_id: format!("bhm:{code}"),
            name: code.clone(),
            kind: "garage",
            latitude: None,
            longitude: None,
        })
        .collect();
    let import = CounterImport {
        site: &site,
        lots: &counter_lots,
        readings: &readings,
        tally,
        rows_read,
        hold_minutes: None,
        coverage: None,
    };
    write_counter_import(import, warehouse, progress)
}
