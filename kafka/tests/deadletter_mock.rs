//! The dead-letter sink against librdkafka's mock cluster (in process), for faults the real test
//! broker does not make: a broker that refuses a letter for size although the budget said it fits
//! (a topic limit the broker did not tell), and a broker that never answers DescribeConfigs.

use std::time::{Duration, Instant};

use parkcast_kafka::{
    DeadLetterSink, KafkaConfig, MIN_BUDGET, RECORD_MARGIN, SourcePosition, TopicNames,
};
use parkcast_proto::v1::DeadLetter;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[test]
fn a_letter_the_broker_refuses_for_size_is_sent_again_smaller() {
    let cluster: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(1).expect("a mock cluster");
    let config = KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers(),
        topics: TopicNames::with_prefix("mock"),
        ..KafkaConfig::default()
    };
    cluster
        .create_topic(&config.topics.deadletter, 1, 1)
        .expect("the topic");
    // The mock cluster does not answer DescribeConfigs (the request times out): the sink must not
    // wait for it.
    let started = Instant::now();
    let mut sink = DeadLetterSink::new(&config).expect("the sink starts");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sink.budget().topic_limit, None);

    // The broker refuses the first two produce requests for size: the letter is cut to half its
    // budget each time (999,488 -> 499,744 -> 249,872 bytes) and then delivered.
    let too_large = RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
    cluster.request_errors(RDKafkaApiKey::Produce, &[too_large, too_large]);
    let original: Vec<u8> = (0..600_000).map(|at| (at % 251) as u8 | 0x80).collect();
    sink.send(
        SourcePosition {
            topic: "mock.parkcast.sensor.v1",
            partition: 0,
            offset: 7,
        },
        Some(b"lot-3"),
        &original,
        "too_large",
        "past max_message_bytes",
    )
    .expect("queues");
    sink.flush(Duration::from_secs(30))
        .expect("delivered once small enough: never an error for size");
    assert_eq!((sink.delivered(), sink.failed()), (1, 0));

    let consumer: BaseConsumer = config
        .client_config()
        .set("group.id", "mock-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a consumer");
    consumer
        .subscribe(&[&config.topics.deadletter])
        .expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        assert!(Instant::now() < deadline, "the letter should arrive");
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            break (
                message.key().unwrap_or_default().len(),
                message.payload().unwrap_or_default().to_vec(),
            );
        }
    };
    let (key_len, payload) = record;
    let budget = (1_000_000 - RECORD_MARGIN) / 4;
    assert!(budget > MIN_BUDGET);
    assert!(key_len + payload.len() <= budget, "{} bytes", payload.len());
    let letter = DeadLetter::decode(payload.as_slice()).expect("a DeadLetter");
    assert!(letter.original_value_truncated);
    assert_eq!(letter.original_value_size, original.len() as u64);
    assert!(original.starts_with(&letter.original_value));
    assert_eq!(letter.source_offset, 7);
}
