//! Split-conformal intervals and probabilities from calibration residuals.
//!
//! A forecaster's residuals (actual - forecast, as occupancy rates) on a calibration window that it
//! did not see while fitting make its uncertainty honest without assuming a distribution:
//!
//! - the interval at coverage `c` is the forecast plus or minus the `ceil((n + 1) c) / n` quantile of
//!   the absolute residuals (split conformal), clipped to [0, 1] (that is, [0, capacity] in slots);
//! - probabilities of events (at least one free slot, occupancy >= 80% or < 60%, what the app and the
//!   SFpark-style pricing rule consume) read the empirical distribution `forecast + residual`;
//! - residuals may be calibrated in units of their lot's scale ([`lot_scales`]), each lot's interval
//!   and distribution then multiplied back ([`IntervalScale`]), so a busy garage and a quiet lot
//!   each get intervals that hold for them.
//!
//! Coverage holds when test errors are exchangeable with calibration errors; a holiday or a level
//! shift breaks that, which is why the backtest reports the coverage it actually got.

use std::collections::VecDeque;

use crate::calendar::DayType;

/// Residuals of one forecaster at one horizon, sorted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResidualCalibration {
    signed: Vec<f64>,
    absolute: Vec<f64>,
}

impl ResidualCalibration {
    /// Calibration from residuals (actual - forecast); non-finite values are ignored. `None` without
    /// any finite residual.
    pub fn fit(residuals: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut signed: Vec<f64> = residuals
            .into_iter()
            .filter(|residual| residual.is_finite())
            .collect();
        if signed.is_empty() {
            return None;
        }
        signed.sort_by(f64::total_cmp);
        let mut absolute: Vec<f64> = signed.iter().map(|residual| residual.abs()).collect();
        absolute.sort_by(f64::total_cmp);
        Some(ResidualCalibration { signed, absolute })
    }

    /// Number of calibration residuals.
    pub fn len(&self) -> usize {
        self.signed.len()
    }

    /// Whether there are no residuals (never true for a fitted calibration).
    pub fn is_empty(&self) -> bool {
        self.signed.is_empty()
    }

    /// Half-width of the interval at `coverage` (0..1): the conformal quantile of absolute residuals.
    /// With too few residuals for the coverage asked, the largest residual.
    pub fn half_width(&self, coverage: f64) -> f64 {
        self.absolute[conformal_rank(self.absolute.len(), coverage) - 1]
    }

    /// The interval of rates at `coverage` around a forecast rate, clipped to [0, 1].
    pub fn interval(&self, forecast_rate: f64, coverage: f64) -> (f64, f64) {
        self.scaled(IntervalScale::ONE)
            .interval(forecast_rate, coverage)
    }

    /// P(rate >= threshold) given the forecast.
    pub fn probability_at_least(&self, forecast_rate: f64, threshold_rate: f64) -> f64 {
        self.scaled(IntervalScale::ONE)
            .probability_at_least(forecast_rate, threshold_rate)
    }

    /// P(rate < threshold) given the forecast.
    pub fn probability_below(&self, forecast_rate: f64, threshold_rate: f64) -> f64 {
        self.scaled(IntervalScale::ONE)
            .probability_below(forecast_rate, threshold_rate)
    }

    /// P(at least one free slot) for a lot of `capacity` slots: P(occupied <= capacity - 1).
    pub fn probability_free_slot(&self, forecast_rate: f64, capacity: f64) -> f64 {
        self.scaled(IntervalScale::ONE)
            .probability_free_slot(forecast_rate, capacity)
    }

    /// The calibration with its residuals scaled by `scale` ([`IntervalScale`]; each factor
    /// clamped to [0, [`ADAPTIVE_MAX_SCALE`]], NaN read as 1).
    ///
    /// Serving answers targets between *now*, where the occupancy is read, not forecast, and a
    /// horizon's target: the error there grows from nothing to the horizon's error. Shrinking the
    /// horizon's residuals linearly with the share of the horizon elapsed
    /// ([`IntervalScale::times`]) is the simplest shape that is exact at both ends. The adaptive
    /// scales ([`AdaptiveScales`]) multiply in.
    pub fn scaled(&self, scale: IntervalScale) -> ScaledCalibration<'_> {
        ScaledCalibration {
            calibration: self,
            scale: scale.clamped(),
            knots: ADAPTIVE_COVERAGES.map(|coverage| self.half_width(coverage)),
        }
    }
}

/// Residuals of the pooled MAE that each lot's own residuals are shrunk towards in [`lot_scales`]:
/// a lot with 100 residuals gets half its own MAE and half the pooled one.
pub const LOT_SCALE_PRIOR_RESIDUALS: f64 = 100.0;

/// The smallest and the largest lot scale ([`lot_scales`]).
pub const LOT_SCALE_BOUNDS: (f64, f64) = (0.25, 4.0);

/// Each lot's scale of residuals: its MAE over the pooled MAE of all lots, shrunk towards 1 by
/// [`LOT_SCALE_PRIOR_RESIDUALS`] and bounded to [`LOT_SCALE_BOUNDS`].
///
/// One calibration for every lot gives a busy garage whose rate swings by a tenth an hour the same
/// interval as a quiet lot that moves by a car: the intervals cover 80% of all pairs, but 60% of
/// the busy lot's and 97% of the quiet one's (Birmingham, four weeks). Normalised split conformal
/// (Lei et al., 2018) divides each residual by its lot's scale before calibrating and multiplies
/// the half-widths back, so the calibration reads how unusual an error is *for that lot*; the
/// coverage guarantee is kept (the scale is a fixed function of the lot when a test residual is
/// scored) and each lot's intervals follow its own errors. The scales come from the residuals that
/// calibrate (the calibration days in a backtest, the last window's in a model file). Non-finite
/// residuals are ignored; a lot with none is absent (scale 1).
pub fn lot_scales<K: Ord + Clone>(
    residuals: impl IntoIterator<Item = (K, f64)>,
) -> std::collections::BTreeMap<K, f64> {
    let mut sums: std::collections::BTreeMap<K, (f64, f64)> = std::collections::BTreeMap::new();
    let (mut total, mut count) = (0.0, 0.0);
    for (lot, residual) in residuals {
        if !residual.is_finite() {
            continue;
        }
        let entry = sums.entry(lot).or_insert((0.0, 0.0));
        entry.0 += residual.abs();
        entry.1 += 1.0;
        total += residual.abs();
        count += 1.0;
    }
    let pooled = total / count;
    if !(pooled.is_finite() && pooled > 0.0) {
        return sums.into_keys().map(|lot| (lot, 1.0)).collect();
    }
    sums.into_iter()
        .map(|(lot, (sum, n))| {
            let shrunk =
                (sum + LOT_SCALE_PRIOR_RESIDUALS * pooled) / (n + LOT_SCALE_PRIOR_RESIDUALS);
            (
                lot,
                (shrunk / pooled).clamp(LOT_SCALE_BOUNDS.0, LOT_SCALE_BOUNDS.1),
            )
        })
        .collect()
}

/// The split-conformal rank of the quantile at `coverage` among `n` sorted absolute residuals
/// (1-based): `ceil((n + 1) * coverage)`, at most `n` (with too few residuals, the largest).
fn conformal_rank(n: usize, coverage: f64) -> usize {
    let rank = ((n as f64 + 1.0) * coverage.clamp(0.0, 1.0)).ceil() as usize;
    rank.clamp(1, n)
}

/// The interval of rates `half_width` either side of a forecast rate, clipped to [0, 1].
pub fn interval_around(forecast_rate: f64, half_width: f64) -> (f64, f64) {
    (
        (forecast_rate - half_width).clamp(0.0, 1.0),
        (forecast_rate + half_width).clamp(0.0, 1.0),
    )
}

