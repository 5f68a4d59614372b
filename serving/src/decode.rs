//! The Kafka edge: bytes to validated domain events, or a rejection with a reason for the dead-letter
//! topic.
//!
//! Nothing here panics on input. Every way a message can be wrong has a [`Reason`] (its stable code is
//! what the dead-letter message and the metric label carry) and a human-readable detail.

use parkcast_proto::SCHEMA_VERSION;
use parkcast_proto::v1::{ReadingKind, SessionEvent, SessionEventKind, SlotReport};
use prost::Message;

use crate::topology::{LotIndex, SlotIndex, TopologyIndex};

/// Why a message was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    /// Not a protobuf message of the topic's type (truncated, garbage).
    Malformed,
    /// A schema version this build does not read.
    UnsupportedSchema,
    /// The Kafka key is not the message's lot id (events of one lot must share a partition).
    KeyMismatch,
    /// A lot the topology does not know.
    UnknownLot,
    /// A slot its lot does not have.
    UnknownSlot,
    /// A field holds an impossible value (unspecified enum, non-positive time, empty id).
    InvalidValue,
    /// The event time is further ahead of the clock than the allowed skew.
    FarFuture,
    /// The event is older than the lot's newest event by more than the allowed lateness.
    TooLate,
    /// The same (event time, sequence) was already applied for the slot.
    Duplicate,
    /// Older than the slot's newest applied reading.
    OutOfOrder,
    /// Larger than any message of the topic can be (`ingest.max_message_bytes`): not decoded, so
    /// a flood of huge garbage costs no parsing.
    TooLarge,
}

impl Reason {
    /// Every reason, for metrics that report zeros too.
    pub const ALL: [Reason; 11] = [
        Reason::Malformed,
        Reason::UnsupportedSchema,
        Reason::KeyMismatch,
        Reason::UnknownLot,
        Reason::UnknownSlot,
        Reason::InvalidValue,
        Reason::FarFuture,
        Reason::TooLate,
        Reason::Duplicate,
        Reason::OutOfOrder,
        Reason::TooLarge,
    ];

    /// The stable code (dead-letter `reason` field, metric label).
    pub fn code(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnsupportedSchema => "unsupported_schema",
            Reason::KeyMismatch => "key_mismatch",
            Reason::UnknownLot => "unknown_lot",
            Reason::UnknownSlot => "unknown_slot",
            Reason::InvalidValue => "invalid_value",
            Reason::FarFuture => "far_future",
            Reason::TooLate => "too_late",
            Reason::Duplicate => "duplicate",
            Reason::OutOfOrder => "out_of_order",
            Reason::TooLarge => "too_large",
        }
    }
}

/// A rejected message: the reason and what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The reason.
    pub reason: Reason,
    /// Details for a human.
    pub detail: String,
}

impl Rejection {
    /// A rejection.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// Time rules at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRules {
    /// Event times ahead of the clock by at most this are clamped to the clock (sensor clocks drift;
    /// an event cannot have happened after it was received); further ahead they are rejected as
    /// [`Reason::FarFuture`] (a broken clock).
    pub max_skew_ms: i64,
}

impl Default for TimeRules {
    fn default() -> Self {
        TimeRules {
            max_skew_ms: 300_000,
        }
    }
}

/// A validated sensor reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensorEvent {
    /// The lot.
    pub lot: LotIndex,
    /// The slot within the lot.
    pub slot: SlotIndex,
    /// Occupied (else free).
    pub occupied: bool,
    /// A heartbeat (a periodic repeat) rather than a status change.
    pub heartbeat: bool,
    /// The sensor's sequence number.
    pub seq: u64,
    /// Event time, ms (after clamping).
    pub event_time_ms: i64,
    /// Whether the event time was clamped to the clock.
    pub clamped: bool,
}

/// A validated session entry or exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionMark {
    /// The lot.
    pub lot: LotIndex,
    /// Entry (else exit).
    pub entry: bool,
    /// Event time, ms (after clamping).
    pub event_time_ms: i64,
    /// Whether the event time was clamped to the clock.
    pub clamped: bool,
}

/// Checks an event time against the clock: `now_ms` is the wall clock, or `None` where the caller
/// bounds event times itself (a replay judged by its own stream clock, see `serving::ingest`).
fn check_time(
    event_time_ms: i64,
    now_ms: Option<i64>,
    rules: &TimeRules,
) -> Result<(i64, bool), Rejection> {
    if event_time_ms <= 0 {
        return Err(Rejection::new(
            Reason::InvalidValue,
            format!("event_time_ms {event_time_ms} is not a positive Unix time"),
        ));
    }
    let Some(now_ms) = now_ms else {
        return Ok((event_time_ms, false));
    };
    let ahead = event_time_ms.saturating_sub(now_ms);
    if ahead > rules.max_skew_ms {
        return Err(Rejection::new(
            Reason::FarFuture,
            format!(
                "event time is {ahead} ms ahead of the clock (at most {} allowed)",
                rules.max_skew_ms
            ),
        ));
    }
    if ahead > 0 {
        return Ok((now_ms, true));
    }
    Ok((event_time_ms, false))
}

