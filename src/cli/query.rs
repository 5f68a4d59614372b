//! `parkcast query`: a client of every RPC of the gRPC services, printing tables or JSON lines.
//!
//! With `--lot` it asks for lots (`GetAvailability` for one lot, `BatchGetAvailability` for several);
//! the subcommands search nearby lots, watch lots as they change and read the served models. Here
//! are only the flags; the calls and the rendering of the answers are [`parkcast_client`]'s.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use parkcast_client::{Ahead, Arrival, Output, SearchQuery};
use parkcast_proto::v1::{SlotType, WatchAvailabilityRequest};

use super::args::parse_duration;
use super::client_runtime;

/// Arguments of `parkcast query`.
#[derive(Debug, Args)]
// Not `args_conflicts_with_subcommands`: clap counts the global `--addr`/`--json` as conflicting too,
// so `run` refuses lot flags given with a subcommand instead.
#[command(
    subcommand_negates_reqs = true,
    subcommand_value_name = "RPC",
    subcommand_help_heading = "RPCs besides availability"
)]
pub struct QueryArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub lots: LotsArgs,
    #[command(subcommand)]
    pub command: Option<QueryCommand>,
}

/// Where the server is and how to print its answers (every `query` subcommand takes them).
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Server address (`http://host:port`; a bare `host:port` means http).
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:50051",
        env = "PARKCAST_GRPC_ADDR"
    )]
    pub addr: String,
    /// Print each answer as one JSON object per line, with the proto field names, instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The default action: availability of lots now and ahead.
#[derive(Debug, Args)]
pub struct LotsArgs {
    /// Lots to ask about (comma-separated ids): one lot is a GetAvailability, several a
    /// BatchGetAvailability.
    #[arg(long, value_delimiter = ',', required = true, value_name = "LOT,...")]
    pub lot: Vec<String>,
    /// Forecast horizons, minutes ahead (comma-separated); without them or an arrival, only the live
    /// picture is asked.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "MINUTES,...",
        conflicts_with_all = ["arrival_in", "arrival"]
    )]
    pub horizons: Vec<u32>,
    /// Arrive after this long (`45m`, `2h`, `90s`, `1h30m`): sent as a horizon rounded up to whole
    /// minutes, so it counts from the server's clock.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "arrival")]
    pub arrival_in: Option<Duration>,
    /// Arrive at this time, RFC 3339 (`2026-11-26T18:00:00Z`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub arrival: Option<DateTime<Utc>>,
    /// What-if: forecast as if the lots' hourly price were this (their currency's units, e.g.
    /// 4.50), under the active model's price response. The server refuses it for a lot without a
    /// tariff or a model without a price response.
    #[arg(long, value_name = "PER_HOUR")]
    pub price: Option<f64>,
}

impl LotsArgs {
    /// Whether any of the flags was given.
    fn given(&self) -> bool {
        !self.lot.is_empty()
            || !self.horizons.is_empty()
            || self.arrival_in.is_some()
            || self.arrival.is_some()
            || self.price.is_some()
    }
}

/// The RPCs besides availability of named lots.
#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Lots around a point, best chance of a free slot at arrival first (SearchNearby).
    Search(SearchArgs),
    /// Follow lots: an update whenever one changes, until --count updates or Ctrl-C
    /// (WatchAvailability).
    Watch(WatchArgs),
    /// The models the server's registry holds, and which one answers (ListModels).
    Models,
    /// One model version: kind, training data end, checksums, backtest figures (DescribeModel).
    Model {
        /// The model line.
        name: String,
        /// The version (default: the newest).
        #[arg(long)]
        version: Option<u32>,
    },
    /// How the active model's forecasts fare on the live actuals: MAE and 80% coverage per horizon
    /// over the last hour and day, against its backtest, and which lots drift (GetLiveQuality).
    Quality {
        /// A lot to report on its own besides the city (repeat for several).
        #[arg(long = "lot")]
        lots: Vec<String>,
    },
    /// The replicas of the server's consumer group: each one's address, whether it is alive, the
    /// partitions and lots it owns (ListReplicas). Any replica answers any lot; a client may also
    /// send each lot's requests to its owner itself.
    Replicas,
}

impl QueryCommand {
    /// The subcommand as typed.
    fn name(&self) -> &'static str {
        match self {
            QueryCommand::Search(_) => "search",
            QueryCommand::Watch(_) => "watch",
            QueryCommand::Models => "models",
            QueryCommand::Model { .. } => "model",
            QueryCommand::Quality { .. } => "quality",
            QueryCommand::Replicas => "replicas",
        }
    }
}