/// The factors a calibration's residuals are multiplied by, one per coverage adaptive conformal
/// inference holds ([`ADAPTIVE_COVERAGES`]). A residual's magnitude up to the calibration's 80%
/// half-width is multiplied by `central`; what lies beyond it runs linearly, at the slope that takes
/// the 95% half-width to `wide` times itself, or at `wide` where that is the smaller factor (the
/// tail narrows, the centre keeps its width). It is one increasing map of the residuals (for
/// positive factors), so the 80% and 95% intervals and every probability an answer carries still
/// read one distribution, each residual on its side of each interval, while each interval's width
/// follows its own misses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalScale {
    /// The factor at and inside the 80% half-width.
    pub central: f64,
    /// The factor at the 95% half-width.
    pub wide: f64,
}

impl IntervalScale {
    /// Residuals as calibrated.
    pub const ONE: IntervalScale = IntervalScale::uniform(1.0);

    /// Every residual multiplied by `scale`.
    pub const fn uniform(scale: f64) -> Self {
        IntervalScale {
            central: scale,
            wide: scale,
        }
    }

    /// Each factor multiplied by the other scale's (the adaptive scales of a lot's class composed
    /// with the lot's own scale, [`lot_scales`]).
    pub fn then(self, other: IntervalScale) -> Self {
        IntervalScale {
            central: self.central * other.central,
            wide: self.wide * other.wide,
        }
    }

    /// Both factors multiplied by `factor` (serving's share of a horizon elapsed).
    pub fn times(self, factor: f64) -> Self {
        IntervalScale {
            central: self.central * factor,
            wide: self.wide * factor,
        }
    }

    fn clamped(self) -> Self {
        let clamp = |scale: f64| {
            if scale.is_nan() {
                1.0
            } else {
                scale.clamp(0.0, ADAPTIVE_MAX_SCALE * LOT_SCALE_BOUNDS.1)
            }
        };
        IntervalScale {
            central: clamp(self.central),
            wide: clamp(self.wide),
        }
    }

    /// The scaled magnitude of a residual of `magnitude` (>= 0) in a calibration whose unscaled
    /// 80% and 95% half-widths are `knots`.
    pub fn magnitude(self, magnitude: f64, [central_knot, wide_knot]: [f64; 2]) -> f64 {
        if magnitude <= central_knot {
            return self.central * magnitude;
        }
        let at_knot = self.central * central_knot;
        let slope = if wide_knot > central_knot && self.wide >= self.central {
            (self.wide * wide_knot - at_knot) / (wide_knot - central_knot)
        } else {
            self.wide
        };
        at_knot + slope * (magnitude - central_knot)
    }

    /// The scaled 80% and 95% half-widths of a calibration whose unscaled ones are `knots`.
    pub fn half_widths(self, knots: [f64; 2]) -> [f64; 2] {
        knots.map(|knot| self.magnitude(knot, knots))
    }
}

/// A [`ResidualCalibration`] with its residuals scaled ([`ResidualCalibration::scaled`]).
#[derive(Debug, Clone, Copy)]
pub struct ScaledCalibration<'a> {
    calibration: &'a ResidualCalibration,
    scale: IntervalScale,
    /// The calibration's unscaled 80% and 95% half-widths.
    knots: [f64; 2],
}

impl ScaledCalibration<'_> {
    /// The interval of rates at `coverage` around a forecast rate, clipped to [0, 1].
    pub fn interval(&self, forecast_rate: f64, coverage: f64) -> (f64, f64) {
        interval_around(
            forecast_rate,
            self.scale
                .magnitude(self.calibration.half_width(coverage), self.knots),
        )
    }

    /// A residual as scaled: sign kept, magnitude mapped.
    fn residual(&self, residual: f64) -> f64 {
        let magnitude = self.scale.magnitude(residual.abs(), self.knots);
        if residual < 0.0 {
            -magnitude
        } else {
            magnitude
        }
    }

    /// P(rate >= threshold) given the forecast.
    pub fn probability_at_least(&self, forecast_rate: f64, threshold_rate: f64) -> f64 {
        let total = self.calibration.signed.len();
        (total - self.count_below(forecast_rate, threshold_rate)) as f64 / total as f64
    }

    /// P(rate < threshold) given the forecast.
    pub fn probability_below(&self, forecast_rate: f64, threshold_rate: f64) -> f64 {
        let signed = &self.calibration.signed;
        self.count_below(forecast_rate, threshold_rate) as f64 / signed.len() as f64
    }

    /// Residuals r with forecast + scaled(r) < threshold (the map keeps their order).
    fn count_below(&self, forecast_rate: f64, threshold_rate: f64) -> usize {
        let cut = threshold_rate - forecast_rate;
        self.calibration
            .signed
            .partition_point(|residual| self.residual(*residual) < cut)
    }

    /// P(at least one free slot) for a lot of `capacity` slots: P(occupied <= capacity - 1).
    pub fn probability_free_slot(&self, forecast_rate: f64, capacity: f64) -> f64 {
        if capacity < 1.0 {
            return 0.0;
        }
        // occupied <= capacity - 1  <=>  rate <= 1 - 1/capacity; allow for float error on the grid.
        let full_rate = 1.0 - 0.5 / capacity;
        self.probability_below(forecast_rate, full_rate)
    }
}

/// Split-conformal calibration over a sliding time window: the residuals whose actuals became known
/// in the last `window_ms` before now.
///
/// A fixed calibration set goes stale when the level or the volatility of demand shifts (the weeks
/// before Christmas, a new tariff); sliding the window along with the forecast origin keeps the
/// exchangeability assumption local. Serving feeds it each residual when its target's actual
/// arrives; the backtest replays exactly that.
///
/// Absolute residuals (rates, so within [0, 1]) are counted in a Fenwick tree of [`ROLLING_BINS`]
/// bins: pushing, forgetting and the quantile are O(log bins), where a sorted vector cost O(window)
/// per push (a 200-lot city keeps 800k residuals per horizon in 14 days). The half-width is the
/// upper edge of the quantile's bin: at most 1/[`ROLLING_BINS`] wider than exact, never narrower,
/// so coverage is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct RollingCalibration {
    window: Window,
    histogram: Histogram,
}

/// Bins of [`RollingCalibration`]'s residual histogram over [0, 1].
pub const ROLLING_BINS: usize = 1 << 17;

/// The residuals of a sliding window, oldest first, with the times they became known.
///
/// Residuals come in bursts (every lot's target at one grid instant), so the times are kept as
/// runs: a residual costs its 8 bytes instead of the 16 of a (time, residual) pair, which is what a
/// backtest of a large city held most of.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    window_ms: i64,
    residuals: VecDeque<f64>,
    /// When `residuals` became known, as runs sharing an instant: (known_ms, how many).
    known: VecDeque<(i64, usize)>,
}

impl Window {
    fn new(window_ms: i64) -> Self {
        Window {
            window_ms,
            residuals: VecDeque::new(),
            known: VecDeque::new(),
        }
    }

    fn push(&mut self, known_ms: i64, residual: f64) {
        match self.known.back_mut() {
            Some((last_ms, run)) if *last_ms == known_ms => *run += 1,
            _ => self.known.push_back((known_ms, 1)),
        }
        self.residuals.push_back(residual);
    }

    /// Drops the residuals known at or before `now_ms - window`, handing each to `dropped`, oldest
    /// first.
    fn expire(&mut self, now_ms: i64, mut dropped: impl FnMut(f64)) {
        let oldest_kept = now_ms.saturating_sub(self.window_ms);
        while let Some(&(known_ms, run)) = self.known.front() {
            if known_ms > oldest_kept {
                break;
            }
            self.known.pop_front();
            for _ in 0..run {
                if let Some(residual) = self.residuals.pop_front() {
                    dropped(residual);
                }
            }
        }
    }
}