fn check_schema(version: u32) -> Result<(), Rejection> {
    if version == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(Rejection::new(
            Reason::UnsupportedSchema,
            format!("schema_version {version}, this build reads {SCHEMA_VERSION}"),
        ))
    }
}

fn check_lot(
    topology: &TopologyIndex,
    key: Option<&[u8]>,
    lot_id: &str,
) -> Result<LotIndex, Rejection> {
    if lot_id.is_empty() {
        return Err(Rejection::new(Reason::InvalidValue, "lot_id is empty"));
    }
    if let Some(key) = key
        && key != lot_id.as_bytes()
    {
        return Err(Rejection::new(
            Reason::KeyMismatch,
            format!(
                "key {:?} is not the lot id {lot_id:?}",
                String::from_utf8_lossy(key)
            ),
        ));
    }
    topology
        .lot(lot_id)
        .ok_or_else(|| Rejection::new(Reason::UnknownLot, format!("lot {lot_id:?} is not known")))
}

/// A `SensorReading` whose strings borrow the message bytes.
///
/// Sensor readings are the bulk of the traffic (every slot, every heartbeat); decoding them without
/// allocating the two id strings is what lets one core apply over a million a second. It reads the
/// protobuf wire format exactly as prost's generated `SensorReading::decode` does (a property test
/// holds it to that): last value wins, unknown fields are skipped, a known field with the wrong wire
/// type or a string that is not UTF-8 is an error.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ReadingRef<'a> {
    schema_version: u32,
    lot_id: &'a str,
    slot_id: &'a str,
    report: i32,
    kind: i32,
    sensor_seq: u64,
    event_time_ms: i64,
}

fn decode_reading_ref(value: &[u8]) -> Result<ReadingRef<'_>, String> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

    fn wire(found: WireType, expected: WireType) -> Result<(), String> {
        prost::encoding::check_wire_type(expected, found).map_err(|error| error.to_string())
    }
    fn varint(buf: &mut &[u8]) -> Result<u64, String> {
        decode_varint(buf).map_err(|error| error.to_string())
    }
    fn string<'a>(buf: &mut &'a [u8]) -> Result<&'a str, String> {
        let length = varint(buf)?;
        let length = usize::try_from(length)
            .ok()
            .filter(|length| *length <= buf.len())
            .ok_or_else(|| "buffer underflow".to_owned())?;
        let (text, rest) = buf.split_at(length);
        *buf = rest;
        std::str::from_utf8(text)
            .map_err(|_| "invalid string value: data is not UTF-8 encoded".to_owned())
    }

    let mut buf = value;
    let mut reading = ReadingRef::default();
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(|error| error.to_string())?;
        match tag {
            1 => {
                wire(wire_type, WireType::Varint)?;
                reading.schema_version = varint(&mut buf)? as u32;
            }
            2 => {
                wire(wire_type, WireType::LengthDelimited)?;
                reading.lot_id = string(&mut buf)?;
            }
            3 => {
                wire(wire_type, WireType::LengthDelimited)?;
                reading.slot_id = string(&mut buf)?;
            }
            4 => {
                wire(wire_type, WireType::Varint)?;
                reading.report = varint(&mut buf)? as i32;
            }
            5 => {
                wire(wire_type, WireType::Varint)?;
                reading.kind = varint(&mut buf)? as i32;
            }
            6 => {
                wire(wire_type, WireType::Varint)?;
                reading.sensor_seq = varint(&mut buf)?;
            }
            7 => {
                wire(wire_type, WireType::Varint)?;
                reading.event_time_ms = varint(&mut buf)? as i64;
            }
            _ => skip_field(wire_type, tag, &mut buf, DecodeContext::default())
                .map_err(|error| error.to_string())?,
        }
    }
    Ok(reading)
}

