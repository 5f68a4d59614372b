//! The gRPC edge's input checks: a request becomes a validated query, or an error that says exactly
//! what is wrong and maps to one status code (in [`crate::status`]).
//!
//! Handlers call these first and never look at a raw request again, so a missing field or an
//! out-of-range value can never reach scoring. Pure functions: tested without a server.

use std::path::{MAIN_SEPARATOR, Path};

use parkcast_proto::v1::{
    BatchGetAvailabilityRequest, GetAvailabilityRequest, GetPricingBandsRequest,
    SearchNearbyRequest, SlotType, WatchAvailabilityRequest,
};

use crate::topology::{LotIndex, TopologyIndex};

/// Characters of a client's input that a `Status` message quotes at most.
pub const QUOTED_CHARS: usize = 64;

/// A client's input as a `Status` message quotes it: escaped and in quotes (`{:?}`), cut to its
/// first [`QUOTED_CHARS`] characters followed by `… (N bytes)` when longer.
///
/// Why: the message travels in the `grpc-message` trailer, and a message echoing a whole input
/// lets one request make a trailer larger than clients accept (a 1 MiB lot id came back to the
/// client as `RESOURCE_EXHAUSTED` instead of `NOT_FOUND`); a prefix is enough to recognise it.
pub fn quoted(input: &str) -> String {
    match input.char_indices().nth(QUOTED_CHARS) {
        None => format!("{input:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &input[..cut], input.len()),
    }
}

/// A domain error's message as a client may see it, for the errors that carry client input or
/// server paths (the Models service's): each of `inputs`, where the message quotes it whole
/// (`{:?}`), is cut by [`quoted`], and every path under `root` (the model registry) is written
/// relative to it. A client learns which version is missing or damaged, never the layout of the
/// server's disk. Errors that quote input themselves ([`RequestError`]) use [`quoted`] directly.
pub fn client_message(message: &str, inputs: &[&str], root: Option<&Path>) -> String {
    let mut message = message.to_owned();
    for input in inputs {
        if input.chars().nth(QUOTED_CHARS).is_some() {
            message = message.replace(&format!("{input:?}"), &quoted(input));
        }
    }
    let Some(root) = root else {
        return message;
    };
    let root = root.display().to_string();
    let root = root.trim_end_matches(MAIN_SEPARATOR);
    if root.is_empty() {
        return message;
    }
    message = message.replace(&format!("{root}{MAIN_SEPARATOR}"), "");
    // The folder itself (an unreadable registry), when it is absolute: a relative name could be
    // an ordinary word of the message.
    if Path::new(root).is_absolute() {
        message = message.replace(root, "<registry>");
    }
    message
}

/// Bounds of what a request may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLimits {
    /// The longest horizon forecast, minutes: the active model's (any horizon up to it is
    /// answered, between the model's own horizons by interpolation).
    #[serde(skip)]
    pub max_horizon_minutes: u32,
    /// Horizons in one request.
    pub max_horizons: usize,
    /// Requests in one batch.
    pub max_batch: usize,
    /// Search radius, metres.
    pub max_radius_m: u32,
    /// Results of one search.
    pub max_results: u32,
    /// Lots one watch may follow.
    pub max_watched_lots: usize,
    /// Watch streams open at once, over all clients: each holds a task and a subscription to
    /// every lot's updates until its client leaves, so an unbounded number would let clients pin
    /// the server's memory and its update fan-out. Over it a watch gets `RESOURCE_EXHAUSTED`.
    pub max_watch_streams: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_horizon_minutes: 120,
            max_horizons: 16,
            max_batch: 100,
            max_radius_m: 10_000,
            max_results: 100,
            max_watched_lots: 100,
            max_watch_streams: 1_000,
        }
    }
}

