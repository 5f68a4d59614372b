//! `parkcast train`: backtest every forecaster, promote the best learned model, refit it on all the
//! data, and publish it with its report to the model registry.
//!
//! Promotion is by the backtest's validation days only (the calibration days before each test window,
//! forecast by models fitted before them): the learned model with the lowest MAE of the rate averaged
//! over the horizons. The test windows report how the choice fares; they never make it. The final refit uses every day up to the last one with data; its intervals are
//! calibrated on the promoted model's residuals in the last test window, where it had been fitted
//! before the data it forecast (so they are out of sample, as split conformal requires).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Days, Utc};
use parkcast_features::calendar::HolidayCalendar;
use parkcast_features::conformal::{DayTypeResiduals, lot_scales};
use parkcast_features::vector::{FEATURE_NAMES, LotProfile};
use parkcast_warehouse::Warehouse;

use crate::backtest::{
    BacktestConfig, BacktestError, BacktestReport, ForecastSample, GBM_NAME, LINEAR_NAME,
    ModelChoice, Phases, Run, backtest_lots, fit_before, prepare,
};
use crate::frozen::ConfigRecord;
use crate::groups::{LotGroups, LotSummary};
use crate::plot::{Band, BarChart, Line, LineChart, bar_chart_svg, line_chart_svg};
use crate::progress::Progress;
use parkcast_inference::artifact::{BundleLot, LoadedModel, MODEL_FILE_FORMAT, ModelBundle};
use parkcast_inference::model::{ModelError, SavedModel};
use parkcast_inference::registry::{
    ManifestMetric, ModelCard, NewVersion, Published, Registry, RegistryError,
};
use parkcast_warehouse::lots::LotInputs;

/// Errors of training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The backtest failed.
    #[error(transparent)]
    Backtest(#[from] BacktestError),
    /// A model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Publishing failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The best learned model loses to "persistence + profile change" at some horizon, so
    /// publishing it would serve worse forecasts than a spreadsheet rule.
    #[error(
        "not published: {promoted} does not beat persistence + profile change at every horizon ({}); publish it anyway with --force (TrainConfig::publish_losing)",
        losing.iter().map(|(minutes, model, baseline)| format!("{minutes} min: MAE {model:.4} vs {baseline:.4}")).collect::<Vec<_>>().join("; ")
    )]
    LosesToBaseline {
        /// The learned model with the best validation score.
        promoted: String,
        /// Horizons it loses at on the test window(s): (minutes, its MAE of rate, the baseline's).
        losing: Vec<(u32, f64, f64)>,
    },
    /// Nothing to promote.
    #[error("no learned model was chosen: enable the linear model or the trees")]
    NoLearnedModel,
}

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The backtest protocol (source, grid, horizons, windows).
    pub backtest: BacktestConfig,
    /// The learned models to compare.
    pub models: ModelChoice,
    /// Registry name of the model line (default: the source).
    pub name: String,
    /// Publish the promoted model even when it loses to "persistence + profile change" at some
    /// horizon (otherwise training fails with [`TrainError::LosesToBaseline`]).
    pub publish_losing: bool,
    /// The frozen configuration the models' hyperparameters came from, recorded in the manifest
    /// (`hyperparameters.frozen_config`), beside the model as `config.toml` and in `report.md` with
    /// its selection log. `None`: the caller set the hyperparameters itself, and the report says so.
    pub frozen: Option<ConfigRecord>,
}

/// The outcome of a training run.
pub struct TrainOutcome {
    /// The backtest behind the promotion.
    pub backtest: BacktestReport,
    /// The promoted model's report name.
    pub promoted: String,
    /// Whether it beat "persistence + profile change" at every horizon.
    pub beats_baseline: bool,
    /// The published version.
    pub published: Published,
    /// The model file's contents, as published.
    pub bundle: ModelBundle,
}

