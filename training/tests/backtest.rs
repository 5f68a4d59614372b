//! The baselines on the real Birmingham data reproduce the published reference figures, through the
//! whole pipeline: import, warehouse, lazy scan, grid alignment, evaluation.

use crate::common;

use common::birmingham_warehouse;

use parkcast_features::calendar::DayType;
use parkcast_features::conformal::CalibrationScope;
use parkcast_training::backtest::{BacktestConfig, BacktestError, backtest_baselines};
use parkcast_training::protocol::{Preset, ProtocolRequest, ResolveError};
use parkcast_warehouse::Warehouse;

#[test]
fn birmingham_baselines_match_the_reference_figures() {
    let (_dir, warehouse) = birmingham_warehouse();
    let report = backtest_baselines(&warehouse, &BacktestConfig::birmingham()).expect("backtest");
    assert_eq!(
        report.lots.len(),
        28,
        "28 usable lots; left out: {:?}",
        report.excluded_lots
    );
    assert_eq!(report.excluded_lots.len(), 2);
    // MODELS.md's probe (same protocol, computed independently in Python): persistence and
    // persistence + profile change at 30 min, 1 h, 2 h.
    let expected = [
        ("persistence", [0.0365, 0.0697, 0.1269]),
        ("persistence + profile change", [0.0139, 0.0226, 0.0369]),
    ];
    for (model, figures) in expected {
        for (horizon, figure) in [1, 2, 4].into_iter().zip(figures) {
            let metrics = report
                .get(model, horizon)
                .expect("every model and horizon is reported");
            assert!(
                (metrics.mae_rate - figure).abs() < 0.0006,
                "{model} at {} min: MAE {:.4}, reference {figure}",
                metrics.horizon_minutes,
                metrics.mae_rate
            );
            assert!(metrics.rmse_rate >= metrics.mae_rate);
            assert!(metrics.pairs > 2_000);
        }
    }
    // Conformal intervals calibrated on the two weeks before the test week hold their coverage there.
    for horizon in [1, 2, 4] {
        let metrics = report
            .get("persistence + profile change", horizon)
            .expect("reported");
        let covered_80 = metrics.coverage_80.expect("calibrated");
        let covered_95 = metrics.coverage_95.expect("calibrated");
        assert!(
            (0.75..=0.85).contains(&covered_80),
            "80% interval covers {covered_80:.3} at {} min",
            metrics.horizon_minutes
        );
        assert!(
            (0.90..=0.99).contains(&covered_95),
            "95% interval covers {covered_95:.3} at {} min",
            metrics.horizon_minutes
        );
        assert!(metrics.width_80.expect("calibrated") < 0.2);
    }
    // The profile change is the baseline to beat: far better than persistence at every horizon.
    for horizon in [1, 2, 4] {
        let persistence = report
            .get("persistence", horizon)
            .expect("reported")
            .mae_rate;
        let change = report
            .get("persistence + profile change", horizon)
            .expect("reported")
            .mae_rate;
        assert!(change < 0.5 * persistence);
    }
}

#[test]
fn rolling_origins_cover_consecutive_windows_and_per_lot_figures_add_up() {
    let (_dir, warehouse) = birmingham_warehouse();
    let config = BacktestConfig {
        windows: 3,
        ..BacktestConfig::birmingham()
    };
    let date = |day| chrono::NaiveDate::from_ymd_opt(2016, 12, day).expect("valid date");
    let first = chrono::NaiveDate::from_ymd_opt(2016, 11, 29).expect("valid date");
    assert_eq!(
        config.windows(),
        vec![(first, date(5)), (date(6), date(12)), (date(13), date(19))]
    );
    let rolling = backtest_baselines(&warehouse, &config).expect("backtest");
    let single = backtest_baselines(&warehouse, &BacktestConfig::birmingham()).expect("backtest");
    for horizon in [1, 2, 4] {
        let total = rolling
            .get("persistence + profile change", horizon)
            .expect("reported");
        // Three weeks (one with the 3-4 Dec gap) give about three times the pairs of the last one.
        let last_week = single
            .get("persistence + profile change", horizon)
            .expect("reported");
        assert!(
            total.pairs > 2 * last_week.pairs && total.pairs < 3 * last_week.pairs + 1,
            "{} vs {}",
            total.pairs,
            last_week.pairs
        );
        // Per-lot figures partition the totals.
        let lots: Vec<_> = rolling
            .per_lot
            .iter()
            .filter(|entry| {
                entry.metrics.model == total.model && entry.metrics.horizon_steps == horizon
            })
            .collect();
        assert_eq!(lots.len(), 28);
        assert_eq!(
            lots.iter().map(|entry| entry.metrics.pairs).sum::<u64>(),
            total.pairs
        );
        let weighted: f64 = lots
            .iter()
            .map(|entry| entry.metrics.mae_rate * entry.metrics.pairs as f64)
            .sum();
        assert!((weighted / total.pairs as f64 - total.mae_rate).abs() < 1e-9);
    }
}

