//! `parkcast models list|show`: what the model registry holds; `parkcast models activate`: switch a
//! running server to a version; `parkcast models shadow|unshadow`: score a candidate beside it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use parkcast_client::Output;
use parkcast_training::registry::Registry;
use parkcast_training::summary;

use super::client_runtime;

/// Arguments of `parkcast models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Model registry folder.
    #[arg(long, env = "PARKCAST_MODELS", default_value = "models", global = true)]
    pub registry: PathBuf,
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every version of every model line, newest last.
    List,
    /// One version's manifest: training data, hyperparameters, backtest metrics, checksum.
    Show {
        /// The model line.
        name: String,
        /// The version (default: the latest).
        version: Option<u32>,
        /// Also verify the model file against the manifest (size, sha256).
        #[arg(long)]
        verify: bool,
    },
    /// Ask a running server to load, check and serve a version (ActivateModel); a version that fails
    /// its checks is refused and the active model keeps serving.
    Activate(ActivateArgs),
    /// Ask a running server to load, check and score a version beside the active model on the same
    /// live stream, never serving it (ShadowModel); `parkcast query quality` then shows both.
    Shadow(ActivateArgs),
    /// Ask a running server to stop scoring the candidate in shadow (ClearShadow).
    Unshadow(AdminArgs),
}

/// Arguments of an admin call that names no version.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Server address (`http://host:port`; a bare `host:port` means http).
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "PARKCAST_GRPC_ADDR"
    )]
    pub addr: String,
    /// The server's admin token, sent as `authorization: Bearer <token>` (prefer the environment
    /// variable: a flag shows in the process list).
    #[arg(long, env = "PARKCAST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Print the model as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `parkcast models activate`.
#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// The model line.
    pub name: String,
    /// The version (default: the newest).
    pub version: Option<u32>,
    /// Server address (`http://host:port`; a bare `host:port` means http).
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "PARKCAST_GRPC_ADDR"
    )]
    pub addr: String,
    /// The server's admin token, sent as `authorization: Bearer <token>` (prefer the environment
    /// variable: a flag shows in the process list).
    #[arg(long, env = "PARKCAST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Print the activated model as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `parkcast models`.
pub fn run(args: ModelsArgs) -> Result<()> {
    let registry = Registry::open(&args.registry);
    match args.command {
        ModelsCommand::List => list(&registry),
        ModelsCommand::Show {
            name,
            version,
            verify,
        } => show(&registry, &name, version, verify),
        ModelsCommand::Activate(activate_args) => activate(&activate_args),
        ModelsCommand::Shadow(shadow_args) => shadow(&shadow_args),
        ModelsCommand::Unshadow(admin_args) => unshadow(&admin_args),
    }
}

/// Calls `ShadowModel` with the bearer token and prints the candidate, or the refusal.
fn shadow(args: &ActivateArgs) -> Result<()> {
    let request = parkcast_client::shadow_request(&args.name, args.version, &args.token)?;
    let output = Output::json_if(args.json);
    let candidate = client_runtime()?.block_on(async {
        let channel = parkcast_client::connect(&args.addr).await?;
        parkcast_client::shadow_model(channel, request, output).await
    })?;
    if args.json {
        print!("{candidate}");
    } else {
        print!("in shadow (scored, never served): {candidate}");
    }
    Ok(())
}

/// Calls `ClearShadow` with the bearer token and prints the candidate that was in shadow.
fn unshadow(args: &AdminArgs) -> Result<()> {
    let request = parkcast_client::clear_shadow_request(&args.token)?;
    let output = Output::json_if(args.json);
    let cleared = client_runtime()?.block_on(async {
        let channel = parkcast_client::connect(&args.addr).await?;
        parkcast_client::clear_shadow(channel, request, output).await
    })?;
    if args.json {
        print!("{cleared}");
    } else {
        print!("no longer in shadow: {cleared}");
    }
    Ok(())
}

/// Calls `ActivateModel` with the bearer token and prints the activated model, or the refusal as an
/// error.
fn activate(args: &ActivateArgs) -> Result<()> {
    let request = parkcast_client::activation_request(&args.name, args.version, &args.token)?;
    let output = Output::json_if(args.json);
    let activated = client_runtime()?.block_on(async {
        let channel = parkcast_client::connect(&args.addr).await?;
        parkcast_client::activate_model(channel, request, output).await
    })?;
    print!("{activated}");
    Ok(())
}

fn list(registry: &Registry) -> Result<()> {
    let entries = registry.list().context("failed to read the registry")?;
    if entries.is_empty() {
        println!(
            "no models in {} (train one with `parkcast train`)",
            registry.root().display()
        );
    } else {
        println!("{}", summary::registry_table(&entries));
    }
    Ok(())
}

fn show(registry: &Registry, name: &str, version: Option<u32>, verify: bool) -> Result<()> {
    let version = match version {
        Some(version) => version,
        None => registry
            .latest(name)?
            .with_context(|| format!("no versions of model {name:?}"))?,
    };
    let manifest = if verify {
        registry
            .load(name, version, None)
            .with_context(|| format!("model {name} v{version} failed verification"))?
            .0
    } else {
        registry.manifest(name, version)?
    };
    println!("{}", summary::manifest_text(&manifest, verify));
    Ok(())
}
