//! Behaviour of fitted models, through the public API only.

use parkcast_gbm::{GbmError, GbmModel, GbmParams, Objective, RowMajor};
use proptest::prelude::*;

/// A small deterministic generator for test data (no rand dependency needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Rows of three features: x0 uniform in [0, 10), x1 in {0..4}, x2 uniform with 20% NaN.
/// Target: a step in x0, a shift per x1, plus uniform noise of width `noise`.
fn synthetic(rows: usize, noise: f64, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Lcg(seed);
    let mut values = Vec::with_capacity(rows * 3);
    let mut targets = Vec::with_capacity(rows);
    for _ in 0..rows {
        let x0 = rng.next() * 10.0;
        let x1 = (rng.next() * 4.0).floor();
        let x2 = if rng.next() < 0.2 {
            f64::NAN
        } else {
            rng.next()
        };
        values.extend([x0, x1, x2]);
        let signal = if x0 > 6.0 { 2.0 } else { 0.0 } + 0.5 * x1;
        targets.push(signal + noise * (rng.next() - 0.5));
    }
    (values, targets)
}

fn matrix(values: &[f64]) -> RowMajor<'_> {
    RowMajor::new(values, 3).expect("whole rows")
}

fn mean_loss(model: &GbmModel, objective: Objective, values: &[f64], targets: &[f64]) -> f64 {
    let predictions = model.predict(matrix(values));
    predictions
        .iter()
        .zip(targets)
        .map(|(prediction, target)| objective.loss(*prediction, *target))
        .sum::<f64>()
        / targets.len() as f64
}

#[test]
fn one_tree_splits_separable_data_exactly() {
    // 50 distinct values of x0: every value has a bin of its own.
    let values: Vec<f64> = (0..1_000)
        .flat_map(|row| [f64::from(row % 50) / 5.0, 0.0, f64::from(row % 7)])
        .collect();
    let targets: Vec<f64> = values
        .chunks_exact(3)
        .map(|row| if row[0] > 6.0 { 3.0 } else { -1.0 })
        .collect();
    let model = GbmParams::default()
        .iterations(1)
        .learning_rate(1.0)
        .max_leaves(2)
        .fit(matrix(&values), &targets, None)
        .expect("fits");
    assert_eq!(model.tree_count(), 1);
    assert_eq!(model.split_counts(), vec![1, 0, 0]);
    for (row, target) in values.chunks_exact(3).zip(&targets) {
        assert!((model.predict_one(row) - target).abs() < 1e-9);
    }
    // The threshold sits between the classes.
    assert!((model.predict_one(&[6.0, 0.0, 0.0]) + 1.0).abs() < 1e-9);
    assert!((model.predict_one(&[6.15, 0.0, 0.0]) - 3.0).abs() < 1e-9);
}

#[test]
fn training_loss_never_increases_from_tree_to_tree() {
    let (values, targets) = synthetic(3_000, 1.0, 2);
    for objective in [
        Objective::L2,
        Objective::L1,
        Objective::Quantile { alpha: 0.8 },
        Objective::Huber { delta: 0.3 },
    ] {
        let model = GbmParams::default()
            .objective(objective)
            .iterations(40)
            .learning_rate(0.3)
            .fit(matrix(&values), &targets, None)
            .expect("fits");
        let losses: Vec<f64> = (0..=model.tree_count())
            .map(|trees| mean_loss(&model.prefix(trees), objective, &values, &targets))
            .collect();
        for pair in losses.windows(2) {
            assert!(
                pair[1] <= pair[0] + 1e-12,
                "{objective:?}: loss rose from {} to {}",
                pair[0],
                pair[1]
            );
        }
        assert!(
            losses[losses.len() - 1] < losses[0] * 0.6,
            "{objective:?} learns"
        );
    }
}

