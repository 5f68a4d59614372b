//! The gRPC services: `Availability` (the driver's app) and `Models` (operators).
//!
//! Handlers check the request first ([`crate::requests`]), then read the lot's ready answer from the
//! scorer ([`Scoring::answer`]): no handler waits for ingestion or runs the model. A handler refuses
//! with a [`ServiceError`], which becomes a status in one place ([`crate::status`]); the request is
//! then counted by its code. Every answer says when it was computed, how old the lot's newest event
//! is, whether the data is stale and why, and which model made the forecasts; counts and intervals
//! are bounded to [0, capacity] and probabilities to [0, 1].
//!
//! One of several replicas (`replicas.enabled`, [`crate::replicas`]), a server answers the lots
//! it holds and forwards the rest: `GetAvailability` to the lot's owner, `BatchGetAvailability` as
//! one sub-batch per owner sent at once, `SearchNearby` to every owner of a candidate lot (each
//! ranks what it holds, the best of all are kept); each with one retry after a fresh look at the
//! ownership. `WatchAvailability` relays the other replicas' lots from one upstream watch per
//! owner and follows a lot when it moves (`Watch`). `ListReplicas` returns the ownership for
//! clients that route themselves.
//!
//! `SearchNearby` ranks the lots within the radius by the probability of at least one free slot at
//! arrival. With a slot type, only lots with slots of that type are candidates; the probability is
//! still the lot's (occupancy is not forecast per slot type), and `slots_of_type` says how many
//! there are. Lots without coordinates or without a forecast are left out.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use parkcast_inference::model::report_name;
use parkcast_inference::registry::Manifest;
use parkcast_proto::v1::availability_client::AvailabilityClient;
use parkcast_proto::v1::availability_server::Availability;
use parkcast_proto::v1::models_server::Models;
use parkcast_proto::v1::{
    ActivateModelRequest, BatchGetAvailabilityRequest, BatchGetAvailabilityResponse,
    ClearShadowRequest, DescribeModelRequest, Drift, Forecast, GetAvailabilityRequest,
    GetLiveQualityRequest, GetPricingBandsRequest, HorizonMetrics, ListModelsRequest,
    ListModelsResponse, ListReplicasRequest, ListReplicasResponse, LiveQuality, LotAvailability,
    LotQuality, ModelInfo, NearbyLot, PricingBands, SearchNearbyRequest, SearchNearbyResponse,
    ShadowModelRequest, ShadowQuality, SlotType, WatchAvailabilityRequest, WindowQuality,
};
use tokio_stream::Stream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::metrics::{ForwardOutcome, Rpc, ServingMetrics};
use crate::models::{ActivationError, ModelManager};
use crate::replicas::{Peer, Placement, Route, Router, forwarded, unreachable};
use crate::requests::{
    AvailabilityQuery, PricingQuery, RequestLimits, SearchQuery, When, check_batch, check_get,
    check_lot, check_pricing, check_search, check_watch,
};
use crate::scoring::{LotAnswer, Scoring, forecast_at_scaled};
use crate::status::ServiceError;
use crate::topology::{LotIndex, TopologyIndex};

/// What a lot is, beyond its slots: for names and `SearchNearby`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LotInfo {
    /// Human-readable name.
    pub name: String,
    /// WGS84 latitude, when known.
    pub latitude: Option<f64>,
    /// WGS84 longitude, when known.
    pub longitude: Option<f64>,
    /// Slots per [`SlotType`] value (index = the enum's number).
    pub slots_by_type: [u32; 6],
}

/// [`LotInfo`] of every served lot, in topology order.
#[derive(Debug, Clone, Default)]
pub struct LotDirectory {
    lots: Vec<LotInfo>,
}

impl LotDirectory {
    /// The directory of a topology's lots; lots missing from `infos` are named by their id, without
    /// location.
    pub fn new(
        topology: &TopologyIndex,
        mut infos: std::collections::HashMap<String, LotInfo>,
    ) -> LotDirectory {
        LotDirectory {
            lots: topology
                .lots()
                .iter()
                .map(|lot| {
                    infos.remove(&lot.lot_id).unwrap_or_else(|| LotInfo {
                        name: lot.lot_id.clone(),
                        ..LotInfo::default()
                    })
                })
                .collect(),
        }
    }

    /// The lot's name, location and slots.
    pub fn get(&self, lot: LotIndex) -> Option<&LotInfo> {
        self.lots.get(lot as usize)
    }
}

/// The slot type of a `dim_slot.slot_type` value.
pub fn slot_type_of(name: &str) -> SlotType {
    match name {
        "ev" => SlotType::Ev,
        "disabled" => SlotType::Disabled,
        "motorcycle" => SlotType::Motorcycle,
        "loading" => SlotType::Loading,
        _ => SlotType::Standard,
    }
}

/// The (minutes ahead, target instant) pairs a query asks for at `now_ms`; an arrival's minutes are
/// rounded up.
fn targets(when: &When, now_ms: i64) -> Vec<(u32, i64)> {
    match when {
        When::Horizons(horizons) => horizons
            .iter()
            .map(|minutes| (*minutes, now_ms + i64::from(*minutes) * 60_000))
            .collect(),
        When::Arrival(arrival_ms) => {
            let minutes = ((arrival_ms - now_ms).max(0) + 59_999) / 60_000;
            vec![(u32::try_from(minutes).unwrap_or(u32::MAX), *arrival_ms)]
        }
    }
}

/// Great-circle distance, metres (haversine on a 6,371 km sphere).
pub fn distance_m(from: (f64, f64), to: (f64, f64)) -> f64 {
    let (lat1, lon1) = (from.0.to_radians(), from.1.to_radians());
    let (lat2, lon2) = (to.0.to_radians(), to.1.to_radians());
    let a = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6_371_000.0 * a.sqrt().min(1.0).asin()
}

/// gRPC server reflection over `descriptor_sets` (encoded `FileDescriptorSet`s), as both
/// `grpc.reflection.v1` and `grpc.reflection.v1alpha`: many tools (grpcurl before 1.9, clients of
/// grpcio-reflection, Postman) still ask only the older one, and a server that answers
/// `UNIMPLEMENTED` there looks to them as if it had no reflection at all.
pub fn reflection(
    descriptor_sets: &[&[u8]],
) -> Result<
    (
        tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer<
            impl tonic_reflection::pb::v1::server_reflection_server::ServerReflection,
        >,
        tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer<
            impl tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    // Each version lists the services of its sets and itself; with the other's set too, both
    // list the same services.
    let builder = |other_reflection: &'static [u8]| {
        descriptor_sets.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(other_reflection),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        )
    };
    Ok((
        builder(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET).build_v1()?,
        builder(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET).build_v1alpha()?,
    ))
}

