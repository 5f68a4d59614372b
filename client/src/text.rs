//! The answers as text for a terminal: tables in the house style of [`parkcast_tables`], one line per
//! watch update, a model's summary. Pure functions of the proto messages, so the exact text is tested
//! without a server.
//!
//! A forecast reads `6.2 [3–9] · 97%`: expected free slots, the 80% interval, the chance of at least
//! one free slot. Percentages never round a near-certainty to a certainty (`>99%`, `<1%`), because a
//! driver reads `100%` as a promise.

use std::collections::BTreeSet;

use chrono::DateTime;
use parkcast_proto::v1::{
    Drift, Forecast, HorizonMetrics, ListReplicasResponse, LiveQuality, LotAvailability,
    LotQuality, ModelInfo, NearbyLot, SlotType, WindowQuality,
};
use parkcast_tables::{Cell, new_table, right};

/// Unix ms as `2026-11-26 18:00:00 UTC`.
fn time_text(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The age of the data, coarsely (absent: the lot has had no event yet; a server from before the
/// field was optional sent `i64::MAX` for that).
fn age_text(ms: Option<i64>) -> String {
    let Some(ms) = ms.filter(|ms| (0..i64::MAX).contains(ms)) else {
        return "no data".to_owned();
    };
    let seconds = ms / 1_000;
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3_600 => format!("{} min", seconds / 60),
        3_600..86_400 => format!("{} h {} min", seconds / 3_600, seconds % 3_600 / 60),
        _ => format!("{} d {} h", seconds / 86_400, seconds % 86_400 / 3_600),
    }
}

/// A probability as a percentage that never rounds a near-certainty to a certainty.
fn percent_text(probability: f64) -> String {
    if probability.is_nan() {
        "n/a".to_owned()
    } else if probability >= 1.0 {
        "100%".to_owned()
    } else if probability >= 0.995 {
        ">99%".to_owned()
    } else if probability <= 0.0 {
        "0%".to_owned()
    } else if probability < 0.005 {
        "<1%".to_owned()
    } else {
        format!("{:.0}%", probability * 100.0)
    }
}

/// A forecast in a cell: expected free slots, the 80% interval, the chance of a free slot.
fn forecast_text(forecast: &Forecast) -> String {
    format!(
        "{:.1} [{:.0}–{:.0}] · {}",
        forecast.expected_free,
        forecast.free_low_80,
        forecast.free_high_80,
        percent_text(forecast.probability_any_free)
    )
}

/// `lot (name)`, or the id alone when the name says nothing more.
fn lot_label(lot: &LotAvailability) -> String {
    if lot.name.is_empty() || lot.name == lot.lot_id {
        lot.lot_id.clone()
    } else {
        format!("{} ({})", lot.lot_id, lot.name)
    }
}

/// The models that answered, once each: `model gbm v3`, or that none is active.
fn model_line<'a>(lots: impl IntoIterator<Item = &'a LotAvailability>) -> String {
    let models: BTreeSet<(&str, u32)> = lots
        .into_iter()
        .filter(|lot| !lot.model_name.is_empty())
        .map(|lot| (lot.model_name.as_str(), lot.model_version))
        .collect();
    if models.is_empty() {
        return "no model is active: live counts only".to_owned();
    }
    let named: Vec<String> = models
        .iter()
        .map(|(name, version)| format!("{name} v{version}"))
        .collect();
    format!("model {}", named.join(", "))
}

/// One line per stale lot, with the reason.
fn stale_lines<'a>(lots: impl IntoIterator<Item = &'a LotAvailability>) -> String {
    let mut lines = String::new();
    for lot in lots.into_iter().filter(|lot| lot.stale) {
        let reason = if lot.stale_reason.is_empty() {
            "no reason given"
        } else {
            lot.stale_reason.as_str()
        };
        lines.push_str(&format!(
            "stale: {}: {reason} (the numbers are the last known)\n",
            lot_label(lot)
        ));
    }
    lines
}

