//! What the showdown prints and writes: the progress bar, the table, the
//! targets with their verdicts, `showdown.json` and `showdown.png`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::contenders::Contender;
use crate::sale::{Mode, SaleResult};
use crate::RunArgs;

/// One line of the showdown.
pub struct Row {
    pub key: &'static str,
    pub label: &'static str,
    pub contender: Contender,
    hot_only: bool,
    /// Paced at a fraction of another row's peak, measured earlier.
    pub pace: Option<(&'static str, f64)>,
}

impl Row {
    pub fn new(key: &'static str, label: &'static str, contender: Contender) -> Row {
        Row {
            key,
            label,
            contender,
            hot_only: false,
            pace: None,
        }
    }

    pub fn hot_only(mut self) -> Row {
        self.hot_only = true;
        self
    }

    pub fn paced(mut self, reference: &'static str, fraction: f64) -> Row {
        self.pace = Some((reference, fraction));
        self.hot_only = true;
        self
    }

    pub fn runs_in(&self, mode: Mode) -> bool {
        !self.hot_only || mode == Mode::Hot
    }
}

/// CPU seconds a sale used.
#[derive(Clone, Copy, Debug)]
pub struct Cpu {
    /// The whole machine: load generator, server, Redis, PostgreSQL.
    pub machine: f64,
    /// The server process alone (HTTP contenders).
    pub server: Option<f64>,
}

pub struct Measured {
    pub sale: SaleResult,
    pub cpu: Cpu,
    pub paced_at: Option<f64>,
}

/// A row's outcome in one workload: measured, or why not.
pub struct Measurement {
    pub key: &'static str,
    pub label: &'static str,
    pub mode: Mode,
    pub result: Result<Measured, String>,
}

impl Measurement {
    pub fn measured(
        row: &Row,
        mode: Mode,
        sale: SaleResult,
        cpu: Cpu,
        paced_at: Option<f64>,
    ) -> Measurement {
        Measurement {
            key: row.key,
            label: row.label,
            mode,
            result: Ok(Measured {
                sale,
                cpu,
                paced_at,
            }),
        }
    }

    pub fn skipped(row: &Row, mode: Mode, reason: String) -> Measurement {
        Measurement {
            key: row.key,
            label: row.label,
            mode,
            result: Err(reason),
        }
    }
}

/// Busy CPU seconds of the whole machine so far (all processes: the load
/// generator, the server, Redis, PostgreSQL), from /proc/stat.
pub fn machine_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6 | 7))
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    busy as f64 / ticks.max(1) as f64
}

/// A one-line bar on stderr, redrawn in place when stderr is a terminal.
pub struct ProgressBar {
    title: String,
    total: u64,
    terminal: bool,
}

