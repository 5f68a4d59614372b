//! The wire formats of parkcast: protobuf messages of package `parkcast.v1`.
//!
//! The `.proto` files under `proto/` are the contract with producers (sensor gateways, gate systems,
//! payment terminals) and consumers (the pricing service, the driver's app): `events.proto` (Kafka
//! event values), `forecast.proto` (the pricing feed) and `serving.proto` (the `Availability` and
//! `Models` gRPC services, with generated tonic servers and clients; the servers decode requests
//! with [`codec::RequestCodec`], so a body that is no request gets `INVALID_ARGUMENT`). Generated
//! types stay at the Kafka and gRPC edges: the crates that apply events convert them to domain
//! types in one module per edge.
//!
//! ```
//! use parkcast_proto::v1::{ReadingKind, SensorReading, SlotReport};
//! use prost::Message;
//!
//! let reading = SensorReading {
//!     schema_version: 1,
//!     lot_id: "sim:lot0001".into(),
//!     slot_id: "sim:lot0001:s0007".into(),
//!     report: SlotReport::Occupied as i32,
//!     kind: ReadingKind::Change as i32,
//!     sensor_seq: 42,
//!     event_time_ms: 1_764_000_000_000,
//! };
//! let bytes = reading.encode_to_vec();
//! assert_eq!(SensorReading::decode(bytes.as_slice())?, reading);
//! # Ok::<(), prost::DecodeError>(())
//! ```

pub mod codec;

/// Messages of `parkcast.v1`.
#[allow(missing_docs, clippy::doc_markdown, clippy::doc_lazy_continuation)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/parkcast.v1.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/parkcast.v1.serde.rs"));
}

/// The schema version producers write today.
pub const SCHEMA_VERSION: u32 = 1;

/// Encoded `FileDescriptorSet` of every parkcast proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/parkcast_descriptor.bin"));

/// Kafka topic names.
pub mod topics {
    /// Slot sensor readings.
    pub const SENSOR: &str = "parkcast.sensor.v1";
    /// Session entries and exits.
    pub const SESSION: &str = "parkcast.session.v1";
    /// Customer scans.
    pub const SCAN: &str = "parkcast.scan.v1";
    /// Payment slips.
    pub const PAYMENT: &str = "parkcast.payment.v1";
    /// Forecasts for the pricing service.
    pub const FORECAST: &str = "parkcast.forecast.v1";
    /// Messages that could not be applied.
    pub const DEADLETTER: &str = "parkcast.deadletter.v1";
}

/// A topic of the wire protocol: the one enum every crate names topics by. Its Kafka name comes
/// from the configuration (`parkcast_kafka::TopicNames::name`, which applies a prefix); the
/// defaults are [`topics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// [`v1::SensorReading`]s.
    Sensor,
    /// [`v1::SessionEvent`]s.
    Session,
    /// [`v1::CustomerScan`]s.
    Scan,
    /// [`v1::PaymentSlip`]s.
    Payment,
    /// Forecasts for the pricing service.
    Forecast,
    /// Messages that could not be applied.
    DeadLetter,
}

impl Topic {
    /// Every topic, in this order (`topic as usize` indexes it).
    pub const ALL: [Topic; 6] = [
        Topic::Sensor,
        Topic::Session,
        Topic::Scan,
        Topic::Payment,
        Topic::Forecast,
        Topic::DeadLetter,
    ];
    /// What the field produces and the archiver reads.
    pub const INPUTS: [Topic; 4] = [Topic::Sensor, Topic::Session, Topic::Scan, Topic::Payment];

    /// The default Kafka name ([`topics`]), without a prefix.
    pub fn default_name(self) -> &'static str {
        match self {
            Topic::Sensor => topics::SENSOR,
            Topic::Session => topics::SESSION,
            Topic::Scan => topics::SCAN,
            Topic::Payment => topics::PAYMENT,
            Topic::Forecast => topics::FORECAST,
            Topic::DeadLetter => topics::DEADLETTER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn garbage_bytes_do_not_decode_as_a_reading() {
        assert!(v1::SensorReading::decode(&[0xff, 0xff, 0xff][..]).is_err());
    }

    #[test]
    fn the_descriptor_set_names_every_message() {
        let descriptors = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
            .expect("descriptor set should decode");
        let names: Vec<_> = descriptors
            .file
            .iter()
            .flat_map(|file| file.message_type.iter())
            .filter_map(|message| message.name.clone())
            .collect();
        for expected in [
            "SensorReading",
            "SessionEvent",
            "CustomerScan",
            "PaymentSlip",
            "DeadLetter",
            "ForecastBand",
            "LotAvailability",
            "ModelInfo",
        ] {
            assert!(
                names.iter().any(|name| name == expected),
                "{expected} missing from {names:?}"
            );
        }
        let services: Vec<_> = descriptors
            .file
            .iter()
            .flat_map(|file| file.service.iter())
            .filter_map(|service| service.name.clone())
            .collect();
        assert_eq!(services, vec!["Availability", "Models"]);
    }
}
