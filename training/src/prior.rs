//! Training rows borrowed from other cities: a prior for the learned models of a city with little
//! history of its own.
//!
//! Why: a city with ten weeks of readings (Birmingham: 28 lots, a reading every 30 minutes from 8 to
//! 16:30) gives its trees about 30,000 rows per horizon, too few to learn how a deviation from the
//! profile moves at levels the city has rarely reached. Ten thousand rows per horizon of another
//! real city, featurised on *this* city's grid, horizons and pairing rule, moved Birmingham's
//! validation MAE by -0.8 / -1.5 / -2.2% (README, "A prior from other cities"; Málaga cut to 28
//! days of history gained 0.0 / -1.3 / -2.8%). With a year of rows of its own Málaga moved by
//! nothing measurable and the simulated city got worse, so a fit with more than
//! [`PriorSpec::max_own_rows`] rows of its own takes none. Rows of the simulator, whose dynamics are
//! not a real city's, made Birmingham worse, so the configuration names real data sets only.
//!
//! The prior's rows carry no lot identity (`lot_code` is missing on them: they belong to no lot of
//! this city) and come from all of each prior city's history: another city's days cannot leak this
//! city's future. A source the warehouse does not hold is skipped and named in the run's summary,
//! so the same configuration runs on a warehouse with one city only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Days;
use parkcast_features::vector::index;
use parkcast_inference::model::{HorizonRows, TrainingSet};
use parkcast_warehouse::Warehouse;
use serde::{Deserialize, Serialize};

use crate::backtest::{BacktestConfig, BacktestError, training_set};
use crate::groups::LotGroups;
use crate::progress::Progress;

/// Why a lender the warehouse lacks lent nothing.
const NOT_IN_THE_WAREHOUSE: &str = "not in the warehouse";

/// `[prior]` of the frozen configuration: which cities lend rows, and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorSpec {
    /// Sources of `fact_lot_occupancy` that lend rows (the one being trained is always left out).
    pub sources: Vec<String>,
    /// Rows per horizon each source lends at most (origins thinned evenly over its history).
    pub rows_per_horizon: usize,
    /// A fit with more rows of its own than this (per horizon) borrows none: with that much data
    /// of its own the prior moved nothing measurable (Málaga's year: +0.0 / +0.3 / +0.2%), and
    /// lending only costs fitting time.
    pub max_own_rows: usize,
}

/// One source's share of a [`Prior`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorSource {
    /// The source.
    pub source: String,
    /// Its usable lots on the borrowing city's grid.
    pub lots: usize,
    /// Its rows, summed over horizons.
    pub rows: usize,
}

/// The rows other cities lend, per horizon in minutes, on the borrowing city's protocol.
#[derive(Debug, Default)]
pub struct Prior {
    /// The sources that lent rows, in the configuration's order.
    pub sources: Vec<PriorSource>,
    /// Sources named by the configuration that lent none, with why.
    pub skipped: Vec<(String, String)>,
    /// [`PriorSpec::max_own_rows`].
    pub max_own_rows: usize,
    rows: TrainingSet,
    /// Horizon fits offered the rows, those with few enough rows of their own to borrow, and those
    /// that took rows (a horizon no source lent rows for takes none).
    offered: AtomicUsize,
    wanting: AtomicUsize,
    lent: AtomicUsize,
}

impl PartialEq for Prior {
    /// Two priors are alike when they came from the same sources with as many rows (the rows
    /// themselves are a function of the warehouse and the protocol).
    fn eq(&self, other: &Self) -> bool {
        self.sources == other.sources && self.skipped == other.skipped
    }
}