/// Arguments of `parkcast query search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Latitude of the search point, WGS84 degrees.
    #[arg(long, allow_negative_numbers = true)]
    pub lat: f64,
    /// Longitude of the search point, WGS84 degrees.
    #[arg(long, allow_negative_numbers = true)]
    pub lon: f64,
    /// Search radius, metres (the server allows up to 10 km).
    #[arg(long, default_value_t = 500.0)]
    pub radius: f64,
    /// Arrive after this long (`45m`, `2h`, `90s`, `1h30m`), rounded up to whole minutes and
    /// counted from the server's clock (default: now).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "arrival")]
    pub arrival_in: Option<Duration>,
    /// Arrive at this time, RFC 3339 (`2026-11-26T18:00:00Z`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub arrival: Option<DateTime<Utc>>,
    /// Only lots with slots of this type (default: any lot).
    #[arg(long, value_enum)]
    pub slot_type: Option<SlotTypeArg>,
    /// At most this many lots.
    #[arg(long, default_value_t = 20)]
    pub max: u32,
}

/// Arguments of `parkcast query watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Lots to follow (comma-separated ids).
    #[arg(long, value_delimiter = ',', required = true, value_name = "LOT,...")]
    pub lot: Vec<String>,
    /// Forecast horizons, minutes ahead (comma-separated); without them, only the live picture.
    #[arg(long, value_delimiter = ',', value_name = "MINUTES,...")]
    pub horizons: Vec<u32>,
    /// Stop after this many updates (default: until Ctrl-C or the server ends the stream).
    #[arg(long)]
    pub count: Option<u64>,
}

/// Slot types a search can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlotTypeArg {
    /// Ordinary car slots.
    Standard,
    /// Slots with a charger.
    Ev,
    /// Slots reserved for disabled drivers.
    Disabled,
    /// Motorcycle slots.
    Motorcycle,
    /// Loading bays.
    Loading,
}

impl From<SlotTypeArg> for SlotType {
    fn from(slot_type: SlotTypeArg) -> Self {
        match slot_type {
            SlotTypeArg::Standard => SlotType::Standard,
            SlotTypeArg::Ev => SlotType::Ev,
            SlotTypeArg::Disabled => SlotType::Disabled,
            SlotTypeArg::Motorcycle => SlotType::Motorcycle,
            SlotTypeArg::Loading => SlotType::Loading,
        }
    }
}

/// Runs `parkcast query`.
pub fn run(args: QueryArgs) -> Result<()> {
    let QueryArgs {
        connection,
        lots,
        command,
    } = args;
    check_flags(&lots, command.as_ref())?;
    let output = Output::json_if(connection.json);
    client_runtime()?.block_on(async {
        let channel = parkcast_client::connect(&connection.addr).await?;
        let answer = match command {
            None => {
                let ahead = match arrival(lots.arrival_in, lots.arrival) {
                    Some(arrival) => Ahead::Arrival(arrival),
                    None => Ahead::Horizons(lots.horizons),
                };
                parkcast_client::availability(channel, &lots.lot, &ahead, lots.price, output)
                    .await?
            }
            Some(QueryCommand::Search(search)) => {
                let query = SearchQuery {
                    latitude: search.lat,
                    longitude: search.lon,
                    radius_m: search.radius,
                    arrival: arrival(search.arrival_in, search.arrival),
                    slot_type: search.slot_type.map(SlotType::from),
                    max_results: search.max,
                };
                parkcast_client::search(channel, &query, output).await?
            }
            Some(QueryCommand::Watch(watch)) => {
                let request = WatchAvailabilityRequest {
                    lot_ids: watch.lot,
                    horizon_minutes: watch.horizons,
                };
                let interrupted = tokio::signal::ctrl_c();
                let print = |line: &str| println!("{line}");
                parkcast_client::watch(channel, request, watch.count, output, interrupted, print)
                    .await?;
                String::new()
            }
            Some(QueryCommand::Models) => parkcast_client::list_models(channel, output).await?,
            Some(QueryCommand::Model { name, version }) => {
                parkcast_client::describe_model(channel, name, version, output).await?
            }
            Some(QueryCommand::Quality { lots }) => {
                parkcast_client::live_quality(channel, lots, output).await?
            }
            Some(QueryCommand::Replicas) => parkcast_client::list_replicas(channel, output).await?,
        };
        print!("{answer}");
        Ok(())
    })
}

