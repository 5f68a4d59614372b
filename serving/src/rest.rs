//! The REST/JSON face: the `Availability` and `Models` answers over HTTP on the server's HTTP port
//! (beside `/metrics`), for clients that do not speak gRPC (a web app, an API gateway, `curl`).
//!
//! One set of types, one set of checks: every route builds the gRPC request message, calls the
//! gRPC service's own method in process, and writes the answer in the protobuf JSON mapping of
//! the same message (`parkcast_proto`'s `json` feature: pbjson; lowerCamelCase names, 64-bit
//! integers as strings, every field written). A refusal is the service's `Status` with the HTTP
//! code the gRPC-HTTP mapping gives it (INVALID_ARGUMENT 400, NOT_FOUND 404, UNAVAILABLE 503, ...)
//! and the same message, as `{"code": 3, "status": "INVALID_ARGUMENT", "message": "..."}`.
//!
//! | route | gRPC method | request |
//! |---|---|---|
//! | `GET /v1/lots/{lot_id}/availability` | `Availability.GetAvailability` | query: `horizon_minutes` (repeated or comma-separated), `arrival_time_ms`, `price_per_hour` |
//! | `POST /v1/availability:batchGet` | `Availability.BatchGetAvailability` | body: `BatchGetAvailabilityRequest` JSON |
//! | `GET /v1/nearby` | `Availability.SearchNearby` | query: `latitude`, `longitude`, `radius_m`, `arrival_time_ms` or `arrival_in_minutes`, `slot_type`, `max_results` |
//! | `GET /v1/lots/{lot_id}/pricing-bands` | `Availability.GetPricingBands` | query: `price_per_hour` |
//! | `GET /v1/models` | `Models.ListModels` | none |
//! | `GET /v1/models/{name}/{version}` | `Models.DescribeModel` | none |
//! | `GET /v1/quality` | `Models.GetLiveQuality` | query: `lot_ids` |
//! | `GET /v1/replicas` | `Availability.ListReplicas` | none |
//! | `GET /v1/watch` | `Availability.WatchAvailability` | query: `lot_ids`, `horizon_minutes` (repeated or comma-separated); server-sent events |
//! | `GET /openapi.json` | | the OpenAPI 3.1 document of these routes ([`crate::openapi`]) |
//! | `GET /` and `GET /ops/overview` | | the live operations page and its data ([`crate::ops`]) |
//!
//! Query parameters are the request message's fields by their proto or JSON names; an unknown
//! one, one given twice, or a value of the wrong type is a 400 naming it.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parkcast_proto::v1::availability_server::Availability;
use parkcast_proto::v1::models_server::Models;
use parkcast_proto::v1::{
    BatchGetAvailabilityRequest, DescribeModelRequest, GetAvailabilityRequest,
    GetLiveQualityRequest, GetPricingBandsRequest, ListModelsRequest, ListReplicasRequest,
    SearchNearbyRequest, WatchAvailabilityRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio_stream::StreamExt as _;
use tonic::{Code, Status};

use crate::grpc::{AvailabilityService, ModelsService};

/// A route of the REST face, for the router and the OpenAPI document ([`crate::openapi`]).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path, with `{field}` for the request fields it carries.
    pub path: &'static str,
    /// The gRPC method it answers by.
    pub rpc: &'static str,
    /// The request message.
    pub request: &'static str,
    /// The answer message.
    pub response: &'static str,
    /// The request fields taken from the query string.
    pub query: &'static [&'static str],
    /// What it answers.
    pub summary: &'static str,
    /// Whether it answers with server-sent events (each event's data a `response`) rather than
    /// one JSON document.
    pub events: bool,
}