#[test]
fn quantile_models_cover_their_quantile_on_fresh_data() {
    let (values, targets) = synthetic(6_000, 2.0, 3);
    let (test_values, test_targets) = synthetic(4_000, 2.0, 4);
    for alpha in [0.1, 0.5, 0.9] {
        let model = GbmParams::default()
            .objective(Objective::Quantile { alpha })
            .iterations(100)
            .learning_rate(0.1)
            .min_data_in_leaf(50)
            .fit(matrix(&values), &targets, None)
            .expect("fits");
        let predictions = model.predict(matrix(&test_values));
        let covered = predictions
            .iter()
            .zip(&test_targets)
            .filter(|(prediction, target)| target <= prediction)
            .count() as f64
            / test_targets.len() as f64;
        assert!(
            (covered - alpha).abs() < 0.04,
            "alpha {alpha}: {covered} of fresh targets at or below the forecast"
        );
    }
}

#[test]
fn missing_values_follow_the_learned_direction() {
    // Only x2 matters: NaN means 5, otherwise 0 below 0.5 and 1 above.
    let (mut values, _) = synthetic(2_000, 0.0, 5);
    let targets: Vec<f64> = values
        .chunks_exact(3)
        .map(|row| match row[2] {
            x if x.is_nan() => 5.0,
            x if x < 0.5 => 0.0,
            _ => 1.0,
        })
        .collect();
    let model = GbmParams::default()
        .iterations(50)
        .learning_rate(0.5)
        .fit(matrix(&values), &targets, None)
        .expect("fits");
    assert!((model.predict_one(&[1.0, 1.0, f64::NAN]) - 5.0).abs() < 0.05);
    assert!(model.predict_one(&[1.0, 1.0, 0.2]).abs() < 0.05);
    assert!((model.predict_one(&[1.0, 1.0, 0.8]) - 1.0).abs() < 0.05);
    // NaN in a feature that had none in training still gets a finite forecast.
    for row in values.chunks_exact_mut(3) {
        row[0] = f64::NAN;
        assert!(model.predict_one(row).is_finite());
    }
}

#[test]
fn fits_are_deterministic_for_a_seed_whatever_the_thread_count() {
    let (values, targets) = synthetic(40_000, 1.0, 6);
    let params = GbmParams::default()
        .objective(Objective::L1)
        .iterations(30)
        .bagging_fraction(0.7)
        .bagging_freq(1)
        .feature_fraction(0.67)
        .seed(11);
    let fit_with = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool")
            .install(|| params.fit(matrix(&values), &targets, None))
            .expect("fits")
    };
    let one = fit_with(1);
    assert_eq!(one, fit_with(3), "1 and 3 threads");
    assert_eq!(one, fit_with(1), "twice with the same seed");
    let other_seed = params
        .clone()
        .seed(12)
        .fit(matrix(&values), &targets, None)
        .expect("fits");
    assert_ne!(
        one, other_seed,
        "the seed drives bagging and feature sampling"
    );
}

