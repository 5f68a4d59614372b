//! The gRPC services over real gRPC on loopback, answering from real live state scored by a real
//! model from a real registry: forecasts bounded and attributed, every bad request refused with its
//! code and a message naming what is wrong, search ranked, watches updated, models listed and
//! activated (a good version under load without a failed request, a corrupt one refused while the
//! old one keeps answering), and events produced to the real broker visible over gRPC.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parkcast_features::calendar::{DayType, HolidayCalendar};
use parkcast_proto::v1::availability_client::AvailabilityClient;
use parkcast_proto::v1::availability_server::AvailabilityServer;
use parkcast_proto::v1::models_client::ModelsClient;
use parkcast_proto::v1::models_server::ModelsServer;
use parkcast_proto::v1::{
    ActivateModelRequest, BatchGetAvailabilityRequest, ClearShadowRequest, DescribeModelRequest,
    GetAvailabilityRequest, GetLiveQualityRequest, ListModelsRequest, LotAvailability,
    SearchNearbyRequest, ShadowModelRequest, SlotType, WatchAvailabilityRequest,
};
use parkcast_serving::decode::{SensorEvent, SessionMark};
use parkcast_serving::grpc::{
    AvailabilityService, LotDirectory, LotInfo, ModelsService, ServiceContext,
};
use parkcast_serving::live::{LiveRules, LiveState};
use parkcast_serving::metrics::{ActivationOutcome, Rpc, ServingMetrics};
use parkcast_serving::models::ModelManager;
use parkcast_serving::requests::RequestLimits;
use parkcast_serving::rest;
use parkcast_serving::scoring::{Clock, LiveSource, Scoring, ScoringConfig};
use parkcast_serving::topology::TopologyIndex;
use tonic::Code;
use tonic::transport::Channel;

use common::{DAY_MS, Source, history};

/// Aligned to the 15-minute grid.
const NOW: i64 = 1_764_000_000_000;
const TOKEN: &str = "s3cret-admin-token";

fn sensor(slot: u32, occupied: bool, seq: u64, event_time_ms: i64) -> SensorEvent {
    SensorEvent {
        lot: 0,
        slot,
        occupied,
        heartbeat: false,
        seq,
        event_time_ms,
        clamped: false,
    }
}

const LOTS: [(&str, u32); 3] = [("north", 4), ("south", 2), ("east", 20)];

struct Fixture {
    source: Arc<Source>,
    scoring: Arc<Scoring>,
    manager: Arc<ModelManager>,
    metrics: ServingMetrics,
    registry: tempfile::TempDir,
    address: std::net::SocketAddr,
    /// The REST face over the same services ([`parkcast_serving::rest`]).
    http: std::net::SocketAddr,
}

impl Fixture {
    async fn availability(&self) -> AvailabilityClient<Channel> {
        AvailabilityClient::connect(format!("http://{}", self.address))
            .await
            .expect("the client connects")
    }

    async fn models(&self) -> ModelsClient<Channel> {
        ModelsClient::connect(format!("http://{}", self.address))
            .await
            .expect("the client connects")
    }
}

/// The server: three lots (north with live readings and history, south with nothing, east with
/// history only), a toy model published as `toy` v1 and activated (unless `activate` is false).
async fn fixture(activate: bool) -> Fixture {
    fixture_with(Setup {
        activate,
        ..Setup::default()
    })
    .await
}

/// How [`fixture_with`] sets the server up.
struct Setup {
    /// Activate `toy` v1.
    activate: bool,
    /// North's and east's grid history: `seed(capacity, from_ms, until_ms)`.
    seed: fn(u32, i64, i64) -> Vec<(i64, parkcast_features::grid::GridValue)>,
    /// The lots have sessions, seeded and weighed by the model ([`common::publish_toy`]).
    sessions: bool,
    /// Request limits.
    limits: RequestLimits,
    /// The toy model's own residuals for a day type ([`common::Toy::wide_on`]).
    wide_on: Option<DayType>,
    /// A public holiday of the toy model's calendar ([`common::Toy::holiday`]).
    holiday: Option<chrono::NaiveDate>,
    /// The toy model's price response ([`common::Toy::priced`]).
    priced: Option<(f64, &'static [(&'static str, i64)])>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            activate: true,
            seed: history,
            sessions: false,
            limits: RequestLimits::default(),
            wide_on: None,
            holiday: None,
            priced: None,
        }
    }
}

/// [`fixture`], set up otherwise.
async fn fixture_with(setup: Setup) -> Fixture {
    let Setup {
        activate,
        seed,
        sessions,
        limits,
        wide_on,
        holiday,
        priced,
    } = setup;
    let topology = TopologyIndex::new(LOTS.iter().map(|(lot, capacity)| {
        (
            (*lot).to_owned(),
            (0..*capacity).map(|slot| format!("{lot}-{slot}")).collect(),
        )
    }))
    .expect("valid");
    let mut live = LiveState::new(&topology, LiveRules::default());
    for (slot, occupied) in [(0, true), (1, true), (2, false)] {
        live.apply_sensor(&sensor(slot, occupied, 1, NOW - 120_000))
            .expect("applies");
    }
    let source = Arc::new(Source::new(topology, live, NOW));
    let scoring = Arc::new(Scoring::new(
        Arc::clone(&source) as Arc<dyn LiveSource>,
        Clock::Fixed(NOW),
        ScoringConfig::default(),
    ));
    for (lot, capacity) in [("north", 4), ("east", 20)] {
        let entries = if sessions {
            common::arrivals(NOW - 9 * DAY_MS, NOW)
        } else {
            Vec::new()
        };
        assert!(scoring.seed(lot, seed(capacity, NOW - 9 * DAY_MS, NOW), entries, []));
    }
    let registry = tempfile::tempdir().expect("temporary folder");
    common::publish_toy(
        registry.path(),
        "toy",
        &LOTS,
        NOW - DAY_MS,
        common::Toy {
            sessions,
            wide_on,
            holiday,
            priced,
            ..common::Toy::default()
        },
    );
    let metrics = ServingMetrics::register(&mut prometheus_client::registry::Registry::default());
    let manager = Arc::new(ModelManager::new(
        registry.path(),
        Arc::clone(&scoring),
        Some(metrics.clone()),
    ));
    if activate {
        manager.activate("toy", 1).expect("the toy model activates");
    }
    scoring.tick();
    let mut infos = HashMap::new();
    let mut north_types = [0; 6];
    north_types[SlotType::Standard as usize] = 3;
    north_types[SlotType::Ev as usize] = 1;
    for (lot, latitude, slots_by_type) in [
        ("north", 51.500, north_types),
        ("south", 51.510, [0, 2, 0, 0, 0, 0]),
        ("east", 51.600, [0, 20, 0, 0, 0, 0]),
    ] {
        infos.insert(
            lot.to_owned(),
            LotInfo {
                name: format!("{lot} garage"),
                latitude: Some(latitude),
                longitude: Some(-0.12),
                slots_by_type,
            },
        );
    }
    let context = ServiceContext {
        directory: Arc::new(LotDirectory::new(scoring.topology(), infos)),
        scoring: Arc::clone(&scoring),
        limits,
        stale_after_ms: 600_000,
        metrics: Some(metrics.clone()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("bound");
    let availability = AvailabilityService::new(context);
    let models = ModelsService::new(
        Arc::clone(&manager),
        Some(TOKEN.to_owned()),
        Some(metrics.clone()),
    );
    let (reflection, reflection_v1alpha) =
        parkcast_serving::grpc::reflection(&[parkcast_proto::FILE_DESCRIPTOR_SET])
            .expect("reflection builds");
    let http = serve_rest(Some(rest::Services {
        availability: availability.clone(),
        models: models.clone(),
        ingest: None,
    }))
    .await;
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(AvailabilityServer::new(availability))
            .add_service(ModelsServer::new(models))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .expect("the server runs");
    });
    Fixture {
        source,
        scoring,
        manager,
        metrics,
        registry,
        address,
        http,
    }
}

/// The server's HTTP port (`/metrics` and the REST routes) over `services` (`None`: still
/// starting), as the server composes it; returns its address.
async fn serve_rest(services: Option<rest::Services>) -> std::net::SocketAddr {
    let slot: rest::Slot = Arc::new(std::sync::OnceLock::new());
    if let Some(services) = services {
        let _ = slot.set(services);
    }
    let (address, _task) = parkcast_serving::metrics::serve_with(
        "127.0.0.1:0".parse().expect("an address"),
        Arc::new(std::sync::Mutex::new(
            prometheus_client::registry::Registry::default(),
        )),
        rest::router(slot),
    )
    .await
    .expect("the HTTP port opens");
    address
}

