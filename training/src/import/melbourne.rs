//! City of Melbourne on-street bay sensors: every stay of one day, with the bays' locations.
//!
//! `bay_events_<date>.csv` has `bay_id,in_violation,arrival_time,departure_time`, local time
//! (Australia/Melbourne) with seconds, one row per stay, the rows of a bay together and in time
//! order. `bay_locations.json` is a GeoJSON FeatureCollection of bay points whose properties name the
//! street block (`bayId`, `Street`, `BetweenStreet1`, `BetweenStreet2`).
//!
//! Stays become sessions and slot status changes; lot occupancy is derived from the changes with the
//! same rule serving uses ([`lot_occupancy`]), so a lot's occupancy at an instant is the number of its
//! stays covering it. The module docs of `import` list the rules.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Australia::Melbourne;
use parkcast_features::occupancy::{Grid, Reading, lot_occupancy};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::rows::{
    LotOccupancyRow, LotRow, ParkingSessionRow, SlotRow, SlotStatusRow,
};
use serde::Deserialize;

use super::common::{
    Header, KeyIndex, Record, SourceSite, TableWriter, csv_error, csv_reader, io_error,
    open_with_progress, slug,
};
use super::local_time::{DstCounts, parse_naive_datetime, resolve_local_time};
use super::rules::{Rule, RuleTally};
use super::{ImportError, ImportReport};
use crate::progress::Progress;

/// Writer name and `source` of the rows.
pub(crate) const WRITER: &str = "melbourne";

/// Lot of the bays the location file does not place.
const UNLOCATED_LOT_ID: &str = "mel:unlocated";

/// The rules, in the order they are applied.
const RULES: [Rule; 7] = [
    Rule::DstAmbiguousResolved,
    Rule::DstGapShifted,
    Rule::DepartureMissingKeptOpen,
    Rule::DepartureBeforeArrivalDropped,
    Rule::OverlappingStayTrimmed,
    Rule::BayWithoutLocation,
    Rule::InitialFreeAssumed,
];

fn site() -> SourceSite {
    SourceSite {
        writer: WRITER.to_owned(),
        zone_id: "mel:melbourne".to_owned(),
        zone_name: "City of Melbourne".to_owned(),
        city: "Melbourne".to_owned(),
        timezone: Melbourne,
        holiday_region: Some("AU-VIC".to_owned()),
        calendar_file: None,
    }
}

#[derive(Debug, Deserialize)]
struct FeatureCollection {
    features: Vec<Feature>,
}

#[derive(Debug, Deserialize)]
struct Feature {
    #[serde(default)]
    geometry: Option<Geometry>,
    properties: BayProperties,
}

#[derive(Debug, Deserialize)]
struct Geometry {
    /// `[longitude, latitude]` for a point; other geometries leave the bay without coordinates.
    #[serde(default)]
    coordinates: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct BayProperties {
    #[serde(rename = "bayId")]
    bay_id: TextOrNumber,
    #[serde(rename = "Street", default)]
    street: Option<String>,
    #[serde(rename = "BetweenStreet1", default)]
    between_street_1: Option<String>,
    #[serde(rename = "BetweenStreet2", default)]
    between_street_2: Option<String>,
}

/// Bay ids are strings in the 2015 file and numbers in some later exports.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TextOrNumber {
    Text(String),
    Number(serde_json::Number),
}

impl TextOrNumber {
    fn into_text(self) -> String {
        match self {
            TextOrNumber::Text(text) => text.trim().to_owned(),
            TextOrNumber::Number(number) => number.to_string(),
        }
    }
}

/// A street block: street and the two cross streets, as the location file spells them.
type Block = (String, String, String);

/// Where a bay is.
#[derive(Debug, Clone, PartialEq)]
struct BayLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
    /// `None` when the file gives no street.
    block: Option<Block>,
}

/// One stay, its times in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stay {
    bay: u32,
    in_violation: bool,
    arrival: DateTime<Utc>,
    /// `None` while open: the source did not record the departure.
    departure: Option<DateTime<Utc>>,
    line: u64,
}

