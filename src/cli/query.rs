//! `parkcast query`: a small client of every RPC of the gRPC services, printing tables or JSON lines.
//!
//! With `--lot` it asks for lots (`GetAvailability` for one lot, `BatchGetAvailability` for several);
//! the subcommands search nearby lots, watch lots as they change and read the served models. The
//! generated messages do not derive serde, so the JSON of each message is mapped field by field here,
//! with the proto field names; rendering is pure and tested without a server.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{Cell, CellAlignment};
use parkcast_proto::v1::availability_client::AvailabilityClient;
use parkcast_proto::v1::models_client::ModelsClient;
use parkcast_proto::v1::{
    BatchGetAvailabilityRequest, DescribeModelRequest, Forecast, GetAvailabilityRequest,
    HorizonMetrics, ListModelsRequest, LotAvailability, ModelInfo, NearbyLot, SearchNearbyRequest,
    SlotType, WatchAvailabilityRequest,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::duration::parse_duration;
use crate::report;

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
}

impl LotsArgs {
    /// Whether any of the flags was given.
    fn given(&self) -> bool {
        !self.lot.is_empty()
            || !self.horizons.is_empty()
            || self.arrival_in.is_some()
            || self.arrival.is_some()
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
}

impl QueryCommand {
    /// The subcommand as typed.
    fn name(&self) -> &'static str {
        match self {
            QueryCommand::Search(_) => "search",
            QueryCommand::Watch(_) => "watch",
            QueryCommand::Models => "models",
            QueryCommand::Model { .. } => "model",
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
    runtime()?.block_on(async {
        let channel = connect(&connection.addr).await?;
        match command {
            None => availability(channel, &lots, connection.json).await,
            Some(QueryCommand::Search(search_args)) => {
                search(channel, &search_args, connection.json).await
            }
            Some(QueryCommand::Watch(watch_args)) => {
                watch(channel, &watch_args, connection.json).await
            }
            Some(QueryCommand::Models) => list_models(channel, connection.json).await,
            Some(QueryCommand::Model { name, version }) => {
                describe_model(channel, name, version, connection.json).await
            }
        }
    })
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

/// A current-thread runtime: the client does one thing at a time.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

/// A channel to the server at `addr` (a bare `host:port` means http).
pub(super) async fn connect(addr: &str) -> Result<Channel> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    tonic::transport::Endpoint::from_shared(uri)
        .with_context(|| format!("{addr:?} is not a server address"))?
        .connect()
        .await
        .with_context(|| format!("failed to connect to {addr}"))
}

/// A refusal of the server as an error: its code and message.
pub(super) fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "the server refused: {:?}: {}",
        status.code(),
        status.message()
    )
}

/// Availability of `--lot`: GetAvailability for one lot, BatchGetAvailability for several.
async fn availability(channel: Channel, args: &LotsArgs, as_json: bool) -> Result<()> {
    let (horizons, arrival_ms) = match (&args.arrival_in, &args.arrival) {
        (Some(after), _) => (vec![horizon_minutes(*after)?], 0),
        (None, Some(time)) => (Vec::new(), time.timestamp_millis()),
        (None, None) => (args.horizons.clone(), 0),
    };
    let mut requests: Vec<GetAvailabilityRequest> = args
        .lot
        .iter()
        .map(|lot_id| GetAvailabilityRequest {
            lot_id: lot_id.clone(),
            horizon_minutes: horizons.clone(),
            arrival_time_ms: arrival_ms,
        })
        .collect();
    let mut client = AvailabilityClient::new(channel);
    let lots = match requests.pop() {
        Some(request) if requests.is_empty() => vec![
            client
                .get_availability(request)
                .await
                .map_err(refused)?
                .into_inner(),
        ],
        Some(last) => {
            requests.push(last);
            client
                .batch_get_availability(BatchGetAvailabilityRequest { requests })
                .await
                .map_err(refused)?
                .into_inner()
                .lots
        }
        None => bail!("no lot given: name lots with --lot A,B"),
    };
    if as_json {
        for lot in &lots {
            print_json(&availability_json(lot))?;
        }
        return Ok(());
    }
    if arrival_ms != 0 {
        println!("arrival {}", time_text(arrival_ms));
    }
    print!("{}", availability_table(&lots));
    Ok(())
}

