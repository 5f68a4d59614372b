//! `parkcast query` and `parkcast models activate` as a user runs them, against an in-process gRPC
//! server with canned answers: the point is the client (what it sends, how it prints answers and
//! refusals); the real services are tested in `serving/tests/grpc.rs`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

use parkcast_proto::v1::availability_server::{Availability, AvailabilityServer};
use parkcast_proto::v1::models_server::{Models, ModelsServer};
use parkcast_proto::v1::{
    ActivateModelRequest, BatchGetAvailabilityRequest, BatchGetAvailabilityResponse,
    ClearShadowRequest, DescribeModelRequest, Drift, Forecast, GetAvailabilityRequest,
    GetLiveQualityRequest, HorizonMetrics, ListModelsRequest, ListModelsResponse, LiveQuality,
    LotAvailability, LotQuality, ModelInfo, NearbyLot, SearchNearbyRequest, SearchNearbyResponse,
    ShadowModelRequest, ShadowQuality, SlotType, WatchAvailabilityRequest, WindowQuality,
};
use tonic::codegen::tokio_stream::{self, Stream, StreamExt};
use tonic::{Request, Response, Status};

const AS_OF_MS: i64 = 1_795_716_000_000;
const TOKEN: &str = "s3cret";

/// A request the fake server received.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Get(GetAvailabilityRequest),
    Batch(BatchGetAvailabilityRequest),
    Search(SearchNearbyRequest),
    Watch(WatchAvailabilityRequest),
    List,
    Describe(DescribeModelRequest),
    /// The request and its `authorization` metadata.
    Activate(ActivateModelRequest, Option<String>),
    Quality(GetLiveQualityRequest),
    /// The request and its `authorization` metadata.
    Shadow(ShadowModelRequest, Option<String>),
    /// The `authorization` metadata.
    Unshadow(Option<String>),
}

/// The `authorization` metadata of a request.
fn authorization<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

type Calls = Arc<Mutex<Vec<Call>>>;

fn record(calls: &Calls, call: Call) {
    calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(call);
}

/// `BHM-001` is fresh with forecasts; `BHM-002` has never reported; other ids are unknown.
fn canned_lot(lot_id: &str, horizons: &[u32]) -> Result<LotAvailability, Status> {
    if let Some(horizon) = horizons.iter().find(|horizon| **horizon > 120) {
        return Err(Status::invalid_argument(format!(
            "horizon {horizon} min is not served; forecasts reach 1 to 120 min ahead"
        )));
    }
    let forecasts = horizons
        .iter()
        .map(|minutes| Forecast {
            target_time_ms: AS_OF_MS + i64::from(*minutes) * 60_000,
            horizon_minutes: *minutes,
            expected_free: 6.25,
            free_low_80: 3.0,
            free_high_80: 9.0,
            free_low_95: 1.0,
            free_high_95: 12.0,
            probability_any_free: 0.97,
        })
        .collect();
    match lot_id {
        "BHM-001" => Ok(LotAvailability {
            lot_id: lot_id.to_owned(),
            name: "Bull Ring".to_owned(),
            capacity: 40,
            as_of_ms: AS_OF_MS,
            data_age_ms: Some(12_000),
            occupied_now: 30,
            free_now: 9,
            unknown_now: 1,
            model_name: "gbm".to_owned(),
            model_version: 3,
            forecasts,
            ..LotAvailability::default()
        }),
        "BHM-002" => Ok(LotAvailability {
            lot_id: lot_id.to_owned(),
            name: "Snow Hill".to_owned(),
            capacity: 10,
            as_of_ms: AS_OF_MS,
            data_age_ms: None,
            stale: true,
            stale_reason: "no event received for this lot yet".to_owned(),
            unknown_now: 10,
            model_name: "gbm".to_owned(),
            model_version: 3,
            forecasts,
            ..LotAvailability::default()
        }),
        other => Err(Status::not_found(format!("lot {other:?} is not known"))),
    }
}

fn answer(request: &GetAvailabilityRequest) -> Result<LotAvailability, Status> {
    if request.arrival_time_ms != 0 {
        return canned_lot(&request.lot_id, &[45]);
    }
    canned_lot(&request.lot_id, &request.horizon_minutes)
}

fn model(name: &str, version: u32, active: bool) -> ModelInfo {
    ModelInfo {
        name: name.to_owned(),
        version,
        kind: "gbm".to_owned(),
        trained_until_ms: 1_795_651_200_000,
        feature_schema_hash: "0123456789abcdef".to_owned(),
        sha256: "fedcba9876543210fedcba".to_owned(),
        active,
        metrics: vec![HorizonMetrics {
            horizon_minutes: 30,
            mae_rate: 0.0412,
            coverage_80: 0.81,
        }],
    }
}

