//! The contenders: each prepares a market holding a sale's stock, then lets
//! the sale's buyers loose on it.
//!
//! A market is torn down when dropped: servers get SIGTERM, PostgreSQL
//! schemas and Redis keys are deleted, temporary directories removed.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine};
use hotstock::{ChangeSink, Engine, EngineConfig, EngineError, Line, Order, SkuId};

use crate::endpoints::{ArticleKeys, BUY_SCRIPT, CONFIRM_SCRIPT, HOLD_SCRIPT};
use crate::loadgen::{self, Flavor, LoadPlan};
use crate::sale::{Mode, Outcome, Recorder, Rng, Sale, Stock};

/// Where the contenders live and how many buyers they get.
#[derive(Clone, Debug)]
pub struct Setting {
    pub hotstock_bin: PathBuf,
    pub bench_bin: PathBuf,
    pub redis_url: String,
    pub postgres_url: String,
    /// Concurrent buyers (threads or keep-alive connections).
    pub buyers: usize,
    /// Concurrent buyers for the contenders that hold a PostgreSQL
    /// connection each.
    pub db_buyers: usize,
    /// Threads of the HTTP load generator.
    pub client_threads: usize,
    pub scratch: PathBuf,
}

/// A prepared sale, ready for buyers.
pub trait Market {
    /// Runs the buyers until the sale is over.
    fn sell(&mut self, sale: &Arc<Sale>) -> Result<(), String>;
    /// CPU seconds used so far by the server process, when there is one.
    fn server_cpu_seconds(&self) -> Option<f64> {
        None
    }
}

/// User plus system CPU seconds of a process (all its threads).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 / ticks.max(1) as f64)
}

/// The server behind an HTTP contender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Hotstock(Durability),
    /// This many `hotstock serve` nodes (async durability) leasing from
    /// one escrow on the PostgreSQL of `--postgres`, knowing each other.
    Cluster(usize),
    Article,
    Bare,
}

/// The PostgreSQL remedies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Postgres {
    /// `UPDATE … SET units = units - 1 WHERE id = $1 AND units >= 1`.
    Conditional,
    /// Read units and version, write back where the version is unchanged,
    /// retry on a lost race.
    Optimistic,
    /// Read, then write back `units - 1` with no check: oversells.
    Naive,
    /// The naive read-then-write behind a Redis lock (SET NX PX + a Lua
    /// compare-and-delete release).
    RedisLock,
}

/// One contender of the showdown.
#[derive(Clone, Debug)]
pub enum Contender {
    InProcess {
        journal: bool,
    },
    /// `batch` orders per request (1: `POST /v1/reservations`; more:
    /// `POST /v1/reservations/batch`, hotstock only).
    Http {
        server: Server,
        pipeline: usize,
        batch: usize,
    },
    RedisLua,
    Postgres(Postgres),
}

impl Contender {
    pub fn supports(&self, mode: Mode) -> bool {
        match self {
            // A cluster sells the hot SKU only: ten thousand SKUs would be
            // ten thousand leases per node, another benchmark.
            Contender::Http {
                server: Server::Cluster(_),
                ..
            } => mode == Mode::Hot,
            Contender::Http { batch, .. } if *batch > 1 => {
                matches!(mode, Mode::Hot | Mode::Uniform)
            }
            Contender::Http { pipeline, .. } => mode == Mode::Hot || *pipeline == 1,
            // The sold-out crowd compares HTTP endpoints with the bare one.
            Contender::Postgres(_) | Contender::InProcess { .. } | Contender::RedisLua
                if mode == Mode::SoldOut =>
            {
                false
            }
            Contender::Postgres(variant) => {
                mode != Mode::HoldConfirm || *variant == Postgres::Conditional
            }
            Contender::InProcess { .. } | Contender::RedisLua => true,
        }
    }