/// `parkcast query search`.
async fn search(channel: Channel, args: &SearchArgs, as_json: bool) -> Result<()> {
    let (arrival_time_ms, arrival_in_minutes) = match (&args.arrival_in, &args.arrival) {
        (Some(after), _) => (0, horizon_minutes(*after)?),
        (None, Some(time)) => (time.timestamp_millis(), 0),
        (None, None) => (0, 0),
    };
    let slot_type = args.slot_type.map(SlotType::from);
    let request = SearchNearbyRequest {
        latitude: args.lat,
        longitude: args.lon,
        radius_m: args.radius,
        arrival_time_ms,
        slot_type: slot_type.map_or(SlotType::Unspecified as i32, |slot_type| slot_type as i32),
        max_results: args.max,
        arrival_in_minutes,
    };
    let found = AvailabilityClient::new(channel)
        .search_nearby(request)
        .await
        .map_err(refused)?
        .into_inner()
        .lots;
    if as_json {
        for nearby in &found {
            print_json(&nearby_json(nearby))?;
        }
        return Ok(());
    }
    print!("{}", search_table(&found, slot_type));
    Ok(())
}

/// `parkcast query watch`: prints updates as they arrive.
async fn watch(channel: Channel, args: &WatchArgs, as_json: bool) -> Result<()> {
    let request = WatchAvailabilityRequest {
        lot_ids: args.lot.clone(),
        horizon_minutes: args.horizons.clone(),
    };
    let mut updates = AvailabilityClient::new(channel)
        .watch_availability(request)
        .await
        .map_err(refused)?
        .into_inner();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut printed: u64 = 0;
    while args.count.is_none_or(|count| printed < count) {
        let update = tokio::select! {
            update = updates.message() => update.map_err(refused)?,
            signal = &mut interrupted => {
                signal.context("failed to listen for Ctrl-C")?;
                break;
            }
        };
        let Some(lot) = update else {
            break;
        };
        if as_json {
            print_json(&availability_json(&lot))?;
        } else {
            println!("{}", watch_line(&lot));
        }
        printed += 1;
    }
    Ok(())
}

/// `parkcast query models`.
async fn list_models(channel: Channel, as_json: bool) -> Result<()> {
    let models = ModelsClient::new(channel)
        .list_models(ListModelsRequest {})
        .await
        .map_err(refused)?
        .into_inner()
        .models;
    if as_json {
        for model in &models {
            print_json(&model_info_json(model))?;
        }
        return Ok(());
    }
    print!("{}", models_table(&models));
    Ok(())
}