impl ProgressBar {
    pub fn new(title: &str, total: u64) -> ProgressBar {
        ProgressBar {
            title: title.to_owned(),
            total: total.max(1),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn show(&mut self, sold: u64, elapsed: Duration) {
        if !self.terminal {
            return;
        }
        const WIDTH: u64 = 30;
        let filled = (sold.min(self.total) * WIDTH / self.total) as usize;
        let rate = sold as f64 / elapsed.as_secs_f64().max(1e-3);
        eprint!(
            "\r\x1b[2K{:<52} [{}{}] {:>3}% {} units {}/s",
            self.title,
            "#".repeat(filled),
            "-".repeat(WIDTH as usize - filled),
            sold.min(self.total) * 100 / self.total,
            sold,
            si(rate)
        );
        let _ = std::io::stderr().flush();
    }

    pub fn clear(&mut self) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
    }
}

/// 1234567.0 → "1.23M".
pub fn si(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn latency(us: f64) -> String {
    match us {
        u if u >= 10_000.0 => format!("{:.0}ms", u / 1_000.0),
        u if u >= 1_000.0 => format!("{:.1}ms", u / 1_000.0),
        u if u >= 10.0 => format!("{u:.0}us"),
        u => format!("{u:.2}us"),
    }
}

pub fn print_done(title: &str, measurement: &Measurement) {
    match &measurement.result {
        Ok(m) if measurement.mode == Mode::SoldOut => eprintln!(
            "{title}: {} answers/s to a sold-out crowd, {} sold of {}, p99 {}",
            si(m.sale.answers_per_second()),
            m.sale.sold,
            m.sale.stock,
            latency(m.sale.percentile_us(0.99))
        ),
        Ok(m) => eprintln!(
            "{title}: {} units/s, {} sold of {}, oversold {}, p99 {}",
            si(m.sale.units_per_second()),
            m.sale.sold,
            m.sale.stock,
            m.sale.oversold(),
            latency(m.sale.percentile_us(0.99))
        ),
        Err(reason) => eprintln!("{title}: not measured: {reason}"),
    }
}

pub fn print_table(measurements: &[Measurement]) {
    println!();
    println!(
        "{:<13} {:<34} {:>10} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8} {:>7} {:>9} {:>9}",
        "workload",
        "contender",
        "stock",
        "sold",
        "oversold",
        "units/s",
        "p50",
        "p99",
        "p99.9",
        "CPU s",
        "CPU/unit",
        "srv/unit"
    );
    for m in measurements {
        match &m.result {
            Ok(r) => {
                let s = &r.sale;
                let mut note = String::new();
                if s.timed_out {
                    note.push_str("  (stopped at the time limit)");
                }
                if s.runaway {
                    note.push_str("  (stopped after selling 2x the stock)");
                }
                // CPU per unit sold; a crowd's per answer.
                let per = if m.mode == Mode::SoldOut {
                    s.attempts
                } else {
                    s.sold
                }
                .max(1);
                if m.mode == Mode::SoldOut {
                    note.push_str(&format!(
                        "  ({} answers/s, all but one \"sold out\")",
                        si(s.answers_per_second())
                    ));
                }
                if s.errors > 0 {
                    note.push_str(&format!(
                        "  ({} errors: {})",
                        s.errors,
                        s.first_error.as_deref().unwrap_or("")
                    ));
                }
                println!(
                    "{:<13} {:<34} {:>10} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8} {:>7.2} {:>9} {:>9}{note}",
                    m.mode.name(),
                    m.label,
                    s.stock,
                    s.sold,
                    s.oversold(),
                    si(s.units_per_second()),
                    latency(s.percentile_us(0.5)),
                    latency(s.percentile_us(0.99)),
                    latency(s.percentile_us(0.999)),
                    r.cpu.machine,
                    latency(r.cpu.machine * 1e6 / per as f64),
                    r.cpu
                        .server
                        .map_or("-".to_string(), |c| latency(c * 1e6 / per as f64)),
                );
            }
            Err(reason) => println!(
                "{:<13} {:<34} not measured: {reason}",
                m.mode.name(),
                m.label
            ),
        }
    }
}

/// One promise checked against this run.
pub struct Verdict {
    pub target: &'static str,
    pub wanted: f64,
    /// The measured ratio or value; `None` when a row it needs is missing.
    pub measured: Option<f64>,
    /// True when the measured value must stay below `wanted`.
    pub at_most: bool,
}

impl Verdict {
    pub fn met(&self) -> Option<bool> {
        self.measured.map(|m| {
            if self.at_most {
                m < self.wanted
            } else {
                m >= self.wanted
            }
        })
    }
}

/// The targets (#18's table: every HTTP row as a ratio to the bare hyper
/// endpoint of the same workload in the same run, so the machine's mood
/// cancels out), with the disk's own `fdatasync` p99 in ms (measured
/// alongside, `disk_fdatasync_p99_ms`) allowed on top of `sync`'s p99.
pub fn targets(measurements: &[Measurement], fdatasync_p99_ms: Option<f64>) -> Vec<Verdict> {
    let find = |key: &str, mode: Mode| {
        measurements
            .iter()
            .find(|m| m.key == key && m.mode == mode)
            .and_then(|m| m.result.as_ref().ok())
    };
    let rate = |key: &str, mode| find(key, mode).map(|m| m.sale.units_per_second());
    let answers = |key: &str| find(key, Mode::SoldOut).map(|m| m.sale.answers_per_second());
    let answers_ratio = |a: &str, b: &str| Some(answers(a)? / answers(b)?);
    let p99_ms = |key: &str| find(key, Mode::Hot).map(|m| m.sale.percentile_us(0.99) / 1_000.0);
    let ratio = |a: &str, b: &str, mode| Some(rate(a, mode)? / rate(b, mode)?);
    let at_least = |target, wanted, measured| Verdict {
        target,
        wanted,
        measured,
        at_most: false,
    };
    let at_most = |target, wanted, measured| Verdict {
        target,
        wanted,
        measured,
        at_most: true,
    };
    let (hot, uniform, hold) = (Mode::Hot, Mode::Uniform, Mode::HoldConfirm);
    vec![
        at_least(
            "in-process / Redis+Lua (hot)",
            1000.0,
            ratio("inproc", "redis-lua", hot),
        ),
        at_least(
            "hot: HTTP async / bare",
            0.90,
            ratio("http-async", "bare", hot),
        ),
        at_least(
            "hot: HTTP sync / bare",
            0.70,
            ratio("http-sync", "bare", hot),
        ),
        at_least(
            "uniform: HTTP async / bare",
            0.90,
            ratio("http-async", "bare", uniform),
        ),
        at_least(
            "uniform: HTTP sync / bare",
            0.70,
            ratio("http-sync", "bare", uniform),
        ),
        at_least(
            "hold-confirm: HTTP async / bare",
            0.85,
            ratio("http-async", "bare", hold),
        ),
        at_least(
            "hold-confirm: HTTP sync / bare",
            0.65,
            ratio("http-sync", "bare", hold),
        ),
        at_least(
            "hot pipelined: HTTP async / bare",
            0.85,
            ratio("http-async-pipelined", "bare-pipelined", hot),
        ),
        at_least(
            "hot pipelined: HTTP sync / bare",
            0.65,
            ratio("http-sync-pipelined", "bare-pipelined", hot),
        ),
        at_least(
            "sold-out crowd: HTTP async / bare, answers",
            0.90,
            answers_ratio("http-async", "bare"),
        ),
        at_least(
            "sold-out crowd: HTTP sync / bare, answers",
            0.90,
            answers_ratio("http-sync", "bare"),
        ),
        at_least(
            "HTTP async / article (hyper+Redis), hot",
            1.3,
            ratio("http-async", "article", hot),
        ),
        at_most(
            "p99 ms, HTTP async at half peak",
            2.0,
            p99_ms("http-async-half"),
        ),
        at_most(
            "p99 ms, HTTP sync at half peak (2 + disk p99)",
            2.0 + fdatasync_p99_ms.unwrap_or(f64::NAN),
            p99_ms("http-sync-half").filter(|_| fdatasync_p99_ms.is_some()),
        ),
        at_least(
            "M units/s, HTTP sync, batches of 1,000 (hot)",
            1.0,
            rate("http-sync-batch", hot).map(|r| r / 1e6),
        ),
    ]
}

/// The p99 of this disk's own `fdatasync` after a 4 KiB append, in ms:
/// 500 of them in a file in `dir` (the scratch directory, on the disk the
/// journals use). What `sync`'s latency may add over `async`'s.
pub fn disk_fdatasync_p99_ms(dir: &std::path::Path) -> Result<f64, String> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let block = [0x5a_u8; 4096];
    let mut samples = Vec::with_capacity(500);
    for _ in 0..500 {
        file.write_all(&block)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let started = std::time::Instant::now();
        file.sync_data()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_file(&path);
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() * 99 / 100])
}

