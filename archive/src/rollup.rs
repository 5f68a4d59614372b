//! Rolling `fact_lot_occupancy` forward from slot readings as they stream in.
//!
//! The archiver appends what the live system saw to the warehouse, so the trainer learns from it. The
//! sensor facts are archived as they come; lot occupancy is *derived*, and it must be derived with the
//! rule the import and the simulator use ([`parkcast_features::occupancy`]): at a grid instant `t`,
//! every reading with event time `<= t` applies, the newest by (event time, sequence) wins, and a slot
//! silent for longer than the silence limit is unknown. Otherwise models trained on archived data
//! would learn a different quantity than they learned from imports.
//!
//! The batch rule sees all readings at once; a stream does not. Readings of a lot arrive mostly but
//! not strictly in event-time order (gateways buffer, producers retry), so a grid instant is only
//! *final* once the lot's watermark (the newest event time seen for it) has passed it by the allowed
//! lateness. Until then, readings newer than the lot's next instant wait in a buffer sorted by event
//! time; older ones apply at once. That keeps the output equal to the batch derivation whenever no
//! reading is later than the lateness, and keeps memory bounded by it.
//!
//! A reading older than an instant already emitted is *late*: the emitted rows stay as they are (rows
//! appended to Parquet are not rewritten), but the reading still updates its slot, so later instants
//! see exactly what the batch rule would. The caller still archives it as a fact.
//!
//! The whole roll-up is `serde`-serializable: the archiver checkpoints it next to the files it wrote
//! and resumes from the checkpoint after a restart, with output identical to an uninterrupted run.
//!
//! ```
//! use parkcast_archive::rollup::{OccupancyRollup, Push, RollupConfig};
//!
//! let config = RollupConfig {
//!     step_minutes: 15,
//!     lateness_ms: 0,
//!     silence_ms: 3 * 3_600_000,
//!     source: "kafka".to_owned(),
//! };
//! let topology = vec![("lot-a".to_owned(), vec!["a1".to_owned(), "a2".to_owned()])];
//! let mut rollup = OccupancyRollup::new(config, topology)?;
//! let minute = 60_000;
//! assert_eq!(rollup.push("lot-a", "a1", 0, 1, true), Push::Buffered);
//! assert_eq!(rollup.push("lot-a", "a2", 0, 1, false), Push::Buffered);
//! assert_eq!(rollup.push("lot-a", "a1", 20 * minute, 2, false), Push::Buffered);
//! let rows = rollup.drain_final();
//! // 00:00 and 00:15 are final once the lot has seen 00:20 (no lateness allowed).
//! let counts: Vec<(i32, i32)> = rows.iter().map(|row| (row.occupied, row.unknown)).collect();
//! assert_eq!(counts, vec![(1, 0), (1, 0)]);
//! // The end of the replay: 00:30 (a1 left at 00:20); 00:45 is not before the end.
//! let rows = rollup.finish(45 * minute);
//! assert_eq!((rows.len(), rows[0].occupied), (1, 0));
//! # Ok::<(), parkcast_archive::rollup::RollupError>(())
//! ```

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use parkcast_features::occupancy::{ApplyOutcome, SlotState, SlotStatus};
use parkcast_warehouse::rows::LotOccupancyRow;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Format version of a serialized [`OccupancyRollup`]; a checkpoint of a newer version is refused.
pub const ROLLUP_STATE_VERSION: u32 = 1;