/// One HTTP/1.1 exchange over TCP: (status, body).
async fn http(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("the HTTP port accepts");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("the request is sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("the response is read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

fn get(lot: &str, horizons: &[u32], arrival: i64) -> GetAvailabilityRequest {
    GetAvailabilityRequest {
        lot_id: lot.to_owned(),
        horizon_minutes: horizons.to_vec(),
        arrival_time_ms: arrival,
        price_per_hour: None,
    }
}

fn assert_bounded(answer: &LotAvailability) {
    let capacity = f64::from(answer.capacity);
    for forecast in &answer.forecasts {
        let free = [
            forecast.free_low_95,
            forecast.free_low_80,
            forecast.expected_free,
            forecast.free_high_80,
            forecast.free_high_95,
        ];
        assert!(
            free.windows(2).all(|pair| pair[0] <= pair[1] + 1e-9),
            "intervals nest around the point: {forecast:?}"
        );
        assert!(free.iter().all(|value| (0.0..=capacity).contains(value)));
        assert!((0.0..=1.0).contains(&forecast.probability_any_free));
    }
}

#[tokio::test]
async fn forecasts_are_bounded_attributed_and_start_from_the_live_reading() {
    let fixture = fixture(true).await;
    let mut client = fixture.availability().await;
    let north = client
        .get_availability(get("north", &[120, 15, 60], 0))
        .await
        .expect("an answer")
        .into_inner();
    assert_eq!(
        (north.occupied_now, north.free_now, north.unknown_now),
        (2, 1, 1)
    );
    assert_eq!((north.as_of_ms, north.data_age_ms), (NOW, Some(120_000)));
    assert!(!north.stale, "{}", north.stale_reason);
    assert_eq!((north.model_name.as_str(), north.model_version), ("toy", 1));
    assert_eq!(north.name, "north garage");
    let horizons: Vec<u32> = north.forecasts.iter().map(|f| f.horizon_minutes).collect();
    assert_eq!(horizons, vec![15, 60, 120]);
    for forecast in &north.forecasts {
        assert_eq!(
            forecast.target_time_ms,
            NOW + i64::from(forecast.horizon_minutes) * 60_000
        );
    }
    assert_bounded(&north);
    // A minute ahead the answer is still close to the live reading (2 of 4 occupied).
    let soon = client
        .get_availability(get("north", &[1], 0))
        .await
        .expect("an answer")
        .into_inner();
    assert!(
        (soon.forecasts[0].expected_free - 2.0).abs() < 0.5,
        "{soon:?}"
    );
    // An arrival time gets one forecast at that time.
    let arrival = NOW + 40 * 60_000;
    let at_arrival = client
        .get_availability(get("east", &[], arrival))
        .await
        .expect("an answer")
        .into_inner();
    assert_eq!(at_arrival.forecasts.len(), 1);
    assert_eq!(
        (
            at_arrival.forecasts[0].target_time_ms,
            at_arrival.forecasts[0].horizon_minutes
        ),
        (arrival, 40)
    );
    assert_bounded(&at_arrival);
    // East has history but no live event: it is stale and says why, but still forecast.
    assert!(at_arrival.stale && at_arrival.stale_reason.contains("no event"));
    // The toy model knows the wave: at 40 minutes the expected occupancy follows it.
    let expected = common::rate_at(arrival);
    let forecast_rate = 1.0 - at_arrival.forecasts[0].expected_free / 20.0;
    assert!(
        (forecast_rate - expected).abs() < 0.1,
        "{forecast_rate} vs {expected}"
    );
    // South has neither history nor events: no forecast, and the answer says so.
    let south = client
        .get_availability(get("south", &[30], 0))
        .await
        .expect("an answer")
        .into_inner();
    assert!(south.forecasts.is_empty());
    assert!(
        south.stale_reason.contains("no grid history"),
        "{}",
        south.stale_reason
    );
    assert_eq!(south.unknown_now, 2);
}

/// Half-widths of east's 80% intervals at 15 min, 1 h and 2 h, in slots.
async fn east_half_widths(wide_on: Option<DayType>) -> Vec<f64> {
    east_half_widths_on(wide_on, None).await
}

/// [`east_half_widths`], with NOW's date a public holiday of the model's calendar or not.
async fn east_half_widths_on(
    wide_on: Option<DayType>,
    holiday: Option<chrono::NaiveDate>,
) -> Vec<f64> {
    let fixture = fixture_with(Setup {
        wide_on,
        holiday,
        ..Setup::default()
    })
    .await;
    let answer = fixture
        .availability()
        .await
        .get_availability(get("east", &[15, 60, 120], 0))
        .await
        .expect("an answer")
        .into_inner();
    assert_bounded(&answer);
    answer
        .forecasts
        .iter()
        .map(|forecast| (forecast.free_high_80 - forecast.free_low_80) / 2.0)
        .collect()
}

#[tokio::test]
async fn intervals_are_those_of_the_targets_day_type() {
    // NOW is a Monday afternoon (UTC, no holidays), and every target within two hours too.
    let now = chrono::DateTime::from_timestamp_millis(NOW).expect("valid");
    assert_eq!(
        HolidayCalendar::from_dates("XX", []).day_type(now.date_naive()),
        DayType::Weekday
    );
    let pooled = east_half_widths(None).await;
    let weekday_wide = east_half_widths(Some(DayType::Weekday)).await;
    let saturday_wide = east_half_widths(Some(DayType::Saturday)).await;
    assert_eq!(pooled.len(), 3);
    // Residuals of another day type change nothing; the target's own day type's residuals (three
    // times as wide) widen the interval (clipped at the capacity, so by less than three times).
    assert_eq!(saturday_wide, pooled);
    for (own, pooled) in weekday_wide.iter().zip(&pooled) {
        assert!(own > &(1.5 * pooled), "{weekday_wide:?} vs {pooled:?}");
    }
}

#[tokio::test]
async fn a_holidays_intervals_are_the_widest_day_types() {
    // NOW's Monday made a public holiday: exchangeable with no day type, its targets read the widest
    // calibration the model has (here the Saturdays', three times the pooled), not the pooled one a
    // plain Monday reads.
    let today = chrono::DateTime::from_timestamp_millis(NOW)
        .expect("valid")
        .date_naive();
    let pooled = east_half_widths(Some(DayType::Saturday)).await;
    let on_holiday = east_half_widths_on(Some(DayType::Saturday), Some(today)).await;
    assert_eq!(on_holiday.len(), 3);
    for (holiday, pooled) in on_holiday.iter().zip(&pooled) {
        assert!(holiday > &(1.5 * pooled), "{on_holiday:?} vs {pooled:?}");
    }
}

#[tokio::test]
async fn a_lot_without_events_has_no_data_age_and_is_stale_with_the_reason() {
    let fixture = fixture(true).await;
    let mut client = fixture.availability().await;
    // East has history but no event, south neither: no age at all (not a sentinel like i64::MAX).
    for lot in ["east", "south"] {
        let answer = client
            .get_availability(get(lot, &[30], 0))
            .await
            .expect("an answer")
            .into_inner();
        assert_eq!(answer.data_age_ms, None, "{lot}");
        assert!(answer.stale, "{lot}");
        assert!(
            answer
                .stale_reason
                .contains("no event received for this lot yet"),
            "{lot}: {}",
            answer.stale_reason
        );
    }
    let north = client
        .get_availability(get("north", &[], 0))
        .await
        .expect("an answer")
        .into_inner();
    assert_eq!(north.data_age_ms, Some(120_000));
    // The same on the pricing feed's bands: east is forecast, without an age.
    let bands = parkcast_serving::pricing::bands("east", 20, &fixture.scoring.answer(2), NOW);
    assert!(!bands.is_empty());
    assert!(bands.iter().all(|band| band.data_age_ms.is_none()));
}

#[tokio::test]
async fn reflection_answers_v1_and_v1alpha_clients() {
    use tonic_reflection::pb::{v1, v1alpha};
    let fixture = fixture(true).await;
    let channel = Channel::from_shared(format!("http://{}", fixture.address))
        .expect("a valid address")
        .connect()
        .await
        .expect("the client connects");
    let expected = [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "parkcast.v1.Availability",
        "parkcast.v1.Models",
    ];

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha answers")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("a response")
        .expect("open");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("not a service list: {response:?}");
    };
    let mut names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    names.sort();
    assert_eq!(names, expected);

    let mut current = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = current
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1 answers")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("a response")
        .expect("open");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("not a service list: {response:?}");
    };
    let mut names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    names.sort();
    assert_eq!(names, expected);
}