/// Shared by both services: the scorer, lot directory, limits and metrics.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    /// The scorer with the ready answers.
    pub scoring: Arc<Scoring>,
    /// Lot names, locations and slot types.
    pub directory: Arc<LotDirectory>,
    /// Request bounds (the longest horizon follows the active model).
    pub limits: RequestLimits,
    /// A lot whose newest event is older than this is stale, ms.
    pub stale_after_ms: i64,
    /// Request metrics.
    pub metrics: Option<ServingMetrics>,
}

/// A handler's answer: a refusal becomes its status ([`crate::status`], the one conversion), then
/// the request is timed and counted by its code.
fn finish<T>(
    metrics: Option<&ServingMetrics>,
    rpc: Rpc,
    started: Instant,
    result: Result<T, ServiceError>,
) -> Result<Response<T>, Status> {
    let result = result.map(Response::new).map_err(Status::from);
    if let Some(metrics) = metrics {
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        metrics.request(rpc, started.elapsed().as_secs_f64(), code);
    }
    result
}

impl ServiceContext {
    fn finish<T>(
        &self,
        rpc: Rpc,
        started: Instant,
        result: Result<T, ServiceError>,
    ) -> Result<Response<T>, Status> {
        finish(self.metrics.as_ref(), rpc, started, result)
    }

    /// The limits with the active model's longest horizon. Without a model any horizon passes the
    /// checks, so that the answer is the truthful `UNAVAILABLE` rather than "horizon not served".
    pub fn limits(&self) -> RequestLimits {
        RequestLimits {
            max_horizon_minutes: self
                .scoring
                .model()
                .map_or(u32::MAX, |served| served.max_horizon_minutes),
            ..self.limits
        }
    }

    /// The answer for a checked query at `now_ms`. `strict`: a forecast asked without an active
    /// model is an error (`UNAVAILABLE`), else the answer says so in its stale reason.
    fn answer(
        &self,
        query: &AvailabilityQuery,
        now_ms: i64,
        strict: bool,
    ) -> Result<LotAvailability, ServiceError> {
        let ready = self.scoring.answer(query.lot);
        let targets = targets(&query.when, now_ms);
        if strict && !targets.is_empty() && ready.model.is_none() {
            return Err(ServiceError::NoModel);
        }
        let what_if = query
            .price_per_hour
            .map(|price| self.what_if(query.lot, &ready, price))
            .transpose()?;
        Ok(self.availability(query.lot, &ready, now_ms, &targets, what_if))
    }

    /// A lot's pricing bands now, as the feed would publish them, under a what-if price if asked.
    fn pricing_bands(
        &self,
        query: &PricingQuery,
        now_ms: i64,
    ) -> Result<PricingBands, ServiceError> {
        let ready = self.scoring.answer(query.lot);
        if ready.model.is_none() {
            return Err(ServiceError::NoModelForBands);
        }
        let what_if = query
            .price_per_hour
            .map(|price| self.what_if(query.lot, &ready, price))
            .transpose()?;
        let demand_factor = what_if.map_or(1.0, |what_if| what_if.demand_factor);
        let topology = &self.scoring.topology().lots()[query.lot as usize];
        Ok(PricingBands {
            bands: crate::pricing::bands_scaled(
                &topology.lot_id,
                topology.capacity,
                &ready,
                now_ms,
                demand_factor,
            ),
            price_per_hour: what_if.map(|what_if| what_if.price),
            reference_price_per_hour: what_if.map_or(0.0, |what_if| what_if.reference),
            demand_factor,
        })
    }

    /// What a what-if price does to a lot's demand under the active model's price response.
    fn what_if(
        &self,
        lot: LotIndex,
        ready: &LotAnswer,
        price: f64,
    ) -> Result<WhatIf, ServiceError> {
        let served = ready.model.as_ref().ok_or(ServiceError::NoModel)?;
        let response = served
            .manifest
            .card
            .price_response
            .as_ref()
            .ok_or_else(|| ServiceError::NoPriceResponse {
                name: served.manifest.card.name.clone(),
                version: served.manifest.version,
            })?;
        let lot_id = self.lot_id(lot);
        let reference_cents = *response
            .reference_cents_per_hour
            .get(&lot_id)
            .filter(|cents| **cents > 0)
            .ok_or(ServiceError::NoTariff { lot_id })?;
        let reference = reference_cents as f64 / 100.0;
        Ok(WhatIf {
            price,
            reference,
            demand_factor: (price / reference).powf(response.elasticity),
        })
    }

    /// The id of lot `lot`.
    fn lot_id(&self, lot: LotIndex) -> String {
        self.scoring.topology().lots()[lot as usize].lot_id.clone()
    }

    /// A lot's answer now at `horizons_minutes` (not checked against the limits): what
    /// `GetAvailability` would answer, for in-process readers (the demo's table).
    pub fn lot_answer(&self, lot: LotIndex, horizons_minutes: &[u32]) -> LotAvailability {
        self.lot_answer_when(lot, &When::Horizons(horizons_minutes.to_vec()))
    }

    /// [`ServiceContext::lot_answer`] at any [`When`] (not checked against the limits).
    pub fn lot_answer_when(&self, lot: LotIndex, when: &When) -> LotAvailability {
        let now_ms = self.scoring.now_ms();
        let targets = targets(when, now_ms);
        self.availability(lot, &self.scoring.answer(lot), now_ms, &targets, None)
    }

