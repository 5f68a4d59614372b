//! The online side of parkcast: Kafka ingestion into per-slot live state, scoring, the gRPC services
//! and the pricing feed.
//!
//! This crate is the seam where the live system will sit (ingestion and recovery in the live-ingestion
//! issue, gRPC and scoring in the serving issue). What it builds on exists already and is shared with
//! training: the status rules of [`parkcast_features::occupancy`] and the wire formats of
//! [`parkcast_proto`].
//!
//! ```
//! assert_eq!(parkcast_proto::topics::SENSOR, "parkcast.sensor.v1");
//! ```

pub use parkcast_features as features;
pub use parkcast_proto as proto;