/// Absolute residuals counted in [`ROLLING_BINS`] bins of a Fenwick tree.
#[derive(Debug, Clone, PartialEq)]
struct Histogram {
    tree: Vec<u32>,
    count: usize,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            tree: vec![0; ROLLING_BINS + 1],
            count: 0,
        }
    }

    fn bin(residual: f64) -> usize {
        // Rates differ by at most 1; anything larger (bad data) lands in the last bin.
        ((residual.abs() * ROLLING_BINS as f64) as usize).min(ROLLING_BINS - 1)
    }

    fn update(&mut self, residual: f64, add: bool) {
        let mut position = Self::bin(residual) + 1;
        while position <= ROLLING_BINS {
            if add {
                self.tree[position] += 1;
            } else {
                self.tree[position] -= 1;
            }
            position += position & position.wrapping_neg();
        }
        if add {
            self.count += 1;
        } else {
            self.count -= 1;
        }
    }

    /// The bin holding the `rank`-th smallest absolute residual (1-based), by binary lifting.
    fn bin_of_rank(&self, rank: usize) -> usize {
        let (mut position, mut remaining) = (0, rank);
        let mut step = ROLLING_BINS;
        while step > 0 {
            let next = position + step;
            if next <= ROLLING_BINS && (self.tree[next] as usize) < remaining {
                position = next;
                remaining -= self.tree[next] as usize;
            }
            step /= 2;
        }
        position // 0-based bin index
    }

    fn half_width(&self, coverage: f64) -> Option<f64> {
        let n = self.count;
        if n == 0 {
            return None;
        }
        let bin = self.bin_of_rank(conformal_rank(n, coverage));
        Some((bin + 1) as f64 / ROLLING_BINS as f64)
    }

    fn interval(&self, forecast_rate: f64, coverage: f64) -> Option<(f64, f64)> {
        Some(interval_around(forecast_rate, self.half_width(coverage)?))
    }
}

impl RollingCalibration {
    /// An empty calibration keeping residuals for `window_ms`.
    pub fn new(window_ms: i64) -> Self {
        RollingCalibration {
            window: Window::new(window_ms),
            histogram: Histogram::new(),
        }
    }

    /// Adds the residual (actual - forecast) whose actual became known at `known_ms`; pushes should
    /// come in time order. Non-finite residuals are ignored.
    pub fn push(&mut self, known_ms: i64, residual: f64) {
        if !residual.is_finite() {
            return;
        }
        self.window.push(known_ms, residual);
        self.histogram.update(residual, true);
    }

    /// Drops residuals known at or before `now_ms - window`.
    pub fn advance_to(&mut self, now_ms: i64) {
        let histogram = &mut self.histogram;
        self.window
            .expire(now_ms, |residual| histogram.update(residual, false));
    }

    /// Residuals in the window.
    pub fn len(&self) -> usize {
        self.histogram.count
    }

    /// Whether the window holds no residual.
    pub fn is_empty(&self) -> bool {
        self.histogram.count == 0
    }

    /// Half-width of the interval at `coverage`: the upper edge of the conformal quantile's bin;
    /// `None` while empty.
    pub fn half_width(&self, coverage: f64) -> Option<f64> {
        self.histogram.half_width(coverage)
    }

    /// The interval at `coverage` around a forecast rate, clipped to [0, 1]; `None` while empty.
    pub fn interval(&self, forecast_rate: f64, coverage: f64) -> Option<(f64, f64)> {
        self.histogram.interval(forecast_rate, coverage)
    }

    /// A fixed calibration of the residuals now in the window (for probabilities and model files).
    pub fn snapshot(&self) -> Option<ResidualCalibration> {
        ResidualCalibration::fit(self.window.residuals.iter().copied())
    }
}

/// Which residuals calibrate an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum CalibrationScope {
    /// Every residual in the window (split conformal over all days).
    Pooled,
    /// The residuals of targets on the same day type (weekday, Saturday, Sunday or holiday), the
    /// pooled ones while a day type has too few.
    ///
    /// Day types are [`DayType`]'s; too few is fewer than [`MIN_CONDITIONAL_RESIDUALS`].
    #[default]
    DayType,
}

/// Residuals a day type needs before its own quantile replaces the pooled one: below this the 95%
/// quantile rests on a handful of residuals and is noisier than the pooled one is biased.
pub const MIN_CONDITIONAL_RESIDUALS: usize = 200;

/// [`RollingCalibration`] conditioned on the day type of the target.
///
/// Split conformal assumes test errors are exchangeable with calibration errors; a Saturday's or a
/// holiday's errors are not exchangeable with a weekday's (demand has another shape, and the
/// profile has fewer such days to learn from), so pooled intervals under-cover on them and
/// over-cover on weekdays. Calibrating each day type on its own residuals (Mondrian conformal
/// prediction, with the day type as the taxonomy) keeps the guarantee per day type.
///
/// The residuals are kept once, with a byte for their day type, and counted in the pooled
/// histogram and their day type's: 9 bytes a residual, where a window per day type next to the
/// pooled one cost 16 (a 200-lot backtest keeps 45 M of them).
#[derive(Debug, Clone, PartialEq)]
pub struct DayTypeCalibration {
    scope: CalibrationScope,
    window: Window,
    /// The day type of each residual of `window` ([`DayType::index`]); empty in the pooled scope.
    day_types: VecDeque<u8>,
    pooled: Histogram,
    by_type: Vec<Histogram>,
}

impl DayTypeCalibration {
    /// An empty calibration keeping residuals for `window_ms`.
    pub fn new(window_ms: i64, scope: CalibrationScope) -> Self {
        let by_type = match scope {
            CalibrationScope::Pooled => Vec::new(),
            CalibrationScope::DayType => DayType::ALL.iter().map(|_| Histogram::new()).collect(),
        };
        DayTypeCalibration {
            scope,
            window: Window::new(window_ms),
            day_types: VecDeque::new(),
            pooled: Histogram::new(),
            by_type,
        }
    }

    /// Adds the residual of a target on `day_type`, known at `known_ms` (pushes in time order).
    /// Non-finite residuals are ignored.
    pub fn push(&mut self, known_ms: i64, residual: f64, day_type: DayType) {
        if !residual.is_finite() {
            return;
        }
        self.window.push(known_ms, residual);
        self.pooled.update(residual, true);
        if let Some(histogram) = self.by_type.get_mut(day_type.index()) {
            histogram.update(residual, true);
            self.day_types.push_back(day_type.index() as u8);
        }
    }

    /// Drops residuals known at or before `now_ms - window`.
    pub fn advance_to(&mut self, now_ms: i64) {
        let (pooled, by_type, day_types) =
            (&mut self.pooled, &mut self.by_type, &mut self.day_types);
        self.window.expire(now_ms, |residual| {
            pooled.update(residual, false);
            if let Some(histogram) = day_types
                .pop_front()
                .and_then(|index| by_type.get_mut(usize::from(index)))
            {
                histogram.update(residual, false);
            }
        });
    }

    /// The day types with enough residuals of their own.
    fn own(&self) -> impl Iterator<Item = (DayType, &Histogram)> + Clone {
        self.by_type
            .iter()
            .zip(DayType::ALL)
            .filter(|(own, _)| own.count >= MIN_CONDITIONAL_RESIDUALS)
            .map(|(own, kind)| (kind, own))
    }

    /// The histogram an interval for a target on `day_type` reads; on a public `holiday` (day
    /// type scope only), the widest of the pooled one and the day types' own ([`widest`]).
    fn for_day(&self, day_type: DayType, holiday: bool) -> &Histogram {
        choose(&self.pooled, self.own(), day_type, holiday, |histogram| {
            histogram
                .half_width(HOLIDAY_SELECTION_COVERAGE)
                .unwrap_or(0.0)
        })
    }