#[derive(Debug, Clone)]
struct FakeServer {
    calls: Calls,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<LotAvailability, Status>> + Send>>;

#[tonic::async_trait]
impl Availability for FakeServer {
    async fn get_availability(
        &self,
        request: Request<GetAvailabilityRequest>,
    ) -> Result<Response<LotAvailability>, Status> {
        record(&self.calls, Call::Get(request.get_ref().clone()));
        answer(request.get_ref()).map(Response::new)
    }

    async fn batch_get_availability(
        &self,
        request: Request<BatchGetAvailabilityRequest>,
    ) -> Result<Response<BatchGetAvailabilityResponse>, Status> {
        record(&self.calls, Call::Batch(request.get_ref().clone()));
        let lots = request
            .get_ref()
            .requests
            .iter()
            .map(answer)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(BatchGetAvailabilityResponse { lots }))
    }

    async fn search_nearby(
        &self,
        request: Request<SearchNearbyRequest>,
    ) -> Result<Response<SearchNearbyResponse>, Status> {
        record(&self.calls, Call::Search(*request.get_ref()));
        let horizons = [30];
        Ok(Response::new(SearchNearbyResponse {
            lots: vec![
                NearbyLot {
                    availability: Some(canned_lot("BHM-001", &horizons)?),
                    distance_m: 320.4,
                    probability_any_free_at_arrival: 0.97,
                    slots_of_type: 4,
                },
                NearbyLot {
                    availability: Some(canned_lot("BHM-002", &[])?),
                    distance_m: 1_250.0,
                    probability_any_free_at_arrival: 0.0,
                    slots_of_type: 1,
                },
            ],
        }))
    }

    /// A server running alone: no replicas to list.
    async fn list_replicas(
        &self,
        _request: Request<parkcast_proto::v1::ListReplicasRequest>,
    ) -> Result<Response<parkcast_proto::v1::ListReplicasResponse>, Status> {
        Ok(Response::new(
            parkcast_proto::v1::ListReplicasResponse::default(),
        ))
    }

    /// Not asked by `parkcast query`.
    async fn get_pricing_bands(
        &self,
        _request: Request<parkcast_proto::v1::GetPricingBandsRequest>,
    ) -> Result<Response<parkcast_proto::v1::PricingBands>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    type WatchAvailabilityStream = WatchStream;

