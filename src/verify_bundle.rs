//! `image-bouncer verify-bundle`: one sigstore bundle verified offline
//! against a file or a digest, a key or an identity, and a trusted root,
//! with the verifier the webhook uses — the sigstore-conformance client
//! protocol, and what an admin runs to see why a signature is refused.

use std::sync::Arc;

use crate::cli::VerifyBundleArgs;
use crate::files::read_limited;
use crate::verify::bundle::{self, Artifact};
use crate::verify::keys::PublicKey;
use crate::verify::rules::{IdentityRule, Matcher, NamedKey, Trust};
use crate::verify::trust::TrustedRoot;

/// Files read at most (bundles, roots, keys; an artifact is hashed whole
/// in memory, so it is capped too).
const FILE_MAX: u64 = 256 << 20;

/// The signer in words when the bundle verifies, else why not.
pub fn run(a: &VerifyBundleArgs) -> Result<String, String> {
    let root_file = a.trusted_root.as_deref().ok_or(if a.staging {
        "--staging needs --trusted-root too: nothing is fetched (give the staging instance's trusted_root.json)"
    } else {
        "--trusted-root is required: nothing is fetched"
    })?;
    let root = TrustedRoot::parse(&read_limited(std::path::Path::new(root_file), FILE_MAX)?)
        .map_err(|e| format!("{root_file}: {e}"))?;
    let mut trust = Trust {
        root: Some(Arc::new(root)),
        ..Trust::default()
    };
    match (&a.key, &a.certificate_identity, &a.certificate_oidc_issuer) {
        (Some(k), None, None) => {
            let key = PublicKey::from_pem(&read_limited(std::path::Path::new(k), FILE_MAX)?)
                .map_err(|e| format!("{k}: {e}"))?;
            trust.keys.push(NamedKey {
                name: k.clone(),
                key,
            });
        }
        (None, Some(id), Some(issuer)) => trust.identities.push(IdentityRule {
            extensions: Vec::new(),
            issuer: Matcher::Exact(issuer.clone()),
            subject: Matcher::Exact(id.clone()),
        }),
        _ => {
            return Err(
                "give --key, or both --certificate-identity and --certificate-oidc-issuer".into(),
            );
        }
    }
    let bundle = std::fs::read(&a.bundle).map_err(|e| format!("{}: {e}", a.bundle))?;
    let file;
    let lower = a.artifact.to_ascii_lowercase();
    let digest_form = [("sha256:", 64), ("sha512:", 128)]
        .into_iter()
        .find_map(|(p, n)| lower.strip_prefix(p).map(|hex| (hex, n)));
    let artifact = if let Some((hex, n)) = digest_form {
        if hex.len() != n || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{:?} is not a sha256 or sha512 digest", a.artifact));
        }
        Artifact::Digest(&lower)
    } else {
        let meta = std::fs::metadata(&a.artifact).map_err(|e| format!("{}: {e}", a.artifact))?;
        if meta.len() > FILE_MAX {
            return Err(format!("{}: larger than {FILE_MAX} bytes", a.artifact));
        }
        file = std::fs::read(&a.artifact).map_err(|e| format!("{}: {e}", a.artifact))?;
        Artifact::File(&file)
    };
    let s = bundle::verify_artifact(&bundle, &artifact, &trust)?;
    Ok(match s.log_index {
        Some(i) => format!("{} (log index {i})", s.signer),
        None => s.signer,
    })
}
