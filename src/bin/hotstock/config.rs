//! `serve`'s settings: one struct, read from the command line and the
//! environment by clap and from `--config FILE.toml` by serde, so there is
//! one list of keys. Precedence: command line, then environment, then the
//! file, then the defaults (`Settings::default_*`).
//!
//! Every field is an `Option` so that "not given" is visible after clap has
//! run: the file fills exactly those, and `resolve` applies the defaults.
//! Numbers that must be positive are `NonZeroU32` in both readers.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, ValueEnum};
use hotstock::durable::journal::Durability;
use hotstock::durable::StoreConfig;
use hotstock::server::auth::AuthConfig;
use hotstock::server::nats::NatsConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityArg {
    Sync,
    Async,
}

/// What `hotstock serve` takes. Keys in the file are the flags with `_`
/// for `-`.
#[derive(clap::Parser, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// A TOML file with any of these settings (keys as the flags, with `_`
    /// for `-`). The command line and the environment win over it.
    #[arg(long, env = "HOTSTOCK_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Address to listen on (a non-loopback address needs --admin-token)
    /// [default: 127.0.0.1:8080].
    #[arg(long, env = "HOTSTOCK_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where the journal and the SQLite store live [default: ./hotstock-data].
    #[arg(long, env = "HOTSTOCK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// `sync`: a 2xx is sent only once the change is on disk [default: sync].
    #[arg(long, env = "HOTSTOCK_DURABILITY", value_enum)]
    durability: Option<DurabilityArg>,
    /// `sqlite` (in the data directory) or a `postgres://` URL [default: sqlite].
    #[arg(long, env = "HOTSTOCK_STORE")]
    store: Option<String>,
    /// Operator routes (PUT/adjust SKUs) need `Authorization: Bearer TOKEN`.
    /// Required to listen on a non-loopback address.
    #[arg(long, env = "HOTSTOCK_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// `NAME=TOKEN` (repeat for several): a service (checkout, payment) that
    /// reserves for any customer, confirms, cancels and refunds. With a
    /// service token or a buyer key, every buyer route needs a token.
    /// Tokens are at least 32 bytes; NAME is what logs and metrics show.
    #[arg(long, env = "HOTSTOCK_SERVICE_TOKENS", value_delimiter = ',')]
    service_token: Option<Vec<String>>,
    /// `KID=SECRET` (repeat for several, so keys rotate): an HS256 key the
    /// shop's login service signs buyer tokens with (JWT header `kid`,
    /// claims `sub` = the customer, `exp`). Secrets are at least 32 bytes.
    #[arg(long, env = "HOTSTOCK_BUYER_KEYS", value_delimiter = ',')]
    buyer_key: Option<Vec<String>>,
    /// Requests handled at once; beyond it, 503 `overloaded` with
    /// Retry-After [default: 4096].
    #[arg(long, env = "HOTSTOCK_MAX_IN_FLIGHT")]
    max_in_flight: Option<NonZeroU32>,
    /// Reservation requests per second, all SKUs together (off by default);
    /// beyond it, 429 `overloaded` with Retry-After.
    #[arg(long, env = "HOTSTOCK_RATE_LIMIT")]
    rate_limit: Option<NonZeroU32>,
    /// Reservation lines per second for any one SKU (off by default).
    #[arg(long, env = "HOTSTOCK_SKU_RATE_LIMIT")]
    sku_rate_limit: Option<NonZeroU32>,
    /// Reservation requests per second for any one customer (off by
    /// default), so one buyer cannot take the whole queue.
    #[arg(long, env = "HOTSTOCK_CUSTOMER_RATE_LIMIT")]
    customer_rate_limit: Option<NonZeroU32>,
    /// Open connections at once; beyond it, new ones wait in the backlog
    /// [default: 10000].
    #[arg(long, env = "HOTSTOCK_MAX_CONNECTIONS")]
    max_connections: Option<NonZeroU32>,
    /// Milliseconds a client may take to send a request head (from its
    /// first byte, or from connecting); slower connections are closed
    /// [default: 10000].
    #[arg(long, env = "HOTSTOCK_HEADER_TIMEOUT_MS")]
    header_timeout_ms: Option<NonZeroU32>,
    /// Milliseconds a keep-alive connection may sit idle, with no request
    /// in flight, before it is closed (at least the header timeout)
    /// [default: 60000].
    #[arg(long, env = "HOTSTOCK_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<NonZeroU32>,
    /// Hours the store's outbox (`hotstock_events`) keeps change-feed
    /// events; older ones are pruned at checkpoints, and a reader asking
    /// for them gets 410 `gone` [default: 168].
    #[arg(long, env = "HOTSTOCK_EVENTS_RETENTION_HOURS")]
    events_retention_hours: Option<NonZeroU32>,
    /// Most change-feed events the outbox keeps (the newest) [default: 10000000].
    #[arg(long, env = "HOTSTOCK_EVENTS_RETENTION_COUNT")]
    events_retention_count: Option<NonZeroU32>,
    /// Publish every change-feed event to NATS JetStream at this
    /// `nats://host:port` (off by default). The broker being down never
    /// blocks a sale: the backlog waits and is published when it returns.
    #[arg(long, env = "HOTSTOCK_NATS_URL")]
    nats_url: Option<String>,
    /// The JetStream stream to publish to, created if absent [default: HOTSTOCK].
    #[arg(long, env = "HOTSTOCK_NATS_STREAM")]
    nats_stream: Option<String>,
    /// Events go to `PREFIX.{type}` (`hotstock.events.reservation.created`)
    /// [default: hotstock.events].
    #[arg(long, env = "HOTSTOCK_NATS_SUBJECT_PREFIX")]
    nats_subject_prefix: Option<String>,
    /// A hold's time-to-live when the request names none, in ms
    /// [default: 600000].
    #[arg(long, env = "HOTSTOCK_DEFAULT_TTL_MS")]
    default_ttl_ms: Option<NonZeroU32>,
    /// Longest time-to-live a request may ask for, in ms (at most a day)
    /// [default: 86400000].
    #[arg(long, env = "HOTSTOCK_MAX_TTL_MS")]
    max_ttl_ms: Option<NonZeroU32>,
    /// How long a confirmed sale stays refundable by its id, in hours; then
    /// its record is pruned (a later refund is an operator adjust). A
    /// longer window keeps every sale's record longer: raise
    /// --max-reservations with it [default: 168].
    #[arg(long, env = "HOTSTOCK_REFUND_WINDOW_HOURS")]
    refund_window_hours: Option<NonZeroU32>,
    /// How long a cancelled, expired or refunded reservation stays
    /// readable, in minutes [default: 60].
    #[arg(long, env = "HOTSTOCK_ENDED_RETENTION_MINUTES")]
    ended_retention_minutes: Option<NonZeroU32>,
    /// How long an idempotency key is remembered, in hours [default: 24].
    #[arg(long, env = "HOTSTOCK_IDEMPOTENCY_RETENTION_HOURS")]
    idempotency_retention_hours: Option<NonZeroU32>,
    /// Most reservation records kept at once (open, confirmed within the
    /// refund window, ended within their retention), kept per shard of 64
    /// and so rounded up to a multiple of 64; past it new ones are refused
    /// (503) and nothing is dropped [default: 8388608].
    #[arg(long, env = "HOTSTOCK_MAX_RESERVATIONS")]
    max_reservations: Option<NonZeroU32>,
    /// Most idempotency keys remembered; past it the oldest are forgotten
    /// [default: 1048576].
    #[arg(long, env = "HOTSTOCK_MAX_IDEMPOTENCY_KEYS")]
    max_idempotency_keys: Option<NonZeroU32>,
    /// Times one hold's deadline may be extended (`POST
    /// /v1/reservations/{id}/extend`); 0 turns extension off [default: 3].
    #[arg(long, env = "HOTSTOCK_MAX_EXTENSIONS")]
    max_extensions: Option<u8>,
    /// Longest time-to-live one extension gives, in ms (longer requests
    /// are capped to it) [default: 600000].
    #[arg(long, env = "HOTSTOCK_MAX_EXTENSION_MS")]
    max_extension_ms: Option<NonZeroU32>,
    /// Latest deadline an extension may give, in ms after the hold was
    /// made [default: 3600000].
    #[arg(long, env = "HOTSTOCK_MAX_HOLD_MS")]
    max_hold_ms: Option<NonZeroU32>,
    /// Threads serving requests [default: one per CPU]. Fewer when several
    /// nodes share a machine (two nodes on two cores: 1 each).
    #[arg(long, env = "HOTSTOCK_WORKERS")]
    workers: Option<NonZeroU32>,
    /// This node's id in a cluster selling from one escrow (needs
    /// --escrow): 1 to 48 of A-Z a-z 0-9 . _ - ; its leases are named
    /// after it, so a data directory always starts with the same id.
    #[arg(long, env = "HOTSTOCK_NODE_ID")]
    node_id: Option<String>,
    /// The escrow: a postgres:// URL holding the stock of record the
    /// cluster's nodes lease units from (docs/cluster.md). Without it the
    /// node sells its own stock alone.
    #[arg(long, env = "HOTSTOCK_ESCROW")]
    escrow: Option<String>,
    /// The escrow's schema, created if absent [default: hotstock_escrow].
    #[arg(long, env = "HOTSTOCK_ESCROW_SCHEMA")]
    escrow_schema: Option<String>,
    /// `ID=HOST:PORT` of another node of the cluster (repeat per node).
    #[arg(long, env = "HOTSTOCK_PEERS", value_delimiter = ',')]
    peer: Option<Vec<String>>,
}

