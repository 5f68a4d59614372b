//! Training matrices built in shards: `parkcast features plan`, one `features build --shard I/N`
//! per shard, then `parkcast train --matrix DIR`, publish the same model file, bit for bit, as a
//! `train` that built its rows itself. Run by Apache Spark with two executor processes on loopback
//! (scripts/spark/features.py) when the test command has installed it; the refusals (a shard
//! missing, a plan made for other flags) without it.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{import_town, parkcast, succeeded};

/// The protocol flags every run of these tests shares: one lot per group, so the town's two lots
/// make two groups, one per shard.
fn protocol(warehouse: &str) -> Vec<&str> {
    vec![
        "-w",
        warehouse,
        "--source",
        "csv-town",
        "--group-lots",
        "1",
        "--gbm-iterations",
        "40",
    ]
}

/// `train` with `extra` flags into the registry `registry`; returns the published model file.
fn train(warehouse: &str, registry: &Path, extra: &[&str]) -> Vec<u8> {
    let registry_text = registry.display().to_string();
    let mut args = vec!["train"];
    args.extend(protocol(warehouse));
    args.extend(["--registry", &registry_text, "--force"]);
    args.extend(extra);
    let stdout = succeeded(&parkcast(&args));
    assert!(stdout.contains("published csv-town v1"), "{stdout}");
    std::fs::read(registry.join("csv-town/1/model.bin")).expect("the model file is published")
}

fn plan(warehouse: &str, matrix: &str, extra: &[&str]) {
    let mut args = vec!["features", "plan"];
    args.extend(protocol(warehouse));
    args.extend(["--out", matrix]);
    args.extend(extra);
    let stdout = succeeded(&parkcast(&args));
    assert!(
        stdout.contains("over 2 lots in 2 groups of up to 1"),
        "{stdout}"
    );
}

/// `train --matrix` on `matrix` publishes `single` (the model file of a run that built its own
/// rows) bit for bit; `built_by` names who built the matrix in the failure message.
fn assert_trains_like(warehouse: &str, dir: &Path, matrix: &str, single: &[u8], built_by: &str) {
    let sharded = train(warehouse, &dir.join("sharded"), &["--matrix", matrix]);
    assert!(
        single == sharded.as_slice(),
        "the model fitted on {built_by} differs from the single-machine one"
    );
}

fn build(warehouse: &str, matrix: &str, shard: &str) -> String {
    succeeded(&parkcast(&[
        "features", "build", "-w", warehouse, "--matrix", matrix, "--shard", shard,
    ]))
}

#[test]
fn a_sharded_matrix_is_refused_until_every_shard_finished_and_when_planned_for_other_flags() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (warehouse, _) = import_town(dir.path());
    let matrix = dir.path().join("matrix").display().to_string();
    plan(&warehouse, &matrix, &[]);
    let built = build(&warehouse, &matrix, "0/2");
    assert!(built.starts_with("shard 0/2: "), "{built}");

    let registry = dir.path().join("models").display().to_string();
    let mut args = vec!["train"];
    args.extend(protocol(&warehouse));
    args.extend(["--registry", &registry, "--force", "--matrix", &matrix]);
    let refused = parkcast(&args);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("shards not finished: 1/2"), "{stderr}");

    // A plan made for other flags is named, not used.
    build(&warehouse, &matrix, "1/2");
    plan(&warehouse, &matrix, &["--max-training-rows", "1000"]);
    build(&warehouse, &matrix, "0/2");
    build(&warehouse, &matrix, "1/2");
    let refused = parkcast(&args);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("another row cap"), "{stderr}");

    let bad = parkcast(&[
        "features", "build", "-w", &warehouse, "--matrix", &matrix, "--shard", "2/2",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("0 <= I < N"));
}

/// A shard that owns several groups splits its lots once and reads its groups from the split
/// (`GroupReader::split_for`); built without Spark, it too gives the single-machine model file.
#[test]
fn one_shard_of_every_group_reads_them_from_a_split_and_gives_the_single_machine_model() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (warehouse, _) = import_town(dir.path());
    let single = train(&warehouse, &dir.path().join("single"), &[]);
    let matrix = dir.path().join("matrix").display().to_string();
    plan(&warehouse, &matrix, &[]);
    let built = build(&warehouse, &matrix, "0/1");
    assert!(built.starts_with("shard 0/1: "), "{built}");
    assert_trains_like(&warehouse, dir.path(), &matrix, &single, "the one shard");
}

/// The Spark job's Python and its environment, from the test command; `None` (and the test says
/// it skipped) when Spark is not installed, unless `PARKCAST_REQUIRE_SPARK` is set.
fn spark_python() -> Option<String> {
    match std::env::var("PARKCAST_SPARK_PYTHON") {
        Ok(python) if !python.is_empty() => Some(python),
        _ => {
            assert!(
                std::env::var_os("PARKCAST_REQUIRE_SPARK").is_none(),
                "PARKCAST_REQUIRE_SPARK is set but PARKCAST_SPARK_PYTHON is not"
            );
            eprintln!("skipped: PARKCAST_SPARK_PYTHON is not set (scripts/test.sh installs Spark)");
            None
        }
    }
}

#[test]
fn spark_builds_the_shards_and_train_publishes_the_single_machine_model_bit_for_bit() {
    let Some(python) = spark_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary folder");
    let (warehouse, _) = import_town(dir.path());
    let single = train(&warehouse, &dir.path().join("single"), &[]);

    let matrix = dir.path().join("matrix").display().to_string();
    plan(&warehouse, &matrix, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/spark/features.py");
    let job = Command::new(&python)
        .arg(&script)
        .args(["--parkcast", env!("CARGO_BIN_EXE_parkcast")])
        .args(["--warehouse", &warehouse, "--matrix", &matrix])
        .args(["--shards", "2"])
        // Two executor processes of one core each, on loopback.
        .args(["--master", "local-cluster[2,1,1024]"])
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .expect("the Spark job should start");
    let stdout = succeeded(&job);
    assert!(stdout.contains("built 2 shards on "), "{stdout}");
    for shard in ["0/2", "1/2"] {
        assert!(stdout.contains(&format!("shard {shard}: ")), "{stdout}");
    }

    assert_trains_like(&warehouse, dir.path(), &matrix, &single, "the shards");
}
