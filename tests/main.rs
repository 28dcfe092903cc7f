//! Integration tests: the real binary, spawned as a user would run it.
#![allow(clippy::unwrap_used)]

mod architecture;
mod attesting;
mod check;
mod common;
mod conformance;
mod dos;
mod fuzz_corpus;
mod golden;
mod lookups;
mod mutate;
mod registry;
mod registry_edges;
mod rotation;
mod serve;
mod setup;
mod signatures;
mod signer;
mod signing;
mod tuf;