/// What a request is wrong about.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// `lot_id` is empty.
    #[error("lot_id is empty")]
    MissingLot,
    /// A what-if price that is not a positive, finite amount.
    #[error(
        "price_per_hour must be a positive, finite amount per hour in the lot's currency (e.g. 4.50), got {0}"
    )]
    BadPrice(f64),
    /// No such lot.
    #[error("lot {} is not known", quoted(.0))]
    UnknownLot(String),
    /// A horizon the model does not forecast.
    #[error("horizon {horizon} min is not served; forecasts reach 1 to {max} min ahead")]
    HorizonNotServed {
        /// The horizon asked.
        horizon: u32,
        /// The longest horizon served.
        max: u32,
    },
    /// More horizons than allowed.
    #[error("{asked} horizons asked; at most {max} are answered in one request")]
    TooManyHorizons {
        /// Horizons asked.
        asked: usize,
        /// The limit.
        max: usize,
    },
    /// Horizons and an arrival time in one request.
    #[error("give horizon_minutes or arrival_time_ms, not both")]
    HorizonsAndArrival,
    /// An arrival time and minutes to arrival in one request.
    #[error("give arrival_time_ms or arrival_in_minutes, not both")]
    ArrivalTwice,
    /// An arrival before now.
    #[error("arrival_time_ms {arrival_ms} is {behind_ms} ms in the past")]
    ArrivalInPast {
        /// The arrival asked.
        arrival_ms: i64,
        /// How far behind now.
        behind_ms: i64,
    },
    /// An arrival beyond the longest horizon.
    #[error("arrival_time_ms is {ahead_minutes} min ahead; at most {max_minutes} min is forecast")]
    ArrivalTooFar {
        /// Minutes ahead asked.
        ahead_minutes: i64,
        /// The longest horizon.
        max_minutes: u32,
    },
    /// A batch without requests.
    #[error("the batch has no requests")]
    EmptyBatch,
    /// A batch over the limit.
    #[error("the batch has {size} requests; at most {max} are served in one call")]
    BatchTooLarge {
        /// Requests sent.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A request of a batch is wrong.
    #[error("request {index} of the batch: {error}")]
    InBatch {
        /// Its position.
        index: usize,
        /// What is wrong with it.
        error: Box<RequestError>,
    },
    /// Coordinates outside WGS84.
    #[error("latitude {latitude} / longitude {longitude} are not WGS84 degrees")]
    BadCoordinates {
        /// Latitude sent.
        latitude: f64,
        /// Longitude sent.
        longitude: f64,
    },
    /// A radius that is not positive or too large.
    #[error("radius_m {radius_m} must be in (0, {max}]")]
    RadiusOutOfRange {
        /// Radius sent.
        radius_m: f64,
        /// The limit.
        max: u32,
    },
    /// More results than allowed.
    #[error("max_results {asked} is over the limit of {max}")]
    TooManyResults {
        /// Results asked.
        asked: u32,
        /// The limit.
        max: u32,
    },
    /// An enum value this server does not know.
    #[error("slot_type {0} is not a known slot type")]
    UnknownSlotType(i32),
    /// A watch without lots, or with too many.
    #[error("a watch follows 1 to {max} lots, got {size}")]
    WatchSize {
        /// Lots sent.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// When a forecast is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// Now and at these horizons (minutes, ascending, deduplicated; empty: now only).
    Horizons(Vec<u32>),
    /// At an arrival time, Unix ms.
    Arrival(i64),
}

/// A checked `GetAvailability`.
#[derive(Debug, Clone, PartialEq)]
pub struct AvailabilityQuery {
    /// The lot.
    pub lot: LotIndex,
    /// When.
    pub when: When,
    /// A what-if hourly price (positive, finite), in the currency's units.
    pub price_per_hour: Option<f64>,
}

/// A checked `SearchNearby`.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// Centre, degrees.
    pub latitude: f64,
    /// Centre, degrees.
    pub longitude: f64,
    /// Radius, metres.
    pub radius_m: f64,
    /// Arrival, Unix ms (now when the request left it out).
    pub arrival_ms: i64,
    /// Slot type wanted.
    pub slot_type: Option<SlotType>,
    /// Results wanted.
    pub max_results: u32,
}

