//! The online side of parkcast: Kafka ingestion into per-slot live state, scoring, the gRPC services
//! and the pricing feed.
//!
//! Ingestion, in data-flow order: [`ingest`] runs the Kafka consumer (consumer group, dead letters,
//! rebalancing); [`decode`] turns message bytes into validated events or a dead-letter reason;
//! [`topology`] maps lot and slot ids to dense indices; [`live`] keeps every slot's state and each
//! lot's aggregates; [`checkpoint`] makes that state survive restarts and partition moves, and
//! [`changelog`] the loss of the machine;
//! [`metrics`] counts all of it for Prometheus; [`ownership`] mirrors which partitions and lots
//! this replica owns for lock-free reads. For the gRPC services, [`requests`] checks requests
//! into queries or errors, [`scoring`] turns live state into ready answers with the active model,
//! [`models`] loads and checks model versions for it, [`grpc`] serves the answers, [`status`] turns
//! every refusal into its status code (the one conversion) and [`pricing`] publishes the answers per
//! time band for the pricing service; [`replicas`] lets the replicas of a consumer group answer
//! for each other (ownership advertised on a compacted topic, requests forwarded to the owner);
//! [`rest`] answers the same over HTTP as JSON (described by [`openapi`]) beside the live
//! operations page ([`ops`]);
//! [`server`] assembles all of it in start-up and shutdown order. It shares the status rules of
//! [`parkcast_features::occupancy`] with training and the wire formats of [`parkcast_proto`].
//!
//! ```
//! assert_eq!(parkcast_proto::topics::SENSOR, "parkcast.sensor.v1");
//! ```

pub mod background;
pub mod changelog;
pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod grpc;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod ops;
pub mod ownership;
pub mod pricing;
pub mod quality;
pub mod recompute;
pub mod replicas;
pub mod requests;
pub mod rest;
pub mod scoring;
pub mod server;
pub mod standby;
pub mod status;
pub mod topology;

pub use parkcast_features as features;
pub use parkcast_proto as proto;
