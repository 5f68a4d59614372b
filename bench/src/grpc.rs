//! `bench grpc`: how fast a running server answers (the open-loop sweep, see `sweep`), and how soon
//! a reading produced to the broker shows in its answers (produce -> visible, see `visibility`),
//! each against the targets: p99 under 2 ms at 5k requests/s on loopback, the rate where
//! p99 crosses 10 ms, and produce -> visible p99 under 100 ms at 10k events/s.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use parkcast_kafka::KafkaConfig;
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::topology::Topology;

use crate::client::preflight;
use crate::measure::logical_cores;
use crate::sweep::{
    CROSSING_P99, Crossing, SweepRow, TARGET_P99, TARGET_RATE, WARM_UP, crossing, lone_spikes,
    request_sweep, sweep_table,
};
use crate::table::{millis, thousands};
use crate::visibility::{
    MAX_CLOCK_RATE, TARGET_EVENT_RATE, TARGET_VISIBLE_P99, VisibilityLoad, VisibilityRow,
    start_stream, visibility_table,
};
use crate::{Error, Report};

/// What `bench grpc` asks of the server, and how hard.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct GrpcOptions {
    /// Server address (`http://host:port`).
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "PARKCAST_GRPC_ADDR"
    )]
    pub addr: String,
    /// Warehouse the server serves (its `dim_slot` lists the lots and slots); needed for the
    /// produce -> visible part.
    #[arg(long, short = 'w')]
    pub warehouse: Option<PathBuf>,
    /// Lots to ask about (comma-separated; default: every lot of the warehouse).
    #[arg(long, value_delimiter = ',')]
    pub lots: Vec<String>,
    /// Horizons asked for, minutes ahead (comma-separated). When the server refuses horizons (no
    /// scoring path yet), the sweep asks for the live picture only and says so.
    #[arg(long, value_delimiter = ',', default_value = "30,60")]
    pub horizons: Vec<u32>,
    /// Ask for the live picture only (no horizons).
    #[arg(long)]
    pub now_only: bool,
    /// Target request rates of the sweep, requests/s (comma-separated), measured in increasing
    /// order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,5000,10000,15000,20000,30000,40000"
    )]
    pub rates: Vec<u32>,
    /// Measured seconds per rate (after a 0.5 s warm-up).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Whether the request sweep runs; `--no-sweep` skips it (only produce -> visible).
    #[arg(long = "no-sweep", action = clap::ArgAction::SetFalse)]
    pub sweep: bool,
    /// The broker the server reads; without it the produce -> visible part is skipped. (The CLI
    /// sets it from its broker flags.)
    #[arg(skip)]
    pub kafka: Option<KafkaConfig>,
    /// Heartbeats produced per second during the produce -> visible part.
    #[arg(long, default_value_t = 10_000)]
    pub event_rate: u32,
    /// Probes (produced flips) per second.
    #[arg(long, default_value_t = 20)]
    pub probes: u32,
    /// Seconds of the produce -> visible part.
    #[arg(long, default_value_t = 10.0)]
    pub visibility_seconds: f64,
    /// How fast the readings' event times advance, in server-clock seconds per wall second,
    /// starting from the server's clock. Above 1 only against a server on `--clock stream` (a
    /// wall-clock server refuses readings from its future): its forecasting grid then steps that
    /// much more often, so the scorer works (for the active model, its monitor and any shadow)
    /// while the delay is measured.
    #[arg(long, default_value_t = 1)]
    pub clock_rate: u32,
    /// Start the produce -> visible part's stream (priming, then heartbeats) before the sweep, so
    /// the sweep measures a server that ingests (and, with `--clock-rate`, scores) while it
    /// answers; the probes follow the sweep as usual. Needs the broker.
    #[arg(long)]
    pub sweep_under_load: bool,
}

