//! The cost of answering an arrival time: scoring the model directly (a feature vector and the
//! trees per horizon) vs interpolating one target from the lot's ready forecast, which is what the
//! server does per request; and how much accuracy the interpolation gives up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use parkcast_inference::registry::Registry;
use parkcast_serving::live::GRID_HISTORY_MS;
use parkcast_serving::quality::{QualityConfig, QualityMonitor};
use parkcast_serving::scoring::{ServedModel, forecast_at, issue_forecast, quality_monitor};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::lots::{LotInputs, load_lots};

use crate::table::{new_table, thousands};
use crate::{Error, Report};

/// A published model and the warehouse it learned from (`parkcast demo` leaves both in out/demo).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ScoringOptions {
    /// The warehouse the model learned from.
    #[arg(long, short = 'w', default_value = "out/demo/warehouse")]
    pub warehouse: PathBuf,
    /// The model registry.
    #[arg(long, default_value = "out/demo/models")]
    pub registry: PathBuf,
    /// The model line (its newest version is used).
    #[arg(long, default_value = "simulated")]
    pub model: String,
}

/// Direct scoring vs interpolation from the ready forecast, per request, on every lot of the
/// model; then the accuracy each costs over the lots' last 7 days.
pub fn scoring(options: &ScoringOptions) -> Result<Report, Error> {
    let registry = Registry::open(&options.registry);
    let model = &options.model;
    let version = registry
        .latest(model)
        .context("failed to read the model registry")?
        .ok_or_else(|| Error::NoPublishedVersion {
            model: model.clone(),
        })?;
    let (manifest, model_bytes) = registry
        .load(model, version, None)
        .with_context(|| format!("failed to load {model} v{version}"))?;
    let served = ServedModel::decode(manifest, &model_bytes)
        .with_context(|| format!("failed to decode {model} v{version}"))?;
    let warehouse = Warehouse::open(&options.warehouse).context("failed to open the warehouse")?;
    let step = served.model.step_minutes();
    let lots = load_lots(&warehouse, &served.manifest.card.source, step)
        .context("failed to load the lots' history")?;
    let mut states = Vec::new();
    for (lot_id, lot) in &lots {
        let Some(mut state) = served.model.new_state(lot_id) else {
            continue;
        };
        let Some((last, _)) = lot.series.iter().last() else {
            continue;
        };
        for (instant, value) in lot.series.iter() {
            if instant > last - GRID_HISTORY_MS {
                state.push_value(instant, value);
            }
        }
        states.push(state);
    }
    if states.is_empty() {
        return Err(Error::NoLotHistory);
    }
    let horizons = served.model.horizons_minutes().len();
    let rounds = 200usize;
    let started = Instant::now();
    let mut forecasts = Vec::new();
    for _ in 0..rounds {
        forecasts.clear();
        for state in &states {
            forecasts.extend(served.model.forecast(state));
        }
    }
    let direct_ns = started.elapsed().as_nanos() as f64 / (rounds * states.len()) as f64;
    let lookups = 200_000usize;
    let started = Instant::now();
    let mut checksum = 0.0;
    for index in 0..lookups {
        let forecast = &forecasts[index % forecasts.len()];
        // An arrival 37 minutes after the origin, the live rate known at the origin + 5 minutes.
        let now = forecast.origin_ms + 5 * 60_000;
        let point = forecast_at(
            |minutes| served.model.calibration(minutes),
            forecast,
            Some((now, 0.5)),
            forecast.origin_ms + 37 * 60_000,
        );
        checksum += point.map_or(0.0, |point| point.probability_any_free);
    }
    let interpolate_ns = started.elapsed().as_nanos() as f64 / lookups as f64;
    let mut table = new_table(&["per lot and request", "time", "what it does"]);
    table.add_row(vec![
        "score directly".to_owned(),
        format!("{:.1} us", direct_ns / 1_000.0),
        format!(
            "{horizons} feature vectors and model predictions ({} v{})",
            served.manifest.card.name, served.manifest.version
        ),
    ]);
    table.add_row(vec![
        "interpolate".to_owned(),
        format!("{interpolate_ns:.0} ns"),
        "one target from the ready forecast, with intervals and probabilities".to_owned(),
    ]);
    let mut report = Report::new();
    report.push(table);
    report.push(format_args!(
        "{} lots; interpolation is {:.0}x cheaper per request (checksum {checksum:.1})",
        states.len(),
        direct_ns / interpolate_ns.max(1e-9)
    ));
    report.push(
        "the live-accuracy monitor (serving::quality) and a candidate in shadow beside the scorer's work per grid step, the last 2 days of every lot, in one run",
    );
    report.push(monitor_cost(&served, &lots));
    report.push(
        "accuracy over each lot's last 7 days (the model saw them in training: compare the columns, not with the backtest)",
    );
    report.push(interpolation_accuracy(&served, &lots));
    Ok(report)
}

