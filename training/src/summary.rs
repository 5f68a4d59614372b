//! The terminal summaries of the offline side: a backtest's metrics, its comparison with
//! persistence + profile change (and the 25% aim), its rolling windows, day types and lots, and a
//! tuning search's trials and ablation, in the house style of [`parkcast_tables`]. The commands
//! print them; `report.md` carries the same figures as Markdown.

use std::collections::HashMap;

use parkcast_features::calendar::DayType;
use parkcast_tables::{Cell, CellAlignment, Table, new_table, percent, right, thousands};

use crate::backtest::{BacktestConfig, BacktestReport, HorizonMetrics, RunStats};
use crate::frozen::LoadedConfig;
use crate::registry::{ListEntry, Manifest};
use crate::tune::{TrialResult, describe_params, source_cell};

/// The end of a long run: its scale (lots, groups), its peak memory when known, and the time per
/// phase with its share, so a planner sees what a larger city would cost.
pub fn run(stats: &RunStats, lots: usize, peak_rss_bytes: Option<u64>) -> String {
    let mut lines = vec![format!(
        "run: {lots} lots read in {} group(s) of up to {}{}{}",
        stats.groups,
        stats.group_lots,
        match stats.fits {
            0 => String::new(),
            1 => "; 1 fit".to_owned(),
            fits => format!("; {fits} fits"),
        },
        peak_rss_bytes.map_or_else(String::new, |bytes| format!(
            "; peak memory {}",
            parkcast_tables::bytes(bytes)
        )),
    )];
    if let Some(prior) = &stats.prior {
        lines.push(prior.clone());
    }
    let total: f64 = stats.phases.iter().map(|(_, seconds)| seconds).sum();
    if total > 0.0 {
        let mut table = new_table(&["phase", "seconds", "share"]);
        for (phase, seconds) in &stats.phases {
            table.add_row(vec![
                Cell::new(phase),
                right(format!("{seconds:.1}")),
                right(percent(Some(seconds / total))),
            ]);
        }
        table.add_row(vec![
            Cell::new("total"),
            right(format!("{total:.1}")),
            right(""),
        ]);
        lines.push(table.to_string());
    }
    lines.join("\n")
}

/// Which configuration a run uses, and what the flags overrode: one line, then one per knob.
pub fn configuration(frozen: &LoadedConfig, overrides: &[String]) -> String {
    let mut text = format!(
        "configuration: {} ({}, sha256 {})",
        frozen.config.name,
        frozen.origin,
        &frozen.sha256()[..12]
    );
    for knob in overrides {
        text.push_str(&format!("\n  overridden: {knob}"));
    }
    text
}

/// The header lines and the metrics tables of a backtest, as `parkcast backtest` and `train` print
/// them.
pub fn backtest(outcome: &BacktestReport, config: &BacktestConfig) -> String {
    let mut lines: Vec<String> = Vec::new();
    let first_start = outcome
        .windows
        .first()
        .map_or(config.test_start, |window| window.0);
    let origins = if config.same_day {
        ", same-day origins"
    } else {
        ""
    };
    lines.push(format!(
        "source {}: {} lots, {} window(s) from {first_start} to {}, {}-minute grid{origins}",
        config.source,
        outcome.lots.len(),
        outcome.windows.len(),
        config.test_end,
        config.step_minutes,
    ));
    if !outcome.excluded_lots.is_empty() {
        lines.push(format!(
            "left out for too little training data: {}",
            outcome.excluded_lots.join(", ")
        ));
    }
    if !outcome.training_rows.is_empty() {
        let rows: Vec<String> = outcome
            .training_rows
            .iter()
            .map(|(minutes, rows)| format!("{minutes} min: {}", thousands(*rows as u64)))
            .collect();
        lines.push(format!("training rows (last window): {}", rows.join(", ")));
    }
    if !outcome.validation_mae.is_empty() {
        let mut models: Vec<String> = Vec::new();
        for model in &outcome.models {
            let maes: Vec<String> = outcome
                .validation_mae
                .iter()
                .filter(|(name, _, _)| name == model)
                .map(|(_, _, mae)| format!("{mae:.4}"))
                .collect();
            models.push(format!("{model} {}", maes.join("/")));
        }
        lines.push(format!(
            "validation MAE (the {} calibration days before each window, by horizon): {}",
            config.calibration_days,
            models.join("; ")
        ));
    }
    if config.validation_only {
        lines.push(
            "validation days only: no test window was fitted or read (drop --validation-only for the test figures)"
                .to_owned(),
        );
        return lines.join("\n");
    }
    lines.push(metrics_table(outcome).to_string());
    lines.push(versus_table(outcome, config).to_string());
    if outcome.windows.len() > 1 {
        lines.push(windows_table(outcome, config).to_string());
    }
    if !outcome.per_day_type.is_empty() {
        lines.push(day_type_table(outcome).to_string());
    }
    lines.join("\n")
}

