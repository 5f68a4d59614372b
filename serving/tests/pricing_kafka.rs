//! The pricing feed on the real broker: a consumer reads `parkcast.forecast.v1` and checks every
//! band against the model itself (the same history scored independently through the model file),
//! then sees the bands again when another model version becomes active and when a lot's grid
//! advances; and a producer made fatal by a broker that lost its log is replaced.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parkcast_inference::registry::Registry;
use parkcast_kafka::testing::{OwnBroker, fresh_config, wait_until};
use parkcast_kafka::{KafkaConfig, create_topics};
use parkcast_proto::v1::ForecastBand;
use parkcast_serving::decode::SensorEvent;
use parkcast_serving::live::{LiveRules, LiveState};
use parkcast_serving::metrics::ServingMetrics;
use parkcast_serving::models::ModelManager;
use parkcast_serving::ownership::Holdings;
use parkcast_serving::pricing::PricingFeed;
use parkcast_serving::scoring::{Clock, LiveSource, Scoring, ScoringConfig, ServedModel};
use parkcast_serving::topology::TopologyIndex;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use common::{DAY_MS, STEP_MS, Source, history};

const NOW: i64 = 1_764_000_000_000;
const LOTS: [(&str, u32); 2] = [("north", 4), ("east", 20)];

fn consumer(kafka: &KafkaConfig) -> BaseConsumer {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", "pricing-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..2 {
        assignment
            .add_partition_offset(&kafka.topics.forecast, partition, Offset::Beginning)
            .expect("valid");
    }
    consumer.assign(&assignment).expect("assigned");
    consumer
}

/// Reads bands until `count` arrived or `wait` passed.
fn read_within(consumer: &BaseConsumer, count: usize, wait: Duration) -> Vec<ForecastBand> {
    let mut bands = Vec::new();
    let deadline = Instant::now() + wait;
    while bands.len() < count && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("a message");
            let band = ForecastBand::decode(message.payload().expect("a payload"))
                .expect("a ForecastBand");
            assert_eq!(message.key(), Some(band.lot_id.as_bytes()), "keyed by lot");
            bands.push(band);
        }
    }
    bands
}

fn read(consumer: &BaseConsumer, count: usize) -> Vec<ForecastBand> {
    read_within(consumer, count, Duration::from_secs(60))
}

/// Two lots with nine days of history, scored by the toy model's version 1 (kept in `registry`).
fn scored_lots(registry: &std::path::Path) -> (Arc<Source>, Arc<Scoring>, ModelManager) {
    let topology = TopologyIndex::new(LOTS.iter().map(|(lot, capacity)| {
        (
            (*lot).to_owned(),
            (0..*capacity).map(|slot| format!("{lot}-{slot}")).collect(),
        )
    }))
    .expect("valid");
    let live = LiveState::new(&topology, LiveRules::default());
    let source = Arc::new(Source::new(topology, live, NOW));
    let scoring = Arc::new(Scoring::new(
        Arc::clone(&source) as Arc<dyn LiveSource>,
        Clock::Fixed(NOW),
        ScoringConfig::default(),
    ));
    for (lot, capacity) in LOTS {
        scoring.seed(lot, history(capacity, NOW - 9 * DAY_MS, NOW), [], []);
    }
    common::publish(registry, "toy", &LOTS, NOW - DAY_MS);
    let manager = ModelManager::new(registry, Arc::clone(&scoring), None);
    manager.activate("toy", 1).expect("v1 activates");
    (source, scoring, manager)
}

/// North's grid advances (a reading after 00:07:30 closes the 00:00 instant), so its forecast
/// changes.
fn advance_north(source: &Source, scoring: &Scoring) {
    for (slot, seq, minutes) in [(0, 1, 1), (1, 1, 9)] {
        source
            .live()
            .apply_sensor(&SensorEvent {
                lot: 0,
                slot,
                occupied: true,
                heartbeat: false,
                seq,
                event_time_ms: NOW + minutes * 60_000,
                clamped: false,
            })
            .expect("applies");
    }
    scoring.tick();
}

