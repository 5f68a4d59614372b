//! The batch path: every origin's feature vectors of one lot at once, as polars expressions.
//!
//! The lot's grid becomes a dense frame (one row per grid instant, a missing value a null), extended
//! by the longest horizon so that targets past the last value still get their calendar and profile.
//! Profile cells and day calendars join in as frames; lags, rolling deviations, day statistics and
//! targets are shifts and windows over that frame. One frame per horizon is stacked into the result.
//!
//! Result columns: `origin_ms`, `horizon_steps`, the [`FEATURE_NAMES`] in order, then the label
//! columns `target_rate` and `target_capacity` (null where the target has no value).

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate};
use polars::prelude::*;

use super::{
    DAY_CALENDAR_COLUMNS, DEVIATION_CHANGE_STEPS, FEATURE_COUNT, FEATURE_NAMES, FeatureParams,
    FeatureVector, LAG_STEPS, LEVEL_DAYS_BACK, LotContext, LotProfile, flow_bucket, local_time,
    minute_of_day,
};
use crate::grid::{GridSeries, slot_of_day};

/// One lot's inputs.
#[derive(Debug, Clone, Copy)]
pub struct LotHistory<'a> {
    /// The occupancy grid.
    pub series: &'a GridSeries,
    /// The fitted profile.
    pub profile: &'a LotProfile,
    /// The lot's context.
    pub context: &'a LotContext,
    /// Session arrival times, ms (any order).
    pub arrivals_ms: &'a [i64],
    /// Session departure times, ms (any order).
    pub departures_ms: &'a [i64],
}

/// Which rows to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    /// Horizons, in grid steps (each at most [`FeatureParams::max_horizon_steps`]).
    pub horizons: Vec<u32>,
    /// Origins at or after this instant, ms.
    pub origins_from_ms: i64,
    /// Origins before this instant, ms.
    pub origins_until_ms: i64,
    /// Keep one origin in `origin_stride` (1 = all), stratified by lot, weekday and time of day
    /// ([`origin_sample`]); trainers thin dense grids with it.
    pub origin_stride: u32,
}

/// Which origins a thinned request keeps: one in `stride` of every (lot, weekday, time of day)
/// cell, as an expression on `origin_ms`.
///
/// A grid instant's cell is its position in the week (`step`-long slots, 2,016 a week at 5
/// minutes); its week is how many weeks since the epoch. A cell keeps the weeks `w` with
/// `(w + offset) % stride == 0`, where the offset is a hash of the cell and the lot: every cell
/// gets `floor(n / stride)` or `ceil(n / stride)` of its `n` origins (a stratified systematic
/// sample), and the cells of a lot, and the lots, take different weeks, so the kept rows spread
/// over the whole history. Keeping every `stride`-th grid instant instead covered only
/// `2016 / gcd(stride, 2016)` of the week's cells: at a stride of 48 on a 5-minute grid, the same
/// six times of day.
pub fn origin_sample(step_ms: i64, stride: u32, lot_salt: u32) -> Expr {
    let stride = i64::from(stride.max(1));
    let week_steps = (7 * 86_400_000 / step_ms.max(1)).max(1);
    let instant = col("origin_ms").floor_div(lit(step_ms.max(1)));
    let cell = instant.clone() % lit(week_steps);
    let week = instant.floor_div(lit(week_steps));
    // Knuth's multiplicative hash of (lot, cell), kept below 2^32 so the products stay in i64.
    let key = cell + lit(i64::from(lot_salt) * (week_steps + 1));
    let offset = (key * lit(2_654_435_761_i64)) % lit(1_i64 << 32) % lit(stride);
    ((week + offset) % lit(stride)).eq(lit(0_i64))
}

/// Days since 1970-01-01 of a date: the frame's day key.
fn day_number(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - 719_163
}