/// The lot a request names: `MissingLot` for an empty id, `UnknownLot` for one the server does not
/// serve.
pub fn check_lot(topology: &TopologyIndex, lot_id: &str) -> Result<LotIndex, RequestError> {
    if lot_id.is_empty() {
        return Err(RequestError::MissingLot);
    }
    topology
        .lot(lot_id)
        .ok_or_else(|| RequestError::UnknownLot(lot_id.to_owned()))
}

fn check_arrival(
    arrival_ms: i64,
    now_ms: i64,
    limits: &RequestLimits,
) -> Result<i64, RequestError> {
    if arrival_ms < now_ms {
        return Err(RequestError::ArrivalInPast {
            arrival_ms,
            behind_ms: now_ms - arrival_ms,
        });
    }
    let max_minutes = limits.max_horizon_minutes;
    let ahead_minutes = (arrival_ms - now_ms) / 60_000;
    if ahead_minutes > i64::from(max_minutes) {
        return Err(RequestError::ArrivalTooFar {
            ahead_minutes,
            max_minutes,
        });
    }
    Ok(arrival_ms)
}

/// Checks a `GetAvailability` request.
pub fn check_get(
    request: &GetAvailabilityRequest,
    topology: &TopologyIndex,
    limits: &RequestLimits,
    now_ms: i64,
) -> Result<AvailabilityQuery, RequestError> {
    let lot = check_lot(topology, &request.lot_id)?;
    let when = match (request.horizon_minutes.is_empty(), request.arrival_time_ms) {
        (false, arrival) if arrival != 0 => return Err(RequestError::HorizonsAndArrival),
        (true, 0) => When::Horizons(Vec::new()),
        (true, arrival) => When::Arrival(check_arrival(arrival, now_ms, limits)?),
        (false, _) => When::Horizons(check_horizons(&request.horizon_minutes, limits)?),
    };
    Ok(AvailabilityQuery {
        lot,
        when,
        price_per_hour: check_price(request.price_per_hour)?,
    })
}

/// Checks horizons asked for (how many, each served by the model): ascending, deduplicated.
pub fn check_horizons(horizons: &[u32], limits: &RequestLimits) -> Result<Vec<u32>, RequestError> {
    if horizons.len() > limits.max_horizons {
        return Err(RequestError::TooManyHorizons {
            asked: horizons.len(),
            max: limits.max_horizons,
        });
    }
    if let Some(&horizon) = horizons
        .iter()
        .find(|horizon| **horizon == 0 || **horizon > limits.max_horizon_minutes)
    {
        return Err(RequestError::HorizonNotServed {
            horizon,
            max: limits.max_horizon_minutes,
        });
    }
    let mut horizons = horizons.to_vec();
    horizons.sort_unstable();
    horizons.dedup();
    Ok(horizons)
}

/// A checked `GetPricingBands`.
#[derive(Debug, Clone, PartialEq)]
pub struct PricingQuery {
    /// The lot.
    pub lot: LotIndex,
    /// A what-if hourly price (positive, finite).
    pub price_per_hour: Option<f64>,
}

/// Checks a `GetPricingBands` request.
pub fn check_pricing(
    request: &GetPricingBandsRequest,
    topology: &TopologyIndex,
) -> Result<PricingQuery, RequestError> {
    Ok(PricingQuery {
        lot: check_lot(topology, &request.lot_id)?,
        price_per_hour: check_price(request.price_per_hour)?,
    })
}

/// A what-if price must be a positive, finite amount.
fn check_price(price: Option<f64>) -> Result<Option<f64>, RequestError> {
    match price {
        Some(price) if !(price.is_finite() && price > 0.0) => Err(RequestError::BadPrice(price)),
        price => Ok(price),
    }
}

