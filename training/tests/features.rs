//! The two feature paths agree on real data, and no feature looks past its origin.
//!
//! Parity: the batch path (polars, what training runs) and the incremental path (one grid value or
//! session event at a time, what serving runs) produce the same vector for every origin after the
//! profile's cut-off, on the real Birmingham import and on a simulated city with sessions (so the
//! arrival and departure features are exercised too, across a DST change).
//!
//! Leakage: perturbing (and deleting) every value after an instant leaves every vector of an origin at
//! or before it unchanged, while the labels do change.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;
use parkcast_features::grid::GridSeries;
use parkcast_features::vector::batch::{self, BatchRequest};
use parkcast_features::vector::{
    ALL_WEEKDAYS, FEATURE_COUNT, FEATURE_NAMES, FeatureParams, FeatureVector, HourlyTariff,
    LotContext, LotFeatureState, LotProfile, index, vectors_match,
};
use parkcast_localtime::day_start_ms;
use parkcast_training::datasets::datasets_dir;
use parkcast_training::import::{ImportSource, import};
use parkcast_training::progress::NoProgress;
use parkcast_training::simulate::{SimulationParams, simulate};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::lots::{LotInputs, load_lots};

fn birmingham() -> (tempfile::TempDir, Warehouse) {
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = Warehouse::create(dir.path()).expect("warehouse");
    let source = ImportSource::Birmingham {
        csv: datasets_dir().join("birmingham/parking_birmingham.csv"),
    };
    import(&source, &warehouse, &NoProgress).expect("the Birmingham import should succeed");
    (dir, warehouse)
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
}

/// The batch vectors of one lot for origins from `cut` on, by (origin, horizon).
fn batch_vectors(
    params: &FeatureParams,
    lot: &LotInputs,
    profile: &LotProfile,
    context: &LotContext,
    horizons: &[u32],
    origins_from_ms: i64,
) -> HashMap<(i64, u32), (FeatureVector, Option<f64>)> {
    let history = lot.history(profile, context);
    let request = BatchRequest {
        horizons: horizons.to_vec(),
        origins_from_ms,
        origins_until_ms: i64::MAX,
        origin_stride: 1,
    };
    let frame = batch::lot_features(params, history, &request).expect("batch features");
    batch::rows(&frame)
        .expect("rows")
        .into_iter()
        .map(|row| {
            (
                (row.origin_ms, row.horizon_steps),
                (row.features, row.target_rate),
            )
        })
        .collect()
}

/// Feeds the lot through the incremental path in time order and compares every vector from
/// `origins_from_ms` on with the batch path's. Returns the number of vectors compared.
fn assert_parity(params: &FeatureParams, lot: &LotInputs, cut_ms: i64, horizons: &[u32]) -> usize {
    let profile = Arc::new(LotProfile::fit(&lot.series, cut_ms));
    let context = LotContext {
        lot_code: Some(0),
        ..lot.context.clone()
    };
    let expected = batch_vectors(params, lot, &profile, &context, horizons, cut_ms);
    let mut state = LotFeatureState::new(*params, context, profile);
    let mut arrivals = lot.arrivals_ms.clone();
    let mut departures = lot.departures_ms.clone();
    arrivals.sort_unstable();
    departures.sort_unstable();
    let (mut next_arrival, mut next_departure) = (0, 0);
    let mut compared = 0;
    for (instant, value) in lot.series.iter() {
        // Session events up to this instant first: they count towards it or earlier instants.
        while next_arrival < arrivals.len() && arrivals[next_arrival] <= instant {
            state.push_arrival(arrivals[next_arrival]);
            next_arrival += 1;
        }
        while next_departure < departures.len() && departures[next_departure] <= instant {
            state.push_departure(departures[next_departure]);
            next_departure += 1;
        }
        assert!(state.push_value(instant, value));
        if instant < cut_ms {
            continue;
        }
        for &horizon in horizons {
            let live = state.vector(horizon).expect("a value at the origin");
            let (batch, _) = expected
                .get(&(instant, horizon))
                .unwrap_or_else(|| panic!("batch row for origin {instant}, horizon {horizon}"));
            if !vectors_match(&live, batch, 1e-12) {
                let differences: Vec<String> = FEATURE_NAMES
                    .iter()
                    .zip(live.iter().zip(batch.iter()))
                    .filter(|(_, (a, b))| {
                        !vectors_match(&[**a; FEATURE_COUNT], &[**b; FEATURE_COUNT], 1e-12)
                    })
                    .map(|(name, (a, b))| format!("{name}: incremental {a} batch {b}"))
                    .collect();
                panic!(
                    "lot {} origin {instant} horizon {horizon}: {}",
                    lot.lot_id,
                    differences.join("; ")
                );
            }
            compared += 1;
        }
    }
    assert_eq!(compared, expected.len(), "every batch row was compared");
    compared
}

#[test]
fn batch_and_incremental_features_agree_on_birmingham() {
    let (_dir, warehouse) = birmingham();
    let lots = load_lots(&warehouse, "birmingham", 30).expect("lots");
    assert!(lots.len() >= 28);
    let params = FeatureParams::new(30);
    let horizons = [1, 2, 4, 48, 336];
    let mut compared = 0;
    let mut informative = 0;
    for lot in lots.values() {
        let cut_ms = day_start_ms(lot.series.timezone(), date(2016, 11, 22));
        compared += assert_parity(&params, lot, cut_ms, &horizons);
        informative += usize::from(lot.series.len() > 1_000);
    }
    assert!(informative >= 28);
    assert!(compared > 50_000, "compared {compared} vectors");
}

