//! The server assembled: live ingestion, scoring with the active model, the gRPC services
//! (Availability, Models, health, reflection), the pricing feed and Prometheus metrics.
//!
//! Start-up order matters: the model is read first (its grid step decides how live state samples
//! lots), the lots' last nine days of grid history are read from the warehouse (the features need
//! a week back), ingestion starts sampling on that grid, the model is activated on the seeded
//! history, and only then does the gRPC port open. Health stays NOT_SERVING until a model is active
//! and ingestion has caught up. Shutdown runs the other way: stop taking requests, end watch
//! streams, stop the scorer and the pricing feed (flushed), checkpoint and commit, leave the group.
//! `parkcast serve` and `parkcast demo` both run a [`Server`]; the tests start one on real ports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parkcast_proto::v1::availability_server::AvailabilityServer;
use parkcast_proto::v1::models_server::ModelsServer;
use parkcast_warehouse::lots::{LotsError, load_lots};
use parkcast_warehouse::rows::{LotRow, SlotRow};
use parkcast_warehouse::{Warehouse, WarehouseError};
use prometheus_client::registry::Registry;

use crate::config::{ClockMode, ServiceConfig};
use crate::grpc::{
    AvailabilityService, LotDirectory, LotInfo, ModelsService, ServiceContext, reflection,
    slot_type_of,
};
use crate::ingest::{Ingest, IngestError, IngestOptions, IngestSummary, TimeReference};
use crate::live::GridRule;
use crate::metrics::{self, IngestMetrics, ReplicaMetrics, ServingMetrics};
use crate::models::{ActivationError, ModelManager, StartupModel, load_startup};
use crate::pricing::{PricingError, PricingFeed};
use crate::replicas::{Advertiser, AdvertiserError, ReplicasConfigError, Router};
use crate::rest;
use crate::scoring::{Clock, LiveSource, Scoring};
use crate::standby::{Follower, InputPublisher, StandbyError};
use crate::topology::TopologyIndex;