/// Every route (the handlers are bound in [`router`]).
pub const ROUTES: [Route; 9] = [
    Route {
        method: "GET",
        path: "/v1/lots/{lot_id}/availability",
        rpc: "parkcast.v1.Availability.GetAvailability",
        request: "GetAvailabilityRequest",
        response: "LotAvailability",
        query: &["horizon_minutes", "arrival_time_ms", "price_per_hour"],
        summary: "A lot's free slots now and ahead, with intervals and P(a free slot).",
        events: false,
    },
    Route {
        method: "POST",
        path: "/v1/availability:batchGet",
        rpc: "parkcast.v1.Availability.BatchGetAvailability",
        request: "BatchGetAvailabilityRequest",
        response: "BatchGetAvailabilityResponse",
        query: &[],
        summary: "Several lots at once, in request order.",
        events: false,
    },
    Route {
        method: "GET",
        path: "/v1/nearby",
        rpc: "parkcast.v1.Availability.SearchNearby",
        request: "SearchNearbyRequest",
        response: "SearchNearbyResponse",
        query: &[
            "latitude",
            "longitude",
            "radius_m",
            "arrival_time_ms",
            "arrival_in_minutes",
            "slot_type",
            "max_results",
        ],
        summary: "Lots near a point, the best chance of a free slot at arrival first.",
        events: false,
    },
    Route {
        method: "GET",
        path: "/v1/lots/{lot_id}/pricing-bands",
        rpc: "parkcast.v1.Availability.GetPricingBands",
        request: "GetPricingBandsRequest",
        response: "PricingBands",
        query: &["price_per_hour"],
        summary: "A lot's pricing-feed bands now, or at a what-if price.",
        events: false,
    },
    Route {
        method: "GET",
        path: "/v1/models",
        rpc: "parkcast.v1.Models.ListModels",
        request: "ListModelsRequest",
        response: "ListModelsResponse",
        query: &[],
        summary: "Every model version of the registry.",
        events: false,
    },
    Route {
        method: "GET",
        path: "/v1/models/{name}/{version}",
        rpc: "parkcast.v1.Models.DescribeModel",
        request: "DescribeModelRequest",
        response: "ModelInfo",
        query: &[],
        summary: "One model version (version 0: the newest).",
        events: false,
    },
    Route {
        method: "GET",
        path: "/v1/watch",
        rpc: "parkcast.v1.Availability.WatchAvailability",
        request: "WatchAvailabilityRequest",
        response: "LotAvailability",
        query: &["lot_ids", "horizon_minutes"],
        summary: "Server-sent events: each watched lot's answer now, then again on every change (`event: availability`, the answer's JSON as data; `event: error` with the refusal's JSON if the watch ends in one).",
        events: true,
    },
    Route {
        method: "GET",
        path: "/v1/quality",
        rpc: "parkcast.v1.Models.GetLiveQuality",
        request: "GetLiveQualityRequest",
        response: "LiveQuality",
        query: &["lot_ids"],
        summary: "The active model's live accuracy against its backtest, city-wide and for the lots asked, and what drifts.",
        events: false,
    },
    Route {
        method: "GET",
        path: "/v1/replicas",
        rpc: "parkcast.v1.Availability.ListReplicas",
        request: "ListReplicasRequest",
        response: "ListReplicasResponse",
        query: &[],
        summary: "The replicas of the server's group and what each owns.",
        events: false,
    },
];

/// Query parameters that fill a repeated field (several values, or one comma-separated).
const REPEATED: [&str; 4] = ["horizon_minutes", "horizonMinutes", "lot_ids", "lotIds"];

/// The services the routes call, set once the server has built them (until then every route
/// answers 503: the HTTP port opens before the model is loaded, so `/metrics` answers early).
#[derive(Clone)]
pub struct Services {
    /// `Availability`.
    pub availability: AvailabilityService,
    /// `Models`.
    pub models: ModelsService,
    /// Ingestion's metrics, for the operations page (none: a server without ingestion).
    pub ingest: Option<crate::metrics::IngestMetrics>,
}

/// Where the routes find the services.
pub type Slot = Arc<OnceLock<Services>>;