    /// Sets up `stock` for the sale; `rate` paces HTTP buyers.
    pub fn prepare(
        &self,
        setting: &Setting,
        mode: Mode,
        stock: Stock,
        rate: Option<f64>,
    ) -> Result<Box<dyn Market>, String> {
        match self {
            Contender::InProcess { journal: false } => {
                let engine = Engine::new(EngineConfig::default()).map_err(|e| e.to_string())?;
                Ok(Box::new(InProcess::new(
                    setting,
                    mode,
                    stock,
                    Arc::new(engine),
                    None,
                )?))
            }
            Contender::InProcess { journal: true } => {
                let dir = scratch_dir(&setting.scratch, "inproc")?;
                let (durable, _) = DurableEngine::open(DurableConfig::new(&dir, Durability::Async))
                    .map_err(|e| format!("cannot open a journal in {}: {e}", dir.display()))?;
                let engine = Arc::clone(durable.engine());
                let journaled = Some((durable, dir));
                Ok(Box::new(InProcess::new(
                    setting, mode, stock, engine, journaled,
                )?))
            }
            Contender::Http {
                server,
                pipeline,
                batch,
            } => Ok(Box::new(HttpMarket::new(
                setting,
                *server,
                mode,
                stock,
                (*pipeline, *batch),
                rate,
            )?)),
            Contender::RedisLua => Ok(Box::new(RedisLua::new(setting, mode, stock)?)),
            Contender::Postgres(variant) => {
                Ok(Box::new(PgMarket::new(setting, *variant, mode, stock)?))
            }
        }
    }
}

/// Runs one buyer per client on its own thread until the sale is over.
/// `buy` makes one attempt on the SKU; one attempt in `sample_every` is
/// timed.
fn drive_threads<C: Send>(
    sale: &Arc<Sale>,
    clients: &mut [C],
    sample_every: u64,
    buy: impl Fn(&mut C, usize) -> Result<Outcome, String> + Sync,
) -> Result<(), String> {
    std::thread::scope(|scope| {
        for (index, client) in clients.iter_mut().enumerate() {
            let buy = &buy;
            std::thread::Builder::new()
                .name(format!("buyer-{index}"))
                .spawn_scoped(scope, move || {
                    let mut rng = Rng::new(index as u64 + 1);
                    let publish_every = if sample_every > 1 { 4096 } else { 16 };
                    let mut recorder = Recorder::new(sample_every, publish_every);
                    while !sale.is_over() {
                        let Some(sku) = sale.pick(&mut rng) else {
                            break;
                        };
                        let timed = recorder.should_time();
                        let started = timed.then(std::time::Instant::now);
                        match buy(client, sku) {
                            Ok(outcome) => {
                                let latency = started.map_or(0, |s| s.elapsed().as_nanos() as u64);
                                sale.record(sku, outcome, &mut recorder, latency);
                            }
                            Err(error) => {
                                sale.error(|| error);
                                break;
                            }
                        }
                    }
                    sale.flush(&mut recorder);
                })
                .map_err(|e| format!("cannot start a buyer thread: {e}"))?;
        }
        Ok(())
    })
}

// ---- hotstock in-process ---------------------------------------------------

struct InProcess<S: ChangeSink> {
    engine: Arc<Engine<S>>,
    /// Keeps the journal open (and closes it) when journaled.
    durable: Option<DurableEngine>,
    skus: Vec<SkuId>,
    mode: Mode,
    buyers: usize,
    dir: Option<PathBuf>,
}

