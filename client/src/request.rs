//! Requests from plain arguments, without IO: when the caller arrives becomes the fields the server
//! reads (a horizon in whole minutes, or an arrival time in Unix ms), so the rules are tested here
//! rather than through a server.

use std::time::Duration;

use chrono::{DateTime, Utc};
use parkcast_proto::v1::{
    ActivateModelRequest, ClearShadowRequest, GetAvailabilityRequest, SearchNearbyRequest,
    ShadowModelRequest, SlotType,
};
use tonic::metadata::MetadataValue;

use crate::ClientError;

/// When the caller arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// After this long, counted from the server's clock (sent as whole minutes, rounded up).
    In(Duration),
    /// At this time.
    At(DateTime<Utc>),
}

/// How far ahead an availability request looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ahead {
    /// Forecasts at these horizons, minutes ahead; none asks for the live picture only.
    Horizons(Vec<u32>),
    /// A forecast at the arrival.
    Arrival(Arrival),
}

impl Ahead {
    /// The arrival time sent, Unix ms; 0 (the proto's "none") unless arriving at a set time.
    pub fn arrival_time_ms(&self) -> i64 {
        match self {
            Ahead::Arrival(Arrival::At(time)) => time.timestamp_millis(),
            Ahead::Horizons(_) | Ahead::Arrival(Arrival::In(_)) => 0,
        }
    }
}

/// One `GetAvailabilityRequest` per lot, all looking as far `ahead`, as if priced at
/// `price_per_hour` when one is given (a what-if; the server checks it).
pub fn availability_requests(
    lot_ids: &[String],
    ahead: &Ahead,
    price_per_hour: Option<f64>,
) -> Result<Vec<GetAvailabilityRequest>, ClientError> {
    if lot_ids.is_empty() {
        return Err(ClientError::NoLots);
    }
    let horizons = match ahead {
        Ahead::Horizons(horizons) => horizons.clone(),
        Ahead::Arrival(Arrival::In(after)) => vec![horizon_minutes(*after)?],
        Ahead::Arrival(Arrival::At(_)) => Vec::new(),
    };
    let arrival_time_ms = ahead.arrival_time_ms();
    Ok(lot_ids
        .iter()
        .map(|lot_id| GetAvailabilityRequest {
            lot_id: lot_id.clone(),
            horizon_minutes: horizons.clone(),
            arrival_time_ms,
            price_per_hour,
        })
        .collect())
}

/// A search for lots around a point.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// Latitude of the point, WGS84 degrees.
    pub latitude: f64,
    /// Longitude of the point, WGS84 degrees.
    pub longitude: f64,
    /// Search radius, metres.
    pub radius_m: f64,
    /// When the caller arrives (none: now).
    pub arrival: Option<Arrival>,
    /// Only lots with slots of this type (none: any lot).
    pub slot_type: Option<SlotType>,
    /// At most this many lots.
    pub max_results: u32,
}

impl SearchQuery {
    /// The `SearchNearbyRequest`: an arrival is either a time or minutes from now, never both.
    pub fn request(&self) -> Result<SearchNearbyRequest, ClientError> {
        let (arrival_time_ms, arrival_in_minutes) = match self.arrival {
            Some(Arrival::In(after)) => (0, horizon_minutes(after)?),
            Some(Arrival::At(time)) => (time.timestamp_millis(), 0),
            None => (0, 0),
        };
        Ok(SearchNearbyRequest {
            latitude: self.latitude,
            longitude: self.longitude,
            radius_m: self.radius_m,
            arrival_time_ms,
            slot_type: self.slot_type.unwrap_or(SlotType::Unspecified) as i32,
            max_results: self.max_results,
            arrival_in_minutes,
        })
    }
}

/// An `ActivateModelRequest` carrying the admin token as `authorization: Bearer <token>`; version
/// `None` asks for the newest.
pub fn activation_request(
    name: &str,
    version: Option<u32>,
    token: &str,
) -> Result<tonic::Request<ActivateModelRequest>, ClientError> {
    admin_request(
        ActivateModelRequest {
            name: name.to_owned(),
            version: version.unwrap_or(0),
        },
        token,
    )
}