/// The availability of lots as a table, one forecast column per horizon answered, then the model
/// and a line per stale lot.
pub fn availability_table(lots: &[LotAvailability]) -> String {
    let horizons: BTreeSet<u32> = lots
        .iter()
        .flat_map(|lot| {
            lot.forecasts
                .iter()
                .map(|forecast| forecast.horizon_minutes)
        })
        .collect();
    let horizon_headers: Vec<String> = horizons
        .iter()
        .map(|minutes| format!("+{minutes} min"))
        .collect();
    let mut header = vec![
        "lot", "name", "capacity", "occupied", "free", "unknown", "data age",
    ];
    header.extend(horizon_headers.iter().map(String::as_str));
    let mut table = new_table(&header);
    for lot in lots {
        let mut row = vec![
            Cell::new(&lot.lot_id),
            Cell::new(&lot.name),
            right(lot.capacity),
            right(lot.occupied_now),
            right(lot.free_now),
            right(lot.unknown_now),
            right(age_text(lot.data_age_ms)),
        ];
        for minutes in &horizons {
            let forecast = lot
                .forecasts
                .iter()
                .find(|forecast| forecast.horizon_minutes == *minutes);
            row.push(right(
                forecast.map_or_else(|| "—".to_owned(), forecast_text),
            ));
        }
        table.add_row(row);
    }
    let mut text = format!("{}\n{table}\n", model_line(lots));
    if !horizons.is_empty() {
        text.push_str("forecasts: expected free slots [80% interval] · P(at least one free)\n");
    }
    for lot in lots {
        if let Some(price) = lot.price_per_hour {
            text.push_str(&format!(
                "what-if: {} at {price:.2}/h (priced {:.2}/h in the model's data): demand x{:.3}\n",
                lot.lot_id, lot.reference_price_per_hour, lot.demand_factor
            ));
        }
    }
    text.push_str(&stale_lines(lots));
    text
}

/// The availability of lots as [`availability_table`], after the arrival time when one was asked
/// for (`arrival_time_ms`, Unix ms; 0: none).
pub fn availability_text(lots: &[LotAvailability], arrival_time_ms: i64) -> String {
    let table = availability_table(lots);
    if arrival_time_ms == 0 {
        return table;
    }
    format!("arrival {}\n{table}", time_text(arrival_time_ms))
}

/// Search results as a table, best first; with a slot type, a column of the lots' slots of it.
pub fn search_table(found: &[NearbyLot], slot_type: Option<SlotType>) -> String {
    if found.is_empty() {
        return "no lot within the radius has an answer\n".to_owned();
    }
    let type_header = slot_type.map(|slot_type| format!("{} slots", slot_type_name(slot_type)));
    let mut header = vec![
        "rank",
        "lot",
        "name",
        "distance",
        "P(any free) at arrival",
        "free at arrival",
        "free now",
    ];
    header.extend(type_header.as_deref());
    header.push("data age");
    let mut table = new_table(&header);
    let lots: Vec<&LotAvailability> = found
        .iter()
        .filter_map(|nearby| nearby.availability.as_ref())
        .collect();
    for (rank, nearby) in found.iter().enumerate() {
        let availability = nearby.availability.as_ref();
        let at_arrival = availability
            .and_then(|lot| lot.forecasts.first())
            .map_or_else(
                || "—".to_owned(),
                |forecast| {
                    format!(
                        "{:.1} [{:.0}–{:.0}]",
                        forecast.expected_free, forecast.free_low_80, forecast.free_high_80
                    )
                },
            );
        let mut row = vec![
            right(rank + 1),
            Cell::new(availability.map_or("?", |lot| lot.lot_id.as_str())),
            Cell::new(availability.map_or("", |lot| lot.name.as_str())),
            right(distance_text(nearby.distance_m)),
            right(percent_text(nearby.probability_any_free_at_arrival)),
            right(at_arrival),
            right(availability.map_or_else(
                || "—".to_owned(),
                |lot| format!("{}/{}", lot.free_now, lot.capacity),
            )),
        ];
        if slot_type.is_some() {
            row.push(right(nearby.slots_of_type));
        }
        row.push(right(
            availability.map_or_else(|| "—".to_owned(), |lot| age_text(lot.data_age_ms)),
        ));
        table.add_row(row);
    }
    format!(
        "{}\n{table}\n{}",
        model_line(lots.iter().copied()),
        stale_lines(lots.iter().copied())
    )
}

