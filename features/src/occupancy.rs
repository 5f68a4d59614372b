//! Slot status from sensor readings, and lot occupancy from slot status.
//!
//! Sensor streams repeat themselves (heartbeats, duplicates), arrive out of order and go silent. The
//! rules here decide what a slot's status is at an instant, and they are the same for the batch
//! derivation of `fact_lot_occupancy` and for live state in serving:
//!
//! - A reading is newer than the state if its event time is later, or equal with a higher sequence
//!   number. Older readings never overwrite newer ones (out of order); an identical (time, sequence)
//!   pair is a duplicate.
//! - A slot whose newest reading is older than the *silence limit* is `Unknown`: neither free nor
//!   occupied. A dead sensor must not look like a free slot to a driver.
//! - Point in time: the status at `t` uses only readings with event time `<= t`.

use chrono::{DateTime, Utc};

/// What is known of one slot at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotStatus {
    /// A vehicle is in the slot.
    Occupied,
    /// The slot is free.
    Free,
    /// No reading recent enough to say.
    Unknown,
}

/// What applying a reading did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApplyOutcome {
    /// The reading is the newest; the status changed.
    Changed,
    /// The reading is the newest and repeats the status (a heartbeat).
    Confirmed,
    /// The same (time, sequence) was applied before.
    Duplicate,
    /// An older reading than the one applied; ignored.
    OutOfOrder,
}

/// The newest reading of one slot. 17 bytes of payload, so millions of slots fit in memory.
///
/// Serializable, so live state can be checkpointed and the archiver's occupancy roll-up resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotState {
    last_ts_ms: i64,
    last_seq: u64,
    occupied: bool,
}

impl Default for SlotState {
    fn default() -> Self {
        SlotState {
            last_ts_ms: i64::MIN,
            last_seq: 0,
            occupied: false,
        }
    }
}

impl SlotState {
    /// Applies a reading taken at `ts_ms` (Unix ms) with sequence number `seq`.
    pub fn apply(&mut self, ts_ms: i64, seq: u64, occupied: bool) -> ApplyOutcome {
        let key = (ts_ms, seq);
        let last = (self.last_ts_ms, self.last_seq);
        if self.has_reading() && key == last {
            return ApplyOutcome::Duplicate;
        }
        if self.has_reading() && key < last {
            return ApplyOutcome::OutOfOrder;
        }
        let changed = !self.has_reading() || self.occupied != occupied;
        self.last_ts_ms = ts_ms;
        self.last_seq = seq;
        self.occupied = occupied;
        if changed {
            ApplyOutcome::Changed
        } else {
            ApplyOutcome::Confirmed
        }
    }

    /// Whether any reading was applied.
    pub fn has_reading(&self) -> bool {
        self.last_ts_ms != i64::MIN
    }

    /// The newest reading's status (occupied or not), if any, regardless of its age.
    pub fn occupied(&self) -> Option<bool> {
        self.has_reading().then_some(self.occupied)
    }

    /// Event time of the newest reading, if any.
    pub fn last_reading_ms(&self) -> Option<i64> {
        self.has_reading().then_some(self.last_ts_ms)
    }

    /// The status at `now_ms`, given that a slot silent for longer than `silence_ms` is unknown.
    pub fn status_at(&self, now_ms: i64, silence_ms: i64) -> SlotStatus {
        if !self.has_reading() || now_ms.saturating_sub(self.last_ts_ms) > silence_ms {
            SlotStatus::Unknown
        } else if self.occupied {
            SlotStatus::Occupied
        } else {
            SlotStatus::Free
        }
    }
}

/// One reading, reduced to what occupancy needs; `slot` indexes the lot's slot list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Index of the slot in the lot.
    pub slot: u32,
    /// Event time, Unix ms.
    pub ts_ms: i64,
    /// Sensor sequence number.
    pub seq: u64,
    /// Whether the sensor saw a vehicle.
    pub occupied: bool,
}

/// Occupied and unknown slots of a lot at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OccupancyPoint {
    /// The instant, Unix ms.
    pub ts_ms: i64,
    /// Slots occupied.
    pub occupied: i32,
    /// Slots whose status is unknown.
    pub unknown: i32,
}

/// The regular grid of instants `start, start + step, ...` strictly before `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// First instant, Unix ms.
    pub start_ms: i64,
    /// End (exclusive), Unix ms.
    pub end_ms: i64,
    /// Step, ms (> 0).
    pub step_ms: i64,
}

impl Grid {
    /// A grid from UTC instants and a step in minutes.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>, step_minutes: u32) -> Self {
        Grid {
            start_ms: start.timestamp_millis(),
            end_ms: end.timestamp_millis(),
            step_ms: i64::from(step_minutes.max(1)) * 60_000,
        }
    }

    /// The instants of the grid.
    pub fn instants(&self) -> impl Iterator<Item = i64> + '_ {
        let step =
            usize::try_from(self.step_ms.max(1)).expect("a positive step should fit in usize");
        (self.start_ms..self.end_ms).step_by(step)
    }
}