/// `parkcast query model NAME`.
async fn describe_model(
    channel: Channel,
    name: String,
    version: Option<u32>,
    as_json: bool,
) -> Result<()> {
    let model = ModelsClient::new(channel)
        .describe_model(DescribeModelRequest {
            name,
            version: version.unwrap_or(0),
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_model(&model, as_json)
}

/// Prints one `ModelInfo`, as text or a JSON line.
pub(super) fn print_model(model: &ModelInfo, as_json: bool) -> Result<()> {
    if as_json {
        return print_json(&model_info_json(model));
    }
    print!("{}", model_text(model));
    Ok(())
}

fn print_json(value: &Value) -> Result<()> {
    let line = serde_json::to_string(value).context("failed to write JSON")?;
    println!("{line}");
    Ok(())
}

/// An RFC 3339 time (`2026-11-26T18:00:00Z`, `2026-11-26T19:00:00+01:00`) in UTC.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|time| time.with_timezone(&Utc))
        .with_context(|| format!("{text:?} is not an RFC 3339 time such as 2026-11-26T18:00:00Z"))
}

/// A duration as a horizon: whole minutes, rounded up.
fn horizon_minutes(after: Duration) -> Result<u32> {
    u32::try_from(after.as_secs().div_ceil(60))
        .with_context(|| format!("{after:?} is too far ahead for a horizon"))
}

/// A forecast as JSON.
pub fn forecast_json(forecast: &Forecast) -> Value {
    json!({
        "target_time_ms": forecast.target_time_ms,
        "horizon_minutes": forecast.horizon_minutes,
        "expected_free": forecast.expected_free,
        "free_low_80": forecast.free_low_80,
        "free_high_80": forecast.free_high_80,
        "free_low_95": forecast.free_low_95,
        "free_high_95": forecast.free_high_95,
        "probability_any_free": forecast.probability_any_free,
    })
}

/// A lot's availability as JSON, forecasts included.
pub fn availability_json(lot: &LotAvailability) -> Value {
    json!({
        "lot_id": lot.lot_id,
        "name": lot.name,
        "capacity": lot.capacity,
        "as_of_ms": lot.as_of_ms,
        "data_age_ms": lot.data_age_ms,
        "stale": lot.stale,
        "stale_reason": lot.stale_reason,
        "occupied_now": lot.occupied_now,
        "free_now": lot.free_now,
        "unknown_now": lot.unknown_now,
        "model_name": lot.model_name,
        "model_version": lot.model_version,
        "forecasts": lot.forecasts.iter().map(forecast_json).collect::<Vec<_>>(),
    })
}

/// A search result as JSON (`availability` is null when the server left it out).
pub fn nearby_json(nearby: &NearbyLot) -> Value {
    json!({
        "availability": nearby.availability.as_ref().map(availability_json),
        "distance_m": nearby.distance_m,
        "probability_any_free_at_arrival": nearby.probability_any_free_at_arrival,
        "slots_of_type": nearby.slots_of_type,
    })
}

/// Backtest figures as JSON (a coverage the model has none of, NaN, is null).
pub fn horizon_metrics_json(metrics: &HorizonMetrics) -> Value {
    json!({
        "horizon_minutes": metrics.horizon_minutes,
        "mae_rate": metrics.mae_rate,
        "coverage_80": metrics.coverage_80,
    })
}

/// A model as JSON.
pub fn model_info_json(model: &ModelInfo) -> Value {
    json!({
        "name": model.name,
        "version": model.version,
        "kind": model.kind,
        "trained_until_ms": model.trained_until_ms,
        "feature_schema_hash": model.feature_schema_hash,
        "sha256": model.sha256,
        "active": model.active,
        "metrics": model.metrics.iter().map(horizon_metrics_json).collect::<Vec<_>>(),
    })
}

/// Unix ms as `2026-11-26 18:00:00 UTC`.
fn time_text(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The age of the data, coarsely (absent: the lot has had no event yet; a server from before the
/// field was optional sent `i64::MAX` for that).
fn age_text(ms: Option<i64>) -> String {
    let Some(ms) = ms.filter(|ms| (0..i64::MAX).contains(ms)) else {
        return "no data".to_owned();
    };
    let seconds = ms / 1_000;
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3_600 => format!("{} min", seconds / 60),
        3_600..86_400 => format!("{} h {} min", seconds / 3_600, seconds % 3_600 / 60),
        _ => format!("{} d {} h", seconds / 86_400, seconds % 86_400 / 3_600),
    }
}

/// A probability as a percentage that never rounds a near-certainty to a certainty.
fn percent_text(probability: f64) -> String {
    if probability.is_nan() {
        "n/a".to_owned()
    } else if probability >= 1.0 {
        "100%".to_owned()
    } else if probability >= 0.995 {
        ">99%".to_owned()
    } else if probability <= 0.0 {
        "0%".to_owned()
    } else if probability < 0.005 {
        "<1%".to_owned()
    } else {
        format!("{:.0}%", probability * 100.0)
    }
}

/// A forecast in a cell: expected free slots, the 80% interval, the chance of a free slot.
fn forecast_text(forecast: &Forecast) -> String {
    format!(
        "{:.1} [{:.0}–{:.0}] · {}",
        forecast.expected_free,
        forecast.free_low_80,
        forecast.free_high_80,
        percent_text(forecast.probability_any_free)
    )
}

/// `lot (name)`, or the id alone when the name says nothing more.
fn lot_label(lot: &LotAvailability) -> String {
    if lot.name.is_empty() || lot.name == lot.lot_id {
        lot.lot_id.clone()
    } else {
        format!("{} ({})", lot.lot_id, lot.name)
    }
}

/// The models that answered, once each: `model gbm v3`, or that none is active.
fn model_line<'a>(lots: impl IntoIterator<Item = &'a LotAvailability>) -> String {
    let models: BTreeSet<(&str, u32)> = lots
        .into_iter()
        .filter(|lot| !lot.model_name.is_empty())
        .map(|lot| (lot.model_name.as_str(), lot.model_version))
        .collect();
    if models.is_empty() {
        return "no model is active: live counts only".to_owned();
    }
    let named: Vec<String> = models
        .iter()
        .map(|(name, version)| format!("{name} v{version}"))
        .collect();
    format!("model {}", named.join(", "))
}

/// One line per stale lot, with the reason.
fn stale_lines<'a>(lots: impl IntoIterator<Item = &'a LotAvailability>) -> String {
    let mut lines = String::new();
    for lot in lots.into_iter().filter(|lot| lot.stale) {
        let reason = if lot.stale_reason.is_empty() {
            "no reason given"
        } else {
            lot.stale_reason.as_str()
        };
        lines.push_str(&format!(
            "stale: {}: {reason} (the numbers are the last known)\n",
            lot_label(lot)
        ));
    }
    lines
}