/// `standard`, `ev`, ... as the CLI spells them.
fn slot_type_name(slot_type: SlotType) -> &'static str {
    match slot_type {
        SlotType::Unspecified => "any",
        SlotType::Standard => "standard",
        SlotType::Ev => "ev",
        SlotType::Disabled => "disabled",
        SlotType::Motorcycle => "motorcycle",
        SlotType::Loading => "loading",
    }
}

fn distance_text(metres: f64) -> String {
    if metres < 1_000.0 {
        format!("{metres:.0} m")
    } else {
        format!("{:.1} km", metres / 1_000.0)
    }
}

/// One watch update on one line.
pub fn watch_line(lot: &LotAvailability) -> String {
    let mut line = format!(
        "{}  {}  free {}/{} (occupied {}, unknown {}), data {}",
        time_text(lot.as_of_ms),
        lot_label(lot),
        lot.free_now,
        lot.capacity,
        lot.occupied_now,
        lot.unknown_now,
        match age_text(lot.data_age_ms).as_str() {
            "no data" => "none yet".to_owned(),
            age => format!("{age} old"),
        }
    );
    for forecast in &lot.forecasts {
        line.push_str(&format!(
            "; +{} min {}",
            forecast.horizon_minutes,
            forecast_text(forecast)
        ));
    }
    if !lot.model_name.is_empty() && !lot.forecasts.is_empty() {
        line.push_str(&format!(" ({} v{})", lot.model_name, lot.model_version));
    }
    if lot.stale {
        line.push_str(&format!("  STALE: {}", lot.stale_reason));
    }
    line
}

/// The date training data ends at (the exclusive end, Unix ms, as the day before it).
fn trained_until_text(ms: i64) -> String {
    if ms == 0 {
        return "unknown".to_owned();
    }
    DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |time| time.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// The live accuracy: the city's table, each asked lot's, and what drifts.
pub fn live_quality_text(quality: &LiveQuality) -> String {
    let mut text = format!(
        "{} v{}: forecasts scored on live actuals, as of {}\n",
        quality.model_name,
        quality.model_version,
        trained_until_text(quality.as_of_ms)
    );
    text.push_str(&model_quality_text(
        &quality.city,
        &quality.lots,
        &quality.drifting,
    ));
    if let Some(shadow) = &quality.shadow {
        text.push_str(&format!(
            "\ncandidate in shadow (scored on the same stream, never served): {} v{}\n",
            shadow.model_name, shadow.model_version
        ));
        text.push_str(&model_quality_text(
            &shadow.city,
            &shadow.lots,
            &shadow.drifting,
        ));
        let mut table = new_table(&[
            "horizon",
            "window",
            "active MAE",
            "shadow MAE",
            "shadow / active",
            "scored (active / shadow)",
        ]);
        // Over the same period: the active model since the candidate went into shadow.
        for (active, candidate) in shadow.active_city.iter().zip(&shadow.city) {
            if (active.horizon_minutes, &active.window)
                != (candidate.horizon_minutes, &candidate.window)
            {
                continue;
            }
            table.add_row(vec![
                right(format!("{} min", active.horizon_minutes)),
                Cell::new(&active.window),
                right(number_text(active.mae_rate, 4)),
                right(number_text(candidate.mae_rate, 4)),
                right(number_text(candidate.mae_rate / active.mae_rate, 2)),
                right(format!("{} / {}", active.pairs, candidate.pairs)),
            ]);
        }
        text.push_str(&format!(
            "shadow against active since the shadow started, city\n{table}\n"
        ));
    }
    text
}

/// One model's live figures: the city's table, each lot's, and what drifts.
fn model_quality_text(city: &[WindowQuality], lots: &[LotQuality], drifting: &[Drift]) -> String {
    let table = |windows: &[WindowQuality]| {
        let mut table = new_table(&[
            "horizon",
            "window",
            "scored",
            "live MAE",
            "backtest MAE",
            "live / backtest",
            "80% covers",
        ]);
        for window in windows {
            let ratio = window.mae_rate / window.backtest_mae_rate;
            table.add_row(vec![
                right(format!("{} min", window.horizon_minutes)),
                Cell::new(&window.window),
                right(window.pairs),
                right(number_text(window.mae_rate, 4)),
                right(number_text(window.backtest_mae_rate, 4)),
                right(number_text(ratio, 2)),
                right(percent_text(window.coverage_80)),
            ]);
        }
        format!("{table}\n")
    };
    let mut text = String::from("city\n");
    text.push_str(&table(city));
    for lot in lots {
        text.push_str(&format!("lot {}\n", lot.lot_id));
        text.push_str(&table(&lot.windows));
    }
    if drifting.is_empty() {
        text.push_str("no drift: no lot's live MAE stayed above the backtest's\n");
    }
    for drift in drifting {
        let what = if drift.lot_id.is_empty() {
            "the city".to_owned()
        } else {
            format!("lot {}", drift.lot_id)
        };
        text.push_str(&format!(
            "DRIFT: {what} at {} min, live MAE {:.4} in the last hour against {:.4} in the backtest\n",
            drift.horizon_minutes, drift.live_mae_rate, drift.backtest_mae_rate
        ));
    }
    text
}

/// A number with `decimals`, or `n/a`.
fn number_text(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "n/a".to_owned()
    }
}

fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Backtest figures on one line: `30m MAE 0.041 cov80 81%; ...`.
fn metrics_summary(metrics: &[HorizonMetrics]) -> String {
    let parts: Vec<String> = metrics
        .iter()
        .map(|metric| {
            format!(
                "{}m MAE {:.3} cov80 {}",
                metric.horizon_minutes,
                metric.mae_rate,
                percent_text(metric.coverage_80)
            )
        })
        .collect();
    parts.join("; ")
}

/// The replicas of the group as a table: one row per replica, its partitions and lots.
pub fn replicas_table(listing: &ListReplicasResponse) -> String {
    if listing.replicas.is_empty() {
        return "the server runs alone (replicas.enabled is off): it answers every lot itself\n"
            .to_owned();
    }
    let mut table = new_table(&["replica", "address", "alive", "partitions", "lots"]);
    for replica in &listing.replicas {
        let this = if replica.replica_id == listing.this_replica {
            " (this one)"
        } else {
            ""
        };
        let partitions: Vec<String> = replica
            .partitions
            .iter()
            .map(|partition| partition.partition.to_string())
            .collect();
        let lots: usize = replica
            .partitions
            .iter()
            .map(|partition| partition.lot_ids.len())
            .sum();
        table.add_row(vec![
            Cell::new(format!("{}{this}", replica.replica_id)),
            Cell::new(&replica.grpc_address),
            Cell::new(if replica.alive { "yes" } else { "no" }),
            Cell::new(partitions.join(",")),
            right(lots),
        ]);
    }
    format!("{table}\n")
}

/// The served models as a table.
pub fn models_table(models: &[ModelInfo]) -> String {
    if models.is_empty() {
        return "the server's registry holds no models\n".to_owned();
    }
    let mut table = new_table(&[
        "name",
        "version",
        "kind",
        "trained until",
        "active",
        "sha256",
        "backtest",
    ]);
    for model in models {
        table.add_row(vec![
            Cell::new(&model.name),
            right(model.version),
            Cell::new(&model.kind),
            Cell::new(trained_until_text(model.trained_until_ms)),
            Cell::new(if model.active { "yes" } else { "" }),
            Cell::new(short_hash(&model.sha256)),
            Cell::new(metrics_summary(&model.metrics)),
        ]);
    }
    format!("{table}\n")
}