    /// Half-width of the interval at `coverage` of a target on `day_type` (a public `holiday` or
    /// not); `None` while empty.
    pub fn half_width(&self, coverage: f64, day_type: DayType, holiday: bool) -> Option<f64> {
        self.for_day(day_type, holiday).half_width(coverage)
    }

    /// The interval at `coverage` around a forecast rate of a target on `day_type` (a public
    /// `holiday` or not); `None` while empty.
    pub fn interval(
        &self,
        forecast_rate: f64,
        coverage: f64,
        day_type: DayType,
        holiday: bool,
    ) -> Option<(f64, f64)> {
        self.for_day(day_type, holiday)
            .interval(forecast_rate, coverage)
    }

    /// The fixed calibration of the residuals now in the window: pooled, and per day type where one
    /// has enough residuals of its own; `None` while empty.
    pub fn snapshot(&self) -> Option<DayTypeResiduals> {
        let pooled = ResidualCalibration::fit(self.window.residuals.iter().copied())?;
        let kept: Vec<DayType> = self.own().map(|(day_type, _)| day_type).collect();
        let by_type = kept
            .into_iter()
            .filter_map(|day_type| {
                let residuals = self
                    .window
                    .residuals
                    .iter()
                    .zip(&self.day_types)
                    .filter(|(_, index)| usize::from(**index) == day_type.index())
                    .map(|(residual, _)| *residual);
                Some((day_type, ResidualCalibration::fit(residuals)?))
            })
            .collect();
        Some(DayTypeResiduals { pooled, by_type })
    }

    /// The scope it was built with.
    pub fn scope(&self) -> CalibrationScope {
        self.scope
    }
}

/// A fixed [`ResidualCalibration`] per day type, with the pooled one for day types that had too few
/// residuals: what a model file stores and serving reads, so an interval served on a Saturday is
/// calibrated the way the backtest calibrated it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DayTypeResiduals {
    /// Every residual.
    pub pooled: ResidualCalibration,
    /// The day types with at least [`MIN_CONDITIONAL_RESIDUALS`] residuals of their own.
    pub by_type: Vec<(DayType, ResidualCalibration)>,
}

impl DayTypeResiduals {
    /// Calibrates residuals labelled with their target's day type; `None` without a finite one.
    pub fn fit(
        residuals: impl IntoIterator<Item = (f64, DayType)>,
        scope: CalibrationScope,
    ) -> Option<Self> {
        let mut all = Vec::new();
        let mut own: [Vec<f64>; 3] = Default::default();
        for (residual, day_type) in residuals {
            all.push(residual);
            own[day_type.index()].push(residual);
        }
        let by_type = match scope {
            CalibrationScope::Pooled => Vec::new(),
            CalibrationScope::DayType => DayType::ALL
                .into_iter()
                .filter_map(|day_type| {
                    let residuals = std::mem::take(&mut own[day_type.index()]);
                    let calibration = ResidualCalibration::fit(residuals)?;
                    (calibration.len() >= MIN_CONDITIONAL_RESIDUALS)
                        .then_some((day_type, calibration))
                })
                .collect(),
        };
        Some(DayTypeResiduals {
            pooled: ResidualCalibration::fit(all)?,
            by_type,
        })
    }

    /// The calibration of a target on `day_type`: its own, else the pooled one; on a public
    /// `holiday` (day type scope only), the widest of them all ([`widest`]).
    pub fn for_day(&self, day_type: DayType, holiday: bool) -> &ResidualCalibration {
        calibration_of_day(&self.pooled, &self.by_type, day_type, holiday)
    }
}

/// The fixed calibration a target on `day_type` reads, given the pooled residuals and the day types
/// that have their own (what [`DayTypeResiduals`] and a model file hold): its own, else the pooled
/// one; on a public `holiday` the widest of them all ([`widest`]), unless there are no classes (the
/// pooled scope).
pub fn calibration_of_day<'a>(
    pooled: &'a ResidualCalibration,
    own: &'a [(DayType, ResidualCalibration)],
    day_type: DayType,
    holiday: bool,
) -> &'a ResidualCalibration {
    let own = own.iter().map(|(kind, calibration)| (*kind, calibration));
    choose(pooled, own, day_type, holiday, |calibration| {
        calibration.half_width(HOLIDAY_SELECTION_COVERAGE)
    })
}

/// The one rule both the rolling (backtest) and the fixed (model file) calibrations follow: the
/// target's day type's own calibration, else the pooled one; on a public `holiday`, the widest of
/// them all by `width` ([`widest`]), unless there are no classes (the pooled scope).
fn choose<'a, C>(
    pooled: &'a C,
    own: impl Iterator<Item = (DayType, &'a C)> + Clone,
    day_type: DayType,
    holiday: bool,
    width: impl Fn(&C) -> f64,
) -> &'a C {
    if holiday && own.clone().next().is_some() {
        let candidates = std::iter::once(pooled).chain(own.map(|(_, calibration)| calibration));
        return widest(candidates, width).unwrap_or(pooled);
    }
    own.into_iter()
        .find(|(kind, _)| *kind == day_type)
        .map_or(pooled, |(_, calibration)| calibration)
}

/// The coverage at which [`widest`] compares calibrations for a holiday: the app's central interval.
pub const HOLIDAY_SELECTION_COVERAGE: f64 = 0.8;

/// The calibration with the widest interval, for a target on a public holiday.
///
/// A holiday's errors are exchangeable neither with a Sunday's nor with another holiday's: Christmas
/// Day empties a city that Boxing Day's sales fill, and a 14-day calibration window seldom holds
/// another holiday to learn from. With no exchangeable residuals, the honest interval is the most
/// cautious one the model has: the day type (or the pooled residuals) whose interval at
/// [`HOLIDAY_SELECTION_COVERAGE`] is widest. One calibration is chosen, not a per-coverage maximum,
/// so the intervals and the probabilities of a holiday's answer read one distribution.
pub fn widest<'a, C>(
    candidates: impl IntoIterator<Item = &'a C>,
    width: impl Fn(&C) -> f64,
) -> Option<&'a C>
where
    C: 'a,
{
    candidates
        .into_iter()
        .map(|calibration| (width(calibration), calibration))
        .fold(
            None,
            |best: Option<(f64, &C)>, (width, calibration)| match best {
                Some((best_width, _)) if best_width >= width => best,
                _ => Some((width, calibration)),
            },
        )
        .map(|(_, calibration)| calibration)
}

/// Classes of target day [`AdaptiveScales`] adapts separately: the day types, then public
/// holidays (which the day-type scope calibrates on their own rule, [`widest`]).
pub const ADAPTIVE_CLASSES: usize = 4;

/// How many intervals [`AdaptiveScales`] holds a scale for ([`ADAPTIVE_COVERAGES`]).
pub const ADAPTIVE_LEVELS: usize = 2;

/// The coverages whose misses drive [`AdaptiveScales`], each its own scale: the app's central
/// interval and the wide one.
pub const ADAPTIVE_COVERAGES: [f64; ADAPTIVE_LEVELS] = [0.8, 0.95];

/// How fast [`AdaptiveScales`] moves, in log-scale per hour of targets all missed (or all covered)
/// beyond the nominal rate: a class whose 80% intervals miss half its targets for an hour widens by
/// e^(0.3 x 0.3) = 9%, for a day by 8.7x (capped at [`ADAPTIVE_MAX_SCALE`]).
pub const ADAPTIVE_RATE_PER_HOUR: f64 = 0.3;

/// The widest and narrowest factor [`AdaptiveScales`] applies: a bound on how far a burst of
/// misses (a sensor outage, a closed level) can move the intervals.
pub const ADAPTIVE_MAX_SCALE: f64 = 4.0;