fn right(text: impl ToString) -> Cell {
    Cell::new(text.to_string()).set_alignment(CellAlignment::Right)
}

/// The availability of lots as a table, one forecast column per horizon answered, then the model
/// and a line per stale lot.
pub fn availability_table(lots: &[LotAvailability]) -> String {
    let horizons: BTreeSet<u32> = lots
        .iter()
        .flat_map(|lot| {
            lot.forecasts
                .iter()
                .map(|forecast| forecast.horizon_minutes)
        })
        .collect();
    let horizon_headers: Vec<String> = horizons
        .iter()
        .map(|minutes| format!("+{minutes} min"))
        .collect();
    let mut header = vec![
        "lot", "name", "capacity", "occupied", "free", "unknown", "data age",
    ];
    header.extend(horizon_headers.iter().map(String::as_str));
    let mut table = report::new_table(&header);
    for lot in lots {
        let mut row = vec![
            Cell::new(&lot.lot_id),
            Cell::new(&lot.name),
            right(lot.capacity),
            right(lot.occupied_now),
            right(lot.free_now),
            right(lot.unknown_now),
            right(age_text(lot.data_age_ms)),
        ];
        for minutes in &horizons {
            let forecast = lot
                .forecasts
                .iter()
                .find(|forecast| forecast.horizon_minutes == *minutes);
            row.push(right(
                forecast.map_or_else(|| "—".to_owned(), forecast_text),
            ));
        }
        table.add_row(row);
    }
    let mut text = format!("{}\n{table}\n", model_line(lots));
    if !horizons.is_empty() {
        text.push_str("forecasts: expected free slots [80% interval] · P(at least one free)\n");
    }
    text.push_str(&stale_lines(lots));
    text
}