/// Longest grid step accepted, in minutes: one day, as the import and the simulator allow.
pub const MAX_STEP_MINUTES: u32 = 1_440;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// Errors of the occupancy roll-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RollupError {
    /// The grid step is 0 or longer than a day.
    #[error("grid step must be 1 to {MAX_STEP_MINUTES} minutes, not {step_minutes}")]
    InvalidStep {
        /// The step given.
        step_minutes: u32,
    },
    /// The allowed lateness is negative.
    #[error("allowed lateness must not be negative, not {lateness_ms} ms")]
    NegativeLateness {
        /// The lateness given.
        lateness_ms: i64,
    },
    /// The silence limit is negative.
    #[error("silence limit must not be negative, not {silence_ms} ms")]
    NegativeSilence {
        /// The limit given.
        silence_ms: i64,
    },
    /// The `source` written into the rows is empty.
    #[error("the source written into fact_lot_occupancy rows must not be empty")]
    EmptySource,
    /// A lot appears twice in the topology.
    #[error("lot {lot_id:?} is listed twice in the topology")]
    DuplicateLot {
        /// The lot.
        lot_id: String,
    },
    /// A slot appears twice in a lot.
    #[error("slot {slot_id:?} is listed twice in lot {lot_id:?}")]
    DuplicateSlot {
        /// The lot.
        lot_id: String,
        /// The slot.
        slot_id: String,
    },
    /// A lot has more slots than a capacity column can hold.
    #[error("lot {lot_id:?} has {slots} slots, more than fact_lot_occupancy.capacity can hold")]
    TooManySlots {
        /// The lot.
        lot_id: String,
        /// Its slot count.
        slots: usize,
    },
    /// A checkpoint was written by a newer parkcast.
    #[error(
        "occupancy roll-up checkpoint version {found} is newer than this parkcast supports ({supported})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The newest version this code reads.
        supported: u32,
    },
    /// A checkpoint's slot states do not match its slot list.
    #[error("checkpoint of lot {lot_id:?} has {states} slot states for {slots} slots")]
    SlotStateMismatch {
        /// The lot.
        lot_id: String,
        /// Slot states stored.
        states: usize,
        /// Slots listed.
        slots: usize,
    },
}

/// Runtime settings of the roll-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupConfig {
    /// Grid step, minutes: instants are the multiples of it since the Unix epoch (UTC). The import
    /// and the simulator derive occupancy every 15 minutes by default.
    pub step_minutes: u32,
    /// How far behind a lot's newest event time an instant must be before it is final, ms. Readings
    /// later than this cannot change emitted rows (they are counted as late).
    pub lateness_ms: i64,
    /// A slot whose newest reading is older than this at an instant is unknown, ms (`i64::MAX`: no
    /// limit, as for sources without heartbeats).
    pub silence_ms: i64,
    /// `source` of the rows written, e.g. `kafka`.
    pub source: String,
}

impl RollupConfig {
    /// Checks the settings without IO.
    pub fn validate(&self) -> Result<(), RollupError> {
        if self.step_minutes == 0 || self.step_minutes > MAX_STEP_MINUTES {
            return Err(RollupError::InvalidStep {
                step_minutes: self.step_minutes,
            });
        }
        if self.lateness_ms < 0 {
            return Err(RollupError::NegativeLateness {
                lateness_ms: self.lateness_ms,
            });
        }
        if self.silence_ms < 0 {
            return Err(RollupError::NegativeSilence {
                silence_ms: self.silence_ms,
            });
        }
        if self.source.is_empty() {
            return Err(RollupError::EmptySource);
        }
        Ok(())
    }

    /// The grid step in ms.
    pub fn step_ms(&self) -> i64 {
        i64::from(self.step_minutes) * MINUTE_MS
    }
}

/// What [`OccupancyRollup::push`] did with a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Push {
    /// Applied to its slot at once: it is not newer than the lot's next grid instant.
    Applied,
    /// Held until the grid instants before it are emitted.
    Buffered,
    /// At or before an instant already emitted for its lot: those rows cannot change. The reading
    /// still updates its slot for the instants to come.
    Late,
    /// The lot is not in the topology; the reading is ignored.
    UnknownLot,
    /// The slot is not in its lot's topology; the reading is ignored.
    UnknownSlot,
    /// The event time is outside the range the warehouse can store; the reading is ignored.
    InvalidTime,
}

/// Counters of everything pushed and emitted, for metrics and the archiver's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupStats {
    /// Readings applied at once ([`Push::Applied`]).
    pub applied: u64,
    /// Readings buffered ([`Push::Buffered`]).
    pub buffered: u64,
    /// Readings too late to change emitted rows ([`Push::Late`]).
    pub late: u64,
    /// Readings of lots not in the topology.
    pub unknown_lot: u64,
    /// Readings of slots not in their lot.
    pub unknown_slot: u64,
    /// Readings with an event time outside the storable range.
    pub invalid_time: u64,
    /// Readings that repeated one applied before (same slot, time and sequence).
    pub duplicates: u64,
    /// Readings older than their slot's newest one when applied (they change nothing).
    pub out_of_order: u64,
    /// Rows emitted.
    pub rows: u64,
}

/// A reading waiting for the instants before it to be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Buffered {
    ts_ms: i64,
    seq: u64,
    slot: u32,
    occupied: bool,
}

