//! `hotstock serve`: open the data directory, serve HTTP until SIGINT or
//! SIGTERM, then stop accepting, finish the requests in flight, flush the
//! journal and write a checkpoint.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hotstock::durable::{DurableConfig, DurableEngine};
use hotstock::server::api::{Api, ApiOptions};
use hotstock::server::cluster::Cluster;
use hotstock::server::connection::ConnectionLimits;
use hotstock::server::listener;
use hotstock::server::nats::Publisher;

use crate::config::Settings;

pub fn serve(settings: Settings) -> ExitCode {
    if let Err(missing) = exposed_safely(&settings) {
        eprintln!("refusing to listen on {}: {missing}", settings.listen);
        return ExitCode::from(2);
    }
    let Some((runtime, signals)) = runtime_and_signals(settings.workers) else {
        return ExitCode::FAILURE;
    };
    let durable = match durable_config(&settings).and_then(|c| open(&settings, c)) {
        Ok(durable) => durable,
        Err(code) => return code,
    };
    let publisher = match &settings.nats {
        Some(nats) => match Publisher::start(durable.feed_reader(), nats.clone()) {
            Ok(publisher) => Some(publisher),
            Err(error) => {
                tracing::error!("cannot start the NATS publisher: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let cluster = match start_cluster(&settings, &durable) {
        Ok(cluster) => cluster,
        Err(code) => return code,
    };
    let api = api(&settings, &durable, publisher.as_ref(), cluster.clone());
    let limits = ConnectionLimits {
        header_timeout: Duration::from_millis(settings.header_timeout_ms),
        idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
    };
    let served = runtime.block_on(accept_until_signalled(
        settings.listen,
        api,
        settings.max_connections,
        limits,
        signals.received(),
    ));
    // Stop the runtime (and its connections) before closing the engine.
    runtime.shutdown_timeout(Duration::from_secs(5));
    // The publisher keeps its position in the store: stopped first.
    drop(publisher);
    // Unsold leased units go back to the escrow (durably here first).
    stop_cluster(cluster.as_deref());
    exit_code(served, durable.close())
}

/// The data directory's settings, checked (exit code 2 names the flags).
fn durable_config(settings: &Settings) -> Result<DurableConfig, ExitCode> {
    let mut config = DurableConfig::new(&settings.data_dir, settings.durability);
    config.store = settings.store.clone();
    config.events_retention = settings.events_retention;
    config.events_retention_count = settings.events_retention_count;
    config.engine.default_ttl_ms = settings.default_ttl_ms;
    config.engine.refund_window_ms = settings.refund_window_ms;
    config.engine.ended_retention_ms = settings.ended_retention_ms;
    config.engine.idempotency_retention_ms = settings.idempotency_retention_ms;
    config.engine.max_reservations = settings.max_reservations;
    config.engine.max_idempotency_keys = settings.max_idempotency_keys;
    config.engine.max_ttl_ms = settings.max_ttl_ms;
    config.engine.max_extensions = settings.max_extensions;
    config.engine.max_extension_ms = settings.max_extension_ms;
    config.engine.max_hold_ms = settings.max_hold_ms;
    if let Err(error) = config.engine.validate() {
        // `--max-extensions` over 100, `--max-hold-ms` over a week, ...
        eprintln!(
            "{error} (check --default-ttl-ms, --max-ttl-ms, --max-extensions, \
             --max-extension-ms and --max-hold-ms)"
        );
        return Err(ExitCode::from(2));
    }
    Ok(config)
}

/// Opens (recovers) the data directory, saying what it found.
fn open(settings: &Settings, config: DurableConfig) -> Result<DurableEngine, ExitCode> {
    tracing::info!("opening {}", settings.data_dir.display());
    let (durable, report) = DurableEngine::open(config).map_err(|error| {
        tracing::error!("cannot open {}: {error}", settings.data_dir.display());
        ExitCode::FAILURE
    })?;
    tracing::info!(
        "recovered {} SKUs and {} reservations ({} journal events replayed) in {:.2} s",
        report.skus,
        report.reservations,
        report.events_replayed,
        report.elapsed.as_secs_f64()
    );
    Ok(durable)
}

/// The HTTP API over the opened engine, with its readers and cluster.
fn api(
    settings: &Settings,
    durable: &DurableEngine,
    publisher: Option<&Publisher>,
    cluster: Option<Arc<NodeCluster>>,
) -> Arc<Api> {
    let options = ApiOptions {
        auth: settings.auth.clone(),
        max_in_flight: settings.max_in_flight,
        rate_limit: settings.rate_limit,
        sku_rate_limit: settings.sku_rate_limit,
        customer_rate_limit: settings.customer_rate_limit,
        feed: Some(durable.feed_reader()),
        publisher: publisher.map(|p| Arc::clone(p.stats())),
        checkpoints: Some(durable.checkpoint_stats()),
        cluster: cluster.map(|c| c as Arc<dyn Cluster>),
    };
    Arc::new(Api::new(
        durable.engine().clone(),
        durable.public_ids().clone(),
        settings.durability,
        options,
    ))
}

/// Success only when serving and closing both went well.
fn exit_code<E: std::fmt::Display, F: std::fmt::Display>(
    served: Result<(), E>,
    closed: Result<(), F>,
) -> ExitCode {
    match (served, closed) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(error), _) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
        (_, Err(error)) => {
            tracing::error!("closing the data directory: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "postgres")]
type NodeCluster = hotstock::server::cluster::EscrowCluster;
#[cfg(not(feature = "postgres"))]
type NodeCluster = NoCluster;

/// Stands in for the escrow's cluster in a build without PostgreSQL, where
/// `--escrow` is refused before anything starts.
#[cfg(not(feature = "postgres"))]
#[derive(Debug)]
pub struct NoCluster;

#[cfg(not(feature = "postgres"))]
impl Cluster for NoCluster {
    fn node(&self) -> &str {
        ""
    }
    fn change(
        &self,
        _: &str,
        _: i64,
        _: Option<&str>,
    ) -> Result<bool, hotstock::server::cluster::EscrowRefusal> {
        let why = "this build has no PostgreSQL support";
        Err(hotstock::server::cluster::EscrowRefusal::Failed(why.into()))
    }
    fn set_limit(&self, _: &str, _: Option<u32>) -> Result<(), String> {
        Err("this build has no PostgreSQL support".into())
    }
    fn peers(&self) -> &[(String, String)] {
        &[]
    }
    fn view(&self) -> serde_json::Value {
        hotstock::server::cluster::alone()
    }
    fn sku_view(&self, _: &str, _: hotstock::server::cluster::OwnFigures) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// With `--escrow`: settles this node's leases from its journal and starts
/// its lease keeper, before the node serves anyone.
fn start_cluster(
    settings: &Settings,
    durable: &DurableEngine,
) -> Result<Option<Arc<NodeCluster>>, ExitCode> {
    let Some(cluster) = &settings.cluster else {
        return Ok(None);
    };
    #[cfg(feature = "postgres")]
    {
        use hotstock::durable::lease_keeper::KeeperConfig;
        let address = settings.listen.to_string();
        let mut config = KeeperConfig::new(&cluster.node_id, &address, &cluster.escrow_url);
        config.schema = cluster.escrow_schema.clone();
        let engine = Arc::clone(durable.engine());
        let peers = cluster.peers.clone();
        match NodeCluster::start(engine, config, peers, durable.boot()) {
            Ok((node, settlement)) => {
                tracing::info!(
                    "node {}: leases settled on start: {} unbooked back, {} closed, {} kept",
                    cluster.node_id,
                    settlement.unbooked.len(),
                    settlement.closed.len(),
                    settlement.kept.len()
                );
                Ok(Some(Arc::new(node)))
            }
            Err(error) => {
                tracing::error!("cannot join the cluster as {}: {error}", cluster.node_id);
                Err(ExitCode::FAILURE)
            }
        }
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (cluster, durable);
        tracing::error!("--escrow: this build has no PostgreSQL support");
        Err(ExitCode::from(2))
    }
}

fn stop_cluster(cluster: Option<&NodeCluster>) {
    #[cfg(feature = "postgres")]
    if let Some(cluster) = cluster {
        match cluster.stop() {
            Ok(units) => tracing::info!("gave {units} unsold leased units back to the escrow"),
            // Still the node's, durably: settled at the next start, or by
            // `hotstock lease settle`.
            Err(error) => tracing::error!("giving leased units back: {error}"),
        }
    }
    #[cfg(not(feature = "postgres"))]
    let _ = cluster;
}

/// A non-loopback address is the internet, or a network as good as: it
/// needs the operator token, and a service token or a buyer key so that
/// buyer routes (confirm and refund among them) are not open to anyone.
fn exposed_safely(settings: &Settings) -> Result<(), &'static str> {
    if settings.listen.ip().is_loopback() {
        return Ok(());
    }
    if settings.auth.admin_token.is_none() {
        return Err("a non-loopback address needs --admin-token, or operator routes would be open to the network");
    }
    if !settings.auth.is_secured() {
        return Err("a non-loopback address needs at least one --service-token or --buyer-key, or anyone on the network could reserve, confirm and refund");
    }
    Ok(())
}

/// The runtime, and SIGINT and SIGTERM registered on it. Made before
/// recovery (which can take seconds): a signal during it is kept and stops
/// the server cleanly once it listens.
fn runtime_and_signals(
    workers: Option<usize>,
) -> Option<(tokio::runtime::Runtime, ShutdownSignals)> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|error| tracing::error!("cannot start the runtime: {error}"))
        .ok()?;
    let signals = runtime
        .block_on(async { ShutdownSignals::register() })
        .map_err(|error| tracing::error!("cannot register for SIGINT and SIGTERM: {error}"))
        .ok()?;
    Some((runtime, signals))
}

/// Binds, prints the address, and serves until `shutdown` resolves.
async fn accept_until_signalled(
    listen: SocketAddr,
    api: Arc<Api>,
    max_connections: usize,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    // Tests and scripts read this line to find the port of `--listen :0`.
    println!("listening on {}", listener.local_addr()?);
    listener::serve_until(listener, api, max_connections, limits, shutdown).await;
    Ok(())
}

/// SIGINT and SIGTERM, each registered once, as one future.
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Registers the handlers now: from here on neither signal kills the
    /// process; one that arrives before the server listens is kept and
    /// shuts it down as soon as it does.
    fn register() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn received(mut self) {
        let which = tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        };
        tracing::info!("{which} received");
    }
}