/// The features of every origin of one lot with a value at the origin, for every horizon.
pub fn lot_features(
    params: &FeatureParams,
    lot: LotHistory<'_>,
    request: &BatchRequest,
) -> PolarsResult<DataFrame> {
    let step = params.step_ms();
    let max_horizon = request.horizons.iter().copied().max().unwrap_or(0);
    let (Some((first, _)), Some((last, _))) = (lot.series.iter().next(), lot.series.iter().last())
    else {
        return Ok(empty_result());
    };
    let end = last + i64::from(max_horizon) * step;
    let instants: Vec<i64> = (0..=(end - first) / step)
        .map(|index| first + index * step)
        .collect();

    // The dense grid with local-time keys and the profile cell of every instant.
    let mut rate = Vec::with_capacity(instants.len());
    let mut capacity = Vec::with_capacity(instants.len());
    let mut local_day = Vec::with_capacity(instants.len());
    let mut minute = Vec::with_capacity(instants.len());
    let mut cell_sum = Vec::with_capacity(instants.len());
    let mut cell_count = Vec::with_capacity(instants.len());
    let mut event_cars = Vec::with_capacity(instants.len());
    let mut price_change = Vec::with_capacity(instants.len());
    let mut days = BTreeSet::new();
    for &instant in &instants {
        let value = lot.series.at(instant);
        rate.push(value.map(|value| value.rate()));
        capacity.push(value.map(|value| value.capacity));
        let local = local_time(lot.context.timezone, instant);
        let day = day_number(local.date());
        days.insert(local.date());
        local_day.push(day);
        minute.push(minute_of_day(local));
        let cell = lot.profile.profile().cell(local);
        cell_sum.push(cell.map(|(sum, _)| sum));
        cell_count.push(cell.map(|(_, count)| f64::from(count)));
        event_cars.push(lot.context.event_cars(instant));
        price_change.push(lot.context.price_change_week(instant));
        debug_assert_eq!(
            slot_of_day(local, params.step_minutes),
            (minute_of_day(local) as u32) / params.step_minutes
        );
    }
    let grid = df! {
        "instant" => &instants,
        "rate" => &rate,
        "capacity" => &capacity,
        "local_day" => &local_day,
        "minute_of_day" => &minute,
        "cell_sum" => &cell_sum,
        "cell_count" => &cell_count,
        "event_cars" => &event_cars,
        "price_change" => &price_change,
    }?;

    // Day calendars (a shared lookup) and session counts per grid instant.
    let (mut day_keys, mut calendar_columns) =
        (Vec::new(), [(); DAY_CALENDAR_COLUMNS].map(|()| Vec::new()));
    for date in &days {
        day_keys.push(day_number(*date));
        for (column, value) in calendar_columns
            .iter_mut()
            .zip(lot.context.day_calendar(*date))
        {
            column.push(value);
        }
    }
    let [
        weekday,
        day_off,
        holiday,
        days_to_holiday,
        days_from_holiday,
        school_holiday,
        bridge_day,
        days_to_major,
        days_from_major,
    ] = calendar_columns;
    let calendar = df! {
        "local_day" => &day_keys,
        "weekday" => &weekday,
        "day_off" => &day_off,
        "holiday" => &holiday,
        "days_to_holiday" => &days_to_holiday,
        "days_from_holiday" => &days_from_holiday,
        "school_holiday" => &school_holiday,
        "bridge_day" => &bridge_day,
        "days_to_major" => &days_to_major,
        "days_from_major" => &days_from_major,
    }?;
    let flows = |times: &[i64], name: &str| -> PolarsResult<LazyFrame> {
        let buckets: Vec<i64> = times.iter().map(|ts| flow_bucket(*ts, step)).collect();
        Ok(df! { "instant" => &buckets }?
            .lazy()
            .group_by([col("instant")])
            .agg([len().cast(DataType::Float64).alias(name)]))
    };

    let inside_fit = col("instant").lt(lit(lot.profile.fitted_until_ms()));
    let profile_at = |own: Expr| {
        when(inside_fit.clone().and(own.clone().is_not_null()))
            .then(
                when(col("cell_count").gt(lit(1.0)))
                    .then((col("cell_sum") - own) / (col("cell_count") - lit(1.0)))
                    .otherwise(lit(NULL)),
            )
            .otherwise(
                when(col("cell_count").gt(lit(0.0)))
                    .then(col("cell_sum") / col("cell_count"))
                    .otherwise(lit(NULL)),
            )
            .cast(DataType::Float64)
    };
    let has_deviation = || col("deviation").is_not_null().cast(DataType::Float64);
    let recent = params.recent_steps as i64;
    let recent_sum = (0..recent).rev().fold(lit(0.0), |sum, back| {
        sum + col("deviation").shift(lit(back)).fill_null(lit(0.0))
    });
    let recent_count = (0..recent).rev().fold(lit(0.0), |sum, back| {
        sum + has_deviation().shift(lit(back)).fill_null(lit(0.0))
    });
    let mean_of = |sum: Expr, count: Expr| {
        when(count.clone().gt(lit(0.0)))
            .then(sum / count)
            .otherwise(lit(f64::NAN))
    };
    let day = [col("local_day")];
    let base = grid
        .lazy()
        .left_join(calendar.lazy(), col("local_day"), col("local_day"))
        .left_join(
            flows(lot.arrivals_ms, "arrivals")?,
            col("instant"),
            col("instant"),
        )
        .left_join(
            flows(lot.departures_ms, "departures")?,
            col("instant"),
            col("instant"),
        )
        .sort(["instant"], SortMultipleOptions::default())
        .with_column(profile_at(col("rate")).alias("profile"))
        .with_column((col("rate") - col("profile")).alias("deviation"))
        .with_columns([
            mean_of(recent_sum, recent_count).alias("deviation_recent"),
            mean_of(
                col("deviation")
                    .fill_null(lit(0.0))
                    .cum_sum(false)
                    .over(day.clone())?,
                has_deviation().cum_sum(false).over(day.clone())?,
            )
            .alias("deviation_today"),
            ((col("instant")
                - col("instant")
                    .filter(col("rate").is_not_null())
                    .min()
                    .over(day.clone())?)
            .cast(DataType::Float64)
                / lit(60_000.0))
            .alias("minutes_since_first"),
        ]);

    // Deviation sums per local day, dense over the days, then yesterday's and last week's means.
    let first_day = day_keys.first().copied().unwrap_or(0);
    let last_day = day_keys.last().copied().unwrap_or(0);
    let all_days: Vec<i32> = (first_day..=last_day).collect();
    let day_sums = df! { "local_day" => &all_days }?
        .lazy()
        .left_join(
            base.clone().group_by([col("local_day")]).agg([
                col("deviation").fill_null(lit(0.0)).sum().alias("day_sum"),
                has_deviation().sum().alias("day_count"),
            ]),
            col("local_day"),
            col("local_day"),
        )
        .sort(["local_day"], SortMultipleOptions::default())
        .with_columns([
            col("day_sum").fill_null(lit(0.0)),
            col("day_count").fill_null(lit(0.0)),
        ]);
    let week_sum = (1..=7i64).rev().fold(lit(0.0), |sum, back| {
        sum + col("day_sum").shift(lit(back)).fill_null(lit(0.0))
    });
    let week_count = (1..=7i64).rev().fold(lit(0.0), |sum, back| {
        sum + col("day_count").shift(lit(back)).fill_null(lit(0.0))
    });
    let day_mean = |back: i64| {
        mean_of(
            col("day_sum").shift(lit(back)),
            col("day_count").shift(lit(back)).fill_null(lit(0.0)),
        )
        .fill_null(lit(f64::NAN))
    };
    let day_stats = day_sums.select([
        col("local_day"),
        day_mean(1).alias("deviation_yesterday"),
        mean_of(week_sum, week_count).alias("deviation_last_week"),
        ((day_mean(1) - day_mean(3)) / lit(2.0)).alias("deviation_daily_trend"),
    ]);
    let flow_steps = i64::from(params.flow_steps());
    let flow_sum = |name: &str| {
        (0..flow_steps).fold(lit(0.0), |sum, back| {
            sum + col(name).shift(lit(back)).fill_null(lit(0.0))
        })
    };
    let flow_rate = |name: &str| {
        if lot.context.has_sessions {
            when(col("capacity").gt(lit(0.0)))
                .then(flow_sum(name) / col("capacity"))
                .otherwise(lit(f64::NAN))
        } else {
            lit(f64::NAN)
        }
    };
    let or_nan = |value: Option<u32>| value.map_or(f64::NAN, f64::from);
    let prepared = base
        .left_join(day_stats, col("local_day"), col("local_day"))
        .sort(["instant"], SortMultipleOptions::default())
        .with_columns([
            flow_rate("arrivals").alias("arrivals_recent"),
            flow_rate("departures").alias("departures_recent"),
        ]);

    let mut frames = Vec::with_capacity(request.horizons.len());
    for &horizon in &request.horizons {
        let ahead = -i64::from(horizon);
        let target = |name: &str| col(name).shift(lit(ahead));
        let target_inside_fit = col("instant")
            .shift(lit(ahead))
            .lt(lit(lot.profile.fitted_until_ms()));
        let target_rate = target("rate");
        let profile_target = when(target_inside_fit.and(target_rate.clone().is_not_null()))
            .then(
                when(target("cell_count").gt(lit(1.0)))
                    .then((target("cell_sum") - target_rate) / (target("cell_count") - lit(1.0)))
                    .otherwise(lit(NULL)),
            )
            .otherwise(
                when(target("cell_count").gt(lit(0.0)))
                    .then(target("cell_sum") / target("cell_count"))
                    .otherwise(lit(NULL)),
            )
            .cast(DataType::Float64);
        let lag = |steps: i64| col("rate").shift(lit(steps));
        let day_back = params.season_back_steps(horizon, 1) - i64::from(horizon);
        let week_back = params.season_back_steps(horizon, 7) - i64::from(horizon);
        let change = col("profile_target") - col("profile");
        let nan = |expr: Expr| expr.cast(DataType::Float64).fill_null(lit(f64::NAN));
        let mut columns = vec![
            col("instant").alias("origin_ms"),
            lit(horizon).cast(DataType::UInt32).alias("horizon_steps"),
            lit(or_nan(lot.context.lot_code)).alias(FEATURE_NAMES[0]),
            lit(or_nan(lot.context.kind_code)).alias(FEATURE_NAMES[1]),
            col("capacity"),
            lit(f64::from(horizon * params.step_minutes)),
            target("weekday"),
            target("minute_of_day"),
            target("day_off"),
            target("holiday"),
            target("days_to_holiday"),
            col("minute_of_day"),
            col("rate"),
        ];
        columns.extend(LAG_STEPS.map(|steps| lag(i64::from(steps))));
        columns.extend([
            lag(day_back),
            lag(week_back),
            col("profile_target"),
            col("profile"),
            change.clone(),
            (col("rate") + change).clip(lit(0.0), lit(1.0)),
            col("deviation"),
            col("deviation_recent"),
            col("deviation_today"),
            col("minutes_since_first"),
            col("deviation_yesterday"),
            col("deviation_last_week"),
            col("arrivals_recent"),
            col("departures_recent"),
            when(col("capacity").gt(lit(0.0)))
                .then(target("event_cars") / col("capacity"))
                .otherwise(lit(f64::NAN)),
            target("days_from_holiday"),
        ]);
        // The deviation at the target's time of day some days back, where that is not after the
        // origin.
        let day_steps = i64::from(params.day_steps());
        columns.extend(LEVEL_DAYS_BACK.map(|days| {
            let back = i64::from(days) * day_steps - i64::from(horizon);
            if back >= 0 {
                col("deviation").shift(lit(back))
            } else {
                lit(f64::NAN)
            }
        }));
        columns.extend([
            col("deviation_daily_trend"),
            target("school_holiday"),
            target("bridge_day"),
            target("days_to_major"),
            target("days_from_major"),
            target("price_change"),
        ]);
        columns.extend(
            DEVIATION_CHANGE_STEPS
                .map(|steps| col("deviation") - col("deviation").shift(lit(i64::from(steps)))),
        );
        let named: Vec<Expr> = columns
            .into_iter()
            .enumerate()
            .map(|(position, expr)| match position {
                0 | 1 => expr,
                _ => nan(expr).alias(FEATURE_NAMES[position - 2]),
            })
            .chain([
                target("rate").alias("target_rate"),
                target("capacity").alias("target_capacity"),
            ])
            .collect();
        let salt = lot.context.lot_code.unwrap_or_default();
        frames.push(
            prepared
                .clone()
                .with_column(profile_target.alias("profile_target"))
                .select(named)
                .filter(
                    col("origin_ms")
                        .gt_eq(lit(request.origins_from_ms))
                        .and(col("origin_ms").lt(lit(request.origins_until_ms)))
                        .and(col(FEATURE_NAMES[10]).is_not_nan())
                        .and(origin_sample(step, request.origin_stride, salt)),
                ),
        );
    }
    if frames.is_empty() {
        return Ok(empty_result());
    }
    concat(frames, UnionArgs::default())?.collect()
}