#[test]
fn an_unknown_source_and_bad_settings_are_refused() {
    let (_dir, warehouse) = birmingham_warehouse();
    let config = BacktestConfig {
        source: "nowhere".to_owned(),
        ..BacktestConfig::birmingham()
    };
    let refused = backtest_baselines(&warehouse, &config).expect_err("no such source");
    assert!(
        matches!(&refused, BacktestError::NoSuchSource { available, .. } if available == &["birmingham (30 lots)"]),
        "{refused}"
    );
    assert!(
        refused.to_string().contains(
            "no source \"nowhere\" in fact_lot_occupancy; the warehouse holds: birmingham (30 lots)"
        ),
        "{refused}"
    );
    let config = BacktestConfig {
        horizons: vec![],
        ..BacktestConfig::birmingham()
    };
    assert!(matches!(
        backtest_baselines(&warehouse, &config),
        Err(BacktestError::InvalidConfig { .. })
    ));
    let config = BacktestConfig {
        step_minutes: 7,
        ..BacktestConfig::birmingham()
    };
    assert!(matches!(
        backtest_baselines(&warehouse, &config),
        Err(BacktestError::InvalidConfig { .. })
    ));
}

/// Coverage of persistence + profile change's 80% and 95% intervals per (day type, horizon), on four
/// rolling weeks of Birmingham.
#[test]
fn a_protocol_request_resolves_to_a_preset_with_its_overrides_or_says_why_not() {
    let (_dir, warehouse) = birmingham_warehouse();
    // Nothing asked: the warehouse's only source, with its preset.
    let (config, origin) = ProtocolRequest::default()
        .resolve(&warehouse, CalibrationScope::Pooled)
        .expect("birmingham's preset");
    assert_eq!(
        config,
        BacktestConfig {
            calibration: CalibrationScope::Pooled,
            ..BacktestConfig::birmingham()
        }
    );
    assert_eq!(
        origin,
        "preset birmingham; 30-min grid, horizons 30 min / 1h / 2h, 1 window: 2016-12-13..2016-12-19"
    );

    // Málaga's protocol on Birmingham's readings: its horizons stay in minutes on a new step, and
    // 15 minutes does not fit a 30-minute grid.
    let malaga_here = ProtocolRequest {
        preset: Some(Preset::Malaga),
        source: Some("birmingham".to_owned()),
        step_minutes: Some(30),
        ..ProtocolRequest::default()
    };
    let refused = malaga_here
        .resolve(&warehouse, CalibrationScope::Pooled)
        .expect_err("15 min on a 30-minute grid");
    assert!(
        matches!(
            refused,
            ResolveError::HorizonNotMultiple {
                minutes: 15,
                step_minutes: 30
            }
        ),
        "{refused}"
    );
    assert_eq!(
        refused.to_string(),
        "horizon 15 min is not a multiple of the 30-minute step"
    );
    let date = |month, day| chrono::NaiveDate::from_ymd_opt(2016, month, day).expect("valid date");
    let overridden = ProtocolRequest {
        horizons_minutes: Some(vec![30, 1_440]),
        test_start: Some(date(11, 1)),
        test_end: Some(date(12, 19)),
        window_days: Some(14),
        calibration: Some(CalibrationScope::DayType),
        validation_only: true,
        ..malaga_here
    };
    let (config, origin) = overridden
        .resolve(&warehouse, CalibrationScope::Pooled)
        .expect("whole steps");
    assert_eq!(config.source, "birmingham");
    assert_eq!((config.step_minutes, config.horizons), (30, vec![1, 48]));
    assert_eq!((config.same_day, config.training_days), (false, Some(365)));
    assert_eq!(config.calibration, CalibrationScope::DayType);
    assert!(config.validation_only);
    assert!(
        origin.starts_with(
            "preset malaga; 30-min grid, horizons 30 min / 24h, 4 windows: 2016-11-01..2016-11-14, "
        ),
        "{origin}"
    );

    // A source the warehouse does not hold is named, with the ones it does.
    let missing = ProtocolRequest {
        source: Some("csv-nosuch".to_owned()),
        ..ProtocolRequest::default()
    }
    .resolve(&warehouse, CalibrationScope::Pooled)
    .expect_err("no such source");
    assert!(
        matches!(&missing, ResolveError::NoSuchSource { name, held } if name == "csv-nosuch" && held == "birmingham (30 lots)"),
        "{missing}"
    );
    assert_eq!(
        missing.to_string(),
        "no source \"csv-nosuch\" in the warehouse's fact_lot_occupancy; it holds: birmingham (30 lots)"
    );
}