/// An `ActivateModel` request with the admin token.
fn activation(name: &str, version: u32) -> tonic::Request<ActivateModelRequest> {
    let mut request = tonic::Request::new(ActivateModelRequest {
        name: name.to_owned(),
        version,
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii"),
    );
    request
}

#[tokio::test]
async fn messages_quote_a_short_prefix_of_the_input_and_no_server_path() {
    let fixture = fixture(true).await;
    let mut client = fixture.availability().await;
    let huge = "x".repeat(1 << 20);
    let short = |status: &tonic::Status| {
        status.message().len() < 300 && status.message().contains("(1048576 bytes)")
    };
    let status = client
        .get_availability(get(&huge, &[], 0))
        .await
        .expect_err("refused");
    let start: String = status.message().chars().take(100).collect();
    assert_eq!(status.code(), Code::NotFound, "{start}");
    assert!(short(&status), "{}", status.message());
    let status = client
        .batch_get_availability(BatchGetAvailabilityRequest {
            requests: vec![get("north", &[], 0), get(&huge, &[], 0)],
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::NotFound);
    assert!(short(&status), "{}", status.message());
    let status = client
        .watch_availability(WatchAvailabilityRequest {
            lot_ids: vec![huge.clone()],
            horizon_minutes: vec![],
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::NotFound);
    assert!(short(&status), "{}", status.message());

    let mut models = fixture.models().await;
    let status = models
        .describe_model(DescribeModelRequest {
            name: huge.clone(),
            version: 0,
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(short(&status), "{}", status.message());
    let status = models
        .activate_model(activation(&huge, 1))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(short(&status), "{}", status.message());

    // Registry errors name files from the registry down, never the server's absolute path.
    let root = fixture.registry.path().display().to_string();
    let v2 = common::publish(fixture.registry.path(), "toy", &LOTS, NOW);
    let model_file = fixture.registry.path().join("toy/2").join(&v2.model_file);
    let mut bytes = std::fs::read(&model_file).expect("the model file");
    bytes[0] ^= 0xff;
    std::fs::write(&model_file, bytes).expect("damaged");
    let status = models
        .activate_model(activation("toy", 2))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains(&format!("toy/2/{}", v2.model_file))
            && !status.message().contains(&root),
        "{}",
        status.message()
    );
    for version in [0, 9] {
        let status = models
            .describe_model(DescribeModelRequest {
                name: if version == 0 { "nothing" } else { "toy" }.to_owned(),
                version,
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::NotFound);
        assert!(!status.message().contains(&root), "{}", status.message());
    }
    let status = models
        .activate_model(activation("toy", 9))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::NotFound);
    assert!(!status.message().contains(&root), "{}", status.message());
}

#[tokio::test]
async fn a_registry_that_cannot_be_read_is_internal_and_the_active_model_keeps_serving() {
    let fixture = fixture(true).await;
    let root = fixture.registry.path().display().to_string();
    // v2's model file turns into a directory: reading it is an I/O error, not a damaged version.
    let v2 = common::publish(fixture.registry.path(), "toy", &LOTS, NOW);
    let model_file = fixture.registry.path().join("toy/2").join(&v2.model_file);
    std::fs::remove_file(&model_file).expect("the model file");
    std::fs::create_dir(&model_file).expect("a directory in its place");
    let mut models = fixture.models().await;
    let status = models
        .activate_model(activation("toy", 2))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Internal, "{}", status.message());
    assert!(
        status
            .message()
            .contains(&format!("toy/2/{}", v2.model_file))
            && status.message().contains("the active model keeps serving")
            && !status.message().contains(&root),
        "{}",
        status.message()
    );
    let mut client = fixture.availability().await;
    let still = client
        .get_availability(get("north", &[30], 0))
        .await
        .expect("still answering")
        .into_inner();
    assert_eq!(still.model_version, 1);
}

/// A codec that sends and receives raw bytes: garbage that no generated client would send.
#[derive(Debug, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawBytes;

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut bytes = vec![0; prost::bytes::Buf::remaining(buf)];
        prost::bytes::Buf::copy_to_slice(buf, &mut bytes);
        Ok(Some(bytes))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

#[tokio::test]
async fn a_request_body_that_does_not_decode_is_invalid_argument_on_every_method() {
    let fixture = fixture(true).await;
    let channel = Channel::from_shared(format!("http://{}", fixture.address))
        .expect("a valid address")
        .connect()
        .await
        .expect("the client connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    // A gRPC frame whose body is no protobuf message: ten 0xff bytes are a varint that never ends.
    let garbage = vec![0xff; 10];
    for path in [
        "/parkcast.v1.Availability/GetAvailability",
        "/parkcast.v1.Availability/BatchGetAvailability",
        "/parkcast.v1.Availability/SearchNearby",
        "/parkcast.v1.Availability/WatchAvailability",
        "/parkcast.v1.Models/ListModels",
        "/parkcast.v1.Models/DescribeModel",
        "/parkcast.v1.Models/ActivateModel",
    ] {
        grpc.ready().await.expect("the channel is ready");
        let status = grpc
            .unary(
                tonic::Request::new(garbage.clone()),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                RawCodec,
            )
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{path}: {}",
            status.message()
        );
        assert!(
            status.message().starts_with("the request body is not a "),
            "{path}: {}",
            status.message()
        );
    }
    // Well-formed requests still decode.
    let answer = fixture
        .availability()
        .await
        .get_availability(get("north", &[], 0))
        .await;
    assert!(answer.is_ok());
}

#[tokio::test]
async fn bad_requests_get_their_code_and_a_message_saying_what_is_wrong() {
    let fixture = fixture(true).await;
    let mut client = fixture.availability().await;
    let cases = [
        (get("nowhere", &[], 0), Code::NotFound, "\"nowhere\""),
        (get("", &[], 0), Code::InvalidArgument, "lot_id is empty"),
        (
            get("north", &[145], 0),
            Code::InvalidArgument,
            "horizon 145 min is not served; forecasts reach 1 to 120 min",
        ),
        (
            get("north", &[0], 0),
            Code::InvalidArgument,
            "horizon 0 min",
        ),
        (
            get("north", &[], NOW - 1_000),
            Code::InvalidArgument,
            "in the past",
        ),
        (
            get("north", &[], NOW + 86_400_000),
            Code::InvalidArgument,
            "at most 120 min",
        ),
        (
            get("north", &[15], NOW + 60_000),
            Code::InvalidArgument,
            "not both",
        ),
    ];
    for (request, code, says) in cases {
        let status = client
            .get_availability(request.clone())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{request:?}: {}", status.message());
        assert!(status.message().contains(says), "{}", status.message());
    }
    let empty = client
        .batch_get_availability(BatchGetAvailabilityRequest { requests: vec![] })
        .await
        .expect_err("refused");
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("no requests"));
    let oversized = client
        .batch_get_availability(BatchGetAvailabilityRequest {
            requests: vec![get("north", &[], 0); 101],
        })
        .await
        .expect_err("refused");
    assert_eq!(oversized.code(), Code::InvalidArgument);
    assert!(oversized.message().contains("at most 100"));
    let one_bad = client
        .batch_get_availability(BatchGetAvailabilityRequest {
            requests: vec![get("north", &[], 0), get("north", &[999], 0)],
        })
        .await
        .expect_err("refused");
    assert_eq!(one_bad.code(), Code::InvalidArgument);
    assert!(one_bad.message().starts_with("request 1 of the batch"));
    let far = SearchNearbyRequest {
        latitude: 51.5,
        longitude: -0.12,
        radius_m: 50_000.0,
        ..SearchNearbyRequest::default()
    };
    let status = client.search_nearby(far).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("radius_m 50000"),
        "{}",
        status.message()
    );
    let batch = client
        .batch_get_availability(BatchGetAvailabilityRequest {
            requests: vec![get("south", &[], 0), get("north", &[30], 0)],
        })
        .await
        .expect("an answer")
        .into_inner();
    let order: Vec<_> = batch.lots.iter().map(|lot| lot.lot_id.as_str()).collect();
    assert_eq!(order, vec!["south", "north"]);
    // Requests are timed and counted per RPC and code.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &{
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = ServingMetrics::register(&mut registry);
        metrics.request(Rpc::GetAvailability, 0.001, Code::NotFound);
        registry
    })
    .expect("encodes");
    assert!(
        text.contains("parkcast_grpc_requests_total{rpc=\"GetAvailability\",code=\"not_found\"} 1")
    );
    drop(fixture.metrics);
}

#[tokio::test]
async fn without_a_model_forecasts_are_unavailable_and_the_live_picture_answers() {
    let fixture = fixture(false).await;
    let mut client = fixture.availability().await;
    let status = client
        .get_availability(get("north", &[15], 0))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("no model is active"));
    let live = client
        .get_availability(get("north", &[], 0))
        .await
        .expect("the live picture")
        .into_inner();
    assert_eq!((live.occupied_now, live.model_version), (2, 0));
    assert!(!fixture.scoring.ready());
    // Nothing forecast, nothing scored: live quality says so.
    let status = fixture
        .models()
        .await
        .get_live_quality(GetLiveQualityRequest { lot_ids: vec![] })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("no model is active"),
        "{status:?}"
    );
}

#[tokio::test]
async fn live_quality_answers_per_horizon_and_window_and_names_an_unknown_lot() {
    let fixture = fixture(true).await;
    let mut models = fixture.models().await;
    let quality = models
        .get_live_quality(GetLiveQualityRequest {
            lot_ids: vec!["north".to_owned()],
        })
        .await
        .expect("an answer")
        .into_inner();
    assert_eq!(
        (quality.model_name.as_str(), quality.model_version),
        ("toy", 1)
    );
    assert_eq!(quality.as_of_ms, NOW);
    // Every horizon of the model, over the hour and the day, city-wide and for north.
    let served: Vec<(u32, &str)> = quality
        .city
        .iter()
        .map(|window| (window.horizon_minutes, window.window.as_str()))
        .collect();
    assert_eq!(
        served.len(),
        2 * fixture
            .scoring
            .model()
            .expect("active")
            .model
            .horizons_minutes()
            .len()
    );
    assert!(
        served.contains(&(15, "hour")) && served.contains(&(15, "day")),
        "{served:?}"
    );
    assert_eq!(quality.lots.len(), 1);
    assert_eq!(quality.lots[0].lot_id, "north");
    assert_eq!(quality.lots[0].windows.len(), quality.city.len());
    let status = models
        .get_live_quality(GetLiveQualityRequest {
            lot_ids: vec!["north".to_owned(), "atlantis".to_owned()],
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("atlantis"), "{status:?}");
}

#[tokio::test]
async fn search_ranks_lots_in_the_radius_and_filters_by_slot_type() {
    let fixture = fixture(true).await;
    let mut client = fixture.availability().await;
    let search = SearchNearbyRequest {
        latitude: 51.505,
        longitude: -0.12,
        radius_m: 3_000.0,
        arrival_time_ms: NOW + 30 * 60_000,
        ..SearchNearbyRequest::default()
    };
    let found = client
        .search_nearby(search)
        .await
        .expect("an answer")
        .into_inner()
        .lots;
    // East is 10 km away; south has no forecast.
    let ids: Vec<_> = found
        .iter()
        .map(|lot| lot.availability.as_ref().map(|a| a.lot_id.as_str()))
        .collect();
    assert_eq!(ids, vec![Some("north")]);
    assert!(
        (found[0].distance_m - 556.0).abs() < 5.0,
        "{}",
        found[0].distance_m
    );
    assert!((0.0..=1.0).contains(&found[0].probability_any_free_at_arrival));
    let wide = SearchNearbyRequest {
        radius_m: 10_000.0,
        latitude: 51.55,
        ..search
    };
    let found = client
        .search_nearby(wide)
        .await
        .expect("an answer")
        .into_inner()
        .lots;
    assert_eq!(found.len(), 2, "north and east");
    assert!(
        found[0].probability_any_free_at_arrival >= found[1].probability_any_free_at_arrival,
        "best first"
    );
    // Minutes to arrival by the server's clock ask the same.
    let ev = SearchNearbyRequest {
        slot_type: SlotType::Ev as i32,
        arrival_time_ms: 0,
        arrival_in_minutes: 30,
        ..wide
    };
    let found = client
        .search_nearby(ev)
        .await
        .expect("an answer")
        .into_inner()
        .lots;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].slots_of_type, 1);
}