/// Decodes and validates a `parkcast.sensor.v1` message, judging its time against the wall clock
/// `now_ms` (`None`: the caller bounds event times itself).
pub fn decode_sensor(
    topology: &TopologyIndex,
    rules: &TimeRules,
    key: Option<&[u8]>,
    value: &[u8],
    now_ms: Option<i64>,
) -> Result<SensorEvent, Rejection> {
    let reading = decode_reading_ref(value).map_err(|error| {
        Rejection::new(Reason::Malformed, format!("not a SensorReading: {error}"))
    })?;
    check_schema(reading.schema_version)?;
    let lot = check_lot(topology, key, reading.lot_id)?;
    let slot = topology.slot(lot, reading.slot_id).ok_or_else(|| {
        Rejection::new(
            Reason::UnknownSlot,
            format!(
                "slot {:?} is not in lot {:?}",
                reading.slot_id, reading.lot_id
            ),
        )
    })?;
    let occupied = match SlotReport::try_from(reading.report) {
        Ok(SlotReport::Occupied) => true,
        Ok(SlotReport::Free) => false,
        _ => {
            return Err(Rejection::new(
                Reason::InvalidValue,
                format!("report {} is neither occupied nor free", reading.report),
            ));
        }
    };
    let heartbeat = match ReadingKind::try_from(reading.kind) {
        Ok(ReadingKind::Change) => false,
        Ok(ReadingKind::Heartbeat) => true,
        _ => {
            return Err(Rejection::new(
                Reason::InvalidValue,
                format!("kind {} is neither a change nor a heartbeat", reading.kind),
            ));
        }
    };
    let (event_time_ms, clamped) = check_time(reading.event_time_ms, now_ms, rules)?;
    Ok(SensorEvent {
        lot,
        slot,
        occupied,
        heartbeat,
        seq: reading.sensor_seq,
        event_time_ms,
        clamped,
    })
}