fn coverage_by_day_type(
    warehouse: &Warehouse,
    scope: CalibrationScope,
) -> Vec<(DayType, u32, f64, f64)> {
    let config = BacktestConfig {
        windows: 4,
        calibration: scope,
        ..BacktestConfig::birmingham()
    };
    let report = backtest_baselines(warehouse, &config).expect("backtest");
    report
        .per_day_type
        .iter()
        .filter(|(_, metrics)| metrics.model == "persistence + profile change")
        .map(|(day_type, metrics)| {
            (
                *day_type,
                metrics.horizon_minutes,
                metrics.coverage_80.expect("calibrated"),
                metrics.coverage_95.expect("calibrated"),
            )
        })
        .collect()
}

#[test]
fn intervals_calibrated_per_day_type_hold_on_saturdays_sundays_and_holidays() {
    let (_dir, warehouse) = birmingham_warehouse();
    let pooled = coverage_by_day_type(&warehouse, CalibrationScope::Pooled);
    let by_day = coverage_by_day_type(&warehouse, CalibrationScope::DayType);
    eprintln!("pooled: {pooled:?}\nday type: {by_day:?}");
    assert_eq!(by_day.len(), 9, "three day types at three horizons");
    // Split conformal over all days: weekend errors are larger than the weekdays' that dominate the
    // calibration, so the weekend intervals miss.
    let worst_pooled = pooled
        .iter()
        .filter(|(day_type, ..)| *day_type != DayType::Weekday)
        .map(|(.., covered_80, _)| *covered_80)
        .fold(1.0, f64::min);
    assert!(
        worst_pooled < 0.76,
        "pooled intervals were expected to miss on weekends: {pooled:?}"
    );
    for (day_type, minutes, covered_80, covered_95) in by_day {
        assert!(
            (0.76..=0.86).contains(&covered_80),
            "80% interval covers {covered_80:.3} on {day_type:?} at {minutes} min"
        );
        assert!(
            (0.92..=0.99).contains(&covered_95),
            "95% interval covers {covered_95:.3} on {day_type:?} at {minutes} min"
        );
    }
}

/// The 80% covers of persistence + profile change per lot and horizon (steps), over Birmingham's
/// four weeks to the test week's end.
fn coverage_by_lot(warehouse: &Warehouse, lot_scale: bool) -> Vec<(String, u32, f64)> {
    let config = BacktestConfig {
        windows: 4,
        lot_scale,
        ..BacktestConfig::birmingham()
    };
    let report = backtest_baselines(warehouse, &config).expect("backtest");
    report
        .per_lot
        .into_iter()
        .filter(|lot| lot.metrics.model == "persistence + profile change")
        .map(|lot| {
            (
                lot.lot_id,
                lot.metrics.horizon_steps,
                lot.metrics.coverage_80.expect("calibrated"),
            )
        })
        .collect()
}

/// One calibration for every lot covers 80% of all pairs by missing a busy garage's and
/// over-covering a quiet lot's (Birmingham's 28 lots, four weeks: 49-99% per lot at 2 h, 11 points
/// from 80 on average); in units of each lot's scale (`conformal::lot_scales`) each lot's intervals
/// follow its own errors (63-94%, 6 points).
#[test]
fn each_lots_intervals_hold_for_that_lot() {
    let (_dir, warehouse) = birmingham_warehouse();
    // One calibration for every lot (`[intervals] lot_scale = false`): some lot is far off.
    let one = coverage_by_lot(&warehouse, false);
    let worst = one
        .iter()
        .map(|(.., cover)| (cover - 0.8).abs())
        .fold(0.0, f64::max);
    assert!(
        worst > 0.2,
        "one calibration: worst lot {worst:.3} from 80%"
    );

    let by_lot = coverage_by_lot(&warehouse, true);
    for horizon in BacktestConfig::birmingham().horizons {
        let covers: Vec<&(String, u32, f64)> = by_lot
            .iter()
            .filter(|(_, steps, _)| *steps == horizon)
            .collect();
        assert_eq!(covers.len(), 28, "every usable lot at {horizon} steps");
        let distance = covers
            .iter()
            .map(|(.., cover)| (cover - 0.8).abs())
            .sum::<f64>()
            / covers.len() as f64;
        assert!(
            distance < 0.07,
            "per-lot 80% covers {distance:.3} from 80% on average at {horizon} steps: {covers:?}"
        );
        for (lot, _, cover) in covers {
            assert!(
                (0.60..=0.96).contains(cover),
                "lot {lot}'s 80% interval covers {cover:.3} at {horizon} steps"
            );
        }
    }
}

