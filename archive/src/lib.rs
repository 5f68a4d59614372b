//! The warehouse <-> Kafka edge of parkcast.
//!
//! [`source`] reads a warehouse's events (a simulated city, an imported real day) in event-time order,
//! as the wire messages sensor gateways would send; `parkcast replay` produces them into the topics.
//! [`rollup`] rolls `fact_lot_occupancy` forward from slot readings as they stream in; the archiver
//! uses it to append what the live system saw to the warehouse, so the trainer learns from it;
//! [`dimensions`] gives that warehouse the served one's lots, slots and calendars first.

pub mod archiver;
pub mod dimensions;
pub mod replay;
pub mod rollup;
pub mod source;
