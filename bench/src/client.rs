//! The gRPC client side shared by the server benchmarks: connections, readable statuses, and the
//! first request that checks the address, the lot and whether the server scores horizons.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use parkcast_proto::v1::GetAvailabilityRequest;
use parkcast_proto::v1::availability_client::AvailabilityClient;
use tonic::transport::{Channel, Endpoint};

/// Opens `count` HTTP/2 connections to `addr`.
pub(crate) async fn connect(addr: &str, count: usize) -> Result<Vec<AvailabilityClient<Channel>>> {
    let endpoint = Endpoint::from_shared(addr.to_owned())
        .with_context(|| format!("{addr:?} is not a valid server address"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("failed to connect to {addr}"))?;
        clients.push(AvailabilityClient::new(channel));
    }
    Ok(clients)
}

/// A status as text, with its cause (a transport error says little without it).
pub(crate) fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The horizons a sweep asks for, after the first request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Preflight {
    /// The horizons to ask for: those given, or none when the server refuses them.
    pub horizons: Vec<u32>,
    /// The line to print when the server refused the horizons.
    pub note: Option<String>,
}

/// Asks once, to fail early on a wrong address or lot, and to fall back to the live picture when
/// the server refuses horizons.
pub(crate) async fn preflight(addr: &str, lot_id: &str, horizons: &[u32]) -> Result<Preflight> {
    let mut client = connect(addr, 1)
        .await?
        .pop()
        .context("connect returns one client")?;
    let ask = |horizon_minutes: Vec<u32>| GetAvailabilityRequest {
        lot_id: lot_id.to_owned(),
        horizon_minutes,
        arrival_time_ms: 0,
        price_per_hour: None,
    };
    let note = match client.get_availability(ask(horizons.to_vec())).await {
        Ok(_) => {
            return Ok(Preflight {
                horizons: horizons.to_vec(),
                note: None,
            });
        }
        Err(status) if !horizons.is_empty() && status.code() == tonic::Code::Unavailable => {
            format!(
                "note: the server refuses horizons ({}); the sweep asks for the live picture only",
                status.message()
            )
        }
        Err(status) => bail!(
            "the server refused a request for lot {lot_id:?}: {}",
            status_text(&status)
        ),
    };
    client
        .get_availability(ask(Vec::new()))
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "the server refused a request for lot {lot_id:?}: {}",
                status_text(&status)
            )
        })?;
    Ok(Preflight {
        horizons: Vec::new(),
        note: Some(note),
    })
}