/// An interval width with three decimals, `n/a` without intervals.
fn width(width_80: Option<f64>) -> String {
    width_80.map_or_else(|| "n/a".to_owned(), |width| format!("{width:.3}"))
}

/// The model the summary's extra tables follow: the last learned one (the baselines come first).
fn followed_model(outcome: &BacktestReport) -> &str {
    outcome
        .models
        .last()
        .map_or(VERSUS_BASELINE, String::as_str)
}

const VERSUS_BASELINE: &str = "persistence + profile change";

/// A table with a first column `first` and one column per horizon of `config`.
fn by_horizon_table(first: &str, config: &BacktestConfig) -> Table {
    let mut header = vec![first.to_owned()];
    header.extend(
        config
            .horizons
            .iter()
            .map(|h| format!("{} min", h * config.step_minutes)),
    );
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    new_table(&header_refs)
}

/// MAE of the followed model and the baseline per rolling window and horizon, with the window
/// dates and the share of its actuals inside the model's 80% / 95% intervals: one good week must
/// not hide a bad one, nor a window whose intervals are off hide behind the others' average.
fn windows_table(outcome: &BacktestReport, config: &BacktestConfig) -> Table {
    let model = followed_model(outcome);
    let mut table = by_horizon_table(&format!("window ({model} vs {VERSUS_BASELINE})"), config);
    let find = |window: usize, name: &str, horizon: u32| {
        outcome
            .per_window
            .iter()
            .find(|(index, metrics)| {
                *index == window && metrics.model == name && metrics.horizon_steps == horizon
            })
            .map(|(_, metrics)| metrics)
    };
    for (window, (start, end)) in outcome.windows.iter().enumerate() {
        let mut row = vec![Cell::new(format!("{start} .. {end}"))];
        for &horizon in &config.horizons {
            let text = match (
                find(window, model, horizon),
                find(window, VERSUS_BASELINE, horizon),
            ) {
                (Some(ours), Some(theirs)) if theirs.mae_rate > 0.0 => format!(
                    "{:.4} vs {:.4} ({:+.1}%){}",
                    ours.mae_rate,
                    theirs.mae_rate,
                    100.0 * (ours.mae_rate / theirs.mae_rate - 1.0),
                    match (ours.coverage_80, ours.coverage_95) {
                        (Some(eighty), Some(ninety_five)) => format!(
                            ", covers {:.1} / {:.1}%",
                            100.0 * eighty,
                            100.0 * ninety_five
                        ),
                        _ => String::new(),
                    }
                ),
                _ => "n/a".to_owned(),
            };
            row.push(Cell::new(text).set_alignment(CellAlignment::Right));
        }
        table.add_row(row);
    }
    table
}

/// Coverage of the followed model's 80% and 95% intervals and its MAE per horizon and day type of
/// the target: where exchangeability breaks (Saturdays, Sundays and holidays) pooled intervals
/// miss, and this is where it shows.
fn day_type_table(outcome: &BacktestReport) -> Table {
    let model = followed_model(outcome);
    let mut table = new_table(&[
        &format!("{model}: day type"),
        "horizon",
        "pairs",
        "MAE rate",
        "80% covers",
        "95% covers",
        "80% width",
    ]);
    let mut rows: Vec<_> = outcome
        .per_day_type
        .iter()
        .filter(|(_, metrics)| metrics.model == model)
        .collect();
    rows.sort_by_key(|(day_type, metrics)| (metrics.horizon_steps, *day_type));
    for (day_type, metrics) in rows {
        table.add_row(vec![
            Cell::new(day_type_name(*day_type)),
            right(format!("{} min", metrics.horizon_minutes)),
            right(thousands(metrics.pairs)),
            right(format!("{:.4}", metrics.mae_rate)),
            right(percent(metrics.coverage_80)),
            right(percent(metrics.coverage_95)),
            right(width(metrics.width_80)),
        ]);
    }
    table
}