/// A node of a cluster: its id, the escrow, its peers.
#[derive(Clone, Debug)]
// Read only where the escrow is built in (`serve.rs` refuses it otherwise).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub struct ClusterSettings {
    pub node_id: String,
    pub escrow_url: String,
    pub escrow_schema: String,
    /// (id, `HOST:PORT`) of every other node.
    pub peers: Vec<(String, String)>,
}

const HOUR_MS: u64 = 60 * 60 * 1000;

/// Settings with every default applied and every value checked.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub max_in_flight: usize,
    pub rate_limit: Option<u32>,
    pub sku_rate_limit: Option<u32>,
    pub customer_rate_limit: Option<u32>,
    pub max_connections: usize,
    pub header_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub events_retention: std::time::Duration,
    pub events_retention_count: u64,
    pub nats: Option<NatsConfig>,
    pub default_ttl_ms: u64,
    pub max_ttl_ms: u64,
    pub refund_window_ms: u64,
    pub ended_retention_ms: u64,
    pub idempotency_retention_ms: u64,
    pub max_reservations: usize,
    pub max_idempotency_keys: usize,
    pub max_extensions: u8,
    pub max_extension_ms: u64,
    pub max_hold_ms: u64,
    /// `Some` for a node of a cluster (`--escrow`).
    pub cluster: Option<ClusterSettings>,
    /// Request-serving threads (`None`: one per CPU).
    pub workers: Option<usize>,
}

