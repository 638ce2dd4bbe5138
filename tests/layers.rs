//! The layers run one way: `core` ← `durable` ← `server` ← the binary
//! (`docs/architecture.md`, "Architecture invariants"). This test reads
//! the sources and fails when a layer names one above it, or when the
//! engine starts to depend on I/O, serde or the HTTP stack.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every line of the layer's code (comments left out) that names one of
/// `forbidden`.
fn offenders(layer: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(layer);
    let mut found = Vec::new();
    for file in sources(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for name in forbidden {
                if code.contains(name) {
                    found.push(format!(
                        "{}:{}: {}",
                        file.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn core_knows_neither_durability_nor_http_nor_io() {
    let found = offenders(
        "core",
        &[
            "crate::durable",
            "crate::server",
            "rusqlite",
            "postgres::",
            "tokio",
            "hyper",
            "serde",
            "std::fs",
            "std::net",
            "std::io::Write",
        ],
    );
    assert!(
        found.is_empty(),
        "core imports above itself:\n{}",
        found.join("\n")
    );
}

#[test]
fn durable_knows_nothing_of_http() {
    let found = offenders(
        "durable",
        &[
            "crate::server",
            "hyper",
            "tokio",
            "serde_json",
            "clap",
            "toml",
        ],
    );
    assert!(
        found.is_empty(),
        "durable imports the server:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_library_knows_nothing_of_the_command_line() {
    for layer in ["core", "durable", "server"] {
        let found = offenders(
            layer,
            &["clap", "toml::", "tracing_subscriber", "indicatif"],
        );
        assert!(
            found.is_empty(),
            "{layer} knows the binary's crates:\n{}",
            found.join("\n")
        );
    }
}

/// The check itself works: it sees an import where there is one.
#[test]
fn the_check_finds_an_import_where_there_is_one() {
    let found = offenders("server", &["crate::durable"]);
    assert!(!found.is_empty(), "the server does import durable");
}
