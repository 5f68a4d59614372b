//! `parkcast retrain`: continuous training with a promotion gate. Trains a candidate on the
//! warehouse (the archive of what the live system saw, plus history), publishes it to a candidate
//! line the server does not follow, and judges it against the serving model: first offline, on the
//! latest days ([`parkcast_training::gate`]); then, with a server, live, in shadow beside the
//! serving model on the same stream. Only a candidate that passes both is activated; otherwise the
//! serving model stays, and the decision says why. Every decision is appended to
//! `<registry>/decisions.jsonl`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use parkcast_proto::v1::GetLiveQualityRequest;
use parkcast_proto::v1::models_client::ModelsClient;
use parkcast_training::artifact::{LoadedModel, ModelBundle};
use parkcast_training::gate::{self, HorizonEvidence, Verdict};
use parkcast_training::registry::Registry;
use parkcast_training::summary;
use parkcast_training::train::{TrainConfig, train};
use parkcast_warehouse::lots::load_lots;

use super::GlobalArgs;
use super::args::{ProtocolArgs, parse_duration};
use crate::progress::BarProgress;

/// Arguments of `parkcast retrain`.
#[derive(Debug, Args)]
pub struct RetrainArgs {
    #[command(flatten)]
    pub protocol: ProtocolArgs,
    /// Model registry folder.
    #[arg(long, env = "PARKCAST_MODELS", default_value = "models")]
    pub registry: PathBuf,
    /// The model line being served (default: the source's name, as `parkcast train` names it).
    #[arg(long)]
    pub model: Option<String>,
    /// The serving version (default: the server's active one with --addr, else the line's newest).
    #[arg(long)]
    pub serving_version: Option<u32>,
    /// The registry line candidates are published to (default: `<model>-candidate`). Keep it a
    /// line the server does not follow, or it would activate every candidate before the gate.
    #[arg(long)]
    pub candidate_line: Option<String>,
    /// Gate a version already published in the candidate line instead of training one (it is
    /// then scored on the latest days like the serving model).
    #[arg(long)]
    pub candidate_version: Option<u32>,
    /// The share by which the candidate's MAE must beat the serving model's, averaged over the
    /// horizons, offline and live; no horizon may be worse by more than it.
    #[arg(long, default_value_t = 0.02)]
    pub margin: f64,
    /// Pairs each model needs at each horizon to be judged, offline and live.
    #[arg(long, default_value_t = 200)]
    pub min_pairs: u64,
    /// The server (`http://host:port`): the candidate goes into shadow there and is activated
    /// only if it passes live too. Without it only the offline gate runs and nothing is promoted.
    #[arg(long, env = "PARKCAST_GRPC_ADDR")]
    pub addr: Option<String>,
    /// The server's admin token (prefer the environment variable).
    #[arg(long, env = "PARKCAST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How long the candidate may stay in shadow to gather enough live pairs (`30m`, `24h`).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub shadow_wait: Duration,
    /// How often the shadow's figures are read.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub poll: Duration,
    /// Publish the candidate even when it does not beat persistence + profile change (like
    /// `train --force`); the gate still judges it.
    #[arg(long)]
    pub force: bool,
    /// The candidate's backtest over the days since the serving model's training forecasts each
    /// run of this many days with models fitted before it (1: every day by models that saw every
    /// earlier day, as a daily retrain would have).
    #[arg(long, default_value_t = 1)]
    pub gate_window_days: u32,
}

/// What a run decided, as appended to `decisions.jsonl`.
#[derive(Debug, serde::Serialize)]
struct Decision {
    decided_at: String,
    serving: (String, u32),
    candidate: (String, u32),
    promoted: bool,
    /// The served line's version the promoted candidate was copied to (and activated).
    #[serde(skip_serializing_if = "Option::is_none")]
    promoted_as: Option<(String, u32)>,
    why: String,
    offline: Verdict,
    live: Option<Verdict>,
}