impl ServeSettings {
    /// Fills what the command line and environment left unset from the
    /// file, then applies the defaults. Errors name the file and the key.
    pub fn resolve(self) -> Result<Settings, String> {
        let merged = match self.config.clone() {
            Some(path) => self.filled_from(&path)?,
            None => self,
        };
        merged.with_defaults()
    }

    fn filled_from(self, path: &Path) -> Result<ServeSettings, String> {
        let file = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {file}: {e}"))?;
        let table: toml::Table = text.parse().map_err(|e| format!("{file}: {e}"))?;
        // The keys clap knows are the keys the file may use: one list.
        let command = ServeSettings::command();
        let known =
            |key: &str| key != "config" && command.get_arguments().any(|arg| arg.get_id() == key);
        if let Some(key) = table.keys().find(|key| !known(key)) {
            return Err(format!("{file}: unknown setting {key:?}"));
        }
        // Both sides as JSON objects: a key the command line or the
        // environment set (not null) wins over the file's.
        let from_file = serde_json::to_value(&table).map_err(|e| format!("{file}: {e}"))?;
        let mut merged = serde_json::to_value(&self).map_err(|e| e.to_string())?;
        if let (Some(merged), Some(from_file)) = (merged.as_object_mut(), from_file.as_object()) {
            for (key, value) in from_file {
                if merged.get(key).is_none_or(serde_json::Value::is_null) {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
        let mut settings: ServeSettings =
            serde_json::from_value(merged).map_err(|e| format!("{file}: {e}"))?;
        settings.config = self.config;
        Ok(settings)
    }

    fn with_defaults(self) -> Result<Settings, String> {
        let cluster = cluster_settings(self.node_id, self.escrow, self.escrow_schema, self.peer)?;
        let positive = |value: Option<NonZeroU32>, default: u32| value.map_or(default, |v| v.get());
        Ok(Settings {
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from("./hotstock-data")),
            durability: match self.durability.unwrap_or(DurabilityArg::Sync) {
                DurabilityArg::Sync => Durability::Sync,
                DurabilityArg::Async => Durability::Async,
            },
            store: store_config(self.store.as_deref().unwrap_or("sqlite"))?,
            auth: auth_config(
                self.admin_token,
                self.service_token.unwrap_or_default(),
                self.buyer_key.unwrap_or_default(),
            )?,
            max_in_flight: positive(self.max_in_flight, 4096) as usize,
            rate_limit: self.rate_limit.map(NonZeroU32::get),
            sku_rate_limit: self.sku_rate_limit.map(NonZeroU32::get),
            customer_rate_limit: self.customer_rate_limit.map(NonZeroU32::get),
            max_connections: positive(self.max_connections, 10_000) as usize,
            header_timeout_ms: u64::from(positive(self.header_timeout_ms, 10_000)),
            idle_timeout_ms: u64::from(positive(self.idle_timeout_ms, 60_000)),
            events_retention: std::time::Duration::from_secs(
                u64::from(positive(self.events_retention_hours, 168)) * 3600,
            ),
            events_retention_count: u64::from(positive(self.events_retention_count, 10_000_000)),
            nats: nats_config(self.nats_url, self.nats_stream, self.nats_subject_prefix)?.map(
                |mut nats| {
                    nats.node = cluster.as_ref().map(|c| c.node_id.clone());
                    nats
                },
            ),
            default_ttl_ms: u64::from(positive(self.default_ttl_ms, 600_000)),
            max_ttl_ms: u64::from(positive(self.max_ttl_ms, 86_400_000)),
            refund_window_ms: u64::from(positive(self.refund_window_hours, 168)) * HOUR_MS,
            ended_retention_ms: u64::from(positive(self.ended_retention_minutes, 60)) * 60_000,
            idempotency_retention_ms: u64::from(positive(self.idempotency_retention_hours, 24))
                * HOUR_MS,
            max_reservations: positive(self.max_reservations, 1 << 23) as usize,
            max_idempotency_keys: positive(self.max_idempotency_keys, 1 << 20) as usize,
            max_extensions: self.max_extensions.unwrap_or(3),
            max_extension_ms: u64::from(positive(self.max_extension_ms, 600_000)),
            max_hold_ms: u64::from(positive(self.max_hold_ms, 3_600_000)),
            cluster,
            workers: self.workers.map(|w| w.get() as usize),
        })
    }
}

/// The roles from `--admin-token`, `--service-token NAME=TOKEN` and
/// `--buyer-key KID=SECRET`, checked. Messages name the flag and the name,
/// never a secret.
fn auth_config(
    admin_token: Option<String>,
    service_tokens: Vec<String>,
    buyer_keys: Vec<String>,
) -> Result<AuthConfig, String> {
    let named = |flag: &str, what: &str, pairs: Vec<String>| {
        pairs
            .into_iter()
            .map(|pair| {
                let (name, secret) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
                let good_name = !name.is_empty()
                    && name.len() <= 64
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !good_name || secret.is_empty() {
                    // The pair may hold a secret: show only what precedes `=`.
                    let shown: String = name.chars().take(64).collect();
                    return Err(format!(
                        "{flag} takes {what}=SECRET with a {what} of letters, digits, `-`, `_` or `.` (at most 64) and a non-empty secret; got {shown:?}=…"
                    ));
                }
                Ok((name.to_owned(), secret.to_owned()))
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let config = AuthConfig {
        admin_token,
        service_tokens: named("--service-token", "NAME", service_tokens)?,
        buyer_keys: named("--buyer-key", "KID", buyer_keys)?
            .into_iter()
            .map(|(kid, secret)| (kid, secret.into_bytes()))
            .collect(),
    };
    config.validate()?;
    Ok(config)
}

/// The JetStream publisher's settings, checked; `None` without `--nats-url`.
fn nats_config(
    url: Option<String>,
    stream: Option<String>,
    prefix: Option<String>,
) -> Result<Option<NatsConfig>, String> {
    let Some(url) = url else {
        if stream.is_some() || prefix.is_some() {
            return Err("--nats-stream and --nats-subject-prefix need --nats-url".into());
        }
        return Ok(None);
    };
    let config = NatsConfig {
        url,
        stream: stream.unwrap_or_else(|| "HOTSTOCK".into()),
        subject_prefix: prefix.unwrap_or_else(|| "hotstock.events".into()),
        node: None,
    };
    config.validate()?;
    Ok(Some(config))
}

/// `--node-id`, `--escrow`, `--escrow-schema` and `--peer`, checked:
/// all or none (a peer without an escrow would sell the same stock twice).
fn cluster_settings(
    node_id: Option<String>,
    escrow: Option<String>,
    schema: Option<String>,
    peers: Option<Vec<String>>,
) -> Result<Option<ClusterSettings>, String> {
    let Some(escrow_url) = escrow else {
        if node_id.is_some() || schema.is_some() || peers.is_some() {
            return Err(
                "--node-id, --escrow-schema and --peer need --escrow (the stock of \
                        record the nodes share); without it a node sells its own stock alone"
                    .into(),
            );
        }
        return Ok(None);
    };
    let postgres = escrow_url.starts_with("postgres://") || escrow_url.starts_with("postgresql://");
    if !postgres {
        return Err("--escrow must be a postgres:// URL".into());
    }
    let node_id = node_id.ok_or("--escrow needs --node-id (this node's id in the cluster)")?;
    #[cfg(feature = "postgres")]
    hotstock::durable::lease_keeper::validate_node_id(&node_id).map_err(|e| e.to_string())?;
    let peers = (peers.unwrap_or_default().into_iter())
        .map(|peer| match peer.split_once('=') {
            Some((id, address)) if !id.is_empty() && address.contains(':') => {
                Ok((id.to_owned(), address.to_owned()))
            }
            _ => Err(format!("--peer takes ID=HOST:PORT, not {peer:?}")),
        })
        .collect::<Result<Vec<_>, String>>()?;
    if peers.iter().any(|(id, _)| *id == node_id) {
        return Err(format!("--peer names this node's own id {node_id:?}"));
    }
    Ok(Some(ClusterSettings {
        node_id,
        escrow_url,
        escrow_schema: schema.unwrap_or_else(|| "hotstock_escrow".into()),
        peers,
    }))
}

/// `--store`: `sqlite`, or a PostgreSQL URL in a build with PostgreSQL.
fn store_config(store: &str) -> Result<StoreConfig, String> {
    let postgres = store.starts_with("postgres://") || store.starts_with("postgresql://");
    match store {
        "sqlite" => Ok(StoreConfig::Sqlite),
        #[cfg(feature = "postgres")]
        url if postgres => Ok(StoreConfig::Postgres {
            url: url.to_owned(),
            schema: "hotstock".to_owned(),
        }),
        _ if postgres => Err(
            "--store: this build has no PostgreSQL support (it was built without the \
             `postgres` feature); use `sqlite` or a build with it"
                .to_owned(),
        ),
        other => Err(format!(
            "--store must be `sqlite` or a postgres:// URL, not {other:?}"
        )),
    }
}