    /// One update per lot, then silence: the stream stays open like a real watch.
    async fn watch_availability(
        &self,
        request: Request<WatchAvailabilityRequest>,
    ) -> Result<Response<Self::WatchAvailabilityStream>, Status> {
        record(&self.calls, Call::Watch(request.get_ref().clone()));
        let WatchAvailabilityRequest {
            lot_ids,
            horizon_minutes,
        } = request.into_inner();
        let updates = lot_ids
            .iter()
            .map(|lot_id| canned_lot(lot_id, &horizon_minutes))
            .collect::<Result<Vec<_>, _>>()?;
        let stream = tokio_stream::iter(updates.into_iter().map(Ok)).chain(tokio_stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl Models for FakeServer {
    async fn list_models(
        &self,
        _request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        record(&self.calls, Call::List);
        Ok(Response::new(ListModelsResponse {
            models: vec![model("gbm", 2, false), model("gbm", 3, true)],
        }))
    }

    async fn describe_model(
        &self,
        request: Request<DescribeModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        record(&self.calls, Call::Describe(request.get_ref().clone()));
        match request.get_ref().name.as_str() {
            "gbm" => Ok(Response::new(model("gbm", 3, true))),
            other => Err(Status::not_found(format!("no model {other:?}"))),
        }
    }

    async fn activate_model(
        &self,
        request: Request<ActivateModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        record(
            &self.calls,
            Call::Activate(request.get_ref().clone(), authorization.clone()),
        );
        if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            return Err(Status::unauthenticated("the bearer token is wrong"));
        }
        match request.get_ref().name.as_str() {
            "broken" => Err(Status::failed_precondition(
                "refused, the active model keeps serving: the model file's sha256 does not match",
            )),
            name => Ok(Response::new(model(name, 4, true))),
        }
    }

    async fn get_live_quality(
        &self,
        request: Request<GetLiveQualityRequest>,
    ) -> Result<Response<LiveQuality>, Status> {
        record(&self.calls, Call::Quality(request.get_ref().clone()));
        live_quality(&request.get_ref().lot_ids).map(Response::new)
    }

    async fn shadow_model(
        &self,
        request: Request<ShadowModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let authorization = authorization(&request);
        record(
            &self.calls,
            Call::Shadow(request.get_ref().clone(), authorization.clone()),
        );
        if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            return Err(Status::unauthenticated("the bearer token is wrong"));
        }
        Ok(Response::new(model(&request.get_ref().name, 5, false)))
    }

    async fn clear_shadow(
        &self,
        request: Request<ClearShadowRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        record(&self.calls, Call::Unshadow(authorization(&request)));
        Err(Status::not_found("no candidate is in shadow"))
    }
}

/// A horizon's live figures over the last hour.
fn window(horizon_minutes: u32, pairs: u64, mae_rate: f64) -> WindowQuality {
    WindowQuality {
        horizon_minutes,
        window: "hour".to_owned(),
        pairs,
        mae_rate,
        coverage_80: if pairs == 0 { f64::NAN } else { 0.75 },
        backtest_mae_rate: 0.02,
    }
}

/// The answer of `GetLiveQuality` for `lot_ids` (only BHM-001 and BHM-002 exist).
fn live_quality(lot_ids: &[String]) -> Result<LiveQuality, Status> {
    let lots = lot_ids
        .iter()
        .map(|lot_id| match lot_id.as_str() {
            "BHM-001" | "BHM-002" => Ok(LotQuality {
                lot_id: lot_id.clone(),
                windows: vec![window(30, 12, 0.018), window(60, 0, f64::NAN)],
            }),
            other => Err(Status::not_found(format!("no lot {other:?}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LiveQuality {
        model_name: "gbm".to_owned(),
        model_version: 3,
        as_of_ms: AS_OF_MS,
        city: vec![window(30, 240, 0.021), window(60, 228, 0.043)],
        lots,
        drifting: vec![Drift {
            lot_id: "BHM-002".to_owned(),
            horizon_minutes: 60,
            live_mae_rate: 0.071,
            backtest_mae_rate: 0.02,
        }],
        shadow: Some(ShadowQuality {
            model_name: "gbm".to_owned(),
            model_version: 5,
            city: vec![window(30, 200, 0.0168), window(60, 190, 0.0301)],
            lots: Vec::new(),
            drifting: Vec::new(),
            active_city: vec![window(30, 200, 0.0210), window(60, 190, 0.0430)],
        }),
    })
}

/// The fake server on a loopback port, in a thread of its own for the rest of the test process.
fn serve() -> (String, Calls) {
    let calls = Calls::default();
    let fake = FakeServer {
        calls: Arc::clone(&calls),
    };
    let (address_sender, address_receiver) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the fake server");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            address_sender
                .send(listener.local_addr().expect("bound"))
                .expect("the test waits for the address");
            tonic::transport::Server::builder()
                .add_service(AvailabilityServer::new(fake.clone()))
                .add_service(ModelsServer::new(fake))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .expect("the fake server runs");
        });
    });
    let address = address_receiver
        .recv()
        .expect("the fake server should start");
    (format!("http://{address}"), calls)
}

fn calls(calls: &Calls) -> Vec<Call> {
    calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

fn parkcast(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parkcast"))
        .arg("--quiet")
        .args(arguments)
        .env("PARKCAST_LOG", "warn")
        .env_remove("PARKCAST_GRPC_ADDR")
        .env_remove("PARKCAST_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("parkcast should run")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "parkcast failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of_failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "parkcast should have failed:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON object"))
        .collect()
}

#[test]
fn several_lots_are_one_batch_printed_as_a_table_with_forecasts_and_stale_reasons() {
    let (address, received) = serve();
    let stdout = stdout_of(&parkcast(&[
        "query",
        "--addr",
        &address,
        "--lot",
        "BHM-001,BHM-002",
        "--horizons",
        "30,60",
    ]));
    assert_eq!(
        calls(&received),
        [Call::Batch(BatchGetAvailabilityRequest {
            requests: ["BHM-001", "BHM-002"]
                .iter()
                .map(|lot_id| GetAvailabilityRequest {
                    lot_id: (*lot_id).to_owned(),
                    horizon_minutes: vec![30, 60],
                    arrival_time_ms: 0,
                    price_per_hour: None,
                })
                .collect(),
        })]
    );
    assert!(stdout.starts_with("model gbm v3\n"), "{stdout}");
    assert!(
        stdout.contains("+30 min") && stdout.contains("+60 min"),
        "{stdout}"
    );
    assert!(stdout.contains("6.2 [3–9] · 97%"), "{stdout}");
    assert!(
        stdout.contains("stale: BHM-002 (Snow Hill): no event received for this lot yet"),
        "{stdout}"
    );
}

