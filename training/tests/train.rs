//! Learned models on the real Birmingham data: the backtest against the baselines, and a published
//! artifact that loads back and scores live (incremental) features exactly as training scored batch
//! features.

use std::sync::Arc;

use parkcast_features::vector::{FeatureParams, LotContext, LotFeatureState};
use parkcast_training::artifact::ModelBundle;
use parkcast_training::backtest::{BacktestConfig, GBM_NAME, LINEAR_NAME, ModelChoice, backtest};
use parkcast_training::datasets::datasets_dir;
use parkcast_training::import::{ImportSource, import};
use parkcast_training::model::{GbmParams, LinearParams};
use parkcast_training::progress::NoProgress;
use parkcast_training::registry::{Registry, RegistryError};
use parkcast_training::train::{TrainConfig, train};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::lots::load_lots;

fn birmingham() -> (tempfile::TempDir, Warehouse) {
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = Warehouse::create(dir.path().join("warehouse")).expect("warehouse");
    let source = ImportSource::Birmingham {
        csv: datasets_dir().join("birmingham/parking_birmingham.csv"),
    };
    import(&source, &warehouse, &NoProgress).expect("the Birmingham import should succeed");
    (dir, warehouse)
}

#[test]
fn learned_models_beat_the_profile_change_on_birmingham() {
    let (_dir, warehouse) = birmingham();
    let config = BacktestConfig::birmingham();
    let report = backtest(&warehouse, &config, &ModelChoice::all(), &NoProgress).expect("backtest");
    assert_eq!(report.lots.len(), 28);
    for horizon in [1, 2, 4] {
        let baseline = report
            .get("persistence + profile change", horizon)
            .expect("reported");
        let gbm = report.get(GBM_NAME, horizon).expect("reported");
        let linear = report.get(LINEAR_NAME, horizon).expect("reported");
        eprintln!(
            "{} min: profile change {:.4}, elastic net {:.4}, trees {:.4} (80% covers {:?})",
            gbm.horizon_minutes, baseline.mae_rate, linear.mae_rate, gbm.mae_rate, gbm.coverage_80
        );
        assert_eq!(gbm.pairs, baseline.pairs, "the same pairs for every model");
        assert_eq!(gbm.fallbacks, 0);
        assert!(
            gbm.mae_rate < 0.97 * baseline.mae_rate,
            "trees at {} min: {:.4} vs {:.4}",
            gbm.horizon_minutes,
            gbm.mae_rate,
            baseline.mae_rate
        );
        assert!(linear.mae_rate < baseline.mae_rate * 1.05);
        for model in [gbm, linear] {
            let coverage = model.coverage_80.expect("calibrated");
            // Split-conformal intervals from the calibration days fall short on this test week
            // (its holiday Monday and Saturday break exchangeability: /work/shared/MODELS.md
            // measured 75% at 2 h with LightGBM's L1 trees); the L1 trees cover 74.6% at 2 h.
            assert!(
                (0.74..=0.85).contains(&coverage),
                "80% interval of {} covers {coverage:.3} at {} min",
                model.model,
                model.horizon_minutes
            );
        }
    }
    assert!(report.training_rows.values().all(|rows| *rows > 10_000));
}