/// Reading the city one lot at a time, in groups of seven, or all at once (the all-in-memory
/// path) gives the same report bit for bit: the groups' rows come back in lot order, the training
/// matrix reads back exactly what was written, and the fits do not depend on the thread count.
#[test]
fn the_report_does_not_depend_on_the_group_size() {
    use parkcast_training::backtest::{ModelChoice, backtest};
    use parkcast_training::model::{GbmParams, LinearParams};
    use parkcast_training::progress::NoProgress;

    let (_dir, warehouse) = birmingham_warehouse();
    let models = ModelChoice {
        linear: Some(LinearParams::default()),
        gbm: Some(GbmParams {
            iterations: 30,
            ..GbmParams::default()
        }),
        ..ModelChoice::default()
    };
    // 12,000 residuals per model and horizon, 4,000 per day type: the windows keep one weekday
    // pair in four and every weekend pair (Birmingham's weekends have about 400 each).
    let run = |group_lots: usize, calibration_residuals: usize| {
        let config = BacktestConfig {
            windows: 2,
            group_lots,
            calibration_residuals,
            ..BacktestConfig::birmingham()
        };
        backtest(&warehouse, &config, &models, &NoProgress).expect("backtest")
    };
    let whole = run(1_000, 100_000);
    assert_eq!(whole.run.groups, 1);
    let sampled = run(1_000, 12_000);
    for (horizon, all) in whole.metrics.iter().enumerate() {
        let some = &sampled.metrics[horizon];
        // The errors do not depend on the calibration; the coverage stays near its target.
        assert_eq!(some.mae_rate.to_bits(), all.mae_rate.to_bits());
        let covered = some.coverage_80.expect("calibrated");
        let all_covered = all.coverage_80.expect("calibrated");
        assert!(
            (covered - all_covered).abs() < 0.02,
            "{} {}: {covered} vs {all_covered}",
            some.model,
            some.horizon_minutes
        );
    }
    assert!(
        sampled.test_residuals.values().map(Vec::len).sum::<usize>() * 2
            < whole.test_residuals.values().map(Vec::len).sum::<usize>()
    );
    for (group_lots, calibration_residuals, reference) in [
        (1, 100_000, &whole),
        (7, 100_000, &whole),
        (7, 12_000, &sampled),
    ] {
        let grouped = run(group_lots, calibration_residuals);
        let whole = reference;
        assert_eq!(grouped.run.groups, 28_usize.div_ceil(group_lots));
        assert_eq!(grouped.lots, whole.lots);
        assert_eq!(grouped.excluded_lots, whole.excluded_lots);
        assert_eq!(grouped.training_rows, whole.training_rows);
        let bits =
            |report: &parkcast_training::backtest::BacktestReport| {
                let mut bits: Vec<(String, u32, [u64; 4], Option<u64>)> = report
                    .metrics
                    .iter()
                    .chain(report.per_lot.iter().map(|lot| &lot.metrics))
                    .map(|m| {
                        (
                            m.model.clone(),
                            m.horizon_steps,
                            [m.mae_rate, m.rmse_rate, m.mae_slots, m.rmse_slots].map(f64::to_bits),
                            m.coverage_80.map(f64::to_bits),
                        )
                    })
                    .collect();
                bits.extend(report.validation_mae.iter().map(|(model, horizon, mae)| {
                    (model.clone(), *horizon, [mae.to_bits(); 4], None)
                }));
                bits
            };
        assert_eq!(bits(&grouped), bits(whole), "groups of {group_lots}");
        let residuals = |report: &parkcast_training::backtest::BacktestReport| {
            report
                .test_residuals
                .iter()
                .map(|(key, values)| {
                    let values: Vec<u64> =
                        values.iter().map(|test| test.residual.to_bits()).collect();
                    (*key, values)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            residuals(&grouped),
            residuals(whole),
            "groups of {group_lots}"
        );
        assert_eq!(grouped.samples, whole.samples, "groups of {group_lots}");
    }
}
