//! The promotion gate of continuous training: a candidate replaces the serving model only when it
//! is better on the latest days, offline and then live.
//!
//! **Offline.** The candidate's evidence is its own backtest over the latest test window: models
//! fitted before the window, scored on it (rolling origin, [`crate::backtest`]). The serving model
//! is scored on the same days as it would have served them: its own model file (profiles, trees),
//! each lot's feature state fed the grid values and session events in time order, a forecast from
//! every grid instant, every target in the window with a value scored
//! ([`score_model_on_window`]). Both use the same feature code; the pair sets differ only where the
//! backtest's protocol drops pairs (same-day pairs, the lot's gaps). When the serving model was
//! trained on part of the window the comparison favours it, so the gate errs towards keeping it.
//!
//! **Live.** The candidate in shadow is scored on the server's stream beside the serving model
//! (`serving::scoring::Scoring::shadow`); the gate reads both models' MAE over the last day.
//!
//! **The rule** ([`verdict`]), the same for both: over the horizons both models have, the
//! candidate's mean relative improvement must reach the margin, no horizon may be worse by more
//! than the margin, and every horizon needs enough pairs to be judged.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::NaiveDate;
use parkcast_inference::artifact::LoadedModel;
use parkcast_warehouse::lots::LotInputs;

/// What the gate compares at one horizon.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HorizonEvidence {
    /// The horizon, minutes.
    pub horizon_minutes: u32,
    /// The serving model's MAE of the rate.
    pub serving_mae: f64,
    /// Its pairs.
    pub serving_pairs: u64,
    /// The candidate's MAE of the rate.
    pub candidate_mae: f64,
    /// Its pairs.
    pub candidate_pairs: u64,
}

impl HorizonEvidence {
    /// 1 - candidate / serving: above 0 when the candidate is better.
    pub fn improvement(&self) -> f64 {
        1.0 - self.candidate_mae / self.serving_mae
    }
}

/// The gate's decision on one kind of evidence.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// What was compared (`backtest on the latest days`, `shadow, last day`).
    pub evidence: String,
    /// Per horizon.
    pub horizons: Vec<HorizonEvidence>,
    /// The mean improvement over the horizons.
    pub mean_improvement: f64,
    /// Whether the candidate passed.
    pub passed: bool,
    /// Why not (empty when it passed).
    pub reasons: Vec<String>,
}

impl Verdict {
    /// A table of the evidence for a person, with the decision.
    pub fn markdown(&self) -> String {
        let mut text = format!(
            "{}: {} (mean improvement {:+.1}%)\n\n| horizon | serving MAE | candidate MAE | improvement | pairs (serving / candidate) |\n| --- | --- | --- | --- | --- |\n",
            self.evidence,
            if self.passed { "passed" } else { "FAILED" },
            100.0 * self.mean_improvement
        );
        for horizon in &self.horizons {
            let _ = writeln!(
                text,
                "| {} min | {:.4} | {:.4} | {:+.1}% | {} / {} |",
                horizon.horizon_minutes,
                horizon.serving_mae,
                horizon.candidate_mae,
                100.0 * horizon.improvement(),
                horizon.serving_pairs,
                horizon.candidate_pairs
            );
        }
        for reason in &self.reasons {
            let _ = writeln!(text, "\n- {reason}");
        }
        text
    }
}

/// Judges a candidate on `horizons` (see the module's rule): `margin` is the share the mean MAE
/// must improve by (0.02: 2%), `min_pairs` the pairs each model needs at each horizon.
pub fn verdict(
    evidence: &str,
    horizons: Vec<HorizonEvidence>,
    margin: f64,
    min_pairs: u64,
) -> Verdict {
    let mut reasons = Vec::new();
    if horizons.is_empty() {
        reasons.push("the two models share no horizon with figures".to_owned());
    }
    for horizon in &horizons {
        if horizon.serving_pairs < min_pairs || horizon.candidate_pairs < min_pairs {
            reasons.push(format!(
                "{} min: {} and {} pairs, fewer than the {min_pairs} needed to judge",
                horizon.horizon_minutes, horizon.serving_pairs, horizon.candidate_pairs
            ));
        } else if !(horizon.serving_mae.is_finite() && horizon.candidate_mae.is_finite()) {
            reasons.push(format!(
                "{} min: no MAE to compare",
                horizon.horizon_minutes
            ));
        } else if horizon.improvement() < -margin {
            reasons.push(format!(
                "{} min: the candidate's MAE {:.4} is {:.1}% worse than the serving model's {:.4} (at most {:.1}% allowed)",
                horizon.horizon_minutes,
                horizon.candidate_mae,
                -100.0 * horizon.improvement(),
                horizon.serving_mae,
                100.0 * margin
            ));
        }
    }
    let improvements: Vec<f64> = horizons
        .iter()
        .map(HorizonEvidence::improvement)
        .filter(|improvement| improvement.is_finite())
        .collect();
    let mean_improvement = if improvements.is_empty() {
        f64::NAN
    } else {
        improvements.iter().sum::<f64>() / improvements.len() as f64
    };
    if mean_improvement.is_nan() || mean_improvement < margin {
        reasons.push(format!(
            "the mean improvement over the horizons is {:+.1}%, short of the {:.1}% margin",
            100.0 * mean_improvement,
            100.0 * margin
        ));
    }
    Verdict {
        evidence: evidence.to_owned(),
        passed: reasons.is_empty(),
        horizons,
        mean_improvement,
        reasons,
    }
}

