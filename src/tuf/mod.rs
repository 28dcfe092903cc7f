//! A TUF client for sigstore's trusted root: canonical JSON, metadata and
//! its signatures, and the specification's update workflow, pure (the
//! bytes come from a function the caller gives; `trust update` fetches
//! them with the registry client). Never used during admission: it
//! writes a `trusted_root.json` that policies name.

pub mod canonical;
pub mod metadata;
pub mod update;

/// sigstore's public-good TUF root (version 15, from sigstore's
/// root-signing repository; see tests/fixtures/tuf/PROVENANCE.md): the
/// trust anchor `trust update` starts from when given none.
pub const PUBLIC_GOOD_ROOT: &[u8] = include_bytes!("public-good-root.json");
/// sigstore's TUF repository.
pub const PUBLIC_GOOD_URL: &str = "https://tuf-repo-cdn.sigstore.dev";
/// The target `trust update` fetches.
pub const TRUSTED_ROOT_TARGET: &str = "trusted_root.json";