#[test]
fn batch_and_incremental_features_agree_with_sessions_across_dst() {
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = Warehouse::create(dir.path()).expect("warehouse");
    // Europe/London leaves summer time on 26 Oct 2025.
    let params = SimulationParams::default()
        .lots(4)
        .days(16)
        .start_date(date(2025, 10, 15))
        .check()
        .expect("valid parameters");
    simulate(&params, &warehouse, &NoProgress).expect("simulation");
    let lots = load_lots(&warehouse, "simulated", 15).expect("lots");
    assert_eq!(lots.len(), 4);
    let features = FeatureParams::new(15);
    let mut compared = 0;
    let mut price_changes = 0;
    for lot in lots.values() {
        assert!(lot.context.has_sessions, "simulated lots record sessions");
        let cut_ms = day_start_ms(lot.series.timezone(), date(2025, 10, 23));
        // Tariffs as an operator runs them: the zone's all-day price, and the lot's own weekday
        // daytime band whose price rises on 27 Oct (across the DST change, so the band is read
        // in local time on both sides).
        let tz = lot.series.timezone();
        let change_ms = day_start_ms(tz, date(2025, 10, 27));
        let tariff = |from_ms, until_ms, band: (u32, u32), weekdays, cents, lot_own| HourlyTariff {
            valid_from_ms: from_ms,
            valid_until_ms: until_ms,
            band_starts_minute: band.0,
            band_ends_minute: band.1,
            weekdays,
            cents_per_hour: cents,
            lot_own,
        };
        let priced = LotInputs {
            context: LotContext {
                tariffs: Arc::from(vec![
                    tariff(0, None, (0, 1_440), ALL_WEEKDAYS, 150, false),
                    tariff(0, Some(change_ms), (480, 1_080), 0b1_1111, 250, true),
                    tariff(change_ms, None, (480, 1_080), 0b1_1111, 300, true),
                ]),
                ..lot.context.clone()
            },
            ..lot.clone()
        };
        compared += assert_parity(&features, &priced, cut_ms, &[1, 4, 96]);
        let profile = LotProfile::fit(&priced.series, cut_ms);
        let vectors = batch_vectors(
            &features,
            &priced,
            &profile,
            &priced.context,
            &[1, 4, 96],
            cut_ms,
        );
        price_changes += vectors
            .values()
            .filter(|(vector, _)| {
                let change = vector[index::TARGET_PRICE_CHANGE_WEEK];
                (change - (300.0_f64 / 250.0).ln()).abs() < 1e-12
            })
            .count();
    }
    assert!(compared > 8_000, "compared {compared} vectors");
    assert!(
        price_changes > 500,
        "{price_changes} vectors see the price rise of their target's band"
    );
}

#[test]
fn no_feature_changes_when_the_future_changes() {
    let (_dir, warehouse) = birmingham();
    let lots = load_lots(&warehouse, "birmingham", 30).expect("lots");
    let params = FeatureParams::new(30);
    let horizons = [1, 2, 4, 48, 336];
    let mut checked = 0;
    let mut labels_changed = 0;
    for lot in lots.values().filter(|lot| lot.series.len() > 1_000).take(8) {
        let tz = lot.series.timezone();
        let cut_ms = day_start_ms(tz, date(2016, 11, 8));
        // The future starts mid-afternoon on 29 Nov: values after it are flipped, every third removed,
        // and sessions that never happened are added.
        let now_ms = day_start_ms(tz, date(2016, 11, 29)) + 15 * 3_600_000;
        let mut perturbed = GridSeries::new(lot.series.step_ms(), tz);
        for (position, (instant, value)) in lot.series.iter().enumerate() {
            if instant <= now_ms {
                perturbed.push(instant, value.occupied, value.capacity);
            } else if position % 3 != 0 {
                perturbed.push(instant, value.capacity - value.occupied, value.capacity);
            }
        }
        let future = LotInputs {
            series: perturbed,
            arrivals_ms: vec![now_ms + 1, now_ms + 60_000],
            departures_ms: vec![now_ms + 1],
            ..lot.clone()
        };
        let profile = LotProfile::fit(&lot.series, cut_ms);
        assert_eq!(
            profile,
            LotProfile::fit(&future.series, cut_ms),
            "fitted state"
        );
        let context = LotContext {
            lot_code: Some(1),
            has_sessions: true,
            ..lot.context.clone()
        };
        let before = batch_vectors(&params, lot, &profile, &context, &horizons, cut_ms);
        let after = batch_vectors(&params, &future, &profile, &context, &horizons, cut_ms);
        for ((origin, horizon), (features, label)) in &before {
            if *origin > now_ms {
                continue;
            }
            let (perturbed_features, perturbed_label) = after
                .get(&(*origin, *horizon))
                .expect("the same origins exist before the change");
            assert!(
                vectors_match(features, perturbed_features, 0.0),
                "lot {} origin {origin} horizon {horizon}: a feature saw the future",
                lot.lot_id
            );
            assert!(features[index::RATE_ORIGIN].is_finite());
            checked += 1;
            labels_changed += usize::from(label != perturbed_label);
        }
    }
    assert!(checked > 10_000, "checked {checked} vectors");
    assert!(
        labels_changed > 500,
        "the perturbation reached the labels ({labels_changed})"
    );
}