    fn availability(
        &self,
        lot: LotIndex,
        ready: &LotAnswer,
        now_ms: i64,
        targets: &[(u32, i64)],
        what_if: Option<WhatIf>,
    ) -> LotAvailability {
        let demand_factor = what_if.map_or(1.0, |what_if| what_if.demand_factor);
        let topology = &self.scoring.topology().lots()[lot as usize];
        let capacity = topology.capacity;
        let data_age_ms = ready.data_age_ms(now_ms);
        let mut reasons = Vec::new();
        if let Some(reason) = self.scoring.stale_reason() {
            reasons.push(reason);
        }
        match data_age_ms {
            None => reasons.push("no event received for this lot yet".to_owned()),
            Some(age) if age > self.stale_after_ms => {
                reasons.push(format!("the newest event is {} s old", age / 1_000));
            }
            Some(_) => {}
        }
        let (occupied, free, unknown) = ready
            .snapshot
            .as_ref()
            .map_or((0, 0, capacity), |s| (s.occupied, s.free, s.unknown));
        let mut forecasts = Vec::with_capacity(targets.len());
        if !targets.is_empty() {
            match (&ready.model, &ready.forecast) {
                (None, _) => reasons.push("no model is active".to_owned()),
                (Some(_), None) => {
                    reasons.push("no forecast: the lot has no grid history".to_owned());
                }
                (Some(served), Some(forecast)) => {
                    // The live reading anchors the near term only while it is fresh.
                    let live = (reasons.is_empty() && capacity > 0)
                        .then(|| (now_ms, f64::from(occupied) / f64::from(capacity)));
                    let capacity_f = f64::from(capacity);
                    for &(minutes, target_ms) in targets {
                        let Some(point) = forecast_at_scaled(
                            |horizon| {
                                served
                                    .model
                                    .calibration_for(&topology.lot_id, horizon, target_ms)
                            },
                            forecast,
                            live,
                            target_ms,
                            demand_factor,
                        ) else {
                            reasons.push(format!(
                                "no forecast: the last one (from {} s ago) does not reach this far",
                                (now_ms - forecast.origin_ms) / 1_000
                            ));
                            break;
                        };
                        let free = |rate: f64| (capacity_f * (1.0 - rate)).clamp(0.0, capacity_f);
                        forecasts.push(Forecast {
                            target_time_ms: target_ms,
                            horizon_minutes: minutes,
                            expected_free: free(point.rate),
                            free_low_80: free(point.interval_80.1),
                            free_high_80: free(point.interval_80.0),
                            free_low_95: free(point.interval_95.1),
                            free_high_95: free(point.interval_95.0),
                            probability_any_free: point.probability_any_free.clamp(0.0, 1.0),
                        });
                    }
                }
            }
        }
        let info = self.directory.get(lot);
        LotAvailability {
            lot_id: topology.lot_id.clone(),
            name: info.map_or_else(|| topology.lot_id.clone(), |info| info.name.clone()),
            capacity,
            as_of_ms: now_ms,
            data_age_ms,
            stale: !reasons.is_empty(),
            stale_reason: reasons.join("; "),
            occupied_now: occupied,
            free_now: free,
            unknown_now: unknown,
            model_name: ready
                .model
                .as_ref()
                .map(|served| served.manifest.card.name.clone())
                .unwrap_or_default(),
            model_version: ready
                .model
                .as_ref()
                .map_or(0, |served| served.manifest.version),
            forecasts,
            price_per_hour: what_if.map(|what_if| what_if.price),
            reference_price_per_hour: what_if.map_or(0.0, |what_if| what_if.reference),
            demand_factor,
        }
    }
}

/// A what-if price's effect on one lot.
#[derive(Debug, Clone, Copy)]
struct WhatIf {
    /// The price asked, per hour.
    price: f64,
    /// The lot's price the model knows, per hour.
    reference: f64,
    /// Demand is multiplied by this.
    demand_factor: f64,
}

/// The `Availability` service.
#[derive(Debug, Clone)]
pub struct AvailabilityService {
    context: ServiceContext,
    /// One permit per open watch stream (`limits.max_watch_streams`).
    watches: Arc<tokio::sync::Semaphore>,
    /// The other replicas of the group, when this server is one of several ([`crate::replicas`]).
    router: Option<Arc<Router>>,
}