/// The REST routes over `services`.
pub fn router(services: Slot) -> axum::Router {
    axum::Router::new()
        .route("/v1/lots/{lot_id}/availability", get(get_availability))
        .route("/v1/availability:batchGet", post(batch_get_availability))
        .route("/v1/nearby", get(search_nearby))
        .route("/v1/lots/{lot_id}/pricing-bands", get(get_pricing_bands))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}/{version}", get(describe_model))
        .route("/v1/replicas", get(list_replicas))
        .route("/v1/quality", get(live_quality))
        .route("/v1/watch", get(watch_availability))
        .route("/openapi.json", get(openapi))
        .route("/", get(ops_page))
        .route("/ops/overview", get(ops_overview))
        .route("/ops/lots/{lot_id}/history", get(ops_history))
        .with_state(services)
}

async fn get_availability(
    State(services): State<Slot>,
    Path(lot_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let call = async {
        let request: GetAvailabilityRequest =
            from_query(query.as_deref(), [("lot_id", Value::String(lot_id))])?;
        let services = ready(&services)?;
        services
            .availability
            .get_availability(tonic::Request::new(request))
            .await
    };
    answer(call.await)
}

async fn batch_get_availability(State(services): State<Slot>, body: Bytes) -> Response {
    let call = async {
        let request: BatchGetAvailabilityRequest = from_body(&body)?;
        let services = ready(&services)?;
        services
            .availability
            .batch_get_availability(tonic::Request::new(request))
            .await
    };
    answer(call.await)
}

async fn search_nearby(State(services): State<Slot>, RawQuery(query): RawQuery) -> Response {
    let call = async {
        let request: SearchNearbyRequest = from_query(query.as_deref(), [])?;
        let services = ready(&services)?;
        services
            .availability
            .search_nearby(tonic::Request::new(request))
            .await
    };
    answer(call.await)
}

async fn get_pricing_bands(
    State(services): State<Slot>,
    Path(lot_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let call = async {
        let request: GetPricingBandsRequest =
            from_query(query.as_deref(), [("lot_id", Value::String(lot_id))])?;
        let services = ready(&services)?;
        services
            .availability
            .get_pricing_bands(tonic::Request::new(request))
            .await
    };
    answer(call.await)
}

async fn list_models(State(services): State<Slot>, RawQuery(query): RawQuery) -> Response {
    let call = async {
        let request: ListModelsRequest = from_query(query.as_deref(), [])?;
        let services = ready(&services)?;
        services
            .models
            .list_models(tonic::Request::new(request))
            .await
    };
    answer(call.await)
}

async fn describe_model(
    State(services): State<Slot>,
    Path((name, version)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let call = async {
        let request: DescribeModelRequest = from_query(
            query.as_deref(),
            [
                ("name", Value::String(name)),
                ("version", Value::String(version)),
            ],
        )?;
        let services = ready(&services)?;
        services
            .models
            .describe_model(tonic::Request::new(request))
            .await
    };
    answer(call.await)
}

async fn live_quality(State(services): State<Slot>, RawQuery(query): RawQuery) -> Response {
    let call = async {
        let request: GetLiveQualityRequest = from_query(query.as_deref(), [])?;
        let services = ready(&services)?;
        services
            .models
            .get_live_quality(tonic::Request::new(request))
            .await
    };
    answer(call.await)
}

async fn list_replicas(State(services): State<Slot>, RawQuery(query): RawQuery) -> Response {
    let call = async {
        let request: ListReplicasRequest = from_query(query.as_deref(), [])?;
        let services = ready(&services)?;
        services
            .availability
            .list_replicas(tonic::Request::new(request))
            .await
    };
    answer(call.await)
}

/// `WatchAvailability` as server-sent events. A refusal before the stream opens is an ordinary
/// JSON error; one that ends an open stream is its last event. Closing the connection drops the
/// stream, which frees its place (`limits.max_watch_streams`) as a closed gRPC stream does.
async fn watch_availability(State(services): State<Slot>, RawQuery(query): RawQuery) -> Response {
    let call = async {
        let request: WatchAvailabilityRequest = from_query(query.as_deref(), [])?;
        let services = ready(&services)?;
        services
            .availability
            .watch_availability(tonic::Request::new(request))
            .await
    };
    let stream = match call.await {
        Ok(response) => response.into_inner(),
        Err(status) => return error(&status),
    };
    let events = stream.map(|item| {
        let event = match item {
            Ok(answer) => match to_json(&answer).map(String::from_utf8) {
                Ok(Ok(data)) => Event::default().event("availability").data(data),
                Ok(Err(cause)) => error_event(&Status::internal(format!(
                    "the answer did not encode as UTF-8: {cause}"
                ))),
                Err(cause) => error_event(&Status::internal(format!(
                    "the answer did not encode as JSON: {cause}"
                ))),
            },
            Err(status) => error_event(&status),
        };
        Ok::<_, std::convert::Infallible>(event)
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A refusal as the last event of a stream.
fn error_event(status: &Status) -> Event {
    Event::default()
        .event("error")
        .data(error_body(status).to_string())
}

async fn ops_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::ops::PAGE,
    )
        .into_response()
}

/// The operations page's overview ([`crate::ops::overview`]); `horizon_minutes` optional.
async fn ops_overview(State(services): State<Slot>, RawQuery(query): RawQuery) -> Response {
    let result = ready(&services).and_then(|services| {
        let horizon = whole_number(query.as_deref(), &["horizon_minutes", "horizonMinutes"])?;
        crate::ops::overview(&services, horizon.filter(|minutes| *minutes > 0))
    });
    json_or_error(result)
}

/// A lot's actual occupancy over the last `hours` (default 24) for the page ([`crate::ops::history`]).
async fn ops_history(
    State(services): State<Slot>,
    Path(lot_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let result = ready(&services).and_then(|services| {
        let hours = whole_number(query.as_deref(), &["hours"])?.unwrap_or(24);
        crate::ops::history(&services, &lot_id, hours)
    });
    json_or_error(result)
}

/// The one whole-number parameter of an operations-page route (under any of `names`), if given;
/// any other parameter, one given twice, or a value that is not a whole number is refused.
fn whole_number(query: Option<&str>, names: &[&str]) -> Result<Option<u32>, Status> {
    let mut found = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !names.contains(&name.as_ref()) {
            return Err(Status::invalid_argument(format!(
                "unknown query parameter {name} (this route takes {})",
                names[0]
            )));
        }
        if found.is_some() {
            return Err(Status::invalid_argument(format!(
                "query parameter {name} is given more than once"
            )));
        }
        found = Some(value.parse::<u32>().map_err(|_| {
            Status::invalid_argument(format!(
                "query parameter {name}={value:?} is not a whole number"
            ))
        })?);
    }
    Ok(found)
}

/// A JSON document, or a refusal.
fn json_or_error(result: Result<Value, Status>) -> Response {
    match result {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
        Err(status) => error(&status),
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT.as_str(),
    )
        .into_response()
}

/// The services, or UNAVAILABLE while the server is starting.
fn ready(services: &Slot) -> Result<Services, Status> {
    services
        .get()
        .cloned()
        .ok_or_else(|| Status::unavailable("the server is starting: its services are not up yet"))
}

/// A request message from a query string and the path's fields.
fn from_query<T: DeserializeOwned, const N: usize>(
    query: Option<&str>,
    path: [(&str, Value); N],
) -> Result<T, Status> {
    let mut fields = Map::new();
    for (name, value) in path {
        fields.insert(name.to_owned(), value);
    }
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let name = name.into_owned();
        if REPEATED.contains(&name.as_str()) {
            let values = fields
                .entry(name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(values) = values {
                values.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|part| !part.is_empty())
                        .map(|part| Value::String(part.to_owned())),
                );
            }
        } else if fields.contains_key(&name) {
            return Err(Status::invalid_argument(format!(
                "query parameter {name} is given more than once"
            )));
        } else {
            fields.insert(name, Value::String(value.into_owned()));
        }
    }
    serde_json::from_value(Value::Object(fields.clone())).map_err(|cause| {
        // serde names no field for a bad value: every field of a proto3 message is optional, so
        // the one that fails alone is the culprit.
        let culprit = fields.iter().find_map(|(name, value)| {
            let alone = Map::from_iter([(name.clone(), value.clone())]);
            serde_json::from_value::<T>(Value::Object(alone))
                .err()
                .map(|cause| format!("query parameter {name}={value}: {cause}"))
        });
        Status::invalid_argument(culprit.unwrap_or_else(|| format!("query parameters: {cause}")))
    })
}

/// A request message from a JSON body.
fn from_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(body).map_err(|cause| {
        Status::invalid_argument(format!("the body is not the request's JSON: {cause}"))
    })
}

/// A message as protobuf JSON. serde_json writes a float that is not finite as `null`, which the
/// mapping does not allow (and pbjson does not read back); the mapping writes NaN as `"NaN"`. The
/// generated serializers write no other `null` (an absent optional field is left out), and the
/// answers hold NaN for "unknown" (a window without pairs) but never an infinity, so every `null`
/// this formatter is asked for is a NaN.
pub fn to_json<T: Serialize>(message: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(512);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, ProtoJson);
    message.serialize(&mut serializer)?;
    Ok(out)
}

