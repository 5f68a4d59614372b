//! Rows lent by other cities (`[prior]`): read on the borrowing city's protocol with no lot
//! identity, capped, taken only by fits with few rows of their own, and absent sources named.

use crate::common;

use common::birmingham_warehouse;

use chrono::NaiveDate;
use parkcast_features::vector::index;
use parkcast_training::backtest::{BacktestConfig, GBM_NAME, ModelChoice, backtest};
use parkcast_training::model::GbmParams;
use parkcast_training::prior::{Prior, PriorSpec};
use parkcast_training::progress::NoProgress;
use parkcast_training::simulate::{SimulationParams, simulate};

fn spec(max_own_rows: usize) -> PriorSpec {
    PriorSpec {
        // The city itself is never a lender; a source the warehouse lacks is skipped, named.
        sources: vec![
            "birmingham".to_owned(),
            "simulated".to_owned(),
            "nosuch".to_owned(),
        ],
        rows_per_horizon: 400,
        max_own_rows,
    }
}

fn validation_mae(report: &parkcast_training::backtest::BacktestReport) -> Vec<f64> {
    report
        .validation_mae
        .iter()
        .filter(|(name, _, _)| name == GBM_NAME)
        .map(|(_, _, mae)| *mae)
        .collect()
}

#[test]
fn other_cities_lend_capped_anonymous_rows_to_fits_with_few_of_their_own() {
    // Real Birmingham borrows from a small simulated city in the same warehouse.
    let (_dir, warehouse) = birmingham_warehouse();
    let params = SimulationParams::default()
        .lots(3)
        .days(30)
        .occupancy_interval_minutes(15)
        .start_date(NaiveDate::from_ymd_opt(2025, 9, 1).expect("date"))
        .check()
        .expect("valid parameters");
    simulate(&params, &warehouse, &NoProgress).expect("simulation");
    let config = BacktestConfig {
        validation_only: true,
        ..BacktestConfig::birmingham()
    };

    let prior = Prior::build(&warehouse, &config, &spec(1_000_000), &NoProgress).expect("prior");
    assert_eq!(prior.sources.len(), 1, "{prior:?}");
    assert_eq!(prior.sources[0].source, "simulated");
    assert_eq!(prior.sources[0].lots, 3);
    assert_eq!(
        prior.skipped,
        vec![("nosuch".to_owned(), "not in the warehouse".to_owned())]
    );
    // On Birmingham's grid and horizons (30 min / 1 h / 2 h), at most the cap each, no lot code.
    let per_horizon = prior.rows_per_horizon();
    assert_eq!(
        per_horizon.keys().copied().collect::<Vec<_>>(),
        vec![30, 60, 120]
    );
    for (minutes, rows) in &per_horizon {
        assert!((300..=400).contains(rows), "{minutes} min: {rows} rows");
        let lent = prior.horizon(*minutes).expect("rows");
        assert!(
            lent.features
                .iter()
                .all(|row| row[index::LOT_CODE].is_nan())
        );
        assert!(lent.targets.iter().all(|rate| (0.0..=1.0).contains(rate)));
    }
    assert_eq!(prior.sources[0].rows, per_horizon.values().sum::<usize>());

    let trees = GbmParams {
        iterations: 30,
        learning_rate: 0.1,
        ..GbmParams::default()
    };
    let run = |prior: Option<PriorSpec>| {
        let models = ModelChoice {
            gbm: Some(trees.clone()),
            prior,
            ..ModelChoice::default()
        };
        backtest(&warehouse, &config, &models, &NoProgress).expect("backtest")
    };
    let own = run(None);
    let borrowed = run(Some(spec(1_000_000)));
    let refused = run(Some(spec(1_000)));
    assert_eq!(own.run.prior, None);
    let line = borrowed.run.prior.clone().expect("a prior line");
    assert!(
        line.starts_with("prior: rows from simulated (3 lots, ")
            && line.contains("taken by 3 of 3 horizon fits")
            && line.ends_with("(skipped nosuch: not in the warehouse)"),
        "{line}"
    );
    let line = refused.run.prior.clone().expect("a prior line");
    assert!(line.contains("taken by 0 of 3 horizon fits"), "{line}");
    // Birmingham's fit has ~20,000 rows per horizon of its own: over 1,000 it takes none and
    // scores exactly as without a prior; under 1,000,000 it takes them and the trees change.
    assert_eq!(validation_mae(&refused), validation_mae(&own));
    assert_ne!(validation_mae(&borrowed), validation_mae(&own));
}
