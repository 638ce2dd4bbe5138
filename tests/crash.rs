//! Crash tests with real processes: this test binary, re-run with
//! `WORKLOAD_DIR` set, runs random operations from 4 threads in `sync`
//! durability and prints an `ACK` line for each change only once it is on
//! disk; the test kills it with SIGKILL at a random point, five times in a
//! row on the same data directory, and after each restart checks every
//! acknowledged fact.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine};
use hotstock::{HoldStatus, ReservationId};

/// Set in the child process only: where the workload keeps its data.
const WORKLOAD_DIR: &str = "HOTSTOCK_CRASH_WORKLOAD_DIR";

/// The child's side: runs the workload when started by the crash test, and
/// does nothing in an ordinary test run.
#[test]
fn crash_workload() {
    if let Some(dir) = std::env::var_os(WORKLOAD_DIR) {
        crash_workload_in(PathBuf::from(dir));
    }
}

fn status(name: &str) -> HoldStatus {
    match name {
        "held" => HoldStatus::Held,
        "confirmed" => HoldStatus::Confirmed,
        "cancelled" => HoldStatus::Cancelled,
        "refunded" => HoldStatus::Refunded,
        other => panic!("unexpected status {other}"),
    }
}

/// Statuses a record may have after `acked` was acknowledged: the same or a
/// later one in its lifecycle, never an earlier one.
fn allowed_after(acked: HoldStatus) -> &'static [HoldStatus] {
    match acked {
        HoldStatus::Held => &[
            HoldStatus::Held,
            HoldStatus::Confirmed,
            HoldStatus::Cancelled,
            HoldStatus::Refunded,
        ],
        HoldStatus::Confirmed => &[HoldStatus::Confirmed, HoldStatus::Refunded],
        HoldStatus::Cancelled => &[HoldStatus::Cancelled],
        HoldStatus::Refunded => &[HoldStatus::Refunded],
        HoldStatus::Expired => &[HoldStatus::Expired],
    }
}