/// What the live-accuracy monitor adds to the scorer's work per grid step, and what a candidate in
/// shadow adds on top (a second feature state per lot fed the same inputs, its forecast, and its
/// own monitor: what `Scoring::shadow` runs): each lot's last 2 days fed as the server feeds them (a
/// grid value, a forecast), without the monitor, with it, and with it and a shadow, alternated
/// five times; the fastest time of each and what each holds at the end.
fn monitor_cost(served: &ServedModel, lots: &BTreeMap<String, LotInputs>) -> comfy_table::Table {
    const DAYS_MS: i64 = 2 * 86_400_000;
    // `models` feature states per lot (1: the active model; 2: and a candidate in shadow), each
    // with its monitor when `monitors` has one per model. Returns the time, the grid steps and the
    // states' heap bytes at the end.
    let run = |models: usize, monitors: &mut [QualityMonitor]| {
        let started = Instant::now();
        let mut steps = 0u64;
        let mut state_bytes = 0usize;
        for (index, (lot_id, lot)) in lots.iter().enumerate() {
            let Some(state) = served.model.new_state(lot_id) else {
                continue;
            };
            let mut states = vec![state; models];
            let Some((last, _)) = lot.series.iter().last() else {
                continue;
            };
            for (instant, value) in lot.series.iter() {
                if instant <= last - DAYS_MS - GRID_HISTORY_MS {
                    continue;
                }
                for state in &mut states {
                    state.push_value(instant, value);
                }
                if instant <= last - DAYS_MS {
                    continue;
                }
                for (model, state) in states.iter().enumerate() {
                    let monitor = monitors.get_mut(model);
                    if let Some(monitor) = monitor {
                        monitor.observe(index, instant, value.rate());
                        if let Some(forecast) = served.model.forecast(state) {
                            issue_forecast(monitor, served, index, lot_id, &forecast);
                        }
                    } else {
                        std::hint::black_box(served.model.forecast(state));
                    }
                }
                steps += 1;
            }
            state_bytes += states.iter().map(|state| state.heap_bytes()).sum::<usize>();
        }
        (started.elapsed(), steps, state_bytes)
    };
    // Alternated, the fastest of five each: a shared machine's noise only ever adds time.
    let lot_ids: Vec<&str> = lots.keys().map(String::as_str).collect();
    let fresh = || quality_monitor(served, &lot_ids, QualityConfig::default());
    let (mut without, mut with, mut shadowed) = (
        std::time::Duration::MAX,
        std::time::Duration::MAX,
        std::time::Duration::MAX,
    );
    let (mut steps, mut state_bytes) = (0, (0, 0));
    let mut monitors = vec![fresh(), fresh()];
    for _ in 0..5 {
        let (elapsed, counted, one_state) = run(1, &mut []);
        (without, steps) = (without.min(elapsed), counted);
        let mut active = [fresh()];
        with = with.min(run(1, &mut active).0);
        monitors = vec![fresh(), fresh()];
        let (elapsed, _, two_states) = run(2, &mut monitors);
        shadowed = shadowed.min(elapsed);
        state_bytes = (one_state, two_states);
    }
    let monitor = &monitors[0];
    let per_step = |elapsed: std::time::Duration| elapsed.as_secs_f64() * 1e6 / steps.max(1) as f64;
    let versus = |elapsed: std::time::Duration, base: std::time::Duration| {
        format!(
            "{:.1} us ({:+.1}%)",
            per_step(elapsed),
            100.0 * (per_step(elapsed) / per_step(base) - 1.0)
        )
    };
    // The scorer's report every 10 s (under its lock): the sums of every lot, horizon and window,
    // and the drift judgement. The fastest of five.
    let now_ms = lots
        .values()
        .filter_map(|lot| lot.series.iter().last().map(|(instant, _)| instant))
        .max()
        .unwrap_or(0);
    let report = (0..5)
        .map(|_| {
            let started = Instant::now();
            let pairs: u64 = monitor
                .summary(now_ms)
                .iter()
                .map(|quality| quality.city.pairs)
                .sum();
            let drifting = monitor.drift(now_ms).len();
            std::hint::black_box((pairs, drifting));
            started.elapsed()
        })
        .min()
        .unwrap_or_default();
    let (issued, scores, hours) = monitor.held();
    let horizons = served.model.horizons_minutes().len();
    // An issued forecast: its origin, a boxed slice of 3 f32 per horizon and the queue's slot; a
    // score: 16 bytes; an hour's sums: 40.
    let monitor_bytes = issued * (8 + 16 + 12 * horizons) + scores * 16 + hours * 40;
    let per_lot_kb = |bytes: usize| bytes as f64 / 1e3 / lots.len().max(1) as f64;
    let mut table = new_table(&["per grid step and lot", "time", "held at the end"]);
    table.add_row(vec![
        "score (grid value, forecast)".to_owned(),
        format!("{:.1} us", per_step(without)),
        format!(
            "feature states ~{:.1} MB ({:.0} KB per lot)",
            state_bytes.0 as f64 / 1e6,
            per_lot_kb(state_bytes.0)
        ),
    ]);
    table.add_row(vec![
        "score + monitor".to_owned(),
        versus(with, without),
        format!(
            "{} forecasts, {} scores, ~{:.1} MB ({:.0} KB per lot)",
            thousands(issued as u64),
            thousands(scores as u64),
            monitor_bytes as f64 / 1e6,
            per_lot_kb(monitor_bytes)
        ),
    ]);
    let shadow_bytes = state_bytes.1 - state_bytes.0 + monitor_bytes;
    table.add_row(vec![
        "score + monitor + a candidate in shadow".to_owned(),
        format!("{} vs score + monitor", versus(shadowed, with)),
        format!(
            "+~{:.1} MB ({:.0} KB per lot: its feature states and monitor; its model file as \
             loaded, like a second version during a hot reload)",
            shadow_bytes as f64 / 1e6,
            per_lot_kb(shadow_bytes)
        ),
    ]);
    table.add_row(vec![
        "report (every 10 s, all lots)".to_owned(),
        format!(
            "{:.2} ms ({:.1} us per lot; a shadow doubles it)",
            report.as_secs_f64() * 1e3,
            report.as_secs_f64() * 1e6 / lots.len().max(1) as f64
        ),
        "MAE and coverage per horizon and window, drift".to_owned(),
    ]);
    table
}

