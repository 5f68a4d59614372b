//! `parkcast tune` on a small generated city: a seeded search of two trials on its validation days
//! writes a configuration that `parkcast train --config` accepts and records (manifest, config.toml,
//! report.md with the selection log); a configuration with a wrong key is refused, naming it once.

use crate::common;

use common::{import_town, parkcast, succeeded};

use parkcast_training::frozen::{ConfigRecord, LoadedConfig};
use parkcast_training::registry::Registry;

#[test]
fn tune_writes_a_configuration_that_train_records_and_a_wrong_key_is_named() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (warehouse, _) = import_town(dir.path());

    let out = dir.path().join("town-1.toml");
    let out_text = out.display().to_string();
    let tune = succeeded(&parkcast(&[
        "tune",
        "-w",
        &warehouse,
        "--source",
        "csv-town",
        "--trials",
        "2",
        "--seed",
        "3",
        "--ablation",
        "--out",
        &out_text,
    ]));
    assert!(
        tune.contains("validation days: the 14 before each window"),
        "{tune}"
    );
    assert!(tune.contains("winner: trial "), "{tune}");
    // The configuration's lenders are not in this warehouse: named with the command that adds
    // them, and the search runs without; the town's fits are small enough to have borrowed.
    assert!(
        tune.contains("csv-town: prior: none, though ")
            && tune.contains(
                "horizon fits had at most 50,000 rows of their own and would have borrowed \
                 (skipped birmingham: not in the warehouse; malaga: not in the warehouse); \
                 `parkcast import birmingham` and `parkcast import malaga` into this warehouse \
                 would lend rows"
            ),
        "{tune}"
    );
    assert!(tune.contains("without level features"), "{tune}");
    assert!(!tune.contains("2024-03-11..2024-03-17 test"), "{tune}");
    let text = std::fs::read_to_string(&out).expect("the candidate is written");
    let candidate = LoadedConfig::from_text("candidate", &text).expect("the candidate parses");
    assert_eq!(candidate.config.name, "town-1");
    assert!(
        candidate.config.selection.log.contains("| trial |"),
        "{text}"
    );
    assert!(
        candidate.config.selection.log.contains("Ablation"),
        "{text}"
    );
    assert!(
        candidate.config.selection.command.contains("tune"),
        "{text}"
    );
    assert_eq!(
        candidate.config.prior,
        LoadedConfig::embedded().config.prior,
        "the candidate keeps the prior it was tuned with"
    );

    // The validation-only backtest reports no test figure.
    let validation = succeeded(&parkcast(&[
        "backtest",
        "-w",
        &warehouse,
        "--source",
        "csv-town",
        "--models",
        "gbm",
        "--config",
        &out_text,
        "--validation-only",
        "--no-prior",
    ]));
    assert!(
        validation.contains("no test window was fitted or read"),
        "{validation}"
    );
    assert!(
        validation.contains("prior = none (--no-prior; the configuration lends rows from"),
        "{validation}"
    );
    assert!(!validation.contains("\nprior: "), "{validation}");
    assert!(!validation.contains("80% covers"), "{validation}");

    // train --config records the file, and an overriding flag is reported.
    let registry = dir.path().join("models");
    let registry_text = registry.display().to_string();
    let train = succeeded(&parkcast(&[
        "train",
        "-w",
        &warehouse,
        "--source",
        "csv-town",
        "--config",
        &out_text,
        "--gbm-bagging-seeds",
        "2",
        "--registry",
        &registry_text,
        "--force",
    ]));
    assert!(train.contains("configuration: town-1"), "{train}");
    let registry = Registry::open(&registry);
    let manifest = registry.manifest("csv-town", 1).expect("published");
    let record = ConfigRecord::from_hyperparameters(&manifest.card.hyperparameters)
        .expect("the manifest records the configuration");
    assert_eq!(record.name, "town-1");
    assert_eq!(record.sha256, candidate.sha256());
    assert_eq!(record.toml, text);
    assert_eq!(record.parse().expect("the record parses"), candidate.config);
    assert_eq!(record.overrides.len(), 1, "{:?}", record.overrides);
    assert!(record.overrides[0].starts_with("gbm.bagging_seeds = 2"));
    // The registry as `models list` and `models show --verify` print it; a version whose manifest
    // is unreadable is listed as broken rather than hidden.
    let broken = dir.path().join("models/csv-town/2");
    std::fs::create_dir_all(&broken).expect("writable");
    std::fs::write(broken.join("manifest.json"), "{ not json").expect("writable");
    let listed = succeeded(&parkcast(&["models", "--registry", &registry_text, "list"]));
    let rows: Vec<&str> = listed
        .lines()
        .filter(|line| line.contains("csv-town"))
        .collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(
        rows[0].contains("ok") && rows[0].contains("csv-town"),
        "{listed}"
    );
    assert!(rows[1].contains("broken:"), "{listed}");
    let shown = succeeded(&parkcast(&[
        "models",
        "--registry",
        &registry_text,
        "show",
        "csv-town",
        "1",
        "--verify",
    ]));
    assert!(shown.starts_with("csv-town v1 — "), "{shown}");
    assert!(
        shown.contains(&format!("sha256 {}", manifest.model_sha256)),
        "{shown}"
    );
    assert!(shown.contains("— verified"), "{shown}");
    assert!(shown.contains("MAE rate"), "{shown}");
    std::fs::remove_dir_all(&broken).expect("removable");
    let version_dir = dir.path().join("models/csv-town/1");
    assert_eq!(
        std::fs::read_to_string(version_dir.join("config.toml")).expect("config.toml"),
        text
    );
    let report = std::fs::read_to_string(version_dir.join("report.md")).expect("report.md");
    assert!(
        report.contains("Frozen configuration **town-1**"),
        "{report}"
    );
    assert!(report.contains(&candidate.sha256()), "{report}");
    assert!(
        report.contains("Overridden on the command line"),
        "{report}"
    );
    assert!(report.contains("### Selection log"), "{report}");
    assert!(report.contains("| trial |"), "{report}");

    // A typo in a key is refused before anything runs, and named.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replacen("min_data_in_leaf", "min_data_per_leaf", 1),
    )
    .expect("writable");
    let refused = parkcast(&[
        "backtest",
        "-w",
        &warehouse,
        "--source",
        "csv-town",
        "--config",
        &bad.display().to_string(),
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("min_data_per_leaf"), "{stderr}");
    // The cause (toml's message) is printed once, though the configuration error embeds it and
    // also exposes it as its source.
    assert_eq!(stderr.matches("unknown field").count(), 1, "{stderr}");
}