/// Backtests, promotes, refits and publishes.
pub fn train(
    warehouse: &Warehouse,
    registry: &Registry,
    config: &TrainConfig,
    progress: &dyn Progress,
) -> Result<TrainOutcome, TrainError> {
    if config.models.linear.is_none() && config.models.gbm.is_none() {
        return Err(TrainError::NoLearnedModel);
    }
    if config.backtest.validation_only {
        return Err(TrainError::Backtest(BacktestError::InvalidConfig {
            reason: "training calibrates its intervals on the last test window: validation_only is for backtest and tune",
        }));
    }
    let phases = Phases::default();
    let (lots, excluded) = phases.time("read lots", || {
        prepare(warehouse, &config.backtest, progress)
    })?;
    let models = phases.time("read lots", || {
        config
            .models
            .reading_prior(warehouse, &config.backtest, progress)
    })?;
    let mut report = backtest_lots(
        &lots,
        excluded,
        &config.backtest,
        &models,
        progress,
        &phases,
    )?;

    // Promote the learned model with the lowest mean MAE over the horizons on the validation days
    // (the calibration days before each test window), never on the test windows themselves.
    let mean_mae = |model: &str| {
        let maes: Vec<f64> = report
            .validation_mae
            .iter()
            .filter(|(name, _, _)| name == model)
            .map(|(_, _, mae)| *mae)
            .collect();
        maes.iter().sum::<f64>() / maes.len().max(1) as f64
    };
    let candidates: Vec<&str> = [
        config.models.linear.as_ref().map(|_| LINEAR_NAME),
        config.models.gbm.as_ref().map(|_| GBM_NAME),
    ]
    .into_iter()
    .flatten()
    .collect();
    let promoted = candidates
        .iter()
        .copied()
        .min_by(|a, b| mean_mae(a).total_cmp(&mean_mae(b)))
        .ok_or(TrainError::NoLearnedModel)?;
    let losing = report.losing_horizons(
        promoted,
        "persistence + profile change",
        &config.backtest.horizons,
    );
    let beats_baseline = losing.is_empty();
    if !beats_baseline && !config.publish_losing {
        return Err(TrainError::LosesToBaseline {
            promoted: promoted.to_owned(),
            losing,
        });
    }
    let promoted_choice = ModelChoice {
        linear: (promoted == LINEAR_NAME)
            .then(|| models.linear.clone())
            .flatten(),
        gbm: (promoted == GBM_NAME).then(|| models.gbm.clone()).flatten(),
        ..models.clone()
    };

    // Refit on everything up to the last day with data.
    let cut = refit_cut(&lots, &config.backtest);
    let last_day = cut - Days::new(1);
    let run = Run {
        progress,
        phases: &phases,
    };
    let fitted = fit_before(
        &lots,
        &config.backtest,
        &promoted_choice,
        cut,
        &run.labelled("refit on all data"),
    )?;
    let model = match (fitted.linear, fitted.gbm) {
        (Some(linear), _) if promoted == LINEAR_NAME => SavedModel::Linear(linear),
        (_, Some(gbm)) => SavedModel::Gbm(gbm),
        _ => return Err(TrainError::NoLearnedModel),
    };

    let promoted_index = report
        .models
        .iter()
        .position(|name| name == promoted)
        .unwrap_or_default();
    // Intervals are calibrated as the backtest calibrated them: per day type of the target where
    // the last window has enough of that day's residuals, pooled otherwise, each residual in units
    // of its lot's scale (`conformal::lot_scales`), which the file keeps per lot.
    let mut lot_interval_scales: BTreeMap<String, BTreeMap<u32, f64>> = BTreeMap::new();
    let fixed: BTreeMap<u32, DayTypeResiduals> = report
        .test_residuals
        .iter()
        .filter(|((model_index, _), _)| *model_index == promoted_index)
        .filter_map(|((_, horizon), residuals)| {
            let minutes = horizon * config.backtest.step_minutes;
            let scales = if config.backtest.lot_scale {
                lot_scales(residuals.iter().map(|test| (test.lot, test.residual)))
            } else {
                BTreeMap::new()
            };
            for (&lot, &scale) in &scales {
                if let Some(lot_id) = report.lots.get(lot) {
                    lot_interval_scales
                        .entry(lot_id.clone())
                        .or_default()
                        .insert(minutes, scale);
                }
            }
            let normalised = residuals.iter().map(|test| {
                let scale = scales.get(&test.lot).copied().unwrap_or(1.0);
                (test.residual / scale, test.day_type)
            });
            DayTypeResiduals::fit(normalised, config.backtest.calibration)
                .map(|calibration| (minutes, calibration))
        })
        .collect();
    let calibrations = fixed
        .iter()
        .map(|(&minutes, calibration)| (minutes, calibration.pooled.clone()))
        .collect();
    let day_type_calibrations = fixed
        .into_iter()
        .filter(|(_, calibration)| !calibration.by_type.is_empty())
        .map(|(minutes, calibration)| (minutes, calibration.by_type))
        .collect();
    let params = config.backtest.feature_params();
    progress.stage(
        &format!(
            "model file: each lot's profile ({} groups)",
            lots.group_count()
        ),
        Some(lots.group_count() as u64),
    );
    let groups = phases.time("model file", || {
        lots.map(progress, |group| {
            Ok(group
                .lots
                .iter()
                .map(|lot| {
                    let cut_ms = parkcast_localtime::day_start_ms(lot.series.timezone(), cut);
                    let profile = LotProfile::fit(&lot.series, cut_ms);
                    // The profile holds the values before the cut-off, which falls at the end of
                    // the local day the data ends in: a server reads an instant after the last
                    // value as new (not left out of the profile, since it never was in it), also
                    // in the rest of that day.
                    let fitted_until_ms =
                        lot.series.iter().last().map_or(cut_ms, |(last_ms, _)| {
                            cut_ms.min(last_ms + lot.series.step_ms())
                        });
                    let bundle_lot = BundleLot {
                        lot_id: lot.lot_id.clone(),
                        kind: lot.kind.clone(),
                        timezone: lot.series.timezone().name().to_owned(),
                        holiday_region: lot.holiday_region.clone(),
                        has_sessions: lot.context.has_sessions,
                        events: lot.context.events.to_vec(),
                        tariffs: lot.context.tariffs.to_vec(),
                        profile_cells: profile.profile().cells(),
                        fitted_until_ms,
                    };
                    // The calendars the features were computed with travel in the model file, so
                    // serving sees the same days (also for a region from a user's calendar file).
                    let calendar = (
                        lot.holiday_region.clone(),
                        HolidayCalendar::clone(&lot.context.holidays),
                    );
                    (bundle_lot, calendar)
                })
                .collect::<Vec<_>>())
        })
    })?;
    let (bundle_lots, calendars): (Vec<BundleLot>, Vec<(String, HolidayCalendar)>) =
        groups.into_iter().flatten().unzip();
    let calendars = calendars.into_iter().collect();
    let bundle = ModelBundle {
        format: MODEL_FILE_FORMAT,
        feature_params: params,
        horizons: config.backtest.horizons.clone(),
        lots: bundle_lots,
        calibrations,
        day_type_calibrations,
        model: model.to_bytes()?,
        calendars,
        lot_mae: lot_mae(&report, &model),
        lot_hour_mae: lot_hour_mae(&report, &model),
        lot_error_spread: lot_error_spread(&report, &model),
        lot_interval_scales,
    };
    let bytes = bundle.to_bytes()?;
    let forecast_csv = phases.time("live forecasts", || live_forecasts(&bytes, &lots, progress))?;

    let first_day = lots
        .lots()
        .iter()
        .filter_map(LotSummary::first_day)
        .min()
        .unwrap_or(last_day);
    // The hyperparameters as fitted (the price feature left out where no lot has a tariff).
    let fitted_models = config.models.for_prices(lots.any_tariffs());
    let hyperparameters = match &model {
        SavedModel::Gbm(_) | SavedModel::ForustGbm(_) => serde_json::to_value(&fitted_models.gbm),
        SavedModel::Linear(_) => serde_json::to_value(&fitted_models.linear),
    }
    .unwrap_or_default();
    let hyperparameters = match (hyperparameters, &config.frozen) {
        (serde_json::Value::Object(mut object), Some(record)) => {
            object.insert(
                ConfigRecord::MANIFEST_KEY.to_owned(),
                serde_json::to_value(record).unwrap_or_default(),
            );
            serde_json::Value::Object(object)
        }
        (hyperparameters, _) => hyperparameters,
    };
    let metrics = report
        .metrics
        .iter()
        .map(|metrics| ManifestMetric {
            model: metrics.model.clone(),
            horizon_minutes: metrics.horizon_minutes,
            mae_rate: metrics.mae_rate,
            rmse_rate: metrics.rmse_rate,
            mae_slots: metrics.mae_slots,
            rmse_slots: metrics.rmse_slots,
            coverage_80: metrics.coverage_80,
            coverage_95: metrics.coverage_95,
            pairs: metrics.pairs,
        })
        .collect();
    let (mut report_md, mut attachments) =
        render_report(&report, &config.backtest, promoted, beats_baseline);
    report_md.push_str(
        "\n## Data\n\n- `forecast.csv`: the published model's forecasts from each lot's latest state \
         (rate, slots, 80%/95% intervals, P(occupancy >= 80%), P(< 60%), P(at least one free slot)).\n\
         - `backtest_forecasts.csv`: every model's forecasts of the last test window, with actuals and \
         80% intervals.\n",
    );
    if let Some(prior) = &models.prior_rows {
        // After the refit, so that its fits are counted too.
        report.run.prior = Some(prior.describe());
        let _ = writeln!(
            report_md,
            "\n## Prior from other cities\n\n{} (backtest fits and the refit).",
            prior.describe()
        );
    }
    report_md.push_str(&configuration_section(config.frozen.as_ref()));
    // Where the source has tariffs whose changes identify it, the price response goes with the
    // model (pricing what-ifs scale demand by it); otherwise the report says why not.
    let price_response = match crate::price::learn(warehouse, &config.backtest.source, last_day) {
        Ok(card) => {
            report_md.push_str(&format!(
                "\n## Price response\n\nArrivals scale with price to the power {:.3} (standard error \
                 {:.3}; {} lot-days, {} lots whose price changed), against each lot's price on {last_day}.\n",
                card.elasticity, card.standard_error, card.lot_days, card.lots_with_changes
            ));
            Some(card)
        }
        Err(error) => {
            report_md.push_str(&format!("\n## Price response\n\nNone recorded: {error}.\n"));
            None
        }
    };
    if let Some(record) = &config.frozen {
        attachments.push(("config.toml".to_owned(), record.toml.clone()));
    }
    attachments.push(("forecast.csv".to_owned(), forecast_csv));
    attachments.push((
        "backtest_forecasts.csv".to_owned(),
        samples_csv(&report, &config.backtest),
    ));
    let published = registry.publish(NewVersion {
        card: ModelCard {
            name: config.name.clone(),
            model_kind: model.kind().to_owned(),
            feature_schema_hash: params.schema_hash(),
            feature_names: FEATURE_NAMES
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
            step_minutes: config.backtest.step_minutes,
            horizons_minutes: config
                .backtest
                .horizons
                .iter()
                .map(|horizon| horizon * config.backtest.step_minutes)
                .collect(),
            source: config.backtest.source.clone(),
            training_start: first_day,
            training_end: last_day,
            hyperparameters,
            metrics,
            price_response,
        },
        model: &bytes,
        report_md: &report_md,
        attachments,
    })?;
    report.run.phases = phases.seconds();
    Ok(TrainOutcome {
        backtest: report,
        promoted: promoted.to_owned(),
        beats_baseline,
        published,
        bundle,
    })
}