/// The slots of one lot, fed readings in event-time order and counted at instants.
///
/// Streaming producers (the simulator day by day, live state in serving) keep one tracker per lot;
/// [`lot_occupancy`] is the batch form over a whole grid.
#[derive(Debug, Clone)]
pub struct LotTracker {
    states: Vec<SlotState>,
}

impl LotTracker {
    /// A tracker for `slot_count` slots, none seen yet.
    pub fn new(slot_count: usize) -> Self {
        LotTracker {
            states: vec![SlotState::default(); slot_count],
        }
    }

    /// Applies one reading; readings for unknown slot indexes are ignored.
    pub fn apply(&mut self, reading: &Reading) -> Option<ApplyOutcome> {
        let state = self.states.get_mut(reading.slot as usize)?;
        Some(state.apply(reading.ts_ms, reading.seq, reading.occupied))
    }

    /// Occupied and unknown slots at `instant_ms`.
    pub fn count_at(&self, instant_ms: i64, silence_ms: i64) -> OccupancyPoint {
        let mut occupied = 0;
        let mut unknown = 0;
        for state in &self.states {
            match state.status_at(instant_ms, silence_ms) {
                SlotStatus::Occupied => occupied += 1,
                SlotStatus::Unknown => unknown += 1,
                SlotStatus::Free => {}
            }
        }
        OccupancyPoint {
            ts_ms: instant_ms,
            occupied,
            unknown,
        }
    }

    /// Applies `readings` (sorted by event time) up to each grid instant and counts there. Readings after
    /// the grid's last instant stay unapplied: the returned index is the first of them.
    pub fn advance(
        &mut self,
        readings: &[Reading],
        grid: Grid,
        silence_ms: i64,
    ) -> (Vec<OccupancyPoint>, usize) {
        let mut next = 0;
        let mut points = Vec::new();
        for instant in grid.instants() {
            while next < readings.len() && readings[next].ts_ms <= instant {
                self.apply(&readings[next]);
                next += 1;
            }
            points.push(self.count_at(instant, silence_ms));
        }
        (points, next)
    }
}

/// Sorts readings into the order trackers consume them: event time, then sequence, then slot.
pub fn sort_readings(readings: &mut [Reading]) {
    readings.sort_unstable_by_key(|reading| (reading.ts_ms, reading.seq, reading.slot));
}

/// Occupancy of one lot at every grid instant, from its slots' readings.
///
/// `readings` may be in any order and hold duplicates; they are sorted here by event time. Slots that
/// never report count as unknown, so `occupied + unknown <= slot_count` always holds.
pub fn lot_occupancy(
    slot_count: usize,
    readings: &mut [Reading],
    grid: Grid,
    silence_ms: i64,
) -> Vec<OccupancyPoint> {
    sort_readings(readings);
    LotTracker::new(slot_count)
        .advance(readings, grid, silence_ms)
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_readings_win_and_older_ones_are_ignored() {
        let mut state = SlotState::default();
        assert_eq!(state.apply(1_000, 1, true), ApplyOutcome::Changed);
        assert_eq!(state.apply(1_000, 1, true), ApplyOutcome::Duplicate);
        assert_eq!(state.apply(2_000, 2, true), ApplyOutcome::Confirmed);
        assert_eq!(state.apply(1_500, 3, false), ApplyOutcome::OutOfOrder);
        assert_eq!(state.status_at(2_000, 10_000), SlotStatus::Occupied);
        assert_eq!(state.apply(3_000, 4, false), ApplyOutcome::Changed);
        assert_eq!(state.status_at(3_000, 10_000), SlotStatus::Free);
    }

    #[test]
    fn silent_and_never_seen_slots_are_unknown() {
        let mut state = SlotState::default();
        assert_eq!(state.status_at(0, 10), SlotStatus::Unknown);
        state.apply(0, 0, false);
        assert_eq!(state.status_at(10, 10), SlotStatus::Free);
        assert_eq!(state.status_at(11, 10), SlotStatus::Unknown);
    }

    #[test]
    fn lot_occupancy_is_point_in_time_and_order_independent() {
        let minute = 60_000;
        let mut readings = vec![
            Reading {
                slot: 0,
                ts_ms: 2 * minute,
                seq: 2,
                occupied: false,
            },
            Reading {
                slot: 0,
                ts_ms: 0,
                seq: 1,
                occupied: true,
            },
            Reading {
                slot: 1,
                ts_ms: minute,
                seq: 1,
                occupied: true,
            },
            Reading {
                slot: 1,
                ts_ms: minute,
                seq: 1,
                occupied: true,
            },
        ];
        let grid = Grid {
            start_ms: 0,
            end_ms: 4 * minute,
            step_ms: minute,
        };
        let points = lot_occupancy(3, &mut readings, grid, 2 * minute);
        let summary: Vec<_> = points
            .iter()
            .map(|point| (point.occupied, point.unknown))
            .collect();
        // Slot 2 never reports. At 3 min slot 1 has been silent for 2 min (still known); at 4 min it would not be.
        assert_eq!(summary, vec![(1, 2), (2, 1), (1, 1), (1, 1)]);
    }
}