/// The adaptive class of a target on `day_type` (a public `holiday` or not) under `scope`: every
/// target one class in the pooled scope, else its day type, or the holiday class.
pub fn adaptive_class(day_type: DayType, holiday: bool, scope: CalibrationScope) -> usize {
    match scope {
        CalibrationScope::Pooled => 0,
        CalibrationScope::DayType if holiday => ADAPTIVE_CLASSES - 1,
        CalibrationScope::DayType => day_type.index(),
    }
}

/// Adaptive conformal inference (Gibbs and Candès, 2021) on the scale of the residuals, per class
/// of target day and per interval.
///
/// Split conformal covers as promised only while test errors are exchangeable with the
/// calibration window's; a holiday the window never saw, a level shift or a new tariff break that,
/// and a sliding window catches up only as it slides. ACI closes the loop on the outcome: once a
/// grid step's targets are known, each class's log-scale of each coverage `c` of
/// [`ADAPTIVE_COVERAGES`] moves by `rate x step x (missed share - (1 - c))`, so an interval missing
/// more often than it should widens and one missing less narrows; whatever the drift, each class's
/// long-run miss rate of each interval is held at the nominal one. ACI runs one such loop per
/// coverage; a single scale driven by the 80% interval left the 95% interval's tail without a loop
/// of its own (Málaga's Sundays at 24 h: 92.7%). The original ACI moves the quantile level; moving
/// scales of the residuals ([`IntervalScale`]: one monotone map) keeps a single distribution behind
/// the 80% and 95% intervals and the probabilities of an answer. The backtest and the server run
/// this same update on the same outcomes: the backtest on every kept pair's residual as its target
/// is reached, the server on its live monitor's scores.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdaptiveScales {
    /// Natural log of each class's factor, per coverage of [`ADAPTIVE_COVERAGES`].
    pub log_scales: [[f64; ADAPTIVE_CLASSES]; ADAPTIVE_LEVELS],
}

impl Default for AdaptiveScales {
    fn default() -> Self {
        AdaptiveScales {
            log_scales: [[0.0; ADAPTIVE_CLASSES]; ADAPTIVE_LEVELS],
        }
    }
}

impl AdaptiveScales {
    /// The factors a class's residuals are scaled by (1 for an unknown class).
    pub fn scale(&self, class: usize) -> IntervalScale {
        let [central, wide] = self
            .log_scales
            .map(|logs| logs.get(class).map_or(1.0, |log| log.exp()));
        IntervalScale { central, wide }
    }

    /// Takes in one grid step's outcomes of a class for the interval at `ADAPTIVE_COVERAGES[level]`:
    /// `missed` of `checked` targets fell outside it; the step is `step_minutes` long. Nothing
    /// checked moves nothing.
    pub fn update(
        &mut self,
        class: usize,
        level: usize,
        missed: u64,
        checked: u64,
        step_minutes: u32,
    ) {
        let (Some(log), Some(coverage)) = (
            self.log_scales
                .get_mut(level)
                .and_then(|logs| logs.get_mut(class)),
            ADAPTIVE_COVERAGES.get(level),
        ) else {
            return;
        };
        if checked == 0 {
            return;
        }
        let missed_share = missed.min(checked) as f64 / checked as f64;
        let rate = ADAPTIVE_RATE_PER_HOUR * f64::from(step_minutes) / 60.0;
        let bound = ADAPTIVE_MAX_SCALE.ln();
        *log = (*log + rate * (missed_share - (1.0 - coverage))).clamp(-bound, bound);
    }
}

/// Whether a target fell outside its 80% and its 95% interval ([`ADAPTIVE_COVERAGES`]).
pub type Misses = [bool; ADAPTIVE_LEVELS];

/// One grid step's outcomes per adaptive class, summed before [`AdaptiveScales::update`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOutcomes {
    /// Per class: targets outside their 80% and their 95% interval, and targets checked.
    pub counts: [([u64; ADAPTIVE_LEVELS], u64); ADAPTIVE_CLASSES],
}

impl StepOutcomes {
    /// Records whether a target of `class` fell outside its intervals.
    pub fn record(&mut self, class: usize, missed: Misses) {
        if let Some((misses, checked)) = self.counts.get_mut(class) {
            for (count, missed) in misses.iter_mut().zip(missed) {
                *count += u64::from(missed);
            }
            *checked += 1;
        }
    }

    /// Applies the step to `scales` and clears it.
    pub fn apply(&mut self, scales: &mut AdaptiveScales, step_minutes: u32) {
        for (class, (missed, checked)) in std::mem::take(&mut self.counts).into_iter().enumerate() {
            for (level, missed) in missed.into_iter().enumerate() {
                scales.update(class, level, missed, checked, step_minutes);
            }
        }
    }
}

/// [`AdaptiveScales`] fed outcomes as they become known, one target at a time, in the order the
/// server's monitor (or the backtest's replay) meets them.
///
/// The update must move the scales once per grid step, however many scoring rounds deliver that
/// step's outcomes (a server scores each lot as its grid value arrives): outcomes are summed per
/// target instant, and an instant is applied once an outcome a step later arrives (a lot running
/// behind still joins its instant while it waits; later than that, its outcome is dropped). The
/// backtest feeds its replay through this same tracker, so both see the same one-step lag.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveTracker {
    scales: AdaptiveScales,
    step_minutes: u32,
    pending: std::collections::BTreeMap<i64, StepOutcomes>,
    /// Instants at or before this were applied.
    applied_until_ms: i64,
}

impl AdaptiveTracker {
    /// A tracker at scale 1 in every class for a grid of `step_minutes`.
    pub fn new(step_minutes: u32) -> Self {
        AdaptiveTracker {
            scales: AdaptiveScales::default(),
            step_minutes: step_minutes.max(1),
            pending: std::collections::BTreeMap::new(),
            applied_until_ms: i64::MIN,
        }
    }

    /// The scales as of the instants applied so far.
    pub fn scales(&self) -> &AdaptiveScales {
        &self.scales
    }