#[test]
fn a_published_model_loads_back_and_scores_live_state_identically() {
    let (dir, warehouse) = birmingham();
    let registry = Registry::open(dir.path().join("models"));
    let config = TrainConfig {
        backtest: BacktestConfig::birmingham(),
        models: ModelChoice {
            linear: Some(LinearParams::default()),
            gbm: Some(GbmParams {
                iterations: 80,
                learning_rate: 0.1,
                ..GbmParams::default()
            }),
            ..ModelChoice::default()
        },
        name: "birmingham".to_owned(),
        publish_losing: false,
        frozen: None,
    };
    let outcome = train(&warehouse, &registry, &config, &NoProgress).expect("training");
    let manifest = &outcome.published.manifest;
    assert_eq!(manifest.version, 1);
    assert_eq!(manifest.card.horizons_minutes, vec![30, 60, 120]);
    for file in [
        "manifest.json",
        "model.bin",
        "report.md",
        "mae_by_horizon.svg",
        "coverage.svg",
    ] {
        assert!(outcome.published.dir.join(file).is_file(), "{file} written");
    }
    let params = FeatureParams::new(30);
    let (loaded_manifest, bytes) = registry
        .load("birmingham", 1, Some(&params.schema_hash()))
        .expect("verified load");
    assert_eq!(&loaded_manifest, manifest);
    let loaded = ModelBundle::from_bytes(&bytes)
        .expect("decodes")
        .load()
        .expect("loads");
    let trained = ModelBundle::from_bytes(&outcome.bundle.to_bytes().expect("encodes"))
        .expect("decodes")
        .load()
        .expect("loads");

    // The model file carries the calendar training used (format 2), school holidays included, and
    // the loaded lots read it from there.
    let stored: Vec<&String> = outcome.bundle.calendars.keys().collect();
    assert_eq!(stored, ["GB-ENG"]);
    let (context, _) = loaded
        .lot(&outcome.backtest.lots[0])
        .expect("the model knows the lot");
    assert_eq!(*context.holidays, outcome.bundle.calendars["GB-ENG"]);
    let christmas_break = chrono::NaiveDate::from_ymd_opt(2016, 12, 19).expect("date");
    assert!(context.holidays.is_school_holiday(christmas_break));

    // Live scoring: each lot's state fed value by value, asked at its last instant.
    let lots = load_lots(&warehouse, "birmingham", 30).expect("lots");
    let mut scored = 0;
    for lot_id in &outcome.backtest.lots {
        let lot = &lots[lot_id];
        let (context, profile) = loaded.lot(lot_id).expect("the model knows the lot");
        // The profile counts as fitted up to the lot's last value, not to the end of that local
        // day: a server reads the rest of the day as new values, never left out of the profile.
        let (last_ms, _) = lot.series.iter().last().expect("values");
        assert!(
            last_ms < profile.fitted_until_ms()
                && profile.fitted_until_ms() <= last_ms + lot.series.step_ms(),
            "{lot_id}: fitted until {}, last value {last_ms}",
            profile.fitted_until_ms()
        );
        // The references the live monitor holds the lot to: by day type and hour, and the
        // spread of its daily error.
        for minutes in [30, 60, 120] {
            let hourly = loaded.lot_hourly_mae(lot_id, minutes).expect("hourly MAE");
            assert_eq!(hourly.len(), parkcast_inference::reference::REFERENCE_LEN);
            assert!(hourly.iter().all(|mae| mae.is_finite() && *mae >= 0.0));
            let spread = loaded.lot_error_spread(lot_id, minutes).expect("a spread");
            assert!((1.0..10.0).contains(&spread), "{lot_id}: spread {spread}");
        }
        let mut state = LotFeatureState::new(params, context.clone(), Arc::clone(profile));
        for (instant, value) in lot.series.iter() {
            state.push_value(instant, value);
        }
        let rows: Vec<_> = [1, 2, 4]
            .into_iter()
            .map(|horizon| state.vector(horizon).expect("a value now"))
            .collect();
        let live = loaded.forecaster().predict(&rows);
        let reference = trained.forecaster().predict(&rows);
        for (live, reference) in live.iter().zip(&reference) {
            assert!((0.0..=1.0).contains(live));
            assert_eq!(
                live.to_bits(),
                reference.to_bits(),
                "identical after reload"
            );
        }
        let calibration = loaded.calibration(60).expect("calibrated");
        let (low, high) = calibration.interval(live[1], 0.8);
        assert!(low <= live[1] && live[1] <= high && (0.0..=1.0).contains(&high));
        scored += 1;
    }
    assert_eq!(scored, 28);
    let _: &LotContext = loaded.lot(&outcome.backtest.lots[0]).expect("known").0;

    // A second publish is version 2; a corrupted model file is refused with the reason.
    let again = train(&warehouse, &registry, &config, &NoProgress).expect("training");
    assert_eq!(again.published.manifest.version, 2);
    let model_path = again.published.dir.join("model.bin");
    let mut corrupted = std::fs::read(&model_path).expect("model file");
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x5a;
    std::fs::write(&model_path, &corrupted).expect("write");
    assert!(matches!(
        registry.load("birmingham", 2, None),
        Err(RegistryError::ChecksumMismatch { .. })
    ));
    assert!(ModelBundle::from_bytes(&corrupted).is_err());
    assert!(
        registry
            .load("birmingham", 1, Some("not-the-schema"))
            .is_err()
    );
}