impl Buffered {
    fn key(&self) -> (i64, u64, u32) {
        (self.ts_ms, self.seq, self.slot)
    }
}

/// The roll-up state of one lot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LotState {
    lot_id: String,
    slot_ids: Vec<String>,
    /// The newest reading of each slot, in `slot_ids` order.
    slots: Vec<SlotState>,
    /// Newest event time pushed for the lot.
    watermark_ms: Option<i64>,
    /// The next grid instant to emit; `None` until the first row is emitted, when the grid starts at
    /// the first instant at or after the earliest reading buffered.
    next_instant_ms: Option<i64>,
    /// Readings newer than `next_instant_ms`, sorted by (event time, sequence, slot).
    buffered: VecDeque<Buffered>,
}

/// The serialized form of [`OccupancyRollup`]: everything but the id indexes, rebuilt on reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RollupState {
    /// [`ROLLUP_STATE_VERSION`] when written.
    version: u32,
    config: RollupConfig,
    lots: Vec<LotState>,
    stats: RollupStats,
}

/// Lot occupancy on a regular grid, rolled forward from slot readings pushed as they arrive.
///
/// Serializes (with `serde`, e.g. rmp-serde) to a checkpoint that resumes with identical output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OccupancyRollup {
    state: RollupState,
    capacities: Vec<i32>,
    lot_index: HashMap<String, u32>,
    /// Per lot: slot id -> index in the lot.
    slot_index: Vec<HashMap<String, u32>>,
}

/// The earliest and latest event times accepted: chrono's range, a day inside, so grid instants
/// rounded up from a reading stay valid timestamps.
fn valid_time(ts_ms: i64) -> bool {
    let first = DateTime::<Utc>::MIN_UTC.timestamp_millis() + DAY_MS;
    let last = DateTime::<Utc>::MAX_UTC.timestamp_millis() - DAY_MS;
    (first..=last).contains(&ts_ms)
}

/// The first multiple of `step_ms` at or after `ts_ms`.
fn instant_at_or_after(ts_ms: i64, step_ms: i64) -> i64 {
    let remainder = ts_ms.rem_euclid(step_ms);
    if remainder == 0 {
        ts_ms
    } else {
        ts_ms - remainder + step_ms
    }
}

