//! Municipal garages of Málaga: free-space counters scraped about every 10 minutes since 2022.
//!
//! `free_spaces_long.csv.gz` (CRLF line ends) has `scrape_time_local,lot_key,lot_name,capacity,
//! free_spaces,source_update_time,format`, the time local (Europe/Madrid) to the minute. The file is
//! grouped by day, but the days and the rows within a day are shuffled, so a lot's rows are put in
//! local-time order before local times are resolved. Two formats alternate over the years: `full`
//! rows carry a capacity (a number, `None` or `-1`) and a name, `short` rows neither. `free_spaces`
//! is `-1` when the source had no data. `lots.csv` names and places the two-letter garages; the
//! `poi*` keys are only named by their rows' `lot_name`.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Europe::Madrid;
use flate2::read::MultiGzDecoder;
use parkcast_warehouse::Warehouse;

use super::common::{
    Header, KeyIndex, Record, SourceSite, csv_error, csv_reader, io_error, open_with_progress,
};
use super::counter::{
    Capacities, CountKind, CounterCleaning, CounterImport, CounterLot, RawCount,
    write_counter_import,
};
use super::local_time::{DstCounts, parse_naive_datetime, resolve_local_time};
use super::rules::Rule;
use super::{ImportError, ImportReport};
use crate::progress::Progress;

/// Writer name and `source` of the rows.
pub(crate) const WRITER: &str = "malaga";

/// A garage's free count that does not change for longer than this is a frozen feed. The source
/// served stale values for long stretches: from 27 May 2022 to 21 Aug 2023 every two-letter garage
/// repeats one value (54,481 readings each), and all garages freeze together for days several times
/// (Dec 2023, Apr 2024, Jul 2025, ...). A real garage's count moves within a day, even at night;
/// Birmingham has no run of even a day.
const LONGEST_UNCHANGED_FREE_COUNT: TimeDelta = TimeDelta::hours(24);

/// The rules, in the order they are applied.
const CLEANING: CounterCleaning = CounterCleaning {
    source_rules: &[Rule::NoDataSentinelDropped],
    free_counts: true,
    longest_unchanged: Some(LONGEST_UNCHANGED_FREE_COUNT),
    capacities: Capacities::FromLotElseMaxFree,
};

fn site() -> SourceSite {
    SourceSite {
        writer: WRITER.to_owned(),
        zone_id: "mlg:malaga".to_owned(),
        zone_name: "Málaga".to_owned(),
        city: "Málaga".to_owned(),
        timezone: Madrid,
        holiday_region: Some("ES-AN".to_owned()),
        calendar_file: None,
    }
}

