//! Live accuracy recomputed from the archive: the monitor the server runs
//! ([`crate::quality::QualityMonitor`]), fed a model's forecasts and the actuals from the
//! warehouse the archive keeps, in the order the server meets them: for every grid instant, each
//! lot's session entries and exits up to it, then its grid value (scored against the forecasts
//! that targeted it), then the model's forecast from it. The features come from the same
//! incremental state and the forecast from the same call as in the scorer, so a server that saw
//! the same stream reports the same figures; planners use it to look back over days the server
//! was not watching (`parkcast models quality`), and the tests to stage a regime shift.

use std::collections::BTreeMap;

use parkcast_warehouse::lots::LotInputs;

use crate::live::GRID_HISTORY_MS;
use crate::quality::{HOUR_MS, QualityConfig, QualityMonitor};
use crate::scoring::{ServedModel, issue_forecast, quality_monitor, served_forecast};

/// The stretch of the stream a recomputation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// The monitor starts here, as on a server that activated the model at this instant with no
    /// monitor before it: no forecast issued yet, the adaptive interval scales at 1.
    pub start_ms: i64,
    /// The first instant reported to `each_hour`. What the monitor learned since `start_ms` (its
    /// scales, its forecasts in flight, its windows) carries over, as on a server that has been
    /// running since then; a report that starts where the monitor does meets scales at 1.
    pub report_from_ms: i64,
    /// The end, exclusive.
    pub until_ms: i64,
}

impl Period {
    /// Reported from where it starts.
    pub fn new(from_ms: i64, until_ms: i64) -> Self {
        Period {
            start_ms: from_ms,
            report_from_ms: from_ms,
            until_ms,
        }
    }
}

/// Feeds `lots` (in id order: a lot's index is its position) through `served` and a monitor
/// judged with `config`: the history the features need before `period.start_ms`, then every grid
/// instant in `[start_ms, until_ms)` scored and forecast. `each_hour` sees the monitor once per
/// hour of the stream from `report_from_ms` on, once every lot's value at the hour's first grid
/// instant is in (the first moment the server's report can judge the hour before whole). Lots the
/// model does not know are left out. Returns the monitor.
pub fn recompute(
    served: &ServedModel,
    lots: &BTreeMap<String, LotInputs>,
    period: Period,
    config: QualityConfig,
    mut each_hour: impl FnMut(i64, &QualityMonitor),
) -> QualityMonitor {
    let Period {
        start_ms,
        report_from_ms,
        until_ms,
    } = period;
    let lot_ids: Vec<&str> = lots.keys().map(String::as_str).collect();
    let mut monitor = quality_monitor(served, &lot_ids, config);
    let history_from = start_ms - GRID_HISTORY_MS;
    let mut states: Vec<_> = lots
        .keys()
        .map(|lot_id| served.model.new_state(lot_id))
        .collect();
    // Per lot: its session entries and exits in time order, and how far each was fed.
    let mut sessions: Vec<(Vec<i64>, Vec<i64>, usize, usize)> = lots
        .values()
        .map(|lot| {
            let mut arrivals = lot.arrivals_ms.clone();
            let mut departures = lot.departures_ms.clone();
            arrivals.sort_unstable();
            departures.sort_unstable();
            let fed = (
                arrivals.partition_point(|at| *at <= history_from),
                departures.partition_point(|at| *at <= history_from),
            );
            (arrivals, departures, fed.0, fed.1)
        })
        .collect();
    let mut instants: Vec<i64> = lots
        .values()
        .flat_map(|lot| lot.series.iter().map(|(instant, _)| instant))
        .filter(|instant| (history_from + 1..until_ms).contains(instant))
        .collect();
    instants.sort_unstable();
    instants.dedup();
    let mut last_hour = None;
    for instant in instants {
        for (index, (lot_id, lot)) in lots.iter().enumerate() {
            let (Some(state), Some(value)) = (&mut states[index], lot.series.at(instant)) else {
                continue;
            };
            let (arrivals, departures, next_arrival, next_departure) = &mut sessions[index];
            while *next_arrival < arrivals.len() && arrivals[*next_arrival] <= instant {
                state.push_arrival(arrivals[*next_arrival]);
                *next_arrival += 1;
            }
            while *next_departure < departures.len() && departures[*next_departure] <= instant {
                state.push_departure(departures[*next_departure]);
                *next_departure += 1;
            }
            state.push_value(instant, value);
            if instant < start_ms {
                continue;
            }
            if value.capacity > 0.0 {
                monitor.observe(index, instant, value.rate());
            }
            if let Some(forecast) = served_forecast(served, state, Some(&monitor), index) {
                issue_forecast(&mut monitor, served, index, lot_id, &forecast);
            }
        }
        if instant >= report_from_ms.max(start_ms) {
            let hour = instant.div_euclid(HOUR_MS);
            if last_hour != Some(hour) {
                each_hour(instant, &monitor);
            }
            last_hour = Some(hour);
        }
    }
    monitor
}