pub fn run(args: RetrainArgs, global: &GlobalArgs) -> Result<()> {
    let warehouse = args.protocol.location.open()?;
    let frozen = args.protocol.frozen()?;
    let (mut backtest, origin) = args.protocol.config(&warehouse, &frozen.config)?;
    println!("protocol: {origin}");
    let line = args.model.clone().unwrap_or_else(|| {
        backtest
            .source
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    });
    let candidate_line = args
        .candidate_line
        .clone()
        .unwrap_or_else(|| format!("{line}-candidate"));
    if candidate_line == line {
        bail!("the candidate line must differ from the served line {line}");
    }
    let registry = Registry::open(&args.registry);
    let runtime = super::client_runtime()?;
    let serving_version = match (args.serving_version, &args.addr) {
        (Some(version), _) => version,
        (None, Some(addr)) => {
            let quality = runtime.block_on(async {
                let mut client = ModelsClient::new(parkcast_client::connect(addr).await?);
                Ok::<_, anyhow::Error>(
                    client
                        .get_live_quality(GetLiveQualityRequest::default())
                        .await
                        .context("the server did not report its active model")?
                        .into_inner(),
                )
            })?;
            if quality.model_name != line {
                bail!(
                    "the server serves {} v{}, not the line {line} (pass --model {} or --serving-version)",
                    quality.model_name,
                    quality.model_version,
                    quality.model_name
                );
            }
            quality.model_version
        }
        (None, None) => registry
            .latest(&line)?
            .with_context(|| format!("no version of {line} in the registry"))?,
    };
    let (serving_manifest, serving_bytes) = registry
        .load(&line, serving_version, None)
        .with_context(|| format!("failed to load the serving model {line} v{serving_version}"))?;
    let serving = decode(&serving_bytes, &line, serving_version)?;
    // The latest days: those since the serving model's training, out of sample for it; the
    // candidate's backtest forecasts them with models fitted before each day.
    let window = (
        serving_manifest.card.training_end + chrono::Days::new(1),
        backtest.test_end,
    );
    if window.0 > window.1 {
        bail!(
            "no data since {line} v{serving_version} was trained (until {}; the data ends {}): \
             nothing to judge a candidate on",
            serving_manifest.card.training_end,
            backtest.test_end
        );
    }
    backtest.test_start = window.0;
    backtest.window_days = Some(args.gate_window_days.max(1));
    println!(
        "serving model: {line} v{serving_version} (trained until {}); latest days: {} to {}",
        serving_manifest.card.training_end, window.0, window.1
    );

    // The candidate, and its figures on the latest days.
    let lots = load_lots(&warehouse, &backtest.source, backtest.step_minutes)
        .context("failed to load the lots")?;
    let (candidate_version, candidate_figures, evidence) = match args.candidate_version {
        Some(version) => {
            let (_, bytes) = registry
                .load(&candidate_line, version, None)
                .with_context(|| format!("failed to load {candidate_line} v{version}"))?;
            let candidate = decode(&bytes, &candidate_line, version)?;
            let sums = gate::score_model_on_window(&candidate, &lots, window);
            (version, sums, "scored on the latest days")
        }
        None => {
            let models = args.protocol.models(&frozen.config)?;
            let overrides = args.protocol.overrides(&frozen.config);
            let config = TrainConfig {
                backtest: backtest.clone(),
                models,
                name: candidate_line.clone(),
                publish_losing: args.force,
                frozen: Some(frozen.record(overrides)),
            };
            let outcome = BarProgress::run(global.quiet, |progress| {
                train(&warehouse, &registry, &config, progress)
            })
            .context("training the candidate failed")?;
            println!("{}", summary::backtest(&outcome.backtest, &config.backtest));
            let figures = outcome
                .backtest
                .metrics
                .iter()
                .filter(|metrics| metrics.model == outcome.promoted)
                .map(|metrics| {
                    (
                        metrics.horizon_minutes,
                        (metrics.mae_rate * metrics.pairs as f64, metrics.pairs),
                    )
                })
                .collect();
            (
                outcome.published.manifest.version,
                figures,
                "its backtest (each day forecast by models fitted before it) against the serving model scored on them",
            )
        }
    };
    println!("candidate: {candidate_line} v{candidate_version}");
    let serving_figures = gate::score_model_on_window(&serving, &lots, window);
    let horizons = serving_figures
        .iter()
        .filter_map(|(minutes, (serving_sum, serving_pairs))| {
            let (candidate_sum, candidate_pairs) = candidate_figures.get(minutes)?;
            Some(HorizonEvidence {
                horizon_minutes: *minutes,
                serving_mae: serving_sum / (*serving_pairs).max(1) as f64,
                serving_pairs: *serving_pairs,
                candidate_mae: candidate_sum / (*candidate_pairs).max(1) as f64,
                candidate_pairs: *candidate_pairs,
            })
        })
        .collect();
    let offline = gate::verdict(
        &format!("offline, {} to {}: {evidence}", window.0, window.1),
        horizons,
        args.margin,
        args.min_pairs,
    );
    println!("{}", offline.markdown());

    let mut decision = Decision {
        decided_at: chrono::Utc::now().to_rfc3339(),
        serving: (line.clone(), serving_version),
        candidate: (candidate_line.clone(), candidate_version),
        promoted: false,
        promoted_as: None,
        why: String::new(),
        offline,
        live: None,
    };
    if !decision.offline.passed {
        decision.why = format!(
            "kept {line} v{serving_version}: the candidate failed the offline gate ({})",
            decision.offline.reasons.join("; ")
        );
    } else if let Some(addr) = &args.addr {
        let token = args
            .token
            .as_deref()
            .context("--token (or PARKCAST_ADMIN_TOKEN) is needed to shadow and activate")?;
        let live = runtime.block_on(shadow_and_judge(
            addr,
            token,
            (&candidate_line, candidate_version),
            &args,
        ))?;
        println!("{}", live.markdown());
        if live.passed {
            // The served line keeps its name: the candidate is copied into it and that version
            // activated, so the next retrain finds the line it serves.
            let promoted = registry
                .promote(
                    (&candidate_line, candidate_version),
                    &line,
                    &format!(
                        "promoted by `parkcast retrain` from {candidate_line} v{candidate_version} \
                         over {line} v{serving_version}"
                    ),
                )
                .with_context(|| format!("failed to copy the candidate into {line}"))?;
            let version = promoted.manifest.version;
            runtime.block_on(activate_promoted(addr, token, (&line, version)))?;
            decision.promoted = true;
            decision.promoted_as = Some((line.clone(), version));
            decision.why = format!(
                "promoted {candidate_line} v{candidate_version} as {line} v{version}: better \
                 offline and live by the {:.1}% margin",
                100.0 * args.margin
            );
        } else {
            decision.why = format!(
                "kept {line} v{serving_version}: the candidate failed the live gate ({})",
                live.reasons.join("; ")
            );
        }
        decision.live = Some(live);
    } else {
        decision.why = format!(
            "kept {line} v{serving_version}: the candidate passed the offline gate, but no server \
             (--addr) was given to try it live"
        );
    }
    println!("decision: {}", decision.why);
    record(&args.registry, &decision)?;
    Ok(())
}