#[test]
fn pricing_bands_match_the_model_and_follow_model_and_grid_changes() {
    parkcast_kafka::require_broker!();
    let kafka = fresh_config("pricing", 2);
    let registry = tempfile::tempdir().expect("temporary folder");
    let (source, scoring, manager) = scored_lots(registry.path());
    let metrics = ServingMetrics::register(&mut prometheus_client::registry::Registry::default());
    let consumer = consumer(&kafka);
    let feed = PricingFeed::start(Arc::clone(&scoring), &kafka, Some(metrics.clone()), None)
        .expect("the feed starts");

    // Every lot's three bands, checked against the model scoring the same history itself.
    let bands = read(&consumer, 6);
    assert_eq!(bands.len(), 6);
    let (manifest, bytes) = Registry::open(registry.path())
        .load("toy", 1, None)
        .expect("v1 loads");
    let model = ServedModel::decode(manifest, &bytes)
        .expect("v1 decodes")
        .model;
    let mut expected = BTreeMap::new();
    for (lot, capacity) in LOTS {
        let mut state = model.new_state(lot).expect("a known lot");
        for (instant, value) in history(capacity, NOW - 9 * DAY_MS, NOW) {
            state.push_value(instant, value);
        }
        let forecast = model.forecast(&state).expect("a forecast");
        assert_eq!(forecast.origin_ms, NOW - STEP_MS);
        for horizon in forecast.horizons {
            expected.insert(
                (lot.to_owned(), horizon.horizon_minutes),
                (horizon, capacity),
            );
        }
    }
    for band in &bands {
        let (horizon, capacity) = expected[&(band.lot_id.clone(), band.horizon_minutes)];
        let calibration = model.calibration(band.horizon_minutes).expect("calibrated");
        assert_eq!(band.expected_occupancy_rate, horizon.rate.clamp(0.0, 1.0));
        assert_eq!(
            band.probability_occupancy_at_least_80,
            calibration.probability_at_least(band.expected_occupancy_rate, 0.8)
        );
        assert_eq!(
            band.probability_occupancy_below_60,
            calibration.probability_below(band.expected_occupancy_rate, 0.6)
        );
        assert_eq!(
            (band.band_start_ms, band.band_end_ms - band.band_start_ms),
            (horizon.target_ms, STEP_MS)
        );
        assert_eq!((band.capacity, band.as_of_ms), (capacity, NOW));
        assert_eq!((band.model_name.as_str(), band.model_version), ("toy", 1));
        assert_eq!(band.schema_version, 1);
        assert_eq!(band.data_age_ms, None, "no live event yet");
    }

    // Another version: every lot's bands again, from it.
    common::publish(registry.path(), "toy", &LOTS, NOW);
    manager.activate("toy", 2).expect("v2 activates");
    let again = read(&consumer, 6);
    assert_eq!(again.len(), 6);
    assert!(again.iter().all(|band| band.model_version == 2));

    // North's grid advances: its bands again, from the new origin; east stays as it was.
    advance_north(&source, &scoring);
    let advanced = read(&consumer, 3);
    assert_eq!(advanced.len(), 3);
    assert!(advanced.iter().all(|band| band.lot_id == "north"));
    assert!(
        advanced
            .iter()
            .all(|band| band.band_start_ms == NOW + i64::from(band.horizon_minutes) * 60_000)
    );
    assert!(
        read_within(&consumer, 1, Duration::from_secs(1)).is_empty(),
        "east's forecast did not change, so it is not published again"
    );
    let sent = feed.stop();
    assert_eq!(sent, 15);
    assert!(metrics.pricing_messages.get() >= 12);
    assert_eq!(metrics.pricing_failures.get(), 0);
}

#[test]
fn a_replica_publishes_only_the_bands_of_the_lots_it_holds() {
    parkcast_kafka::require_broker!();
    let kafka = fresh_config("pricing-held", 2);
    let registry = tempfile::tempdir().expect("temporary folder");
    let (_source, scoring, _manager) = scored_lots(registry.path());
    // This replica holds north (lot 0, partition 0); east is another replica's.
    let held = Arc::new(Holdings::new(LOTS.len()));
    held.own(0, NOW);
    held.set_lot(0, 0);
    let consumer = consumer(&kafka);
    let feed = PricingFeed::start(Arc::clone(&scoring), &kafka, None, Some(held))
        .expect("the feed starts");
    let bands = read_within(&consumer, 6, Duration::from_secs(5));
    assert_eq!(bands.len(), 3, "{bands:?}");
    assert!(bands.iter().all(|band| band.lot_id == "north"));
    assert_eq!(feed.stop(), 3);
}

#[test]
fn a_fatal_pricing_producer_is_replaced_and_every_lot_published_again() {
    parkcast_kafka::require_broker!();
    let mut broker = OwnBroker::start();
    let kafka = broker.config("pricing-fatal");
    let topics = || {
        create_topics(&kafka, &kafka.topics.all(), 2, Duration::from_secs(10)).expect("the topics");
    };
    topics();
    let registry = tempfile::tempdir().expect("temporary folder");
    let (source, scoring, _manager) = scored_lots(registry.path());
    let metrics = ServingMetrics::register(&mut prometheus_client::registry::Registry::default());
    let feed = PricingFeed::start(Arc::clone(&scoring), &kafka, Some(metrics.clone()), None)
        .expect("the feed starts");
    assert_eq!(read(&consumer(&kafka), 6).len(), 6, "every lot's bands");
    assert!(wait_until(Duration::from_secs(30), || metrics
        .pricing_messages
        .get()
        == 6));

    // The broker loses its disk. North's next bands carry sequence numbers the broker never saw
    // (OutOfOrderSequenceNumber), librdkafka declares the producer fatal, and a fatal producer
    // refuses every later send.
    broker.restart_empty();
    topics();
    advance_north(&source, &scoring);
    let again = read(&consumer(&kafka), 6);
    assert_eq!(again.len(), 6, "every lot's bands again: {again:?}");
    assert_eq!(
        metrics.pricing_producer_recreated.get(),
        1,
        "the fatal producer was replaced"
    );
    let north: Vec<&ForecastBand> = again.iter().filter(|band| band.lot_id == "north").collect();
    assert_eq!(north.len(), 3);
    assert!(
        north
            .iter()
            .all(|band| band.band_start_ms == NOW + i64::from(band.horizon_minutes) * 60_000),
        "north's from its new origin"
    );
    assert_eq!(
        again.iter().filter(|band| band.lot_id == "east").count(),
        3,
        "east's again too: the broker lost them"
    );
    feed.stop();
}