impl OccupancyRollup {
    /// A roll-up of the lots of `topology` (lot id and its slot ids; capacity is the slot count).
    pub fn new(
        config: RollupConfig,
        topology: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Result<Self, RollupError> {
        config.validate()?;
        let lots = topology
            .into_iter()
            .map(|(lot_id, slot_ids)| LotState {
                slots: vec![SlotState::default(); slot_ids.len()],
                lot_id,
                slot_ids,
                watermark_ms: None,
                next_instant_ms: None,
                buffered: VecDeque::new(),
            })
            .collect();
        Self::from_state(RollupState {
            version: ROLLUP_STATE_VERSION,
            config,
            lots,
            stats: RollupStats::default(),
        })
    }

    /// Checks a state (new or read from a checkpoint) and builds the id indexes.
    fn from_state(state: RollupState) -> Result<Self, RollupError> {
        if state.version > ROLLUP_STATE_VERSION {
            return Err(RollupError::UnsupportedVersion {
                found: state.version,
                supported: ROLLUP_STATE_VERSION,
            });
        }
        state.config.validate()?;
        let mut lot_index = HashMap::with_capacity(state.lots.len());
        let mut slot_index = Vec::with_capacity(state.lots.len());
        let mut capacities = Vec::with_capacity(state.lots.len());
        for (position, lot) in state.lots.iter().enumerate() {
            let too_many = || RollupError::TooManySlots {
                lot_id: lot.lot_id.clone(),
                slots: lot.slot_ids.len(),
            };
            if lot.slots.len() != lot.slot_ids.len() {
                return Err(RollupError::SlotStateMismatch {
                    lot_id: lot.lot_id.clone(),
                    states: lot.slots.len(),
                    slots: lot.slot_ids.len(),
                });
            }
            let lot_position = u32::try_from(position).map_err(|_| too_many())?;
            if lot_index.insert(lot.lot_id.clone(), lot_position).is_some() {
                return Err(RollupError::DuplicateLot {
                    lot_id: lot.lot_id.clone(),
                });
            }
            capacities.push(i32::try_from(lot.slot_ids.len()).map_err(|_| too_many())?);
            let mut slots = HashMap::with_capacity(lot.slot_ids.len());
            for (slot, slot_id) in lot.slot_ids.iter().enumerate() {
                let slot = u32::try_from(slot).map_err(|_| too_many())?;
                if slots.insert(slot_id.clone(), slot).is_some() {
                    return Err(RollupError::DuplicateSlot {
                        lot_id: lot.lot_id.clone(),
                        slot_id: slot_id.clone(),
                    });
                }
            }
            slot_index.push(slots);
        }
        Ok(OccupancyRollup {
            state,
            capacities,
            lot_index,
            slot_index,
        })
    }

    /// The settings.
    pub fn config(&self) -> &RollupConfig {
        &self.state.config
    }

    /// Counters so far (they survive a checkpoint).
    pub fn stats(&self) -> RollupStats {
        self.state.stats
    }

    /// Readings buffered over all lots: bounded by the readings of the allowed lateness.
    pub fn buffered_len(&self) -> usize {
        self.state.lots.iter().map(|lot| lot.buffered.len()).sum()
    }

    /// The next grid instant a lot will emit, once its grid has started (Unix ms).
    pub fn next_instant_ms(&self, lot_id: &str) -> Option<i64> {
        let lot = *self.lot_index.get(lot_id)?;
        self.state.lots[lot as usize].next_instant_ms
    }

    /// Takes one reading of `slot_id` in `lot_id`, measured at `ts_ms` (Unix ms) with sensor
    /// sequence number `seq`. Duplicates and out-of-order readings are welcome: the newest by
    /// (event time, sequence) wins, as in the batch rule.
    ///
    /// The caller rejects readings from the far future first (the live consumer dead-letters them):
    /// one would advance its lot's watermark and make every instant up to it final at once.
    pub fn push(
        &mut self,
        lot_id: &str,
        slot_id: &str,
        ts_ms: i64,
        seq: u64,
        occupied: bool,
    ) -> Push {
        let stats = &mut self.state.stats;
        let Some(&lot) = self.lot_index.get(lot_id) else {
            stats.unknown_lot += 1;
            return Push::UnknownLot;
        };
        let Some(&slot) = self.slot_index[lot as usize].get(slot_id) else {
            stats.unknown_slot += 1;
            return Push::UnknownSlot;
        };
        if !valid_time(ts_ms) {
            stats.invalid_time += 1;
            return Push::InvalidTime;
        }
        let step_ms = self.state.config.step_ms();
        let lot_state = &mut self.state.lots[lot as usize];
        lot_state.watermark_ms = Some(lot_state.watermark_ms.map_or(ts_ms, |mark| mark.max(ts_ms)));
        let reading = Buffered {
            ts_ms,
            seq,
            slot,
            occupied,
        };
        match lot_state.next_instant_ms {
            Some(next) if ts_ms <= next => {
                apply(&mut lot_state.slots, reading, stats);
                if ts_ms <= next - step_ms {
                    stats.late += 1;
                    Push::Late
                } else {
                    stats.applied += 1;
                    Push::Applied
                }
            }
            _ => {
                // Readings arrive mostly in order: the insertion point is almost always the end.
                let position = lot_state
                    .buffered
                    .partition_point(|buffered| buffered.key() <= reading.key());
                lot_state.buffered.insert(position, reading);
                stats.buffered += 1;
                Push::Buffered
            }
        }
    }

    /// Rows of every grid instant that is now final, lot by lot (topology order), each lot's in time
    /// order: instants at or before the lot's watermark minus the allowed lateness, not emitted yet.
    ///
    /// Costs O(lots) plus the rows emitted: call it per batch of messages, not per message.
    pub fn drain_final(&mut self) -> Vec<LotOccupancyRow> {
        let lateness_ms = self.state.config.lateness_ms;
        let mut rows = Vec::new();
        for lot in 0..self.state.lots.len() {
            let Some(watermark_ms) = self.state.lots[lot].watermark_ms else {
                continue;
            };
            self.emit_lot(lot, watermark_ms.saturating_sub(lateness_ms), &mut rows);
        }
        rows
    }

    /// Rows of every instant before `end_ms` not emitted yet, final or not: the end of a replay,
    /// when no more readings will come. A lot that never had a reading has no grid and no rows.
    /// Readings after the last instant stay buffered. `end_ms` is a real end (one row per lot and
    /// step up to it is produced), not a "forever" sentinel.
    pub fn finish(&mut self, end_ms: i64) -> Vec<LotOccupancyRow> {
        let last_valid = DateTime::<Utc>::MAX_UTC.timestamp_millis() - DAY_MS;
        let limit_ms = end_ms.min(last_valid).saturating_sub(1);
        let mut rows = Vec::new();
        for lot in 0..self.state.lots.len() {
            self.emit_lot(lot, limit_ms, &mut rows);
        }
        rows
    }

    /// Emits the lot's instants up to `limit_ms` (inclusive).
    fn emit_lot(&mut self, lot: usize, limit_ms: i64, rows: &mut Vec<LotOccupancyRow>) {
        let step_ms = self.state.config.step_ms();
        let silence_ms = self.state.config.silence_ms;
        let capacity = self.capacities[lot];
        let source = &self.state.config.source;
        let stats = &mut self.state.stats;
        let lot_state = &mut self.state.lots[lot];
        let mut instant = match (lot_state.next_instant_ms, lot_state.buffered.front()) {
            (Some(next), _) => next,
            (None, Some(first)) => instant_at_or_after(first.ts_ms, step_ms),
            (None, None) => return,
        };
        while instant <= limit_ms {
            while let Some(reading) = lot_state
                .buffered
                .pop_front_if(|reading| reading.ts_ms <= instant)
            {
                apply(&mut lot_state.slots, reading, stats);
            }
            let (mut occupied, mut unknown) = (0, 0);
            for slot in &lot_state.slots {
                match slot.status_at(instant, silence_ms) {
                    SlotStatus::Occupied => occupied += 1,
                    SlotStatus::Unknown => unknown += 1,
                    SlotStatus::Free => {}
                }
            }
            rows.push(LotOccupancyRow {
                lot_id: lot_state.lot_id.clone(),
                ts: DateTime::from_timestamp_millis(instant)
                    .expect("grid instants should be valid times: pushed readings are checked"),
                occupied,
                unknown,
                capacity,
                source: source.clone(),
            });
            stats.rows += 1;
            instant += step_ms;
            lot_state.next_instant_ms = Some(instant);
        }
    }
}

/// Applies a reading to its slot with the shared rule, counting what it did.
fn apply(slots: &mut [SlotState], reading: Buffered, stats: &mut RollupStats) {
    let slot = &mut slots[reading.slot as usize];
    match slot.apply(reading.ts_ms, reading.seq, reading.occupied) {
        ApplyOutcome::Changed | ApplyOutcome::Confirmed => {}
        ApplyOutcome::Duplicate => stats.duplicates += 1,
        ApplyOutcome::OutOfOrder => stats.out_of_order += 1,
    }
}

impl Serialize for OccupancyRollup {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.state.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for OccupancyRollup {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let state = RollupState::deserialize(deserializer)?;
        OccupancyRollup::from_state(state).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parkcast_features::occupancy::{Grid, Reading, lot_occupancy};

