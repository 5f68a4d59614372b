//! The answers as JSON, one object per message with the proto field names. The generated messages
//! do not derive serde (the proto crate stays free of it), so each is mapped field by field here;
//! a test pins every field, so a field added to the proto and not here is noticed.

use parkcast_proto::v1::{
    Drift, Forecast, HorizonMetrics, LiveQuality, LotAvailability, LotQuality, ModelInfo,
    NearbyLot, ReplicaInfo, WindowQuality,
};
use serde_json::{Value, json};

/// A forecast as JSON.
pub fn forecast_json(forecast: &Forecast) -> Value {
    json!({
        "target_time_ms": forecast.target_time_ms,
        "horizon_minutes": forecast.horizon_minutes,
        "expected_free": forecast.expected_free,
        "free_low_80": forecast.free_low_80,
        "free_high_80": forecast.free_high_80,
        "free_low_95": forecast.free_low_95,
        "free_high_95": forecast.free_high_95,
        "probability_any_free": forecast.probability_any_free,
    })
}

/// A lot's availability as JSON, forecasts included.
pub fn availability_json(lot: &LotAvailability) -> Value {
    json!({
        "lot_id": lot.lot_id,
        "name": lot.name,
        "capacity": lot.capacity,
        "as_of_ms": lot.as_of_ms,
        "data_age_ms": lot.data_age_ms,
        "stale": lot.stale,
        "stale_reason": lot.stale_reason,
        "occupied_now": lot.occupied_now,
        "free_now": lot.free_now,
        "unknown_now": lot.unknown_now,
        "model_name": lot.model_name,
        "model_version": lot.model_version,
        "forecasts": lot.forecasts.iter().map(forecast_json).collect::<Vec<_>>(),
        "price_per_hour": lot.price_per_hour,
        "reference_price_per_hour": lot.price_per_hour.map(|_| lot.reference_price_per_hour),
        "demand_factor": lot.price_per_hour.map(|_| lot.demand_factor),
    })
}

/// A search result as JSON (`availability` is null when the server left it out).
pub fn nearby_json(nearby: &NearbyLot) -> Value {
    json!({
        "availability": nearby.availability.as_ref().map(availability_json),
        "distance_m": nearby.distance_m,
        "probability_any_free_at_arrival": nearby.probability_any_free_at_arrival,
        "slots_of_type": nearby.slots_of_type,
    })
}

/// Backtest figures as JSON (a coverage the model has none of, NaN, is null).
pub fn horizon_metrics_json(metrics: &HorizonMetrics) -> Value {
    json!({
        "horizon_minutes": metrics.horizon_minutes,
        "mae_rate": metrics.mae_rate,
        "coverage_80": metrics.coverage_80,
    })
}

/// A replica as JSON; `this` marks the replica that answered.
pub fn replica_json(replica: &ReplicaInfo, this_replica: &str) -> Value {
    json!({
        "replica_id": replica.replica_id,
        "grpc_address": replica.grpc_address,
        "alive": replica.alive,
        "this": replica.replica_id == this_replica,
        "updated_ms": replica.updated_ms,
        "partitions": replica.partitions.iter().map(|partition| json!({
            "partition": partition.partition,
            "assigned_ms": partition.assigned_ms,
            "lot_ids": partition.lot_ids,
        })).collect::<Vec<_>>(),
    })
}

/// A model as JSON.
pub fn model_info_json(model: &ModelInfo) -> Value {
    json!({
        "name": model.name,
        "version": model.version,
        "kind": model.kind,
        "trained_until_ms": model.trained_until_ms,
        "feature_schema_hash": model.feature_schema_hash,
        "sha256": model.sha256,
        "active": model.active,
        "metrics": model.metrics.iter().map(horizon_metrics_json).collect::<Vec<_>>(),
    })
}

fn window_quality_json(window: &WindowQuality) -> Value {
    json!({
        "horizon_minutes": window.horizon_minutes,
        "window": window.window,
        "pairs": window.pairs,
        "mae_rate": window.mae_rate,
        "coverage_80": window.coverage_80,
        "backtest_mae_rate": window.backtest_mae_rate,
    })
}

/// The live accuracy as JSON (NaN, where nothing was scored, as null).
pub fn live_quality_json(quality: &LiveQuality) -> Value {
    let mut value = model_quality_json(&quality.city, &quality.lots, &quality.drifting);
    value["model_name"] = json!(quality.model_name);
    value["model_version"] = json!(quality.model_version);
    value["as_of_ms"] = json!(quality.as_of_ms);
    value["shadow"] = quality.shadow.as_ref().map_or(Value::Null, |shadow| {
        let mut value = model_quality_json(&shadow.city, &shadow.lots, &shadow.drifting);
        value["active_city"] = json!(
            shadow
                .active_city
                .iter()
                .map(window_quality_json)
                .collect::<Vec<_>>()
        );
        value["model_name"] = json!(shadow.model_name);
        value["model_version"] = json!(shadow.model_version);
        value
    });
    value
}

