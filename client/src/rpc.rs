//! The calls: one async function per RPC, each taking a connected [`Channel`] and returning the
//! answer already rendered in the [`Output`] asked for, so a caller only prints it. The channel is
//! the caller's: one connection serves several calls, and tests can hand in their own.
//!
//! Nothing here blocks: rendering is string building, and a watch hands each line to the caller as
//! it arrives instead of collecting an endless stream.

use std::future::Future;

use parkcast_proto::v1::availability_client::AvailabilityClient;
use parkcast_proto::v1::models_client::ModelsClient;
use parkcast_proto::v1::{
    ActivateModelRequest, BatchGetAvailabilityRequest, ClearShadowRequest, DescribeModelRequest,
    GetLiveQualityRequest, ListModelsRequest, ListReplicasRequest, ShadowModelRequest,
    WatchAvailabilityRequest,
};
use tonic::transport::{Channel, Endpoint};

use crate::request::{Ahead, SearchQuery, availability_requests};
use crate::{ClientError, json, text};

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Tables and lines for a person.
    Text,
    /// One JSON object per message and line, with the proto field names, for scripts.
    Json,
}

impl Output {
    /// [`Output::Json`] when `json` (a `--json` flag) is set, else [`Output::Text`].
    pub fn json_if(json: bool) -> Output {
        if json { Output::Json } else { Output::Text }
    }
}

/// A channel to the server at `address` (`http://host:port`; a bare `host:port` means http).
pub async fn connect(address: &str) -> Result<Channel, ClientError> {
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    Endpoint::from_shared(uri)
        .map_err(|source| ClientError::Address {
            address: address.to_owned(),
            source,
        })?
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            address: address.to_owned(),
            source,
        })
}

/// Availability of lots: `GetAvailability` for one lot, `BatchGetAvailability` for several (one
/// round trip, one consistent picture); with `price_per_hour`, as if the lots were priced so.
pub async fn availability(
    channel: Channel,
    lot_ids: &[String],
    ahead: &Ahead,
    price_per_hour: Option<f64>,
    output: Output,
) -> Result<String, ClientError> {
    let mut requests = availability_requests(lot_ids, ahead, price_per_hour)?;
    let mut client = AvailabilityClient::new(channel);
    let lots = if requests.len() == 1 {
        let request = requests.remove(0);
        vec![client.get_availability(request).await?.into_inner()]
    } else {
        client
            .batch_get_availability(BatchGetAvailabilityRequest { requests })
            .await?
            .into_inner()
            .lots
    };
    Ok(match output {
        Output::Json => json::json_lines(&lots, json::availability_json),
        Output::Text => text::availability_text(&lots, ahead.arrival_time_ms()),
    })
}

/// Lots around a point, best chance of a free slot at arrival first (`SearchNearby`).
pub async fn search(
    channel: Channel,
    query: &SearchQuery,
    output: Output,
) -> Result<String, ClientError> {
    let found = AvailabilityClient::new(channel)
        .search_nearby(query.request()?)
        .await?
        .into_inner()
        .lots;
    Ok(match output {
        Output::Json => json::json_lines(&found, json::nearby_json),
        Output::Text => text::search_table(&found, query.slot_type),
    })
}

/// Follows lots (`WatchAvailability`): each update, rendered as one line without its newline, goes
/// to `on_update` as it arrives. Ends after `count` updates, when the server ends the stream, or
/// when `stop` completes (the CLI passes `tokio::signal::ctrl_c()`); an error of `stop` is
/// [`ClientError::Stop`]. Returns how many updates were handed over.
pub async fn watch(
    channel: Channel,
    request: WatchAvailabilityRequest,
    count: Option<u64>,
    output: Output,
    stop: impl Future<Output = std::io::Result<()>>,
    mut on_update: impl FnMut(&str),
) -> Result<u64, ClientError> {
    let mut updates = AvailabilityClient::new(channel)
        .watch_availability(request)
        .await?
        .into_inner();
    tokio::pin!(stop);
    let mut handed: u64 = 0;
    while count.is_none_or(|count| handed < count) {
        let update = tokio::select! {
            update = updates.message() => update?,
            stopped = &mut stop => {
                stopped.map_err(ClientError::Stop)?;
                break;
            }
        };
        let Some(lot) = update else {
            break;
        };
        let line = match output {
            Output::Json => json::availability_json(&lot).to_string(),
            Output::Text => text::watch_line(&lot),
        };
        on_update(&line);
        handed += 1;
    }
    Ok(handed)
}