pub fn print_targets(verdicts: &[Verdict]) {
    println!();
    println!("targets (ratios to the bare endpoint of the same workload and run):");
    for v in verdicts {
        let sign = if v.at_most { "<" } else { ">=" };
        match (v.measured, v.met()) {
            (Some(m), Some(met)) => println!(
                "  {:<44} {:>9.2}  (want {sign} {})  {}",
                v.target,
                m,
                v.wanted,
                if met { "met" } else { "MISSED" }
            ),
            _ => println!(
                "  {:<44} {:>9}  (want {sign} {})  not measured",
                v.target, "-", v.wanted
            ),
        }
    }
}

pub fn json(
    measurements: &[Measurement],
    verdicts: &[Verdict],
    args: &RunArgs,
    fdatasync_p99_ms: Option<f64>,
) -> Value {
    let rows: Vec<Value> = measurements
        .iter()
        .map(|m| match &m.result {
            Ok(r) => {
                let s = &r.sale;
                json!({
                    "key": m.key, "contender": m.label, "workload": m.mode.name(),
                    "stock": s.stock, "sold": s.sold, "oversold": s.oversold(),
                    "attempts": s.attempts, "errors": s.errors, "first_error": s.first_error,
                    "timed_out": s.timed_out,
                    "stopped_oversold": s.runaway,
                    "seconds": s.selling.as_secs_f64(),
                    "units_per_second": s.units_per_second(),
                    "answers_per_second": s.answers_per_second(),
                    "latency_us": {
                        "p50": s.percentile_us(0.5), "p99": s.percentile_us(0.99),
                        "p999": s.percentile_us(0.999), "max": s.latencies.max() as f64 / 1e3,
                        "samples": s.latencies.len(),
                    },
                    "machine_cpu_seconds": r.cpu.machine,
                    "server_cpu_seconds": r.cpu.server,
                    "paced_at_units_per_second": r.paced_at,
                })
            }
            Err(reason) => json!({
                "key": m.key, "contender": m.label, "workload": m.mode.name(),
                "not_measured": reason,
            }),
        })
        .collect();
    let targets: Vec<Value> = verdicts
        .iter()
        .map(|v| json!({"target": v.target, "wanted": v.wanted, "at_most": v.at_most, "measured": v.measured, "met": v.met()}))
        .collect();
    json!({
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "fdatasync_p99_ms": fdatasync_p99_ms,
        },
        "settings": {
            "buyers": args.buyers, "db_buyers": args.db_buyers,
            "client_threads": args.client_threads, "pipeline": args.pipeline,
            "seconds": args.seconds, "probe_seconds": args.probe_seconds,
        },
        "rows": rows,
        "targets": targets,
    })
}