impl AvailabilityService {
    /// The service over a context.
    pub fn new(context: ServiceContext) -> Self {
        let watches = Arc::new(tokio::sync::Semaphore::new(
            context
                .limits
                .max_watch_streams
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        AvailabilityService {
            context,
            watches,
            router: None,
        }
    }

    /// What it answers from.
    pub fn context(&self) -> &ServiceContext {
        &self.context
    }

    /// The service as one replica of several: requests for other replicas' lots are forwarded.
    #[must_use]
    pub fn with_router(mut self, router: Arc<Router>) -> Self {
        self.router = Some(router);
        self
    }

    /// A forwarded request reaches a replica that answers only for what it holds (or for lots
    /// nobody has claimed): never forwarded twice.
    fn only_held(router: &Router, lot: LotIndex, lot_id: &str) -> Result<(), ServiceError> {
        match router.route(lot) {
            Route::Local => Ok(()),
            Route::Remote(_) | Route::Moving => Err(ServiceError::NotOwner {
                lot_id: lot_id.to_owned(),
                replica: router.replica_id().to_owned(),
            }),
        }
    }

    /// A one-lot request's answer from the lot's owner, when another replica owns it; `None`
    /// when this replica answers (it owns the lot, or runs alone). A forwarded request is never
    /// forwarded again: it is refused unless held here.
    async fn owners_answer<Req, Resp, Call, Fut>(
        &self,
        rpc: Rpc,
        lot: LotIndex,
        lot_id: &str,
        request: &Req,
        forwarded: bool,
        call: Call,
    ) -> Result<Option<Resp>, ServiceError>
    where
        Req: Clone,
        Call: Fn(AvailabilityClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let Some(router) = &self.router else {
            return Ok(None);
        };
        if forwarded {
            Self::only_held(router, lot, lot_id)?;
            return Ok(None);
        }
        router.call(rpc, lot, lot_id, request, call).await
    }

    /// `GetAvailability` once checked: here, or from the lot's owner.
    async fn get(
        &self,
        query: &AvailabilityQuery,
        request: &GetAvailabilityRequest,
        forwarded: bool,
        now_ms: i64,
    ) -> Result<LotAvailability, ServiceError> {
        let owner = self.owners_answer(
            Rpc::GetAvailability,
            query.lot,
            &request.lot_id,
            request,
            forwarded,
            |mut client, request| async move { client.get_availability(request).await },
        );
        match owner.await? {
            Some(answer) => Ok(answer),
            None => self.context.answer(query, now_ms, true),
        }
    }

    /// `GetPricingBands` once checked: answered here, or by the lot's owner.
    async fn pricing(
        &self,
        query: &PricingQuery,
        request: &GetPricingBandsRequest,
        forwarded: bool,
        now_ms: i64,
    ) -> Result<PricingBands, ServiceError> {
        let owner = self.owners_answer(
            Rpc::GetPricingBands,
            query.lot,
            &request.lot_id,
            request,
            forwarded,
            |mut client, request| async move { client.get_pricing_bands(request).await },
        );
        match owner.await? {
            Some(answer) => Ok(answer),
            None => self.context.pricing_bands(query, now_ms),
        }
    }

    /// `BatchGetAvailability` once checked: each lot here or at its owner, one sub-batch per
    /// owner, sent at once; the lots of an owner that failed are routed afresh and sent once more.
    async fn batch(
        &self,
        queries: &[AvailabilityQuery],
        request: &BatchGetAvailabilityRequest,
        forwarded: bool,
        now_ms: i64,
    ) -> Result<Vec<LotAvailability>, ServiceError> {
        let local = |query: &AvailabilityQuery| self.context.answer(query, now_ms, true);
        let Some(router) = self.router.as_ref().filter(|_| !forwarded) else {
            if let Some(router) = &self.router {
                for (query, asked) in queries.iter().zip(&request.requests) {
                    Self::only_held(router, query.lot, &asked.lot_id)?;
                }
            }
            return queries.iter().map(local).collect();
        };
        let mut answers: Vec<Option<LotAvailability>> = vec![None; queries.len()];
        let mut pending: Vec<usize> = (0..queries.len()).collect();
        let mut failure: Option<ServiceError> = None;
        for attempt in 0..2 {
            if attempt > 0 {
                tokio::time::sleep(router.retry_delay()).await;
            }
            let round =
                router
                    .scatter(
                        pending,
                        |index| queries[*index].lot,
                        |indices| BatchGetAvailabilityRequest {
                            requests: indices
                                .iter()
                                .map(|index| request.requests[*index].clone())
                                .collect(),
                        },
                        |mut client, request| async move {
                            client.batch_get_availability(request).await
                        },
                    )
                    .await?;
            for index in round.here {
                if attempt > 0 {
                    router.count(Rpc::BatchGetAvailability, ForwardOutcome::CameHere, None);
                }
                answers[index] = Some(local(&queries[index])?);
            }
            let mut left = Vec::new();
            for index in round.moving {
                failure = Some(ServiceError::Moving {
                    lot_id: request.requests[index].lot_id.clone(),
                });
                left.push(index);
            }
            for (peer, indices, result) in round.shares {
                let count = Some(indices.len() as u64);
                let reason = match result {
                    Ok(answer) if answer.lots.len() == indices.len() => {
                        let outcome = ForwardOutcome::answered(attempt);
                        router.count(Rpc::BatchGetAvailability, outcome, count);
                        for (index, lot) in indices.into_iter().zip(answer.lots) {
                            answers[index] = Some(lot);
                        }
                        continue;
                    }
                    Ok(answer) => format!(
                        "{} answers for {} requests",
                        answer.lots.len(),
                        indices.len()
                    ),
                    Err(Ok(reason)) => reason,
                    Err(Err(refusal)) => {
                        router.count(Rpc::BatchGetAvailability, ForwardOutcome::Refused, count);
                        return Err(ServiceError::Peer(refusal));
                    }
                };
                failure = Some(unreachable(
                    &request.requests[indices[0]].lot_id,
                    &peer,
                    reason,
                ));
                left.extend(indices);
            }
            pending = left;
            if pending.is_empty() {
                break;
            }
        }
        if !pending.is_empty() {
            router.count(
                Rpc::BatchGetAvailability,
                ForwardOutcome::Failed,
                Some(pending.len() as u64),
            );
            return Err(failure.unwrap_or_else(|| ServiceError::Moving {
                lot_id: request.requests[pending[0]].lot_id.clone(),
            }));
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// The lots within a search's radius (with the slot type, if asked): index, distance, slots
    /// of the type.
    fn candidates(&self, query: &SearchQuery) -> Vec<Candidate> {
        let mut found = Vec::new();
        for (index, info) in self.context.directory.lots.iter().enumerate() {
            let (Some(latitude), Some(longitude)) = (info.latitude, info.longitude) else {
                continue;
            };
            let distance = distance_m((query.latitude, query.longitude), (latitude, longitude));
            if distance > query.radius_m {
                continue;
            }
            let slots_of_type = query
                .slot_type
                .map_or(0, |slot_type| info.slots_by_type[slot_type as usize]);
            if query.slot_type.is_some() && slots_of_type == 0 {
                continue;
            }
            let Ok(lot) = LotIndex::try_from(index) else {
                continue;
            };
            found.push((lot, distance, slots_of_type));
        }
        found
    }

    /// The search's answer for candidate lots answered here.
    fn nearby_here(
        &self,
        query: &SearchQuery,
        now_ms: i64,
        candidates: impl Iterator<Item = Candidate>,
    ) -> Vec<NearbyLot> {
        let context = &self.context;
        let targets = targets(&When::Arrival(query.arrival_ms), now_ms);
        let minutes = targets[0].0;
        let mut found = Vec::new();
        for (lot, distance, slots_of_type) in candidates {
            let ready = context.scoring.answer(lot);
            // Arriving now with no model: the live picture, not an answer made stale by the
            // missing forecast.
            let now_only = minutes == 0 && ready.model.is_none();
            let availability = context.availability(
                lot,
                &ready,
                now_ms,
                if now_only { &[] } else { &targets },
                None,
            );
            let probability = match availability.forecasts.first() {
                Some(forecast) => forecast.probability_any_free,
                // Arriving now without a forecast: the live count, if fresh.
                None if minutes == 0 && !availability.stale => {
                    if availability.free_now > 0 {
                        1.0
                    } else {
                        0.0
                    }
                }
                None => continue,
            };
            found.push(NearbyLot {
                availability: Some(availability),
                distance_m: distance,
                probability_any_free_at_arrival: probability,
                slots_of_type,
            });
        }
        found
    }

    /// `SearchNearby` once checked: the candidates held here (or claimed by nobody) ranked here;
    /// the client's request scattered to every replica owning a candidate, each ranking what it
    /// holds; the best `max_results` of them all. An owner that failed is asked once more after a
    /// fresh look at who owns its lots.
    async fn search(
        &self,
        query: &SearchQuery,
        request: &SearchNearbyRequest,
        forwarded: bool,
        now_ms: i64,
    ) -> Result<SearchNearbyResponse, ServiceError> {
        let candidates = self.candidates(query);
        let Some(router) = &self.router else {
            return Ok(rank(
                self.nearby_here(query, now_ms, candidates.into_iter()),
                query.max_results,
            ));
        };
        if forwarded {
            let held = candidates
                .into_iter()
                .filter(|(lot, _, _)| router.holds(*lot));
            return Ok(rank(
                self.nearby_here(query, now_ms, held),
                query.max_results,
            ));
        }
        let mut found = Vec::new();
        let mut pending = candidates;
        let mut failure: Option<ServiceError> = None;
        for attempt in 0..2 {
            if attempt > 0 {
                tokio::time::sleep(router.retry_delay()).await;
            }
            let round = router
                .scatter(
                    pending,
                    |candidate| candidate.0,
                    |_| *request,
                    |mut client, request| async move { client.search_nearby(request).await },
                )
                .await?;
            found.extend(self.nearby_here(query, now_ms, round.here.into_iter()));
            let mut left = Vec::new();
            for candidate in round.moving {
                failure = Some(ServiceError::Moving {
                    lot_id: self.context.lot_id(candidate.0),
                });
                left.push(candidate);
            }
            for (peer, lots, result) in round.shares {
                match result {
                    Ok(answer) => {
                        let outcome = ForwardOutcome::answered(attempt);
                        router.count(Rpc::SearchNearby, outcome, None);
                        found.extend(answer.lots);
                    }
                    Err(Ok(reason)) => {
                        failure = Some(unreachable(&self.context.lot_id(lots[0].0), &peer, reason));
                        left.extend(lots);
                    }
                    Err(Err(refusal)) => {
                        router.count(Rpc::SearchNearby, ForwardOutcome::Refused, None);
                        return Err(ServiceError::Peer(refusal));
                    }
                }
            }
            pending = left;
            if pending.is_empty() {
                break;
            }
        }
        if !pending.is_empty() {
            router.count(Rpc::SearchNearby, ForwardOutcome::Failed, None);
            return Err(failure.unwrap_or_else(|| ServiceError::Moving {
                lot_id: self.context.lot_id(pending[0].0),
            }));
        }
        // A lot that moved between the attempts may be in two owners' answers: once is enough.
        let mut seen = std::collections::HashSet::new();
        found.retain(|nearby| {
            nearby
                .availability
                .as_ref()
                .is_none_or(|availability| seen.insert(availability.lot_id.clone()))
        });
        Ok(rank(found, query.max_results))
    }
}

/// A lot within a search's radius: its index, distance (m) and slots of the type asked.
type Candidate = (LotIndex, f64, u32);

/// Best first (the probability of a free slot at arrival, then the distance), at most `max`.
fn rank(mut found: Vec<NearbyLot>, max: u32) -> SearchNearbyResponse {
    found.sort_by(|left, right| {
        right
            .probability_any_free_at_arrival
            .total_cmp(&left.probability_any_free_at_arrival)
            .then(left.distance_m.total_cmp(&right.distance_m))
    });
    found.truncate(max as usize);
    SearchNearbyResponse { lots: found }
}

/// An open watch stream: its permit, and its place in the gauge of open streams, both given back
/// when the stream's task ends.
struct OpenWatch {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl OpenWatch {
    fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        metrics: Option<&ServingMetrics>,
    ) -> OpenWatch {
        let gauge = metrics.map(|metrics| metrics.watch_streams.clone());
        if let Some(gauge) = &gauge {
            gauge.inc();
        }
        OpenWatch {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.dec();
        }
    }
}

/// The stream of `WatchAvailability`.
type WatchStream = Pin<Box<dyn Stream<Item = Result<LotAvailability, Status>> + Send>>;

#[tonic::async_trait]
impl Availability for AvailabilityService {
    async fn get_availability(
        &self,
        request: Request<GetAvailabilityRequest>,
    ) -> Result<Response<LotAvailability>, Status> {
        let started = Instant::now();
        let context = &self.context;
        let now_ms = context.scoring.now_ms();
        let result = match check_get(
            request.get_ref(),
            context.scoring.topology(),
            &context.limits(),
            now_ms,
        ) {
            Ok(query) => {
                self.get(&query, request.get_ref(), forwarded(&request), now_ms)
                    .await
            }
            Err(error) => Err(error.into()),
        };
        context.finish(Rpc::GetAvailability, started, result)
    }

    async fn batch_get_availability(
        &self,
        request: Request<BatchGetAvailabilityRequest>,
    ) -> Result<Response<BatchGetAvailabilityResponse>, Status> {
        let started = Instant::now();
        let context = &self.context;
        let now_ms = context.scoring.now_ms();
        let result = match check_batch(
            request.get_ref(),
            context.scoring.topology(),
            &context.limits(),
            now_ms,
        ) {
            Ok(queries) => self
                .batch(&queries, request.get_ref(), forwarded(&request), now_ms)
                .await
                .map(|lots| BatchGetAvailabilityResponse { lots }),
            Err(error) => Err(error.into()),
        };
        context.finish(Rpc::BatchGetAvailability, started, result)
    }

    async fn search_nearby(
        &self,
        request: Request<SearchNearbyRequest>,
    ) -> Result<Response<SearchNearbyResponse>, Status> {
        let started = Instant::now();
        let context = &self.context;
        let now_ms = context.scoring.now_ms();
        let result = match check_search(request.get_ref(), &context.limits(), now_ms) {
            Ok(query) if query.arrival_ms > now_ms && context.scoring.model().is_none() => {
                Err(ServiceError::NoModelForArrival)
            }
            Ok(query) => {
                self.search(&query, request.get_ref(), forwarded(&request), now_ms)
                    .await
            }
            Err(error) => Err(error.into()),
        };
        context.finish(Rpc::SearchNearby, started, result)
    }

    async fn list_replicas(
        &self,
        _request: Request<ListReplicasRequest>,
    ) -> Result<Response<ListReplicasResponse>, Status> {
        let started = Instant::now();
        let answer = self
            .router
            .as_ref()
            .map_or_else(ListReplicasResponse::default, |router| router.replicas());
        self.context
            .finish(Rpc::ListReplicas, started, Ok::<_, ServiceError>(answer))
    }

    async fn get_pricing_bands(
        &self,
        request: Request<GetPricingBandsRequest>,
    ) -> Result<Response<PricingBands>, Status> {
        let started = Instant::now();
        let context = &self.context;
        let now_ms = context.scoring.now_ms();
        let result = match check_pricing(request.get_ref(), context.scoring.topology()) {
            Ok(query) => {
                self.pricing(&query, request.get_ref(), forwarded(&request), now_ms)
                    .await
            }
            Err(error) => Err(error.into()),
        };
        context.finish(Rpc::GetPricingBands, started, result)
    }

    type WatchAvailabilityStream = WatchStream;

    async fn watch_availability(
        &self,
        request: Request<WatchAvailabilityRequest>,
    ) -> Result<Response<Self::WatchAvailabilityStream>, Status> {
        let started = Instant::now();
        let context = self.context.clone();
        let forwarded = forwarded(&request);
        let result = check_watch(
            request.get_ref(),
            context.scoring.topology(),
            &context.limits(),
        )
        .map_err(ServiceError::from)
        .and_then(|checked| {
            let permit = Arc::clone(&self.watches).try_acquire_owned().map_err(|_| {
                ServiceError::TooManyWatches {
                    max: context.limits.max_watch_streams,
                }
            })?;
            Ok((checked, OpenWatch::new(permit, context.metrics.as_ref())))
        })
        .and_then(|checked| {
            // A forwarded watch is the coordinating replica's relay: only for lots held here.
            if let Some(router) = self.router.as_ref().filter(|_| forwarded) {
                for lot in &checked.0.0 {
                    Self::only_held(router, *lot, &context.lot_id(*lot))?;
                }
            }
            Ok(checked)
        })
        .map(|((lots, horizons), open)| {
            let (sender, receiver) = tokio::sync::mpsc::channel(64);
            let watch = Watch {
                // Subscribed before the first answers are sent, so no change falls between.
                updates: context.scoring.subscribe(),
                context: context.clone(),
                router: self.router.clone(),
                relay: !forwarded,
                lots,
                horizons,
                sender,
            };
            tokio::spawn(async move {
                // Held until the stream ends: the client leaves, or the server shuts down.
                let _open = open;
                watch.run().await;
            });
            let stream: WatchStream =
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver));
            stream
        });
        context.finish(Rpc::WatchAvailability, started, result)
    }
}

/// One open `WatchAvailability` stream.
///
/// Alone, a server sends each watched lot's answer now and again whenever the scorer changes it.
/// One of several replicas ([`crate::replicas`]) sends its own lots' answers the same way and
/// relays the others': one upstream watch per owner (marked forwarded, so the owner sends only the
/// lots it holds), re-placed whenever ownership moves (checked on every event and every
/// [`WATCH_REPLACE`]): a lot that came here is answered from here at once, one that went to another
/// replica is watched there, one that is moving waits. An owner whose stream failed is asked again
/// after the retry delay.
struct Watch {
    context: ServiceContext,
    router: Option<Arc<Router>>,
    /// Relay other replicas' lots (false: a forwarded watch, which sends only what it holds).
    relay: bool,
    lots: Vec<LotIndex>,
    horizons: Vec<u32>,
    updates: tokio::sync::broadcast::Receiver<LotIndex>,
    sender: tokio::sync::mpsc::Sender<Result<LotAvailability, Status>>,
}

/// How often a watch looks again at who owns its lots.
const WATCH_REPLACE: std::time::Duration = std::time::Duration::from_millis(500);

/// An upstream watch on another replica: its lots, its generation (answers of older generations
/// are dropped), its task.
struct Upstream {
    address: String,
    lots: Vec<LotIndex>,
    generation: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watch {
    fn answer(&self, lot: LotIndex) -> Option<LotAvailability> {
        let now_ms = self.context.scoring.now_ms();
        self.context
            .answer(
                &AvailabilityQuery {
                    lot,
                    when: When::Horizons(self.horizons.clone()),
                    price_per_hour: None,
                },
                now_ms,
                false,
            )
            .ok()
    }

    /// Whether this replica answers `lot` from its own state now.
    fn here(&self, lot: LotIndex) -> bool {
        match &self.router {
            None => true,
            Some(router) if self.relay => router.route(lot) == Route::Local,
            Some(router) => router.holds(lot),
        }
    }

    /// Sends the answers of `lots` held here; false once the client has left.
    async fn send_here(&self, lots: &[LotIndex]) -> bool {
        for &lot in lots {
            if !self.here(lot) {
                continue;
            }
            if let Some(answer) = self.answer(lot)
                && self.sender.send(Ok(answer)).await.is_err()
            {
                return false;
            }
        }
        true
    }

    async fn run(mut self) {
        let (relay_sender, mut relayed) =
            tokio::sync::mpsc::channel::<(String, u64, Result<LotAvailability, Status>)>(64);
        let mut upstreams: BTreeMap<String, Upstream> = BTreeMap::new();
        let mut failed: BTreeMap<String, Instant> = BTreeMap::new();
        let mut placed_here: Vec<LotIndex> = Vec::new();
        let mut generation = 0u64;
        let relaying = self.relay && self.router.is_some();
        let mut replace = tokio::time::interval(WATCH_REPLACE);
        replace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Place every lot: here, at its owner, or nowhere while it moves.
            let here: Vec<LotIndex> = self
                .lots
                .iter()
                .copied()
                .filter(|lot| self.here(*lot))
                .collect();
            let came: Vec<LotIndex> = here
                .iter()
                .copied()
                .filter(|lot| !placed_here.contains(lot))
                .collect();
            placed_here = here;
            if !self.send_here(&came).await {
                return;
            }
            if let Some(router) = self.router.as_ref().filter(|_| self.relay) {
                let Placement { owners, .. } = router.place(self.lots.clone(), |lot| *lot);
                upstreams.retain(|id, upstream| {
                    owners.get(id).is_some_and(|(peer, lots)| {
                        *lots == upstream.lots && peer.address == upstream.address
                    })
                });
                for (id, (peer, lots)) in owners {
                    let waiting = failed
                        .get(&id)
                        .is_some_and(|at| at.elapsed() < router.retry_delay());
                    if upstreams.contains_key(&id) || waiting {
                        continue;
                    }
                    generation += 1;
                    let address = peer.address.clone();
                    let task = self.open_upstream(router, peer, &lots, generation, &relay_sender);
                    upstreams.insert(
                        id,
                        Upstream {
                            address,
                            lots,
                            generation,
                            task,
                        },
                    );
                }
            }
            // A client that left is noticed at once, not at the next change of its lots (which
            // may never come): its permit is given back.
            tokio::select! {
                () = self.sender.closed() => return,
                update = self.updates.recv() => {
                    let changed = match update {
                        Ok(lot) if self.lots.contains(&lot) => vec![lot],
                        Ok(_) => continue,
                        // Fell behind: everything watched may have changed.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.lots.clone(),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    if !self.send_here(&changed).await {
                        return;
                    }
                }
                Some((id, from, answer)) = relayed.recv() => {
                    let current = upstreams.get(&id).is_some_and(|up| up.generation == from);
                    match answer {
                        Ok(answer) if current => {
                            if self.sender.send(Ok(answer)).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(status) if current => {
                            tracing::debug!(replica = %id, status = %status, "watch upstream ended; asking again");
                            upstreams.remove(&id);
                            failed.insert(id, Instant::now());
                        }
                        Err(_) => {}
                    }
                }
                _ = replace.tick(), if relaying => {}
            }
        }
    }

    /// Opens a forwarded watch of `lots` on `peer`, relaying what it sends (tagged with
    /// `generation`) and its end.
    fn open_upstream(
        &self,
        router: &Arc<Router>,
        peer: Peer,
        lots: &[LotIndex],
        generation: u64,
        relay: &tokio::sync::mpsc::Sender<(String, u64, Result<LotAvailability, Status>)>,
    ) -> tokio::task::JoinHandle<()> {
        let request = router.forwarded(WatchAvailabilityRequest {
            lot_ids: lots.iter().map(|lot| self.context.lot_id(*lot)).collect(),
            horizon_minutes: self.horizons.clone(),
        });
        let client = router.client(&peer);
        let relay = relay.clone();
        let id = peer.replica_id;
        tokio::spawn(async move {
            let ended = match client {
                Err(reason) => Status::unavailable(reason),
                Ok(mut client) => match client.watch_availability(request).await {
                    Err(status) => status,
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        loop {
                            match stream.message().await {
                                Ok(Some(answer)) => {
                                    if relay
                                        .send((id.clone(), generation, Ok(answer)))
                                        .await
                                        .is_err()
                                    {
                                        return;
                                    }
                                }
                                Ok(None) => {
                                    break Status::unavailable("the owner ended the stream");
                                }
                                Err(status) => break status,
                            }
                        }
                    }
                },
            };
            let _ = relay.send((id, generation, Err(ended))).await;
        })
    }
}

/// The `Models` service.
#[derive(Debug, Clone)]
pub struct ModelsService {
    manager: Arc<ModelManager>,
    /// The bearer token activation needs (none: activation over gRPC is disabled).
    token: Option<String>,
    metrics: Option<ServingMetrics>,
}

impl ModelsService {
    /// The service over a model manager.
    pub fn new(
        manager: Arc<ModelManager>,
        token: Option<String>,
        metrics: Option<ServingMetrics>,
    ) -> Self {
        ModelsService {
            manager,
            token: token.filter(|token| !token.is_empty()),
            metrics,
        }
    }

    fn finish<T>(
        &self,
        rpc: Rpc,
        started: Instant,
        result: Result<T, ServiceError>,
    ) -> Result<Response<T>, Status> {
        finish(self.metrics.as_ref(), rpc, started, result)
    }

    fn info(&self, manifest: &Manifest) -> ModelInfo {
        let active = self.manager.scoring().model().is_some_and(|served| {
            served.manifest.card.name == manifest.card.name
                && served.manifest.version == manifest.version
        });
        model_info(manifest, active)
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), ServiceError> {
        let Some(expected) = &self.token else {
            return Err(ServiceError::ActivationDisabled);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match given {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(ServiceError::WrongToken),
            None => Err(ServiceError::MissingToken),
        }
    }

    /// A registry read that failed, for `ListModels` and `DescribeModel`; `asked`: the model name
    /// the client sent.
    fn registry_error(&self, error: ActivationError, asked: String) -> ServiceError {
        ServiceError::Registry {
            error: Box::new(error),
            asked,
            root: self.manager.registry().root().to_path_buf(),
        }
    }

    /// Checks, loads and activates the version asked for (blocking work on the blocking pool).
    async fn activate(
        &self,
        request: Request<ActivateModelRequest>,
    ) -> Result<ModelInfo, ServiceError> {
        self.authorize(&request)?;
        let ActivateModelRequest { name, version } = request.into_inner();
        if name.is_empty() {
            return Err(ServiceError::EmptyModelName);
        }
        let manager = Arc::clone(&self.manager);
        let asked = name.clone();
        let activated =
            tokio::task::spawn_blocking(move || manager.activate(&name, version)).await?;
        let served = activated.map_err(|error| ServiceError::Activation {
            error: Box::new(error),
            asked,
            root: self.manager.registry().root().to_path_buf(),
        })?;
        Ok(model_info(&served.manifest, true))
    }

    /// Loads, checks and shadows the version asked for (0: the newest).
    async fn shadow(
        &self,
        request: Request<ShadowModelRequest>,
    ) -> Result<ModelInfo, ServiceError> {
        self.authorize(&request)?;
        let ShadowModelRequest { name, version } = request.into_inner();
        if name.is_empty() {
            return Err(ServiceError::EmptyModelName);
        }
        if self.manager.scoring().model().is_none() {
            return Err(ServiceError::NoModelToShadow);
        }
        let manager = Arc::clone(&self.manager);
        let asked = name.clone();
        let shadowed = tokio::task::spawn_blocking(move || manager.shadow(&name, version)).await?;
        let served = shadowed.map_err(|error| ServiceError::Activation {
            error: Box::new(error),
            asked,
            root: self.manager.registry().root().to_path_buf(),
        })?;
        Ok(model_info(&served.manifest, false))
    }

    /// Reads the manifest of the version asked for (0: the newest).
    async fn describe(&self, request: DescribeModelRequest) -> Result<ModelInfo, ServiceError> {
        let DescribeModelRequest { name, version } = request;
        if name.is_empty() {
            return Err(ServiceError::EmptyModelName);
        }
        let manager = Arc::clone(&self.manager);
        let asked = name.clone();
        let manifest = tokio::task::spawn_blocking(move || {
            let registry = manager.registry();
            let version = match version {
                0 => registry
                    .latest(&name)?
                    .ok_or_else(|| ActivationError::NoVersion(name.clone()))?,
                version => version,
            };
            Ok::<_, ActivationError>(registry.manifest(&name, version)?)
        })
        .await?
        .map_err(|error| self.registry_error(error, asked))?;
        Ok(self.info(&manifest))
    }
}

/// Compares a presented token with the expected one in time independent of where they differ
/// (`subtle`; a length mismatch returns at once, which reveals only the length).
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    left.ct_eq(right).into()
}

/// A manifest as `ModelInfo`.
pub fn model_info(manifest: &Manifest, active: bool) -> ModelInfo {
    let kind = manifest.card.model_kind.clone();
    ModelInfo {
        name: manifest.card.name.clone(),
        version: manifest.version,
        trained_until_ms: manifest
            .card
            .training_end
            .succ_opt()
            .and_then(|day| day.and_hms_opt(0, 0, 0))
            .map_or(0, |midnight| midnight.and_utc().timestamp_millis()),
        feature_schema_hash: manifest.card.feature_schema_hash.clone(),
        sha256: manifest.model_sha256.clone(),
        active,
        metrics: manifest
            .card
            .metrics
            .iter()
            .filter(|metric| Some(metric.model.as_str()) == report_name(&kind))
            .map(|metric| HorizonMetrics {
                horizon_minutes: metric.horizon_minutes,
                mae_rate: metric.mae_rate,
                coverage_80: metric.coverage_80.unwrap_or(f64::NAN),
            })
            .collect(),
        kind,
    }
}

#[tonic::async_trait]
impl Models for ModelsService {
    async fn list_models(
        &self,
        _request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let started = Instant::now();
        let manager = Arc::clone(&self.manager);
        let result = tokio::task::spawn_blocking(move || manager.registry().list())
            .await
            .map_err(ServiceError::from)
            .and_then(|listed| {
                listed.map_err(|error| self.registry_error(error.into(), String::new()))
            })
            .map(|entries| {
                let models = entries
                    .iter()
                    .filter_map(|entry| entry.manifest.as_ref().ok())
                    .map(|manifest| self.info(manifest))
                    .collect();
                ListModelsResponse { models }
            });
        self.finish(Rpc::ListModels, started, result)
    }

    async fn describe_model(
        &self,
        request: Request<DescribeModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let started = Instant::now();
        let result = self.describe(request.into_inner()).await;
        self.finish(Rpc::DescribeModel, started, result)
    }

    async fn activate_model(
        &self,
        request: Request<ActivateModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let started = Instant::now();
        let result = self.activate(request).await;
        self.finish(Rpc::ActivateModel, started, result)
    }

    async fn shadow_model(
        &self,
        request: Request<ShadowModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let started = Instant::now();
        let result = self.shadow(request).await;
        self.finish(Rpc::ShadowModel, started, result)
    }

    async fn clear_shadow(
        &self,
        request: Request<ClearShadowRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let started = Instant::now();
        let result = self.authorize(&request).and_then(|()| {
            self.manager
                .scoring()
                .clear_shadow()
                .map(|served| model_info(&served.manifest, false))
                .ok_or(ServiceError::NoShadow)
        });
        self.finish(Rpc::ClearShadow, started, result)
    }

    async fn get_live_quality(
        &self,
        request: Request<GetLiveQualityRequest>,
    ) -> Result<Response<LiveQuality>, Status> {
        let started = Instant::now();
        let scoring = Arc::clone(self.manager.scoring());
        let request = request.into_inner();
        // The sums walk a day of scores of every lot under the scorer's lock: off the runtime.
        let result = tokio::task::spawn_blocking(move || live_quality(&scoring, &request))
            .await
            .map_err(ServiceError::from)
            .and_then(|quality| quality);
        self.finish(Rpc::GetLiveQuality, started, result)
    }
}

/// The active model's live accuracy, city-wide and for the lots asked, and what drifts; the same
/// for the candidate in shadow, if one is.
fn live_quality(
    scoring: &Scoring,
    request: &GetLiveQualityRequest,
) -> Result<LiveQuality, ServiceError> {
    let topology = scoring.topology();
    let asked = request
        .lot_ids
        .iter()
        .map(|lot_id| check_lot(topology, lot_id).map(|lot| lot as usize))
        .collect::<Result<Vec<usize>, _>>()?;
    let model = scoring.model().ok_or(ServiceError::NoModelForQuality)?;
    let (summary, drifting) = scoring.quality().ok_or(ServiceError::NoModelForQuality)?;
    let active = QualityParts::of(topology, &asked, &summary, &drifting);
    let shadow = scoring.shadow_quality().map(|report| {
        let parts = QualityParts::of(topology, &asked, &report.summary, &report.drifting);
        let active = QualityParts::of(topology, &[], &report.active_summary, &[]);
        ShadowQuality {
            model_name: report.model.manifest.card.name.clone(),
            model_version: report.model.manifest.version,
            city: parts.city,
            lots: parts.lots,
            drifting: parts.drifting,
            active_city: active.city,
        }
    });
    Ok(LiveQuality {
        model_name: model.manifest.card.name.clone(),
        model_version: model.manifest.version,
        as_of_ms: scoring.now_ms(),
        city: active.city,
        lots: active.lots,
        drifting: active.drifting,
        shadow,
    })
}

/// One model's live accuracy as the messages carry it.
struct QualityParts {
    city: Vec<WindowQuality>,
    lots: Vec<LotQuality>,
    drifting: Vec<Drift>,
}

impl QualityParts {
    fn of(
        topology: &TopologyIndex,
        asked: &[usize],
        summary: &[crate::quality::WindowQuality],
        drifting: &[crate::quality::Drifting],
    ) -> QualityParts {
        let window = |quality: &crate::quality::WindowQuality, tally: &crate::quality::Tally| {
            WindowQuality {
                horizon_minutes: quality.horizon_minutes,
                window: quality.window.to_owned(),
                pairs: tally.pairs,
                mae_rate: tally.mae(),
                coverage_80: tally.coverage(),
                backtest_mae_rate: quality.backtest_mae,
            }
        };
        let lot_id = |lot: usize| topology.lots()[lot].lot_id.clone();
        QualityParts {
            city: summary
                .iter()
                .map(|quality| window(quality, &quality.city))
                .collect(),
            lots: asked
                .iter()
                .map(|&lot| LotQuality {
                    lot_id: lot_id(lot),
                    windows: summary
                        .iter()
                        .map(|quality| window(quality, &quality.lots[lot]))
                        .collect(),
                })
                .collect(),
            drifting: drifting
                .iter()
                .map(|drift| Drift {
                    lot_id: drift.lot.map(lot_id).unwrap_or_default(),
                    horizon_minutes: drift.horizon_minutes,
                    live_mae_rate: drift.live_mae,
                    backtest_mae_rate: drift.backtest_mae,
                })
                .collect(),
        }
    }
}