    const MINUTE: i64 = 60_000;

    fn config(lateness_minutes: i64, silence_minutes: i64) -> RollupConfig {
        RollupConfig {
            step_minutes: 15,
            lateness_ms: lateness_minutes * MINUTE,
            silence_ms: silence_minutes * MINUTE,
            source: "test".to_owned(),
        }
    }

    fn topology() -> Vec<(String, Vec<String>)> {
        vec![
            (
                "lot-a".to_owned(),
                vec!["a0".to_owned(), "a1".to_owned(), "a2".to_owned()],
            ),
            ("lot-b".to_owned(), vec!["b0".to_owned(), "b1".to_owned()]),
        ]
    }

    fn summary(rows: &[LotOccupancyRow]) -> Vec<(String, i64, i32, i32, i32)> {
        rows.iter()
            .map(|row| {
                (
                    row.lot_id.clone(),
                    row.ts.timestamp_millis() / MINUTE,
                    row.occupied,
                    row.unknown,
                    row.capacity,
                )
            })
            .collect()
    }

    /// A reading of the tests: lot index, slot index, minute, sequence number, occupied.
    type TestReading = (usize, u32, i64, u64, bool);

    /// A deterministic pseudo-random sequence (xorshift), so the tests need no rand crate.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    /// Readings (lot, slot index, minute, seq, occupied) of two lots over about six hours.
    fn readings(noise: &mut Noise) -> Vec<TestReading> {
        let mut readings = Vec::new();
        for (lot, slots) in [(0_usize, 3_u32), (1, 2)] {
            for slot in 0..slots {
                let mut minute = 7 + noise.next(20) as i64;
                let mut seq = 0;
                while minute < 360 {
                    seq += 1;
                    readings.push((lot, slot, minute, seq, noise.next(2) == 1));
                    // Some gaps longer than the 60-minute silence limit of the tests.
                    let longest_gap = if noise.next(8) == 0 { 120 } else { 40 };
                    minute += 1 + noise.next(longest_gap) as i64;
                }
            }
        }
        readings.sort_by_key(|&(_, _, minute, seq, _)| (minute, seq));
        readings
    }

