//! Gradients, initial scores and leaf renewal of each objective.
//!
//! Every objective here has a unit hessian per row (LightGBM's choice for L1, quantile and Huber
//! too), so without weights the fit never stores hessians: a histogram's hessian sum is its row
//! count. With weights, gradient and hessian are both scaled by the row's weight.

use rayon::prelude::*;

use crate::Objective;

/// Rows per parallel task of the per-row loops.
const CHUNK: usize = 8_192;

/// Fills `gradients` (and `hessians`, when weighted) at the current scores.
pub(crate) fn gradients(
    objective: Objective,
    scores: &[f64],
    targets: &[f64],
    weights: Option<&[f64]>,
    gradients: &mut [f64],
    hessians: &mut [f64],
) {
    let gradient = move |score: f64, target: f64| -> f64 {
        let difference = score - target;
        match objective {
            Objective::L2 => difference,
            Objective::L1 => sign(difference),
            Objective::Quantile { alpha } => {
                if difference >= 0.0 {
                    1.0 - alpha
                } else {
                    -alpha
                }
            }
            Objective::Huber { delta } => {
                if difference.abs() <= delta {
                    difference
                } else {
                    sign(difference) * delta
                }
            }
        }
    };
    gradients
        .par_chunks_mut(CHUNK)
        .zip(scores.par_chunks(CHUNK))
        .zip(targets.par_chunks(CHUNK))
        .for_each(|((out, scores), targets)| {
            for ((out, &score), &target) in out.iter_mut().zip(scores).zip(targets) {
                *out = gradient(score, target);
            }
        });
    if let Some(weights) = weights {
        gradients
            .par_chunks_mut(CHUNK)
            .zip(hessians.par_chunks_mut(CHUNK))
            .zip(weights.par_chunks(CHUNK))
            .for_each(|((gradients, hessians), weights)| {
                for ((gradient, hessian), &weight) in
                    gradients.iter_mut().zip(hessians.iter_mut()).zip(weights)
                {
                    *gradient *= weight;
                    *hessian = weight;
                }
            });
    }
}

fn sign(value: f64) -> f64 {
    if value > 0.0 {
        1.0
    } else if value < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The constant that minimises the loss before any tree: mean (L2, Huber), median (L1),
/// alpha-quantile (quantile); weighted when weights are given.
pub(crate) fn initial_score(objective: Objective, targets: &[f64], weights: Option<&[f64]>) -> f64 {
    match objective.renew_alpha() {
        Some(alpha) => {
            let mut values = targets.to_vec();
            match weights {
                None => percentile(&mut values, alpha),
                Some(weights) => weighted_percentile(&values, weights, alpha),
            }
        }
        None => match weights {
            None => targets.iter().sum::<f64>() / targets.len() as f64,
            Some(weights) => {
                let total: f64 = weights.iter().sum();
                targets
                    .iter()
                    .zip(weights)
                    .map(|(target, weight)| target * weight)
                    .sum::<f64>()
                    / total
            }
        },
    }
}

/// LightGBM's percentile of unweighted values (`PercentileFun`), so renewed leaves match it: the
/// position `(1 - alpha) * n` counted from the largest value, interpolated between neighbours.
/// Reorders `values`. Empty input gives 0.
pub(crate) fn percentile(values: &mut [f64], alpha: f64) -> f64 {
    let count = values.len();
    if count <= 1 {
        return values.first().copied().unwrap_or(0.0);
    }
    let float_position = (1.0 - alpha) * count as f64;
    // Truncation towards zero, as LightGBM's cast does; the value is non-negative.
    let position = float_position as usize;
    if position < 1 {
        return values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    }
    if position >= count {
        return values.iter().copied().fold(f64::INFINITY, f64::min);
    }
    let bias = float_position - position as f64;
    // The position-th largest is ascending index count - position; the next largest is just below.
    let lower_index = count - position - 1;
    let (_, lower, above) = values.select_nth_unstable_by(lower_index, f64::total_cmp);
    let lower = *lower;
    let upper = above.iter().copied().fold(f64::INFINITY, f64::min);
    upper - (upper - lower) * bias
}

/// The weighted alpha-quantile: the value where the cumulative weight of the sorted values
/// crosses `alpha` of the total, interpolated linearly between the two values around the
/// crossing (cumulative weights taken at each value's middle). Zero-weight values are ignored.
pub(crate) fn weighted_percentile(values: &[f64], weights: &[f64], alpha: f64) -> f64 {
    let mut pairs: Vec<(f64, f64)> = values
        .iter()
        .zip(weights)
        .filter(|(_, weight)| **weight > 0.0)
        .map(|(value, weight)| (*value, *weight))
        .collect();
    if pairs.is_empty() {
        return 0.0;
    }
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = pairs.iter().map(|pair| pair.1).sum();
    let target = alpha * total;
    let mut cumulative = 0.0;
    let mut previous: Option<(f64, f64)> = None;
    for &(value, weight) in &pairs {
        let middle = cumulative + weight / 2.0;
        if middle >= target {
            return match previous {
                Some((previous_value, previous_middle)) if middle > previous_middle => {
                    let share = (target - previous_middle) / (middle - previous_middle);
                    previous_value + (value - previous_value) * share
                }
                _ => value,
            };
        }
        previous = Some((value, middle));
        cumulative += weight;
    }
    pairs[pairs.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_follows_lightgbm() {
        // n = 4, alpha 0.5: position 2 from the top, no bias: the upper median.
        assert_eq!(percentile(&mut [4.0, 1.0, 3.0, 2.0], 0.5), 3.0);
        // n = 5, alpha 0.5: float position 2.5: half-way between the 2nd and 3rd largest.
        assert_eq!(percentile(&mut [5.0, 1.0, 4.0, 2.0, 3.0], 0.5), 3.5);
        assert_eq!(percentile(&mut [5.0, 1.0, 4.0], 0.99), 5.0);
        // Float position 2.97: 4 - (4 - 1) * 0.97.
        assert!((percentile(&mut [5.0, 1.0, 4.0], 0.01) - 1.09).abs() < 1e-12);
        assert!((percentile(&mut [5.0, 1.0, 4.0], 0.001) - 1.009).abs() < 1e-12);
        assert_eq!(percentile(&mut [2.5], 0.3), 2.5);
        assert_eq!(percentile(&mut [], 0.3), 0.0);
    }

    #[test]
    fn weighted_percentile_with_unit_weights_is_a_median_and_weights_pull() {
        let values = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(weighted_percentile(&values, &[1.0; 5], 0.5), 3.0);
        let heavy_top = [1.0, 1.0, 1.0, 1.0, 20.0];
        assert!(weighted_percentile(&values, &heavy_top, 0.5) > 4.0);
        assert_eq!(
            weighted_percentile(&values, &[0.0, 0.0, 1.0, 0.0, 0.0], 0.9),
            3.0
        );
    }

    #[test]
    fn initial_scores_minimise_their_losses() {
        let targets = [0.0, 1.0, 2.0, 10.0];
        assert_eq!(initial_score(Objective::L2, &targets, None), 3.25);
        assert_eq!(initial_score(Objective::L1, &targets, None), 2.0);
        assert_eq!(
            initial_score(Objective::L2, &targets, Some(&[1.0, 1.0, 1.0, 0.0])),
            1.0
        );
    }
}