fn decode(bytes: &[u8], line: &str, version: u32) -> Result<LoadedModel> {
    ModelBundle::from_bytes(bytes)
        .and_then(ModelBundle::load)
        .with_context(|| format!("{line} v{version} does not load"))
}

/// Puts the candidate in shadow, waits until both models have `min_pairs` at every horizon over
/// the shadow's last day (or `shadow_wait` passes) and judges; clears the shadow when it failed
/// (a passed candidate stays in shadow until [`activate_promoted`]). The serving model answers
/// throughout.
async fn shadow_and_judge(
    addr: &str,
    token: &str,
    (line, version): (&str, u32),
    args: &RetrainArgs,
) -> Result<Verdict> {
    let mut client = ModelsClient::new(parkcast_client::connect(addr).await?);
    client
        .shadow_model(parkcast_client::shadow_request(line, Some(version), token)?)
        .await
        .context("the server refused the candidate's shadow")?;
    println!("{line} v{version} in shadow on {addr}; waiting for live pairs");
    let started = Instant::now();
    let verdict = loop {
        tokio::time::sleep(args.poll).await;
        let quality = client
            .get_live_quality(GetLiveQualityRequest::default())
            .await
            .context("the server did not report live quality")?
            .into_inner();
        let Some(shadow) = quality.shadow else {
            bail!("the shadow was cleared on the server before the gate could judge it");
        };
        let horizons: Vec<HorizonEvidence> = shadow
            .active_city
            .iter()
            .filter(|window| window.window == "day")
            .filter_map(|active| {
                let candidate = shadow.city.iter().find(|window| {
                    window.window == "day" && window.horizon_minutes == active.horizon_minutes
                })?;
                Some(HorizonEvidence {
                    horizon_minutes: active.horizon_minutes,
                    serving_mae: active.mae_rate,
                    serving_pairs: active.pairs,
                    candidate_mae: candidate.mae_rate,
                    candidate_pairs: candidate.pairs,
                })
            })
            .collect();
        let enough = !horizons.is_empty()
            && horizons.iter().all(|horizon| {
                horizon.serving_pairs >= args.min_pairs && horizon.candidate_pairs >= args.min_pairs
            });
        if enough || started.elapsed() >= args.shadow_wait {
            break gate::verdict(
                &format!(
                    "live, in shadow beside {} v{} over the same period",
                    quality.model_name, quality.model_version
                ),
                horizons,
                args.margin,
                args.min_pairs,
            );
        }
    };
    if !verdict.passed {
        client
            .clear_shadow(parkcast_client::clear_shadow_request(token)?)
            .await
            .context("the server did not clear the shadow")?;
    }
    Ok(verdict)
}

/// Activates the promoted copy in the served line and ends the candidate's shadow.
async fn activate_promoted(addr: &str, token: &str, (line, version): (&str, u32)) -> Result<()> {
    let mut client = ModelsClient::new(parkcast_client::connect(addr).await?);
    client
        .activate_model(parkcast_client::activation_request(
            line,
            Some(version),
            token,
        )?)
        .await
        .with_context(|| format!("the server refused to activate {line} v{version}"))?;
    client
        .clear_shadow(parkcast_client::clear_shadow_request(token)?)
        .await
        .context("the server did not clear the shadow")?;
    Ok(())
}

/// Appends the decision to `<registry>/decisions.jsonl`.
fn record(registry: &Path, decision: &Decision) -> Result<()> {
    let path = registry.join("decisions.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(decision)?)
        .with_context(|| format!("failed to write {}", path.display()))?;
    println!("decision recorded in {}", path.display());
    Ok(())
}
