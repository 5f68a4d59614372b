//! The pricing feed: every lot's forecast per time band on `parkcast.forecast.v1`, for an
//! SFpark-style pricing rule (raise where P(occupancy >= 80%) is high, lower where the lot stays
//! below 60%).
//!
//! A band is one of the model's horizons: `[target, target + step)` from the forecast's origin
//! (horizons reach 7 days when the model was trained to). A lot's bands are published whenever its
//! forecast changes: a new grid value moved the origin, or another model became active. Messages
//! are `ForecastBand` (see `proto/parkcast/v1/forecast.proto`, documented for the pricing team),
//! keyed by lot id so one lot's bands stay ordered; the newest message for a (lot, band start)
//! wins. Delivery is counted (`parkcast_serving_pricing_messages_total`, `..._failures_total`);
//! the feed never blocks scoring: it runs on its own thread and reads the ready answers.
//!
//! The producer is idempotent, so a broker that lost writes it had acknowledged (one back with an
//! empty log) makes librdkafka declare it fatal (`OutOfOrderSequenceNumber`), and a fatal producer
//! refuses every later send. The feed then replaces it with a new one from the same config
//! ([`parkcast_kafka::RecoveringProducer`], counted in
//! `parkcast_serving_pricing_producer_recreated_total`) and publishes every lot's bands again from
//! the current answers: the bands the dead producer did not deliver, and those the broker lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parkcast_kafka::{CountingContext, KafkaConfig, RecoveringProducer, send_with_backpressure};
use parkcast_proto::v1::ForecastBand;
use prost::Message as _;
use rdkafka::producer::{BaseRecord, Producer, PurgeConfig};
use tokio::sync::broadcast::error::TryRecvError;

use crate::metrics::ServingMetrics;
use crate::ownership::Holdings;
use crate::scoring::{LotAnswer, Scoring};
use crate::topology::LotIndex;

/// Version of the `ForecastBand` fields this producer fills.
pub const BAND_SCHEMA_VERSION: u32 = 1;

/// The bands of one lot's ready answer, computed at `as_of_ms`; empty without a forecast.
pub fn bands(lot_id: &str, capacity: u32, answer: &LotAnswer, as_of_ms: i64) -> Vec<ForecastBand> {
    bands_scaled(lot_id, capacity, answer, as_of_ms, 1.0)
}

/// [`bands`] with demand scaled by `demand_factor` (a what-if price's): each band's expected rate
/// times the factor (at most full), its probabilities from the same calibrated distribution.
pub fn bands_scaled(
    lot_id: &str,
    capacity: u32,
    answer: &LotAnswer,
    as_of_ms: i64,
    demand_factor: f64,
) -> Vec<ForecastBand> {
    let (Some(forecast), Some(served)) = (&answer.forecast, &answer.model) else {
        return Vec::new();
    };
    let step_ms = i64::from(served.model.step_minutes()) * 60_000;
    let data_age_ms = answer.data_age_ms(as_of_ms);
    forecast
        .horizons
        .iter()
        .filter_map(|horizon| {
            // Scaled as the app's answers are: one calibrated distribution behind both.
            let calibration = served
                .model
                .calibration_for(lot_id, horizon.horizon_minutes, horizon.target_ms)?
                .scaled(horizon.interval_scale);
            let rate = (horizon.rate * demand_factor).clamp(0.0, 1.0);
            Some(ForecastBand {
                schema_version: BAND_SCHEMA_VERSION,
                lot_id: lot_id.to_owned(),
                as_of_ms,
                band_start_ms: horizon.target_ms,
                band_end_ms: horizon.target_ms + step_ms,
                horizon_minutes: horizon.horizon_minutes,
                expected_occupancy_rate: rate,
                probability_occupancy_at_least_80: calibration.probability_at_least(rate, 0.8),
                probability_occupancy_below_60: calibration.probability_below(rate, 0.6),
                model_name: served.manifest.card.name.clone(),
                model_version: served.manifest.version,
                capacity,
                data_age_ms,
            })
        })
        .collect()
}

/// Errors of the pricing feed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PricingError {
    /// The producer could not be created.
    #[error("pricing feed producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The thread could not start.
    #[error("pricing feed thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A running pricing feed.