/// [`to_json`]'s formatter.
struct ProtoJson;

impl serde_json::ser::Formatter for ProtoJson {
    fn write_null<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b"\"NaN\"")
    }
}

/// A service's answer as JSON, or its refusal.
fn answer<T: Serialize>(result: Result<tonic::Response<T>, Status>) -> Response {
    match result {
        Ok(response) => match to_json(response.get_ref()) {
            Ok(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Err(cause) => error(&Status::internal(format!(
                "the answer did not encode as JSON: {cause}"
            ))),
        },
        Err(status) => error(&status),
    }
}

/// The HTTP status of a gRPC code (the mapping of `google.rpc.Code`).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The name of a gRPC code as the protobuf JSON mapping writes `google.rpc.Code`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A refusal's JSON.
fn error_body(status: &Status) -> Value {
    serde_json::json!({
        "code": status.code() as i32,
        "status": code_name(status.code()),
        "message": status.message(),
    })
}

/// A refusal as JSON.
fn error(status: &Status) -> Response {
    let body = error_body(status);
    (
        http_status(status.code()),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_fill_the_request_by_proto_or_json_name() {
        let request: GetAvailabilityRequest = from_query(
            Some("horizon_minutes=15,60&horizon_minutes=120&pricePerHour=4.5"),
            [("lot_id", Value::String("sim:lot0001".to_owned()))],
        )
        .expect("parses");
        assert_eq!(request.lot_id, "sim:lot0001");
        assert_eq!(request.horizon_minutes, vec![15, 60, 120]);
        assert_eq!(request.price_per_hour, Some(4.5));
        let search: SearchNearbyRequest = from_query(
            Some("latitude=52.48&longitude=-1.89&radius_m=800&arrivalInMinutes=30&slot_type=SLOT_TYPE_EV"),
            [],
        )
        .expect("parses");
        assert_eq!(search.arrival_in_minutes, 30);
        assert_eq!(search.longitude, -1.89);
    }

    #[test]
    fn a_bad_query_names_what_is_wrong() {
        let message = |query: &str| {
            let status = from_query::<GetAvailabilityRequest, 1>(
                Some(query),
                [("lot_id", Value::String("north".to_owned()))],
            )
            .expect_err("refused");
            assert_eq!(status.code(), Code::InvalidArgument);
            status.message().to_owned()
        };
        assert!(message("horizon=15").contains("unknown field `horizon`"));
        assert!(message("arrival_time_ms=soon").contains("arrival_time_ms=\"soon\""));
        assert!(message("price_per_hour=1&price_per_hour=2").contains("more than once"));
        assert!(message("lot_id=south").contains("lot_id is given more than once"));
        assert!(message("horizon_minutes=15&horizonMinutes=30").contains("horizon"));
    }

    #[test]
    fn codes_map_as_the_grpc_http_mapping_says() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
    }
}