/// The cut-off of the final refit: the day after the last day with data.
pub(crate) fn refit_cut(lots: &LotGroups<'_>, config: &BacktestConfig) -> chrono::NaiveDate {
    let last_day = lots
        .lots()
        .iter()
        .filter_map(LotSummary::last_day)
        .max()
        .unwrap_or(config.test_end);
    last_day + Days::new(1)
}

/// Each lot's backtest MAE per horizon (minutes) of the model published, from the report's per-lot
/// figures over the test windows.
fn lot_mae(report: &BacktestReport, model: &SavedModel) -> BTreeMap<String, BTreeMap<u32, f64>> {
    let name = report_name(model);
    let mut lots: BTreeMap<String, BTreeMap<u32, f64>> = BTreeMap::new();
    for lot in report
        .per_lot
        .iter()
        .filter(|lot| lot.metrics.model == name)
    {
        if lot.metrics.pairs > 0 && lot.metrics.mae_rate.is_finite() {
            lots.entry(lot.lot_id.clone())
                .or_default()
                .insert(lot.metrics.horizon_minutes, lot.metrics.mae_rate);
        }
    }
    lots
}

/// Each lot's backtest MAE per horizon (minutes) of the model published by day type and local hour
/// of the target ([`parkcast_inference::reference`]).
fn lot_hour_mae(
    report: &BacktestReport,
    model: &SavedModel,
) -> BTreeMap<String, BTreeMap<u32, Vec<f32>>> {
    let name = report_name(model);
    let mut lots: BTreeMap<String, BTreeMap<u32, Vec<f32>>> = BTreeMap::new();
    for lot in report
        .per_lot_hour
        .iter()
        .filter(|lot| lot.model == name && lot.error.pairs() > 0)
    {
        lots.entry(lot.lot_id.clone())
            .or_default()
            .insert(lot.horizon_minutes, lot.error.resolve());
    }
    lots
}

