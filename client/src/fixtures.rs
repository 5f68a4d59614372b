//! Messages the rendering tests share: a lot with forecasts at two horizons, and a stale lot that has
//! had no event yet.

use parkcast_proto::v1::{Forecast, LotAvailability};

/// A lot with 9 of 40 slots free and forecasts at 30 and 60 minutes.
pub fn lot() -> LotAvailability {
    LotAvailability {
        lot_id: "BHM-001".to_owned(),
        name: "Bull Ring".to_owned(),
        capacity: 40,
        as_of_ms: 1_795_716_000_000,
        data_age_ms: Some(75_000),
        stale: false,
        stale_reason: String::new(),
        occupied_now: 30,
        free_now: 9,
        unknown_now: 1,
        model_name: "gbm".to_owned(),
        model_version: 3,
        forecasts: vec![
            Forecast {
                target_time_ms: 1_795_717_800_000,
                horizon_minutes: 30,
                expected_free: 6.25,
                free_low_80: 3.0,
                free_high_80: 9.4,
                free_low_95: 1.0,
                free_high_95: 12.0,
                probability_any_free: 0.97,
            },
            Forecast {
                target_time_ms: 1_795_719_600_000,
                horizon_minutes: 60,
                expected_free: 2.0,
                free_low_80: 0.0,
                free_high_80: 5.0,
                free_low_95: 0.0,
                free_high_95: 8.0,
                probability_any_free: 0.999,
            },
        ],
        price_per_hour: None,
        reference_price_per_hour: 0.0,
        demand_factor: 1.0,
    }
}

/// A stale lot: no event yet, so every slot is unknown.
pub fn stale_lot() -> LotAvailability {
    LotAvailability {
        lot_id: "BHM-002".to_owned(),
        name: "BHM-002".to_owned(),
        capacity: 10,
        data_age_ms: None,
        stale: true,
        stale_reason: "no event received for this lot yet".to_owned(),
        unknown_now: 10,
        model_name: "gbm".to_owned(),
        model_version: 3,
        ..LotAvailability::default()
    }
}