fn day_type_name(day_type: DayType) -> &'static str {
    match day_type {
        DayType::Weekday => "weekday",
        DayType::Saturday => "Saturday",
        DayType::SundayOrHoliday => "Sunday or holiday",
    }
}

fn metrics_table(outcome: &BacktestReport) -> Table {
    let mut table = new_table(&[
        "model",
        "horizon",
        "MAE rate",
        "RMSE rate",
        "MAE slots",
        "RMSE slots",
        "80% covers",
        "95% covers",
        "80% width",
        "pairs",
        "fallbacks",
    ]);
    let mut rows: Vec<_> = outcome.metrics.iter().collect();
    rows.sort_by_key(|metrics| metrics.horizon_steps);
    for metrics in rows {
        table.add_row(vec![
            Cell::new(&metrics.model),
            right(format!("{} min", metrics.horizon_minutes)),
            right(format!("{:.4}", metrics.mae_rate)),
            right(format!("{:.4}", metrics.rmse_rate)),
            right(format!("{:.2}", metrics.mae_slots)),
            right(format!("{:.2}", metrics.rmse_slots)),
            right(percent(metrics.coverage_80)),
            right(percent(metrics.coverage_95)),
            right(width(metrics.width_80)),
            right(thousands(metrics.pairs)),
            right(thousands(metrics.fallbacks)),
        ]);
    }
    table
}

/// Each model's MAE change against persistence + profile change, per horizon: the promotion view.
fn versus_table(outcome: &BacktestReport, config: &BacktestConfig) -> Table {
    const BASELINE: &str = VERSUS_BASELINE;
    let mut table = by_horizon_table("MAE rate vs persistence + profile change", config);
    for model in &outcome.models {
        let mut row = vec![Cell::new(model)];
        for &horizon in &config.horizons {
            let text = match (outcome.get(model, horizon), outcome.get(BASELINE, horizon)) {
                (Some(model), Some(baseline)) if baseline.mae_rate > 0.0 => format!(
                    "{:.4} ({:+.1}%)",
                    model.mae_rate,
                    100.0 * (model.mae_rate / baseline.mae_rate - 1.0)
                ),
                _ => "n/a".to_owned(),
            };
            row.push(Cell::new(text).set_alignment(CellAlignment::Right));
        }
        table.add_row(row);
    }
    // The product's aim (the accuracy issue): the learned model 25% below the baseline at every
    // horizon. Where it falls short, the table says so rather than leaving it to arithmetic.
    let model = followed_model(outcome);
    if model != BASELINE {
        let mut row = vec![Cell::new(format!(
            "{model}: aim {:.0}% at every horizon",
            -100.0 * AIM_GAIN
        ))];
        for &horizon in &config.horizons {
            let text = match (outcome.get(model, horizon), outcome.get(BASELINE, horizon)) {
                (Some(ours), Some(baseline)) if baseline.mae_rate > 0.0 => {
                    let change = ours.mae_rate / baseline.mae_rate - 1.0;
                    if change <= -AIM_GAIN {
                        "met".to_owned()
                    } else {
                        format!("short by {:.1} pts", 100.0 * (change + AIM_GAIN))
                    }
                }
                _ => "n/a".to_owned(),
            };
            row.push(Cell::new(text).set_alignment(CellAlignment::Right));
        }
        table.add_row(row);
    }
    table
}

/// The gain over persistence + profile change the learned models aim at, at every horizon.
const AIM_GAIN: f64 = 0.25;