#[test]
fn one_lot_is_a_get_and_its_json_line_carries_every_field() {
    let (address, received) = serve();
    let stdout = stdout_of(&parkcast(&[
        "query",
        "--lot",
        "BHM-001",
        "--arrival-in",
        "1h30m",
        "--json",
        "--addr",
        // A bare host:port is taken as http.
        address.trim_start_matches("http://"),
    ]));
    assert_eq!(
        calls(&received),
        [Call::Get(GetAvailabilityRequest {
            lot_id: "BHM-001".to_owned(),
            horizon_minutes: vec![90],
            arrival_time_ms: 0,
            price_per_hour: None,
        })]
    );
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    let lot = &lines[0];
    assert_eq!(lot["lot_id"], "BHM-001");
    assert_eq!(lot["free_now"], 9);
    assert_eq!(lot["model_version"], 3);
    assert_eq!(lot["forecasts"][0]["horizon_minutes"], 90);
    assert_eq!(lot["forecasts"][0]["free_high_95"], 12.0);
    // Every field, the what-if's three null when none was asked.
    assert_eq!(lot.as_object().map(serde_json::Map::len), Some(16));
    assert!(lot["price_per_hour"].is_null() && lot["demand_factor"].is_null());
}

#[test]
fn a_what_if_price_travels_with_the_request() {
    let (address, received) = serve();
    stdout_of(&parkcast(&[
        "query",
        "--lot",
        "BHM-001",
        "--horizons",
        "30",
        "--price",
        "4.5",
        "--addr",
        &address,
    ]));
    assert_eq!(
        calls(&received),
        [Call::Get(GetAvailabilityRequest {
            lot_id: "BHM-001".to_owned(),
            horizon_minutes: vec![30],
            arrival_time_ms: 0,
            price_per_hour: Some(4.5),
        })]
    );
}

#[test]
fn an_arrival_time_is_sent_as_unix_milliseconds() {
    let (address, received) = serve();
    stdout_of(&parkcast(&[
        "query",
        "--addr",
        &address,
        "--lot",
        "BHM-001,BHM-002",
        "--arrival",
        "2026-11-26T19:00:00+01:00",
    ]));
    let Some(Call::Batch(batch)) = calls(&received).pop() else {
        panic!("a batch call: {:?}", calls(&received));
    };
    assert!(
        batch
            .requests
            .iter()
            .all(|request| request.arrival_time_ms == 1_795_716_000_000
                && request.horizon_minutes.is_empty())
    );
}

#[test]
fn a_refusal_prints_the_code_and_the_servers_message_and_fails() {
    let (address, _received) = serve();
    let stderr = stderr_of_failure(&parkcast(&[
        "query",
        "--addr",
        &address,
        "--lot",
        "BHM-001",
        "--horizons",
        "30,145",
    ]));
    assert!(
        stderr.contains(
            "the server refused: InvalidArgument: horizon 145 min is not served; forecasts reach \
             1 to 120 min ahead"
        ),
        "{stderr}"
    );
    let stderr = stderr_of_failure(&parkcast(&["query", "--addr", &address, "--lot", "nope"]));
    assert!(
        stderr.contains("NotFound: lot \"nope\" is not known"),
        "{stderr}"
    );
}

#[test]
fn a_search_sends_the_point_and_prints_the_ranking() {
    let (address, received) = serve();
    let stdout = stdout_of(&parkcast(&[
        "query",
        "--addr",
        &address,
        "search",
        "--lat",
        "52.4778",
        "--lon",
        "-1.8946",
        "--radius",
        "800",
        "--slot-type",
        "ev",
        "--max",
        "5",
        "--arrival",
        "2026-11-26T18:00:00Z",
    ]));
    assert_eq!(
        calls(&received),
        [Call::Search(SearchNearbyRequest {
            latitude: 52.4778,
            longitude: -1.8946,
            radius_m: 800.0,
            arrival_time_ms: 1_795_716_000_000,
            slot_type: SlotType::Ev as i32,
            max_results: 5,
            arrival_in_minutes: 0,
        })]
    );
    let first = stdout
        .lines()
        .position(|line| line.contains("BHM-001"))
        .expect("a row for BHM-001");
    let second = stdout
        .lines()
        .position(|line| line.contains("BHM-002"))
        .expect("a row for BHM-002");
    assert!(first < second, "{stdout}");
    assert!(
        stdout.contains("ev slots") && stdout.contains("320 m"),
        "{stdout}"
    );

    let json = stdout_of(&parkcast(&[
        "query", "search", "--addr", &address, "--lat", "52.4", "--lon", "-1.9", "--json",
    ]));
    let lines = json_lines(&json);
    assert_eq!(lines.len(), 2, "{json}");
    assert_eq!(lines[0]["availability"]["lot_id"], "BHM-001");
    assert_eq!(lines[1]["probability_any_free_at_arrival"], 0.0);
}