impl GrpcOptions {
    /// Checks the options without touching the network or the warehouse.
    pub fn validate(&self) -> Result<(), Error> {
        if self.rates.is_empty() || self.rates.contains(&0) {
            return Err(Error::NoRates);
        }
        if self.connections == 0 {
            return Err(Error::NoConnections);
        }
        if self.lots.is_empty() && self.warehouse.is_none() {
            return Err(Error::NoLots);
        }
        if self.sweep && !(self.seconds.is_finite() && self.seconds > 0.0) {
            return Err(Error::SweepSeconds(self.seconds));
        }
        if self.sweep_under_load && self.kafka.is_none() {
            return Err(Error::LoadNeedsBroker);
        }
        if let Some(kafka) = &self.kafka {
            if self.warehouse.is_none() {
                return Err(Error::VisibilityNeedsWarehouse);
            }
            kafka.validate().map_err(Error::Kafka)?;
            if visibility_duration(self.visibility_seconds).is_none() {
                return Err(Error::VisibilitySeconds(self.visibility_seconds));
            }
            if self.probes == 0 {
                return Err(Error::NoProbes);
            }
            if !(1..=MAX_CLOCK_RATE).contains(&self.clock_rate) {
                return Err(Error::ClockRate {
                    rate: self.clock_rate,
                    max: MAX_CLOCK_RATE,
                });
            }
        }
        Ok(())
    }
}

fn visibility_duration(seconds: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|duration| !duration.is_zero())
}

/// Runs `bench grpc`: the sweep (unless turned off), then produce -> visible (with a broker), then
/// one line against the targets.
pub fn grpc(options: &GrpcOptions) -> Result<Report, Error> {
    options.validate()?;
    let mut rates = options.rates.clone();
    rates.sort_unstable();
    rates.dedup();
    let topology = topology(options)?;
    let lots: Vec<String> = match &topology {
        Some(lots) => lots.iter().map(|(lot_id, _)| lot_id.clone()).collect(),
        None => options.lots.clone(),
    };
    if lots.is_empty() {
        return Err(Error::NoLots);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let mut report = Report::new();
    report.push(format_args!(
        "server {}; {} lots; {} logical cores shared by this client and the server (the issue's \
         setup: the client's own CPU use is part of every figure)",
        options.addr,
        thousands(lots.len() as u64),
        logical_cores()
    ));
    let load = VisibilityLoad {
        event_rate: options.event_rate,
        // Checked by validate() whenever there is a broker, the only case it is used in.
        duration: visibility_duration(options.visibility_seconds).unwrap_or_default(),
        probes_per_second: options.probes,
        clock_rate: options.clock_rate,
    };
    let stream_source = match (&options.kafka, &topology) {
        (Some(kafka), Some(lots_and_slots)) => Some((kafka, lots_and_slots)),
        _ => None,
    };
    let start = |(kafka, lots_and_slots): (&KafkaConfig, &LotsAndSlots)| {
        runtime.block_on(start_stream(kafka, &options.addr, lots_and_slots, &load))
    };
    let mut stream = None;
    if options.sweep_under_load
        && let Some(source) = stream_source
    {
        stream = Some(start(source)?);
        report.push(format_args!(
            "the sweep runs while {}/s heartbeats flow on {} at {} x the server's clock",
            thousands(u64::from(load.event_rate)),
            source.0.topics.sensor,
            load.clock_rate
        ));
    }
    let rows = if options.sweep {
        let rows = runtime.block_on(async {
            let horizons = if options.now_only {
                Vec::new()
            } else {
                let checked = preflight(&options.addr, &lots[0], &options.horizons).await?;
                if let Some(note) = checked.note {
                    report.push(note);
                }
                checked.horizons
            };
            report.push(format_args!(
                "open-loop GetAvailability sweep, {} connections, horizons {:?}, latency from each \
                 request's due time; {} s per rate after a {} s warm-up",
                options.connections,
                horizons,
                options.seconds,
                WARM_UP.as_secs_f64()
            ));
            request_sweep(
                &options.addr,
                &lots,
                &horizons,
                &rates,
                options.seconds,
                options.connections,
            )
            .await
        })?;
        report.push(sweep_table(&rows));
        if let Some(error) = rows.iter().find_map(|row| row.first_error.as_ref()) {
            report.push(format_args!("first error: {error}"));
        }
        rows
    } else {
        Vec::new()
    };
    let visible = match stream_source {
        Some(source) => {
            report.push(format_args!(
                "produce -> visible on {} via {}",
                source.0.topics.sensor, source.0.bootstrap_servers
            ));
            let stream = match stream.take() {
                Some(stream) => stream,
                None => start(source)?,
            };
            let row = runtime.block_on(stream.measure())?;
            report.push(visibility_table(&row));
            Some(row)
        }
        None => None,
    };
    report.push(verdict(&rows, visible.as_ref()));
    Ok(report)
}

/// Lots and their slot ids, as a warehouse's `dim_slot` lists them.
type LotsAndSlots = Vec<(String, Vec<String>)>;

/// Lots and slots of the warehouse, kept to the lots asked for when given.
fn topology(options: &GrpcOptions) -> Result<Option<LotsAndSlots>, Error> {
    let Some(path) = &options.warehouse else {
        return Ok(None);
    };
    let warehouse = Warehouse::open(path)
        .with_context(|| format!("failed to open the warehouse at {}", path.display()))?;
    let mut lots = Topology::read_served(&warehouse)
        .context("failed to read dim_slot (the topology of lots and slots)")?
        .into_iter()
        .collect::<Vec<_>>();
    if !options.lots.is_empty() {
        if let Some(missing) = options
            .lots
            .iter()
            .find(|lot_id| !lots.iter().any(|(id, _)| id == *lot_id))
        {
            return Err(Error::UnknownLot {
                lot: missing.clone(),
                warehouse: path.clone(),
            });
        }
        lots.retain(|(lot_id, _)| options.lots.contains(lot_id));
    }
    Ok(Some(lots))
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "NOT met" }
}