/// MAE per lot and horizon for the last model and persistence + profile change, worst lots first.
pub fn per_lot_table(outcome: &BacktestReport, config: &BacktestConfig) -> Table {
    const MAIN: &str = VERSUS_BASELINE;
    let best = outcome.models.last().map_or(MAIN, String::as_str);
    let mut header = vec!["lot".to_owned()];
    for horizon in &config.horizons {
        let minutes = horizon * config.step_minutes;
        header.push(format!("{best} {minutes} min"));
        if best != MAIN {
            header.push(format!("{MAIN} {minutes} min"));
        }
    }
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = new_table(&header_refs);
    // Index once: the table looks every (lot, model, horizon) up, and the sort does so repeatedly.
    let by_key: HashMap<(&str, &str, u32), &HorizonMetrics> = outcome
        .per_lot
        .iter()
        .map(|entry| {
            (
                (
                    entry.lot_id.as_str(),
                    entry.metrics.model.as_str(),
                    entry.metrics.horizon_steps,
                ),
                &entry.metrics,
            )
        })
        .collect();
    let metrics =
        |lot: &str, model: &str, horizon: u32| by_key.get(&(lot, model, horizon)).copied();
    let mae = |lot: &str, model: &str, horizon: u32| {
        metrics(lot, model, horizon).map(|metrics| metrics.mae_rate)
    };
    let last_horizon = *config
        .horizons
        .last()
        .expect("validated horizons are non-empty");
    let mut lots = outcome.lots.clone();
    lots.sort_by(|left, right| {
        mae(right, best, last_horizon)
            .unwrap_or(0.0)
            .total_cmp(&mae(left, best, last_horizon).unwrap_or(0.0))
    });
    let models: Vec<&str> = if best == MAIN {
        vec![MAIN]
    } else {
        vec![best, MAIN]
    };
    for lot in &lots {
        let mut row = vec![Cell::new(lot)];
        for &horizon in &config.horizons {
            for model in &models {
                let text = metrics(lot, model, horizon).map_or_else(
                    || "n/a".to_owned(),
                    |metrics| match (metrics.coverage_80, metrics.coverage_95) {
                        (Some(eighty), Some(ninety_five)) => format!(
                            "{:.4} ({:.0} / {:.0}%)",
                            metrics.mae_rate,
                            100.0 * eighty,
                            100.0 * ninety_five
                        ),
                        _ => format!("{:.4}", metrics.mae_rate),
                    },
                );
                row.push(Cell::new(text).set_alignment(CellAlignment::Right));
            }
        }
        table.add_row(row);
    }
    table
}

/// Every trial of a search: its parameters, per-source validation MAE and score.
pub fn trials_table(trials: &[TrialResult]) -> Table {
    let mut header = vec!["trial".to_owned(), "parameters".to_owned()];
    if let Some(first) = trials.first() {
        for (source, scores) in &first.scores {
            header.push(format!(
                "{source} validation MAE {}",
                scores
                    .iter()
                    .map(|score| format!("{} min", score.horizon_minutes))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ));
        }
    }
    header.push("score".to_owned());
    header.push("seconds".to_owned());
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = new_table(&header_refs);
    for trial in trials {
        let mut row = vec![
            Cell::new(&trial.label),
            Cell::new(describe_params(&trial.params)),
        ];
        for (_, scores) in &trial.scores {
            row.push(right(source_cell(scores)));
        }
        row.push(right(format!("{:+.2}%", 100.0 * trial.score)));
        row.push(right(format!("{:.1}", trial.seconds)));
        table.add_row(row);
    }
    table
}

/// What each ablation variant moved against the chosen trial.
pub fn ablation_table(base: &TrialResult, variants: &[TrialResult]) -> Table {
    let mut header = vec!["ablation (validation days only)".to_owned()];
    for (source, _) in &base.scores {
        header.push(source.clone());
    }
    header.push("score".to_owned());
    header.push("vs chosen".to_owned());
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = new_table(&header_refs);
    let mut base_row = vec![Cell::new("as chosen")];
    for (_, scores) in &base.scores {
        base_row.push(right(source_cell(scores)));
    }
    base_row.push(right(format!("{:+.2}%", 100.0 * base.score)));
    base_row.push(right(String::new()));
    table.add_row(base_row);
    for variant in variants {
        let mut row = vec![Cell::new(&variant.label)];
        for (_, scores) in &variant.scores {
            row.push(right(source_cell(scores)));
        }
        row.push(right(format!("{:+.2}%", 100.0 * variant.score)));
        row.push(right(format!(
            "{:+.2} points",
            100.0 * (variant.score - base.score)
        )));
        table.add_row(row);
    }
    table
}

/// The registry's versions, newest last per line; a version whose manifest does not read shows as
/// broken with the reason, so a model on disk is never silently hidden.
pub fn registry_table(entries: &[ListEntry]) -> Table {
    let mut table = new_table(&[
        "name", "version", "kind", "source", "trained", "data", "horizons", "status",
    ]);
    for entry in entries {
        let row = match &entry.manifest {
            Ok(manifest) => {
                let card = &manifest.card;
                let horizons: Vec<String> = card
                    .horizons_minutes
                    .iter()
                    .map(|minutes| format!("{minutes}m"))
                    .collect();
                vec![
                    Cell::new(&card.name),
                    right(manifest.version),
                    Cell::new(&card.model_kind),
                    Cell::new(&card.source),
                    Cell::new(manifest.created_at.format("%Y-%m-%d %H:%M")),
                    Cell::new(format!("{} .. {}", card.training_start, card.training_end)),
                    Cell::new(horizons.join(",")),
                    Cell::new("ok"),
                ]
            }
            Err(error) => {
                let mut row = vec![Cell::new(&entry.name), right(entry.version)];
                row.extend((0..5).map(|_| Cell::new("")));
                row.push(Cell::new(format!("broken: {error}")));
                row
            }
        };
        table.add_row(row);
    }
    table
}