/// A `ShadowModel` request for a version (`None`: the newest), with the admin token.
pub fn shadow_request(
    name: &str,
    version: Option<u32>,
    token: &str,
) -> Result<tonic::Request<ShadowModelRequest>, ClientError> {
    admin_request(
        ShadowModelRequest {
            name: name.to_owned(),
            version: version.unwrap_or(0),
        },
        token,
    )
}

/// A `ClearShadow` request, with the admin token.
pub fn clear_shadow_request(
    token: &str,
) -> Result<tonic::Request<ClearShadowRequest>, ClientError> {
    admin_request(ClearShadowRequest {}, token)
}

/// An admin RPC's request: the message with `authorization: Bearer <token>` metadata.
fn admin_request<T>(message: T, token: &str) -> Result<tonic::Request<T>, ClientError> {
    let bearer = MetadataValue::try_from(format!("Bearer {token}")).map_err(ClientError::Token)?;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", bearer);
    Ok(request)
}

/// A duration as a horizon: whole minutes, rounded up.
pub fn horizon_minutes(after: Duration) -> Result<u32, ClientError> {
    u32::try_from(after.as_secs().div_ceil(60)).map_err(|_| ClientError::ArrivalTooFar { after })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lots(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn an_arrival_in_becomes_whole_minutes_rounded_up() {
        assert_eq!(horizon_minutes(Duration::from_secs(90)).ok(), Some(2));
        assert_eq!(horizon_minutes(Duration::from_secs(2_700)).ok(), Some(45));
        assert!(matches!(
            horizon_minutes(Duration::from_secs(u64::MAX)),
            Err(ClientError::ArrivalTooFar { .. })
        ));
    }

    #[test]
    fn every_lot_asks_the_same_horizons_or_arrival() {
        let by_horizons =
            availability_requests(&lots(&["a", "b"]), &Ahead::Horizons(vec![30, 60]), None)
                .expect("valid requests");
        assert_eq!(by_horizons.len(), 2);
        assert!(
            by_horizons
                .iter()
                .all(|request| request.horizon_minutes == [30, 60] && request.arrival_time_ms == 0)
        );
        assert_eq!(by_horizons[1].lot_id, "b");

        let arrive_in = Ahead::Arrival(Arrival::In(Duration::from_secs(5_400)));
        let request =
            availability_requests(&lots(&["a"]), &arrive_in, None).expect("a valid request");
        assert_eq!(request[0].horizon_minutes, [90]);
        assert_eq!(request[0].arrival_time_ms, 0);

        let time = DateTime::from_timestamp_millis(1_795_716_000_000).expect("a valid time");
        let arrive_at = Ahead::Arrival(Arrival::At(time));
        let request =
            availability_requests(&lots(&["a"]), &arrive_at, None).expect("a valid request");
        assert!(request[0].horizon_minutes.is_empty());
        assert_eq!(request[0].arrival_time_ms, 1_795_716_000_000);

        assert!(matches!(
            availability_requests(&[], &Ahead::Horizons(Vec::new()), None),
            Err(ClientError::NoLots)
        ));
    }

    #[test]
    fn a_search_sends_an_arrival_as_a_time_or_as_minutes_never_both() {
        let query = SearchQuery {
            latitude: 52.4778,
            longitude: -1.8946,
            radius_m: 800.0,
            arrival: Some(Arrival::In(Duration::from_secs(61))),
            slot_type: Some(SlotType::Ev),
            max_results: 5,
        };
        let request = query.request().expect("a valid request");
        assert_eq!(
            (request.arrival_time_ms, request.arrival_in_minutes),
            (0, 2)
        );
        assert_eq!(request.slot_type, SlotType::Ev as i32);
        let any_time = SearchQuery {
            arrival: None,
            slot_type: None,
            ..query
        }
        .request()
        .expect("a valid request");
        assert_eq!(
            (any_time.arrival_time_ms, any_time.arrival_in_minutes),
            (0, 0)
        );
        assert_eq!(any_time.slot_type, SlotType::Unspecified as i32);
    }

    #[test]
    fn an_activation_carries_the_bearer_token_and_refuses_one_metadata_cannot_carry() {
        let request = activation_request("gbm", None, "s3cret").expect("a valid token");
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok()),
            Some("Bearer s3cret")
        );
        assert_eq!(request.get_ref().version, 0);
        assert!(matches!(
            activation_request("gbm", Some(2), "line\nbreak"),
            Err(ClientError::Token(_))
        ));
    }
}