/// One line against the targets.
fn verdict(rows: &[SweepRow], visible: Option<&VisibilityRow>) -> String {
    let mut parts = Vec::new();
    if !rows.is_empty() {
        parts.push(match rows.iter().find(|row| row.rate == TARGET_RATE) {
            Some(row) => format!(
                "p99 {} ms at {}/s (target < {} ms: {})",
                millis(row.latency.p99),
                thousands(u64::from(TARGET_RATE)),
                TARGET_P99.as_millis(),
                met(row.latency.p99 < TARGET_P99 && row.errors == 0)
            ),
            None => format!("{}/s not in --rates", thousands(u64::from(TARGET_RATE))),
        });
        let points: Vec<(u32, Duration)> =
            rows.iter().map(|row| (row.rate, row.latency.p99)).collect();
        let spikes = lone_spikes(&points, CROSSING_P99);
        if !spikes.is_empty() {
            let rates: Vec<String> = spikes
                .iter()
                .map(|rate| format!("{}/s", thousands(u64::from(*rate))))
                .collect();
            parts.push(format!(
                "p99 over {} ms at {} only, with higher rates under it (a stall: rerun to confirm)",
                CROSSING_P99.as_millis(),
                rates.join(", ")
            ));
        }
        parts.push(match crossing(&points, CROSSING_P99) {
            Crossing::NoData => "no rate measured".to_owned(),
            Crossing::Never { highest } => format!(
                "p99 stays under {} ms up to {}/s",
                CROSSING_P99.as_millis(),
                thousands(u64::from(highest))
            ),
            Crossing::AtFirst { rate } => format!(
                "p99 over {} ms at every rate from {}/s, the lowest",
                CROSSING_P99.as_millis(),
                thousands(u64::from(rate))
            ),
            Crossing::Between {
                under,
                over,
                interpolated,
            } => format!(
                "p99 crosses {} ms for good at about {}/s (linear between {}/s and {}/s)",
                CROSSING_P99.as_millis(),
                thousands(interpolated as u64),
                thousands(u64::from(under)),
                thousands(u64::from(over))
            ),
        });
    }
    parts.push(match visible {
        Some(row) => {
            let outcome = if row.achieved_event_rate < 0.95 * f64::from(TARGET_EVENT_RATE) {
                "not at the target rate"
            } else {
                let all_visible = row.timed_out == 0 && row.delay.count > 0;
                met(all_visible && row.delay.p99 < TARGET_VISIBLE_P99)
            };
            format!(
                "produce -> visible p99 {} ms at {}/s heartbeats (target < {} ms at {}/s: {outcome})",
                millis(row.delay.p99),
                thousands(row.achieved_event_rate as u64),
                TARGET_VISIBLE_P99.as_millis(),
                thousands(u64::from(TARGET_EVENT_RATE)),
            )
        }
        None => "produce -> visible not measured (no --bootstrap)".to_owned(),
    });
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::row;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    fn options() -> GrpcOptions {
        GrpcOptions {
            addr: "http://127.0.0.1:50051".to_owned(),
            warehouse: None,
            lots: vec!["sim:lot0001".to_owned()],
            horizons: vec![30, 60],
            now_only: false,
            rates: vec![1_000],
            seconds: 3.0,
            connections: 4,
            sweep: true,
            kafka: None,
            event_rate: 10_000,
            probes: 20,
            visibility_seconds: 10.0,
            clock_rate: 1,
            sweep_under_load: false,
        }
    }

    #[test]
    fn options_are_checked_before_anything_runs() {
        assert!(options().validate().is_ok());
        let no_rate = GrpcOptions {
            rates: vec![0, 1_000],
            ..options()
        };
        assert!(matches!(no_rate.validate(), Err(Error::NoRates)));
        let no_connection = GrpcOptions {
            connections: 0,
            ..options()
        };
        assert!(matches!(
            no_connection.validate(),
            Err(Error::NoConnections)
        ));
        let no_lot = GrpcOptions {
            lots: Vec::new(),
            ..options()
        };
        assert!(matches!(no_lot.validate(), Err(Error::NoLots)));
        let no_time = GrpcOptions {
            seconds: 0.0,
            ..options()
        };
        assert!(matches!(no_time.validate(), Err(Error::SweepSeconds(_))));
        // The sweep's time does not matter when there is no sweep.
        let no_sweep = GrpcOptions {
            sweep: false,
            ..no_time
        };
        assert!(no_sweep.validate().is_ok());
        let blind = GrpcOptions {
            kafka: Some(KafkaConfig::default()),
            ..options()
        };
        assert!(matches!(
            blind.validate(),
            Err(Error::VisibilityNeedsWarehouse)
        ));
        let no_probe = GrpcOptions {
            kafka: Some(KafkaConfig::default()),
            warehouse: Some(PathBuf::from("out/warehouse")),
            probes: 0,
            ..options()
        };
        assert!(matches!(no_probe.validate(), Err(Error::NoProbes)));
        let load_without_broker = GrpcOptions {
            sweep_under_load: true,
            ..options()
        };
        assert!(matches!(
            load_without_broker.validate(),
            Err(Error::LoadNeedsBroker)
        ));
        for clock_rate in [0, MAX_CLOCK_RATE + 1] {
            let bad_clock = GrpcOptions {
                kafka: Some(KafkaConfig::default()),
                warehouse: Some(PathBuf::from("out/warehouse")),
                clock_rate,
                ..options()
            };
            assert!(matches!(
                bad_clock.validate(),
                Err(Error::ClockRate { rate, .. }) if rate == clock_rate
            ));
        }
    }

    #[test]
    fn the_verdict_names_each_target() {
        let rows = [row(1_000, ms(1)), row(5_000, ms(1)), row(10_000, ms(30))];
        let line = verdict(&rows, None);
        assert!(
            line.contains("p99 1.00 ms at 5,000/s (target < 2 ms: met)"),
            "{line}"
        );
        assert!(
            line.contains("crosses 10 ms for good at about 6,551/s"),
            "{line}"
        );
        let stalled = [row(1_000, ms(40)), row(5_000, ms(1))];
        let line = verdict(&stalled, None);
        assert!(line.contains("at 1,000/s only"), "{line}");
        assert!(line.contains("stays under 10 ms up to 5,000/s"), "{line}");
        assert!(line.contains("not measured"), "{line}");
    }
}