#[test]
fn a_serialized_model_predicts_bit_for_bit_the_same() {
    let (values, targets) = synthetic(2_000, 1.0, 7);
    let model = GbmParams::default()
        .objective(Objective::Huber { delta: 0.5 })
        .iterations(30)
        .fit(matrix(&values), &targets, None)
        .expect("fits");
    let bytes = rmp_serde::to_vec_named(&model).expect("serializes");
    let loaded: GbmModel = rmp_serde::from_slice(&bytes).expect("deserializes");
    assert_eq!(loaded, model);
    let (before, after) = (
        model.predict(matrix(&values)),
        loaded.predict(matrix(&values)),
    );
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

#[test]
fn weights_pull_the_fit_towards_heavy_rows() {
    let values = vec![0.0; 100];
    let targets: Vec<f64> = (0..100)
        .map(|row| if row < 50 { 0.0 } else { 1.0 })
        .collect();
    let weights: Vec<f64> = (0..100)
        .map(|row| if row < 50 { 1.0 } else { 3.0 })
        .collect();
    let one_column = RowMajor::new(&values, 1).expect("whole rows");
    let l2 = GbmParams::default()
        .iterations(5)
        .fit(one_column, &targets, Some(&weights))
        .expect("fits");
    assert_eq!(l2.init_score(), 0.75);
    let l1 = GbmParams::default()
        .objective(Objective::L1)
        .iterations(5)
        .fit(one_column, &targets, Some(&weights))
        .expect("fits");
    assert_eq!(l1.init_score(), 1.0);
}

#[test]
fn bad_inputs_are_refused_with_their_reason() {
    let params = GbmParams::default();
    assert!(matches!(
        RowMajor::new(&[1.0; 5], 2),
        Err(GbmError::RaggedRows { .. })
    ));
    assert!(matches!(RowMajor::new(&[], 0), Err(GbmError::NoColumns)));
    let values = [0.0, 1.0, 2.0, 3.0];
    let two = RowMajor::new(&values, 2).expect("whole rows");
    assert!(matches!(
        params.fit(RowMajor::new(&[], 2).expect("empty"), &[], None),
        Err(GbmError::NoRows)
    ));
    assert!(matches!(
        params.fit(two, &[1.0], None),
        Err(GbmError::LengthMismatch {
            what: "targets",
            ..
        })
    ));
    assert!(matches!(
        params.fit(two, &[1.0, f64::NAN], None),
        Err(GbmError::NonFiniteTarget { row: 1 })
    ));
    assert!(matches!(
        params.fit(two, &[1.0, 2.0], Some(&[1.0])),
        Err(GbmError::LengthMismatch {
            what: "weights",
            ..
        })
    ));
    assert!(matches!(
        params.fit(two, &[1.0, 2.0], Some(&[1.0, -1.0])),
        Err(GbmError::InvalidWeight { row: 1 })
    ));
    assert!(matches!(
        params.fit(two, &[1.0, 2.0], Some(&[0.0, 0.0])),
        Err(GbmError::ZeroWeight)
    ));
    assert!(matches!(
        params.clone().iterations(0).fit(two, &[1.0, 2.0], None),
        Err(GbmError::InvalidParam {
            name: "iterations",
            ..
        })
    ));
    // Constant features: nothing to split, the model is the initial score.
    let model = params.fit(two, &[1.0, 2.0], None).expect("fits");
    assert_eq!(model.predict_one(&[9.0, 9.0]), 1.5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the data (NaN included) and settings: batch and single-row prediction agree bit
    /// for bit, every forecast is finite, and constant targets give that constant.
    #[test]
    fn batch_and_single_row_predictions_agree(
        rows in prop::collection::vec(
            (prop::option::of(-5.0f64..5.0), 0u8..6, -1.0f64..1.0),
            30..400,
        ),
        objective_index in 0usize..4,
        leaves in 2usize..12,
        min_rows in 1usize..15,
    ) {
        let objective = [
            Objective::L2,
            Objective::L1,
            Objective::Quantile { alpha: 0.3 },
            Objective::Huber { delta: 0.4 },
        ][objective_index];
        let mut values = Vec::new();
        let mut targets = Vec::new();
        for (x0, x1, noise) in &rows {
            values.extend([x0.unwrap_or(f64::NAN), f64::from(*x1), *noise]);
            targets.push(x0.unwrap_or(3.0).sin() + f64::from(*x1) * 0.1 + noise * 0.2);
        }
        let model = GbmParams::default()
            .objective(objective)
            .iterations(15)
            .max_leaves(leaves)
            .min_data_in_leaf(min_rows)
            .fit(matrix(&values), &targets, None)
            .expect("fits");
        let batch = model.predict(matrix(&values));
        for (row, forecast) in values.chunks_exact(3).zip(&batch) {
            prop_assert!(forecast.is_finite());
            prop_assert_eq!(model.predict_one(row).to_bits(), forecast.to_bits());
        }
        let constant = vec![0.25; targets.len()];
        let flat = GbmParams::default()
            .objective(objective)
            .iterations(5)
            .fit(matrix(&values), &constant, None)
            .expect("fits");
        for row in values.chunks_exact(3) {
            prop_assert!((flat.predict_one(row) - 0.25).abs() < 1e-12);
        }
    }
}