impl<S: ChangeSink> InProcess<S> {
    /// Sells through `engine`; `journaled` is the durable engine behind it
    /// and its scratch directory, closed and removed on drop.
    fn new(
        setting: &Setting,
        mode: Mode,
        stock: Stock,
        engine: Arc<Engine<S>>,
        journaled: Option<(DurableEngine, PathBuf)>,
    ) -> Result<InProcess<S>, String> {
        let (durable, dir) = journaled.unzip();
        let skus = (0..stock.skus)
            .map(|s| {
                engine
                    .put_sku(&Stock::name(s), stock.units_of(s), None, None)
                    .map(|(id, _)| id)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if mode != Mode::Uniform {
            // What an operator does before a flash sale: spread the SKU's
            // stock over every CPU's stripe ahead of the rush.
            engine.prepare_hot(skus[0]).map_err(|e| e.to_string())?;
        }
        Ok(InProcess {
            engine,
            durable,
            skus,
            mode,
            buyers: setting.buyers,
            dir,
        })
    }
}

impl<S: ChangeSink> Market for InProcess<S> {
    fn sell(&mut self, sale: &Arc<Sale>) -> Result<(), String> {
        let engine = &*self.engine;
        let skus = &self.skus;
        let mode = self.mode;
        let mut clients = vec![(); self.buyers];
        drive_threads(sale, &mut clients, 64, |_, sku| {
            let outcome = match mode {
                Mode::Hot | Mode::Uniform | Mode::SoldOut => engine.sell(skus[sku], 1),
                Mode::HoldConfirm => {
                    let lines = [Line {
                        sku: skus[sku],
                        quantity: 1,
                    }];
                    engine
                        .reserve(&Order {
                            lines: &lines,
                            ttl_ms: Some(600_000),
                            ..Order::default()
                        })
                        .and_then(|receipt| engine.confirm(receipt.id).map(|_| ()))
                }
            };
            match outcome {
                Ok(()) => Ok(Outcome::Sold),
                Err(EngineError::SoldOut { .. }) => Ok(Outcome::SoldOut),
                Err(error) => Err(error.to_string()),
            }
        })
    }
}

impl<S: ChangeSink> Drop for InProcess<S> {
    fn drop(&mut self) {
        if let Some(durable) = self.durable.take() {
            if let Err(error) = durable.close() {
                eprintln!("closing the in-process journal: {error}");
            }
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

// ---- HTTP servers ----------------------------------------------------------

/// A server process; SIGTERM and reaped when dropped.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn spawn(mut command: Command, what: &str) -> Result<ServerProcess, String> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        // The server prints `listening on ADDR` once bound, or exits.
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        break addr.trim().parse::<SocketAddr>().map_err(|e| e.to_string());
                    }
                }
                Some(Err(error)) => break Err(error.to_string()),
                None => break Err(format!("{what} exited before listening")),
            }
        };
        let mut process = ServerProcess {
            child,
            addr: "0.0.0.0:0".parse().expect("valid"),
        };
        process.addr = addr?;
        // Drain the rest so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(process)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which is not yet reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct HttpMarket {
    plan: LoadPlan,
    // Declared before `dir` and `redis`: the servers stop first.
    servers: Vec<ServerProcess>,
    dir: Option<PathBuf>,
    redis: Option<(redis::Connection, ArticleKeys, usize)>,
    /// A cluster's escrow: the PostgreSQL URL and the schema to drop.
    escrow: Option<(String, String)>,
}

/// Connections of a batch row (`benches/http/batch.sh` uses as many).
const BATCH_CONNECTIONS: usize = 4;