/// One model: a summary line, checksums and its backtest figures per horizon.
pub fn model_text(model: &ModelInfo) -> String {
    let mut text = format!(
        "{} v{} — {} model, trained until {}{}\nsha256 {}\nfeature schema {}\n",
        model.name,
        model.version,
        model.kind,
        trained_until_text(model.trained_until_ms),
        if model.active {
            ", active (answering)"
        } else {
            ", not active"
        },
        model.sha256,
        model.feature_schema_hash,
    );
    if model.metrics.is_empty() {
        text.push_str("no backtest figures\n");
        return text;
    }
    let mut table = new_table(&["horizon", "MAE rate", "80% covers"]);
    for metric in &model.metrics {
        table.add_row(vec![
            right(format!("{} min", metric.horizon_minutes)),
            right(format!("{:.4}", metric.mae_rate)),
            right(percent_text(metric.coverage_80)),
        ]);
    }
    text.push_str(&format!("{table}\n"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{lot, stale_lot};

    #[test]
    fn the_replicas_table_marks_the_replica_that_answered_and_counts_lots() {
        use parkcast_proto::v1::{ReplicaInfo, ReplicaPartition};
        assert!(replicas_table(&ListReplicasResponse::default()).contains("runs alone"));
        let replica = |id: &str, alive, partitions: &[(i32, &[&str])]| ReplicaInfo {
            replica_id: id.to_owned(),
            grpc_address: format!("{id}:50051"),
            alive,
            partitions: partitions
                .iter()
                .map(|(partition, lots)| ReplicaPartition {
                    partition: *partition,
                    assigned_ms: 0,
                    lot_ids: lots.iter().map(|lot| (*lot).to_owned()).collect(),
                })
                .collect(),
            ..ReplicaInfo::default()
        };
        let text = replicas_table(&ListReplicasResponse {
            this_replica: "a".to_owned(),
            replicas: vec![
                replica("a", true, &[(0, &["x", "y"]), (2, &["z"])]),
                replica("b", false, &[(1, &[])]),
            ],
        });
        let row = |id: &str| {
            text.lines()
                .find(|line| line.contains(&format!("{id}:50051")))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(row("a").contains("a (this one)") && row("a").contains("0,2"));
        assert!(row("a").contains(" 3 ") || row("a").trim_end().ends_with("3 │"));
        assert!(row("b").contains("no") && !row("b").contains("this one"));
    }

    #[test]
    fn the_availability_table_shows_forecasts_per_horizon_the_model_once_and_why_a_lot_is_stale() {
        let text = availability_table(&[lot(), stale_lot()]);
        let expected = "\
model gbm v3
┌─────────┬───────────┬──────────┬──────────┬──────┬─────────┬──────────┬─────────────────┬──────────────────┐
│ lot     ┆ name      ┆ capacity ┆ occupied ┆ free ┆ unknown ┆ data age ┆ +30 min         ┆ +60 min          │
╞═════════╪═══════════╪══════════╪══════════╪══════╪═════════╪══════════╪═════════════════╪══════════════════╡
│ BHM-001 ┆ Bull Ring ┆       40 ┆       30 ┆    9 ┆       1 ┆    1 min ┆ 6.2 [3–9] · 97% ┆ 2.0 [0–5] · >99% │
│ BHM-002 ┆ BHM-002   ┆       10 ┆        0 ┆    0 ┆      10 ┆  no data ┆               — ┆                — │
└─────────┴───────────┴──────────┴──────────┴──────┴─────────┴──────────┴─────────────────┴──────────────────┘
forecasts: expected free slots [80% interval] · P(at least one free)
stale: BHM-002: no event received for this lot yet (the numbers are the last known)
";
        assert_eq!(text, expected, "got:\n{text}");
    }

    #[test]
    fn a_what_if_answer_says_its_price_and_the_demand_factor() {
        let priced = LotAvailability {
            price_per_hour: Some(6.0),
            reference_price_per_hour: 3.0,
            demand_factor: 0.758,
            ..lot()
        };
        let text = availability_table(&[priced]);
        assert!(
            text.contains(
                "what-if: BHM-001 at 6.00/h (priced 3.00/h in the model's data): demand x0.758"
            ),
            "{text}"
        );
        assert!(!availability_table(&[lot()]).contains("what-if"));
    }

    #[test]
    fn a_table_without_a_model_says_so() {
        let live_only = LotAvailability {
            model_name: String::new(),
            forecasts: Vec::new(),
            ..lot()
        };
        let text = availability_table(&[live_only]);
        assert!(text.starts_with("no model is active"), "{text}");
        assert!(!text.contains("forecasts:"), "{text}");
        assert!(!text.contains("stale:"), "{text}");
    }

    #[test]
    fn search_results_are_ranked_with_distance_and_chance() {
        let found = [
            NearbyLot {
                availability: Some(lot()),
                distance_m: 320.4,
                probability_any_free_at_arrival: 0.97,
                slots_of_type: 4,
            },
            NearbyLot {
                availability: Some(stale_lot()),
                distance_m: 1_250.0,
                probability_any_free_at_arrival: 0.0,
                slots_of_type: 1,
            },
        ];
        let text = search_table(&found, Some(SlotType::Ev));
        assert!(text.starts_with("model gbm v3\n"), "{text}");
        assert!(text.contains("ev slots"), "{text}");
        let first: Vec<&str> = text
            .lines()
            .find(|line| line.contains("BHM-001"))
            .expect("a row for BHM-001")
            .split(['│', '┆'])
            .map(str::trim)
            .filter(|cell| !cell.is_empty())
            .collect();
        assert_eq!(
            first,
            [
                "1",
                "BHM-001",
                "Bull Ring",
                "320 m",
                "97%",
                "6.2 [3–9]",
                "9/40",
                "4",
                "1 min"
            ]
        );
        assert!(text.contains("1.2 km"), "{text}");
        assert!(text.contains("stale: BHM-002"), "{text}");
        let any_type = search_table(&found, None);
        assert!(!any_type.contains("slots"), "{any_type}");
        assert_eq!(
            search_table(&[], None),
            "no lot within the radius has an answer\n"
        );
    }

    #[test]
    fn a_watch_update_fits_one_line() {
        let line = watch_line(&lot());
        assert_eq!(
            line,
            "2026-11-26 18:00:00 UTC  BHM-001 (Bull Ring)  free 9/40 (occupied 30, unknown 1), \
             data 1 min old; +30 min 6.2 [3–9] · 97%; +60 min 2.0 [0–5] · >99% (gbm v3)"
        );
        let stale = watch_line(&stale_lot());
        assert!(
            stale.ends_with("data none yet  STALE: no event received for this lot yet"),
            "{stale}"
        );
    }

    #[test]
    fn a_model_shows_its_figures_and_missing_coverage_as_n_a() {
        let model = ModelInfo {
            name: "gbm".to_owned(),
            version: 3,
            kind: "gbm".to_owned(),
            trained_until_ms: 1_795_651_200_000,
            feature_schema_hash: "0123456789abcdef0123".to_owned(),
            sha256: "fedcba98765432100000".to_owned(),
            active: true,
            metrics: vec![
                HorizonMetrics {
                    horizon_minutes: 30,
                    mae_rate: 0.0412,
                    coverage_80: 0.81,
                },
                HorizonMetrics {
                    horizon_minutes: 60,
                    mae_rate: 0.05,
                    coverage_80: f64::NAN,
                },
            ],
        };
        let text = model_text(&model);
        assert!(
            text.starts_with(
                "gbm v3 — gbm model, trained until 2026-11-26 00:00 UTC, active (answering)\n"
            ),
            "{text}"
        );
        assert!(text.contains("0.0412"), "{text}");
        assert!(text.contains("81%"), "{text}");
        assert!(text.contains("n/a"), "{text}");
        let listed = models_table(&[model]);
        assert!(listed.contains("fedcba987654 "), "{listed}");
        assert!(
            listed.contains("30m MAE 0.041 cov80 81%; 60m MAE 0.050 cov80 n/a"),
            "{listed}"
        );
    }

    #[test]
    fn probabilities_never_round_to_certainty() {
        assert_eq!(percent_text(0.999), ">99%");
        assert_eq!(percent_text(1.0), "100%");
        assert_eq!(percent_text(0.001), "<1%");
        assert_eq!(percent_text(0.0), "0%");
        assert_eq!(percent_text(0.5), "50%");
    }

    #[test]
    fn an_arrival_time_heads_the_table_only_when_asked_for() {
        let lots = [lot()];
        assert_eq!(availability_text(&lots, 0), availability_table(&lots));
        let text = availability_text(&lots, 1_795_716_000_000);
        assert_eq!(
            text.strip_prefix("arrival 2026-11-26 18:00:00 UTC\n"),
            Some(availability_table(&lots).as_str()),
            "{text}"
        );
    }
}