impl Prior {
    /// Reads the rows `spec`'s sources lend to a city run with `target`'s protocol.
    pub fn build(
        warehouse: &Warehouse,
        target: &BacktestConfig,
        spec: &PriorSpec,
        progress: &dyn Progress,
    ) -> Result<Prior, BacktestError> {
        let mut prior = Prior {
            max_own_rows: spec.max_own_rows,
            ..Prior::default()
        };
        for source in &spec.sources {
            if *source == target.source {
                continue;
            }
            let Some(summary) = crate::protocol::source(warehouse, source)? else {
                prior
                    .skipped
                    .push((source.clone(), NOT_IN_THE_WAREHOUSE.to_owned()));
                continue;
            };
            // All of the source's history trains: the "test window" starts the day after its last
            // reading, so the cut-off of its rows is the end of its data.
            let end = summary.last_day + Days::new(1);
            let config = BacktestConfig {
                source: source.clone(),
                test_start: end,
                test_end: end,
                windows: 1,
                window_days: None,
                training_days: None,
                max_training_rows: spec.rows_per_horizon,
                validation_only: false,
                matrix: None,
                ..target.clone()
            };
            config.validate()?;
            let lots = match LotGroups::scan_lender(warehouse, &config, progress) {
                Ok((lots, _excluded)) => lots,
                Err(BacktestError::NoUsableLot { .. }) => {
                    prior.skipped.push((
                        source.clone(),
                        format!(
                            "no lot with enough readings on a {}-min grid before its last {} days",
                            target.step_minutes, target.calibration_days
                        ),
                    ));
                    continue;
                }
                Err(other) => return Err(other),
            };
            let rows = match training_set(&lots, &config, end, progress) {
                Ok(rows) => rows,
                Err(BacktestError::InvalidConfig { reason }) => {
                    prior.skipped.push((source.clone(), reason.to_owned()));
                    continue;
                }
                Err(other) => return Err(other),
            };
            let mut lent = 0;
            for (minutes, mut horizon) in rows {
                keep_at_most(&mut horizon, spec.rows_per_horizon);
                for features in &mut horizon.features {
                    features[index::LOT_CODE] = f64::NAN;
                }
                lent += horizon.targets.len();
                let all = prior.rows.entry(minutes).or_default();
                all.features.extend(horizon.features);
                all.targets.extend(horizon.targets);
            }
            prior.sources.push(PriorSource {
                source: source.clone(),
                lots: lots.lots().len(),
                rows: lent,
            });
        }
        Ok(prior)
    }