/// Checks a `BatchGetAvailability` request.
pub fn check_batch(
    request: &BatchGetAvailabilityRequest,
    topology: &TopologyIndex,
    limits: &RequestLimits,
    now_ms: i64,
) -> Result<Vec<AvailabilityQuery>, RequestError> {
    if request.requests.is_empty() {
        return Err(RequestError::EmptyBatch);
    }
    if request.requests.len() > limits.max_batch {
        return Err(RequestError::BatchTooLarge {
            size: request.requests.len(),
            max: limits.max_batch,
        });
    }
    request
        .requests
        .iter()
        .enumerate()
        .map(|(index, single)| {
            check_get(single, topology, limits, now_ms).map_err(|error| RequestError::InBatch {
                index,
                error: Box::new(error),
            })
        })
        .collect()
}

/// Checks a `SearchNearby` request.
pub fn check_search(
    request: &SearchNearbyRequest,
    limits: &RequestLimits,
    now_ms: i64,
) -> Result<SearchQuery, RequestError> {
    let valid_coordinates = request.latitude.is_finite()
        && request.longitude.is_finite()
        && (-90.0..=90.0).contains(&request.latitude)
        && (-180.0..=180.0).contains(&request.longitude);
    if !valid_coordinates {
        return Err(RequestError::BadCoordinates {
            latitude: request.latitude,
            longitude: request.longitude,
        });
    }
    if !(request.radius_m.is_finite()
        && request.radius_m > 0.0
        && request.radius_m <= f64::from(limits.max_radius_m))
    {
        return Err(RequestError::RadiusOutOfRange {
            radius_m: request.radius_m,
            max: limits.max_radius_m,
        });
    }
    if request.max_results > limits.max_results {
        return Err(RequestError::TooManyResults {
            asked: request.max_results,
            max: limits.max_results,
        });
    }
    let slot_type = match SlotType::try_from(request.slot_type) {
        Ok(SlotType::Unspecified) => None,
        Ok(slot_type) => Some(slot_type),
        Err(_) => return Err(RequestError::UnknownSlotType(request.slot_type)),
    };
    let arrival_ms = match (request.arrival_time_ms, request.arrival_in_minutes) {
        (0, 0) => now_ms,
        (0, minutes) => check_arrival(now_ms + i64::from(minutes) * 60_000, now_ms, limits)?,
        (arrival, 0) => check_arrival(arrival, now_ms, limits)?,
        (_, _) => return Err(RequestError::ArrivalTwice),
    };
    Ok(SearchQuery {
        latitude: request.latitude,
        longitude: request.longitude,
        radius_m: request.radius_m,
        arrival_ms,
        slot_type,
        max_results: if request.max_results == 0 {
            20
        } else {
            request.max_results
        },
    })
}