/// The arrival the flags ask for: `--arrival-in` or `--arrival` (clap lets only one through).
fn arrival(arrival_in: Option<Duration>, arrival_at: Option<DateTime<Utc>>) -> Option<Arrival> {
    arrival_in
        .map(Arrival::In)
        .or_else(|| arrival_at.map(Arrival::At))
}

/// Refuses lot flags given with a subcommand (clap would only ignore them).
fn check_flags(lots: &LotsArgs, command: Option<&QueryCommand>) -> Result<()> {
    match command {
        Some(rpc) if lots.given() => bail!(
            "--lot, --horizons, --arrival-in and --arrival ask for lots and do not go before \
             `query {}`; give the subcommand's own flags after it",
            rpc.name()
        ),
        _ => Ok(()),
    }
}

/// An RFC 3339 time (`2026-11-26T18:00:00Z`, `2026-11-26T19:00:00+01:00`) in UTC.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|time| time.with_timezone(&Utc))
        .with_context(|| format!("{text:?} is not an RFC 3339 time such as 2026-11-26T18:00:00Z"))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn arrival_times_are_rfc_3339_in_utc() {
        let time = parse_time("2026-11-26T19:00:00+01:00").expect("a valid time");
        assert_eq!(time.to_rfc3339(), "2026-11-26T18:00:00+00:00");
        assert!(parse_time("2026-11-26 18:00").is_err());
        assert!(parse_time("tomorrow").is_err());
    }

    /// Parses `parkcast query ...` with the real CLI.
    fn parse(arguments: &[&str]) -> Result<QueryArgs, clap::Error> {
        let full = ["parkcast", "query"].iter().chain(arguments);
        crate::cli::Cli::try_parse_from(full).map(|cli| match cli.command {
            crate::cli::Command::Query(args) => args,
            other => panic!("parsed as another command: {other:?}"),
        })
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        crate::cli::Cli::command().debug_assert();
    }

    #[test]
    fn the_cli_keeps_the_lot_form_and_adds_the_rpcs() {
        let lots = parse(&["--lot", "a,b", "--horizons", "30,60", "--json"]).expect("parses");
        assert_eq!(lots.lots.lot, ["a", "b"]);
        assert_eq!(lots.lots.horizons, [30, 60]);
        assert!(lots.connection.json && lots.command.is_none());

        let search = parse(&[
            "search",
            "--lat",
            "52.47",
            "--lon",
            "-1.89",
            "--slot-type",
            "ev",
            "--json",
        ])
        .expect("parses");
        assert!(search.connection.json);
        let Some(QueryCommand::Search(search_args)) = search.command else {
            panic!("a search: {search:?}");
        };
        assert_eq!(search_args.lon, -1.89);
        assert_eq!(search_args.slot_type, Some(SlotTypeArg::Ev));

        let watch =
            parse(&["--addr", "x:1", "watch", "--lot", "a", "--count", "2"]).expect("parses");
        assert_eq!(watch.connection.addr, "x:1");
        assert!(matches!(
            watch.command,
            Some(QueryCommand::Watch(WatchArgs { count: Some(2), .. }))
        ));
        assert!(parse(&["model", "gbm", "--version", "2"]).is_ok());
        assert!(parse(&["models"]).is_ok());
    }

    #[test]
    fn the_cli_refuses_contradictions() {
        assert!(parse(&[]).is_err(), "no lot and no RPC");
        assert!(parse(&["--lot", "a", "--horizons", "30", "--arrival-in", "45m"]).is_err());
        assert!(
            parse(&[
                "--lot",
                "a",
                "--arrival-in",
                "45m",
                "--arrival",
                "2026-11-26T18:00:00Z"
            ])
            .is_err()
        );
        let lots_then_rpc = parse(&["--lot", "a", "models"]).expect("clap lets it through");
        assert!(check_flags(&lots_then_rpc.lots, lots_then_rpc.command.as_ref()).is_err());
        let rpc = parse(&["watch", "--lot", "a", "--horizons", "30"]).expect("parses");
        assert!(check_flags(&rpc.lots, rpc.command.as_ref()).is_ok());
        assert!(parse(&["--lot", "a", "--arrival-in", "45"]).is_err());
        assert!(parse(&["search", "--lat", "1", "--lon", "2", "--slot-type", "vip"]).is_err());
    }
}
