//! Live state: every slot's newest reading, and per-lot aggregates the forecaster needs.
//!
//! Slots apply the shared rules of [`parkcast_features::occupancy`] (newest by event time and sequence
//! wins; duplicates and older readings are refused), so live state and the archived
//! `fact_lot_occupancy` agree. On top, each lot keeps a watermark per stream (its newest sensor event
//! time, its newest session event time: the two topics are read independently, so one can run ahead
//! of the other): an event older than its stream's watermark by more than `max_lateness_ms` is
//! refused as too late, which bounds how far
//! back windowed aggregates can change. Arrivals (free -> occupied) and departures (occupied -> free)
//! are counted in one-minute buckets over the last hour, and each occupied slot remembers since when it
//! is occupied (the dwell time of the parked car).
//!
//! For forecasting, each lot is also *sampled onto the model's grid* ([`GridRule`]): the value of
//! grid instant `t` is the lot's occupancy at `t + step/2` (just before), the latest reading the
//! trainer's nearest-instant grid maps to `t` ([`parkcast_features::grid`]). It is final, and
//! emitted, when the lot's first sensor event after that moment arrives: with events in order, the
//! state then holds exactly the readings up to it (the roll-up's rule with no lateness). Grid
//! values and session entries and exits wait in a per-lot outbox until the scorer takes them
//! ([`LiveState::take_changes`]) together with the pictures of the lots that changed.
//!
//! Memory: 32 bytes per slot (1M slots: 32 MB) plus 1 KB per lot.

use parkcast_features::occupancy::{ApplyOutcome, SlotState, SlotStatus};
use serde::{Deserialize, Serialize};

use crate::decode::{Reason, Rejection, SensorEvent, SessionMark};
use crate::topology::{LotIndex, TopologyIndex};

/// Minutes of arrival and departure history per lot.
pub const FLOW_MINUTES: usize = 60;

/// Index of the sensor stream's watermark.
const SENSOR: usize = 0;
/// Index of the session stream's watermark.
const SESSION: usize = 1;

fn advance(watermark: &mut Option<i64>, event_time_ms: i64) {
    *watermark = Some(watermark.map_or(event_time_ms, |mark| mark.max(event_time_ms)));
}

/// Grid values older than this behind a lot's newest event are not emitted (the features keep eight
/// days and a step; a lot silent for longer restarts its grid at the new event).
pub const GRID_HISTORY_MS: i64 = 9 * 86_400_000;

/// Grid values and session events a lot holds for the scorer at most; older ones are dropped (the
/// scorer takes them every few milliseconds, so only a stopped scorer ever reaches this).
pub const MAX_OUTBOX: usize = 4_096;

/// How lots are sampled onto the forecasting grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridRule {
    /// The grid step, ms (positive).
    pub step_ms: i64,
}

impl GridRule {
    /// The moment whose occupancy is the value of grid instant `instant_ms`: just before half a
    /// step after it.
    pub fn sample_ms(&self, instant_ms: i64) -> i64 {
        instant_ms + self.step_ms / 2 - 1
    }

    /// The first grid instant sampled at or after `ts_ms`.
    fn first_instant_sampled_from(&self, ts_ms: i64) -> i64 {
        let earliest = ts_ms - self.step_ms / 2 + 1;
        (earliest + self.step_ms - 1).div_euclid(self.step_ms) * self.step_ms
    }
}

/// An input of the incremental feature path, taken from live state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureInput {
    /// A lot's final value at a grid instant.
    Grid {
        /// The grid instant, ms.
        instant_ms: i64,
        /// Slots occupied at its sample moment.
        occupied: u32,
        /// Slots unknown then.
        unknown: u32,
        /// Slots of the lot.
        capacity: u32,
    },
    /// A session entry, ms.
    Arrival(i64),
    /// A session exit, ms.
    Departure(i64),
}

/// What changed in a lot since the scorer last looked.
#[derive(Debug, Clone, PartialEq)]
pub struct LotChange {
    /// The lot.
    pub lot: LotIndex,
    /// Its picture now.
    pub snapshot: LotSnapshot,
    /// Grid values and session events, in the order they became final.
    pub inputs: Vec<FeatureInput>,
}

/// Live-state rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveRules {
    /// A slot silent for longer is unknown (neither free nor occupied).
    pub silence_ms: i64,
    /// Events older than the lot's newest by more than this are refused.
    pub max_lateness_ms: i64,
}