/// Search results as a table, best first; with a slot type, a column of the lots' slots of it.
pub fn search_table(found: &[NearbyLot], slot_type: Option<SlotType>) -> String {
    if found.is_empty() {
        return "no lot within the radius has an answer\n".to_owned();
    }
    let type_header = slot_type.map(|slot_type| format!("{} slots", slot_type_name(slot_type)));
    let mut header = vec![
        "rank",
        "lot",
        "name",
        "distance",
        "P(any free) at arrival",
        "free at arrival",
        "free now",
    ];
    header.extend(type_header.as_deref());
    header.push("data age");
    let mut table = report::new_table(&header);
    let lots: Vec<&LotAvailability> = found
        .iter()
        .filter_map(|nearby| nearby.availability.as_ref())
        .collect();
    for (rank, nearby) in found.iter().enumerate() {
        let availability = nearby.availability.as_ref();
        let at_arrival = availability
            .and_then(|lot| lot.forecasts.first())
            .map_or_else(
                || "—".to_owned(),
                |forecast| {
                    format!(
                        "{:.1} [{:.0}–{:.0}]",
                        forecast.expected_free, forecast.free_low_80, forecast.free_high_80
                    )
                },
            );
        let mut row = vec![
            right(rank + 1),
            Cell::new(availability.map_or("?", |lot| lot.lot_id.as_str())),
            Cell::new(availability.map_or("", |lot| lot.name.as_str())),
            right(distance_text(nearby.distance_m)),
            right(percent_text(nearby.probability_any_free_at_arrival)),
            right(at_arrival),
            right(availability.map_or_else(
                || "—".to_owned(),
                |lot| format!("{}/{}", lot.free_now, lot.capacity),
            )),
        ];
        if slot_type.is_some() {
            row.push(right(nearby.slots_of_type));
        }
        row.push(right(
            availability.map_or_else(|| "—".to_owned(), |lot| age_text(lot.data_age_ms)),
        ));
        table.add_row(row);
    }
    format!(
        "{}\n{table}\n{}",
        model_line(lots.iter().copied()),
        stale_lines(lots.iter().copied())
    )
}

/// `standard`, `ev`, ... as the CLI spells them.
fn slot_type_name(slot_type: SlotType) -> &'static str {
    match slot_type {
        SlotType::Unspecified => "any",
        SlotType::Standard => "standard",
        SlotType::Ev => "ev",
        SlotType::Disabled => "disabled",
        SlotType::Motorcycle => "motorcycle",
        SlotType::Loading => "loading",
    }
}

fn distance_text(metres: f64) -> String {
    if metres < 1_000.0 {
        format!("{metres:.0} m")
    } else {
        format!("{:.1} km", metres / 1_000.0)
    }
}

/// One watch update on one line.
pub fn watch_line(lot: &LotAvailability) -> String {
    let mut line = format!(
        "{}  {}  free {}/{} (occupied {}, unknown {}), data {}",
        time_text(lot.as_of_ms),
        lot_label(lot),
        lot.free_now,
        lot.capacity,
        lot.occupied_now,
        lot.unknown_now,
        match age_text(lot.data_age_ms).as_str() {
            "no data" => "none yet".to_owned(),
            age => format!("{age} old"),
        }
    );
    for forecast in &lot.forecasts {
        line.push_str(&format!(
            "; +{} min {}",
            forecast.horizon_minutes,
            forecast_text(forecast)
        ));
    }
    if !lot.model_name.is_empty() && !lot.forecasts.is_empty() {
        line.push_str(&format!(" ({} v{})", lot.model_name, lot.model_version));
    }
    if lot.stale {
        line.push_str(&format!("  STALE: {}", lot.stale_reason));
    }
    line
}

