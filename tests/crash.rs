//! Crash tests with real processes: `hotstock crash-workload` runs random
//! operations from 4 threads in `sync` durability and prints an `ACK` line
//! for each change only once it is on disk; this test kills it with SIGKILL
//! at a random point, five times in a row on the same data directory, and
//! after each restart checks every acknowledged fact.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine};
use hotstock::{HoldStatus, ReservationId};

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
        let mut child = Command::new(env!("CARGO_BIN_EXE_hotstock"))
            .args(["crash-workload", "--data-dir"])
            .arg(&dir)
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
            let words: Vec<&str> = line.split_whitespace().collect();
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