/// Decodes and validates a `parkcast.session.v1` message (times as [`decode_sensor`]).
pub fn decode_session(
    topology: &TopologyIndex,
    rules: &TimeRules,
    key: Option<&[u8]>,
    value: &[u8],
    now_ms: Option<i64>,
) -> Result<SessionMark, Rejection> {
    let event = SessionEvent::decode(value).map_err(|error| {
        Rejection::new(Reason::Malformed, format!("not a SessionEvent: {error}"))
    })?;
    check_schema(event.schema_version)?;
    let lot = check_lot(topology, key, &event.lot_id)?;
    if event.session_id.is_empty() {
        return Err(Rejection::new(Reason::InvalidValue, "session_id is empty"));
    }
    let entry = match SessionEventKind::try_from(event.kind) {
        Ok(SessionEventKind::Entry) => true,
        Ok(SessionEventKind::Exit) => false,
        _ => {
            return Err(Rejection::new(
                Reason::InvalidValue,
                format!("kind {} is neither an entry nor an exit", event.kind),
            ));
        }
    };
    let (event_time_ms, clamped) = check_time(event.event_time_ms, now_ms, rules)?;
    Ok(SessionMark {
        lot,
        entry,
        event_time_ms,
        clamped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use parkcast_proto::v1::SensorReading;
    use proptest::prelude::*;

    fn owned(reading: ReadingRef<'_>) -> SensorReading {
        SensorReading {
            schema_version: reading.schema_version,
            lot_id: reading.lot_id.to_owned(),
            slot_id: reading.slot_id.to_owned(),
            report: reading.report,
            kind: reading.kind,
            sensor_seq: reading.sensor_seq,
            event_time_ms: reading.event_time_ms,
        }
    }

    proptest! {
        #[test]
        fn the_borrowing_decoder_agrees_with_prost_on_any_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let ours = decode_reading_ref(&bytes).map(owned);
            let prost = SensorReading::decode(bytes.as_slice());
            prop_assert_eq!(ours.is_ok(), prost.is_ok(), "{:?} vs {:?}", ours, prost);
            if let (Ok(ours), Ok(prost)) = (ours, prost) {
                prop_assert_eq!(ours, prost);
            }
        }

        #[test]
        fn the_borrowing_decoder_agrees_with_prost_on_readings(
            schema_version in any::<u32>(),
            lot_id in ".{0,12}",
            slot_id in ".{0,12}",
            report in any::<i32>(),
            kind in any::<i32>(),
            sensor_seq in any::<u64>(),
            event_time_ms in any::<i64>(),
            cut in 0usize..80,
            extra in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let reading = SensorReading { schema_version, lot_id, slot_id, report, kind, sensor_seq, event_time_ms };
            let mut bytes = reading.encode_to_vec();
            prop_assert_eq!(decode_reading_ref(&bytes).map(owned).ok(), Some(reading));
            // Cut short, or with bytes appended (another field, or garbage).
            bytes.truncate(cut.min(bytes.len()));
            bytes.extend(extra);
            let ours = decode_reading_ref(&bytes).map(owned);
            let prost = SensorReading::decode(bytes.as_slice());
            prop_assert_eq!(ours.ok(), prost.ok());
        }
    }

    const NOW: i64 = 1_764_000_000_000;

    fn topology() -> TopologyIndex {
        TopologyIndex::new([("lot-a".to_owned(), vec!["s1".to_owned(), "s2".to_owned()])])
            .expect("valid")
    }

    fn reading() -> SensorReading {
        SensorReading {
            schema_version: SCHEMA_VERSION,
            lot_id: "lot-a".into(),
            slot_id: "s2".into(),
            report: SlotReport::Occupied as i32,
            kind: ReadingKind::Change as i32,
            sensor_seq: 7,
            event_time_ms: NOW - 1_000,
        }
    }

    fn decode(reading: &SensorReading) -> Result<SensorEvent, Rejection> {
        decode_sensor(
            &topology(),
            &TimeRules::default(),
            Some(b"lot-a"),
            &reading.encode_to_vec(),
            Some(NOW),
        )
    }

    fn reason(reading: SensorReading) -> Reason {
        decode(&reading).expect_err("rejected").reason
    }

    #[test]
    fn a_valid_reading_decodes_to_indices() {
        let event = decode(&reading()).expect("valid");
        assert_eq!((event.lot, event.slot, event.occupied), (0, 1, true));
        assert!(!event.heartbeat && !event.clamped);
    }

    #[test]
    fn every_bad_field_has_its_reason() {
        let bytes = reading().encode_to_vec();
        let truncated = decode_sensor(
            &topology(),
            &TimeRules::default(),
            None,
            &bytes[..bytes.len() - 3],
            Some(NOW),
        );
        assert_eq!(truncated.map_err(|r| r.reason), Err(Reason::Malformed));
        let garbage = decode_sensor(
            &topology(),
            &TimeRules::default(),
            None,
            &[0xff; 9],
            Some(NOW),
        );
        assert_eq!(garbage.map_err(|r| r.reason), Err(Reason::Malformed));
        assert_eq!(
            reason(SensorReading {
                schema_version: 9,
                ..reading()
            }),
            Reason::UnsupportedSchema
        );
        assert_eq!(
            reason(SensorReading {
                lot_id: "lot-z".into(),
                ..reading()
            }),
            Reason::KeyMismatch
        );
        let unknown_lot = decode_sensor(
            &topology(),
            &TimeRules::default(),
            None,
            &SensorReading {
                lot_id: "lot-z".into(),
                ..reading()
            }
            .encode_to_vec(),
            Some(NOW),
        );
        assert_eq!(unknown_lot.map_err(|r| r.reason), Err(Reason::UnknownLot));
        assert_eq!(
            reason(SensorReading {
                slot_id: "s9".into(),
                ..reading()
            }),
            Reason::UnknownSlot
        );
        assert_eq!(
            reason(SensorReading {
                report: 0,
                ..reading()
            }),
            Reason::InvalidValue
        );
        assert_eq!(
            reason(SensorReading {
                event_time_ms: 0,
                ..reading()
            }),
            Reason::InvalidValue
        );
        assert_eq!(
            reason(SensorReading {
                event_time_ms: NOW + 3_600_000,
                ..reading()
            }),
            Reason::FarFuture
        );
        let clamped = decode(&SensorReading {
            event_time_ms: NOW + 2_000,
            ..reading()
        })
        .expect("a small skew is clamped");
        assert!(clamped.clamped && clamped.event_time_ms == NOW);
        // Without a wall clock (a replay bounded by its stream clock), times pass unclamped.
        let unbounded = decode_sensor(
            &topology(),
            &TimeRules::default(),
            Some(b"lot-a"),
            &SensorReading {
                event_time_ms: NOW + 3_600_000,
                ..reading()
            }
            .encode_to_vec(),
            None,
        )
        .expect("no clock, no skew rule");
        assert_eq!(
            (unbounded.event_time_ms, unbounded.clamped),
            (NOW + 3_600_000, false)
        );
        // A session message on the sensor topic: its fields do not make a valid reading.
        let session = SessionEvent {
            schema_version: SCHEMA_VERSION,
            session_id: "x".into(),
            lot_id: "lot-a".into(),
            slot_id: "s1".into(),
            kind: SessionEventKind::Entry as i32,
            event_time_ms: NOW,
            vehicle_id: String::new(),
            customer_id: String::new(),
        };
        assert!(
            decode_sensor(
                &topology(),
                &TimeRules::default(),
                None,
                &session.encode_to_vec(),
                Some(NOW)
            )
            .is_err()
        );
        let codes: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len(), "codes are distinct");
    }
}