/// One model's live figures: city, lots and drift.
fn model_quality_json(city: &[WindowQuality], lots: &[LotQuality], drifting: &[Drift]) -> Value {
    json!({
        "city": city.iter().map(window_quality_json).collect::<Vec<_>>(),
        "lots": lots.iter().map(|lot| json!({
            "lot_id": lot.lot_id,
            "windows": lot.windows.iter().map(window_quality_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "drifting": drifting.iter().map(|drift| json!({
            "lot_id": if drift.lot_id.is_empty() { Value::Null } else { json!(drift.lot_id) },
            "horizon_minutes": drift.horizon_minutes,
            "live_mae_rate": drift.live_mae_rate,
            "backtest_mae_rate": drift.backtest_mae_rate,
        })).collect::<Vec<_>>(),
    })
}

/// Values as JSON lines: one compact object per line, each ending in a newline.
pub fn json_lines<T>(items: &[T], to_json: impl Fn(&T) -> Value) -> String {
    let mut lines = String::new();
    for item in items {
        lines.push_str(&to_json(item).to_string());
        lines.push('\n');
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{lot, stale_lot};

    #[test]
    fn the_json_of_an_availability_carries_every_field_and_forecast() {
        let value = availability_json(&lot());
        assert_eq!(
            value,
            json!({
                "lot_id": "BHM-001",
                "name": "Bull Ring",
                "capacity": 40,
                "as_of_ms": 1_795_716_000_000_i64,
                "data_age_ms": 75_000,
                "stale": false,
                "stale_reason": "",
                "occupied_now": 30,
                "free_now": 9,
                "unknown_now": 1,
                "model_name": "gbm",
                "model_version": 3,
                "forecasts": [
                    {
                        "target_time_ms": 1_795_717_800_000_i64,
                        "horizon_minutes": 30,
                        "expected_free": 6.25,
                        "free_low_80": 3.0,
                        "free_high_80": 9.4,
                        "free_low_95": 1.0,
                        "free_high_95": 12.0,
                        "probability_any_free": 0.97,
                    },
                    {
                        "target_time_ms": 1_795_719_600_000_i64,
                        "horizon_minutes": 60,
                        "expected_free": 2.0,
                        "free_low_80": 0.0,
                        "free_high_80": 5.0,
                        "free_low_95": 0.0,
                        "free_high_95": 8.0,
                        "probability_any_free": 0.999,
                    },
                ],
                "price_per_hour": null,
                "reference_price_per_hour": null,
                "demand_factor": null,
            })
        );
    }

    #[test]
    fn the_json_of_a_search_result_and_a_model_maps_every_field() {
        let nearby = NearbyLot {
            availability: Some(stale_lot()),
            distance_m: 321.5,
            probability_any_free_at_arrival: 0.5,
            slots_of_type: 2,
        };
        let value = nearby_json(&nearby);
        assert_eq!(value["distance_m"], json!(321.5));
        assert_eq!(value["probability_any_free_at_arrival"], json!(0.5));
        assert_eq!(value["slots_of_type"], json!(2));
        assert_eq!(value["availability"]["data_age_ms"], Value::Null);
        assert_eq!(
            nearby_json(&NearbyLot::default())["availability"],
            Value::Null
        );
        let model = ModelInfo {
            name: "gbm".to_owned(),
            version: 3,
            kind: "gbm".to_owned(),
            trained_until_ms: 1_795_651_200_000,
            feature_schema_hash: "abc".to_owned(),
            sha256: "def".to_owned(),
            active: true,
            metrics: vec![HorizonMetrics {
                horizon_minutes: 30,
                mae_rate: 0.04,
                coverage_80: f64::NAN,
            }],
        };
        assert_eq!(
            model_info_json(&model),
            json!({
                "name": "gbm",
                "version": 3,
                "kind": "gbm",
                "trained_until_ms": 1_795_651_200_000_i64,
                "feature_schema_hash": "abc",
                "sha256": "def",
                "active": true,
                "metrics": [{"horizon_minutes": 30, "mae_rate": 0.04, "coverage_80": null}],
            })
        );
    }

    #[test]
    fn json_lines_are_one_compact_object_per_line() {
        let lines = json_lines(&[lot(), stale_lot()], availability_json);
        let parsed: Vec<Value> = lines
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect();
        assert_eq!(
            parsed,
            [availability_json(&lot()), availability_json(&stale_lot())]
        );
        assert!(lines.ends_with("}\n") && !lines.contains(": "), "{lines}");
        assert_eq!(json_lines(&[], availability_json), "");
    }
}