/// Sums of absolute errors and pairs per horizon (minutes).
pub type ErrorSums = BTreeMap<u32, (f64, u64)>;

/// Scores a model file on the local days `window` (first and last, inclusive) of `lots` as a server
/// would have: each lot's feature state (the model's profile and context) is fed its grid values
/// and session events in time order from the history the features need before the window, the
/// model forecasts from every grid instant, and each forecast whose target falls in the window
/// with a value is scored. Lots the model does not know are skipped.
pub fn score_model_on_window(
    model: &LoadedModel,
    lots: &BTreeMap<String, LotInputs>,
    window: (NaiveDate, NaiveDate),
) -> ErrorSums {
    let mut sums = ErrorSums::new();
    for (lot_id, lot) in lots {
        let Some(mut state) = model.new_state(lot_id) else {
            continue;
        };
        let timezone = lot.series.timezone();
        let from_ms = parkcast_localtime::day_start_ms(timezone, window.0);
        let until_ms = parkcast_localtime::day_start_ms(timezone, window.1 + chrono::Days::new(1));
        // The features look back eight days and a step; the longest horizon reaches a week back
        // from the window's first target.
        let history_from = from_ms - 16 * 86_400_000;
        let mut arrivals = lot.arrivals_ms.clone();
        let mut departures = lot.departures_ms.clone();
        arrivals.sort_unstable();
        departures.sort_unstable();
        let mut next_arrival = arrivals.partition_point(|at| *at <= history_from);
        let mut next_departure = departures.partition_point(|at| *at <= history_from);
        for (instant, value) in lot.series.iter() {
            if instant <= history_from {
                continue;
            }
            if instant >= until_ms {
                break;
            }
            while next_arrival < arrivals.len() && arrivals[next_arrival] <= instant {
                state.push_arrival(arrivals[next_arrival]);
                next_arrival += 1;
            }
            while next_departure < departures.len() && departures[next_departure] <= instant {
                state.push_departure(departures[next_departure]);
                next_departure += 1;
            }
            state.push_value(instant, value);
            let Some(forecast) = model.forecast(&state) else {
                continue;
            };
            for horizon in &forecast.horizons {
                if !(from_ms..until_ms).contains(&horizon.target_ms) || !horizon.rate.is_finite() {
                    continue;
                }
                if let Some(actual) = lot.series.rate_at(horizon.target_ms) {
                    let entry = sums.entry(horizon.horizon_minutes).or_default();
                    entry.0 += (horizon.rate - actual).abs();
                    entry.1 += 1;
                }
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(horizon_minutes: u32, serving_mae: f64, candidate_mae: f64) -> HorizonEvidence {
        HorizonEvidence {
            horizon_minutes,
            serving_mae,
            serving_pairs: 1_000,
            candidate_mae,
            candidate_pairs: 1_000,
        }
    }

    #[test]
    fn a_candidate_passes_only_when_better_by_the_margin_and_nowhere_much_worse() {
        // 10% and 4% better: a mean of 7%.
        let better = vec![evidence(15, 0.020, 0.018), evidence(60, 0.050, 0.048)];
        let passed = verdict("backtest", better.clone(), 0.02, 100);
        assert!(passed.passed, "{passed:?}");
        assert!((passed.mean_improvement - 0.07).abs() < 1e-9);
        // Short of a 10% margin.
        let short = verdict("backtest", better, 0.10, 100);
        assert!(!short.passed);
        assert!(
            short.reasons[0].contains("short of the 10.0% margin"),
            "{short:?}"
        );
        // Much better at 15 min, 5% worse at 60: refused for the horizon, though the mean passes.
        let mixed = verdict(
            "backtest",
            vec![evidence(15, 0.020, 0.014), evidence(60, 0.050, 0.0525)],
            0.02,
            100,
        );
        assert!(!mixed.passed);
        assert!(
            mixed
                .reasons
                .iter()
                .any(|reason| reason.starts_with("60 min")),
            "{mixed:?}"
        );
        // Too few pairs to judge.
        let mut thin = evidence(15, 0.020, 0.010);
        thin.candidate_pairs = 10;
        let thin = verdict("shadow", vec![thin], 0.02, 100);
        assert!(!thin.passed);
        assert!(
            thin.reasons[0].contains("fewer than the 100 needed"),
            "{thin:?}"
        );
        // Nothing to compare.
        assert!(!verdict("shadow", Vec::new(), 0.02, 100).passed);
        assert!(
            verdict("backtest", vec![evidence(15, 0.02, 0.01)], 0.02, 100)
                .markdown()
                .contains("| 15 min | 0.0200 | 0.0100 | +50.0% | 1000 / 1000 |")
        );
    }
}
