//! The live operations page at `/`, for the people who run the car parks: every lot on a plot of
//! its coordinates coloured by free slots now or P(a free slot) at a chosen horizon, a lot's last
//! day of actual occupancy and its forecast band ahead with its intervals, and the server's state (the active model, health,
//! ingestion lag and broker contact, dead letters per reason, live accuracy).
//!
//! The page is one HTML file with its script and styles inline (`serving/src/ops/index.html`),
//! embedded in the binary: no assets from the internet, no map tiles, no framework. It reads the
//! same JSON the REST face answers ([`crate::rest`]) plus one document of its own,
//! `GET /ops/overview`, which puts every lot's answer (the `LotAvailability` message, as
//! `GetAvailability` answers it) beside its coordinates and the server's state, and refreshes it
//! every two seconds. Numbers from a stale lot or a server that stopped answering are shown as
//! such (greyed, with the reason), never as fresh.

use serde_json::{Value, json};
use tonic::Status;

use crate::decode::Reason;
use crate::metrics::{IngestMetrics, InputTopic};
use crate::requests::{When, check_horizons, check_lot};
use crate::rest::Services;
use crate::status::ServiceError;

/// The page.
pub const PAGE: &str = include_str!("ops/index.html");

/// The overview the page refreshes: every lot's answer at `horizon_minutes` (none: now only) with
/// its coordinates, and the server's state.
pub fn overview(services: &Services, horizon_minutes: Option<u32>) -> Result<Value, Status> {
    let context = services.availability.context();
    let scoring = &context.scoring;
    let model = scoring.model();
    let horizons: Vec<u32> = model
        .as_ref()
        .map(|served| served.model.horizons_minutes())
        .unwrap_or_default();
    // The horizon checked as GetAvailability checks it; without a model, the live picture only.
    let when = match horizon_minutes {
        Some(minutes) if model.is_some() => When::Horizons(
            check_horizons(&[minutes], &context.limits())
                .map_err(|error| Status::from(ServiceError::from(error)))?,
        ),
        _ => When::Horizons(Vec::new()),
    };
    let mut lots = Vec::new();
    for (index, lot) in scoring.topology().lots().iter().enumerate() {
        let Ok(index) = u32::try_from(index) else {
            break;
        };
        let answer = context.lot_answer_when(index, &when);
        let info = context.directory.get(index);
        lots.push(json!({
            "lotId": lot.lot_id,
            "latitude": info.and_then(|info| info.latitude),
            "longitude": info.and_then(|info| info.longitude),
            "availability": crate::rest::to_json(&answer)
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes))
                .map_err(|error| Status::internal(format!("an answer did not encode: {error}")))?,
        }));
    }
    Ok(json!({
        "asOfMs": scoring.now_ms().to_string(),
        "model": model.as_ref().map(|served| json!({
            "name": served.manifest.card.name,
            "version": served.manifest.version,
            "horizonsMinutes": horizons,
        })),
        "staleReason": scoring.stale_reason(),
        "horizonMinutes": horizon_minutes,
        "ingestion": services.ingest.as_ref().map(ingestion),
        "lots": lots,
    }))
}

/// Hours of history the page may ask for: the features keep a little over a week.
pub const MAX_HISTORY_HOURS: u32 = 168;

/// Lot `lot_id`'s actual occupancy over the last `hours` (by the serving clock), as free slots per
/// grid instant: what the lot's panel draws left of "now".
pub fn history(services: &Services, lot_id: &str, hours: u32) -> Result<Value, Status> {
    if !(1..=MAX_HISTORY_HOURS).contains(&hours) {
        return Err(Status::invalid_argument(format!(
            "hours {hours} is out of range: 1 to {MAX_HISTORY_HOURS}"
        )));
    }
    let context = services.availability.context();
    let scoring = &context.scoring;
    let lot = check_lot(scoring.topology(), lot_id)
        .map_err(|error| Status::from(ServiceError::from(error)))?;
    let now_ms = scoring.now_ms();
    let since_ms = now_ms - i64::from(hours) * 3_600_000;
    let points: Vec<Value> = scoring
        .recent_grid(lot, since_ms)
        .into_iter()
        .filter(|(instant_ms, _)| *instant_ms <= now_ms)
        .map(|(instant_ms, value)| {
            json!({
                "timeMs": instant_ms.to_string(),
                "free": (value.capacity - value.occupied).max(0.0),
                "capacity": value.capacity,
            })
        })
        .collect();
    Ok(json!({
        "lotId": lot_id,
        "asOfMs": now_ms.to_string(),
        "hours": hours,
        "points": points,
    }))
}

/// Ingestion's state from its metrics: lag, broker contact, the consumer, dead letters per reason.
fn ingestion(metrics: &IngestMetrics) -> Value {
    let dead_letters: serde_json::Map<String, Value> = Reason::ALL
        .iter()
        .map(|reason| {
            let count: u64 = InputTopic::ALL
                .iter()
                .map(|topic| metrics.rejected_count(*topic, *reason))
                .sum();
            (reason.code().to_owned(), json!(count))
        })
        .collect();
    json!({
        "lagMessages": metrics.lag_messages.get(),
        "brokerContactAgeMs": metrics.broker_contact_age_ms.get(),
        "consumerDown": metrics.consumer_down.get() != 0,
        "deadLetters": dead_letters,
        "handled": metrics.handled(),
    })
}