#[derive(Debug)]
pub struct PricingFeed {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl PricingFeed {
    /// Starts publishing every lot's bands, then each lot's again whenever its forecast changes.
    /// With `only_held` (one replica of several), only the lots this replica holds: another
    /// replica's lot has no live data here, and its bands from this replica's history-only forecast
    /// would overwrite the owner's (the newest band wins).
    pub fn start(
        scoring: Arc<Scoring>,
        kafka: &KafkaConfig,
        metrics: Option<ServingMetrics>,
        only_held: Option<Arc<Holdings>>,
    ) -> Result<PricingFeed, PricingError> {
        let context = CountingContext::default();
        let counts = Arc::clone(&context.counts);
        let mut producer = RecoveringProducer::new(kafka.producer_config(), context, "pricing")?;
        let topic = kafka.topics.forecast.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::clone(&stop);
        let mut updates = scoring.subscribe();
        let thread = std::thread::Builder::new()
            .name("parkcast-pricing".to_owned())
            .spawn(move || {
                let lots = scoring.topology().lots().len();
                let every_lot = || -> Vec<LotIndex> {
                    (0..lots)
                        .filter_map(|lot| LotIndex::try_from(lot).ok())
                        .collect()
                };
                // The (origin, model version) last published per lot.
                let mut published: Vec<Option<(i64, u32)>> = vec![None; lots];
                let mut pending = every_lot();
                let mut sent = 0u64;
                let mut failed_to_queue = 0u64;
                let (mut delivered_seen, mut failed_seen) = (0, 0);
                let mut count_deliveries = || {
                    if let Some(metrics) = &metrics {
                        let (delivered, failed) = (counts.delivered(), counts.failed());
                        metrics.pricing_messages.inc_by(delivered - delivered_seen);
                        metrics.pricing_failures.inc_by(failed - failed_seen);
                        (delivered_seen, failed_seen) = (delivered, failed);
                    }
                };
                while !running.load(Ordering::Relaxed) {
                    loop {
                        match updates.try_recv() {
                            Ok(lot) => pending.push(lot),
                            Err(TryRecvError::Lagged(_)) => pending = every_lot(),
                            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                        }
                    }
                    pending.sort_unstable();
                    pending.dedup();
                    let now_ms = scoring.now_ms();
                    'lots: for lot in pending.drain(..) {
                        if only_held.as_ref().is_some_and(|held| !held.holds(lot)) {
                            continue;
                        }
                        let answer = scoring.answer(lot);
                        let key = answer.forecast.as_ref().zip(answer.model.as_ref()).map(
                            |(forecast, served)| (forecast.origin_ms, served.manifest.version),
                        );
                        if key.is_none() || published[lot as usize] == key {
                            continue;
                        }
                        let topology = &scoring.topology().lots()[lot as usize];
                        for band in bands(&topology.lot_id, topology.capacity, &answer, now_ms) {
                            let payload = band.encode_to_vec();
                            let record = BaseRecord::to(&topic)
                                .key(topology.lot_id.as_bytes())
                                .payload(payload.as_slice());
                            match send_with_backpressure(producer.producer(), record) {
                                Ok(()) => sent += 1,
                                // Replaced below; then every lot is published again.
                                Err(_) if producer.fatal_error().is_some() => break 'lots,
                                Err(error) => {
                                    tracing::warn!(error = %error, "pricing band not queued");
                                    failed_to_queue += 1;
                                }
                            }
                        }
                        published[lot as usize] = key;
                    }
                    count_deliveries();
                    match producer.recover() {
                        Ok(None) => {}
                        Ok(Some(_)) => {
                            if let Some(metrics) = &metrics {
                                metrics.pricing_producer_recreated.inc();
                            }
                            published.fill(None);
                            pending = every_lot();
                            continue;
                        }
                        Err(error) => {
                            tracing::warn!(error = %error, "could not replace the fatal pricing producer; trying again");
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // A few seconds for what is queued, then drop the rest: a forecast is replaced by
                // the next one anyway, and a broker that is gone must not hold the shutdown.
                let producer = producer.producer();
                if let Err(error) = producer.flush(Duration::from_secs(5)) {
                    tracing::warn!(error = %error, "pricing feed not flushed; dropping the rest");
                    producer.purge(PurgeConfig::default().queue().inflight());
                    let _ = producer.flush(Duration::from_secs(1));
                }
                count_deliveries();
                if let Some(metrics) = &metrics {
                    metrics.pricing_failures.inc_by(failed_to_queue);
                }
                tracing::debug!("pricing producer flushed; closing it");
                sent
            })?;
        Ok(PricingFeed {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops after flushing what was queued; returns the messages queued over the feed's life.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or(0)
    }
}

impl Drop for PricingFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
