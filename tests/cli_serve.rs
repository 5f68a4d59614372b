//! `parkcast serve` start-up as an operator types it: the config is validated once, after every
//! layer (profile defaults < file < environment < flags), so a value given only as a flag counts.

use std::process::{Command, Output, Stdio};

/// `parkcast serve` in production with `flags`, on a warehouse that does not exist: validation
/// comes first, so a start that passes it fails on the warehouse instead.
fn serve_in_production(flags: &[&str], environment: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut command = Command::new(env!("CARGO_BIN_EXE_parkcast"));
    command
        .args(["--quiet", "serve", "--profile", "production", "-w"])
        .arg(dir.path().join("no-warehouse"))
        .args(flags)
        .env("PARKCAST_LOG", "warn")
        .stdin(Stdio::null());
    for variable in [
        "PARKCAST_ADMIN_TOKEN",
        "PARKCAST_PROFILE",
        "PARKCAST_WAREHOUSE",
        "PARKCAST_MODELS",
        "PARKCAST__SERVE__ADMIN_TOKEN",
        "PARKCAST__SERVE__MODEL",
    ] {
        command.env_remove(variable);
    }
    command.envs(environment.iter().copied());
    let output = command.output().expect("parkcast runs");
    assert!(!output.status.success(), "no warehouse, no server");
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn production_flags_count_before_the_config_is_validated() {
    let token = "a-production-admin-token";
    for (flags, environment) in [
        (vec!["--admin-token", token, "--model", "x"], vec![]),
        (vec!["--model", "x"], vec![("PARKCAST_ADMIN_TOKEN", token)]),
        (
            vec!["--admin-token", token],
            vec![("PARKCAST__SERVE__MODEL", "x")],
        ),
    ] {
        let text = stderr(&serve_in_production(&flags, &environment));
        assert!(
            !text.contains("invalid configuration")
                && text.contains("failed to open the warehouse"),
            "{flags:?} {environment:?}:\n{text}"
        );
    }
    // Without a token, or with a short one, validation still refuses, naming the key.
    let text = stderr(&serve_in_production(&["--model", "x"], &[]));
    assert!(
        text.contains("invalid configuration") && text.contains("serve.admin_token"),
        "{text}"
    );
    let text = stderr(&serve_in_production(
        &["--admin-token", "short", "--model", "x"],
        &[],
    ));
    assert!(text.contains("at least 16 characters"), "{text}");
    let text = stderr(&serve_in_production(&["--admin-token", token], &[]));
    assert!(text.contains("serve.model"), "{text}");
}