/// Each lot's spread of daily backtest MAE per horizon (minutes) of the model published, where the
/// backtest had enough days ([`parkcast_inference::reference::HourlyError::spread`]).
fn lot_error_spread(
    report: &BacktestReport,
    model: &SavedModel,
) -> BTreeMap<String, BTreeMap<u32, f32>> {
    let name = report_name(model);
    let mut lots: BTreeMap<String, BTreeMap<u32, f32>> = BTreeMap::new();
    for lot in report.per_lot_hour.iter().filter(|lot| lot.model == name) {
        let spread = lot.error.spread();
        if spread.is_finite() {
            lots.entry(lot.lot_id.clone())
                .or_default()
                .insert(lot.horizon_minutes, spread as f32);
        }
    }
    lots
}

/// The backtest report's name of a saved model's kind.
fn report_name(model: &SavedModel) -> &'static str {
    match model {
        SavedModel::Gbm(_) | SavedModel::ForustGbm(_) => GBM_NAME,
        SavedModel::Linear(_) => LINEAR_NAME,
    }
}

/// The report's account of the configuration: its name and checksum, the knobs the command line
/// overrode, the selection log that justified it, and the file itself.
pub fn configuration_section(record: Option<&ConfigRecord>) -> String {
    let mut markdown = String::from("\n## Configuration\n\n");
    let Some(record) = record else {
        markdown.push_str(
            "No frozen configuration: the caller set the hyperparameters directly (see the \
             manifest's `hyperparameters`).\n",
        );
        return markdown;
    };
    let _ = writeln!(
        markdown,
        "Frozen configuration **{}** (version {}, sha256 `{}`), also beside this report as \
         `config.toml`.\n",
        record.name, record.version, record.sha256
    );
    if record.overrides.is_empty() {
        markdown.push_str("Run as written: no knob was overridden on the command line.\n");
    } else {
        markdown.push_str(
            "**Overridden on the command line** (this model did not run the configuration as \
             written):\n\n",
        );
        for knob in &record.overrides {
            let _ = writeln!(markdown, "- {knob}");
        }
    }
    if let Ok(parsed) = record.parse() {
        let selection = &parsed.selection;
        markdown.push_str("\n### Selection log\n\n");
        if !selection.summary.is_empty() {
            let _ = writeln!(markdown, "{}\n", selection.summary.trim());
        }
        if !selection.log.trim().is_empty() {
            let _ = writeln!(markdown, "{}\n", selection.log.trim());
        }
        if !selection.command.is_empty() {
            let _ = writeln!(markdown, "Reproduce: `{}`\n", selection.command.trim());
        }
    }
    let _ = writeln!(markdown, "\n```toml\n{}\n```", record.toml.trim_end());
    markdown
}

