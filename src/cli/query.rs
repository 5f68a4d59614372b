//! `parkcast query`: a small client of the gRPC services, printing a table or JSON.

use anyhow::{Context, Result};
use clap::Args;
use parkcast_proto::v1::availability_client::AvailabilityClient;
use parkcast_proto::v1::{BatchGetAvailabilityRequest, GetAvailabilityRequest, LotAvailability};

use crate::report;

/// Arguments of `parkcast query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Server address.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "PARKCAST_GRPC_ADDR"
    )]
    pub addr: String,
    /// Lots to ask about (comma-separated ids).
    #[arg(long, value_delimiter = ',', required = true)]
    pub lot: Vec<String>,
    /// Horizons, minutes ahead (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub horizons: Vec<u32>,
    /// Print the answers as JSON lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: QueryArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let lots = runtime.block_on(async {
        let mut client = AvailabilityClient::connect(args.addr.clone())
            .await
            .with_context(|| format!("failed to connect to {}", args.addr))?;
        let requests = args
            .lot
            .iter()
            .map(|lot_id| GetAvailabilityRequest {
                lot_id: lot_id.clone(),
                horizon_minutes: args.horizons.clone(),
                arrival_time_ms: 0,
            })
            .collect();
        let response = client
            .batch_get_availability(BatchGetAvailabilityRequest { requests })
            .await
            .map_err(|status| {
                anyhow::anyhow!(
                    "the server refused: {:?}: {}",
                    status.code(),
                    status.message()
                )
            })?;
        Ok::<_, anyhow::Error>(response.into_inner().lots)
    })?;
    if args.json {
        for lot in &lots {
            println!("{}", serde_json::to_string(&json(lot))?);
        }
        return Ok(());
    }
    let mut table = report::new_table(&[
        "lot", "capacity", "occupied", "free", "unknown", "data age", "stale",
    ]);
    for lot in &lots {
        table.add_row(vec![
            lot.lot_id.clone(),
            lot.capacity.to_string(),
            lot.occupied_now.to_string(),
            lot.free_now.to_string(),
            lot.unknown_now.to_string(),
            format!("{:.0} s", lot.data_age_ms as f64 / 1_000.0),
            if lot.stale {
                format!("yes: {}", lot.stale_reason)
            } else {
                "no".to_owned()
            },
        ]);
    }
    println!("{table}");
    Ok(())
}

fn json(lot: &LotAvailability) -> serde_json::Value {
    serde_json::json!({
        "lot_id": lot.lot_id,
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
    })
}
