//! Sensor messages through decode, validation and the live state, in process on one thread: the
//! ceiling the broker path is compared against (issue target: 1M events/s; the state of 1M slots
//! under 100 MB).

use std::time::Instant;

use anyhow::Context;
use parkcast_serving::decode::{TimeRules, decode_sensor};
use parkcast_serving::live::{LiveRules, LiveState};
use prost::Message;

use crate::measure::peak_rss_text;
use crate::table::{bytes, new_table, thousands, value_row};
use crate::{Error, Report, synthetic};

/// The size of the synthetic city and how many messages to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct IngestOptions {
    /// Lots.
    #[arg(long, default_value_t = 1_000)]
    pub lots: u32,
    /// Slots per lot.
    #[arg(long, default_value_t = 1_000)]
    pub slots: u32,
    /// Messages to apply.
    #[arg(long, default_value_t = 4_000_000)]
    pub events: u32,
}

/// Decodes, validates and applies `events` messages; the state's heap and the peak memory.
pub fn ingest(options: &IngestOptions) -> Result<Report, Error> {
    let IngestOptions {
        lots,
        slots,
        events,
    } = *options;
    let started = Instant::now();
    let topology = synthetic::topology(lots, slots)?;
    let mut state = LiveState::new(&topology, LiveRules::default());
    let build_seconds = started.elapsed().as_secs_f64();
    // Messages as a sensor gateway sends them: each slot's readings in sequence, a quarter
    // heartbeats, slots visited in a scrambled order, one second apart on the lot's clock.
    let now_ms = 1_764_000_000_000;
    let total_slots = u64::from(lots) * u64::from(slots);
    let messages: Vec<(String, Vec<u8>)> = (0..u64::from(events))
        .map(|index| {
            let slot_number = index.wrapping_mul(2_654_435_761) % total_slots.max(1);
            let round = index / total_slots.max(1);
            let (lot, slot) = (
                slot_number / u64::from(slots),
                slot_number % u64::from(slots),
            );
            let (lot_id, reading) =
                synthetic::reading(lot, slot, round, index % 4 == 0, now_ms - 3_600_000);
            (lot_id, reading.encode_to_vec())
        })
        .collect();
    let message_bytes: usize = messages
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    let rules = TimeRules::default();
    let started = Instant::now();
    let (mut applied, mut rejected) = (0u64, 0u64);
    for (key, value) in &messages {
        match decode_sensor(&topology, &rules, Some(key.as_bytes()), value, Some(now_ms))
            .and_then(|event| state.apply_sensor(&event))
        {
            Ok(_) => applied += 1,
            Err(_) => rejected += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut table = new_table(&["measure", "value"]);
    let rows = [
        ("slots (lots x slots)", thousands(total_slots)),
        ("messages", thousands(u64::from(events))),
        ("message bytes", bytes(message_bytes as u64)),
        (
            "applied / rejected",
            format!("{} / {}", thousands(applied), thousands(rejected)),
        ),
        ("decode + validate + apply", format!("{seconds:.2} s")),
        (
            "events/s on one core",
            thousands((f64::from(events) / seconds.max(1e-9)) as u64),
        ),
        ("live state heap", bytes(state.heap_bytes() as u64)),
        ("topology + state build", format!("{build_seconds:.2} s")),
        ("peak RSS (incl. the messages)", peak_rss_text()),
    ];
    for (name, value) in rows {
        value_row(&mut table, name, value);
    }
    let snapshot = state.lot(0, now_ms).context("lot 0 exists")?;
    let mut report = Report::new();
    report.push(table);
    report.push(format_args!(
        "lot00000 now: {} occupied, {} free, {} unknown",
        snapshot.occupied, snapshot.free, snapshot.unknown
    ));
    Ok(report)
}