#[test]
fn sigkill_at_random_points_loses_nothing_acknowledged() {
    let dir = std::env::temp_dir().join(format!("hotstock-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut acked_sells = 0u64;
    let mut acked: HashMap<ReservationId, HoldStatus> = HashMap::new();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    const ROUNDS: u64 = 5;
    for round in 1..=ROUNDS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = 20 + (seed % 300) as usize;
        let mut child = Command::new(std::env::current_exe().expect("this test binary"))
            .args([
                "crash_workload",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKLOAD_DIR, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the workload");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        while lines.len() < kill_after {
            match lines_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => lines.push(line),
                Err(error) => panic!("round {round}: workload stopped acknowledging: {error}"),
            }
        }
        child.kill().expect("SIGKILL the workload");
        child.wait().expect("reap the workload");
        // Lines already in the pipe were acknowledged too.
        reader.join().expect("reader thread");
        lines.extend(lines_rx.try_iter());
        for line in &lines {
            // The test harness prints its own lines around the workload's.
            let Some(at) = line.find("ACK ") else {
                continue;
            };
            let words: Vec<&str> = line[at..].split_whitespace().collect();
            match words.as_slice() {
                ["ACK", "SELL"] => acked_sells += 1,
                ["ACK", "HOLD", id, state] => {
                    acked.insert(id.parse().expect("reservation id"), status(state));
                }
                // A line cut by the kill is not an acknowledgement.
                _ => {}
            }
        }

        let (durable, report) = DurableEngine::open(DurableConfig::new(&dir, Durability::Sync))
            .unwrap_or_else(|e| panic!("round {round}: recovery failed: {e}"));
        let engine = durable.engine();
        let plain = engine.sku_document(engine.sku("plain").unwrap()).unwrap();
        let limited = engine.sku_document(engine.sku("limited").unwrap()).unwrap();
        assert!(
            plain.is_conserved() && limited.is_conserved(),
            "round {round}: {plain:?} {limited:?}"
        );
        // Every acknowledged sale is there; at most one unacknowledged sale
        // per workload thread per round may have reached the disk too.
        assert!(
            plain.sold >= acked_sells,
            "round {round}: sold {} < acknowledged {acked_sells}",
            plain.sold
        );
        assert!(
            plain.sold <= acked_sells + 4 * round,
            "round {round}: {} sold, {acked_sells} acked",
            plain.sold
        );
        for (id, acked_status) in &acked {
            let record = engine
                .reservation(*id)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged {id} lost: {e}"));
            assert!(
                allowed_after(*acked_status).contains(&record.status),
                "round {round}: {id} acknowledged {acked_status} but recovered {}",
                record.status
            );
        }
        eprintln!(
            "round {round}: killed after {} acks; recovered {} events ({} segments){}",
            lines.len(),
            report.events_replayed,
            report.segments_replayed,
            report.torn_tail.map_or(String::new(), |(s, t)| format!(
                ", torn tail in segment {s} at {}",
                t.offset
            ))
        );
        durable.close().expect("clean close before the next round");
    }
    assert!(
        acked.len() > 20,
        "the workload acknowledged too little to test anything"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Random operations from 4 threads in `sync` durability; each prints an
/// `ACK` line only after its change is on disk. Runs until killed (the
/// parent test re-runs this test binary with `WORKLOAD_DIR` set).
fn crash_workload_in(dir: PathBuf) {
    use hotstock::{Line, Order};
    use std::io::Write;

    let mut config = DurableConfig::new(&dir, Durability::Sync);
    config.checkpoint_interval = std::time::Duration::from_millis(200);
    config.segment_bytes = 64 << 10;
    let (durable, _) = DurableEngine::open(config).expect("open the data directory");
    let engine = durable.engine().clone();
    for (name, stock, limit) in [
        ("plain", 1u64 << 30, None),
        ("limited", 1 << 30, Some(1_000_000)),
    ] {
        // Version 0 = create only if absent: later runs keep the counts.
        let _ = engine.put_sku(name, stock, Some(limit), Some(0));
    }
    let plain = engine.sku("plain").expect("created above");
    let limited = engine.sku("limited").expect("created above");
    let stdout = std::sync::Mutex::new(std::io::stdout());
    let ack = |line: String| {
        let mut out = stdout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A closed pipe means the test is done with us.
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            std::process::exit(0);
        }
    };
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (engine, ack) = (&engine, &ack);
            s.spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1) ^ std::process::id() as u64;
                let mut open_holds = Vec::new();
                let mut confirmed = Vec::new();
                let customer = format!("c{t}");
                loop {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let line = match x % 6 {
                        0 => engine.sell(plain, 1).ok().map(|_| "SELL".to_owned()),
                        1 | 2 => {
                            let order = Order {
                                lines: &[Line {
                                    sku: limited,
                                    quantity: 1 + (x >> 8) as u32 % 3,
                                }],
                                customer: Some(&customer),
                                confirm: x % 6 == 2,
                                ..Order::default()
                            };
                            engine.reserve(&order).ok().map(|r| {
                                let status = r.status.as_str();
                                if r.status == hotstock::HoldStatus::Held {
                                    open_holds.push(r.id);
                                } else {
                                    confirmed.push(r.id);
                                }
                                format!("HOLD {} {status}", r.id)
                            })
                        }
                        3 => open_holds.pop().and_then(|id| {
                            engine.confirm(id).ok().map(|_| {
                                confirmed.push(id);
                                format!("HOLD {id} confirmed")
                            })
                        }),
                        4 => open_holds.pop().and_then(|id| {
                            engine
                                .cancel(id)
                                .ok()
                                .map(|_| format!("HOLD {id} cancelled"))
                        }),
                        _ => confirmed.pop().and_then(|id| {
                            engine
                                .refund(id)
                                .ok()
                                .map(|_| format!("HOLD {id} refunded"))
                        }),
                    };
                    let Some(line) = line else { continue };
                    if engine.wait_durable(engine.durability_ticket()).is_ok() {
                        ack(format!("ACK {line}"));
                    }
                }
            });
        }
    });
}