impl HttpMarket {
    fn new(
        setting: &Setting,
        server: Server,
        mode: Mode,
        stock: Stock,
        (pipeline, batch): (usize, usize),
        rate: Option<f64>,
    ) -> Result<HttpMarket, String> {
        let mut dir = None;
        let mut redis = None;
        if let Server::Cluster(nodes) = server {
            return HttpMarket::cluster(setting, nodes, stock, rate);
        }
        let (process, flavor) = match server {
            Server::Hotstock(durability) => {
                let data = scratch_dir(&setting.scratch, "serve")?;
                dir = Some(data.clone());
                import_stock(&setting.hotstock_bin, &data, stock)?;
                let mut command = Command::new(&setting.hotstock_bin);
                command
                    .arg("serve")
                    .args(["--listen", "127.0.0.1:0", "--max-in-flight", "1000000"])
                    .args(["--max-connections", "100000"])
                    // A million purchases a second leave a million confirmed
                    // records a second (kept for refunds): the default table
                    // of 8M would refuse orders a few seconds in.
                    .args(["--max-reservations", "33554432"])
                    .arg("--durability")
                    .arg(if durability == Durability::Sync {
                        "sync"
                    } else {
                        "async"
                    })
                    .arg("--data-dir")
                    .arg(data.join("data"));
                (
                    ServerProcess::spawn(command, "hotstock serve")?,
                    Flavor::Hotstock,
                )
            }
            Server::Cluster(_) => unreachable!("started above"),
            Server::Bare => {
                let mut command = Command::new(&setting.bench_bin);
                command
                    .args([
                        "serve-bare",
                        "--listen",
                        "127.0.0.1:0",
                        "--mode",
                        mode.name(),
                    ])
                    .arg("--units")
                    .arg(stock.units.to_string());
                (
                    ServerProcess::spawn(command, "the bare endpoint")?,
                    Flavor::Simple,
                )
            }
            Server::Article => {
                let (mut connection, keys) = redis_stock(&setting.redis_url, stock)?;
                let mut command = Command::new(&setting.bench_bin);
                command
                    .args(["serve-article", "--listen", "127.0.0.1:0", "--redis"])
                    .arg(&setting.redis_url)
                    .arg("--prefix")
                    .arg(&keys.prefix);
                let process = ServerProcess::spawn(command, "the article's endpoint");
                let process = match process {
                    Ok(process) => process,
                    Err(error) => {
                        delete_keys(&mut connection, &keys, stock.skus);
                        return Err(error);
                    }
                };
                redis = Some((connection, keys, stock.skus));
                (process, Flavor::Simple)
            }
        };
        let plan = LoadPlan {
            addrs: vec![process.addr],
            cluster: false,
            flavor,
            mode,
            // A batching gateway holds a few connections, not one a buyer.
            connections: if batch > 1 {
                BATCH_CONNECTIONS
            } else {
                setting.buyers
            },
            threads: setting.client_threads,
            pipeline,
            batch,
            rate,
        };
        Ok(HttpMarket {
            plan,
            servers: vec![process],
            dir,
            redis,
            escrow: None,
        })
    }

