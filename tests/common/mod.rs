//! Helpers shared by integration tests (each test file includes this module).
// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub mod server;

use std::path::Path;

/// Copies a directory tree: a data directory as a crash would leave it,
/// when taken while the engine runs.
pub fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