/// How much accuracy interpolation gives up: over the last 7 days of every lot, each horizon the
/// model forecasts directly is also interpolated from its neighbours alone (the reading at the
/// origin, or the previous horizon, and the next horizon), as if the model lacked it; both are
/// scored against the actual rate at the target.
fn interpolation_accuracy(
    served: &ServedModel,
    lots: &BTreeMap<String, LotInputs>,
) -> comfy_table::Table {
    let horizons = served.model.horizons_minutes();
    // (direct error sum, interpolated error sum, persistence error sum, pairs) per inner horizon.
    let mut errors = vec![(0.0, 0.0, 0.0, 0u64); horizons.len()];
    for (lot_id, lot) in lots {
        let Some(mut state) = served.model.new_state(lot_id) else {
            continue;
        };
        let Some((last, _)) = lot.series.iter().last() else {
            continue;
        };
        let test_from = last - 7 * 86_400_000;
        for (instant, value) in lot.series.iter() {
            if instant <= test_from - GRID_HISTORY_MS {
                continue;
            }
            state.push_value(instant, value);
            if instant < test_from {
                continue;
            }
            let Some(forecast) = served.model.forecast(&state) else {
                continue;
            };
            for (index, horizon) in forecast.horizons.iter().enumerate() {
                if index + 1 == forecast.horizons.len() {
                    break;
                }
                let Some(actual) = lot.series.rate_at(horizon.target_ms) else {
                    continue;
                };
                if !horizon.rate.is_finite() {
                    continue;
                }
                let mut without = forecast.clone();
                without.horizons.remove(index);
                let Some(point) = forecast_at(
                    |minutes| served.model.calibration(minutes),
                    &without,
                    Some((instant, value.rate())),
                    horizon.target_ms,
                ) else {
                    continue;
                };
                let entry = &mut errors[index];
                entry.0 += (horizon.rate - actual).abs();
                entry.1 += (point.rate - actual).abs();
                entry.2 += (value.rate() - actual).abs();
                entry.3 += 1;
            }
        }
    }
    let mut table = new_table(&[
        "horizon",
        "MAE rate, model",
        "MAE rate, interpolated without it",
        "MAE rate, persistence",
        "pairs",
    ]);
    for (minutes, (direct, interpolated, persistence, pairs)) in horizons.iter().zip(&errors) {
        if *pairs == 0 {
            continue;
        }
        let mean = |sum: f64| format!("{:.4}", sum / *pairs as f64);
        table.add_row(vec![
            format!("{minutes} min"),
            mean(*direct),
            mean(*interpolated),
            mean(*persistence),
            thousands(*pairs),
        ]);
    }
    table
}