#[test]
fn a_watch_prints_updates_as_they_come_and_stops_after_count() {
    let (address, received) = serve();
    // The fake stream stays open after its updates: only --count ends the command.
    let stdout = stdout_of(&parkcast(&[
        "query",
        "watch",
        "--addr",
        &address,
        "--lot",
        "BHM-001,BHM-002",
        "--horizons",
        "30",
        "--count",
        "2",
    ]));
    assert_eq!(
        calls(&received),
        [Call::Watch(WatchAvailabilityRequest {
            lot_ids: vec!["BHM-001".to_owned(), "BHM-002".to_owned()],
            horizon_minutes: vec![30],
        })]
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].contains("BHM-001 (Bull Ring)  free 9/40"),
        "{stdout}"
    );
    assert!(lines[0].contains("+30 min 6.2 [3–9] · 97%"), "{stdout}");
    assert!(lines[1].contains("STALE: no event received"), "{stdout}");

    let json = stdout_of(&parkcast(&[
        "query", "--json", "--addr", &address, "watch", "--lot", "BHM-001", "--count", "1",
    ]));
    assert_eq!(json_lines(&json)[0]["lot_id"], "BHM-001");
}

#[test]
fn models_are_listed_and_described() {
    let (address, received) = serve();
    let listed = stdout_of(&parkcast(&["query", "--addr", &address, "models"]));
    assert!(listed.contains("fedcba987654"), "{listed}");
    assert!(listed.contains("30m MAE 0.041 cov80 81%"), "{listed}");

    let described = stdout_of(&parkcast(&[
        "query",
        "--addr",
        &address,
        "model",
        "gbm",
        "--version",
        "3",
    ]));
    assert!(
        described.starts_with("gbm v3 — gbm model, trained until 2026-11-26 00:00 UTC, active"),
        "{described}"
    );
    let json = stdout_of(&parkcast(&[
        "query", "--addr", &address, "--json", "model", "gbm",
    ]));
    assert_eq!(json_lines(&json)[0]["metrics"][0]["coverage_80"], 0.81);

    let stderr = stderr_of_failure(&parkcast(&["query", "--addr", &address, "model", "lstm"]));
    assert!(stderr.contains("NotFound: no model \"lstm\""), "{stderr}");
    assert_eq!(
        calls(&received),
        [
            Call::List,
            Call::Describe(DescribeModelRequest {
                name: "gbm".to_owned(),
                version: 3,
            }),
            Call::Describe(DescribeModelRequest {
                name: "gbm".to_owned(),
                version: 0,
            }),
            Call::Describe(DescribeModelRequest {
                name: "lstm".to_owned(),
                version: 0,
            }),
        ]
    );
}

