//! Nothing here: the models are in `tests/`. This crate exists so that the
//! loom build has its own target directory (see Cargo.toml).
