//! The `Availability` gRPC service (first part of the serving issue): the live picture of a lot,
//! checked requests, one error conversion.
//!
//! What it answers today: occupied / free / unknown slots now, the data age and a stale flag, from
//! live state. Forecasts need the scoring path (live state into the shared incremental features and
//! the loaded model), which is not built yet: a request for horizons or an arrival time gets
//! `UNAVAILABLE` saying so, rather than an answer without forecasts that looks complete.
//! `SearchNearby` and `WatchAvailability` are `UNIMPLEMENTED` for the same reason.

use std::sync::Arc;

use parkcast_proto::v1::availability_server::Availability;
use parkcast_proto::v1::{
    BatchGetAvailabilityRequest, BatchGetAvailabilityResponse, GetAvailabilityRequest,
    LotAvailability, SearchNearbyRequest, SearchNearbyResponse, WatchAvailabilityRequest,
};
use tonic::{Request, Response, Status};

use crate::live::LotSnapshot;
use crate::requests::{AvailabilityQuery, RequestLimits, When, check_batch, check_get};
use crate::topology::{LotIndex, Topology};

/// What the service reads: the topology and each lot's live picture.
pub trait LiveView: Send + Sync + 'static {
    /// The lots and slots served.
    fn topology(&self) -> &Topology;
    /// A lot's picture at `now_ms`, and whether ingestion considers its data stale (with why).
    fn lot(&self, lot: LotIndex, now_ms: i64) -> Option<(LotSnapshot, Option<String>)>;
}

/// The service over a live view.
pub struct AvailabilityService<V> {
    view: Arc<V>,
    limits: RequestLimits,
    /// A lot whose newest event is older than this is stale, ms.
    stale_after_ms: i64,
    clock: fn() -> i64,
}

impl<V: LiveView> AvailabilityService<V> {
    /// A service answering from `view`, with the wall clock.
    pub fn new(view: Arc<V>, limits: RequestLimits, stale_after_ms: i64) -> Self {
        AvailabilityService {
            view,
            limits,
            stale_after_ms,
            clock: parkcast_kafka::now_ms,
        }
    }

    /// The same with another clock (tests, replays of the past).
    pub fn with_clock(mut self, clock: fn() -> i64) -> Self {
        self.clock = clock;
        self
    }

    fn answer(&self, query: &AvailabilityQuery, now_ms: i64) -> Result<LotAvailability, Status> {
        if query.when != When::Horizons(Vec::new()) {
            return Err(Status::unavailable(
                "forecasts are not served yet (no scoring path); ask without horizons or arrival time for the live picture",
            ));
        }
        let topology = &self.view.topology().lots()[query.lot as usize];
        let (snapshot, ingest_stale) = self.view.lot(query.lot, now_ms).ok_or_else(|| {
            Status::not_found(format!("lot {:?} has no live state", topology.lot_id))
        })?;
        let data_age_ms = snapshot
            .newest_event_ms
            .map_or(i64::MAX, |newest| now_ms.saturating_sub(newest).max(0));
        let stale_reason = match (ingest_stale, snapshot.newest_event_ms) {
            (Some(reason), _) => reason,
            (None, None) => "no event received for this lot yet".to_owned(),
            (None, Some(_)) if data_age_ms > self.stale_after_ms => {
                format!("the newest event is {} s old", data_age_ms / 1_000)
            }
            _ => String::new(),
        };
        Ok(LotAvailability {
            lot_id: topology.lot_id.clone(),
            name: topology.lot_id.clone(),
            capacity: topology.capacity,
            as_of_ms: now_ms,
            data_age_ms,
            stale: !stale_reason.is_empty(),
            stale_reason,
            occupied_now: snapshot.occupied,
            free_now: snapshot.free,
            unknown_now: snapshot.unknown,
            model_name: String::new(),
            model_version: 0,
            forecasts: Vec::new(),
        })
    }
}

/// The stream of `WatchAvailability`.
type WatchStream = tonic::codegen::BoxStream<LotAvailability>;

#[tonic::async_trait]
impl<V: LiveView> Availability for AvailabilityService<V> {
    async fn get_availability(
        &self,
        request: Request<GetAvailabilityRequest>,
    ) -> Result<Response<LotAvailability>, Status> {
        let now_ms = (self.clock)();
        let query = check_get(
            request.get_ref(),
            self.view.topology(),
            &self.limits,
            now_ms,
        )?;
        Ok(Response::new(self.answer(&query, now_ms)?))
    }

    async fn batch_get_availability(
        &self,
        request: Request<BatchGetAvailabilityRequest>,
    ) -> Result<Response<BatchGetAvailabilityResponse>, Status> {
        let now_ms = (self.clock)();
        let queries = check_batch(
            request.get_ref(),
            self.view.topology(),
            &self.limits,
            now_ms,
        )?;
        let lots = queries
            .iter()
            .map(|query| self.answer(query, now_ms))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(BatchGetAvailabilityResponse { lots }))
    }

    async fn search_nearby(
        &self,
        _request: Request<SearchNearbyRequest>,
    ) -> Result<Response<SearchNearbyResponse>, Status> {
        Err(Status::unimplemented(
            "SearchNearby needs lot locations and forecasts; not served yet",
        ))
    }

    type WatchAvailabilityStream = WatchStream;

    async fn watch_availability(
        &self,
        _request: Request<WatchAvailabilityRequest>,
    ) -> Result<Response<Self::WatchAvailabilityStream>, Status> {
        Err(Status::unimplemented("WatchAvailability is not served yet"))
    }
}
