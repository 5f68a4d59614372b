//! The online side of parkcast: Kafka ingestion into per-slot live state, scoring, the gRPC services
//! and the pricing feed.
//!
//! Today it holds the pure core of ingestion: [`decode`] turns Kafka message bytes into validated
//! events or a dead-letter reason, [`topology`] maps lot and slot ids to dense indices, and [`live`]
//! keeps every slot's state and each lot's aggregates. The Kafka consumer, recovery and the gRPC
//! services build on it (the live-ingestion and serving issues). It shares the status rules of
//! [`parkcast_features::occupancy`] with training and the wire formats of [`parkcast_proto`].
//!
//! ```
//! assert_eq!(parkcast_proto::topics::SENSOR, "parkcast.sensor.v1");
//! ```

pub mod decode;
pub mod live;
pub mod topology;

pub use parkcast_features as features;
pub use parkcast_proto as proto;