fn utc(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|instant| instant.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn csv_text(write: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to memory fails only on a bug in the row shapes; an empty file says so downstream.
    if write(&mut writer).is_err() {
        return String::new();
    }
    writer
        .into_inner()
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_default()
}

/// The published model scoring each lot's latest state through the serving path: a
/// [`LotFeatureState`] fed the lot's last nine days, asked at every horizon. This is what the pricing
/// view reads (`forecast.csv`): rate, slots, 80%/95% intervals, P(occupancy >= 80%), P(< 60%) and
/// P(at least one free slot).
fn live_forecasts(
    model_file: &[u8],
    lots: &LotGroups<'_>,
    progress: &dyn Progress,
) -> Result<String, TrainError> {
    let loaded = ModelBundle::from_bytes(model_file)?.load()?;
    // One as-of instant for every lot: the newest reading anywhere. A lot whose data stops earlier is
    // forecast from its own last reading, and its data age says how stale that is.
    let as_of_ms = lots
        .lots()
        .iter()
        .map(|lot| lot.last_ms)
        .max()
        .unwrap_or_default();
    progress.stage(
        &format!("live forecasts ({} groups)", lots.group_count()),
        Some(lots.group_count() as u64),
    );
    let rows: Vec<LiveRow> = lots
        .map(progress, |group| {
            Ok(group
                .lots
                .iter()
                .flat_map(|lot| live_rows(&loaded, lot, as_of_ms))
                .collect::<Vec<_>>())
        })?
        .into_iter()
        .flatten()
        .collect();
    Ok(csv_text(|writer| {
        writer.write_record([
            "lot_id",
            "as_of_utc",
            "data_age_minutes",
            "origin_utc",
            "horizon_minutes",
            "target_utc",
            "capacity",
            "rate",
            "occupied",
            "low_80",
            "high_80",
            "low_95",
            "high_95",
            "p_at_least_80",
            "p_below_60",
            "p_free_slot",
        ])?;
        for (lot_id, age_minutes, origin, minutes, target, capacity, values) in &rows {
            let mut record = vec![
                lot_id.clone(),
                utc(as_of_ms),
                age_minutes.to_string(),
                utc(*origin),
                minutes.to_string(),
                utc(*target),
                capacity.to_string(),
            ];
            record.extend(values.iter().map(|value| format!("{value:.6}")));
            writer.write_record(&record)?;
        }
        Ok(())
    }))
}

/// One line of `forecast.csv`: lot, data age (minutes), origin, horizon (minutes), target, capacity,
/// then rate, occupied, the 80% and 95% bounds, P(>= 80%), P(< 60%) and P(free slot).
type LiveRow = (String, i64, i64, u32, i64, f64, [f64; 9]);

/// A lot's forecast from its last nine days, fed to the serving path's state.
fn live_rows(loaded: &LoadedModel, lot: &LotInputs, as_of_ms: i64) -> Vec<LiveRow> {
    let history_ms = 9 * 86_400_000;
    let Some((last_ms, _)) = lot.series.iter().last() else {
        return Vec::new();
    };
    let Some(mut state) = loaded.new_state(&lot.lot_id) else {
        return Vec::new();
    };
    for (instant, value) in lot
        .series
        .iter()
        .filter(|(instant, _)| *instant > last_ms - history_ms)
    {
        state.push_value(instant, value);
    }
    let recent = |ts: &&i64| **ts > last_ms - history_ms && **ts <= last_ms;
    for &ts in lot.arrivals_ms.iter().filter(recent) {
        state.push_arrival(ts);
    }
    for &ts in lot.departures_ms.iter().filter(recent) {
        state.push_departure(ts);
    }
    let Some(forecast) = loaded.forecast(&state) else {
        return Vec::new();
    };
    let capacity = forecast.capacity;
    let mut rows = Vec::new();
    for horizon in &forecast.horizons {
        let (minutes, rate) = (horizon.horizon_minutes, horizon.rate);
        let Some(calibration) = loaded.calibration_for(&lot.lot_id, minutes, horizon.target_ms)
        else {
            continue;
        };
        let scaled = calibration.scaled(horizon.interval_scale);
        let (low_80, high_80) = scaled.interval(rate, 0.8);
        let (low_95, high_95) = scaled.interval(rate, 0.95);
        rows.push((
            lot.lot_id.clone(),
            (as_of_ms - last_ms) / 60_000,
            last_ms,
            minutes,
            horizon.target_ms,
            capacity,
            [
                rate,
                rate * capacity,
                low_80,
                high_80,
                low_95,
                high_95,
                scaled.probability_at_least(rate, 0.8),
                scaled.probability_below(rate, 0.6),
                scaled.probability_free_slot(rate, capacity),
            ],
        ));
    }
    rows
}

/// The last window's forecasts in long form: one row per lot, horizon, target and model.
fn samples_csv(report: &BacktestReport, config: &BacktestConfig) -> String {
    csv_text(|writer| {
        writer.write_record([
            "lot_id",
            "horizon_minutes",
            "target_utc",
            "model",
            "forecast_rate",
            "actual_rate",
            "low_80",
            "high_80",
        ])?;
        for sample in &report.samples {
            for (index, model) in report.models.iter().enumerate() {
                let (low, high) = sample.intervals_80[index];
                writer.write_record([
                    sample.lot_id.clone(),
                    (sample.horizon_steps * config.step_minutes).to_string(),
                    utc(sample.target_ms),
                    model.clone(),
                    format!("{:.6}", sample.forecasts[index]),
                    format!("{:.6}", sample.actual_rate),
                    format!("{low:.6}"),
                    format!("{high:.6}"),
                ])?;
            }
        }
        Ok(())
    })
}

fn date_label(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|instant| instant.format("%a %d %b").to_string())
        .unwrap_or_default()
}

