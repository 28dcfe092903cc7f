//! Wire formats of the apiserver and where images live in objects.
//!
//! Adapters only: they turn requests into `policy::Request`s and decisions
//! into responses. Nothing here decides.

pub mod admission;
pub mod imagepolicy;
pub mod json;
pub mod workload;
