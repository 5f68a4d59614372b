//! `parkcast retrain` on simulated cities, without a server (the offline half of the gate): a
//! candidate trained after one lot's demand doubled beats the serving model on the days since it
//! was trained; a candidate that learned another city's lots is refused with the reasons; every
//! decision is appended to the registry's `decisions.jsonl`, and the serving model stays.

use crate::common;

use std::path::Path;

use common::{LOOP_TRAIN, copy_until, parkcast, succeeded};

/// A simulated city of 8 lots x 42 days from 1 September 2025, with `extra` flags.
fn simulate(out: &Path, extra: &[&str]) {
    let out = out.display().to_string();
    let mut args = vec![
        "simulate",
        "-o",
        &out,
        "--lots",
        "8",
        "--days",
        "42",
        "--start",
        "2025-09-01",
        "--interval",
        "5",
    ];
    args.extend_from_slice(extra);
    succeeded(&parkcast(&args));
}

fn retrain(city: &Path, registry: &Path, extra: &[&str]) -> String {
    let city = city.display().to_string();
    let registry = registry.display().to_string();
    let mut args = vec![
        "retrain",
        "-w",
        &city,
        "--registry",
        &registry,
        "--model",
        "simulated",
    ];
    args.extend_from_slice(&LOOP_TRAIN);
    args.extend_from_slice(extra);
    succeeded(&parkcast(&args))
}

fn decisions(registry: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(registry.join("decisions.jsonl"))
        .expect("the decisions")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[test]
fn the_gate_passes_a_candidate_that_learned_a_shift_and_refuses_one_that_learned_another_city() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let city = dir.path().join("city");
    // sim:lot0005 (a street zone) doubles its demand from Monday 6 October.
    simulate(&city, &["--demand-shift", "5:2025-10-06:2"]);
    let before = dir.path().join("before");
    copy_until(&city, &before, "2025-10-05");
    let registry = dir.path().join("models");
    let registry_arg = registry.display().to_string();
    let before_arg = before.display().to_string();
    let mut args = vec![
        "train",
        "-w",
        &before_arg,
        "--registry",
        &registry_arg,
        "--force",
    ];
    args.extend_from_slice(&LOOP_TRAIN);
    succeeded(&parkcast(&args));

    // A candidate trained on everything: its backtest over the days since the serving model was
    // trained (each day by models fitted before it) beats the serving model on them.
    let out = retrain(&city, &registry, &[]);
    assert!(out.contains("candidate: simulated-candidate v1"), "{out}");
    assert!(
        out.contains("latest days: 2025-10-06 to 2025-10-12"),
        "{out}"
    );
    assert!(out.contains(": passed (mean improvement +"), "{out}");
    assert!(
        out.contains(
            "decision: kept simulated v1: the candidate passed the offline gate, but no server"
        ),
        "{out}"
    );
    let first = &decisions(&registry)[0];
    assert_eq!(first["offline"]["passed"], true);
    assert_eq!(first["promoted"], false);
    assert_eq!(
        first["candidate"],
        serde_json::json!(["simulated-candidate", 1])
    );
    for horizon in first["offline"]["horizons"].as_array().expect("horizons") {
        assert!(horizon["candidate_mae"].as_f64() < horizon["serving_mae"].as_f64());
    }

    // A deliberately worse candidate: the same lots' names, learned on another city.
    let elsewhere = dir.path().join("elsewhere");
    simulate(&elsewhere, &["--seed", "7"]);
    let elsewhere_arg = elsewhere.display().to_string();
    let mut args = vec![
        "train",
        "-w",
        &elsewhere_arg,
        "--registry",
        &registry_arg,
        "--name",
        "simulated-candidate",
        "--force",
    ];
    args.extend_from_slice(&LOOP_TRAIN);
    succeeded(&parkcast(&args));
    let out = retrain(&city, &registry, &["--candidate-version", "2"]);
    assert!(out.contains(": FAILED (mean improvement -"), "{out}");
    assert!(
        out.contains("decision: kept simulated v1: the candidate failed the offline gate ("),
        "{out}"
    );
    let second = &decisions(&registry)[1];
    assert_eq!(second["offline"]["passed"], false);
    let reasons = second["offline"]["reasons"].as_array().expect("reasons");
    assert!(
        reasons.iter().any(|reason| reason
            .as_str()
            .is_some_and(|reason| reason.contains("worse than the serving model's"))),
        "{reasons:?}"
    );
    // The served line is untouched: still one version.
    assert!(registry.join("simulated/1").is_dir());
    assert!(!registry.join("simulated/2").exists());
}