/// Imports one day of stays with the bay locations, deriving lot occupancy every `interval_minutes`.
pub(crate) fn import(
    events_csv: &Path,
    locations_json: &Path,
    interval_minutes: u32,
    warehouse: &Warehouse,
    progress: &dyn Progress,
) -> Result<ImportReport, ImportError> {
    if interval_minutes == 0 {
        return Err(ImportError::InvalidInterval { interval_minutes });
    }
    let site = site();
    progress.stage("reading Melbourne bay locations", None);
    let locations = read_locations(locations_json)?;
    let mut tally = RuleTally::new(&RULES);
    let mut bays = KeyIndex::default();
    let (stays_read, rows_read) = read_stays(events_csv, &site, &mut bays, &mut tally, progress)?;

    progress.stage("cleaning Melbourne stays", None);
    let stays = trim_overlapping_stays(stays_read, &mut tally);
    let layout = BlockLayout::new(bays.keys(), &locations);
    tally.add(Rule::BayWithoutLocation, layout.bays_without_location);

    let first_ts = stays.iter().map(|stay| stay.arrival).min();
    let last_ts = stays
        .iter()
        .map(|stay| stay.departure.unwrap_or(stay.arrival))
        .max();
    let mut session_rows = Vec::with_capacity(stays.len());
    let mut status_rows = Vec::with_capacity(2 * stays.len());
    let mut readings_of_lot: Vec<Vec<Reading>> = vec![Vec::new(); layout.lots.len()];
    let mut stays_of_bay = vec![0_u32; bays.len()];
    let mut events_of_bay = vec![0_u64; bays.len()];
    for stay in &stays {
        let bay = stay.bay as usize;
        let bay_id = &bays.keys()[bay];
        let slot_id = format!("mel:{bay_id}");
        let lot = layout.lot_of_bay[bay];
        let lot_id = &layout.lots[lot].lot_id;
        stays_of_bay[bay] += 1;
        session_rows.push(ParkingSessionRow {
            session_id: format!("mel:{bay_id}:{}", stays_of_bay[bay]),
            slot_id: slot_id.clone(),
            lot_id: lot_id.clone(),
            vehicle_id: None,
            customer_id: None,
            entry_ts: stay.arrival,
            exit_ts: stay.departure,
            allowed_minutes: None,
            in_violation: stay.in_violation,
            source: WRITER.to_owned(),
        });
        let changes = [
            Some((stay.arrival, true)),
            stay.departure.map(|departure| (departure, false)),
        ];
        for (ts, occupied) in changes.into_iter().flatten() {
            events_of_bay[bay] += 1;
            status_rows.push(SlotStatusRow {
                ts,
                received_ts: ts,
                slot_id: slot_id.clone(),
                lot_id: lot_id.clone(),
                occupied,
                kind: "change".to_owned(),
                sensor_seq: events_of_bay[bay],
                source: WRITER.to_owned(),
            });
            readings_of_lot[lot].push(Reading {
                slot: layout.slot_in_lot[bay],
                ts_ms: ts.timestamp_millis(),
                seq: events_of_bay[bay],
                occupied,
            });
        }
    }

    let (occupancy_rows, calendar_rows) = match (first_ts, last_ts) {
        (Some(first), Some(last)) => {
            let grid = day_grid(&site, first, last, interval_minutes);
            tally.add(Rule::InitialFreeAssumed, bays.len() as u64);
            let occupancy = derive_occupancy(&layout, readings_of_lot, grid, progress);
            (occupancy, site.calendar_rows(warehouse, first, last)?)
        }
        _ => (Vec::new(), None),
    };
    let slot_rows: Vec<SlotRow> = bays
        .keys()
        .iter()
        .enumerate()
        .map(|(bay, bay_id)| {
            let location = locations.get(bay_id);
            SlotRow {
                slot_id: format!("mel:{bay_id}"),
                lot_id: layout.lots[layout.lot_of_bay[bay]].lot_id.clone(),
                slot_type: "standard".to_owned(),
                latitude: location.and_then(|location| location.latitude),
                longitude: location.and_then(|location| location.longitude),
                source: WRITER.to_owned(),
            }
        })
        .collect();
    let lot_rows: Vec<LotRow> = layout
        .lots
        .iter()
        .map(|lot| LotRow {
            lot_id: lot.lot_id.clone(),
            zone_id: site.zone_id.clone(),
            name: lot.name.clone(),
            kind: "street_zone".to_owned(),
            capacity: i32::try_from(lot.bays.len())
                .expect("a street block should have fewer than 2^31 bays"),
            latitude: lot.latitude,
            longitude: lot.longitude,
            timezone: site.timezone.name().to_owned(),
            holiday_region: site.holiday_region_text(),
            source: WRITER.to_owned(),
            // Occupancy is derived on a grid from the stays: nothing to hold.
            hold_minutes: None,
        })
        .collect();

    let mut writer = TableWriter::new(warehouse, WRITER, 7, progress);
    writer.replace(&session_rows)?;
    writer.replace(&status_rows)?;
    writer.replace(&occupancy_rows)?;
    writer.replace(&slot_rows)?;
    writer.replace(&lot_rows)?;
    writer.replace(&[site.zone_row()])?;
    writer.replace_calendar(calendar_rows, site.calendar_file.as_ref())?;
    Ok(ImportReport {
        source: WRITER.to_owned(),
        rows_read,
        rules: tally.into_counts(),
        written: writer.finish(),
        lots: lot_rows.len(),
        first_ts,
        last_ts,
        coverage: None,
    })
}