/// The models the server's registry holds, and which one answers (`ListModels`).
pub async fn list_models(channel: Channel, output: Output) -> Result<String, ClientError> {
    let models = ModelsClient::new(channel)
        .list_models(ListModelsRequest {})
        .await?
        .into_inner()
        .models;
    Ok(match output {
        Output::Json => json::json_lines(&models, json::model_info_json),
        Output::Text => text::models_table(&models),
    })
}

/// The replicas of the server's group and what each owns (`ListReplicas`).
pub async fn list_replicas(channel: Channel, output: Output) -> Result<String, ClientError> {
    let listing = AvailabilityClient::new(channel)
        .list_replicas(ListReplicasRequest {})
        .await?
        .into_inner();
    Ok(match output {
        Output::Json => json::json_lines(&listing.replicas, |replica| {
            json::replica_json(replica, &listing.this_replica)
        }),
        Output::Text => text::replicas_table(&listing),
    })
}

/// How the active model's forecasts fare on the live actuals, city-wide and for `lot_ids`, and
/// what drifts (`GetLiveQuality`).
pub async fn live_quality(
    channel: Channel,
    lot_ids: Vec<String>,
    output: Output,
) -> Result<String, ClientError> {
    let quality = ModelsClient::new(channel)
        .get_live_quality(GetLiveQualityRequest { lot_ids })
        .await?
        .into_inner();
    Ok(match output {
        Output::Json => format!("{}\n", json::live_quality_json(&quality)),
        Output::Text => text::live_quality_text(&quality),
    })
}

/// One model version (`DescribeModel`); version `None` is the newest.
pub async fn describe_model(
    channel: Channel,
    name: String,
    version: Option<u32>,
    output: Output,
) -> Result<String, ClientError> {
    let model = ModelsClient::new(channel)
        .describe_model(DescribeModelRequest {
            name,
            version: version.unwrap_or(0),
        })
        .await?
        .into_inner();
    Ok(model_output(&model, output))
}

/// Asks the server to load, check and serve a version (`ActivateModel`), with a request from
/// [`crate::activation_request`] (the admin token rides in its metadata); answers the activated
/// model. A version that fails its checks comes back as [`ClientError::Refused`].
pub async fn activate_model(
    channel: Channel,
    request: tonic::Request<ActivateModelRequest>,
    output: Output,
) -> Result<String, ClientError> {
    let model = ModelsClient::new(channel)
        .activate_model(request)
        .await?
        .into_inner();
    Ok(model_output(&model, output))
}

/// Asks the server to score a version beside the active model, never serving it (`ShadowModel`),
/// with a request from [`crate::shadow_request`]; answers the candidate. A version that fails its
/// checks comes back as [`ClientError::Refused`].
pub async fn shadow_model(
    channel: Channel,
    request: tonic::Request<ShadowModelRequest>,
    output: Output,
) -> Result<String, ClientError> {
    let model = ModelsClient::new(channel)
        .shadow_model(request)
        .await?
        .into_inner();
    Ok(model_output(&model, output))
}

/// Asks the server to stop scoring the candidate in shadow (`ClearShadow`), with a request from
/// [`crate::clear_shadow_request`]; answers the candidate that was.
pub async fn clear_shadow(
    channel: Channel,
    request: tonic::Request<ClearShadowRequest>,
    output: Output,
) -> Result<String, ClientError> {
    let model = ModelsClient::new(channel)
        .clear_shadow(request)
        .await?
        .into_inner();
    Ok(model_output(&model, output))
}

fn model_output(model: &parkcast_proto::v1::ModelInfo, output: Output) -> String {
    match output {
        Output::Json => json::json_lines(std::slice::from_ref(model), json::model_info_json),
        Output::Text => text::model_text(model),
    }
}
