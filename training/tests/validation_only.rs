//! A search must not see the test: the validation-only backtest makes no test fit and reports no
//! test figure, and the search's cached validation sets score exactly what that backtest scores.

use crate::common;

use common::birmingham_warehouse;

use std::sync::Mutex;

use parkcast_training::backtest::{
    BacktestConfig, GBM_NAME, ModelChoice, backtest, prepare, validation_sets,
};
use parkcast_training::model::GbmParams;
use parkcast_training::progress::{NoProgress, Progress};

/// The stages started (name, total) and the units advanced.
type Seen = (Vec<(String, Option<u64>)>, u64);

/// Records the stages the backtest reports and the units it advances.
#[derive(Default)]
struct Fits(Mutex<Seen>);

impl Progress for Fits {
    fn stage(&self, name: &str, total: Option<u64>) {
        let mut state = self.0.lock().expect("not poisoned");
        state.0.push((name.to_owned(), total));
    }
    fn advance(&self, units: u64) {
        self.0.lock().expect("not poisoned").1 += units;
    }
}

#[test]
fn the_validation_only_backtest_fits_no_test_window_and_the_search_scores_the_same() {
    let (_dir, warehouse) = birmingham_warehouse();
    let trees = GbmParams {
        iterations: 40,
        learning_rate: 0.1,
        ..GbmParams::default()
    };
    let config = BacktestConfig {
        windows: 2,
        validation_only: true,
        ..BacktestConfig::birmingham()
    };
    let models = ModelChoice {
        gbm: Some(trees.clone()),
        ..ModelChoice::default()
    };
    let fits = Fits::default();
    let report = backtest(&warehouse, &config, &models, &fits).expect("backtest");
    let (stages, advanced) = fits.0.into_inner().expect("not poisoned");
    // One fit per window (its validation days), none for the test windows.
    let fits: Vec<&str> = stages
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.contains("fitting"))
        .collect();
    assert_eq!(fits.len(), 2, "{stages:?}");
    assert!(fits[0].starts_with("window 1/2 calibration"), "{fits:?}");
    assert!(fits[1].starts_with("window 2/2 calibration"), "{fits:?}");
    assert_eq!(report.run.fits, 2);
    assert!(
        stages.iter().all(|(name, _)| !name.contains("test")),
        "{stages:?}"
    );
    // Every stage ran to its end (groups read, horizons fitted, groups scored).
    let totals: u64 = stages.iter().filter_map(|(_, total)| *total).sum();
    assert_eq!(advanced, totals, "{stages:?}");
    // Nothing of the test windows is reported.
    assert!(report.metrics.is_empty(), "{:?}", report.metrics);
    assert!(report.per_lot.is_empty() && report.per_day_type.is_empty());
    assert!(report.per_window.is_empty() && report.samples.is_empty());
    assert!(report.test_residuals.is_empty() && report.training_rows.is_empty());
    // The validation days are scored for every model and horizon.
    assert_eq!(report.validation_mae.len(), report.models.len() * 3);

    // The search reads the same validation days once and gets the same scores.
    let (lots, _) = prepare(&warehouse, &config, &NoProgress).expect("lots");
    let sets = validation_sets(&lots, &config, &NoProgress).expect("validation sets");
    let scores = sets.score(&trees).expect("scores");
    for score in &scores {
        let of = |model: &str| {
            report
                .validation_mae
                .iter()
                .find(|(name, horizon, _)| name == model && *horizon == score.horizon_steps)
                .map(|(_, _, mae)| *mae)
                .expect("a validation figure per model and horizon")
        };
        assert!(
            (score.mae_rate - of(GBM_NAME)).abs() < 1e-12,
            "{score:?} vs {}",
            of(GBM_NAME)
        );
        assert!((score.baseline_mae_rate - of("persistence + profile change")).abs() < 1e-12);
        assert!(
            score.change() < 0.0,
            "the trees beat the baseline: {score:?}"
        );
    }
}