/// One version's manifest: what it learned from, its grid and features, its file (`verified`: the
/// size and checksum were checked), its hyperparameters and its backtest metrics.
pub fn manifest_text(manifest: &Manifest, verified: bool) -> String {
    let card = &manifest.card;
    let mut table = new_table(&[
        "model",
        "horizon",
        "MAE rate",
        "RMSE rate",
        "MAE slots",
        "80% covers",
        "pairs",
    ]);
    for metric in &card.metrics {
        table.add_row(vec![
            Cell::new(&metric.model),
            right(format!("{} min", metric.horizon_minutes)),
            right(format!("{:.4}", metric.mae_rate)),
            right(format!("{:.4}", metric.rmse_rate)),
            right(format!("{:.2}", metric.mae_slots)),
            right(percent(metric.coverage_80)),
            right(thousands(metric.pairs)),
        ]);
    }
    format!(
        "{} v{} — {} model on {} ({} .. {}), created {}\n\
         grid {} min, horizons {:?} min, {} features, schema {}\n\
         model file {} ({} bytes, sha256 {}){}\n\
         hyperparameters: {}\n{table}",
        card.name,
        manifest.version,
        card.model_kind,
        card.source,
        card.training_start,
        card.training_end,
        manifest.created_at.format("%Y-%m-%d %H:%M UTC"),
        card.step_minutes,
        card.horizons_minutes,
        card.feature_names.len(),
        card.feature_schema_hash
            .get(..16)
            .unwrap_or(&card.feature_schema_hash),
        manifest.model_file,
        manifest.model_bytes,
        manifest.model_sha256,
        if verified { " — verified" } else { "" },
        serde_json::to_string(&card.hyperparameters).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::NaiveDate;

    use super::*;
    use crate::backtest::{HorizonMetrics, LotMetrics};

    fn metrics(model: &str, horizon_steps: u32, mae_rate: f64) -> HorizonMetrics {
        HorizonMetrics {
            model: model.to_owned(),
            horizon_steps,
            horizon_minutes: horizon_steps * 30,
            pairs: 12_345,
            fallbacks: 0,
            mae_rate,
            rmse_rate: mae_rate,
            mae_slots: mae_rate,
            rmse_slots: mae_rate,
            coverage_80: Some(0.8012),
            coverage_95: None,
            width_80: None,
        }
    }

    /// Trees 30% below the baseline at 30 min, 10% at 1 h; two lots.
    fn report() -> BacktestReport {
        let day = NaiveDate::from_ymd_opt(2016, 12, 13).expect("valid date");
        BacktestReport {
            models: vec![VERSUS_BASELINE.to_owned(), "gbm".to_owned()],
            lots: vec!["quiet".to_owned(), "busy".to_owned()],
            excluded_lots: vec!["empty".to_owned()],
            windows: vec![(day, day)],
            metrics: vec![
                metrics(VERSUS_BASELINE, 1, 0.02),
                metrics("gbm", 1, 0.014),
                metrics(VERSUS_BASELINE, 2, 0.03),
                metrics("gbm", 2, 0.027),
            ],
            per_lot: [("quiet", 0.01), ("busy", 0.05)]
                .into_iter()
                .map(|(lot, mae)| LotMetrics {
                    lot_id: lot.to_owned(),
                    metrics: metrics("gbm", 2, mae),
                })
                .collect(),
            per_lot_hour: Vec::new(),
            per_day_type: Vec::new(),
            per_window: Vec::new(),
            samples: Vec::new(),
            training_rows: BTreeMap::from([(30, 1_234_567)]),
            validation_mae: vec![("gbm".to_owned(), 1, 0.015), ("gbm".to_owned(), 2, 0.028)],
            test_residuals: BTreeMap::new(),
            run: crate::backtest::RunStats::default(),
        }
    }

    fn config() -> BacktestConfig {
        BacktestConfig {
            horizons: vec![1, 2],
            test_end: NaiveDate::from_ymd_opt(2016, 12, 13).expect("valid date"),
            ..BacktestConfig::birmingham()
        }
    }

    #[test]
    fn a_backtest_says_what_ran_and_where_the_aim_is_met() {
        let text = backtest(&report(), &config());
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                "source birmingham: 2 lots, 1 window(s) from 2016-12-13 to 2016-12-13, 30-minute grid, same-day origins"
            )
        );
        assert_eq!(
            lines.next(),
            Some("left out for too little training data: empty")
        );
        assert_eq!(
            lines.next(),
            Some("training rows (last window): 30 min: 1,234,567")
        );
        assert_eq!(
            lines.next(),
            Some(
                "validation MAE (the 14 calibration days before each window, by horizon): persistence + profile change ; gbm 0.0150/0.0280"
            )
        );
        assert!(text.contains("0.0140 (-30.0%)"), "{text}");
        assert!(text.contains("gbm: aim -25% at every horizon"), "{text}");
        assert!(text.contains(" met "), "{text}");
        assert!(text.contains("short by 15.0 pts"), "{text}");
        assert!(text.contains("80.1%") && text.contains("12,345"), "{text}");
        // One window: no windows table; no day types: no day-type table.
        assert!(!text.contains("window (gbm vs"), "{text}");
        assert!(!text.contains("day type"), "{text}");
    }

    #[test]
    fn a_validation_only_backtest_has_no_test_tables() {
        let config = BacktestConfig {
            validation_only: true,
            ..config()
        };
        let text = backtest(&report(), &config);
        assert!(
            text.ends_with(
                "validation days only: no test window was fitted or read (drop --validation-only for the test figures)"
            ),
            "{text}"
        );
        assert!(!text.contains("MAE rate vs"), "{text}");
    }

    #[test]
    fn each_window_shows_its_dates_its_gain_and_its_coverage() {
        let first = NaiveDate::from_ymd_opt(2016, 12, 6).expect("valid date");
        let second = NaiveDate::from_ymd_opt(2016, 12, 13).expect("valid date");
        let with_covers = |model: &str, horizon: u32, mae: f64, covers: (f64, f64)| {
            let mut metrics = metrics(model, horizon, mae);
            (metrics.coverage_80, metrics.coverage_95) = (Some(covers.0), Some(covers.1));
            metrics
        };
        let report = BacktestReport {
            windows: vec![(first, first), (second, second)],
            per_window: vec![
                (0, with_covers(VERSUS_BASELINE, 1, 0.02, (0.8, 0.95))),
                (0, with_covers("gbm", 1, 0.018, (0.837, 0.962))),
                (1, with_covers(VERSUS_BASELINE, 1, 0.02, (0.8, 0.95))),
                (1, metrics("gbm", 1, 0.015)),
            ],
            ..report()
        };
        let table = windows_table(&report, &config()).to_string();
        let row = |day: NaiveDate| {
            table
                .lines()
                .find(|line| line.contains(&format!("{day} .. {day}")))
                .unwrap_or_else(|| panic!("no row for {day}: {table}"))
                .to_owned()
        };
        assert!(
            row(first).contains("0.0180 vs 0.0200 (-10.0%), covers 83.7 / 96.2%"),
            "{table}"
        );
        // A window without both intervals' coverage shows its MAE alone.
        assert!(
            row(second).contains("0.0150 vs 0.0200 (-25.0%) "),
            "{table}"
        );
        assert!(!row(second).contains("covers"), "{table}");
    }

    #[test]
    fn lots_are_listed_worst_first() {
        let table = per_lot_table(&report(), &config()).to_string();
        let busy = table.find("busy").expect("busy listed");
        let quiet = table.find("quiet").expect("quiet listed");
        assert!(busy < quiet, "{table}");
        // Without both intervals' covers a lot's cell is its MAE alone; with them, its covers too.
        assert!(table.contains(" 0.0500 "), "{table}");
        let mut covered = report();
        covered.per_lot[0].metrics.coverage_95 = Some(0.9449);
        let table = per_lot_table(&covered, &config()).to_string();
        assert!(table.contains(" 0.0100 (80 / 94%) "), "{table}");
        assert!(table.contains("gbm 60 min"), "{table}");
        assert!(
            table.contains("persistence + profile change 30 min"),
            "{table}"
        );
    }

    #[test]
    fn the_configuration_line_lists_each_override() {
        let embedded = LoadedConfig::embedded();
        let text = configuration(&embedded, &["gbm.iterations = 80".to_owned()]);
        assert!(
            text.ends_with("\n  overridden: gbm.iterations = 80"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2);
    }
}