/// Fonts plotters can draw with, tried in order.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn register_font() -> Result<(), String> {
    use std::sync::OnceLock;
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = FONT_PATHS
                .iter()
                .find_map(|path| std::fs::read(path).ok())
                .ok_or_else(|| {
                    format!(
                        "no TrueType font found (tried {}); install fonts-dejavu-core",
                        FONT_PATHS.join(", ")
                    )
                })?;
            // Registered once for the process; plotters keeps the bytes.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
                .map_err(|_| "the font file could not be read".to_string())
        })
        .clone()
}

/// One bar pair of the chart.
pub struct ChartBar {
    pub key: String,
    pub label: String,
    pub units_per_second: f64,
    pub p99_us: f64,
}

/// The hot workload's measured rows, as chart bars.
pub fn chart_bars(measurements: &[Measurement]) -> Vec<ChartBar> {
    measurements
        .iter()
        .filter(|m| m.mode == Mode::Hot)
        .filter_map(|m| {
            m.result.as_ref().ok().map(|r| ChartBar {
                key: m.key.to_string(),
                label: m.label.to_string(),
                units_per_second: r.sale.units_per_second(),
                p99_us: r.sale.percentile_us(0.99),
            })
        })
        .collect()
}

/// The same bars from a saved `showdown.json` (`hotstock-bench chart`).
pub fn chart_bars_from_json(report: &Value) -> Result<Vec<ChartBar>, String> {
    let rows = report["rows"]
        .as_array()
        .ok_or("not a showdown report: no \"rows\"")?;
    Ok(rows
        .iter()
        .filter(|r| r["workload"] == "hot" && r.get("not_measured").is_none())
        .filter_map(|r| {
            Some(ChartBar {
                key: r["key"].as_str()?.to_string(),
                label: r["contender"].as_str()?.to_string(),
                units_per_second: r["units_per_second"].as_f64()?,
                p99_us: r["latency_us"]["p99"].as_f64()?,
            })
        })
        .collect())
}

/// Two panels of horizontal bars: throughput and p99 latency (both on log
/// scales), one row per contender; hotstock orange, the bare endpoint grey,
/// the remedies blue.
pub fn chart(bars: &[ChartBar], path: &Path) -> Result<(), String> {
    use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
    use plotters::prelude::*;
    register_font()?;
    if bars.is_empty() {
        return Err("nothing was measured on the hot workload".into());
    }
    let n = bars.len();
    let height = 140 + 34 * n as u32;
    let root = BitMapBackend::new(path, (1400, height)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| format!("drawing the chart: {e}");
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let root = root
        .titled(
            "Flash sale, one hot SKU, this machine (2 CPUs)",
            ("sans-serif", 24),
        )
        .map_err(|e| fail(&e))?;
    let (left, right) = root.split_horizontally(820);
    let color = |key: &str| {
        if key.starts_with("inproc") || key.starts_with("http") {
            RGBColor(214, 86, 38)
        } else if key.starts_with("bare") {
            RGBColor(120, 120, 120)
        } else {
            RGBColor(52, 101, 164)
        }
    };
    let panel = |area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
                 caption: &str,
                 label_area: u32,
                 values: Vec<f64>,
                 show: fn(f64) -> String|
     -> Result<(), String> {
        let max = values.iter().cloned().fold(1.0, f64::max) * 3.0;
        let min = values
            .iter()
            .cloned()
            .filter(|v| *v > 0.0)
            .fold(max, f64::min)
            / 3.0;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(label_area)
            .build_cartesian_2d((min..max).log_scale(), (0..n).into_segmented())
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|segment: &SegmentValue<usize>| match segment {
                SegmentValue::CenterOf(i) if label_area > 0 => {
                    bars.get(*i).map(|b| b.label.clone()).unwrap_or_default()
                }
                _ => String::new(),
            })
            .x_label_formatter(&|v: &f64| show(*v))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(bars.iter().zip(&values).enumerate().map(|(i, (bar, v))| {
                Rectangle::new(
                    [
                        (min, SegmentValue::Exact(i)),
                        (v.max(min), SegmentValue::Exact(i + 1)),
                    ],
                    color(&bar.key).filled(),
                )
            }))
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                Text::new(
                    format!(" {}", show(*v)),
                    (v.max(min), SegmentValue::CenterOf(i)),
                    ("sans-serif", 13),
                )
            }))
            .map_err(|e| fail(&e))?;
        Ok(())
    };
    let rates = bars.iter().map(|b| b.units_per_second).collect();
    let p99 = bars.iter().map(|b| b.p99_us).collect();
    panel(
        &left,
        "units sold per second (log scale)",
        290,
        rates,
        |v| format!("{}/s", si(v)),
    )?;
    panel(&right, "p99 latency (log scale)", 0, p99, latency)?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
