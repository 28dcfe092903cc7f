//! The OCI distribution client's parts: where requests go (proxies),
//! whose credentials they carry, how a registry challenges for them, and
//! the check that what a registry sent is what was asked for. It knows no
//! policy; the admission step asks it for facts (digests) and passes them
//! to `policy` as values.

pub mod challenge;
pub mod client;
pub mod guard;
pub mod proxy;