/// The report (Markdown) and its SVG plots.
pub fn render_report(
    report: &BacktestReport,
    config: &BacktestConfig,
    promoted: &str,
    beats_baseline: bool,
) -> (String, Vec<(String, String)>) {
    let mut markdown = String::new();
    let first = report.windows.first().map_or(config.test_start, |w| w.0);
    let _ = writeln!(markdown, "# Backtest report: {}\n", config.source);
    let _ = writeln!(
        markdown,
        "{} lots, {} window(s) from {first} to {}, {}-minute grid{}. Promoted: **{promoted}** \
         ({} \"persistence + profile change\" at every horizon).\n",
        report.lots.len(),
        report.windows.len(),
        config.test_end,
        config.step_minutes,
        if config.same_day {
            ", same-day origins"
        } else {
            ""
        },
        if beats_baseline {
            "beats"
        } else {
            "does not beat"
        },
    );
    if !report.excluded_lots.is_empty() {
        let _ = writeln!(
            markdown,
            "Left out for too little training data: {}.\n",
            report.excluded_lots.join(", ")
        );
    }
    let _ = writeln!(
        markdown,
        "| model | horizon | MAE rate | RMSE rate | MAE slots | RMSE slots | 80% covers | 95% covers | pairs |\n|---|---|---|---|---|---|---|---|---|"
    );
    let percent = |share: Option<f64>| {
        share.map_or_else(|| "n/a".to_owned(), |s| format!("{:.1}%", 100.0 * s))
    };
    for metrics in &report.metrics {
        let _ = writeln!(
            markdown,
            "| {} | {} min | {:.4} | {:.4} | {:.2} | {:.2} | {} | {} | {} |",
            metrics.model,
            metrics.horizon_minutes,
            metrics.mae_rate,
            metrics.rmse_rate,
            metrics.mae_slots,
            metrics.rmse_slots,
            percent(metrics.coverage_80),
            percent(metrics.coverage_95),
            metrics.pairs
        );
    }
    let mut attachments = Vec::new();

    // MAE by horizon per model.
    let horizons: Vec<u32> = config.horizons.clone();
    let chart = BarChart {
        title: format!("MAE of the occupancy rate by horizon ({})", config.source),
        x_label: "horizon".to_owned(),
        y_label: "MAE (occupancy rate, 0-1)".to_owned(),
        categories: horizons
            .iter()
            .map(|h| format!("{} min", h * config.step_minutes))
            .collect(),
        series: report
            .models
            .iter()
            .map(|model| {
                let values = horizons
                    .iter()
                    .map(|&h| report.get(model, h).map_or(f64::NAN, |m| m.mae_rate))
                    .collect();
                (model.clone(), values)
            })
            .collect(),
    };
    attachments.push(("mae_by_horizon.svg".to_owned(), bar_chart_svg(&chart)));
    let _ = writeln!(markdown, "\n![MAE by horizon](mae_by_horizon.svg)\n");

    // Interval coverage per horizon for every model (80% and 95% nominal).
    let chart = BarChart {
        title: "Empirical coverage of the conformal intervals".to_owned(),
        x_label: "horizon".to_owned(),
        y_label: "share of actuals inside the interval (%)".to_owned(),
        categories: horizons
            .iter()
            .map(|h| format!("{} min", h * config.step_minutes))
            .collect(),
        series: [
            ("persistence + profile change", 0.8),
            (promoted, 0.8),
            (promoted, 0.95),
        ]
        .iter()
        .map(|&(model, nominal)| {
            let values = horizons
                .iter()
                .map(|&h| {
                    report
                        .get(model, h)
                        .and_then(|m| {
                            if nominal > 0.9 {
                                m.coverage_95
                            } else {
                                m.coverage_80
                            }
                        })
                        .map_or(f64::NAN, |share| 100.0 * share)
                })
                .collect();
            (format!("{model}, {:.0}% interval", nominal * 100.0), values)
        })
        .collect(),
    };
    attachments.push(("coverage.svg".to_owned(), bar_chart_svg(&chart)));
    let _ = writeln!(markdown, "![Interval coverage](coverage.svg)\n");

    // Forecast vs actual for sample lots at the middle horizon.
    let plot_horizon = horizons.get(horizons.len() / 2).copied().unwrap_or(1);
    let promoted_index = report.models.iter().position(|m| m == promoted);
    let baseline_index = report
        .models
        .iter()
        .position(|m| m == "persistence + profile change");
    let mut lots: Vec<&str> = report.samples.iter().map(|s| s.lot_id.as_str()).collect();
    lots.dedup();
    for (number, lot) in lots.iter().take(2).enumerate() {
        let samples: Vec<_> = report
            .samples
            .iter()
            .filter(|s| s.lot_id == *lot && s.horizon_steps == plot_horizon)
            .collect();
        let Some(first_ms) = samples.first().map(|s| s.target_ms) else {
            continue;
        };
        let hours = |ms: i64| (ms - first_ms) as f64 / 3_600_000.0;
        // Break lines where targets are missing (closed at night) instead of drawing across.
        let step_ms = i64::from(config.step_minutes) * 60_000;
        let with_gaps = |value: &dyn Fn(&ForecastSample) -> f64| {
            let mut points = Vec::with_capacity(samples.len());
            for (position, sample) in samples.iter().enumerate() {
                if position > 0 && sample.target_ms - samples[position - 1].target_ms > step_ms {
                    points.push((hours(sample.target_ms - step_ms), f64::NAN));
                }
                points.push((hours(sample.target_ms), value(sample)));
            }
            points
        };
        let mut lines = vec![Line {
            name: "actual".to_owned(),
            points: with_gaps(&|s| s.actual_rate),
        }];
        for index in [baseline_index, promoted_index].into_iter().flatten() {
            lines.push(Line {
                name: report.models[index].clone(),
                points: with_gaps(&|s| s.forecasts[index]),
            });
        }
        let bands = promoted_index
            .map(|index| Band {
                name: format!("{promoted}, 80% interval"),
                points: samples
                    .iter()
                    .map(|s| {
                        (
                            hours(s.target_ms),
                            s.intervals_80[index].0,
                            s.intervals_80[index].1,
                        )
                    })
                    .collect(),
            })
            .into_iter()
            .collect();
        let last_ms = samples.last().map_or(first_ms, |s| s.target_ms);
        let ticks = (0..=((last_ms - first_ms) / 86_400_000))
            .map(|day| (day as f64 * 24.0, date_label(first_ms + day * 86_400_000)))
            .collect();
        let chart = LineChart {
            title: format!(
                "Lot {lot}: forecast {} min ahead vs actual",
                plot_horizon * config.step_minutes
            ),
            x_label: "target time (UTC days)".to_owned(),
            y_label: "occupancy rate (0-1)".to_owned(),
            lines,
            bands,
            x_ticks: Some(ticks),
            y_range: Some((0.0, 1.0)),
        };
        let file = format!("forecast_lot_{}.svg", number + 1);
        attachments.push((file.clone(), line_chart_svg(&chart)));
        let _ = writeln!(markdown, "![Forecast vs actual, lot {lot}]({file})\n");
    }

    // The worst lots of the promoted model at the plot horizon.
    let mut worst: Vec<_> = report
        .per_lot
        .iter()
        .filter(|entry| {
            entry.metrics.model == promoted && entry.metrics.horizon_steps == plot_horizon
        })
        .collect();
    worst.sort_by(|a, b| b.metrics.mae_rate.total_cmp(&a.metrics.mae_rate));
    let _ = writeln!(
        markdown,
        "## Worst lots ({promoted}, {} min)\n\n| lot | MAE rate | MAE slots | pairs |\n|---|---|---|---|",
        plot_horizon * config.step_minutes
    );
    for entry in worst.iter().take(5) {
        let _ = writeln!(
            markdown,
            "| {} | {:.4} | {:.2} | {} |",
            entry.lot_id, entry.metrics.mae_rate, entry.metrics.mae_slots, entry.metrics.pairs
        );
    }
    (markdown, attachments)
}