    /// Records whether the target at `target_ms` of `class` fell outside its intervals, and
    /// applies the instants a step or more before it.
    pub fn record(&mut self, target_ms: i64, class: usize, missed: Misses) {
        if target_ms <= self.applied_until_ms {
            return;
        }
        self.pending
            .entry(target_ms)
            .or_default()
            .record(class, missed);
        let due = target_ms - i64::from(self.step_minutes) * 60_000;
        while let Some(mut entry) = self.pending.first_entry() {
            if *entry.key() > due {
                break;
            }
            entry.get_mut().apply(&mut self.scales, self.step_minutes);
            self.applied_until_ms = *entry.key();
            entry.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A busy lot whose errors are four times a quiet one's: one calibration for both covers 80%
    /// of all pairs by missing the busy lot's and over-covering the quiet one's; in units of each
    /// lot's scale, each lot's own interval covers about 80%.
    #[test]
    fn lot_scales_give_each_lot_intervals_that_hold_for_it() {
        // Deterministic residuals: a symmetric spread of magnitudes per lot.
        let errors = |scale: f64| {
            (0..1_000).map(move |i| {
                let magnitude = scale * f64::from(i % 500) / 500.0;
                if i % 2 == 0 { magnitude } else { -magnitude }
            })
        };
        let residuals: Vec<(&str, f64)> = errors(0.01)
            .map(|residual| ("quiet", residual))
            .chain(errors(0.04).map(|residual| ("busy", residual)))
            .collect();
        let covers = |lot: &str, half_width: f64| {
            let own: Vec<f64> = residuals
                .iter()
                .filter(|(name, _)| *name == lot)
                .map(|(_, residual)| *residual)
                .collect();
            own.iter().filter(|r| r.abs() <= half_width).count() as f64 / own.len() as f64
        };
        let pooled = ResidualCalibration::fit(residuals.iter().map(|(_, r)| *r)).expect("fits");
        let width = pooled.half_width(0.8);
        assert!(covers("quiet", width) > 0.99, "{}", covers("quiet", width));
        assert!(covers("busy", width) < 0.65, "{}", covers("busy", width));

        let scales = lot_scales(residuals.iter().copied());
        // 1,000 residuals each, shrunk by 100 towards the pooled MAE.
        let quiet = (1_000.0 * 0.005 + 100.0 * 0.0125) / 1_100.0 / 0.0125;
        assert!((scales["quiet"] - quiet).abs() < 1e-3, "{scales:?}");
        assert!(scales["busy"] > 1.5 && scales["busy"] < 1.6, "{scales:?}");
        let normalised = ResidualCalibration::fit(
            residuals
                .iter()
                .map(|(lot, residual)| residual / scales[lot]),
        )
        .expect("fits");
        for lot in ["quiet", "busy"] {
            let cover = covers(lot, normalised.half_width(0.8) * scales[lot]);
            assert!((0.72..=0.88).contains(&cover), "{lot}: {cover}");
        }
    }

    #[test]
    fn lot_scales_are_bounded_and_ignore_what_is_not_a_number() {
        // Few residuals: mostly the pooled MAE. Many: the bounds.
        let few = lot_scales([("a", 1.0), ("b", 0.0), ("b", f64::NAN)]);
        assert!(
            (few["a"] - (1.0 + 50.0) / 101.0 / 0.5).abs() < 1e-12,
            "{few:?}"
        );
        assert!((few["b"] - 50.0 / 101.0 / 0.5).abs() < 1e-12, "{few:?}");
        let mut many: Vec<(&str, f64)> = vec![("calm", 0.0); 100_000];
        many.extend(std::iter::repeat_n(("wild", 1.0), 1_000));
        let bounded = lot_scales(many);
        assert_eq!(bounded["calm"], LOT_SCALE_BOUNDS.0);
        assert_eq!(bounded["wild"], LOT_SCALE_BOUNDS.1);
        // No error anywhere: every lot at 1; none at all: no lot.
        assert_eq!(
            lot_scales([("a", 0.0), ("b", 0.0)]),
            [("a", 1.0), ("b", 1.0)].into()
        );
        assert!(lot_scales(std::iter::empty::<(u8, f64)>()).is_empty());
        // Composed with an adaptive scale, factor by factor.
        let composed = IntervalScale {
            central: 2.0,
            wide: 3.0,
        }
        .then(IntervalScale::uniform(0.5));
        assert_eq!(
            composed,
            IntervalScale {
                central: 1.0,
                wide: 1.5
            }
        );
    }

    #[test]
    fn a_tracker_moves_once_per_grid_step_however_its_outcomes_arrive() {
        let step = 15 * 60_000;
        // All of a step's outcomes at once, or one lot at a time: the same scales.
        let mut at_once = AdaptiveTracker::new(15);
        let mut one_by_one = AdaptiveTracker::new(15);
        for instant in 1..=8i64 {
            let target = instant * step;
            for lot in 0..10 {
                let missed = lot < 5;
                at_once.record(target, 2, [missed, false]);
                one_by_one.record(target, 2, [missed, false]);
            }
        }
        assert_eq!(at_once, one_by_one);
        // Seven instants applied (the eighth waits for a later one): e^(7 x 0.3/4 x 0.3).
        let expected = (7.0 * 0.3 / 4.0 * 0.3f64).exp();
        assert!((at_once.scales().scale(2).central - expected).abs() < 1e-9);
        // A lot a step behind still joins its instant; one two steps behind is dropped.
        let mut late = AdaptiveTracker::new(15);
        late.record(step, 0, [false; 2]);
        late.record(2 * step, 0, [false; 2]);
        late.record(step, 0, [true; 2]); // applied already: dropped
        late.record(3 * step, 0, [false; 2]);
        late.record(2 * step, 0, [true; 2]); // applied when 3 arrived: dropped
        late.record(4 * step, 0, [false; 2]);
        let mut on_time = AdaptiveTracker::new(15);
        for instant in 1..=4 {
            on_time.record(instant * step, 0, [false; 2]);
        }
        assert_eq!(late.scales(), on_time.scales());
        let mut straggler = AdaptiveTracker::new(15);
        straggler.record(2 * step, 0, [false; 2]);
        straggler.record(step, 0, [true; 2]); // before 2 is applied: joins its own instant
        straggler.record(3 * step, 0, [false; 2]);
        assert!(straggler.scales().scale(0).central > on_time.scales().scale(0).central);
    }

    #[test]
    fn adaptive_scales_widen_on_misses_narrow_on_hits_and_hold_the_nominal_rate() {
        let mut scales = AdaptiveScales::default();
        assert_eq!(scales.scale(2).central, 1.0);
        // An hour of 15-minute steps at the nominal miss rate moves nothing.
        for _ in 0..4 {
            scales.update(2, 0, 20, 100, 15);
        }
        assert!((scales.scale(2).central - 1.0).abs() < 1e-12);
        // An hour missing half: e^(0.3 x 0.3).
        for _ in 0..4 {
            scales.update(2, 0, 50, 100, 15);
        }
        assert!((scales.scale(2).central - (0.3f64 * 0.3).exp()).abs() < 1e-9);
        assert_eq!(scales.scale(0).central, 1.0, "other classes keep theirs");
        // Bounded both ways; nothing checked moves nothing; unknown classes are ignored.
        for _ in 0..10_000 {
            scales.update(2, 0, 1, 1, 60);
            scales.update(1, 0, 0, 1, 60);
        }
        assert!((scales.scale(2).central - ADAPTIVE_MAX_SCALE).abs() < 1e-9);
        assert!((scales.scale(1).central - 1.0 / ADAPTIVE_MAX_SCALE).abs() < 1e-9);
        let before = scales;
        scales.update(0, 0, 0, 0, 15);
        scales.update(ADAPTIVE_CLASSES, 0, 5, 5, 15);
        assert_eq!(scales, before);
        assert_eq!(scales.scale(ADAPTIVE_CLASSES).central, 1.0);
        // A step's outcomes are summed per class, then applied once.
        let mut step = StepOutcomes::default();
        let mut fresh = AdaptiveScales::default();
        for missed in [true, false, false, false] {
            step.record(0, [missed, false]);
        }
        step.apply(&mut fresh, 60);
        assert!((fresh.scale(0).central - (0.3f64 * 0.05).exp()).abs() < 1e-12);
        // The 95% interval, never missed, narrows on its own: e^(0.3 x -0.05).
        assert!((fresh.scale(0).wide - (0.3f64 * -0.05).exp()).abs() < 1e-12);
        assert_eq!(step, StepOutcomes::default());
        // Classes: pooled is one; holidays their own.
        assert_eq!(
            adaptive_class(DayType::Saturday, true, CalibrationScope::Pooled),
            0
        );
        assert_eq!(
            adaptive_class(DayType::Saturday, false, CalibrationScope::DayType),
            1
        );
        assert_eq!(
            adaptive_class(DayType::Weekday, true, CalibrationScope::DayType),
            3
        );
    }

    #[test]
    fn rolling_calibration_forgets_old_residuals_and_matches_the_fixed_one() {
        let mut rolling = RollingCalibration::new(100);
        assert_eq!(rolling.interval(0.5, 0.8), None);
        for (at, residual) in [
            (10, 0.30),
            (20, -0.01),
            (30, 0.02),
            (40, f64::NAN),
            (50, -0.03),
        ] {
            rolling.push(at, residual);
        }
        assert_eq!(rolling.len(), 4);
        let fixed = ResidualCalibration::fit([0.30, -0.01, 0.02, -0.03]).expect("residuals");
        let bin = 1.0 / ROLLING_BINS as f64;
        let close = |(a, b): (f64, f64), (c, d): (f64, f64)| {
            // Never narrower than exact, at most one bin wider.
            a <= c + 1e-15 && a >= c - bin && b >= d - 1e-15 && b <= d + bin
        };
        let interval = rolling.interval(0.5, 0.8).expect("residuals");
        assert!(close(interval, fixed.interval(0.5, 0.8)), "{interval:?}");
        rolling.advance_to(110); // drops the residual known at 10
        assert_eq!(rolling.len(), 3);
        let interval = rolling.interval(0.5, 0.99).expect("residuals");
        assert!(close(interval, (0.47, 0.53)), "{interval:?}");
        assert_eq!(rolling.snapshot().map(|c| c.len()), Some(3));
        rolling.advance_to(1_000);
        assert!(rolling.is_empty());
    }

    #[test]
    fn a_holiday_reads_the_widest_calibration_in_backtest_and_in_the_fixed_file() {
        let mut calibration = DayTypeCalibration::new(i64::MAX, CalibrationScope::DayType);
        // Quiet Sundays err by 0.01, weekdays by 0.05, Saturdays by 0.1 (too few of their own).
        for at in 0..(MIN_CONDITIONAL_RESIDUALS as i64 * 4) {
            calibration.push(at, 0.05, DayType::Weekday);
        }
        for at in 0..(MIN_CONDITIONAL_RESIDUALS as i64) {
            calibration.push(at, -0.01, DayType::SundayOrHoliday);
        }
        for at in 0..50 {
            calibration.push(at, 0.1, DayType::Saturday);
        }
        let half = |interval: Option<(f64, f64)>| {
            let (low, high) = interval.expect("residuals");
            (high - low) / 2.0
        };
        // A Sunday reads the Sundays; a holiday on any day reads the weekdays, the widest at 80%
        // (the Saturdays have too few residuals to be a class; the pooled 80% is 0.05 too).
        let sunday = half(calibration.interval(0.5, 0.8, DayType::SundayOrHoliday, false));
        assert!(sunday < 0.011, "{sunday}");
        for day_type in DayType::ALL {
            let holiday = half(calibration.interval(0.5, 0.8, day_type, true));
            assert!((0.049..0.051).contains(&holiday), "{day_type:?}: {holiday}");
        }
        let fixed = calibration.snapshot().expect("residuals");
        let on_holiday = fixed
            .for_day(DayType::SundayOrHoliday, true)
            .half_width(0.8);
        assert!((0.049..0.051).contains(&on_holiday), "{on_holiday}");
        assert!(
            fixed
                .for_day(DayType::SundayOrHoliday, false)
                .half_width(0.8)
                < 0.011
        );
        // The pooled scope has no classes: a holiday reads the pooled residuals like any day.
        let pooled = DayTypeResiduals::fit(
            [(0.05, DayType::Weekday), (0.3, DayType::Saturday)],
            CalibrationScope::Pooled,
        )
        .expect("residuals");
        assert!(std::ptr::eq(
            pooled.for_day(DayType::Weekday, true),
            &pooled.pooled
        ));
        assert_eq!(widest::<f64>([], |width| *width), None);
        assert_eq!(widest(&[0.1, 0.3, 0.3, 0.2], |width| *width), Some(&0.3));
    }

    #[test]
    fn day_type_calibration_reads_its_own_residuals_once_it_has_enough() {
        let mut calibration = DayTypeCalibration::new(i64::MAX, CalibrationScope::DayType);
        // Weekdays err by 0.01, Saturdays by 0.2.
        for at in 0..(MIN_CONDITIONAL_RESIDUALS as i64 * 4) {
            calibration.push(at, 0.01, DayType::Weekday);
        }
        for at in 0..(MIN_CONDITIONAL_RESIDUALS as i64 - 1) {
            calibration.push(at, -0.2, DayType::Saturday);
        }
        let half = |interval: Option<(f64, f64)>| {
            let (low, high) = interval.expect("residuals");
            (high - low) / 2.0
        };
        // One short of the minimum: Saturdays read the pooled residuals (80% of which are 0.01).
        assert!(half(calibration.interval(0.5, 0.8, DayType::Saturday, false)) < 0.02);
        calibration.push(1_000_000, -0.2, DayType::Saturday);
        assert!(half(calibration.interval(0.5, 0.8, DayType::Saturday, false)) > 0.19);
        assert!(half(calibration.interval(0.5, 0.8, DayType::Weekday, false)) < 0.02);
        // No Sunday residual: the pooled ones, whose 95% quantile reaches the Saturdays'.
        assert!(half(calibration.interval(0.5, 0.95, DayType::SundayOrHoliday, false)) > 0.19);
        let fixed = calibration.snapshot().expect("residuals");
        assert_eq!(fixed.pooled.len(), MIN_CONDITIONAL_RESIDUALS * 5);
        let types: Vec<DayType> = fixed
            .by_type
            .iter()
            .map(|(day_type, _)| *day_type)
            .collect();
        assert_eq!(types, vec![DayType::Weekday, DayType::Saturday]);
        // The fixed calibration picks as the rolling one did (exact quantiles, not binned ones).
        assert!(fixed.for_day(DayType::Saturday, false).half_width(0.8) > 0.19);
        assert!(fixed.for_day(DayType::Weekday, false).half_width(0.8) < 0.02);
        assert!(
            fixed
                .for_day(DayType::SundayOrHoliday, false)
                .half_width(0.95)
                > 0.19
        );
        let labelled = (0..MIN_CONDITIONAL_RESIDUALS * 4)
            .map(|_| (0.01, DayType::Weekday))
            .chain((0..MIN_CONDITIONAL_RESIDUALS).map(|_| (-0.2, DayType::Saturday)));
        let fitted = DayTypeResiduals::fit(labelled, CalibrationScope::DayType).expect("residuals");
        assert_eq!(fitted, fixed);

        let mut pooled_only = DayTypeCalibration::new(i64::MAX, CalibrationScope::Pooled);
        for at in 0..(MIN_CONDITIONAL_RESIDUALS as i64 * 4) {
            pooled_only.push(at, 0.01, DayType::Weekday);
            pooled_only.push(at, -0.2, DayType::Saturday);
        }
        assert_eq!(
            pooled_only.interval(0.5, 0.8, DayType::Weekday, true),
            pooled_only.interval(0.5, 0.8, DayType::Saturday, false)
        );
        assert!(
            pooled_only
                .snapshot()
                .expect("residuals")
                .by_type
                .is_empty()
        );
    }

    #[test]
    fn a_scaled_calibration_narrows_from_the_full_horizon_to_nothing() {
        let calibration = ResidualCalibration::fit([-0.2, -0.1, 0.0, 0.1, 0.2]).expect("residuals");
        let full = calibration.scaled(IntervalScale::ONE);
        assert_eq!(full.interval(0.5, 0.8), calibration.interval(0.5, 0.8));
        assert_eq!(full.probability_below(0.5, 0.57), 0.6);
        // Half the horizon: residuals -0.1 .. 0.1, so 0.57 lies above four of five outcomes.
        let half = calibration.scaled(IntervalScale::uniform(0.5));
        assert_eq!(half.interval(0.5, 0.8), (0.4, 0.6));
        assert_eq!(half.probability_below(0.5, 0.57), 0.8);
        assert_eq!(half.probability_at_least(0.5, 0.57), 0.2);
        // Now: the forecast is the reading itself.
        let now = calibration.scaled(IntervalScale::uniform(0.0));
        assert_eq!(now.interval(0.5, 0.95), (0.5, 0.5));
        assert_eq!(now.probability_below(0.5, 0.55), 1.0);
        assert_eq!(now.probability_below(0.5, 0.5), 0.0);
        assert_eq!(now.probability_free_slot(1.0, 10.0), 0.0);
        assert_eq!(
            calibration
                .scaled(IntervalScale::uniform(f64::NAN))
                .interval(0.5, 0.8),
            full.interval(0.5, 0.8)
        );
    }

    proptest! {
        #[test]
        fn rolling_quantiles_match_the_sorted_ones(
            residuals in proptest::collection::vec(-1.0f64..1.0, 1..200),
            coverage in 0.05f64..0.99,
        ) {
            let mut rolling = RollingCalibration::new(i64::MAX);
            for (at, residual) in residuals.iter().enumerate() {
                rolling.push(at as i64, *residual);
            }
            let fixed = ResidualCalibration::fit(residuals.iter().copied()).expect("residuals");
            let exact = fixed.half_width(coverage);
            let (low, high) = rolling.interval(0.5, coverage).expect("residuals");
            let half = (high - 0.5).max(0.5 - low);
            // Clipping to [0, 1] can shorten one side only.
            prop_assert!(half >= exact.min(0.5) - 1e-12);
            prop_assert!(half <= exact + 1.0 / ROLLING_BINS as f64 + 1e-12);
        }
    }

    #[test]
    fn intervals_use_the_conformal_quantile_and_stay_within_bounds() {
        // Absolute residuals 0.01 .. 0.10.
        let calibration = ResidualCalibration::fit((1..=10).map(|i| {
            if i % 2 == 0 {
                0.01 * f64::from(i)
            } else {
                -0.01 * f64::from(i)
            }
        }))
        .expect("residuals");
        // ceil(11 * 0.8) = 9th smallest absolute residual.
        assert!((calibration.half_width(0.8) - 0.09).abs() < 1e-12);
        // ceil(11 * 0.95) = 11 > n: the largest.
        assert!((calibration.half_width(0.95) - 0.10).abs() < 1e-12);
        let (low, high) = calibration.interval(0.97, 0.8);
        assert!((low - 0.88).abs() < 1e-12 && high == 1.0);
        assert_eq!(calibration.interval(0.02, 0.8).0, 0.0);
    }

    #[test]
    fn probabilities_read_the_residual_distribution() {
        // Binary-exact values, so the comparisons at the cut are exact.
        let calibration =
            ResidualCalibration::fit([-0.5, -0.25, 0.0, 0.25, 0.5]).expect("residuals");
        assert_eq!(calibration.probability_at_least(0.5, 0.75), 0.4); // residuals 0.25 and 0.5
        assert_eq!(calibration.probability_below(0.5, 0.25), 0.2); // residual -0.5
        // A lot of 4 with a forecast of 75%: a free slot means at most 3.5 occupied (rounding to 3),
        // rate < 0.875, residual < 0.125: 3 of 5.
        assert_eq!(calibration.probability_free_slot(0.75, 4.0), 0.6);
        assert_eq!(calibration.probability_free_slot(0.5, 0.0), 0.0);
        assert!(ResidualCalibration::fit([f64::NAN]).is_none());
    }

    proptest! {
        #[test]
        fn probabilities_are_probabilities_and_monotone(
            residuals in proptest::collection::vec(-1.0f64..1.0, 1..200),
            forecast in 0.0f64..1.0,
            low in 0.0f64..1.0,
            high in 0.0f64..1.0,
        ) {
            let calibration = ResidualCalibration::fit(residuals).expect("non-empty");
            let (low, high) = (low.min(high), low.max(high));
            let at_least_low = calibration.probability_at_least(forecast, low);
            let at_least_high = calibration.probability_at_least(forecast, high);
            prop_assert!((0.0..=1.0).contains(&at_least_low));
            prop_assert!(at_least_high <= at_least_low);
            let (interval_low, interval_high) = calibration.interval(forecast, 0.8);
            prop_assert!(0.0 <= interval_low && interval_low <= forecast && forecast <= interval_high && interval_high <= 1.0);
            prop_assert!(calibration.half_width(0.8) <= calibration.half_width(0.95));
        }

        #[test]
        fn any_two_scales_keep_one_distribution_behind_intervals_and_probabilities(
            residuals in proptest::collection::vec(-1.0f64..1.0, 1..200),
            forecast in 0.0f64..1.0,
            central in 0.25f64..4.0,
            wide in 0.25f64..4.0,
            thresholds in proptest::collection::vec(-0.5f64..1.5, 2..20),
        ) {
            let calibration = ResidualCalibration::fit(residuals).expect("non-empty");
            let scaled = calibration.scaled(IntervalScale { central, wide });
            let mut thresholds = thresholds;
            thresholds.sort_by(f64::total_cmp);
            let below: Vec<f64> = thresholds
                .iter()
                .map(|threshold| scaled.probability_below(forecast, *threshold))
                .collect();
            prop_assert!(below.windows(2).all(|pair| pair[0] <= pair[1]));
            let (low_80, high_80) = scaled.interval(forecast, 0.8);
            let (low_95, high_95) = scaled.interval(forecast, 0.95);
            prop_assert!(low_95 <= low_80 && high_80 <= high_95, "the 95% interval holds the 80%");
            // The outcomes inside each interval are those inside it unscaled: the map keeps every
            // residual on its side of each half-width.
            let inside = |scaled: ScaledCalibration<'_>, coverage: f64| {
                let [central_knot, wide_knot] = scaled.knots;
                let knot = if coverage == 0.8 { central_knot } else { wide_knot };
                let half = scaled.scale.magnitude(knot, scaled.knots);
                calibration
                    .signed
                    .iter()
                    .filter(|residual| scaled.residual(**residual).abs() <= half)
                    .count()
            };
            for coverage in [0.8, 0.95] {
                prop_assert_eq!(
                    inside(scaled, coverage),
                    inside(calibration.scaled(IntervalScale::ONE), coverage)
                );
            }
        }
    }

    #[test]
    fn a_wide_scale_moves_the_95_interval_alone() {
        let residuals: Vec<f64> = (-100..=100).map(|i| f64::from(i) / 1000.0).collect();
        let calibration = ResidualCalibration::fit(residuals).expect("residuals");
        let q95 = calibration.half_width(0.95);
        let rate = 0.5;
        let wider = calibration.scaled(IntervalScale {
            central: 1.0,
            wide: 2.0,
        });
        assert_eq!(wider.interval(rate, 0.8), calibration.interval(rate, 0.8));
        let (low, high) = wider.interval(rate, 0.95);
        assert!((high - rate - 2.0 * q95).abs() < 1e-12 && (rate - low - 2.0 * q95).abs() < 1e-12);
        // Outcomes beyond the 95% half-width move out with it: P(rate < 0.5 - 2 x q95) is the
        // share of residuals below -q95, as unscaled P(rate < 0.5 - q95) is.
        assert_eq!(
            wider.probability_below(rate, rate - 2.0 * q95 - 1e-12),
            calibration.probability_below(rate, rate - q95 - 1e-12)
        );
        // A wide factor under the central one narrows the tail only: beyond the 80% half-width.
        let q80 = calibration.half_width(0.8);
        let narrow = calibration.scaled(IntervalScale {
            central: 1.0,
            wide: 0.5,
        });
        assert_eq!(narrow.interval(rate, 0.8), calibration.interval(rate, 0.8));
        let (_, high) = narrow.interval(rate, 0.95);
        assert!((high - rate - (q80 + 0.5 * (q95 - q80))).abs() < 1e-12);
        assert_eq!(
            IntervalScale::uniform(1.5).half_widths([0.1, 0.2]),
            [0.1 * 1.5, 0.2 * 1.5]
        );
    }
}