    /// What the batch derivation says for the same readings, each lot on its own grid from the first
    /// instant at or after its first reading to `end_minute`.
    fn batch(
        readings: &[TestReading],
        end_minute: i64,
        silence_minutes: i64,
    ) -> Vec<(String, i64, i32, i32, i32)> {
        let mut expected = Vec::new();
        for (lot, (lot_id, slot_ids)) in topology().into_iter().enumerate() {
            let mut lot_readings: Vec<Reading> = readings
                .iter()
                .filter(|reading| reading.0 == lot)
                .map(|&(_, slot, minute, seq, occupied)| Reading {
                    slot,
                    ts_ms: minute * MINUTE,
                    seq,
                    occupied,
                })
                .collect();
            let first = lot_readings
                .iter()
                .map(|reading| reading.ts_ms)
                .min()
                .expect("every test lot should have readings");
            let grid = Grid {
                start_ms: instant_at_or_after(first, 15 * MINUTE),
                end_ms: end_minute * MINUTE,
                step_ms: 15 * MINUTE,
            };
            let points = lot_occupancy(
                slot_ids.len(),
                &mut lot_readings,
                grid,
                silence_minutes * MINUTE,
            );
            for point in points {
                expected.push((
                    lot_id.clone(),
                    point.ts_ms / MINUTE,
                    point.occupied,
                    point.unknown,
                    slot_ids.len() as i32,
                ));
            }
        }
        expected
    }

    fn push_all(
        rollup: &mut OccupancyRollup,
        readings: &[TestReading],
        rows: &mut Vec<LotOccupancyRow>,
    ) {
        let topology = topology();
        for (index, &(lot, slot, minute, seq, occupied)) in readings.iter().enumerate() {
            let (lot_id, slot_ids) = &topology[lot];
            let pushed = rollup.push(
                lot_id,
                &slot_ids[slot as usize],
                minute * MINUTE,
                seq,
                occupied,
            );
            assert!(
                matches!(pushed, Push::Applied | Push::Buffered),
                "{pushed:?}"
            );
            if index % 5 == 0 {
                rows.extend(rollup.drain_final());
            }
        }
        rows.extend(rollup.drain_final());
    }

    fn sorted(mut rows: Vec<(String, i64, i32, i32, i32)>) -> Vec<(String, i64, i32, i32, i32)> {
        rows.sort();
        rows
    }

    #[test]
    fn in_order_readings_give_the_batch_derivation() {
        let readings = readings(&mut Noise(7));
        let mut rollup =
            OccupancyRollup::new(config(0, 60), topology()).expect("the test config is valid");
        let mut rows = Vec::new();
        push_all(&mut rollup, &readings, &mut rows);
        rows.extend(rollup.finish(420 * MINUTE));
        assert_eq!(sorted(summary(&rows)), batch(&readings, 420, 60));
        assert_eq!(rollup.stats().late, 0);
        assert!(
            summary(&rows).iter().any(|row| row.3 > 0),
            "the silence limit should make some slots unknown"
        );
    }