    /// `nodes` nodes on one escrow (a schema of its own), the stock
    /// received through the first, the sale starting once every node has
    /// leased units of it.
    fn cluster(
        setting: &Setting,
        nodes: usize,
        stock: Stock,
        rate: Option<f64>,
    ) -> Result<HttpMarket, String> {
        let data = scratch_dir(&setting.scratch, "cluster")?;
        let schema = format!(
            "hotstock_showdown_{}_{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        );
        let mut market = HttpMarket {
            plan: LoadPlan {
                addrs: Vec::new(),
                cluster: true,
                flavor: Flavor::Hotstock,
                mode: Mode::Hot,
                connections: setting.buyers,
                threads: setting.client_threads,
                pipeline: 1,
                batch: 1,
                rate,
            },
            servers: Vec::new(),
            dir: Some(data.clone()),
            redis: None,
            escrow: Some((setting.postgres_url.clone(), schema.clone())),
        };
        let listen: Vec<String> = (0..nodes)
            .map(|_| free_port().map(|port| format!("127.0.0.1:{port}")))
            .collect::<Result<_, _>>()?;
        for (i, address) in listen.iter().enumerate() {
            let mut command = Command::new(&setting.hotstock_bin);
            command
                .arg("serve")
                .args(["--listen", address, "--max-in-flight", "1000000"])
                .args(["--max-connections", "100000", "--durability", "async"])
                .arg("--data-dir")
                .arg(data.join(format!("n{i}")))
                .args(["--node-id", &format!("n{i}")])
                .args([
                    "--escrow",
                    &setting.postgres_url,
                    "--escrow-schema",
                    &schema,
                ]);
            for (j, peer) in listen.iter().enumerate().filter(|(j, _)| *j != i) {
                command.args(["--peer", &format!("n{j}={peer}")]);
            }
            let process = ServerProcess::spawn(command, "hotstock serve (a cluster's node)")?;
            market.plan.addrs.push(process.addr);
            market.servers.push(process);
        }
        for sku in 0..stock.skus {
            let body = format!("{{\"delta\": {}}}", stock.units_of(sku));
            let path = format!("/v1/skus/{}/adjust", Stock::name(sku));
            let (status, answer) = http_call(market.plan.addrs[0], "POST", &path, &body)?;
            if status != 202 {
                return Err(format!(
                    "the escrow did not take the stock: {status} {answer}"
                ));
            }
        }
        // Every node holds units before the first buyer arrives.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for &addr in &market.plan.addrs {
            let path = format!("/v1/skus/{}", Stock::name(0));
            loop {
                let (status, answer) = http_call(addr, "GET", &path, "")?;
                let own = serde_json::from_str::<serde_json::Value>(&answer)
                    .ok()
                    .and_then(|doc| doc["available"].as_u64());
                if status == 200 && own > Some(0) {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(format!("node {addr} leased nothing in 30 s: {answer}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(market)
    }
}

/// A port free now (for nodes that must know each other's addresses
/// before they start).
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// One request on a fresh connection: the status and the body.
fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let status = (answer.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr} answered no status: {answer}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

impl Market for HttpMarket {
    fn sell(&mut self, sale: &Arc<Sale>) -> Result<(), String> {
        if self.plan.cluster {
            sale.end_by_count();
        }
        let sold = loadgen::drive(&self.plan, sale);
        if self.plan.cluster {
            eprintln!(
                "hotstock-bench: {} nodes: {} answers of \"sold out here\" while the sale went on",
                self.servers.len(),
                sale.not_here()
            );
        }
        sold
    }

    fn server_cpu_seconds(&self) -> Option<f64> {
        (self.servers.iter())
            .map(|server| process_cpu_seconds(server.child.id()))
            .sum()
    }
}

impl Drop for HttpMarket {
    fn drop(&mut self) {
        // The nodes first: at shutdown each gives its leases back to the
        // escrow, which must still be there.
        self.servers.clear();
        if let Some((url, schema)) = &self.escrow {
            if let Ok(mut client) = postgres::Client::connect(url, postgres::NoTls) {
                let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
            }
        }
        if let Some((connection, keys, skus)) = &mut self.redis {
            delete_keys(connection, keys, *skus);
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Loads the stock with `hotstock import`, as an operator would before the
/// sale, into a data directory no server is using yet.
fn import_stock(bin: &Path, dir: &Path, stock: Stock) -> Result<(), String> {
    let csv = dir.join("stock.csv");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&csv).map_err(|e| format!("{}: {e}", csv.display()))?,
    );
    writeln!(file, "sku,available").map_err(|e| e.to_string())?;
    for s in 0..stock.skus {
        writeln!(file, "{},{}", Stock::name(s), stock.units_of(s)).map_err(|e| e.to_string())?;
    }
    file.flush().map_err(|e| e.to_string())?;
    drop(file);
    let output = Command::new(bin)
        .arg("import")
        .arg(&csv)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !output.status.success() {
        return Err(format!(
            "hotstock import failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

// ---- Redis -----------------------------------------------------------------

static RUN: AtomicU64 = AtomicU64::new(0);

/// A key prefix no other run (or process) shares.
fn unique_prefix() -> String {
    format!(
        "hotstock-bench:{}:{}:",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    )
}

fn redis_connect(url: &str) -> Result<redis::Connection, String> {
    redis::Client::open(url)
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
        .map_err(|e| format!("Redis at {url} is not reachable: {e}"))
}

/// Sets every SKU's stock key under a fresh prefix.
fn redis_stock(url: &str, stock: Stock) -> Result<(redis::Connection, ArticleKeys), String> {
    let mut connection = redis_connect(url)?;
    let keys = ArticleKeys {
        prefix: unique_prefix(),
    };
    let mut pipe = redis::pipe();
    for s in 0..stock.skus {
        pipe.set(keys.stock(&Stock::name(s)), stock.units_of(s))
            .ignore();
    }
    pipe.query::<()>(&mut connection)
        .map_err(|e| format!("cannot set the stock in Redis: {e}"))?;
    Ok((connection, keys))
}

/// Deletes what a run wrote under its prefix.
fn delete_keys(connection: &mut redis::Connection, keys: &ArticleKeys, skus: usize) {
    let mut names: Vec<String> = (0..skus).map(|s| keys.stock(&Stock::name(s))).collect();
    names.push(keys.hold_sequence());
    names.push(keys.sold());
    let holds: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", keys.hold_prefix()))
        .query(connection)
        .unwrap_or_default();
    names.extend(holds);
    for chunk in names.chunks(1000) {
        let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query(connection);
    }
}

struct RedisLua {
    connections: Vec<redis::Connection>,
    keys: ArticleKeys,
    mode: Mode,
    skus: usize,
}

impl RedisLua {
    fn new(setting: &Setting, mode: Mode, stock: Stock) -> Result<RedisLua, String> {
        let (first, keys) = redis_stock(&setting.redis_url, stock)?;
        let mut connections = vec![first];
        for _ in 1..setting.buyers {
            connections.push(redis_connect(&setting.redis_url)?);
        }
        Ok(RedisLua {
            connections,
            keys,
            mode,
            skus: stock.skus,
        })
    }
}

impl Market for RedisLua {
    fn sell(&mut self, sale: &Arc<Sale>) -> Result<(), String> {
        let buy = redis::Script::new(BUY_SCRIPT);
        let hold = redis::Script::new(HOLD_SCRIPT);
        let confirm = redis::Script::new(CONFIRM_SCRIPT);
        let stock_keys: Vec<String> = (0..self.skus)
            .map(|s| self.keys.stock(&Stock::name(s)))
            .collect();
        let keys = &self.keys;
        let mode = self.mode;
        let failed = |e: redis::RedisError| format!("Redis: {e}");
        drive_threads(
            sale,
            &mut self.connections,
            1,
            |connection, sku| match mode {
                Mode::Hot | Mode::Uniform | Mode::SoldOut => {
                    let bought: i64 = buy
                        .key(&stock_keys[sku])
                        .arg(1)
                        .invoke(connection)
                        .map_err(failed)?;
                    Ok(if bought == 1 {
                        Outcome::Sold
                    } else {
                        Outcome::SoldOut
                    })
                }
                Mode::HoldConfirm => {
                    let id: i64 = hold
                        .key(&stock_keys[sku])
                        .key(keys.hold_sequence())
                        .arg(1)
                        .arg(600_000)
                        .arg(keys.hold_prefix())
                        .invoke(connection)
                        .map_err(failed)?;
                    if id == 0 {
                        return Ok(Outcome::SoldOut);
                    }
                    let confirmed: i64 = confirm
                        .key(format!("{}{id}", keys.hold_prefix()))
                        .key(keys.sold())
                        .invoke(connection)
                        .map_err(failed)?;
                    if confirmed == 1 {
                        Ok(Outcome::Sold)
                    } else {
                        Err(format!("hold {id} could not be confirmed"))
                    }
                }
            },
        )
    }
}

impl Drop for RedisLua {
    fn drop(&mut self) {
        if let Some(connection) = self.connections.first_mut() {
            delete_keys(connection, &self.keys, self.skus);
        }
    }
}

// ---- PostgreSQL ------------------------------------------------------------

/// One buyer's PostgreSQL connection with its prepared statements.
struct PgBuyer {
    client: postgres::Client,
    read: postgres::Statement,
    write: postgres::Statement,
    conditional: postgres::Statement,
    optimistic: postgres::Statement,
    hold: postgres::Statement,
    confirm: postgres::Statement,
    lock: Option<(redis::Connection, Rng, u64)>,
}

struct PgMarket {
    variant: Postgres,
    mode: Mode,
    buyers: Vec<PgBuyer>,
    admin: postgres::Client,
    schema: String,
    lock_prefix: String,
}

fn pg_connect(url: &str) -> Result<postgres::Client, String> {
    postgres::Client::connect(url, postgres::NoTls)
        .map_err(|e| format!("PostgreSQL at {url} is not reachable: {e}"))
}

impl PgMarket {
    fn new(
        setting: &Setting,
        variant: Postgres,
        mode: Mode,
        stock: Stock,
    ) -> Result<PgMarket, String> {
        let url = &setting.postgres_url;
        let mut admin = pg_connect(url)?;
        let schema = unique_prefix()
            .replace([':', '-'], "_")
            .trim_end_matches('_')
            .to_owned();
        let failed = |e: postgres::Error| format!("PostgreSQL: {e}");
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.stock (id int PRIMARY KEY, units bigint NOT NULL, version bigint NOT NULL DEFAULT 0);
                 CREATE TABLE {schema}.holds (id bigserial PRIMARY KEY, sku int NOT NULL, units int NOT NULL,
                     confirmed boolean NOT NULL DEFAULT false, expires_at timestamptz NOT NULL);"
            ))
            .map_err(failed)?;
        let mut market = PgMarket {
            variant,
            mode,
            buyers: Vec::new(),
            admin,
            schema,
            lock_prefix: unique_prefix(),
        };
        let rows: Vec<String> = (0..stock.skus)
            .map(|s| format!("({s},{})", stock.units_of(s)))
            .collect();
        market
            .admin
            .batch_execute(&format!(
                "INSERT INTO {}.stock (id, units) VALUES {}",
                market.schema,
                rows.join(",")
            ))
            .map_err(failed)?;
        for b in 0..setting.db_buyers {
            let mut client = pg_connect(url)?;
            let s = &market.schema;
            let read = client
                .prepare(&format!(
                    "SELECT units, version FROM {s}.stock WHERE id = $1"
                ))
                .map_err(failed)?;
            let write = client
                .prepare(&format!("UPDATE {s}.stock SET units = $2 WHERE id = $1"))
                .map_err(failed)?;
            let conditional = client
                .prepare(&format!(
                    "UPDATE {s}.stock SET units = units - 1 WHERE id = $1 AND units >= 1"
                ))
                .map_err(failed)?;
            let optimistic = client
                .prepare(&format!(
                    "UPDATE {s}.stock SET units = $2, version = version + 1 WHERE id = $1 AND version = $3"
                ))
                .map_err(failed)?;
            let hold = client
                .prepare(&format!(
                    "WITH taken AS (UPDATE {s}.stock SET units = units - 1 WHERE id = $1 AND units >= 1 RETURNING id)
                     INSERT INTO {s}.holds (sku, units, expires_at)
                     SELECT id, 1, now() + interval '10 minutes' FROM taken RETURNING id"
                ))
                .map_err(failed)?;
            let confirm = client
                .prepare(&format!(
                    "UPDATE {s}.holds SET confirmed = true WHERE id = $1 AND NOT confirmed"
                ))
                .map_err(failed)?;
            let lock = if variant == Postgres::RedisLock {
                Some((
                    redis_connect(&setting.redis_url)?,
                    Rng::new(b as u64 + 1),
                    0,
                ))
            } else {
                None
            };
            market.buyers.push(PgBuyer {
                client,
                read,
                write,
                conditional,
                optimistic,
                hold,
                confirm,
                lock,
            });
        }
        Ok(market)
    }
}

/// Gives up on one purchase after this many lost optimistic races or lock
/// attempts: a buyer that cannot get through is an error, not a hang.
const MAX_RETRIES: u32 = 100_000;

const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

impl Market for PgMarket {
    fn sell(&mut self, sale: &Arc<Sale>) -> Result<(), String> {
        let variant = self.variant;
        let mode = self.mode;
        let lock_prefix = &self.lock_prefix;
        let release = redis::Script::new(RELEASE_SCRIPT);
        let failed = |e: postgres::Error| format!("PostgreSQL: {e}");
        drive_threads(sale, &mut self.buyers, 1, |buyer, sku| {
            let id = sku as i32;
            if mode == Mode::HoldConfirm {
                let Some(row) = buyer
                    .client
                    .query_opt(&buyer.hold, &[&id])
                    .map_err(failed)?
                else {
                    return Ok(Outcome::SoldOut);
                };
                let hold: i64 = row.get(0);
                let confirmed = buyer
                    .client
                    .execute(&buyer.confirm, &[&hold])
                    .map_err(failed)?;
                return if confirmed == 1 {
                    Ok(Outcome::Sold)
                } else {
                    Err(format!("hold {hold} could not be confirmed"))
                };
            }
            match variant {
                Postgres::Conditional => {
                    let updated = buyer
                        .client
                        .execute(&buyer.conditional, &[&id])
                        .map_err(failed)?;
                    Ok(if updated == 1 {
                        Outcome::Sold
                    } else {
                        Outcome::SoldOut
                    })
                }
                Postgres::Optimistic => {
                    for _ in 0..MAX_RETRIES {
                        let row = buyer
                            .client
                            .query_one(&buyer.read, &[&id])
                            .map_err(failed)?;
                        let (units, version): (i64, i64) = (row.get(0), row.get(1));
                        if units < 1 {
                            return Ok(Outcome::SoldOut);
                        }
                        let written = buyer
                            .client
                            .execute(&buyer.optimistic, &[&id, &(units - 1), &version])
                            .map_err(failed)?;
                        if written == 1 {
                            return Ok(Outcome::Sold);
                        }
                    }
                    Err(format!("{MAX_RETRIES} optimistic retries lost in a row"))
                }
                Postgres::Naive => naive_purchase(buyer, id),
                Postgres::RedisLock => {
                    let key = format!("{lock_prefix}lock:{sku}");
                    let (connection, rng, token) = buyer.lock.as_mut().expect("a Redis connection");
                    *token += 1;
                    let mine = format!("{}:{token}", rng.below(u64::MAX));
                    let mut attempts = 0;
                    loop {
                        let acquired: Option<String> = redis::cmd("SET")
                            .arg(&key)
                            .arg(&mine)
                            .arg("NX")
                            .arg("PX")
                            .arg(5_000)
                            .query(connection)
                            .map_err(|e| format!("Redis: {e}"))?;
                        if acquired.is_some() {
                            break;
                        }
                        attempts += 1;
                        if attempts >= MAX_RETRIES {
                            return Err(format!("the lock on SKU {sku} was not acquired"));
                        }
                        // A client's back-off between lock attempts (what
                        // lock libraries do), jittered so buyers spread out.
                        std::thread::sleep(Duration::from_micros(100 + rng.below(400)));
                    }
                    let outcome = naive_purchase(buyer, id);
                    let (connection, _, _) = buyer.lock.as_mut().expect("a Redis connection");
                    let _: i64 = release
                        .key(&key)
                        .arg(&mine)
                        .invoke(connection)
                        .map_err(|e| format!("Redis: {e}"))?;
                    outcome
                }
            }
        })
    }
}

/// Read, then write back one less: two statements, no check between them.
fn naive_purchase(buyer: &mut PgBuyer, id: i32) -> Result<Outcome, String> {
    let failed = |e: postgres::Error| format!("PostgreSQL: {e}");
    let row = buyer
        .client
        .query_one(&buyer.read, &[&id])
        .map_err(failed)?;
    let units: i64 = row.get(0);
    if units < 1 {
        return Ok(Outcome::SoldOut);
    }
    buyer
        .client
        .execute(&buyer.write, &[&id, &(units - 1)])
        .map_err(failed)?;
    Ok(Outcome::Sold)
}

impl Drop for PgMarket {
    fn drop(&mut self) {
        // Close the buyers' connections before dropping what they used.
        self.buyers.clear();
        if let Err(error) = self
            .admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
        {
            eprintln!("cannot drop schema {}: {error}", self.schema);
        }
    }
}

// ---- scratch ---------------------------------------------------------------

/// A fresh directory under the scratch root.
fn scratch_dir(root: &Path, what: &str) -> Result<PathBuf, String> {
    let dir = root.join(format!(
        "{what}-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