/// Errors of starting or stopping a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A port could not be bound.
    #[error("failed to listen for {what} on {address}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The configured address.
        address: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The configured model could not be loaded (with version 0: no version passes its checks;
    /// the newest's reason).
    #[error(
        "failed to load model {name} version {version} (0: the newest that passes its checks): {source}"
    )]
    Model {
        /// The model line.
        name: String,
        /// The version asked for, 0 for the newest.
        version: u32,
        /// Why.
        source: ActivationError,
    },
    /// The configured model loaded but was refused on activation.
    #[error("the configured model was refused: {0}")]
    Refused(ActivationError),
    /// Ingestion failed to start, or stopped with an error.
    #[error("ingestion: {0}")]
    Ingest(#[from] IngestError),
    /// `dim_lot` or `dim_slot` could not be read for the lot directory.
    #[error("failed to read the lot directory (dim_lot, dim_slot): {0}")]
    Directory(WarehouseError),
    /// A worker thread could not be started.
    #[error("failed to start {what}: {source}")]
    Thread {
        /// Which worker.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The pricing feed could not start.
    #[error("failed to start the pricing feed: {0}")]
    Pricing(#[from] PricingError),
    /// gRPC reflection could not be built from the descriptor sets.
    #[error("failed to build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Ingestion gave up restarting its consumer (`ingest.max_restarts` consecutive failures);
    /// the server was shut down, and the process should exit non-zero so an orchestrator restarts
    /// it.
    #[error("ingestion kept failing; stopping the server")]
    GaveUp {
        /// What went wrong while shutting down, if anything.
        #[source]
        shutdown: Option<Box<ServerError>>,
    },
    /// A blocking task panicked or was cancelled.
    #[error("a start-up or shutdown task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// This replica has no address the others could reach it at.
    #[error(transparent)]
    Replicas(#[from] ReplicasConfigError),
    /// The replicas' advertisements could not start.
    #[error(transparent)]
    Advertiser(#[from] AdvertiserError),
    /// The warm standbys' inputs topic could not be set up.
    #[error(transparent)]
    Standby(#[from] StandbyError),
}

/// The gRPC service name health reports on.
const AVAILABILITY: &str = "parkcast.v1.Availability";

/// The health service name of the live-accuracy alarm: NOT_SERVING while the city or a lot drifts
/// ([`crate::quality`]). For operators and alert rules, never for a load balancer's probe: a
/// drifting model still answers, and better than no answer.
pub const LIVE_QUALITY: &str = "parkcast.v1.LiveQuality";

/// How long in-flight requests may take to finish once shutdown begins.
const GRPC_DRAIN: Duration = Duration::from_secs(5);

/// What a server is started from.
pub struct ServerOptions {
    /// The checked config.
    pub config: ServiceConfig,
    /// The lots and slots served.
    pub topology: Arc<TopologyIndex>,
    /// Where grid history, lot names, locations and slot types come from.
    pub warehouse: Warehouse,
    /// Grid history is read up to this instant (default: now).
    pub history_until_ms: Option<i64>,
}

/// A running server.
pub struct Server {
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound metrics address.
    pub metrics_addr: SocketAddr,
    ingest: Arc<Ingest>,
    scoring: Arc<Scoring>,
    context: ServiceContext,
    pricing: Option<PricingFeed>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    grpc_shutdown: tokio::sync::oneshot::Sender<()>,
    grpc_task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    advertiser: Option<Advertiser>,
    standby: Option<Follower>,
}

impl Server {
    /// Starts everything (see the module doc for the order). Call inside a tokio runtime.
    pub async fn start(options: ServerOptions) -> Result<Server, ServerError> {
        let ServerOptions {
            config,
            topology,
            warehouse,
            history_until_ms,
        } = options;
        let mut registry = Registry::default();
        let ingest_metrics = IngestMetrics::register(&mut registry);
        let serving_metrics = ServingMetrics::register(&mut registry);
        let replica_metrics = config
            .replicas
            .enabled
            .then(|| ReplicaMetrics::register(&mut registry));
        let registry = Arc::new(Mutex::new(registry));
        // The HTTP port opens first (metrics while the model loads); its REST routes answer 503
        // until the services below exist.
        let rest_services: rest::Slot = Arc::new(std::sync::OnceLock::new());
        let (metrics_addr, metrics_task) = metrics::serve_with(
            config.serve.metrics_addr,
            Arc::clone(&registry),
            rest::router(Arc::clone(&rest_services)),
        )
        .await
        .map_err(|source| ServerError::Bind {
            what: "metrics",
            address: config.serve.metrics_addr,
            source,
        })?;

        // The model first: its grid step decides how live state samples the lots.
        let initial = initial_model(&config, &serving_metrics).await?;
        let grid = initial.as_ref().map(|startup| GridRule {
            step_ms: i64::from(startup.served.model.step_minutes()) * 60_000,
        });
        let mut ingest_config = config.ingest.clone();
        if config.replicas.enabled && ingest_config.changelog_topic.is_empty() {
            // Replicas on separate machines restore a moved partition from the changelog; without
            // it the new owner would replay the partition's whole retention.
            ingest_config.changelog_topic = format!("{}.checkpoints", ingest_config.group_id);
            tracing::info!(topic = %ingest_config.changelog_topic, "checkpoints also go to the changelog topic");
        }
        let ingest_topology = Arc::clone(&topology);
        // Event times are judged against the serving clock: a replay's own clock in stream mode,
        // so one sensor dated a day ahead cannot move it.
        let time = match config.serve.clock {
            ClockMode::Wall => TimeReference::Wall,
            ClockMode::Stream => TimeReference::Stream {
                start_ms: history_until_ms,
            },
        };
        // The operations page reads ingestion's state from the same metrics.
        let page_ingest_metrics = ingest_metrics.clone();
        let ingest = Arc::new(
            tokio::task::spawn_blocking(move || {
                Ingest::start_with(
                    ingest_config,
                    ingest_topology,
                    ingest_metrics,
                    IngestOptions { grid, time },
                )
            })
            .await??,
        );
        let clock = match config.serve.clock {
            ClockMode::Wall => Clock::Wall,
            ClockMode::Stream => history_until_ms.map_or_else(Clock::stream, Clock::stream_from),
        };
        let mut scoring = Scoring::new(
            Arc::clone(&ingest) as Arc<dyn LiveSource>,
            clock,
            config.scoring,
        )
        .with_quality(config.quality)
        .with_metrics(serving_metrics.clone());
        // Warm standbys ([`crate::standby`]): this replica's forecast inputs go to the group's
        // inputs topic, and the others' are read from it below, before the scorer starts.
        let standby_topic = (config.replicas.enabled && config.replicas.standby)
            .then(|| config.replicas.inputs_topic(&config.ingest.group_id));
        let publisher = crate::standby::publisher_name(match config.replicas.replica_id.trim() {
            "" => &config.ingest.group_id,
            id => id,
        });
        if let Some(topic) = &standby_topic {
            let (kafka, created) = (config.ingest.kafka.clone(), topic.clone());
            tokio::task::spawn_blocking(move || crate::standby::create_topic(&kafka, &created))
                .await??;
            scoring = scoring.with_sink(Arc::new(InputPublisher::new(
                &config.ingest.kafka,
                topic,
                &publisher,
                Arc::clone(&topology),
                replica_metrics.clone(),
            )?));
        }
        let scoring = Arc::new(scoring);
        let until_ms = history_until_ms.unwrap_or_else(parkcast_kafka::now_ms);
        let history_warehouse = warehouse.clone();
        let manager = Arc::new(
            ModelManager::new(
                &config.serve.registry,
                Arc::clone(&scoring),
                Some(serving_metrics.clone()),
            )
            .with_history(Box::new(move |scoring, served| {
                seed_history(
                    scoring,
                    &history_warehouse,
                    &served.manifest.card.source,
                    served.model.step_minutes(),
                    until_ms,
                )
                .map_err(|error| error.to_string())
            })),
        );
        if let Some(startup) = initial {
            let activating = Arc::clone(&manager);
            tokio::task::spawn_blocking(move || activating.activate_startup(startup))
                .await?
                .map_err(ServerError::Refused)?;
        } else {
            tracing::warn!(
                "no model configured: answers carry the live picture only until one is activated"
            );
        }
        let directory = lot_directory(&warehouse, &topology).map_err(ServerError::Directory)?;
        let standby = match standby_topic {
            Some(topic) => {
                let (kafka, following, metrics) = (
                    config.ingest.kafka.clone(),
                    Arc::clone(&scoring),
                    replica_metrics.clone(),
                );
                Some(
                    tokio::task::spawn_blocking(move || {
                        Follower::start(&kafka, &topic, &publisher, following, metrics)
                    })
                    .await??,
                )
            }
            None => None,
        };

        let stop = Arc::new(AtomicBool::new(false));
        let mut threads =
            vec![
                scoring
                    .spawn(Arc::clone(&stop))
                    .map_err(|source| ServerError::Thread {
                        what: "the scorer",
                        source,
                    })?,
            ];
        if config.serve.follow_latest && !config.serve.model.is_empty() {
            threads.push(
                manager
                    .follow(
                        config.serve.model.clone(),
                        Duration::from_millis(config.serve.watch_interval_ms),
                        Arc::clone(&stop),
                    )
                    .map_err(|source| ServerError::Thread {
                        what: "the registry watch",
                        source,
                    })?,
            );
        }
        let pricing = if config.serve.publish_forecasts {
            Some(PricingFeed::start(
                Arc::clone(&scoring),
                &config.ingest.kafka,
                Some(serving_metrics.clone()),
                config
                    .replicas
                    .enabled
                    .then(|| Arc::clone(ingest.holdings())),
            )?)
        } else {
            None
        };

        // Health: NOT_SERVING until a model is active and ingestion has caught up.
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(AVAILABILITY, tonic_health::ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status(LIVE_QUALITY, tonic_health::ServingStatus::Serving)
            .await;
        let watched = Arc::downgrade(&scoring);
        // A replica the group gave no partition holds no lot and forwards every request: ready
        // with a model once the group has assigned it (nothing) and the broker answers.
        let idle_replica = config.replicas.enabled.then(|| Arc::downgrade(&ingest));
        let health_task = tokio::spawn(async move {
            let mut serving = false;
            let mut quality_holds = true;
            let status_of = |good: bool| {
                if good {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                }
            };
            while let Some(scoring) = watched.upgrade() {
                let ready = scoring.ready()
                    || (scoring.model().is_some()
                        && idle_replica
                            .as_ref()
                            .and_then(std::sync::Weak::upgrade)
                            .is_some_and(|ingest| ingest.status().idle_in_group()));
                let holds = scoring.drifting().is_empty();
                drop(scoring);
                if ready != serving {
                    reporter
                        .set_service_status(AVAILABILITY, status_of(ready))
                        .await;
                    tracing::info!(ready, "health changed");
                    serving = ready;
                }
                if holds != quality_holds {
                    reporter
                        .set_service_status(LIVE_QUALITY, status_of(holds))
                        .await;
                    quality_holds = holds;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        let (reflection, reflection_v1alpha) = reflection(&[
            parkcast_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ])?;
        let context = ServiceContext {
            scoring: Arc::clone(&scoring),
            directory: Arc::new(directory),
            limits: config.limits,
            stale_after_ms: config.serve.lot_stale_after_ms,
            metrics: Some(serving_metrics.clone()),
        };
        let token = Some(config.serve.admin_token.clone()).filter(|token| !token.is_empty());
        let mut availability = AvailabilityService::new(context.clone());
        let models = ModelsService::new(manager, token, Some(serving_metrics));
        let listener = tokio::net::TcpListener::bind(config.serve.grpc_addr)
            .await
            .map_err(|source| ServerError::Bind {
                what: "gRPC",
                address: config.serve.grpc_addr,
                source,
            })?;
        let grpc_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            what: "gRPC",
            address: config.serve.grpc_addr,
            source,
        })?;
        // TCP_NODELAY on every accepted connection, set here because nothing else sets it: tonic's
        // `tcp_nodelay` (on by default) applies only to a socket tonic binds itself, and an
        // incoming stream made from our own listener (bound here to learn the port of
        // `127.0.0.1:0`) leaves the option unset. Nagle's algorithm then ran on every connection,
        // and it stalls multiplexed HTTP/2: when several requests arrive in one segment, each is
        // handled in a task of its own, and hyper's connection task writes whatever answers are
        // ready each time it is woken, so they leave as several small writes. Nagle sends the
        // first and holds the rest until the client ACKs it; a client with nothing more to send
        // delays that ACK (40 ms at least on Linux) or piggybacks it on its next packet. h2load at
        // a fixed rate sends a burst every 10 ms: a 10 ms floor, while the handlers took 2.5 us.
        // HTTP/2 already batches what is ready into one write; the kernel must not hold it back.
        // One of several replicas: advertise what this one owns at the bound address, and forward
        // requests for the others' lots ([`crate::replicas`]).
        let mut advertiser = None;
        if config.replicas.enabled {
            let identity = config
                .replicas
                .identity(&config.ingest.group_id, grpc_addr)?;
            tracing::info!(replica = %identity.replica_id, address = %identity.address, "advertising ownership to the group's replicas");
            let router = Arc::new(Router::new(
                identity,
                Arc::clone(ingest.holdings()),
                &config.replicas,
                replica_metrics,
            ));
            let (replicas, kafka, advertised_topology, holdings, advertised_router) = (
                config.replicas.clone(),
                config.ingest.kafka.clone(),
                Arc::clone(&topology),
                Arc::clone(ingest.holdings()),
                Arc::clone(&router),
            );
            advertiser = Some(
                tokio::task::spawn_blocking(move || {
                    Advertiser::start(
                        &replicas,
                        &kafka,
                        advertised_topology,
                        holdings,
                        advertised_router,
                    )
                })
                .await??,
            );
            availability = availability.with_router(router);
        }
        let _ = rest_services.set(rest::Services {
            availability: availability.clone(),
            models: models.clone(),
            ingest: Some(page_ingest_metrics),
        });
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let (grpc_shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let grpc_task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(reflection)
                .add_service(reflection_v1alpha)
                .add_service(AvailabilityServer::new(availability))
                .add_service(ModelsServer::new(models))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        tracing::info!(grpc = %grpc_addr, metrics = %metrics_addr, "serving");
        Ok(Server {
            grpc_addr,
            metrics_addr,
            ingest,
            scoring,
            context,
            pricing,
            stop,
            threads,
            grpc_shutdown,
            grpc_task,
            tasks: vec![metrics_task, health_task],
            advertiser,
            standby,
        })
    }

    /// Resolves when ingestion has given up restarting its consumer (`ingest.max_restarts`
    /// consecutive failures): the process should stop and exit non-zero.
    pub async fn ingestion_gave_up(&self) {
        while !self.ingest.failed() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tracing::error!("ingestion gave up restarting its consumer; stopping");
    }

    /// Serves until `stop` resolves (a signal, see [`shutdown_signal`]) or ingestion gives up,
    /// then shuts down in order. Ingestion that gave up is [`ServerError::GaveUp`], returned
    /// after the shutdown ran.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<IngestSummary, ServerError> {
        let gave_up = tokio::select! {
            () = stop => false,
            () = self.ingestion_gave_up() => true,
        };
        let summary = self.shutdown().await;
        if gave_up {
            return Err(ServerError::GaveUp {
                shutdown: summary.err().map(Box::new),
            });
        }
        summary
    }

    /// What the services answer from (the demo's table reads it in process).
    pub fn context(&self) -> &ServiceContext {
        &self.context
    }

    /// Stops taking requests, ends watch streams, stops the scorer, registry watch and pricing
    /// feed, then checkpoints, commits and leaves the group.
    pub async fn shutdown(self) -> Result<IngestSummary, ServerError> {
        let started = std::time::Instant::now();
        let elapsed_ms = || started.elapsed().as_millis();
        tracing::info!("stopping: no new requests");
        self.scoring.close();
        let _ = self.grpc_shutdown.send(());
        // In-flight requests get a few seconds to finish; a client idling on an open connection
        // must not hold the exit (service managers kill what overstays its grace period).
        let mut grpc_task = self.grpc_task;
        match tokio::time::timeout(GRPC_DRAIN, &mut grpc_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::error!(error = %error, "the gRPC server failed"),
            Ok(Err(error)) => tracing::error!(error = %error, "the gRPC task failed"),
            Err(_) => {
                tracing::warn!(
                    seconds = GRPC_DRAIN.as_secs(),
                    "connections still open after the drain time; closing them"
                );
                grpc_task.abort();
            }
        }
        tracing::info!(elapsed_ms = elapsed_ms(), "gRPC stopped");
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        tracing::info!(
            elapsed_ms = elapsed_ms(),
            "scorer and registry watch stopped"
        );
        if let Some(pricing) = self.pricing {
            let sent = tokio::task::spawn_blocking(move || pricing.stop())
                .await
                .unwrap_or(0);
            tracing::info!(sent, elapsed_ms = elapsed_ms(), "pricing feed flushed");
        }
        for task in self.tasks {
            task.abort();
        }
        tracing::info!("checkpointing and leaving the group");
        let ingest = self.ingest;
        let summary = tokio::task::spawn_blocking(move || ingest.stop()).await?;
        // After the group has its partitions back: the others keep forwarding to this replica
        // (and retrying) until the new owners claim its lots, rather than answering them as lots
        // nobody has seen.
        if let Some(standby) = self.standby {
            tokio::task::spawn_blocking(move || standby.stop()).await?;
        }
        if let Some(advertiser) = self.advertiser {
            tokio::task::spawn_blocking(move || advertiser.stop()).await?;
            tracing::info!(elapsed_ms = elapsed_ms(), "left the replicas");
        }
        tracing::info!(elapsed_ms = elapsed_ms(), "stopped");
        Ok(summary?)
    }
}

/// The configured model, decoded and checked (none configured, or none published yet: `None`);
/// with version 0 the newest version that passes, refusals of newer ones logged and counted.
async fn initial_model(
    config: &ServiceConfig,
    metrics: &ServingMetrics,
) -> Result<Option<StartupModel>, ServerError> {
    if config.serve.model.is_empty() {
        return Ok(None);
    }
    let (root, name, version) = (
        config.serve.registry.clone(),
        config.serve.model.clone(),
        config.serve.model_version,
    );
    let metrics = metrics.clone();
    tokio::task::spawn_blocking(move || {
        let registry = parkcast_inference::registry::Registry::open(&root);
        match load_startup(&registry, &name, version, Some(&metrics)) {
            Ok(Some(startup)) => Ok(Some(startup)),
            Ok(None) | Err(ActivationError::NoVersion(_)) => {
                tracing::warn!(model = %name, registry = %root.display(), "no version published yet");
                Ok(None)
            }
            Err(source) => Err(ServerError::Model {
                name,
                version,
                source,
            }),
        }
    })
    .await?
}

/// Seeds each lot's grid history (the nine days before `until_ms`) from the warehouse, on the
/// model's grid, through the trainer's own reader; returns the lots seeded.
fn seed_history(
    scoring: &Scoring,
    warehouse: &Warehouse,
    source: &str,
    step_minutes: u32,
    until_ms: i64,
) -> Result<usize, LotsError> {
    let from_ms = until_ms - crate::live::GRID_HISTORY_MS;
    let lots = load_lots(warehouse, source, step_minutes)?;
    let mut seeded = 0;
    for (lot_id, lot) in lots {
        let within = |at: &i64| *at >= from_ms && *at < until_ms;
        let grid = lot.series.iter().filter(|(instant, _)| within(instant));
        let arrivals = lot.arrivals_ms.iter().copied().filter(within);
        let departures = lot.departures_ms.iter().copied().filter(within);
        if scoring.seed(&lot_id, grid, arrivals, departures) {
            seeded += 1;
        }
    }
    Ok(seeded)
}

/// Names, locations and slot types of the served lots from `dim_lot` and `dim_slot`.
pub fn lot_directory(
    warehouse: &Warehouse,
    topology: &TopologyIndex,
) -> Result<LotDirectory, WarehouseError> {
    let mut infos: HashMap<String, LotInfo> = warehouse
        .read_rows::<LotRow>()?
        .into_iter()
        .map(|lot| {
            (
                lot.lot_id.clone(),
                LotInfo {
                    name: lot.name,
                    latitude: lot.latitude,
                    longitude: lot.longitude,
                    slots_by_type: [0; 6],
                },
            )
        })
        .collect();
    for slot in warehouse.read_rows::<SlotRow>()? {
        if let Some(info) = infos.get_mut(&slot.lot_id) {
            info.slots_by_type[slot_type_of(&slot.slot_type) as usize] += 1;
            // Street bays carry their own coordinates; a lot without any takes its first bay's.
            if info.latitude.is_none() {
                info.latitude = slot.latitude;
                info.longitude = slot.longitude;
            }
        }
    }
    Ok(LotDirectory::new(topology, infos))
}

/// Ctrl-C or SIGTERM (how service managers and Kubernetes stop a process).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping on Ctrl-C"),
        () = terminate => tracing::info!("stopping on SIGTERM"),
    }
}