    #[test]
    fn disorder_within_the_lateness_and_duplicates_change_nothing() {
        for seed in 1..20 {
            let mut noise = Noise(seed);
            let in_order = readings(&mut noise);
            // Delay some readings by up to 25 minutes and repeat every 4th.
            let mut keyed: Vec<(i64, TestReading)> = Vec::new();
            for (index, reading) in in_order.iter().enumerate() {
                let delay = if noise.next(3) == 0 {
                    noise.next(26) as i64
                } else {
                    0
                };
                keyed.push((reading.2 + delay, *reading));
                if index % 4 == 0 {
                    keyed.push((reading.2 + noise.next(10) as i64, *reading));
                }
            }
            keyed.sort_by_key(|(key, _)| *key);
            let shuffled: Vec<_> = keyed.into_iter().map(|(_, reading)| reading).collect();
            let mut rollup =
                OccupancyRollup::new(config(30, 60), topology()).expect("the test config is valid");
            let mut rows = Vec::new();
            push_all(&mut rollup, &shuffled, &mut rows);
            rows.extend(rollup.finish(420 * MINUTE));
            assert_eq!(
                sorted(summary(&rows)),
                batch(&in_order, 420, 60),
                "seed {seed}"
            );
            let stats = rollup.stats();
            assert_eq!(stats.late, 0);
            assert!(stats.duplicates > 0);
            assert!(
                rollup.buffered_len() == 0,
                "finish applies every buffered reading before the end"
            );
        }
    }

    #[test]
    fn the_grid_starts_at_the_first_instant_after_the_earliest_buffered_reading() {
        let mut rollup = OccupancyRollup::new(config(30, 600), topology()).expect("valid");
        // The lot's first reading to arrive is not its earliest.
        assert_eq!(
            rollup.push("lot-b", "b0", 40 * MINUTE, 2, true),
            Push::Buffered
        );
        assert_eq!(
            rollup.push("lot-b", "b1", 16 * MINUTE, 1, true),
            Push::Buffered
        );
        assert!(rollup.drain_final().is_empty(), "nothing is final yet");
        assert_eq!(
            rollup.push("lot-b", "b0", 61 * MINUTE, 3, false),
            Push::Buffered
        );
        let rows = rollup.drain_final();
        assert_eq!(
            summary(&rows),
            vec![("lot-b".to_owned(), 30, 1, 1, 2)],
            "30 min is the first instant, and final at 61 - 30 min"
        );
        assert_eq!(rollup.next_instant_ms("lot-b"), Some(45 * MINUTE));
        assert_eq!(rollup.next_instant_ms("lot-a"), None);
    }

    #[test]
    fn readings_are_point_in_time() {
        let mut rollup = OccupancyRollup::new(config(0, 600), topology()).expect("valid");
        rollup.push("lot-a", "a0", 0, 1, true);
        // Newer than the next instant (15 min) once the grid has started: buffered, not applied.
        assert!(rollup.drain_final().len() == 1);
        assert_eq!(
            rollup.push("lot-a", "a0", 20 * MINUTE, 2, false),
            Push::Buffered
        );
        assert_eq!(
            rollup.push("lot-a", "a1", 15 * MINUTE, 1, true),
            Push::Applied
        );
        let rows = rollup.drain_final();
        assert_eq!(summary(&rows), vec![("lot-a".to_owned(), 15, 2, 1, 3)]);
        let rows = rollup.finish(31 * MINUTE);
        assert_eq!(summary(&rows), vec![("lot-a".to_owned(), 30, 1, 1, 3)]);
    }

    #[test]
    fn a_late_reading_is_counted_and_only_changes_later_instants() {
        let mut rollup = OccupancyRollup::new(config(0, 600), topology()).expect("valid");
        rollup.push("lot-a", "a0", 0, 1, false);
        rollup.push("lot-a", "a1", 0, 1, false);
        rollup.push("lot-a", "a2", 0, 1, false);
        rollup.push("lot-a", "a0", 31 * MINUTE, 2, false);
        let emitted = rollup.drain_final();
        assert_eq!(emitted.len(), 3, "0, 15 and 30 min");
        assert!(emitted.iter().all(|row| row.occupied == 0));
        // a1 was occupied from 10 min: too late for 15 and 30 min, but 45 min must see it.
        assert_eq!(rollup.push("lot-a", "a1", 10 * MINUTE, 2, true), Push::Late);
        // Older than a2's newest reading: late, and changes nothing at all.
        assert_eq!(rollup.push("lot-a", "a2", 0, 0, true), Push::Late);
        let stats = rollup.stats();
        assert_eq!((stats.late, stats.out_of_order), (2, 1));
        let rows = rollup.finish(46 * MINUTE);
        assert_eq!(summary(&rows), vec![("lot-a".to_owned(), 45, 1, 0, 3)]);
    }