#[tokio::test]
async fn a_watch_gets_the_current_answer_then_every_change() {
    let fixture = fixture(true).await;
    let mut client = fixture.availability().await;
    let mut stream = client
        .watch_availability(WatchAvailabilityRequest {
            lot_ids: vec!["north".into()],
            horizon_minutes: vec![60],
        })
        .await
        .expect("a stream")
        .into_inner();
    let first = stream.message().await.expect("a message").expect("open");
    assert_eq!((first.occupied_now, first.forecasts.len()), (2, 1));
    fixture
        .source
        .live()
        .apply_sensor(&sensor(3, true, 1, NOW - 60_000))
        .expect("applies");
    fixture.scoring.tick();
    let second = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("an update in time")
        .expect("a message")
        .expect("open");
    assert_eq!(second.occupied_now, 3);
    let refused = client
        .watch_availability(WatchAvailabilityRequest {
            lot_ids: vec![],
            horizon_minutes: vec![],
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
async fn eventually(timeout: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_watch_of_one_lot_named_a_hundred_times_sends_one_message_per_change() {
    let fixture = fixture(true).await;
    let mut client = fixture.availability().await;
    let mut stream = client
        .watch_availability(WatchAvailabilityRequest {
            lot_ids: vec!["north".into(); 100],
            horizon_minutes: vec![],
        })
        .await
        .expect("a stream")
        .into_inner();
    let first = stream.message().await.expect("a message").expect("open");
    assert_eq!(first.occupied_now, 2);
    fixture
        .source
        .live()
        .apply_sensor(&sensor(3, true, 1, NOW - 60_000))
        .expect("applies");
    fixture.scoring.tick();
    // The next message is the change, not a copy of the first answer.
    let second = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("an update in time")
        .expect("a message")
        .expect("open");
    assert_eq!(second.occupied_now, 3);
}

#[tokio::test]
async fn watch_streams_are_capped_and_a_closed_one_frees_its_place() {
    let fixture = fixture_with(Setup {
        limits: RequestLimits {
            max_watch_streams: 2,
            ..RequestLimits::default()
        },
        ..Setup::default()
    })
    .await;
    let mut client = fixture.availability().await;
    let watch = || WatchAvailabilityRequest {
        lot_ids: vec!["north".into()],
        horizon_minutes: vec![],
    };
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = client
            .watch_availability(watch())
            .await
            .expect("a stream")
            .into_inner();
        stream.message().await.expect("a message").expect("open");
        open.push(stream);
    }
    assert_eq!(fixture.metrics.watch_streams.get(), 2);
    let refused = client
        .watch_availability(watch())
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("2 watch streams are open")
            && refused.message().contains("limits.max_watch_streams"),
        "{}",
        refused.message()
    );
    // A client that leaves gives its place back, though its lot never changes.
    drop(open.pop());
    assert!(
        eventually(std::time::Duration::from_secs(10), || {
            fixture.metrics.watch_streams.get() == 1
        })
        .await,
        "the closed stream is noticed"
    );
    let mut again = client
        .watch_availability(watch())
        .await
        .expect("a place is free")
        .into_inner();
    again.message().await.expect("a message").expect("open");
    assert_eq!(fixture.metrics.watch_streams.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn models_activate_under_load_and_a_corrupt_version_is_refused() {
    let fixture = fixture(true).await;
    let mut models = fixture.models().await;
    let listed = models
        .list_models(ListModelsRequest {})
        .await
        .expect("a list")
        .into_inner()
        .models;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].active && listed[0].kind == "linear");
    let described = models
        .describe_model(DescribeModelRequest {
            name: "toy".into(),
            version: 0,
        })
        .await
        .expect("a description")
        .into_inner();
    assert_eq!((described.version, described.sha256.len()), (1, 64));
    let missing = models
        .describe_model(DescribeModelRequest {
            name: "toy".into(),
            version: 9,
        })
        .await
        .expect_err("refused");
    assert_eq!(missing.code(), Code::NotFound);

    let activate = |version: u32, token: Option<&str>| {
        let mut request = tonic::Request::new(ActivateModelRequest {
            name: "toy".into(),
            version,
        });
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
        }
        request
    };
    for token in [None, Some("wrong")] {
        let status = models
            .activate_model(activate(1, token))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    }

    // v2: the same model trained a day later. Activated while clients hammer the server.
    common::publish(fixture.registry.path(), "toy", &LOTS, NOW);
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let mut client = fixture.availability().await;
        let (stop, answered, failed) = (
            Arc::clone(&stop),
            Arc::clone(&answered),
            Arc::clone(&failed),
        );
        load.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client.get_availability(get("north", &[30, 60], 0)).await {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        assert_eq!(answer.forecasts.len(), 2);
                        versions.push(answer.model_version);
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            versions
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let info = models
        .activate_model(activate(2, Some(TOKEN)))
        .await
        .expect("v2 activates")
        .into_inner();
    assert_eq!((info.version, info.active), (2, true));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for task in load {
        let versions = task.await.expect("the load task ends");
        // Each client sees v1 until the swap, then only v2.
        assert!(
            versions.windows(2).all(|pair| pair[0] <= pair[1]),
            "{versions:?}"
        );
        seen.extend(versions);
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    assert!(answered.load(Ordering::Relaxed) > 20);
    assert!(
        seen.contains(&1) && seen.contains(&2),
        "both versions answered"
    );

    // v3: a file whose checksum matches its manifest but that is no model.
    common::publish_bytes(
        fixture.registry.path(),
        "toy",
        b"not a model at all",
        parkcast_features::vector::FeatureParams::new(common::STEP_MINUTES),
        NOW - 21 * DAY_MS,
        NOW,
    );
    let refused = models
        .activate_model(activate(3, Some(TOKEN)))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("corrupt") && refused.message().contains("keeps serving"),
        "{}",
        refused.message()
    );
    // v4: a good model whose file was damaged after publishing.
    let v4 = common::publish(fixture.registry.path(), "toy", &LOTS, NOW);
    let model_file = fixture.registry.path().join("toy/4").join(v4.model_file);
    let mut bytes = std::fs::read(&model_file).expect("the model file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&model_file, bytes).expect("damaged");
    let refused = models
        .activate_model(activate(4, Some(TOKEN)))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("sha256") || refused.message().contains("checksum"),
        "{}",
        refused.message()
    );
    assert_eq!(
        fixture.metrics.activation_count(ActivationOutcome::Corrupt),
        2
    );
    // The registry watch skips refused versions rather than retrying them forever.
    assert!(!fixture.manager.follow_once("toy"));

    let mut client = fixture.availability().await;
    let still = client
        .get_availability(get("north", &[30], 0))
        .await
        .expect("still answering")
        .into_inner();
    assert_eq!(still.model_version, 2);
    assert_eq!(
        fixture
            .metrics
            .activation_count(ActivationOutcome::Activated),
        2
    );
}

#[test]
fn a_model_activated_into_a_server_without_history_seeds_it_once() {
    let topology = TopologyIndex::new([(
        "north".to_owned(),
        (0..4).map(|slot| format!("north-{slot}")).collect(),
    )])
    .expect("valid");
    let live = LiveState::new(&topology, LiveRules::default());
    let source = Arc::new(Source::new(topology, live, NOW));
    let scoring = Arc::new(Scoring::new(
        source as Arc<dyn LiveSource>,
        Clock::Fixed(NOW),
        ScoringConfig::default(),
    ));
    let registry = tempfile::tempdir().expect("temporary folder");
    common::publish(registry.path(), "toy", &[("north", 4)], NOW - DAY_MS);
    let loads = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&loads);
    let manager = ModelManager::new(registry.path(), Arc::clone(&scoring), None).with_history(
        Box::new(move |scoring, served| {
            counted.fetch_add(1, Ordering::Relaxed);
            assert_eq!(served.model.step_minutes(), common::STEP_MINUTES);
            scoring.seed("north", history(4, NOW - 9 * DAY_MS, NOW), [], []);
            Ok(1)
        }),
    );
    assert!(!scoring.has_history());
    manager.activate("toy", 1).expect("v1 activates");
    assert!(
        scoring.answer(0).forecast.is_some(),
        "forecast from the seeded history"
    );
    common::publish(registry.path(), "toy", &[("north", 4)], NOW);
    manager.activate("toy", 2).expect("v2 activates");
    assert_eq!(loads.load(Ordering::Relaxed), 1, "the history is read once");
}

/// The toy history with irregular noise: deviations from the profile that are not round numbers.
fn noisy_history(
    capacity: u32,
    from_ms: i64,
    until_ms: i64,
) -> Vec<(i64, parkcast_features::grid::GridValue)> {
    history(capacity, from_ms, until_ms)
        .into_iter()
        .enumerate()
        .map(|(index, (instant, mut value))| {
            let noise = (index as f64 * 0.5).sin() * 0.06 * value.capacity;
            value.occupied = (value.occupied + noise).clamp(0.0, value.capacity);
            (instant, value)
        })
        .collect()
}

#[tokio::test]
async fn reactivating_an_identical_model_leaves_every_answer_bit_identical() {
    let fixture = fixture_with(Setup {
        seed: noisy_history,
        sessions: true,
        ..Setup::default()
    })
    .await;
    let mut client = fixture.availability().await;
    // Live readings on east for six hours from three hours before the end of its seeded history
    // (the first live grid values replace seeded ones), with a car entering every ten minutes,
    // reported twenty minutes late: most count towards a grid instant already scored.
    for minute in 0..360 {
        let at = NOW - 3 * 3_600_000 + i64::from(minute) * 60_000;
        let event = SensorEvent {
            lot: 2,
            slot: minute % 20,
            occupied: (minute / 7) % 3 != 0,
            heartbeat: false,
            seq: u64::from(minute) + 1,
            event_time_ms: at,
            clamped: false,
        };
        let mut live = fixture.source.live();
        live.apply_sensor(&event).expect("applies");
        if minute % 10 == 0 {
            live.apply_session(&SessionMark {
                lot: 2,
                entry: true,
                event_time_ms: at - 20 * 60_000,
                clamped: false,
            })
            .expect("applies");
        }
        drop(live);
        fixture.scoring.tick();
    }
    // One more late entry, after the newest grid value was scored: the forecast takes it in.
    let scored = fixture
        .scoring
        .answer(2)
        .forecast
        .clone()
        .expect("a forecast");
    fixture
        .source
        .live()
        .apply_session(&SessionMark {
            lot: 2,
            entry: true,
            event_time_ms: scored.origin_ms - 60_000,
            clamped: false,
        })
        .expect("applies");
    fixture.scoring.tick();
    let ask = || get("east", &[15, 40, 60, 120], 0);
    let before_forecast = fixture
        .scoring
        .answer(2)
        .forecast
        .clone()
        .expect("a forecast");
    let before = client
        .get_availability(ask())
        .await
        .expect("an answer")
        .into_inner();
    assert!(
        before_forecast.origin_ms > NOW,
        "live grid values were scored"
    );

    // v2: v1's model file byte for byte.
    let v1 = fixture.registry.path().join("toy/1");
    let manifest: parkcast_inference::registry::Manifest =
        serde_json::from_slice(&std::fs::read(v1.join("manifest.json")).expect("the manifest"))
            .expect("parses");
    let bytes = std::fs::read(v1.join(&manifest.model_file)).expect("the model file");
    common::publish_bytes(
        fixture.registry.path(),
        "toy",
        &bytes,
        parkcast_features::vector::FeatureParams::new(common::STEP_MINUTES),
        NOW - 21 * DAY_MS,
        NOW - DAY_MS,
    );
    fixture
        .manager
        .activate("toy", 2)
        .expect("the copy activates");
    let after_forecast = fixture
        .scoring
        .answer(2)
        .forecast
        .clone()
        .expect("a forecast");
    let after = client
        .get_availability(ask())
        .await
        .expect("an answer")
        .into_inner();
    let bits = |forecast: &parkcast_inference::artifact::LotForecast| {
        let rates = forecast
            .horizons
            .iter()
            .map(|horizon| (horizon.target_ms, horizon.rate.to_bits()));
        (forecast.origin_ms, rates.collect::<Vec<_>>())
    };
    assert_eq!(
        bits(&before_forecast),
        bits(&after_forecast),
        "{before_forecast:?}\n{after_forecast:?}"
    );
    assert_eq!(after.model_version, 2);
    assert_eq!(after_forecast.origin_ms, scored.origin_ms);
    assert_ne!(
        after_forecast.horizons, scored.horizons,
        "the late entry counts towards the newest grid instant"
    );

    let answer_bits = |answer: &LotAvailability| {
        answer
            .forecasts
            .iter()
            .flat_map(|forecast| {
                [
                    forecast.expected_free,
                    forecast.free_low_80,
                    forecast.free_high_80,
                    forecast.free_low_95,
                    forecast.free_high_95,
                    forecast.probability_any_free,
                ]
                .map(f64::to_bits)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        answer_bits(&before),
        answer_bits(&after),
        "{before:?}\n{after:?}"
    );
}

/// A scorer over north (4 slots) with nine days of history, and a manager over `registry`.
fn north_manager(registry: &std::path::Path, metrics: &ServingMetrics) -> Arc<ModelManager> {
    let topology = TopologyIndex::new([(
        "north".to_owned(),
        (0..4).map(|slot| format!("north-{slot}")).collect(),
    )])
    .expect("valid");
    let live = LiveState::new(&topology, LiveRules::default());
    let source = Arc::new(Source::new(topology, live, NOW));
    let scoring = Arc::new(Scoring::new(
        source as Arc<dyn LiveSource>,
        Clock::Fixed(NOW),
        ScoringConfig::default(),
    ));
    assert!(scoring.seed("north", history(4, NOW - 9 * DAY_MS, NOW), [], []));
    Arc::new(ModelManager::new(registry, scoring, Some(metrics.clone())))
}

#[test]
fn start_up_takes_the_newest_version_that_passes_and_the_watch_skips_the_refused() {
    use parkcast_serving::models::load_startup;
    let dir = tempfile::tempdir().expect("temporary folder");
    let registry = parkcast_inference::registry::Registry::open(dir.path());
    let lots = [("north", 4)];
    // v1 good, v2 a file that is no model, v3 a good model damaged after publishing.
    common::publish(dir.path(), "toy", &lots, NOW - DAY_MS);
    common::publish_bytes(
        dir.path(),
        "toy",
        b"not a model at all",
        parkcast_features::vector::FeatureParams::new(common::STEP_MINUTES),
        NOW - 21 * DAY_MS,
        NOW,
    );
    let v3 = common::publish(dir.path(), "toy", &lots, NOW);
    let model_file = dir.path().join("toy/3").join(&v3.model_file);
    let mut bytes = std::fs::read(&model_file).expect("the model file");
    bytes[0] ^= 0xff;
    std::fs::write(&model_file, bytes).expect("damaged");

    let metrics = ServingMetrics::register(&mut prometheus_client::registry::Registry::default());
    let startup = load_startup(&registry, "toy", 0, Some(&metrics))
        .expect("an older version passes")
        .expect("a version");
    assert_eq!(startup.served.manifest.version, 1);
    assert_eq!(startup.refused, vec![3, 2]);
    assert_eq!(metrics.activation_count(ActivationOutcome::Corrupt), 2);
    // Asked for by number, a refused version stops the start with its reason.
    let error = load_startup(&registry, "toy", 3, None).expect_err("refused");
    assert!(error.to_string().contains("sha256"), "{error}");
    let error = load_startup(&registry, "toy", 2, None).expect_err("refused");
    assert_eq!(error.outcome(), ActivationOutcome::Corrupt);

    let manager = north_manager(dir.path(), &metrics);
    let served = manager.activate_startup(startup).expect("v1 activates");
    assert_eq!(served.manifest.version, 1);
    // The registry watch does not try v3 (or v2) again.
    assert!(!manager.follow_once("toy"));
    assert_eq!(metrics.activation_count(ActivationOutcome::Corrupt), 2);
    assert_eq!(metrics.activation_count(ActivationOutcome::Activated), 1);
    assert_eq!(
        manager.scoring().model().map(|m| m.manifest.version),
        Some(1)
    );
}

#[test]
fn start_up_falls_back_when_the_newest_fails_its_smoke_prediction() {
    use parkcast_serving::models::load_startup;
    let dir = tempfile::tempdir().expect("temporary folder");
    let registry = parkcast_inference::registry::Registry::open(dir.path());
    let lots = [("north", 4)];
    common::publish(dir.path(), "toy", &lots, NOW - DAY_MS);
    // v2 decodes, but has no calibration for its longest horizon.
    common::publish_toy(
        dir.path(),
        "toy",
        &lots,
        NOW,
        common::Toy {
            uncalibrated_longest: true,
            ..common::Toy::default()
        },
    );
    let metrics = ServingMetrics::register(&mut prometheus_client::registry::Registry::default());
    let startup = load_startup(&registry, "toy", 0, Some(&metrics))
        .expect("v2 loads")
        .expect("a version");
    assert_eq!(startup.served.manifest.version, 2);
    let manager = north_manager(dir.path(), &metrics);
    let served = manager.activate_startup(startup).expect("v1 stands in");
    assert_eq!(served.manifest.version, 1);
    assert_eq!(metrics.activation_count(ActivationOutcome::Smoke), 1);
    assert!(!manager.follow_once("toy"));
    assert_eq!(
        metrics.activation_count(ActivationOutcome::Smoke),
        1,
        "v2 is not retried"
    );
    // Asked for by number, the same version stops the start.
    let startup = load_startup(&registry, "toy", 2, None)
        .expect("v2 loads")
        .expect("a version");
    let error = north_manager(dir.path(), &metrics)
        .activate_startup(startup)
        .expect_err("refused");
    assert_eq!(error.outcome(), ActivationOutcome::Smoke);
}

/// A request of an admin RPC with the admin token.
fn admin<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii"),
    );
    request
}

#[test]
fn a_candidate_in_shadow_is_scored_like_the_active_model_and_never_served() {
    const LATER: i64 = NOW + 4 * 3_600_000;
    let topology = TopologyIndex::new([(
        "north".to_owned(),
        (0..4).map(|slot| format!("north-{slot}")).collect(),
    )])
    .expect("valid");
    let live = LiveState::new(&topology, LiveRules::default());
    let source = Arc::new(Source::new(topology, live, NOW));
    let scoring = Arc::new(Scoring::new(
        Arc::clone(&source) as Arc<dyn LiveSource>,
        Clock::Fixed(LATER),
        ScoringConfig::default(),
    ));
    scoring.seed("north", noisy_history(4, NOW - 9 * DAY_MS, NOW), [], []);
    let registry = tempfile::tempdir().expect("temporary folder");
    common::publish(registry.path(), "toy", &[("north", 4)], NOW - DAY_MS);
    // v2: v1's model file byte for byte; v3: a model fitted on other days.
    let v1 = registry.path().join("toy/1");
    let manifest: parkcast_inference::registry::Manifest =
        serde_json::from_slice(&std::fs::read(v1.join("manifest.json")).expect("the manifest"))
            .expect("parses");
    let bytes = std::fs::read(v1.join(&manifest.model_file)).expect("the model file");
    let params = parkcast_features::vector::FeatureParams::new(common::STEP_MINUTES);
    common::publish_bytes(
        registry.path(),
        "toy",
        &bytes,
        params,
        NOW - 21 * DAY_MS,
        NOW - DAY_MS,
    );
    common::publish(registry.path(), "toy", &[("north", 4)], NOW - 3 * DAY_MS);
    let manager = ModelManager::new(registry.path(), Arc::clone(&scoring), None);

    // Nothing to shadow beside before a model is active.
    assert!(manager.shadow("toy", 2).is_err());
    manager.activate("toy", 1).expect("v1 activates");
    let candidate = manager.shadow("toy", 2).expect("v2 goes into shadow");
    assert_eq!(candidate.label(), "toy v2");

    // Four hours of live readings after the seeded history.
    for minute in 0..240u32 {
        let at = NOW + i64::from(minute + 1) * 60_000;
        let event = SensorEvent {
            lot: 0,
            slot: minute % 4,
            occupied: (minute / 11) % 3 != 0,
            heartbeat: false,
            seq: u64::from(minute) + 1,
            event_time_ms: at,
            clamped: false,
        };
        source.live().apply_sensor(&event).expect("applies");
        scoring.tick();
        // Only the active model answers.
        let answer = scoring.answer(0);
        assert_eq!(
            answer.model.as_ref().map(|model| model.label()),
            Some("toy v1".to_owned())
        );
    }

    // The same model file in shadow scores the very same pairs with the very same errors.
    let (active, _) = scoring.quality().expect("the active model's");
    let report = scoring.shadow_quality().expect("the shadow's");
    assert_eq!(report.model.label(), "toy v2");
    let shadow = report.summary;
    // The active model over the shadow's period: here the same as its own, both from the start.
    for (own, since) in active.iter().zip(&report.active_summary) {
        assert_eq!((own.city, &own.lots), (since.city, &since.lots));
    }
    assert_eq!(active.len(), shadow.len());
    let mut scored = 0;
    for (active, shadow) in active.iter().zip(&shadow) {
        assert_eq!(
            (active.horizon_minutes, active.window),
            (shadow.horizon_minutes, shadow.window)
        );
        assert_eq!(
            active.city, shadow.city,
            "{} min, {}",
            active.horizon_minutes, active.window
        );
        assert_eq!(active.lots, shadow.lots);
        if (active.horizon_minutes, active.window) == (15, "day") {
            scored = active.city.pairs;
        }
    }
    // A 15-minute forecast from every grid instant of the four hours but the last.
    assert!(scored >= 12, "{scored} pairs scored at 15 min");

    // Another version replaces it and is scored apart; clearing ends it.
    manager.shadow("toy", 3).expect("v3 goes into shadow");
    assert_eq!(
        scoring.shadow_quality().map(|report| report.model.label()),
        Some("toy v3".to_owned())
    );
    assert_eq!(
        scoring.clear_shadow().map(|model| model.label()),
        Some("toy v3".to_owned())
    );
    assert!(scoring.shadow_quality().is_none());
    assert!(scoring.clear_shadow().is_none());

    // A candidate that is activated leaves the shadow.
    manager.shadow("toy", 2).expect("v2 goes into shadow");
    manager.activate("toy", 2).expect("v2 activates");
    assert!(scoring.shadow_quality().is_none());
}

#[tokio::test]
async fn shadow_rpcs_need_the_token_and_report_the_candidate_beside_the_active_model() {
    let served = fixture(true).await;
    let mut models = served.models().await;
    let request = ShadowModelRequest {
        name: "toy".to_owned(),
        version: 1,
    };
    let status = models
        .shadow_model(request.clone())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = models
        .clear_shadow(admin(ClearShadowRequest {}))
        .await
        .expect_err("nothing in shadow");
    assert_eq!(status.code(), Code::NotFound);
    let status = models
        .shadow_model(admin(ShadowModelRequest {
            name: "toy".to_owned(),
            version: 9,
        }))
        .await
        .expect_err("no such version");
    assert_eq!(status.code(), Code::NotFound);

    let candidate = models
        .shadow_model(admin(request))
        .await
        .expect("in shadow")
        .into_inner();
    assert_eq!((candidate.name.as_str(), candidate.version), ("toy", 1));
    let quality = models
        .get_live_quality(GetLiveQualityRequest {
            lot_ids: vec!["north".to_owned()],
        })
        .await
        .expect("an answer")
        .into_inner();
    let shadow = quality.shadow.expect("the candidate's figures");
    assert_eq!(
        (shadow.model_name.as_str(), shadow.model_version),
        ("toy", 1)
    );
    assert_eq!(shadow.city.len(), quality.city.len());
    assert_eq!(shadow.lots.len(), 1);
    let cleared = models
        .clear_shadow(admin(ClearShadowRequest {}))
        .await
        .expect("cleared")
        .into_inner();
    assert_eq!(cleared.version, 1);
    let quality = models
        .get_live_quality(GetLiveQualityRequest { lot_ids: vec![] })
        .await
        .expect("an answer")
        .into_inner();
    assert!(quality.shadow.is_none());

    // Before any model is active there is nothing to shadow beside.
    let idle = fixture(false).await;
    let status = idle
        .models()
        .await
        .shadow_model(admin(ShadowModelRequest {
            name: "toy".to_owned(),
            version: 1,
        }))
        .await
        .expect_err("no active model");
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_what_if_price_scales_demand_by_the_models_price_response() {
    let fixture = fixture_with(Setup {
        priced: Some((-0.4, &[("north", 300), ("east", 300)])),
        ..Setup::default()
    })
    .await;
    let mut client = fixture.availability().await;
    let base = client
        .get_availability(get("east", &[15, 60, 120], 0))
        .await
        .expect("an answer")
        .into_inner();
    assert_eq!((base.price_per_hour, base.demand_factor), (None, 1.0));
    for (price, factor) in [(6.0, 2.0_f64.powf(-0.4)), (1.5, 0.5_f64.powf(-0.4))] {
        let mut request = get("east", &[15, 60, 120], 0);
        request.price_per_hour = Some(price);
        let what_if = client
            .get_availability(request)
            .await
            .expect("a what-if answer")
            .into_inner();
        assert_eq!(what_if.price_per_hour, Some(price));
        assert_eq!(what_if.reference_price_per_hour, 3.0);
        assert!(
            (what_if.demand_factor - factor).abs() < 1e-12,
            "{what_if:?}"
        );
        assert_eq!(what_if.forecasts.len(), 3);
        for (plain, priced) in base.forecasts.iter().zip(&what_if.forecasts) {
            // The same forecast with demand scaled: the expected rate times the factor.
            let rate = 1.0 - plain.expected_free / 20.0;
            let expected_free = 20.0 * (1.0 - (rate * factor).clamp(0.0, 1.0));
            assert!(
                (priced.expected_free - expected_free).abs() < 1e-9,
                "{priced:?} vs {plain:?}"
            );
            // A dearer lot is likelier to have a free slot, a cheaper one less.
            if factor < 1.0 {
                assert!(priced.probability_any_free >= plain.probability_any_free);
            } else {
                assert!(priced.probability_any_free <= plain.probability_any_free);
            }
        }
    }

    let refused = |lot: &str, price: f64| {
        let mut request = get(lot, &[60], 0);
        request.price_per_hour = Some(price);
        request
    };
    for (request, code, words) in [
        (
            refused("east", -2.0),
            tonic::Code::InvalidArgument,
            "price_per_hour must be a positive",
        ),
        (refused("east", 0.0), tonic::Code::InvalidArgument, "got 0"),
        (
            refused("east", f64::NAN),
            tonic::Code::InvalidArgument,
            "got NaN",
        ),
        (
            refused("south", 4.0),
            tonic::Code::InvalidArgument,
            "\"south\" has no tariff",
        ),
    ] {
        let status = client.get_availability(request).await.expect_err("refused");
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(status.message().contains(words), "{}", status.message());
    }
}

#[tokio::test]
async fn a_model_without_a_price_response_refuses_a_what_if_and_says_why() {
    let fixture = fixture(true).await;
    let mut client = fixture.availability().await;
    let mut request = get("north", &[60], 0);
    request.price_per_hour = Some(4.0);
    let status = client
        .get_availability(request)
        .await
        .expect_err("no price response");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("toy v1 has no price response"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn pricing_bands_answer_a_what_if_price_as_the_feed_would_publish_them() {
    let fixture = fixture_with(Setup {
        priced: Some((-0.4, &[("north", 300), ("east", 300)])),
        ..Setup::default()
    })
    .await;
    let mut client = fixture.availability().await;
    let ask = |lot: &str, price: Option<f64>| parkcast_proto::v1::GetPricingBandsRequest {
        lot_id: lot.to_owned(),
        price_per_hour: price,
    };
    let now = client
        .get_pricing_bands(ask("east", None))
        .await
        .expect("the bands")
        .into_inner();
    assert!(!now.bands.is_empty());
    assert_eq!((now.price_per_hour, now.demand_factor), (None, 1.0));
    // What the feed publishes for the lot, from the same ready answer.
    let lot = fixture
        .scoring
        .topology()
        .lot("east")
        .expect("east is known");
    let published = parkcast_serving::pricing::bands("east", 20, &fixture.scoring.answer(lot), NOW);
    assert_eq!(now.bands, published);

    let dear = client
        .get_pricing_bands(ask("east", Some(9.0)))
        .await
        .expect("what-if bands")
        .into_inner();
    let factor = 3.0_f64.powf(-0.4);
    assert!((dear.demand_factor - factor).abs() < 1e-12);
    assert_eq!(dear.reference_price_per_hour, 3.0);
    assert_eq!(dear.bands.len(), now.bands.len());
    for (plain, priced) in now.bands.iter().zip(&dear.bands) {
        assert_eq!(plain.band_start_ms, priced.band_start_ms);
        let expected = (plain.expected_occupancy_rate * factor).clamp(0.0, 1.0);
        assert!((priced.expected_occupancy_rate - expected).abs() < 1e-12);
        assert!(
            priced.probability_occupancy_at_least_80 <= plain.probability_occupancy_at_least_80
        );
        assert!(priced.probability_occupancy_below_60 >= plain.probability_occupancy_below_60);
    }

    for (request, code, words) in [
        (
            ask("south", Some(2.0)),
            tonic::Code::InvalidArgument,
            "has no tariff",
        ),
        (
            ask("east", Some(-1.0)),
            tonic::Code::InvalidArgument,
            "price_per_hour",
        ),
        (ask("nowhere", None), tonic::Code::NotFound, "\"nowhere\""),
    ] {
        let status = client
            .get_pricing_bands(request)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(status.message().contains(words), "{}", status.message());
    }
}

/// A body as a message of the protobuf JSON mapping.
fn from_json<T: serde::de::DeserializeOwned>(body: &str) -> T {
    serde_json::from_str(body).unwrap_or_else(|error| panic!("{error}: {body}"))
}

#[tokio::test]
async fn json_answers_equal_the_grpc_answers_for_the_same_requests() {
    let fixture = fixture(true).await;
    let mut client = fixture.availability().await;
    let rest = |path: String| http(fixture.http, "GET", Box::leak(path.into_boxed_str()), "");

    let grpc = client
        .get_availability(get("north", &[15, 60], 0))
        .await
        .expect("an answer")
        .into_inner();
    assert_eq!(grpc.forecasts.len(), 2);
    let (status, body) =
        rest("/v1/lots/north/availability?horizon_minutes=15&horizon_minutes=60".to_owned()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(from_json::<LotAvailability>(&body), grpc);
    // The protobuf JSON mapping: lowerCamelCase names, 64-bit integers as strings, defaults written.
    let value: serde_json::Value = from_json(&body);
    assert_eq!(value["asOfMs"], serde_json::json!(NOW.to_string()));
    assert_eq!(value["stale"], serde_json::json!(false));
    assert_eq!(
        value["forecasts"][0]["horizonMinutes"],
        serde_json::json!(15)
    );
    // Comma-separated and JSON names are the same request.
    let (_, same) = rest("/v1/lots/north/availability?horizonMinutes=15,60".to_owned()).await;
    assert_eq!(same, body);

    let arrival = NOW + 45 * 60_000;
    let grpc = client
        .get_availability(get("east", &[], arrival))
        .await
        .expect("an answer")
        .into_inner();
    let (_, body) = rest(format!(
        "/v1/lots/east/availability?arrival_time_ms={arrival}"
    ))
    .await;
    assert_eq!(from_json::<LotAvailability>(&body), grpc);

    let batch = BatchGetAvailabilityRequest {
        requests: vec![get("south", &[], 0), get("north", &[30], 0)],
    };
    let grpc = client
        .batch_get_availability(batch.clone())
        .await
        .expect("an answer")
        .into_inner();
    let body = serde_json::to_string(&batch).expect("the request as JSON");
    let (status, body) = http(fixture.http, "POST", "/v1/availability:batchGet", &body).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        from_json::<parkcast_proto::v1::BatchGetAvailabilityResponse>(&body),
        grpc
    );

    let search = SearchNearbyRequest {
        latitude: 51.5,
        longitude: -0.12,
        radius_m: 10_000.0,
        arrival_in_minutes: 30,
        slot_type: SlotType::Standard as i32,
        ..SearchNearbyRequest::default()
    };
    let grpc = client
        .search_nearby(search)
        .await
        .expect("an answer")
        .into_inner();
    assert!(!grpc.lots.is_empty());
    let (_, body) = rest(
        "/v1/nearby?latitude=51.5&longitude=-0.12&radius_m=10000&arrival_in_minutes=30&slot_type=SLOT_TYPE_STANDARD"
            .to_owned(),
    )
    .await;
    assert_eq!(
        from_json::<parkcast_proto::v1::SearchNearbyResponse>(&body),
        grpc
    );

    let grpc = client
        .get_pricing_bands(parkcast_proto::v1::GetPricingBandsRequest {
            lot_id: "north".to_owned(),
            price_per_hour: None,
        })
        .await
        .expect("an answer")
        .into_inner();
    assert!(!grpc.bands.is_empty());
    let (_, body) = rest("/v1/lots/north/pricing-bands".to_owned()).await;
    assert_eq!(from_json::<parkcast_proto::v1::PricingBands>(&body), grpc);

    let grpc = client
        .list_replicas(parkcast_proto::v1::ListReplicasRequest {})
        .await
        .expect("an answer")
        .into_inner();
    let (_, body) = rest("/v1/replicas".to_owned()).await;
    assert_eq!(
        from_json::<parkcast_proto::v1::ListReplicasResponse>(&body),
        grpc
    );

    let mut models = fixture.models().await;
    let grpc = models
        .list_models(ListModelsRequest {})
        .await
        .expect("an answer")
        .into_inner();
    assert_eq!(grpc.models.len(), 1);
    let (_, body) = rest("/v1/models".to_owned()).await;
    assert_eq!(
        from_json::<parkcast_proto::v1::ListModelsResponse>(&body),
        grpc
    );
    let grpc = models
        .describe_model(DescribeModelRequest {
            name: "toy".to_owned(),
            version: 1,
        })
        .await
        .expect("an answer")
        .into_inner();
    let (_, body) = rest("/v1/models/toy/1".to_owned()).await;
    assert_eq!(from_json::<parkcast_proto::v1::ModelInfo>(&body), grpc);

    // The document describing all of it.
    let (status, body) = rest("/openapi.json".to_owned()).await;
    assert_eq!(status, 200);
    let document: serde_json::Value = from_json(&body);
    assert_eq!(document["openapi"], serde_json::json!("3.1.0"));
    assert!(document["paths"]["/v1/lots/{lot_id}/availability"]["get"].is_object());
}

#[tokio::test]
async fn a_bad_json_request_gets_the_grpc_code_as_http_status_and_the_same_message() {
    let fixture = fixture(true).await;
    let mut client = fixture.availability().await;
    let past = NOW - 1_000;
    let soon = NOW + 60_000;
    let cases = [
        (
            get("nowhere", &[], 0),
            "/v1/lots/nowhere/availability".to_owned(),
            404,
        ),
        (
            get("north", &[145], 0),
            "/v1/lots/north/availability?horizon_minutes=145".to_owned(),
            400,
        ),
        (
            get("north", &[0], 0),
            "/v1/lots/north/availability?horizon_minutes=0".to_owned(),
            400,
        ),
        (
            get("north", &[], past),
            format!("/v1/lots/north/availability?arrival_time_ms={past}"),
            400,
        ),
        (
            get("north", &[15], soon),
            format!("/v1/lots/north/availability?horizon_minutes=15&arrival_time_ms={soon}"),
            400,
        ),
        (
            GetAvailabilityRequest {
                price_per_hour: Some(-2.0),
                ..get("north", &[15], 0)
            },
            "/v1/lots/north/availability?horizon_minutes=15&price_per_hour=-2".to_owned(),
            400,
        ),
    ];
    for (request, path, http_status) in cases {
        let expected = client
            .get_availability(request)
            .await
            .expect_err("refused over gRPC");
        let (status, body) = http(fixture.http, "GET", &path, "").await;
        assert_eq!(status, http_status, "{path}: {body}");
        let error: serde_json::Value = from_json(&body);
        assert_eq!(
            error["message"],
            serde_json::json!(expected.message()),
            "{path}"
        );
        assert_eq!(error["code"], serde_json::json!(expected.code() as i32));
        assert_eq!(
            error["status"],
            serde_json::json!(rest::code_name(expected.code()))
        );
    }

    // A batch without requests, and a search too wide: the gRPC message, as 400.
    let expected = client
        .batch_get_availability(BatchGetAvailabilityRequest { requests: vec![] })
        .await
        .expect_err("refused");
    let (status, body) = http(fixture.http, "POST", "/v1/availability:batchGet", "{}").await;
    assert_eq!(status, 400);
    assert_eq!(
        from_json::<serde_json::Value>(&body)["message"],
        serde_json::json!(expected.message())
    );
    let far = SearchNearbyRequest {
        latitude: 51.5,
        longitude: -0.12,
        radius_m: 50_000.0,
        ..SearchNearbyRequest::default()
    };
    let expected = client.search_nearby(far).await.expect_err("refused");
    let (status, body) = http(
        fixture.http,
        "GET",
        "/v1/nearby?latitude=51.5&longitude=-0.12&radius_m=50000",
        "",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        from_json::<serde_json::Value>(&body)["message"],
        serde_json::json!(expected.message())
    );

    // What only JSON can get wrong: each a 400 naming the problem.
    for (method, path, body, says) in [
        (
            "GET",
            "/v1/lots/north/availability?horizon=15",
            "",
            "unknown field `horizon`",
        ),
        (
            "GET",
            "/v1/lots/north/availability?arrival_time_ms=soon",
            "",
            "arrival_time_ms",
        ),
        (
            "GET",
            "/v1/lots/north/availability?price_per_hour=1&price_per_hour=2",
            "",
            "price_per_hour is given more than once",
        ),
        (
            "GET",
            "/v1/nearby?latitude=51.5&longitude=-0.12&radius_m=100&slot_type=SLOT_TYPE_CAR",
            "",
            "SLOT_TYPE_CAR",
        ),
        (
            "POST",
            "/v1/availability:batchGet",
            "{\"requests\": [",
            "the body is not the request's JSON",
        ),
        (
            "POST",
            "/v1/availability:batchGet",
            "{\"requests\": 7}",
            "the body is not the request's JSON",
        ),
    ] {
        let (status, answer) = http(fixture.http, method, path, body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        let error: serde_json::Value = from_json(&answer);
        assert_eq!(error["status"], serde_json::json!("INVALID_ARGUMENT"));
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|message| message.contains(says)),
            "{path}: {answer}"
        );
    }

    // No model: forecasts are unavailable (503), as over gRPC.
    let bare = fixture_with(Setup {
        activate: false,
        ..Setup::default()
    })
    .await;
    let expected = bare
        .availability()
        .await
        .get_availability(get("north", &[15], 0))
        .await
        .expect_err("refused");
    assert_eq!(expected.code(), Code::Unavailable);
    let (status, body) = http(
        bare.http,
        "GET",
        "/v1/lots/north/availability?horizon_minutes=15",
        "",
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        from_json::<serde_json::Value>(&body)["message"],
        serde_json::json!(expected.message())
    );

    // A server still starting answers 503 saying so.
    let starting = serve_rest(None).await;
    let (status, body) = http(starting, "GET", "/v1/models", "").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("starting"), "{body}");
}

/// The next server-sent event of `lines`: (event name, data), skipping keep-alive comments.
async fn next_event<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> (String, String) {
    let (mut event, mut data) = (String::new(), String::new());
    while let Some(line) = lines.next_line().await.expect("the stream reads") {
        if line.is_empty() {
            if !data.is_empty() {
                return (event, data);
            }
        } else if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_owned();
        } else if let Some(text) = line.strip_prefix("data:") {
            data.push_str(text.trim_start());
        }
    }
    panic!("the stream ended before an event");
}

#[tokio::test]
async fn a_watch_over_server_sent_events_gets_the_current_answer_then_every_change() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let fixture = fixture(true).await;
    let mut client = fixture.availability().await;
    let now = client
        .get_availability(get("north", &[60], 0))
        .await
        .expect("an answer")
        .into_inner();
    let mut stream = tokio::net::TcpStream::connect(fixture.http)
        .await
        .expect("the HTTP port accepts");
    stream
        .write_all(
            b"GET /v1/watch?lot_ids=north&horizon_minutes=60 HTTP/1.0\r\nHost: parkcast\r\n\r\n",
        )
        .await
        .expect("the request is sent");
    let mut lines = tokio::io::BufReader::new(stream).lines();
    let status = lines
        .next_line()
        .await
        .expect("reads")
        .expect("a status line");
    assert!(status.contains(" 200 "), "{status}");
    let mut content_type = String::new();
    while let Some(line) = lines.next_line().await.expect("reads") {
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-type:") {
            content_type = value.trim().to_owned();
        }
    }
    assert_eq!(content_type, "text/event-stream");
    let (event, data) = next_event(&mut lines).await;
    assert_eq!(event, "availability");
    assert_eq!(from_json::<LotAvailability>(&data), now);
    fixture
        .source
        .live()
        .apply_sensor(&sensor(3, true, 1, NOW - 60_000))
        .expect("applies");
    fixture.scoring.tick();
    let (event, data) =
        tokio::time::timeout(std::time::Duration::from_secs(10), next_event(&mut lines))
            .await
            .expect("an update in time");
    assert_eq!(event, "availability");
    assert_eq!(from_json::<LotAvailability>(&data).occupied_now, 3);

    // A watch refused before it opens is an ordinary JSON error with the gRPC message.
    let expected = client
        .watch_availability(WatchAvailabilityRequest {
            lot_ids: vec![],
            horizon_minutes: vec![],
        })
        .await
        .expect_err("refused");
    let (status, body) = http(fixture.http, "GET", "/v1/watch", "").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        from_json::<serde_json::Value>(&body)["message"],
        serde_json::json!(expected.message())
    );
}