fn empty_result() -> DataFrame {
    let mut columns = vec![
        Column::new_empty("origin_ms".into(), &DataType::Int64),
        Column::new_empty("horizon_steps".into(), &DataType::UInt32),
    ];
    columns.extend(
        FEATURE_NAMES
            .iter()
            .map(|name| Column::new_empty((*name).into(), &DataType::Float64)),
    );
    columns.push(Column::new_empty("target_rate".into(), &DataType::Float64));
    columns.push(Column::new_empty(
        "target_capacity".into(),
        &DataType::Float64,
    ));
    DataFrame::new_infer_height(columns).unwrap_or_default()
}

/// One row of a batch result.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRow {
    /// The origin, ms.
    pub origin_ms: i64,
    /// The horizon, grid steps.
    pub horizon_steps: u32,
    /// The features.
    pub features: FeatureVector,
    /// The actual rate at the target, if known.
    pub target_rate: Option<f64>,
    /// The capacity at the target, if known.
    pub target_capacity: Option<f64>,
}

/// The rows of a [`lot_features`] frame.
pub fn rows(frame: &DataFrame) -> PolarsResult<Vec<BatchRow>> {
    let origins = frame.column("origin_ms")?.i64()?;
    let horizons = frame.column("horizon_steps")?.u32()?;
    let features = FEATURE_NAMES
        .iter()
        .map(|name| frame.column(name)?.f64().cloned())
        .collect::<PolarsResult<Vec<_>>>()?;
    let target_rate = frame.column("target_rate")?.f64()?;
    let target_capacity = frame.column("target_capacity")?.f64()?;
    let mut rows = Vec::with_capacity(frame.height());
    for row in 0..frame.height() {
        let mut vector = [f64::NAN; FEATURE_COUNT];
        for (slot, column) in vector.iter_mut().zip(&features) {
            *slot = column.get(row).unwrap_or(f64::NAN);
        }
        rows.push(BatchRow {
            origin_ms: origins.get(row).unwrap_or_default(),
            horizon_steps: horizons.get(row).unwrap_or_default(),
            features: vector,
            target_rate: target_rate.get(row),
            target_capacity: target_capacity.get(row),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 300_000;
    const WEEK_STEPS: i64 = 2_016;

    /// The origins `origin_sample` keeps of `weeks` weeks of a 5-minute grid.
    fn kept(stride: u32, salt: u32, weeks: i64) -> Vec<i64> {
        let origins: Vec<i64> = (0..weeks * WEEK_STEPS).map(|index| index * STEP).collect();
        let kept = df!("origin_ms" => origins)
            .expect("frame")
            .lazy()
            .filter(origin_sample(STEP, stride, salt))
            .collect()
            .expect("filtered");
        kept.column("origin_ms")
            .and_then(Column::i64)
            .expect("i64")
            .into_no_null_iter()
            .collect()
    }

    /// Kept origins per cell of the week.
    fn per_cell(origins: &[i64]) -> Vec<u32> {
        let mut cells = vec![0; WEEK_STEPS as usize];
        for origin in origins {
            cells[((origin / STEP) % WEEK_STEPS) as usize] += 1;
        }
        cells
    }

    #[test]
    fn a_thinned_grid_keeps_every_cell_of_the_week_in_proportion() {
        // 20 weeks, one origin in 7: every cell keeps 2 or 3 (20 / 7 = 2.9), whatever the lot.
        for salt in [0, 1, 17] {
            let cells = per_cell(&kept(7, salt, 20));
            assert!(cells.iter().all(|kept| (2..=3).contains(kept)), "{cells:?}");
            let total: u32 = cells.iter().sum();
            assert!((5_700..=5_820).contains(&total), "{total}");
        }
        // A stride sharing factors with the week (48 = every 4 hours on a 5-minute grid) still
        // reaches every cell, where every 48th grid instant reached 42 of the 2,016.
        let cells = per_cell(&kept(48, 5, 96));
        assert!(cells.iter().all(|kept| *kept == 2), "{cells:?}");
        // Two lots take different weeks of the same cells.
        assert_ne!(kept(48, 1, 48), kept(48, 2, 48));
        // No thinning keeps everything.
        assert_eq!(kept(1, 9, 2).len(), 2 * WEEK_STEPS as usize);
    }
}