    #[test]
    fn unknown_lots_slots_and_impossible_times_are_refused_and_counted() {
        let mut rollup = OccupancyRollup::new(config(0, 600), topology()).expect("valid");
        assert_eq!(rollup.push("lot-x", "a0", 0, 1, true), Push::UnknownLot);
        assert_eq!(rollup.push("lot-a", "b0", 0, 1, true), Push::UnknownSlot);
        assert_eq!(
            rollup.push("lot-a", "a0", i64::MAX, 1, true),
            Push::InvalidTime
        );
        assert_eq!(
            rollup.push("lot-a", "a0", i64::MIN, 1, true),
            Push::InvalidTime
        );
        let stats = rollup.stats();
        assert_eq!(
            (stats.unknown_lot, stats.unknown_slot, stats.invalid_time),
            (1, 1, 2)
        );
        assert!(rollup.finish(i64::MAX).is_empty(), "no lot has a reading");
    }

    #[test]
    fn a_checkpoint_resumes_with_identical_output() {
        let readings = readings(&mut Noise(3));
        let (first, second) = readings.split_at(readings.len() / 2);
        let mut rollup = OccupancyRollup::new(config(20, 60), topology()).expect("valid");
        let mut rows = Vec::new();
        push_all(&mut rollup, first, &mut rows);
        // The same pushes and drains without the checkpoint.
        let mut straight = rollup.clone();
        let mut expected = rows.clone();
        push_all(&mut straight, second, &mut expected);
        expected.extend(straight.finish(420 * MINUTE));
        assert!(
            rollup.buffered_len() > 0,
            "the checkpoint should hold buffered readings"
        );
        let bytes = rmp_serde::to_vec(&rollup).expect("the roll-up should serialize");
        let mut resumed: OccupancyRollup =
            rmp_serde::from_slice(&bytes).expect("the checkpoint should deserialize");
        assert_eq!(resumed, rollup);
        push_all(&mut resumed, second, &mut rows);
        rows.extend(resumed.finish(420 * MINUTE));
        assert_eq!(rows, expected);
        assert_eq!(resumed.stats(), straight.stats());
        assert_eq!(sorted(summary(&rows)), batch(&readings, 420, 60));
    }

    #[test]
    fn invalid_settings_and_topologies_are_refused() {
        let invalid = |config: RollupConfig| {
            OccupancyRollup::new(config, topology()).expect_err("the config should be refused")
        };
        assert_eq!(
            invalid(RollupConfig {
                step_minutes: 0,
                ..config(0, 0)
            }),
            RollupError::InvalidStep { step_minutes: 0 }
        );
        assert!(matches!(
            invalid(RollupConfig {
                step_minutes: 1_441,
                ..config(0, 0)
            }),
            RollupError::InvalidStep { .. }
        ));
        assert!(matches!(
            invalid(config(-1, 0)),
            RollupError::NegativeLateness { .. }
        ));
        assert!(matches!(
            invalid(config(0, -1)),
            RollupError::NegativeSilence { .. }
        ));
        assert_eq!(
            invalid(RollupConfig {
                source: String::new(),
                ..config(0, 0)
            }),
            RollupError::EmptySource
        );
        let twice = vec![
            ("lot-a".to_owned(), vec!["a0".to_owned()]),
            ("lot-a".to_owned(), vec![]),
        ];
        assert!(matches!(
            OccupancyRollup::new(config(0, 0), twice),
            Err(RollupError::DuplicateLot { .. })
        ));
        let slot_twice = vec![("lot-a".to_owned(), vec!["a0".to_owned(), "a0".to_owned()])];
        assert!(matches!(
            OccupancyRollup::new(config(0, 0), slot_twice),
            Err(RollupError::DuplicateSlot { .. })
        ));
    }

    #[test]
    fn a_checkpoint_of_a_newer_version_is_refused() {
        let rollup = OccupancyRollup::new(config(0, 0), topology()).expect("valid");
        let mut state = rollup.state.clone();
        state.version = ROLLUP_STATE_VERSION + 1;
        let bytes = rmp_serde::to_vec(&state).expect("the state should serialize");
        let error = rmp_serde::from_slice::<OccupancyRollup>(&bytes)
            .expect_err("a newer checkpoint should be refused");
        assert!(error.to_string().contains("newer"), "{error}");
    }
}