#[tokio::test]
async fn the_operations_page_and_its_overview_answer_what_grpc_answers() {
    let fixture = fixture(true).await;
    let (status, page) = http(fixture.http, "GET", "/", "").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<title>parkcast operations</title>"),
        "{page}"
    );
    // Assets embedded: nothing is loaded from elsewhere (the SVG namespace is a name, not a fetch).
    for remote in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "fetch(\"http",
        "import ",
    ] {
        assert!(!page.contains(remote), "the page loads {remote:?}");
    }

    let (status, body) = http(fixture.http, "GET", "/ops/overview?horizon_minutes=60", "").await;
    assert_eq!(status, 200, "{body}");
    let overview: serde_json::Value = from_json(&body);
    assert_eq!(overview["model"]["name"], serde_json::json!("toy"));
    assert_eq!(overview["asOfMs"], serde_json::json!(NOW.to_string()));
    let lots = overview["lots"].as_array().expect("lots");
    assert_eq!(lots.len(), LOTS.len());
    let mut client = fixture.availability().await;
    for lot in lots {
        let lot_id = lot["lotId"].as_str().expect("an id");
        let grpc = client
            .get_availability(get(lot_id, &[60], 0))
            .await
            .expect("an answer")
            .into_inner();
        let answer: LotAvailability =
            serde_json::from_value(lot["availability"].clone()).expect("a LotAvailability");
        assert_eq!(answer, grpc, "{lot_id}");
        assert_eq!(lot["longitude"], serde_json::json!(-0.12));
    }

    // A lot's last day, as the grid history the server was seeded with (every 15 min).
    let (status, body) = http(fixture.http, "GET", "/ops/lots/north/history?hours=24", "").await;
    assert_eq!(status, 200, "{body}");
    let history: serde_json::Value = from_json(&body);
    let points = history["points"].as_array().expect("points");
    assert!((95..=97).contains(&points.len()), "{} points", points.len());
    let times: Vec<i64> = points
        .iter()
        .map(|point| {
            point["timeMs"]
                .as_str()
                .and_then(|ms| ms.parse().ok())
                .expect("a time")
        })
        .collect();
    assert!(times.windows(2).all(|pair| pair[0] < pair[1]));
    assert!(times[0] >= NOW - DAY_MS && *times.last().expect("a point") <= NOW);
    assert!(points.iter().all(|point| {
        let free = point["free"].as_f64().expect("free");
        (0.0..=4.0).contains(&free)
    }));
    let (status, body) = http(fixture.http, "GET", "/ops/lots/nowhere/history", "").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(fixture.http, "GET", "/ops/lots/north/history?hours=999", "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("hours 999 is out of range"), "{body}");

    let (status, body) = http(fixture.http, "GET", "/ops/overview?horizon_minutes=999", "").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("horizon 999 min is not served; forecasts reach 1 to 120 min"),
        "{body}"
    );
    let (status, body) = http(fixture.http, "GET", "/ops/overview?lot=north", "").await;
    assert_eq!(status, 400, "{body}");

    let grpc = fixture
        .models()
        .await
        .get_live_quality(GetLiveQualityRequest {
            lot_ids: vec!["north".to_owned()],
        })
        .await
        .expect("an answer")
        .into_inner();
    let (status, body) = http(fixture.http, "GET", "/v1/quality?lot_ids=north", "").await;
    assert_eq!(status, 200, "{body}");
    // Nothing scored yet: every MAE is NaN, written "NaN" as the mapping says (and NaN equals
    // nothing, so the messages are compared as their JSON).
    assert!(body.contains("\"maeRate\":\"NaN\""), "{body}");
    let decoded = from_json::<parkcast_proto::v1::LiveQuality>(&body);
    assert!(decoded.city.iter().all(|window| window.mae_rate.is_nan()));
    assert_eq!(
        rest::to_json(&decoded).expect("encodes"),
        rest::to_json(&grpc).expect("encodes")
    );
}
