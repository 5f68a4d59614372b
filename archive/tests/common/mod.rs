//! Fixtures shared by the archive's integration tests: a slice of the real Melbourne day imported
//! into a temporary warehouse, and decoding of wire events.

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use parkcast_archive::source::WireEvent;
use parkcast_proto::Topic;
use parkcast_proto::v1::{CustomerScan, PaymentSlip, SensorReading, SessionEvent};
use parkcast_training::datasets::datasets_dir;
use parkcast_training::import::{ImportSource, import};
use parkcast_training::progress::NoProgress;
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::rows::{LotOccupancyRow, ParkingSessionRow, SlotRow, SlotStatusRow};
use prost::Message;
use tempfile::TempDir;

/// The Melbourne slice imported with a 15-minute grid, and what the import wrote.
pub struct Melbourne {
    _dir: TempDir,
    pub warehouse: Warehouse,
    pub status: Vec<SlotStatusRow>,
    pub sessions: Vec<ParkingSessionRow>,
    pub occupancy: Vec<LotOccupancyRow>,
    pub slots: Vec<SlotRow>,
}

impl Melbourne {
    /// First instant of the import's grid (local midnight of 12 June 2014), Unix ms.
    pub fn grid_start_ms(&self) -> i64 {
        self.occupancy
            .iter()
            .map(|row| row.ts.timestamp_millis())
            .min()
            .expect("the import should write occupancy")
    }

    /// End (exclusive) of the import's grid, Unix ms.
    pub fn grid_end_ms(&self) -> i64 {
        let last = self
            .occupancy
            .iter()
            .map(|row| row.ts.timestamp_millis())
            .max()
            .expect("the import should write occupancy");
        last + 15 * 60_000
    }
}

/// Lines 1-2100 of the day (bay 735 has two stays inside a longer one) and every stay of bays 1404
/// (one stay 07:30-20:30 covering the others), 3338 and 5506 (departure 1900-01-01) and 6167 (a
/// 1900-01-01 departure followed by later stays), as in the training crate's import tests; with
/// the whole location file.
fn melbourne_slice(dir: &TempDir) -> (PathBuf, PathBuf) {
    let source = datasets_dir().join("melbourne");
    let text = fs::read_to_string(source.join("bay_events_2014-06-12.csv"))
        .expect("the Melbourne data set should be readable (see shared/datasets/README.md)");
    let extra_bays = ["1404,", "3338,", "5506,", "6167,"];
    let events: String = text
        .split_inclusive('\n')
        .enumerate()
        .filter(|(index, line)| *index < 2100 || extra_bays.iter().any(|bay| line.starts_with(bay)))
        .map(|(_, line)| line)
        .collect();
    let events_csv = dir.path().join("bay_events.csv");
    fs::write(&events_csv, events).expect("temporary files should be writable");
    (events_csv, source.join("bay_locations.json"))
}

/// The Melbourne slice, imported once per test binary.
pub fn melbourne() -> &'static Melbourne {
    static FIXTURE: OnceLock<Melbourne> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = TempDir::new().expect("a temporary folder should be creatable");
        let warehouse = Warehouse::create(dir.path().join("warehouse"))
            .expect("a warehouse should be created in a temporary folder");
        let (events_csv, locations_json) = melbourne_slice(&dir);
        let source = ImportSource::Melbourne {
            events_csv,
            locations_json,
            interval_minutes: 15,
        };
        import(&source, &warehouse, &NoProgress).expect("the Melbourne slice should import");
        Melbourne {
            status: warehouse.read_rows().expect("slot status should read back"),
            sessions: warehouse.read_rows().expect("sessions should read back"),
            occupancy: warehouse.read_rows().expect("occupancy should read back"),
            slots: warehouse.read_rows().expect("slots should read back"),
            warehouse,
            _dir: dir,
        }
    })
}

/// A wire event decoded by its topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Reading(SensorReading),
    Session(SessionEvent),
    Scan(CustomerScan),
    Payment(PaymentSlip),
}

impl Decoded {
    /// The lot id and event time the message itself carries.
    pub fn lot_and_time(&self) -> (&str, i64) {
        match self {
            Decoded::Reading(reading) => (&reading.lot_id, reading.event_time_ms),
            Decoded::Session(event) => (&event.lot_id, event.event_time_ms),
            Decoded::Scan(scan) => (&scan.lot_id, scan.event_time_ms),
            Decoded::Payment(slip) => (&slip.lot_id, slip.paid_time_ms),
        }
    }

    /// The schema version the message carries.
    pub fn schema_version(&self) -> u32 {
        match self {
            Decoded::Reading(reading) => reading.schema_version,
            Decoded::Session(event) => event.schema_version,
            Decoded::Scan(scan) => scan.schema_version,
            Decoded::Payment(slip) => slip.schema_version,
        }
    }
}

/// Decodes an event's value as its topic's message, checking the key and time against it.
pub fn decode(event: &WireEvent) -> Decoded {
    let bytes = event.value.as_slice();
    let decoded = match event.topic {
        Topic::Sensor => Decoded::Reading(SensorReading::decode(bytes).expect("a SensorReading")),
        Topic::Session => Decoded::Session(SessionEvent::decode(bytes).expect("a SessionEvent")),
        Topic::Scan => Decoded::Scan(CustomerScan::decode(bytes).expect("a CustomerScan")),
        Topic::Payment => Decoded::Payment(PaymentSlip::decode(bytes).expect("a PaymentSlip")),
        Topic::Forecast | Topic::DeadLetter => {
            panic!(
                "a warehouse source emits input topics only, not {:?}",
                event.topic
            )
        }
    };
    let (lot_id, time_ms) = decoded.lot_and_time();
    assert_eq!(
        event.key, lot_id,
        "the key should be the lot id: {decoded:?}"
    );
    assert_eq!(event.event_time_ms, time_ms, "{decoded:?}");
    assert_eq!(decoded.schema_version(), parkcast_proto::SCHEMA_VERSION);
    decoded
}

/// A deterministic pseudo-random sequence (xorshift), so the tests need no rand crate.
pub struct Noise(pub u64);

impl Noise {
    /// A number in `0..bound`.
    pub fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}