    /// Appends the prior's rows of a horizon (minutes) to a fit's own, if the fit has few enough
    /// of its own ([`PriorSpec::max_own_rows`]); returns whether it did.
    pub fn extend(&self, minutes: u32, rows: &mut HorizonRows) -> bool {
        self.offered.fetch_add(1, Ordering::Relaxed);
        if rows.targets.len() > self.max_own_rows {
            return false;
        }
        self.wanting.fetch_add(1, Ordering::Relaxed);
        let Some(lent) = self.rows.get(&minutes) else {
            return false;
        };
        rows.features.extend_from_slice(&lent.features);
        rows.targets.extend_from_slice(&lent.targets);
        self.lent.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The rows lent at a horizon (minutes).
    pub fn horizon(&self, minutes: u32) -> Option<&HorizonRows> {
        self.rows.get(&minutes)
    }

    /// Rows per horizon (minutes).
    pub fn rows_per_horizon(&self) -> BTreeMap<u32, usize> {
        self.rows
            .iter()
            .map(|(minutes, rows)| (*minutes, rows.targets.len()))
            .collect()
    }

    /// One line for a run's summary: who lent how many rows, and who did not.
    pub fn describe(&self) -> String {
        let lent: Vec<String> = self
            .sources
            .iter()
            .map(|source| {
                format!(
                    "{} ({} lots, {} rows)",
                    source.source,
                    source.lots,
                    parkcast_tables::thousands(source.rows as u64)
                )
            })
            .collect();
        let skipped: Vec<String> = self
            .skipped
            .iter()
            .map(|(source, why)| format!("{source}: {why}"))
            .collect();
        let wanting = self.wanting.load(Ordering::Relaxed);
        let mut text = if lent.is_empty() && wanting == 0 {
            "prior: none".to_owned()
        } else if lent.is_empty() {
            // A city short of history whose warehouse holds no lender: the summary is where its
            // planner learns what the configuration would have lent (README, "A prior from other
            // cities").
            format!(
                "prior: none, though {} of {} horizon fits had at most {} rows of their own and \
                 would have borrowed",
                wanting,
                self.offered.load(Ordering::Relaxed),
                parkcast_tables::thousands(self.max_own_rows as u64)
            )
        } else {
            format!(
                "prior: rows from {}; taken by {} of {} horizon fits (those with at most {} rows \
                 of their own)",
                lent.join(", "),
                self.lent.load(Ordering::Relaxed),
                self.offered.load(Ordering::Relaxed),
                parkcast_tables::thousands(self.max_own_rows as u64)
            )
        };
        if !skipped.is_empty() {
            text.push_str(&format!(" (skipped {})", skipped.join("; ")));
        }
        // Fits that would have borrowed from a real data set the warehouse lacks: say how to add
        // it (only then: a city with rows enough of its own needs no lender).
        if wanting > 0 {
            let known: Vec<String> = crate::datasets::all()
                .iter()
                .map(|data_set| data_set.writer_name())
                .collect();
            let importable: Vec<String> = self
                .skipped
                .iter()
                .filter(|(source, why)| why == NOT_IN_THE_WAREHOUSE && known.contains(source))
                .map(|(source, _)| format!("`parkcast import {source}`"))
                .collect();
            if !importable.is_empty() {
                text.push_str(&format!(
                    "; {} into this warehouse would lend rows",
                    importable.join(" and ")
                ));
            }
        }
        text
    }
}

/// Thins a horizon's rows evenly to at most `cap` (the origin sample keeps about that many; the
/// pairing rule can leave a few more where a source's days are short).
fn keep_at_most(rows: &mut HorizonRows, cap: usize) {
    let count = rows.targets.len();
    if count <= cap {
        return;
    }
    let kept: Vec<usize> = (0..cap).map(|k| k * count / cap).collect();
    rows.features = kept.iter().map(|&i| rows.features[i]).collect();
    rows.targets = kept.iter().map(|&i| rows.targets[i]).collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(count: usize) -> HorizonRows {
        HorizonRows {
            features: (0..count)
                .map(|i| {
                    let mut features = [0.0; parkcast_features::vector::FEATURE_COUNT];
                    features[index::RATE_ORIGIN] = i as f64;
                    features
                })
                .collect(),
            targets: (0..count).map(|i| i as f64).collect(),
        }
    }

    #[test]
    fn thinning_keeps_the_cap_spread_over_the_whole_history() {
        let mut horizon = rows(10);
        keep_at_most(&mut horizon, 4);
        assert_eq!(horizon.targets, vec![0.0, 2.0, 5.0, 7.0]);
        assert_eq!(horizon.features[3][index::RATE_ORIGIN], 7.0);
        let mut small = rows(3);
        keep_at_most(&mut small, 4);
        assert_eq!(small.targets.len(), 3);
    }

    #[test]
    fn a_prior_extends_only_its_own_horizons_and_describes_what_was_skipped() {
        let prior = Prior {
            sources: vec![PriorSource {
                source: "malaga".to_owned(),
                lots: 10,
                rows: 2,
            }],
            skipped: vec![("melbourne".to_owned(), "not in the warehouse".to_owned())],
            max_own_rows: 3,
            rows: BTreeMap::from([(30, rows(2))]),
            ..Prior::default()
        };
        let mut own = rows(3);
        assert!(prior.extend(30, &mut own));
        assert_eq!(own.targets, vec![0.0, 1.0, 2.0, 0.0, 1.0]);
        let mut other = rows(3);
        assert!(!prior.extend(60, &mut other), "no rows lent at 60 minutes");
        assert_eq!(other.targets.len(), 3);
        let mut plenty = rows(4);
        assert!(!prior.extend(30, &mut plenty), "4 rows of its own > 3");
        assert_eq!(plenty.targets.len(), 4);
        assert_eq!(
            prior.describe(),
            "prior: rows from malaga (10 lots, 2 rows); taken by 1 of 3 horizon fits (those with \
             at most 3 rows of their own) (skipped melbourne: not in the warehouse); `parkcast \
             import melbourne` into this warehouse would lend rows"
        );
        assert_eq!(Prior::default().describe(), "prior: none");
    }

    #[test]
    fn a_city_short_of_rows_without_lenders_is_told_how_to_get_them() {
        let prior = Prior {
            skipped: vec![
                ("malaga".to_owned(), NOT_IN_THE_WAREHOUSE.to_owned()),
                ("csv-town".to_owned(), NOT_IN_THE_WAREHOUSE.to_owned()),
            ],
            max_own_rows: 3,
            ..Prior::default()
        };
        assert!(!prior.extend(30, &mut rows(2)), "nothing to lend");
        assert!(!prior.extend(60, &mut rows(4)), "4 rows of its own > 3");
        assert_eq!(
            prior.describe(),
            "prior: none, though 1 of 2 horizon fits had at most 3 rows of their own and would \
             have borrowed (skipped malaga: not in the warehouse; csv-town: not in the \
             warehouse); `parkcast import malaga` into this warehouse would lend rows"
        );
        // With rows enough of its own no fit wants a lender: no advice.
        let plenty = Prior {
            skipped: prior.skipped.clone(),
            max_own_rows: 3,
            ..Prior::default()
        };
        assert!(!plenty.extend(30, &mut rows(4)));
        assert_eq!(
            plenty.describe(),
            "prior: none (skipped malaga: not in the warehouse; csv-town: not in the warehouse)"
        );
    }
}