/// Checks a `WatchAvailability` request: the lots, each once in the order first named (a lot named
/// twice is watched once: a hundred copies of one lot would otherwise send a hundred identical
/// messages per change), and the horizons as for `GetAvailability`.
pub fn check_watch(
    request: &WatchAvailabilityRequest,
    topology: &TopologyIndex,
    limits: &RequestLimits,
) -> Result<(Vec<LotIndex>, Vec<u32>), RequestError> {
    if request.lot_ids.is_empty() || request.lot_ids.len() > limits.max_watched_lots {
        return Err(RequestError::WatchSize {
            size: request.lot_ids.len(),
            max: limits.max_watched_lots,
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(request.lot_ids.len());
    let mut lots = Vec::with_capacity(request.lot_ids.len());
    for lot_id in &request.lot_ids {
        let lot = check_lot(topology, lot_id)?;
        if seen.insert(lot) {
            lots.push(lot);
        }
    }
    let single = GetAvailabilityRequest {
        lot_id: request.lot_ids[0].clone(),
        horizon_minutes: request.horizon_minutes.clone(),
        arrival_time_ms: 0,
        price_per_hour: None,
    };
    let When::Horizons(horizons) = check_get(&single, topology, limits, 0)?.when else {
        unreachable!("a request without an arrival time asks for horizons");
    };
    Ok((lots, horizons))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    fn topology() -> TopologyIndex {
        TopologyIndex::new([
            ("a".to_owned(), vec!["a1".to_owned()]),
            ("b".to_owned(), vec!["b1".to_owned()]),
        ])
        .expect("valid")
    }

    fn get(lot: &str, horizons: &[u32], arrival: i64) -> GetAvailabilityRequest {
        GetAvailabilityRequest {
            lot_id: lot.to_owned(),
            horizon_minutes: horizons.to_vec(),
            arrival_time_ms: arrival,
            price_per_hour: None,
        }
    }

    fn check(request: &GetAvailabilityRequest) -> Result<AvailabilityQuery, RequestError> {
        check_get(request, &topology(), &RequestLimits::default(), NOW)
    }

    fn code(error: RequestError) -> tonic::Code {
        tonic::Status::from(crate::status::ServiceError::from(error)).code()
    }

    #[test]
    fn good_requests_become_queries() {
        assert_eq!(
            check(&get("b", &[60, 15, 60], 0)),
            Ok(AvailabilityQuery {
                lot: 1,
                when: When::Horizons(vec![15, 60]),
                price_per_hour: None,
            })
        );
        assert_eq!(
            check(&get("a", &[], NOW + 40 * 60_000)).map(|query| query.when),
            Ok(When::Arrival(NOW + 40 * 60_000))
        );
    }

    #[test]
    fn each_bad_request_gets_its_code_and_says_what_is_wrong() {
        let cases: Vec<(RequestError, tonic::Code, &str)> = vec![
            (
                check(&get("zz", &[15], 0)).expect_err("unknown"),
                tonic::Code::NotFound,
                "\"zz\"",
            ),
            (
                check(&get("", &[15], 0)).expect_err("empty"),
                tonic::Code::InvalidArgument,
                "lot_id",
            ),
            (
                check(&get("a", &[145], 0)).expect_err("horizon"),
                tonic::Code::InvalidArgument,
                "145 min",
            ),
            (
                check(&get("a", &[0], 0)).expect_err("horizon"),
                tonic::Code::InvalidArgument,
                "horizon 0 min",
            ),
            (
                check(&get("a", &[15; 17], 0)).expect_err("many"),
                tonic::Code::InvalidArgument,
                "at most 16",
            ),
            (
                check(&get("a", &[], NOW - 60_000)).expect_err("past"),
                tonic::Code::InvalidArgument,
                "in the past",
            ),
            (
                check(&get("a", &[], NOW + 10 * 3_600_000)).expect_err("far"),
                tonic::Code::InvalidArgument,
                "at most 120 min",
            ),
            (
                check(&get("a", &[15], NOW + 60_000)).expect_err("both"),
                tonic::Code::InvalidArgument,
                "not both",
            ),
        ];
        for (error, expected, says) in cases {
            assert!(error.to_string().contains(says), "{error}");
            assert_eq!(code(error), expected);
        }
    }

    #[test]
    fn messages_quote_a_short_prefix_of_long_input_and_no_server_path() {
        assert_eq!(quoted("zz"), "\"zz\"");
        let long = "é".repeat(100_000);
        let message = check(&get(&long, &[], 0)).expect_err("unknown").to_string();
        assert_eq!(
            message,
            format!("lot \"{}\"… (200000 bytes) is not known", "é".repeat(64))
        );
        let root = Path::new("/srv/parkcast/models");
        let text = format!(
            "{}: sha256 mismatch; model {:?} in {}",
            root.join("toy/4/model.bin").display(),
            "x".repeat(1_000),
            root.display()
        );
        let cleaned = client_message(&text, &[&"x".repeat(1_000)], Some(root));
        assert_eq!(
            cleaned,
            format!(
                "toy/4/model.bin: sha256 mismatch; model \"{}\"… (1000 bytes) in <registry>",
                "x".repeat(64)
            )
        );
        assert_eq!(
            client_message("models/toy/1: gone", &[], Some(Path::new("models/"))),
            "toy/1: gone"
        );
    }

    #[test]
    fn batches_are_bounded_and_name_the_bad_request() {
        let limits = RequestLimits::default();
        let empty = BatchGetAvailabilityRequest { requests: vec![] };
        assert_eq!(
            check_batch(&empty, &topology(), &limits, NOW),
            Err(RequestError::EmptyBatch)
        );
        let oversized = BatchGetAvailabilityRequest {
            requests: vec![get("a", &[], 0); 101],
        };
        assert!(matches!(
            check_batch(&oversized, &topology(), &limits, NOW),
            Err(RequestError::BatchTooLarge {
                size: 101,
                max: 100
            })
        ));
        let one_bad = BatchGetAvailabilityRequest {
            requests: vec![get("a", &[], 0), get("nope", &[], 0)],
        };
        let error = check_batch(&one_bad, &topology(), &limits, NOW).expect_err("bad");
        assert!(error.to_string().starts_with("request 1 of the batch"));
        assert_eq!(code(error), tonic::Code::NotFound);
    }

    #[test]
    fn searches_check_coordinates_radius_results_and_slot_type() {
        let limits = RequestLimits::default();
        let search = SearchNearbyRequest {
            latitude: -37.81,
            longitude: 144.96,
            radius_m: 500.0,
            arrival_time_ms: 0,
            slot_type: SlotType::Ev as i32,
            max_results: 0,
            arrival_in_minutes: 0,
        };
        let query = check_search(&search, &limits, NOW).expect("valid");
        assert_eq!(
            (query.arrival_ms, query.slot_type, query.max_results),
            (NOW, Some(SlotType::Ev), 20)
        );
        let relative = SearchNearbyRequest {
            arrival_in_minutes: 45,
            ..search
        };
        assert_eq!(
            check_search(&relative, &limits, NOW).map(|query| query.arrival_ms),
            Ok(NOW + 45 * 60_000)
        );
        let bad = [
            SearchNearbyRequest {
                radius_m: 50_000.0,
                ..search
            },
            SearchNearbyRequest {
                radius_m: f64::NAN,
                ..search
            },
            SearchNearbyRequest {
                latitude: 91.0,
                ..search
            },
            SearchNearbyRequest {
                max_results: 1_000,
                ..search
            },
            SearchNearbyRequest {
                slot_type: 99,
                ..search
            },
            SearchNearbyRequest {
                arrival_time_ms: NOW - 1,
                ..search
            },
            SearchNearbyRequest {
                arrival_in_minutes: 500,
                ..search
            },
            SearchNearbyRequest {
                arrival_time_ms: NOW + 60_000,
                arrival_in_minutes: 5,
                ..search
            },
        ];
        for request in bad {
            let error = check_search(&request, &limits, NOW).expect_err("refused");
            assert_eq!(code(error), tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn watches_follow_known_lots_at_served_horizons() {
        let limits = RequestLimits::default();
        let watch = WatchAvailabilityRequest {
            lot_ids: vec!["b".into(), "a".into()],
            horizon_minutes: vec![30],
        };
        assert_eq!(
            check_watch(&watch, &topology(), &limits),
            Ok((vec![1, 0], vec![30]))
        );
        let repeated = WatchAvailabilityRequest {
            lot_ids: ["b", "a", "b", "b", "a"].map(str::to_owned).to_vec(),
            horizon_minutes: vec![],
        };
        assert_eq!(
            check_watch(&repeated, &topology(), &limits),
            Ok((vec![1, 0], vec![]))
        );
        let none = WatchAvailabilityRequest {
            lot_ids: vec![],
            horizon_minutes: vec![],
        };
        assert!(matches!(
            check_watch(&none, &topology(), &limits),
            Err(RequestError::WatchSize { size: 0, .. })
        ));
        let unknown = WatchAvailabilityRequest {
            lot_ids: vec!["x".into()],
            horizon_minutes: vec![],
        };
        assert_eq!(
            check_watch(&unknown, &topology(), &limits).map_err(code),
            Err(tonic::Code::NotFound)
        );
    }
}