/// The date training data ends at (the exclusive end, Unix ms, as the day before it).
fn trained_until_text(ms: i64) -> String {
    if ms == 0 {
        return "unknown".to_owned();
    }
    DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |time| time.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Backtest figures on one line: `30m MAE 0.041 cov80 81%; ...`.
fn metrics_summary(metrics: &[HorizonMetrics]) -> String {
    let parts: Vec<String> = metrics
        .iter()
        .map(|metric| {
            format!(
                "{}m MAE {:.3} cov80 {}",
                metric.horizon_minutes,
                metric.mae_rate,
                percent_text(metric.coverage_80)
            )
        })
        .collect();
    parts.join("; ")
}

/// The served models as a table.
pub fn models_table(models: &[ModelInfo]) -> String {
    if models.is_empty() {
        return "the server's registry holds no models\n".to_owned();
    }
    let mut table = report::new_table(&[
        "name",
        "version",
        "kind",
        "trained until",
        "active",
        "sha256",
        "backtest",
    ]);
    for model in models {
        table.add_row(vec![
            Cell::new(&model.name),
            right(model.version),
            Cell::new(&model.kind),
            Cell::new(trained_until_text(model.trained_until_ms)),
            Cell::new(if model.active { "yes" } else { "" }),
            Cell::new(short_hash(&model.sha256)),
            Cell::new(metrics_summary(&model.metrics)),
        ]);
    }
    format!("{table}\n")
}

/// One model: a summary line, checksums and its backtest figures per horizon.
pub fn model_text(model: &ModelInfo) -> String {
    let mut text = format!(
        "{} v{} — {} model, trained until {}{}\nsha256 {}\nfeature schema {}\n",
        model.name,
        model.version,
        model.kind,
        trained_until_text(model.trained_until_ms),
        if model.active {
            ", active (answering)"
        } else {
            ", not active"
        },
        model.sha256,
        model.feature_schema_hash,
    );
    if model.metrics.is_empty() {
        text.push_str("no backtest figures\n");
        return text;
    }
    let mut table = report::new_table(&["horizon", "MAE rate", "80% covers"]);
    for metric in &model.metrics {
        table.add_row(vec![
            right(format!("{} min", metric.horizon_minutes)),
            right(format!("{:.4}", metric.mae_rate)),
            right(percent_text(metric.coverage_80)),
        ]);
    }
    text.push_str(&format!("{table}\n"));
    text
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn lot() -> LotAvailability {
        LotAvailability {
            lot_id: "BHM-001".to_owned(),
            name: "Bull Ring".to_owned(),
            capacity: 40,
            as_of_ms: 1_795_716_000_000,
            data_age_ms: Some(75_000),
            stale: false,
            stale_reason: String::new(),
            occupied_now: 30,
            free_now: 9,
            unknown_now: 1,
            model_name: "gbm".to_owned(),
            model_version: 3,
            forecasts: vec![
                Forecast {
                    target_time_ms: 1_795_717_800_000,
                    horizon_minutes: 30,
                    expected_free: 6.25,
                    free_low_80: 3.0,
                    free_high_80: 9.4,
                    free_low_95: 1.0,
                    free_high_95: 12.0,
                    probability_any_free: 0.97,
                },
                Forecast {
                    target_time_ms: 1_795_719_600_000,
                    horizon_minutes: 60,
                    expected_free: 2.0,
                    free_low_80: 0.0,
                    free_high_80: 5.0,
                    free_low_95: 0.0,
                    free_high_95: 8.0,
                    probability_any_free: 0.999,
                },
            ],
        }
    }

    fn stale_lot() -> LotAvailability {
        LotAvailability {
            lot_id: "BHM-002".to_owned(),
            name: "BHM-002".to_owned(),
            capacity: 10,
            data_age_ms: None,
            stale: true,
            stale_reason: "no event received for this lot yet".to_owned(),
            unknown_now: 10,
            model_name: "gbm".to_owned(),
            model_version: 3,
            ..LotAvailability::default()
        }
    }

    #[test]
    fn arrival_times_are_rfc_3339_in_utc() {
        let time = parse_time("2026-11-26T19:00:00+01:00").expect("a valid time");
        assert_eq!(time.to_rfc3339(), "2026-11-26T18:00:00+00:00");
        assert!(parse_time("2026-11-26 18:00").is_err());
        assert!(parse_time("tomorrow").is_err());
    }

    #[test]
    fn an_arrival_in_becomes_whole_minutes_rounded_up() {
        assert_eq!(horizon_minutes(Duration::from_secs(90)).ok(), Some(2));
        assert_eq!(horizon_minutes(Duration::from_secs(2_700)).ok(), Some(45));
    }

    #[test]
    fn the_json_of_an_availability_carries_every_field_and_forecast() {
        let value = availability_json(&lot());
        assert_eq!(
            value,
            json!({
                "lot_id": "BHM-001",
                "name": "Bull Ring",
                "capacity": 40,
                "as_of_ms": 1_795_716_000_000_i64,
                "data_age_ms": 75_000,
                "stale": false,
                "stale_reason": "",
                "occupied_now": 30,
                "free_now": 9,
                "unknown_now": 1,
                "model_name": "gbm",
                "model_version": 3,
                "forecasts": [
                    {
                        "target_time_ms": 1_795_717_800_000_i64,
                        "horizon_minutes": 30,
                        "expected_free": 6.25,
                        "free_low_80": 3.0,
                        "free_high_80": 9.4,
                        "free_low_95": 1.0,
                        "free_high_95": 12.0,
                        "probability_any_free": 0.97,
                    },
                    {
                        "target_time_ms": 1_795_719_600_000_i64,
                        "horizon_minutes": 60,
                        "expected_free": 2.0,
                        "free_low_80": 0.0,
                        "free_high_80": 5.0,
                        "free_low_95": 0.0,
                        "free_high_95": 8.0,
                        "probability_any_free": 0.999,
                    },
                ],
            })
        );
    }

    #[test]
    fn the_json_of_a_search_result_and_a_model_maps_every_field() {
        let nearby = NearbyLot {
            availability: Some(stale_lot()),
            distance_m: 321.5,
            probability_any_free_at_arrival: 0.5,
            slots_of_type: 2,
        };
        let value = nearby_json(&nearby);
        assert_eq!(value["distance_m"], json!(321.5));
        assert_eq!(value["probability_any_free_at_arrival"], json!(0.5));
        assert_eq!(value["slots_of_type"], json!(2));
        assert_eq!(value["availability"]["data_age_ms"], Value::Null);
        assert_eq!(
            nearby_json(&NearbyLot::default())["availability"],
            Value::Null
        );
        let model = ModelInfo {
            name: "gbm".to_owned(),
            version: 3,
            kind: "gbm".to_owned(),
            trained_until_ms: 1_795_651_200_000,
            feature_schema_hash: "abc".to_owned(),
            sha256: "def".to_owned(),
            active: true,
            metrics: vec![HorizonMetrics {
                horizon_minutes: 30,
                mae_rate: 0.04,
                coverage_80: f64::NAN,
            }],
        };
        assert_eq!(
            model_info_json(&model),
            json!({
                "name": "gbm",
                "version": 3,
                "kind": "gbm",
                "trained_until_ms": 1_795_651_200_000_i64,
                "feature_schema_hash": "abc",
                "sha256": "def",
                "active": true,
                "metrics": [{"horizon_minutes": 30, "mae_rate": 0.04, "coverage_80": null}],
            })
        );
    }

    #[test]
    fn the_availability_table_shows_forecasts_per_horizon_the_model_once_and_why_a_lot_is_stale() {
        let text = availability_table(&[lot(), stale_lot()]);
        let expected = "\
model gbm v3
┌─────────┬───────────┬──────────┬──────────┬──────┬─────────┬──────────┬─────────────────┬──────────────────┐
│ lot     ┆ name      ┆ capacity ┆ occupied ┆ free ┆ unknown ┆ data age ┆ +30 min         ┆ +60 min          │
╞═════════╪═══════════╪══════════╪══════════╪══════╪═════════╪══════════╪═════════════════╪══════════════════╡
│ BHM-001 ┆ Bull Ring ┆       40 ┆       30 ┆    9 ┆       1 ┆    1 min ┆ 6.2 [3–9] · 97% ┆ 2.0 [0–5] · >99% │
│ BHM-002 ┆ BHM-002   ┆       10 ┆        0 ┆    0 ┆      10 ┆  no data ┆               — ┆                — │
└─────────┴───────────┴──────────┴──────────┴──────┴─────────┴──────────┴─────────────────┴──────────────────┘
forecasts: expected free slots [80% interval] · P(at least one free)
stale: BHM-002: no event received for this lot yet (the numbers are the last known)
";
        assert_eq!(text, expected, "got:\n{text}");
    }

    #[test]
    fn a_table_without_a_model_says_so() {
        let live_only = LotAvailability {
            model_name: String::new(),
            forecasts: Vec::new(),
            ..lot()
        };
        let text = availability_table(&[live_only]);
        assert!(text.starts_with("no model is active"), "{text}");
        assert!(!text.contains("forecasts:"), "{text}");
        assert!(!text.contains("stale:"), "{text}");
    }

    #[test]
    fn search_results_are_ranked_with_distance_and_chance() {
        let found = [
            NearbyLot {
                availability: Some(lot()),
                distance_m: 320.4,
                probability_any_free_at_arrival: 0.97,
                slots_of_type: 4,
            },
            NearbyLot {
                availability: Some(stale_lot()),
                distance_m: 1_250.0,
                probability_any_free_at_arrival: 0.0,
                slots_of_type: 1,
            },
        ];
        let text = search_table(&found, Some(SlotType::Ev));
        assert!(text.starts_with("model gbm v3\n"), "{text}");
        assert!(text.contains("ev slots"), "{text}");
        let first: Vec<&str> = text
            .lines()
            .find(|line| line.contains("BHM-001"))
            .expect("a row for BHM-001")
            .split(['│', '┆'])
            .map(str::trim)
            .filter(|cell| !cell.is_empty())
            .collect();
        assert_eq!(
            first,
            [
                "1",
                "BHM-001",
                "Bull Ring",
                "320 m",
                "97%",
                "6.2 [3–9]",
                "9/40",
                "4",
                "1 min"
            ]
        );
        assert!(text.contains("1.2 km"), "{text}");
        assert!(text.contains("stale: BHM-002"), "{text}");
        let any_type = search_table(&found, None);
        assert!(!any_type.contains("slots"), "{any_type}");
        assert_eq!(
            search_table(&[], None),
            "no lot within the radius has an answer\n"
        );
    }

    #[test]
    fn a_watch_update_fits_one_line() {
        let line = watch_line(&lot());
        assert_eq!(
            line,
            "2026-11-26 18:00:00 UTC  BHM-001 (Bull Ring)  free 9/40 (occupied 30, unknown 1), \
             data 1 min old; +30 min 6.2 [3–9] · 97%; +60 min 2.0 [0–5] · >99% (gbm v3)"
        );
        let stale = watch_line(&stale_lot());
        assert!(
            stale.ends_with("data none yet  STALE: no event received for this lot yet"),
            "{stale}"
        );
    }

    #[test]
    fn a_model_shows_its_figures_and_missing_coverage_as_n_a() {
        let model = ModelInfo {
            name: "gbm".to_owned(),
            version: 3,
            kind: "gbm".to_owned(),
            trained_until_ms: 1_795_651_200_000,
            feature_schema_hash: "0123456789abcdef0123".to_owned(),
            sha256: "fedcba98765432100000".to_owned(),
            active: true,
            metrics: vec![
                HorizonMetrics {
                    horizon_minutes: 30,
                    mae_rate: 0.0412,
                    coverage_80: 0.81,
                },
                HorizonMetrics {
                    horizon_minutes: 60,
                    mae_rate: 0.05,
                    coverage_80: f64::NAN,
                },
            ],
        };
        let text = model_text(&model);
        assert!(
            text.starts_with(
                "gbm v3 — gbm model, trained until 2026-11-26 00:00 UTC, active (answering)\n"
            ),
            "{text}"
        );
        assert!(text.contains("0.0412"), "{text}");
        assert!(text.contains("81%"), "{text}");
        assert!(text.contains("n/a"), "{text}");
        let listed = models_table(&[model]);
        assert!(listed.contains("fedcba987654 "), "{listed}");
        assert!(
            listed.contains("30m MAE 0.041 cov80 81%; 60m MAE 0.050 cov80 n/a"),
            "{listed}"
        );
    }

    #[test]
    fn probabilities_never_round_to_certainty() {
        assert_eq!(percent_text(0.999), ">99%");
        assert_eq!(percent_text(1.0), "100%");
        assert_eq!(percent_text(0.001), "<1%");
        assert_eq!(percent_text(0.0), "0%");
        assert_eq!(percent_text(0.5), "50%");
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