#[test]
fn live_quality_prints_the_city_the_lots_asked_and_the_drift() {
    let (address, received) = serve();
    let text = stdout_of(&parkcast(&[
        "query", "--addr", &address, "quality", "--lot", "BHM-001",
    ]));
    assert!(
        text.starts_with("gbm v3: forecasts scored on live actuals, as of 2026-11-26"),
        "{text}"
    );
    for expected in [
        "city",
        "lot BHM-001",
        "0.0430",
        "2.15",
        "75%",
        "n/a",
        "DRIFT: lot BHM-002 at 60 min, live MAE 0.0710 in the last hour against 0.0200 in the backtest",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    // The candidate in shadow, and how it compares with the active model.
    for expected in [
        "candidate in shadow (scored on the same stream, never served): gbm v5",
        "shadow against active since the shadow started, city",
        "0.0168",
        "0.80",
        "200 / 200",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    let json = stdout_of(&parkcast(&[
        "query", "--addr", &address, "--json", "quality",
    ]));
    let value = &json_lines(&json)[0];
    assert_eq!(value["city"][1]["pairs"], 228);
    assert_eq!(value["drifting"][0]["lot_id"], "BHM-002");
    assert_eq!(value["shadow"]["model_version"], 5);
    assert_eq!(value["shadow"]["city"][0]["mae_rate"], 0.0168);
    let stderr = stderr_of_failure(&parkcast(&[
        "query", "--addr", &address, "quality", "--lot", "nowhere",
    ]));
    assert!(stderr.contains("NotFound: no lot \"nowhere\""), "{stderr}");
    assert_eq!(
        calls(&received),
        [
            Call::Quality(GetLiveQualityRequest {
                lot_ids: vec!["BHM-001".to_owned()]
            }),
            Call::Quality(GetLiveQualityRequest { lot_ids: vec![] }),
            Call::Quality(GetLiveQualityRequest {
                lot_ids: vec!["nowhere".to_owned()]
            }),
        ]
    );
}

#[test]
fn activation_sends_the_bearer_token_and_reports_refusals_with_their_code() {
    let (address, received) = serve();
    let activated = stdout_of(&parkcast(&[
        "models", "activate", "gbm", "4", "--addr", &address, "--token", TOKEN,
    ]));
    assert!(activated.starts_with("gbm v4 — gbm model"), "{activated}");

    let wrong = stderr_of_failure(&parkcast(&[
        "models", "activate", "gbm", "--addr", &address, "--token", "guess",
    ]));
    assert!(
        wrong.contains("the server refused: Unauthenticated: the bearer token is wrong"),
        "{wrong}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_parkcast"))
        .args([
            "--quiet", "models", "activate", "broken", "--addr", &address,
        ])
        .env("PARKCAST_LOG", "warn")
        .env("PARKCAST_ADMIN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("parkcast should run");
    let refused = stderr_of_failure(&output);
    assert!(
        refused.contains("FailedPrecondition: refused, the active model keeps serving"),
        "{refused}"
    );
    let bearer = Some(format!("Bearer {TOKEN}"));
    assert_eq!(
        calls(&received),
        [
            Call::Activate(
                ActivateModelRequest {
                    name: "gbm".to_owned(),
                    version: 4,
                },
                bearer.clone(),
            ),
            Call::Activate(
                ActivateModelRequest {
                    name: "gbm".to_owned(),
                    version: 0,
                },
                Some("Bearer guess".to_owned()),
            ),
            Call::Activate(
                ActivateModelRequest {
                    name: "broken".to_owned(),
                    version: 0,
                },
                bearer,
            ),
        ]
    );

    let no_token = stderr_of_failure(&parkcast(&[
        "models", "activate", "gbm", "--addr", &address,
    ]));
    assert!(no_token.contains("--token"), "{no_token}");
}

#[test]
fn shadowing_sends_the_bearer_token_and_reports_refusals_with_their_code() {
    let (address, received) = serve();
    let shadowed = stdout_of(&parkcast(&[
        "models", "shadow", "gbm", "5", "--addr", &address, "--token", TOKEN,
    ]));
    assert!(
        shadowed.starts_with("in shadow (scored, never served): gbm v5 — gbm model"),
        "{shadowed}"
    );
    assert!(shadowed.contains("not active"), "{shadowed}");
    let json = stdout_of(&parkcast(&[
        "models", "shadow", "gbm", "--addr", &address, "--token", TOKEN, "--json",
    ]));
    assert_eq!(json_lines(&json)[0]["version"], 5);
    let wrong = stderr_of_failure(&parkcast(&[
        "models", "shadow", "gbm", "--addr", &address, "--token", "guess",
    ]));
    assert!(
        wrong.contains("the server refused: Unauthenticated: the bearer token is wrong"),
        "{wrong}"
    );
    let none = stderr_of_failure(&parkcast(&[
        "models", "unshadow", "--addr", &address, "--token", TOKEN,
    ]));
    assert!(
        none.contains("NotFound: no candidate is in shadow"),
        "{none}"
    );
    let bearer = Some(format!("Bearer {TOKEN}"));
    let shadow = |version| ShadowModelRequest {
        name: "gbm".to_owned(),
        version,
    };
    assert_eq!(
        calls(&received),
        [
            Call::Shadow(shadow(5), bearer.clone()),
            Call::Shadow(shadow(0), bearer.clone()),
            Call::Shadow(shadow(0), Some("Bearer guess".to_owned())),
            Call::Unshadow(bearer),
        ]
    );
}