/// Reads the bay locations by bay id.
fn read_locations(path: &Path) -> Result<HashMap<String, BayLocation>, ImportError> {
    let file = File::open(path).map_err(io_error(path))?;
    let collection: FeatureCollection =
        serde_json::from_reader(BufReader::new(file)).map_err(|source| ImportError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    let text = |value: Option<String>| {
        value
            .map(|value| value.trim().to_owned())
            .unwrap_or_default()
    };
    let mut locations = HashMap::with_capacity(collection.features.len());
    for feature in collection.features {
        let coordinates =
            feature
                .geometry
                .as_ref()
                .and_then(|geometry| match geometry.coordinates.as_array() {
                    Some(pair) if pair.len() == 2 => pair[1].as_f64().zip(pair[0].as_f64()),
                    _ => None,
                });
        let properties = feature.properties;
        let street = text(properties.street);
        let block = (!street.is_empty()).then(|| {
            (
                street,
                text(properties.between_street_1),
                text(properties.between_street_2),
            )
        });
        let location = BayLocation {
            latitude: coordinates.map(|(latitude, _)| latitude),
            longitude: coordinates.map(|(_, longitude)| longitude),
            block,
        };
        locations.insert(properties.bay_id.into_text(), location);
    }
    Ok(locations)
}

/// Whether a departure field is the source's null: empty, or the date 1900-01-01.
fn is_missing_departure(text: &str) -> bool {
    text.is_empty() || text.starts_with("1900-01-01")
}

/// Reads the stays, resolving local times bay by bay in file order. Counts the departure rules.
fn read_stays(
    path: &Path,
    site: &SourceSite,
    bays: &mut KeyIndex,
    tally: &mut RuleTally,
    progress: &dyn Progress,
) -> Result<(Vec<Stay>, u64), ImportError> {
    let mut reader = csv_reader(open_with_progress(
        path,
        "reading Melbourne stays",
        progress,
    )?);
    let header = Header::read(path, &mut reader)?;
    let bay_column = header.require("bay_id")?;
    let violation_column = header.require("in_violation")?;
    let arrival_column = header.require("arrival_time")?;
    let departure_column = header.require("departure_time")?;

    let mut previous_reading: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut dst_counts = DstCounts::default();
    let (mut rows_read, mut missing_departures, mut reversed) = (0_u64, 0_u64, 0_u64);
    let mut stays = Vec::new();
    let mut fields = csv::ByteRecord::new();
    while reader
        .read_byte_record(&mut fields)
        .map_err(|error| csv_error(path, error))?
    {
        rows_read += 1;
        let record = Record::new(path, &fields, &header)?;
        let bay = bays.index_of(record.required_text(bay_column)?);
        if previous_reading.len() < bays.len() {
            previous_reading.push(None);
        }
        let in_violation = match record.text(violation_column)? {
            "0" | "false" | "False" | "FALSE" => false,
            "1" | "true" | "True" | "TRUE" => true,
            text => {
                return Err(record.malformed(violation_column, format!("{text:?} is not 0 or 1")));
            }
        };
        let mut resolve = |column: usize, text: &str| -> Result<DateTime<Utc>, ImportError> {
            let local = parse_naive_datetime(text).ok_or_else(|| {
                record.malformed(
                    column,
                    format!("{text:?} is not a time of the form YYYY-MM-DD HH:MM:SS"),
                )
            })?;
            let resolved = resolve_local_time(site.timezone, local, previous_reading[bay as usize])
                .ok_or_else(|| {
                    record.malformed(
                        column,
                        format!("{text:?} has no instant in {}", site.timezone),
                    )
                })?;
            dst_counts.record(resolved.kind);
            previous_reading[bay as usize] = Some(resolved.utc);
            Ok(resolved.utc)
        };
        let arrival = resolve(arrival_column, record.required_text(arrival_column)?)?;
        let departure_text = record.text(departure_column)?;
        let departure = if is_missing_departure(departure_text) {
            missing_departures += 1;
            None
        } else {
            let departure = resolve(departure_column, departure_text)?;
            if departure < arrival {
                reversed += 1;
                continue;
            }
            Some(departure)
        };
        stays.push(Stay {
            bay,
            in_violation,
            arrival,
            departure,
            line: record.line,
        });
    }
    if rows_read == 0 {
        return Err(ImportError::NoRows {
            path: path.to_path_buf(),
        });
    }
    tally.add(Rule::DstAmbiguousResolved, dst_counts.ambiguous);
    tally.add(Rule::DstGapShifted, dst_counts.gap);
    tally.add(Rule::DepartureMissingKeptOpen, missing_departures);
    tally.add(Rule::DepartureBeforeArrivalDropped, reversed);
    Ok((stays, rows_read))
}

/// Sorts stays by bay and arrival (file order on ties) and ends every stay, open ones included, no
/// later than the arrival of the bay's next stay, counting `overlapping_stay_trimmed`.
fn trim_overlapping_stays(mut stays: Vec<Stay>, tally: &mut RuleTally) -> Vec<Stay> {
    stays.sort_unstable_by_key(|stay| (stay.bay, stay.arrival, stay.line));
    let mut trimmed = 0_u64;
    for index in 1..stays.len() {
        let (earlier, later) = stays.split_at_mut(index);
        let previous = &mut earlier[index - 1];
        let stay = &later[0];
        if previous.bay == stay.bay
            && previous
                .departure
                .is_none_or(|departure| stay.arrival < departure)
        {
            previous.departure = Some(stay.arrival);
            trimmed += 1;
        }
    }
    tally.add(Rule::OverlappingStayTrimmed, trimmed);
    stays
}

/// A lot of Melbourne: a street block, or the bays without a location.
#[derive(Debug, Clone, PartialEq)]
struct BlockLot {
    lot_id: String,
    name: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
    /// Indices of the lot's bays, ascending.
    bays: Vec<u32>,
}

/// Which lot each bay belongs to.
#[derive(Debug, Clone, PartialEq)]
struct BlockLayout {
    /// Lots, ordered by block (the unlocated lot first).
    lots: Vec<BlockLot>,
    /// Index into `lots` per bay index.
    lot_of_bay: Vec<usize>,
    /// Index of each bay among its lot's bays.
    slot_in_lot: Vec<u32>,
    /// Bays the location file does not place in a block.
    bays_without_location: u64,
}

impl BlockLayout {
    fn new(bay_ids: &[String], locations: &HashMap<String, BayLocation>) -> Self {
        let mut by_block: BTreeMap<Option<&Block>, Vec<u32>> = BTreeMap::new();
        for (bay, bay_id) in bay_ids.iter().enumerate() {
            let block = locations
                .get(bay_id)
                .and_then(|location| location.block.as_ref());
            let bay = u32::try_from(bay).expect("bay indices should fit in u32");
            by_block.entry(block).or_default().push(bay);
        }
        let bays_without_location = by_block.get(&None).map_or(0, |bays| bays.len() as u64);
        let mut lots = Vec::with_capacity(by_block.len());
        let mut lot_of_bay = vec![0; bay_ids.len()];
        let mut slot_in_lot = vec![0; bay_ids.len()];
        let mut used_ids = HashSet::new();
        for (block, bays) in by_block {
            let (base_id, name) = match block {
                None => (
                    UNLOCATED_LOT_ID.to_owned(),
                    "Bays without a location".to_owned(),
                ),
                Some(block) => (block_lot_id(block), block_name(block)),
            };
            // Slugs of different spellings could meet; a suffix keeps lot ids unique.
            let mut lot_id = base_id.clone();
            let mut suffix = 2;
            while !used_ids.insert(lot_id.clone()) {
                lot_id = format!("{base_id}-{suffix}");
                suffix += 1;
            }
            let coordinates: Vec<(f64, f64)> = bays
                .iter()
                .filter_map(|bay| locations.get(&bay_ids[*bay as usize]))
                .filter_map(|location| location.latitude.zip(location.longitude))
                .collect();
            let mean = |pick: fn(&(f64, f64)) -> f64| {
                (!coordinates.is_empty())
                    .then(|| coordinates.iter().map(pick).sum::<f64>() / coordinates.len() as f64)
            };
            for (slot, bay) in bays.iter().enumerate() {
                lot_of_bay[*bay as usize] = lots.len();
                slot_in_lot[*bay as usize] =
                    u32::try_from(slot).expect("slot indices should fit in u32");
            }
            lots.push(BlockLot {
                lot_id,
                name,
                latitude: mean(|pair| pair.0),
                longitude: mean(|pair| pair.1),
                bays,
            });
        }
        BlockLayout {
            lots,
            lot_of_bay,
            slot_in_lot,
            bays_without_location,
        }
    }
}

/// `mel:<street>--<between 1>--<between 2>`, slugs of the non-empty parts.
fn block_lot_id(block: &Block) -> String {
    let parts: Vec<String> = [&block.0, &block.1, &block.2]
        .into_iter()
        .map(|part| slug(part))
        .filter(|part| !part.is_empty())
        .collect();
    format!("mel:{}", parts.join("--"))
}

fn block_name(block: &Block) -> String {
    let (street, first, second) = block;
    match (first.is_empty(), second.is_empty()) {
        (false, false) => format!("{street} between {first} and {second}"),
        (false, true) => format!("{street} near {first}"),
        (true, false) => format!("{street} near {second}"),
        (true, true) => street.clone(),
    }
}

/// The grid from local midnight of the first instant's day to local midnight after the last
/// instant's day.
fn day_grid(
    site: &SourceSite,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    interval_minutes: u32,
) -> Grid {
    let first_day = site.local_date(first);
    let day_after_last = site.local_date(last) + Days::new(1);
    let midnight = |date: NaiveDate| {
        parkcast_localtime::day_start(site.timezone, date)
            .expect("a lot's dates are within chrono's range")
    };
    Grid::new(
        midnight(first_day),
        midnight(day_after_last),
        interval_minutes,
    )
}

/// Occupancy of every lot on the grid from its bays' status changes (`readings_of_lot`, sequence
/// numbers from 1): every bay first gets a free reading at the grid start (sequence 0, so a change
/// at that very instant still wins), and no silence limit applies, as the source has no heartbeats.
fn derive_occupancy(
    layout: &BlockLayout,
    readings_of_lot: Vec<Vec<Reading>>,
    grid: Grid,
    progress: &dyn Progress,
) -> Vec<LotOccupancyRow> {
    progress.stage("deriving lot occupancy", Some(layout.lots.len() as u64));
    let mut rows = Vec::new();
    for (lot, mut readings) in layout.lots.iter().zip(readings_of_lot) {
        let capacity =
            i32::try_from(lot.bays.len()).expect("a street block should have fewer than 2^31 bays");
        for slot_index in 0..lot.bays.len() {
            let slot = u32::try_from(slot_index).expect("slot indices should fit in u32");
            readings.push(Reading {
                slot,
                ts_ms: grid.start_ms,
                seq: 0,
                occupied: false,
            });
        }
        for point in lot_occupancy(lot.bays.len(), &mut readings, grid, i64::MAX) {
            rows.push(LotOccupancyRow {
                lot_id: lot.lot_id.clone(),
                ts: DateTime::from_timestamp_millis(point.ts_ms)
                    .expect("grid instants should be valid times"),
                occupied: point.occupied,
                unknown: point.unknown,
                capacity,
                source: WRITER.to_owned(),
            });
        }
        progress.advance(1);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(minute * 60, 0).expect("test instants should be in range")
    }

    fn stay(bay: u32, arrival: i64, departure: Option<i64>, line: u64) -> Stay {
        Stay {
            bay,
            in_violation: false,
            arrival: at(arrival),
            departure: departure.map(at),
            line,
        }
    }

    #[test]
    fn overlapping_and_open_stays_end_at_the_next_arrival() {
        let mut tally = RuleTally::new(&RULES);
        let stays = vec![
            stay(0, 0, Some(100), 2),
            stay(0, 10, Some(20), 3), // inside the first: the first now ends at 10
            stay(0, 30, None, 4),     // open, ended by the next arrival
            stay(0, 50, Some(60), 5),
            stay(1, 55, Some(70), 6), // another bay: untouched
            stay(0, 60, Some(80), 7), // touching is no overlap
        ];
        let trimmed = trim_overlapping_stays(stays, &mut tally);
        let ends: Vec<(u32, Option<DateTime<Utc>>)> = trimmed
            .iter()
            .map(|stay| (stay.bay, stay.departure))
            .collect();
        assert_eq!(
            ends,
            vec![
                (0, Some(at(10))),
                (0, Some(at(20))),
                (0, Some(at(50))),
                (0, Some(at(60))),
                (0, Some(at(80))),
                (1, Some(at(70)))
            ]
        );
        assert_eq!(tally.get(Rule::OverlappingStayTrimmed), 2);
    }

    #[test]
    fn the_source_null_departure_is_missing() {
        assert!(is_missing_departure("1900-01-01 00:00:00"));
        assert!(is_missing_departure(""));
        assert!(!is_missing_departure("2014-06-12 07:35:46"));
    }

    #[test]
    fn blocks_get_slug_ids_and_bays_without_location_their_own_lot() {
        let block = |street: &str, first: &str, second: &str| {
            Some((street.to_owned(), first.to_owned(), second.to_owned()))
        };
        let locations: HashMap<String, BayLocation> = [
            (
                "1",
                block("A'BECKETT STREET", "ELIZABETH STREET", "SWANSTON STREET"),
                Some((-37.0, 144.0)),
            ),
            (
                "2",
                block("A'BECKETT STREET", "ELIZABETH STREET", "SWANSTON STREET"),
                Some((-37.2, 144.2)),
            ),
            ("3", block("MARMION PLACE", "AQUITANIA WAY", ""), None),
        ]
        .into_iter()
        .map(|(bay, block, coordinates)| {
            let location = BayLocation {
                latitude: coordinates.map(|(latitude, _)| latitude),
                longitude: coordinates.map(|(_, longitude)| longitude),
                block,
            };
            (bay.to_owned(), location)
        })
        .collect();
        let bay_ids: Vec<String> = ["3", "9", "1", "2"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let layout = BlockLayout::new(&bay_ids, &locations);
        let ids: Vec<&str> = layout.lots.iter().map(|lot| lot.lot_id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "mel:unlocated",
                "mel:a-beckett-street--elizabeth-street--swanston-street",
                "mel:marmion-place--aquitania-way"
            ]
        );
        assert_eq!(layout.lot_of_bay, vec![2, 0, 1, 1]);
        assert_eq!(layout.slot_in_lot, vec![0, 0, 0, 1]);
        assert_eq!(layout.bays_without_location, 1);
        let block_lot = &layout.lots[1];
        assert_eq!(
            block_lot.name,
            "A'BECKETT STREET between ELIZABETH STREET and SWANSTON STREET"
        );
        assert!(
            block_lot
                .latitude
                .is_some_and(|latitude| (latitude + 37.1).abs() < 1e-9)
        );
        assert_eq!(layout.lots[2].latitude, None);
        assert_eq!(layout.lots[2].name, "MARMION PLACE near AQUITANIA WAY");
    }
}