impl Default for LiveRules {
    fn default() -> Self {
        LiveRules {
            silence_ms: 3 * 3_600_000,
            max_lateness_ms: 3_600_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SlotLive {
    state: SlotState,
    /// Event time the slot became occupied (`i64::MIN` while free or unknown).
    occupied_since_ms: i64,
}

impl SlotLive {
    fn empty() -> SlotLive {
        SlotLive {
            state: SlotState::default(),
            occupied_since_ms: i64::MIN,
        }
    }
}

/// Counts per minute over the last [`FLOW_MINUTES`]: a ring keyed by minute number.
#[derive(Debug, Clone)]
struct MinuteRing {
    minutes: [i64; FLOW_MINUTES],
    counts: [u32; FLOW_MINUTES],
}

impl Default for MinuteRing {
    fn default() -> Self {
        MinuteRing {
            minutes: [i64::MIN; FLOW_MINUTES],
            counts: [0; FLOW_MINUTES],
        }
    }
}

impl MinuteRing {
    fn add(&mut self, ts_ms: i64) {
        let minute = ts_ms.div_euclid(60_000);
        // FLOW_MINUTES is small, so the remainder fits usize.
        let position = minute.rem_euclid(FLOW_MINUTES as i64) as usize;
        if self.minutes[position] != minute {
            if self.minutes[position] > minute {
                return; // older than the ring holds
            }
            self.minutes[position] = minute;
            self.counts[position] = 0;
        }
        self.counts[position] += 1;
    }

    /// The non-empty minutes, oldest first (for checkpoints: a fixed array of 60 is not serde's).
    fn entries(&self) -> Vec<(i64, u32)> {
        let mut entries: Vec<(i64, u32)> = self
            .minutes
            .iter()
            .zip(&self.counts)
            .filter(|(minute, count)| **minute != i64::MIN && **count > 0)
            .map(|(minute, count)| (*minute, *count))
            .collect();
        entries.sort_unstable();
        entries
    }

    fn from_entries(entries: &[(i64, u32)]) -> MinuteRing {
        let mut ring = MinuteRing::default();
        for &(minute, count) in entries {
            let position = minute.rem_euclid(FLOW_MINUTES as i64) as usize;
            if ring.minutes[position] <= minute {
                ring.minutes[position] = minute;
                ring.counts[position] = count;
            }
        }
        ring
    }

    /// Events in the `window_minutes` minutes up to and including the minute of `now_ms`.
    fn sum(&self, now_ms: i64, window_minutes: usize) -> u32 {
        let now_minute = now_ms.div_euclid(60_000);
        let oldest = now_minute - window_minutes.min(FLOW_MINUTES) as i64;
        self.minutes
            .iter()
            .zip(&self.counts)
            .filter(|(minute, _)| **minute > oldest && **minute <= now_minute)
            .map(|(_, count)| *count)
            .sum()
    }
}

#[derive(Debug, Clone, Default)]
struct LotLive {
    slots: Vec<SlotLive>,
    /// Newest event time of the sensor and of the session stream.
    watermarks: [Option<i64>; 2],
    arrivals: MinuteRing,
    departures: MinuteRing,
    session_entries: MinuteRing,
    session_exits: MinuteRing,
    /// The next grid instant to emit (none before the first sensor event under a grid rule).
    next_instant_ms: Option<i64>,
    outbox: Vec<FeatureInput>,
    /// Whether the picture changed since the scorer last took it.
    dirty: bool,
}

impl LotLive {
    fn post(&mut self, input: FeatureInput) {
        if self.outbox.len() >= MAX_OUTBOX {
            self.outbox.drain(..MAX_OUTBOX / 2);
        }
        self.outbox.push(input);
        self.dirty = true;
    }

    /// Emits the grid instants sampled before `event_time_ms` (the state holds every reading up to
    /// their sample moments).
    fn emit_grid(&mut self, rule: GridRule, silence_ms: i64, event_time_ms: i64) {
        let mut instant = match self.next_instant_ms {
            Some(next) => next,
            None => rule.first_instant_sampled_from(event_time_ms),
        };
        let oldest = rule.first_instant_sampled_from(event_time_ms - GRID_HISTORY_MS);
        instant = instant.max(oldest);
        while rule.sample_ms(instant) < event_time_ms {
            let sample_ms = rule.sample_ms(instant);
            let (mut occupied, mut unknown) = (0u32, 0u32);
            for slot in &self.slots {
                match slot.state.status_at(sample_ms, silence_ms) {
                    SlotStatus::Occupied => occupied += 1,
                    SlotStatus::Unknown => unknown += 1,
                    SlotStatus::Free => {}
                }
            }
            let capacity = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
            self.post(FeatureInput::Grid {
                instant_ms: instant,
                occupied,
                unknown,
                capacity,
            });
            instant += rule.step_ms;
        }
        self.next_instant_ms = Some(instant);
    }
}

/// One lot's live state as data, for checkpoints: versioned by the checkpoint file, independent of
/// the in-memory layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotRecord {
    /// Slot states in topology order, each with the time it became occupied (`i64::MIN`: not).
    slots: Vec<SlotLive>,
    watermarks: [Option<i64>; 2],
    /// (minute, count) of arrivals, departures, session entries and exits.
    flows: [Vec<(i64, u32)>; 4],
}

impl LotRecord {
    /// Slots recorded.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

/// A lot's live picture at an instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LotSnapshot {
    /// Slots reporting occupied.
    pub occupied: u32,
    /// Slots reporting free.
    pub free: u32,
    /// Slots silent too long (or never heard from).
    pub unknown: u32,
    /// The lot's newest event time, if any.
    pub newest_event_ms: Option<i64>,
    /// Sensor arrivals (free -> occupied) in the last hour.
    pub arrivals_last_hour: u32,
    /// Sensor departures (occupied -> free) in the last hour.
    pub departures_last_hour: u32,
    /// Session entries in the last hour.
    pub entries_last_hour: u32,
    /// Session exits in the last hour.
    pub exits_last_hour: u32,
    /// Minutes each currently parked car has stayed, for occupied slots with a known start.
    pub dwell_minutes: Vec<f64>,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The slot's status changed.
    Changed,
    /// A heartbeat or repeat confirmed the status.
    Confirmed,
    /// A session event was counted.
    Counted,
}

/// Every slot and lot of a topology.
#[derive(Debug, Clone)]
pub struct LiveState {
    rules: LiveRules,
    grid: Option<GridRule>,
    lots: Vec<LotLive>,
    /// The newest event time of any lot: the stream's clock.
    newest_ms: Option<i64>,
}

impl LiveState {
    /// Empty state for every slot of the topology.
    pub fn new(topology: &TopologyIndex, rules: LiveRules) -> Self {
        LiveState {
            rules,
            grid: None,
            newest_ms: None,
            lots: topology
                .lots()
                .iter()
                .map(|lot| LotLive {
                    slots: vec![SlotLive::empty(); lot.slot_ids.len()],
                    ..LotLive::default()
                })
                .collect(),
        }
    }

    fn lot_mut(
        &mut self,
        lot: LotIndex,
        stream: usize,
        event_time_ms: i64,
    ) -> Result<&mut LotLive, Rejection> {
        let max_lateness_ms = self.rules.max_lateness_ms;
        let live = self
            .lots
            .get_mut(lot as usize)
            .ok_or_else(|| Rejection::new(Reason::UnknownLot, format!("lot index {lot}")))?;
        if let Some(watermark) = live.watermarks[stream]
            && event_time_ms < watermark.saturating_sub(max_lateness_ms)
        {
            return Err(Rejection::new(
                Reason::TooLate,
                format!(
                    "{} ms behind the lot's newest {} event (at most {max_lateness_ms} allowed)",
                    watermark - event_time_ms,
                    if stream == SENSOR {
                        "sensor"
                    } else {
                        "session"
                    }
                ),
            ));
        }
        Ok(live)
    }

    /// Samples every lot onto a grid from now on (`None`: stop). Lots start their grid at their
    /// next sensor event.
    pub fn set_grid(&mut self, rule: Option<GridRule>) {
        let rule = rule.filter(|rule| rule.step_ms > 0);
        if rule == self.grid {
            return;
        }
        self.grid = rule;
        for live in &mut self.lots {
            live.next_instant_ms = None;
            live.outbox.clear();
        }
    }

    /// The newest event time seen in any lot: the stream's clock (replays run on it).
    pub fn stream_time_ms(&self) -> Option<i64> {
        self.newest_ms
    }

    /// The changes since the last call, appended to `out`: the lots whose picture changed (or every
    /// lot, with `all`: silence and flow windows move with time alone), their pictures at `now_ms`
    /// and the feature inputs they emitted.
    pub fn take_changes(&mut self, now_ms: i64, all: bool, out: &mut Vec<LotChange>) {
        for index in 0..self.lots.len() {
            if !(all || self.lots[index].dirty) {
                continue;
            }
            let Ok(lot) = LotIndex::try_from(index) else {
                break;
            };
            let Some(snapshot) = self.lot(lot, now_ms) else {
                continue;
            };
            let live = &mut self.lots[index];
            live.dirty = false;
            out.push(LotChange {
                lot,
                snapshot,
                inputs: std::mem::take(&mut live.outbox),
            });
        }
    }

    /// Applies a validated sensor reading.
    pub fn apply_sensor(&mut self, event: &SensorEvent) -> Result<Applied, Rejection> {
        let (grid, silence_ms) = (self.grid, self.rules.silence_ms);
        self.newest_ms = Some(self.newest_ms.map_or(event.event_time_ms, |newest| {
            newest.max(event.event_time_ms)
        }));
        let live = self.lot_mut(event.lot, SENSOR, event.event_time_ms)?;
        if event.slot as usize >= live.slots.len() {
            return Err(Rejection::new(
                Reason::UnknownSlot,
                format!("slot index {}", event.slot),
            ));
        }
        if let Some(rule) = grid {
            live.emit_grid(rule, silence_ms, event.event_time_ms);
        }
        let Some(slot) = live.slots.get_mut(event.slot as usize) else {
            return Err(Rejection::new(
                Reason::UnknownSlot,
                format!("slot index {}", event.slot),
            ));
        };
        let was_occupied = slot.state.occupied();
        let outcome = slot
            .state
            .apply(event.event_time_ms, event.seq, event.occupied);
        let applied = match outcome {
            ApplyOutcome::Duplicate => {
                return Err(Rejection::new(
                    Reason::Duplicate,
                    format!(
                        "slot index {} already has time {} seq {}",
                        event.slot, event.event_time_ms, event.seq
                    ),
                ));
            }
            ApplyOutcome::OutOfOrder => {
                return Err(Rejection::new(
                    Reason::OutOfOrder,
                    format!(
                        "slot index {} has a newer reading than time {} seq {}",
                        event.slot, event.event_time_ms, event.seq
                    ),
                ));
            }
            ApplyOutcome::Changed => Applied::Changed,
            ApplyOutcome::Confirmed => Applied::Confirmed,
        };
        if applied == Applied::Changed {
            live.dirty = true;
            if event.occupied {
                slot.occupied_since_ms = event.event_time_ms;
                if was_occupied == Some(false) {
                    live.arrivals.add(event.event_time_ms);
                }
            } else {
                slot.occupied_since_ms = i64::MIN;
                if was_occupied == Some(true) {
                    live.departures.add(event.event_time_ms);
                }
            }
        }
        advance(&mut live.watermarks[SENSOR], event.event_time_ms);
        Ok(applied)
    }

    /// Applies a validated session entry or exit.
    pub fn apply_session(&mut self, mark: &SessionMark) -> Result<Applied, Rejection> {
        let grid = self.grid;
        let live = self.lot_mut(mark.lot, SESSION, mark.event_time_ms)?;
        if mark.entry {
            live.session_entries.add(mark.event_time_ms);
        } else {
            live.session_exits.add(mark.event_time_ms);
        }
        if grid.is_some() {
            live.post(if mark.entry {
                FeatureInput::Arrival(mark.event_time_ms)
            } else {
                FeatureInput::Departure(mark.event_time_ms)
            });
        }
        live.dirty = true;
        advance(&mut live.watermarks[SESSION], mark.event_time_ms);
        // A session event is an event of the stream too: the stream clock judges the next events
        // by it (a session stream read ahead of the readings must not look far in the future).
        self.newest_ms = Some(
            self.newest_ms
                .map_or(mark.event_time_ms, |newest| newest.max(mark.event_time_ms)),
        );
        Ok(Applied::Counted)
    }

    /// A lot's picture at `now_ms` (O(slots of the lot)).
    pub fn lot(&self, lot: LotIndex, now_ms: i64) -> Option<LotSnapshot> {
        let live = self.lots.get(lot as usize)?;
        let mut snapshot = LotSnapshot {
            occupied: 0,
            free: 0,
            unknown: 0,
            newest_event_ms: live.watermarks.iter().flatten().copied().max(),
            arrivals_last_hour: live.arrivals.sum(now_ms, FLOW_MINUTES),
            departures_last_hour: live.departures.sum(now_ms, FLOW_MINUTES),
            entries_last_hour: live.session_entries.sum(now_ms, FLOW_MINUTES),
            exits_last_hour: live.session_exits.sum(now_ms, FLOW_MINUTES),
            dwell_minutes: Vec::new(),
        };
        for slot in &live.slots {
            match slot.state.status_at(now_ms, self.rules.silence_ms) {
                SlotStatus::Occupied => {
                    snapshot.occupied += 1;
                    if slot.occupied_since_ms != i64::MIN {
                        snapshot.dwell_minutes.push(
                            now_ms.saturating_sub(slot.occupied_since_ms).max(0) as f64 / 60_000.0,
                        );
                    }
                }
                SlotStatus::Free => snapshot.free += 1,
                SlotStatus::Unknown => snapshot.unknown += 1,
            }
        }
        Some(snapshot)
    }

    /// The lot's state as data (for checkpoints), or `None` for an index out of range.
    pub fn export_lot(&self, lot: LotIndex) -> Option<LotRecord> {
        let live = self.lots.get(lot as usize)?;
        Some(LotRecord {
            slots: live.slots.clone(),
            watermarks: live.watermarks,
            flows: [
                live.arrivals.entries(),
                live.departures.entries(),
                live.session_entries.entries(),
                live.session_exits.entries(),
            ],
        })
    }

    /// Replaces the lot's state with a record; false (and nothing changed) when the record's slot
    /// count is not the lot's (the topology changed since the checkpoint).
    pub fn import_lot(&mut self, lot: LotIndex, record: &LotRecord) -> bool {
        let Some(live) = self.lots.get_mut(lot as usize) else {
            return false;
        };
        if live.slots.len() != record.slots.len() {
            return false;
        }
        live.slots.copy_from_slice(&record.slots);
        live.watermarks = record.watermarks;
        let [arrivals, departures, entries, exits] = &record.flows;
        live.arrivals = MinuteRing::from_entries(arrivals);
        live.departures = MinuteRing::from_entries(departures);
        live.session_entries = MinuteRing::from_entries(entries);
        live.session_exits = MinuteRing::from_entries(exits);
        live.next_instant_ms = None;
        live.outbox.clear();
        live.dirty = true;
        if let Some(newest) = record.watermarks.iter().flatten().copied().max() {
            self.newest_ms = Some(self.newest_ms.map_or(newest, |seen| seen.max(newest)));
        }
        true
    }

    /// Forgets everything about the lot (its partition moved to another replica).
    pub fn reset_lot(&mut self, lot: LotIndex) {
        if let Some(live) = self.lots.get_mut(lot as usize) {
            let slots = live.slots.len();
            *live = LotLive {
                slots: vec![SlotLive::empty(); slots],
                dirty: true,
                ..LotLive::default()
            };
        }
    }

    /// The lot's newest event time, if it has seen any.
    pub fn newest_event_ms(&self, lot: LotIndex) -> Option<i64> {
        self.lots
            .get(lot as usize)?
            .watermarks
            .iter()
            .flatten()
            .copied()
            .max()
    }

    /// Lots in the state.
    pub fn lot_count(&self) -> usize {
        self.lots.len()
    }

    /// Approximate heap bytes held (for the memory benchmark).
    pub fn heap_bytes(&self) -> usize {
        self.lots.capacity() * std::mem::size_of::<LotLive>()
            + self
                .lots
                .iter()
                .map(|lot| lot.slots.capacity() * std::mem::size_of::<SlotLive>())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_000_000_000;

    fn state() -> LiveState {
        let topology = TopologyIndex::new([(
            "lot".to_owned(),
            (0..4).map(|slot| format!("s{slot}")).collect(),
        )])
        .expect("valid");
        LiveState::new(&topology, LiveRules::default())
    }

    fn reading(slot: u32, occupied: bool, seq: u64, minutes: i64) -> SensorEvent {
        SensorEvent {
            lot: 0,
            slot,
            occupied,
            heartbeat: false,
            seq,
            event_time_ms: T0 + minutes * 60_000,
            clamped: false,
        }
    }

    #[test]
    fn slots_count_flows_and_dwell() {
        let mut live = state();
        assert_eq!(
            live.apply_sensor(&reading(0, false, 1, 0)),
            Ok(Applied::Changed)
        );
        assert_eq!(
            live.apply_sensor(&reading(0, true, 2, 5)),
            Ok(Applied::Changed)
        );
        assert_eq!(
            live.apply_sensor(&reading(1, true, 1, 6)),
            Ok(Applied::Changed)
        );
        assert_eq!(
            live.apply_sensor(&reading(1, true, 2, 7)),
            Ok(Applied::Confirmed)
        );
        assert_eq!(
            live.apply_sensor(&reading(1, false, 3, 20)),
            Ok(Applied::Changed)
        );
        let snapshot = live.lot(0, T0 + 25 * 60_000).expect("a lot");
        assert_eq!(
            (snapshot.occupied, snapshot.free, snapshot.unknown),
            (1, 1, 2)
        );
        assert_eq!(
            snapshot.arrivals_last_hour, 1,
            "the first reading of slot 1 is no arrival"
        );
        assert_eq!(snapshot.departures_last_hour, 1);
        assert_eq!(snapshot.dwell_minutes, vec![20.0]);
        assert_eq!(snapshot.newest_event_ms, Some(T0 + 20 * 60_000));
        // An hour and a half later the flows have left the window; after the silence limit the
        // slots are unknown.
        let later = live.lot(0, T0 + 90 * 60_000).expect("a lot");
        assert_eq!(later.arrivals_last_hour + later.departures_last_hour, 0);
        let silent = live.lot(0, T0 + 4 * 3_600_000).expect("a lot");
        assert_eq!(silent.unknown, 4);
    }

    #[test]
    fn lots_are_sampled_onto_the_grid_just_before_half_a_step_after_each_instant() {
        let mut live = state();
        live.set_grid(Some(GridRule {
            step_ms: 15 * 60_000,
        }));
        assert_eq!(T0 % (15 * 60_000), 0);
        for (slot, occupied, seq, minutes) in [(0, true, 1, 0), (1, true, 1, 5), (0, false, 2, 10)]
        {
            live.apply_sensor(&reading(slot, occupied, seq, minutes))
                .expect("applies");
        }
        live.apply_session(&SessionMark {
            lot: 0,
            entry: true,
            event_time_ms: T0 + 11 * 60_000,
            clamped: false,
        })
        .expect("applies");
        // A heartbeat at 00:40 closes 00:15 (sampled at 00:22:30) and 00:30 (00:37:30).
        live.apply_sensor(&reading(1, true, 2, 40))
            .expect("applies");
        let mut changes = Vec::new();
        live.take_changes(T0 + 40 * 60_000, false, &mut changes);
        assert_eq!(changes.len(), 1);
        let grid = |minutes: i64, occupied| FeatureInput::Grid {
            instant_ms: T0 + minutes * 60_000,
            occupied,
            unknown: 2,
            capacity: 4,
        };
        assert_eq!(
            changes[0].inputs,
            vec![
                // 00:00, sampled at 00:07:30, when both slots were occupied.
                grid(0, 2),
                FeatureInput::Arrival(T0 + 11 * 60_000),
                grid(15, 1),
                grid(30, 1),
            ]
        );
        assert_eq!(changes[0].snapshot.occupied, 1);
        assert_eq!(live.stream_time_ms(), Some(T0 + 40 * 60_000));
        changes.clear();
        live.take_changes(T0 + 41 * 60_000, false, &mut changes);
        assert!(changes.is_empty(), "nothing changed since");
        live.take_changes(T0 + 41 * 60_000, true, &mut changes);
        assert_eq!(changes.len(), 1, "every lot when asked for all");
        assert!(changes[0].inputs.is_empty());
    }

    #[test]
    fn duplicates_older_and_too_late_readings_are_refused() {
        let mut live = state();
        live.apply_sensor(&reading(2, true, 5, 100))
            .expect("applies");
        let reason = |result: Result<Applied, Rejection>| result.map_err(|r| r.reason);
        assert_eq!(
            reason(live.apply_sensor(&reading(2, true, 5, 100))),
            Err(Reason::Duplicate)
        );
        assert_eq!(
            reason(live.apply_sensor(&reading(2, false, 4, 99))),
            Err(Reason::OutOfOrder)
        );
        assert_eq!(
            reason(live.apply_sensor(&reading(3, true, 1, 30))),
            Err(Reason::TooLate)
        );
        assert_eq!(
            reason(live.apply_sensor(&reading(3, true, 1, 50))),
            Ok(Applied::Changed),
            "within the lateness bound"
        );
        let snapshot = live.lot(0, T0 + 100 * 60_000).expect("a lot");
        assert_eq!(snapshot.occupied, 2);
    }

    #[test]
    fn a_stream_running_ahead_does_not_make_the_other_late() {
        let mut live = state();
        live.apply_sensor(&reading(0, true, 1, 600))
            .expect("applies");
        let mark = SessionMark {
            lot: 0,
            entry: true,
            event_time_ms: T0,
            clamped: false,
        };
        assert_eq!(live.apply_session(&mark), Ok(Applied::Counted));
        let older = SessionMark {
            event_time_ms: T0 - 2 * 3_600_000,
            ..mark
        };
        assert_eq!(
            live.apply_session(&older).map_err(|r| r.reason),
            Err(Reason::TooLate),
            "late within its own stream"
        );
    }

    #[test]
    fn session_events_move_the_stream_clock_as_readings_do() {
        let mut live = state();
        live.apply_sensor(&reading(0, true, 1, 0)).expect("applies");
        let mark = SessionMark {
            lot: 0,
            entry: true,
            event_time_ms: T0 + 20 * 60_000,
            clamped: false,
        };
        assert_eq!(live.apply_session(&mark), Ok(Applied::Counted));
        assert_eq!(live.stream_time_ms(), Some(T0 + 20 * 60_000));
        // An older session event leaves it where it is.
        let older = SessionMark {
            event_time_ms: T0 + 5 * 60_000,
            ..mark
        };
        assert_eq!(live.apply_session(&older), Ok(Applied::Counted));
        assert_eq!(live.stream_time_ms(), Some(T0 + 20 * 60_000));
    }

    #[test]
    fn a_lot_round_trips_through_its_record_and_resets() {
        let mut live = state();
        live.apply_sensor(&reading(0, false, 1, 0))
            .expect("applies");
        live.apply_sensor(&reading(0, true, 2, 5)).expect("applies");
        live.apply_sensor(&reading(1, true, 1, 7)).expect("applies");
        let record = live.export_lot(0).expect("a lot");
        let now = T0 + 30 * 60_000;
        let before = live.lot(0, now);
        let mut restored = state();
        assert!(restored.import_lot(0, &record));
        assert_eq!(restored.lot(0, now), before);
        assert_eq!(restored.export_lot(0), Some(record.clone()));
        // Duplicates are still recognised after a restore.
        assert_eq!(
            restored
                .apply_sensor(&reading(0, true, 2, 5))
                .map_err(|r| r.reason),
            Err(Reason::Duplicate)
        );
        restored.reset_lot(0);
        assert_eq!(restored.lot(0, now).map(|lot| lot.unknown), Some(4));
        let small = LotRecord {
            slots: record.slots[..2].to_vec(),
            ..record
        };
        assert!(!restored.import_lot(0, &small), "slot count mismatch");
    }

    #[test]
    fn sessions_count_and_a_million_slots_fit_in_little_memory() {
        let mut live = state();
        for (minute, entry) in [(1, true), (2, true), (3, false)] {
            let mark = SessionMark {
                lot: 0,
                entry,
                event_time_ms: T0 + minute * 60_000,
                clamped: false,
            };
            assert_eq!(live.apply_session(&mark), Ok(Applied::Counted));
        }
        let snapshot = live.lot(0, T0 + 10 * 60_000).expect("a lot");
        assert_eq!(
            (snapshot.entries_last_hour, snapshot.exits_last_hour),
            (2, 1)
        );
        let big = TopologyIndex::new((0..1_000).map(|lot| {
            (
                format!("l{lot}"),
                (0..1_000).map(|slot| format!("s{slot}")).collect(),
            )
        }))
        .expect("valid");
        let state = LiveState::new(&big, LiveRules::default());
        assert!(
            state.heap_bytes() < 40 * 1_048_576,
            "{} bytes",
            state.heap_bytes()
        );
    }
}