/// A garage of `lots.csv`.
#[derive(Debug, Clone, PartialEq)]
struct KnownLot {
    name: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// One row with data, before its local time is resolved.
#[derive(Debug, Clone, Copy)]
struct FreeSpacesRow {
    lot: u32,
    local: NaiveDateTime,
    free: i32,
    capacity: Option<i32>,
    line: u64,
}

/// The name the rows give a lot: the one of its latest row that has a name.
#[derive(Debug, Clone)]
struct NameSeen {
    local: NaiveDateTime,
    name: String,
}

/// Imports `free_spaces_long.csv.gz` with the names and coordinates of `lots.csv`.
pub(crate) fn import(
    free_spaces_csv_gz: &Path,
    lots_csv: &Path,
    warehouse: &Warehouse,
    progress: &dyn Progress,
) -> Result<ImportReport, ImportError> {
    let site = site();
    let known_lots = read_lots(lots_csv)?;

    let input = open_with_progress(free_spaces_csv_gz, "reading Málaga free spaces", progress)?;
    let mut reader = csv_reader(MultiGzDecoder::new(input));
    let path = free_spaces_csv_gz;
    let header = Header::read(path, &mut reader)?;
    let time_column = header.require("scrape_time_local")?;
    let key_column = header.require("lot_key")?;
    let name_column = header.require("lot_name")?;
    let capacity_column = header.require("capacity")?;
    let free_column = header.require("free_spaces")?;

    let mut lots = KeyIndex::default();
    let mut names_seen: Vec<Option<NameSeen>> = Vec::new();
    let mut rows: Vec<FreeSpacesRow> = Vec::new();
    let mut rows_read = 0_u64;
    let mut sentinels = 0_u64;
    let mut fields = csv::ByteRecord::new();
    while reader
        .read_byte_record(&mut fields)
        .map_err(|error| csv_error(path, error))?
    {
        rows_read += 1;
        let record = Record::new(path, &fields, &header)?;
        let time_text = record.required_text(time_column)?;
        let local = parse_naive_datetime(time_text).ok_or_else(|| {
            record.malformed(
                time_column,
                format!("{time_text:?} is not a time of the form YYYY-MM-DD HH:MM"),
            )
        })?;
        let lot = lots.index_of(record.required_text(key_column)?);
        if names_seen.len() < lots.len() {
            names_seen.push(None);
        }
        let name = record.text(name_column)?;
        let name_slot = &mut names_seen[lot as usize];
        if !name.is_empty() && name_slot.as_ref().is_none_or(|seen| seen.local < local) {
            match name_slot {
                Some(seen) if seen.name == name => seen.local = local,
                _ => {
                    *name_slot = Some(NameSeen {
                        local,
                        name: name.to_owned(),
                    })
                }
            }
        }
        let Some(free) = free_count(&record, free_column)? else {
            sentinels += 1;
            continue;
        };
        let capacity = capacity(&record, capacity_column)?;
        rows.push(FreeSpacesRow {
            lot,
            local,
            free,
            capacity,
            line: record.line,
        });
    }
    if rows_read == 0 {
        return Err(ImportError::NoRows {
            path: path.to_path_buf(),
        });
    }

    progress.stage("cleaning Málaga free spaces", None);
    let mut tally = CLEANING.tally();
    tally.add(Rule::NoDataSentinelDropped, sentinels);
    let (resolved, dst_counts) = resolve_in_local_order(rows, site.timezone, path)?;
    let cleaned = CLEANING.run(resolved, CountKind::Free, dst_counts, &mut tally);
    if !cleaned.lots_without_capacity.is_empty() {
        let names: Vec<&str> = cleaned
            .lots_without_capacity
            .iter()
            .map(|lot| lots.keys()[*lot as usize].as_str())
            .collect();
        tracing::info!(
            lots = %names.join(", "),
            "Málaga lots that never report a capacity get the largest free count they reported"
        );
    }
    let readings = cleaned.readings;

    let counter_lots: Vec<CounterLot> = lots
        .keys()
        .iter()
        .zip(&names_seen)
        .map(|(key, name_seen)| {
            let known = known_lots.get(key);
            let name = known
                .map(|known| known.name.clone())
                .or_else(|| name_seen.as_ref().map(|seen| seen.name.clone()))
                .unwrap_or_else(|| key.clone());
            CounterLot {
                lot_id: format!("mlg:{key}"),
                name,
                kind: "garage",
                latitude: known.and_then(|known| known.latitude),
                longitude: known.and_then(|known| known.longitude),
            }
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

/// The free count of a row, or `None` for the source's "no data" (`-1` or empty).
fn free_count(record: &Record<'_>, column: usize) -> Result<Option<i32>, ImportError> {
    let text = record.text(column)?;
    if matches!(text, "" | "-1") {
        return Ok(None);
    }
    match text.parse::<i32>() {
        Ok(free) if free >= 0 => Ok(Some(free)),
        _ => Err(record.malformed(
            column,
            format!("{text:?} is neither a count nor -1 (no data)"),
        )),
    }
}

/// The capacity of a row, or `None` when it gives none (`None`, `-1` or empty).
fn capacity(record: &Record<'_>, column: usize) -> Result<Option<i32>, ImportError> {
    let text = record.text(column)?;
    if matches!(text, "" | "None" | "-1") {
        return Ok(None);
    }
    match text.parse::<i32>() {
        Ok(capacity) if capacity > 0 => Ok(Some(capacity)),
        _ => Err(record.malformed(
            column,
            format!("{text:?} is neither a capacity nor None, -1 or empty"),
        )),
    }
}

/// Resolves local times lot by lot in local-time order (file order among equal times), as the file
/// order says nothing about time.
fn resolve_in_local_order(
    mut rows: Vec<FreeSpacesRow>,
    timezone: chrono_tz::Tz,
    path: &Path,
) -> Result<(Vec<RawCount>, DstCounts), ImportError> {
    rows.sort_unstable_by_key(|row| (row.lot, row.local, row.line));
    let mut dst_counts = DstCounts::default();
    let mut resolved_rows = Vec::with_capacity(rows.len());
    let mut previous: Option<(u32, DateTime<Utc>)> = None;
    for row in rows {
        let previous_reading = previous
            .filter(|(lot, _)| *lot == row.lot)
            .map(|(_, ts)| ts);
        let resolved =
            resolve_local_time(timezone, row.local, previous_reading).ok_or_else(|| {
                ImportError::Malformed {
                    path: path.to_path_buf(),
                    line: row.line,
                    column: "scrape_time_local".to_owned(),
                    message: format!("{} has no instant in {timezone}", row.local),
                }
            })?;
        dst_counts.record(resolved.kind);
        previous = Some((row.lot, resolved.utc));
        resolved_rows.push(RawCount {
            lot: row.lot,
            ts: resolved.utc,
            count: row.free,
            capacity: row.capacity,
            line: row.line,
        });
    }
    Ok((resolved_rows, dst_counts))
}

/// Reads `lots.csv`: `id`, `nombre`, `latitude`, `longitude` (other columns ignored).
fn read_lots(path: &Path) -> Result<HashMap<String, KnownLot>, ImportError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = csv_reader(file);
    let header = Header::read(path, &mut reader)?;
    let id_column = header.require("id")?;
    let name_column = header.require("nombre")?;
    let latitude_column = header.require("latitude")?;
    let longitude_column = header.require("longitude")?;
    let mut lots = HashMap::new();
    let mut fields = csv::ByteRecord::new();
    while reader
        .read_byte_record(&mut fields)
        .map_err(|error| csv_error(path, error))?
    {
        let record = Record::new(path, &fields, &header)?;
        let coordinate = |column: usize| -> Result<Option<f64>, ImportError> {
            match record.text(column)? {
                "" => Ok(None),
                text => text
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|_| record.malformed(column, format!("{text:?} is not a coordinate"))),
            }
        };
        let lot = KnownLot {
            name: record.required_text(name_column)?.to_owned(),
            latitude: coordinate(latitude_column)?,
            longitude: coordinate(longitude_column)?,
        };
        lots.insert(record.required_text(id_column)?.to_owned(), lot);
    }
    Ok(lots)
}
