//! Sigstore bundles (v0.1–v0.3): a DSSE envelope whose payload is an
//! in-toto Statement naming the digest (what `cosign sign` writes for an
//! image since v3, attached as an OCI referrer), or a message signature
//! over an artifact. The signature is over the DSSE pre-authentication
//! encoding of the exact payload bytes (never re-serialised), or over the
//! artifact (or its digest); exactly one signature. A log entry must log
//! this very content, signature and signer: Rekor v1 (SET; inclusion proof
//! and signed checkpoint, required from v0.2 on) or Rekor v2 (hashedrekord
//! 0.0.2, proof and checkpoint, no time). Keyless certificates are judged
//! at every trusted time: the SET's, and each RFC 3161 timestamp's.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::verify::keys::PublicKey;
use crate::verify::legacy::Signed;
use crate::verify::rekor::{Entry, Promise};
use crate::verify::rules::Trust;

/// Bundle media types read.
const MEDIA_TYPES: [&str; 4] = [
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];
/// The artifact type cosign attaches bundles with.
pub const ARTIFACT_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The annotation cosign gives a bundle's referrer manifest: the
/// predicate type of the statement inside (unsigned; a hint only).
pub const PREDICATE_TYPE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
/// A layer holding a bundle: its media type starts so.
pub const LAYER_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
const IN_TOTO: &str = "application/vnd.in-toto+json";
/// Log entries looked at per bundle, at most.
const MAX_ENTRIES: usize = 8;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBundle {
    media_type: String,
    verification_material: Material,
    dsse_envelope: Option<Dsse>,
    message_signature: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Material {
    certificate: Option<RawBytes>,
    x509_certificate_chain: Option<Chain>,
    public_key: Option<Value>,
    #[serde(default)]
    tlog_entries: Vec<TlogEntry>,
    timestamp_verification_data: Option<TimestampData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimestampData {
    #[serde(default)]
    rfc3161_timestamps: Vec<SignedTimestamp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedTimestamp {
    signed_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct Chain {
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogEntry {
    log_index: Value,
    log_id: LogId,
    kind_version: KindVersion,
    #[serde(default)]
    integrated_time: Value,
    inclusion_promise: Option<InclusionPromise>,
    inclusion_proof: Option<InclusionProof>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogId {
    key_id: String,
}

#[derive(Deserialize)]
struct KindVersion {
    kind: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionPromise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionProof {
    log_index: Value,
    root_hash: String,
    tree_size: Value,
    #[serde(default)]
    hashes: Vec<String>,
    checkpoint: Option<Checkpoint>,
}

#[derive(Deserialize)]
struct Checkpoint {
    envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dsse {
    payload: String,
    payload_type: String,
    signatures: Vec<DsseSig>,
}

#[derive(Deserialize)]
struct DsseSig {
    sig: String,
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("{what} is not base64: {e}"))
}

/// proto3 JSON writes int64 as a string; accept a number too. Negative
/// is refused.
fn int(v: &Value, what: &str) -> Result<i64, String> {
    let n = match v {
        Value::String(s) => s.parse::<i64>().ok(),
        Value::Number(n) => n.as_i64(),
        Value::Null => Some(0),
        _ => None,
    }
    .ok_or_else(|| format!("{what} is not an integer"))?;
    if n < 0 {
        return Err(format!("{what} is negative"));
    }
    Ok(n)
}

/// What a signature is over: the bytes, or (a message signature checked
/// against a digest alone) their SHA-256.
enum Content {
    Bytes(Vec<u8>),
    Sha256(Vec<u8>),
}

impl Content {
    /// The SHA-256 of what was signed.
    fn sha256(&self) -> Vec<u8> {
        match self {
            Content::Bytes(b) => ring::digest::digest(&ring::digest::SHA256, b)
                .as_ref()
                .to_vec(),
            Content::Sha256(d) => d.clone(),
        }
    }

    fn verifies(&self, key: &PublicKey, sig: &[u8]) -> bool {
        match self {
            Content::Bytes(b) => key.verify(b, sig),
            Content::Sha256(d) => key.verify_sha256_digest(d, sig),
        }
    }
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// What of an in-toto Statement names its subjects.
#[derive(Deserialize)]
struct Named {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<Subject>,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    name: String,
    digest: std::collections::BTreeMap<String, String>,
}

/// The digests an in-toto Statement's subjects name, and their names.
pub(crate) fn subjects(payload: &[u8]) -> Result<Vec<(String, String)>, String> {
    subjects_named(serde_json::from_slice(payload))
}

/// The same, of a statement already read.
pub(crate) fn subjects_in(statement: &Value) -> Result<Vec<(String, String)>, String> {
    subjects_named(Named::deserialize(statement))
}

fn subjects_named(s: Result<Named, serde_json::Error>) -> Result<Vec<(String, String)>, String> {
    let s = s.map_err(|e| format!("the signed payload is not an in-toto Statement: {e}"))?;
    if !matches!(
        s.kind.as_str(),
        "https://in-toto.io/Statement/v0.1" | "https://in-toto.io/Statement/v1"
    ) {
        return Err(format!(
            "the signed payload is a {:?}, not an in-toto Statement",
            crate::verify::clipped(&s.kind, 80)
        ));
    }
    Ok(s.subject
        .into_iter()
        .flat_map(|sub| {
            sub.digest.into_iter().map(move |(alg, hex)| {
                (
                    format!("{alg}:{}", hex.to_ascii_lowercase()),
                    sub.name.clone(),
                )
            })
        })
        .collect())
}

/// The name under which a statement's subjects name `digest`, or why
/// none does (`what`: "a signature", "a statement"), naming at most three
/// of the digests it does name.
pub(crate) fn subject_named(payload: &[u8], digest: &str, what: &str) -> Result<String, String> {
    let subjects = subjects(payload)?;
    if let Some((_, reference)) = subjects.iter().find(|(d, _)| d == digest) {
        return Ok(reference.clone());
    }
    let mut named: Vec<String> = subjects
        .iter()
        .take(3)
        .map(|(d, _)| crate::verify::clipped(d, 80))
        .collect();
    if subjects.len() > 3 {
        named.push(format!("and {} more", subjects.len() - 3));
    }
    Err(format!("{what} for another digest ({})", named.join(", ")))
}

/// Verifies a bundle as a signature of `digest` under `trust`.
pub fn verify(bundle: &[u8], digest: &str, trust: &Trust) -> Result<Signed, BundleError> {
    verify_artifact(bundle, &Artifact::Image(digest), trust)
}

/// What a bundle is checked against.
#[derive(Debug, Clone, Copy)]
pub enum Artifact<'a> {
    /// An image digest: DSSE statements only (a message signature signs a
    /// blob).
    Image(&'a str),
    /// A file's bytes: a message signature over them, or a DSSE statement
    /// naming their digest.
    File(&'a [u8]),
    /// A file's digest (`sha256:<hex>`) only.
    Digest(&'a str),
}

/// The steps of a bundle's verification, in sigstore-go's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The bundle read, and its media type one this version reads.
    Read,
    /// What was signed: the artifact, the DSSE statement naming it.
    SignedContent,
    /// Who signed it: the signature under a trusted key or its certificate.
    Signer,
    /// When, as observers saw it: RFC 3161 timestamps.
    ObserverTimes,
    /// The transparency log's entry (inclusion proof, promise).
    LogEntry,
    /// The certificate at the trusted times: chain, SCT, identity.
    Certificate,
}

/// Why a bundle was refused, and at which step. `Display` is the reason
/// alone, as reviews and `verify-bundle` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleError {
    pub step: Step,
    pub reason: String,
}

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for BundleError {}

impl From<BundleError> for String {
    fn from(e: BundleError) -> String {
        e.reason
    }
}

/// A step's `Result<_, String>` as one of [`BundleError`].
trait At<T> {
    fn at(self, step: Step) -> Result<T, BundleError>;
}

impl<T, E: Into<String>> At<T> for Result<T, E> {
    fn at(self, step: Step) -> Result<T, BundleError> {
        self.map_err(|e| BundleError {
            step,
            reason: e.into(),
        })
    }
}

/// Verifies a bundle as a signature of `artifact` under `trust`: each
/// step in sigstore-go's order, each refusing with its own reason.
pub fn verify_artifact(
    bundle: &[u8],
    artifact: &Artifact<'_>,
    trust: &Trust,
) -> Result<Signed, BundleError> {
    let b = read(bundle).at(Step::Read)?;
    let content = signed_content(&b, artifact).at(Step::SignedContent)?;
    let m = &b.verification_material;
    let (by, certs) = signer(m, &content, trust).at(Step::Signer)?;
    let root = trust.root.as_deref();
    let observed = observer_times(m, &content.signature, root).at(Step::ObserverTimes)?;
    let (set_time, log_index) = if trust.ignore_tlog {
        (None, None)
    } else {
        let signer_der: &[u8] = match &by {
            By::Key((_, k)) => &k.key.spki,
            By::Cert(c) => c,
        };
        let (t, i) = log_entry(&b, &content, signer_der, root).at(Step::LogEntry)?;
        (t, Some(i))
    };
    let times: Vec<(i64, &'static str)> = set_time
        .map(|t| (t, "transparency log (SET)"))
        .into_iter()
        .chain(observed.times.iter().map(|t| (*t, "RFC 3161 timestamp")))
        .collect();
    let (signer, listed) = match by {
        By::Key((i, k)) => (k.words(), format!("keys[{i}]")),
        By::Cert(leaf) => certificate(&leaf, &certs[1..], &times, &observed.refused, trust)
            .at(Step::Certificate)?,
    };
    Ok(Signed {
        digest: content.digest,
        signer,
        listed,
        found_in: "sigstore bundle",
        reference: content.reference,
        time: times.first().map(|(t, _)| *t),
        time_source: times.first().map(|(_, s)| *s),
        log_index,
        statement: content.statement.map(std::sync::Arc::new),
    })
}

/// The bundle, if this version reads its media type.
fn read(bundle: &[u8]) -> Result<RawBundle, String> {
    let b: RawBundle =
        serde_json::from_slice(bundle).map_err(|e| format!("the bundle cannot be read: {e}"))?;
    if !MEDIA_TYPES.contains(&b.media_type.as_str()) {
        return Err(format!(
            "bundle media type {:?} is not one this version reads",
            b.media_type
        ));
    }
    Ok(b)
}

/// What a bundle signed, checked against the artifact.
struct SignedContent {
    /// The bytes the signature is over (or their digest).
    signed: Content,
    /// What the log entry must hold (see [`Logged`]).
    logged: Vec<u8>,
    signature: Vec<u8>,
    /// The name the statement signed for (empty for a message signature).
    reference: String,
    /// The digest admitted.
    digest: String,
    /// The in-toto statement, for a DSSE envelope.
    statement: Option<Vec<u8>>,
}

fn signed_content(b: &RawBundle, artifact: &Artifact<'_>) -> Result<SignedContent, String> {
    match (&b.message_signature, &b.dsse_envelope, artifact) {
        (Some(_), Some(_), _) => {
            Err("a bundle with both a message signature and a DSSE envelope".into())
        }
        (None, None, _) => {
            Err("a bundle with neither a DSSE envelope nor a message signature".into())
        }
        (Some(_), None, Artifact::Image(_)) => {
            Err("a bundle with a message signature signs a blob, not an image".into())
        }
        (Some(ms), None, Artifact::File(_) | Artifact::Digest(_)) => {
            message_signature(ms, artifact)
        }
        (None, Some(dsse), _) => dsse_statement(dsse, artifact),
    }
}

/// A message signature over a file (or its digest).
fn message_signature(ms: &Value, artifact: &Artifact<'_>) -> Result<SignedContent, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct MessageSignature {
        message_digest: Option<MessageDigest>,
        signature: String,
    }
    #[derive(Deserialize)]
    struct MessageDigest {
        algorithm: String,
        digest: String,
    }
    let ms: MessageSignature = serde_json::from_value(ms.clone())
        .map_err(|e| format!("the message signature cannot be read: {e}"))?;
    let (actual, signed) = match artifact {
        Artifact::File(bytes) => (
            ring::digest::digest(&ring::digest::SHA256, bytes)
                .as_ref()
                .to_vec(),
            Content::Bytes(bytes.to_vec()),
        ),
        Artifact::Digest(d) => {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or("a digest other than sha256")?;
            let raw = crate::digest::unhex(hex).ok_or("the digest is not hex")?;
            (raw.clone(), Content::Sha256(raw))
        }
        Artifact::Image(_) => {
            return Err("a bundle with a message signature signs a blob, not an image".into());
        }
    };
    if let Some(md) = &ms.message_digest
        && (md.algorithm != "SHA2_256" || b64(&md.digest, "the message digest")? != actual)
    {
        return Err(
            "the message signature is for another artifact (its message digest differs)".into(),
        );
    }
    let digest = crate::verify::hex_digest("sha256", &actual);
    Ok(SignedContent {
        signed,
        logged: actual,
        signature: b64(&ms.signature, "the signature")?,
        reference: String::new(),
        digest,
        statement: None,
    })
}

/// A DSSE envelope holding an in-toto statement that names the artifact.
fn dsse_statement(dsse: &Dsse, artifact: &Artifact<'_>) -> Result<SignedContent, String> {
    if dsse.payload_type != IN_TOTO {
        return Err(format!(
            "a DSSE envelope of type {:?}, not an in-toto statement",
            crate::verify::clipped(&dsse.payload_type, 80)
        ));
    }
    let [sig] = dsse.signatures.as_slice() else {
        return Err(format!(
            "a DSSE envelope with {} signatures (exactly one is accepted)",
            dsse.signatures.len()
        ));
    };
    let payload = b64(&dsse.payload, "the DSSE payload")?;
    let signature = b64(&sig.sig, "the DSSE signature")?;
    let digest = match artifact {
        Artifact::Image(d) | Artifact::Digest(d) => d.to_string(),
        Artifact::File(bytes) => crate::verify::hex_digest(
            "sha256",
            ring::digest::digest(&ring::digest::SHA256, bytes).as_ref(),
        ),
    };
    let reference = subject_named(&payload, &digest, "a signature")?;
    Ok(SignedContent {
        signed: Content::Bytes(pae(&dsse.payload_type, &payload)),
        logged: ring::digest::digest(&ring::digest::SHA256, &payload)
            .as_ref()
            .to_vec(),
        signature,
        reference,
        digest,
        statement: Some(payload),
    })
}

/// The signer, and the DER the log entry must name.
enum By<'a> {
    /// The key and its place in the rule's `keys`.
    Key((usize, &'a crate::verify::rules::NamedKey)),
    Cert(Vec<u8>),
}

/// Who signed: a trusted key the signature verifies under, or the leaf
/// certificate whose key it verifies under (checked later, at the signing
/// times); with the certificates the bundle carries, leaf first.
fn signer<'t>(
    m: &Material,
    content: &SignedContent,
    trust: &'t Trust,
) -> Result<(By<'t>, Vec<Vec<u8>>), String> {
    let certs: Vec<Vec<u8>> = match (&m.certificate, &m.x509_certificate_chain) {
        (Some(c), _) => vec![b64(&c.raw_bytes, "the certificate")?],
        (None, Some(chain)) => chain
            .certificates
            .iter()
            .map(|c| b64(&c.raw_bytes, "a chain certificate"))
            .collect::<Result<_, _>>()?,
        (None, None) => Vec::new(),
    };
    if certs.is_empty() && m.public_key.is_none() {
        return Err(if m.x509_certificate_chain.is_some() {
            "a bundle with an empty certificate chain".into()
        } else {
            "a bundle with neither a certificate nor a public key".into()
        });
    }
    let (signed, signature) = (&content.signed, &content.signature);
    let by = if let Some(leaf) = certs.first() {
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| format!("the signing certificate cannot be read: {e}"))?;
        if !signed.verifies(&PublicKey::from_spki(parsed.public_key().raw)?, signature) {
            return Err("the signature does not verify with its certificate's key".into());
        }
        if trust.identities.is_empty() {
            return Err("a keyless signature, and this rule trusts keys only".into());
        }
        By::Cert(leaf.clone())
    } else {
        match trust
            .keys
            .iter()
            .enumerate()
            .find(|(_, k)| signed.verifies(&k.key, signature))
        {
            Some(k) => By::Key(k),
            None => return Err("a signature by an unknown key".into()),
        }
    };
    Ok((by, certs))
}

/// Signing times observers vouch for: RFC 3161 timestamps over the
/// signature (at most 32, no duplicates). Each one that verifies is a
/// trusted signing time; one that does not gives no time (as sigstore's
/// clients count them) and its reason is kept for the refusal when no
/// time is left.
struct Observed {
    times: Vec<i64>,
    refused: Vec<String>,
}

fn observer_times(
    m: &Material,
    signature: &[u8],
    root: Option<&crate::verify::trust::TrustedRoot>,
) -> Result<Observed, String> {
    let mut observed = Observed {
        times: Vec::new(),
        refused: Vec::new(),
    };
    let Some(tvd) = &m.timestamp_verification_data else {
        return Ok(observed);
    };
    let tokens = &tvd.rfc3161_timestamps;
    if tokens.len() > crate::verify::tsa::MAX_TIMESTAMPS {
        return Err(format!(
            "{} timestamps (at most {} are read)",
            tokens.len(),
            crate::verify::tsa::MAX_TIMESTAMPS
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in tokens {
        if !seen.insert(&t.signed_timestamp) {
            return Err("the same timestamp twice".into());
        }
        let root = root.ok_or("no trusted root to check the timestamps with")?;
        let token = b64(&t.signed_timestamp, "a timestamp")?;
        match crate::verify::tsa::verify(&token, signature, root) {
            Ok(t) => observed.times.push(t),
            Err(e) => observed.refused.push(e),
        }
    }
    Ok(observed)
}

/// The transparency log's entry: the first of the bundle's entries (at
/// most [`MAX_ENTRIES`] looked at) that checks out; its promise's time if
/// it has one, and its index.
fn log_entry(
    b: &RawBundle,
    content: &SignedContent,
    signer_der: &[u8],
    root: Option<&crate::verify::trust::TrustedRoot>,
) -> Result<(Option<i64>, i64), String> {
    let root = root.ok_or("no trusted root to check the log entry with")?;
    let m = &b.verification_material;
    if m.tlog_entries.is_empty() {
        return Err("the signature has no transparency log entry".into());
    }
    let signed_sha256 = content.signed.sha256();
    // Bundles from v0.2 on must prove inclusion; v0.1 may carry the
    // promise (SET) alone.
    let proof_required = !b.media_type.ends_with("version=0.1");
    let logged = Logged {
        payload_sha256: &content.logged,
        signed_sha256: &signed_sha256,
    };
    let mut last = String::new();
    for e in m.tlog_entries.iter().take(MAX_ENTRIES) {
        match check_entry(
            e,
            root,
            &logged,
            &content.signature,
            signer_der,
            proof_required,
        ) {
            Ok(found) => return Ok(found),
            Err(why) => last = why,
        }
    }
    Err(last)
}

/// A keyless signer: the certificate must chain to the root at every
/// trusted signing time, carry a valid SCT (unless ignored), and name an
/// accepted identity.
fn certificate(
    leaf: &[u8],
    chain: &[Vec<u8>],
    times: &[(i64, &'static str)],
    refused_times: &[String],
    trust: &Trust,
) -> Result<(String, String), String> {
    let root = trust
        .root
        .as_deref()
        .ok_or("no trusted root to check the certificate with")?;
    if times.is_empty() {
        return Err(match refused_times.first() {
            Some(why) => format!(
                "a keyless signature needs a trusted signing time, and it has none: {why}"
            ),
            None => "a keyless signature needs a trusted signing time: neither a verified SET nor an RFC 3161 timestamp".into(),
        });
    }
    let mut verified = None;
    for (t, _) in times {
        verified = Some(crate::verify::fulcio::verify(leaf, chain, root, *t)?);
    }
    let verified = verified.ok_or("no trusted signing time")?;
    if !trust.ignore_sct {
        crate::verify::sct::verify(leaf, &verified.issuer_spkis, root)?;
    }
    trust.accept(&verified.identity)
}

/// What a log entry must hold: the DSSE payload's hash (a `dsse` entry),
/// or the hash of what was signed (a `hashedrekord`: the message, or for
/// Rekor v2 DSSE the PAE).
struct Logged<'a> {
    payload_sha256: &'a [u8],
    signed_sha256: &'a [u8],
}

/// One log entry: a Rekor v1 entry whose SET verifies, or a Rekor v2
/// entry (no SET, its time ignored) with its inclusion proof; either way
/// logging this content, signature and signer, and with an inclusion
/// proof (required for v2) reaching a checkpoint the log signed. Returns
/// (the SET's integrated time, if any, and the log index).
fn check_entry(
    e: &TlogEntry,
    root: &crate::verify::trust::TrustedRoot,
    logged: &Logged<'_>,
    signature: &[u8],
    signer_der: &[u8],
    proof_required: bool,
) -> Result<(Option<i64>, i64), String> {
    if proof_required && e.inclusion_proof.is_none() {
        return Err(
            "the log entry has no inclusion proof, which bundles from v0.2 on must carry".into(),
        );
    }
    let kind = (
        e.kind_version.kind.as_str(),
        e.kind_version.version.as_str(),
    );
    let body = b64(&e.canonicalized_body, "the log entry's body")?;
    // The label must be what the body is (as sigstore's clients check):
    // the label picks what the body is checked against.
    let (body_kind, body_version) = body_kind(&body)?;
    if (body_kind.as_str(), body_version.as_str()) != kind {
        return Err(format!(
            "the log entry is labelled {} {} but its body is a {body_kind} {body_version} entry",
            kind.0, kind.1
        ));
    }
    let log_index = int(&e.log_index, "logIndex")?;
    let log_id = b64(&e.log_id.key_id, "the log ID")?;
    let (set_time, log) = match kind {
        ("hashedrekord", "0.0.2") => {
            let log = root
                .tlog(&log_id)
                .ok_or("the log entry is from a log the trusted root does not hold")?;
            check_v2_body(&body, logged.signed_sha256, signature, signer_der)?;
            if e.inclusion_proof.is_none() {
                return Err("a Rekor v2 log entry without an inclusion proof".into());
            }
            (None, log)
        }
        ("dsse", "0.0.1") | ("hashedrekord", "0.0.1") | ("intoto", "0.0.2") => {
            let promise = e
                .inclusion_promise
                .as_ref()
                .ok_or("the log entry has no signed entry timestamp (SET), so no trusted time")?;
            let p = Promise {
                body: e.canonicalized_body.clone(),
                integrated_time: int(&e.integrated_time, "integratedTime")?,
                log_index,
                log_id,
                set: b64(&promise.signed_entry_timestamp, "the SET")?,
            };
            let log = p.verify_set(root)?;
            let expected = if kind.0 == "dsse" || kind.0 == "intoto" {
                logged.payload_sha256
            } else {
                logged.signed_sha256
            };
            Entry::parse(&body)?.matches_sha256(expected, signature, signer_der)?;
            (Some(p.integrated_time), log)
        }
        (k, v) => return Err(format!("a {k} {v} log entry is not read for signatures")),
    };
    if let Some(proof) = &e.inclusion_proof {
        let hashes: Vec<[u8; 32]> = proof
            .hashes
            .iter()
            .map(|h| {
                b64(h, "a proof hash")?
                    .try_into()
                    .map_err(|_| "a proof hash is not 32 bytes".to_string())
            })
            .collect::<Result<_, _>>()?;
        let index = int(&proof.log_index, "inclusionProof.logIndex")? as u64;
        let size = int(&proof.tree_size, "treeSize")? as u64;
        let computed = crate::verify::merkle::root_from_proof(&body, index, size, &hashes)?;
        let claimed = b64(&proof.root_hash, "the proof's root hash")?;
        if computed[..] != claimed[..] {
            return Err("the log entry's inclusion proof does not lead to its root hash".into());
        }
        let checkpoint = proof
            .checkpoint
            .as_ref()
            .ok_or("the inclusion proof has no checkpoint")?;
        let (cp_size, cp_root) =
            crate::verify::merkle::verify_checkpoint(&checkpoint.envelope, log)?;
        if cp_size != size || cp_root[..] != claimed[..] {
            return Err("the checkpoint does not commit to the inclusion proof's tree".into());
        }
    }
    Ok((set_time, log_index))
}

/// The `kind` and `apiVersion` a log entry's body says it has.
fn body_kind(body: &[u8]) -> Result<(String, String), String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        kind: String,
        api_version: String,
    }
    let h: Head = serde_json::from_slice(body)
        .map_err(|e| format!("the log entry's body names no kind and version: {e}"))?;
    Ok((h.kind, h.api_version))
}

/// A Rekor v2 `hashedrekord` 0.0.2 body must log exactly this digest,
/// signature and verifier (the entry is checked against the bundle's own
/// content, not taken for it).
fn check_v2_body(
    body: &[u8],
    signed_sha256: &[u8],
    signature: &[u8],
    signer_der: &[u8],
) -> Result<(), String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        api_version: String,
        kind: String,
        spec: Spec,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        hashed_rekord_v002: V002,
    }
    #[derive(Deserialize)]
    struct V002 {
        data: Data,
        signature: Sig,
    }
    #[derive(Deserialize)]
    struct Data {
        algorithm: String,
        digest: String,
    }
    #[derive(Deserialize)]
    struct Sig {
        content: String,
        verifier: Verifier,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Verifier {
        x509_certificate: Option<RawBytes>,
        public_key: Option<RawBytes>,
    }
    let b: Body = serde_json::from_slice(body)
        .map_err(|e| format!("the Rekor v2 entry's body cannot be read: {e}"))?;
    if b.api_version != "0.0.2" || b.kind != "hashedrekord" {
        return Err("the Rekor v2 entry's body is not a hashedrekord 0.0.2".into());
    }
    let v = b.spec.hashed_rekord_v002;
    if v.data.algorithm != "SHA2_256" || b64(&v.data.digest, "the logged digest")? != signed_sha256
    {
        return Err("the log entry is for other content than this signature's".into());
    }
    if b64(&v.signature.content, "the logged signature")? != signature {
        return Err("the log entry holds another signature".into());
    }
    let verifier = match (
        &v.signature.verifier.x509_certificate,
        &v.signature.verifier.public_key,
    ) {
        (Some(c), _) => b64(&c.raw_bytes, "the logged certificate")?,
        (None, Some(k)) => b64(&k.raw_bytes, "the logged key")?,
        (None, None) => return Err("the log entry names no verifier".into()),
    };
    if verifier != signer_der {
        return Err("the log entry was signed by another certificate or key".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verifier with its reasons as text, as the tests read them.
    fn verify(bundle: &[u8], digest: &str, trust: &Trust) -> Result<Signed, String> {
        super::verify(bundle, digest, trust).map_err(String::from)
    }
    use crate::verify::rules::{IdentityRule, Matcher};
    use crate::verify::trust::TrustedRoot;
    use std::sync::Arc;

    use crate::verify::fixture;

    const DIR: &str = "sigstore/image-bundle/cosign-oci-attestation-2025";
    const IMAGE: &str = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";

    fn trust(subject: &str, root: &str) -> Trust {
        Trust {
            identities: vec![IdentityRule {
                issuer: Matcher::Exact("https://github.com/login/oauth".into()),
                subject: Matcher::Exact(subject.into()),
                extensions: Vec::new(),
            }],
            root: Some(Arc::new(TrustedRoot::parse(&fixture(root)).unwrap())),
            ..Trust::default()
        }
    }

    /// Each refusal names the step that made it, in sigstore-go's order.
    #[test]
    fn refusals_name_their_step() {
        let bundle = fixture(&format!("{DIR}/oci-attestation.sigstore.json"));
        let t = trust(
            "cody@soyland.com",
            "sigstore/trusted-roots/public-good.json",
        );
        let step =
            |b: &[u8], digest: &str, t: &Trust| super::verify(b, digest, t).unwrap_err().step;
        assert_eq!(step(b"{", IMAGE, &t), Step::Read);
        let other = format!("sha256:{}", "2".repeat(64));
        assert_eq!(step(bundle.as_bytes(), &other, &t), Step::SignedContent);
        let keys_only = Trust {
            identities: Vec::new(),
            ..t.clone()
        };
        assert_eq!(step(bundle.as_bytes(), IMAGE, &keys_only), Step::Signer);
        let mut v: Value = serde_json::from_str(&bundle).unwrap();
        v["verificationMaterial"]["tlogEntries"] = Value::Array(Vec::new());
        let no_log = serde_json::to_vec(&v).unwrap();
        assert_eq!(step(&no_log, IMAGE, &t), Step::LogEntry);
        let someone = trust(
            "someone@else.com",
            "sigstore/trusted-roots/public-good.json",
        );
        let e = super::verify(bundle.as_bytes(), IMAGE, &someone).unwrap_err();
        assert_eq!(e.step, Step::Certificate);
        // The reason alone, as reviews show it.
        assert_eq!(e.to_string(), e.reason);
    }

    /// cosign's real 2025 image bundle: admitted for its subject image
    /// and identity with either root; refused for another identity,
    /// another image, one byte changed anywhere that matters.
    #[test]
    fn the_real_image_bundle() {
        let bundle = fixture(&format!("{DIR}/oci-attestation.sigstore.json"));
        for root in [
            format!("{DIR}/trusted_root_pgi.json"),
            "sigstore/trusted-roots/public-good.json".into(),
        ] {
            let t = trust("cody@soyland.com", &root);
            let s = verify(bundle.as_bytes(), IMAGE, &t).unwrap();
            assert_eq!(s.log_index, Some(175_508_996));
            assert!(s.signer.contains("cody@soyland.com"));
        }
        let t = trust(
            "cody@soyland.com",
            "sigstore/trusted-roots/public-good.json",
        );
        assert!(
            verify(
                bundle.as_bytes(),
                IMAGE,
                &trust(
                    "someone@else.com",
                    "sigstore/trusted-roots/public-good.json"
                )
            )
            .unwrap_err()
            .contains("not accepted")
        );
        let other = format!("sha256:{}", "2".repeat(64));
        assert!(
            verify(bundle.as_bytes(), &other, &t)
                .unwrap_err()
                .contains("another digest")
        );
        // Changed: the payload (re-encoded), the signature, the SET, a
        // proof hash, the checkpoint.
        let v: Value = serde_json::from_str(&bundle).unwrap();
        let mutate = |f: &dyn Fn(&mut Value)| {
            let mut c = v.clone();
            f(&mut c);
            verify(c.to_string().as_bytes(), IMAGE, &t)
        };
        let flip = |s: &str| -> String {
            let mut b = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
            let i = b.len() / 2;
            b[i] ^= 1;
            base64::engine::general_purpose::STANDARD.encode(b)
        };
        let payload = v["dsseEnvelope"]["payload"].as_str().unwrap().to_string();
        let decoded = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(&payload)
                .unwrap(),
        )
        .unwrap();
        let spaced = decoded.replacen("\"predicate\"", "\"predicate\" ", 1);
        assert!(
            mutate(
                &|c| c["dsseEnvelope"]["payload"] = base64::engine::general_purpose::STANDARD
                    .encode(&spaced)
                    .into()
            )
            .is_err(),
            "re-serialised payload"
        );
        assert!(
            mutate(&|c| c["dsseEnvelope"]["signatures"][0]["sig"] =
                flip(c["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap()).into())
            .is_err()
        );
        let e = "/verificationMaterial/tlogEntries/0";
        assert!(
            mutate(&|c| {
                let p = c
                    .pointer_mut(&format!("{e}/inclusionPromise/signedEntryTimestamp"))
                    .unwrap();
                *p = flip(p.as_str().unwrap()).into();
            })
            .is_err()
        );
        let r = mutate(&|c| {
            let p = c
                .pointer_mut(&format!("{e}/inclusionProof/hashes/0"))
                .unwrap();
            *p = flip(p.as_str().unwrap()).into();
        });
        assert!(r.unwrap_err().contains("inclusion proof"));
        let r = mutate(&|c| {
            let p = c
                .pointer_mut(&format!("{e}/inclusionProof/checkpoint/envelope"))
                .unwrap();
            *p = p
                .as_str()
                .unwrap()
                .replace("53604735\n", "53604736\n")
                .into();
        });
        assert!(r.is_err());
        let r = mutate(&|c| {
            c.pointer_mut(&format!("{e}/inclusionProof"))
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove("checkpoint");
        });
        assert!(r.unwrap_err().contains("no checkpoint"));
        let r = mutate(&|c| {
            c.pointer_mut(e)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove("inclusionPromise");
        });
        assert!(r.unwrap_err().contains("no signed entry timestamp"));
        let r = mutate(&|c| {
            let sigs = c["dsseEnvelope"]["signatures"].clone();
            c["dsseEnvelope"]["signatures"]
                .as_array_mut()
                .unwrap()
                .extend(sigs.as_array().unwrap().clone());
        });
        assert!(r.unwrap_err().contains("exactly one"));
        let r = mutate(&|c| c["mediaType"] = "application/vnd.dev.sigstore.bundle.v9+json".into());
        assert!(r.unwrap_err().contains("media type"));
        let r = mutate(&|c| {
            c.pointer_mut(&format!("{e}/kindVersion/version"))
                .map(|v| *v = "0.0.2".into())
                .unwrap()
        });
        assert!(
            r.as_ref().unwrap_err().contains("labelled dsse 0.0.2"),
            "{r:?}"
        );
        // A label of another kind than the body (issue 33, 8).
        for (k, v) in [
            ("hashedrekord", "0.0.1"),
            ("intoto", "0.0.2"),
            ("dsse", "0.0.9"),
        ] {
            let r = mutate(&|c| {
                *c.pointer_mut(&format!("{e}/kindVersion")).unwrap() =
                    serde_json::json!({"kind": k, "version": v});
            });
            assert!(
                r.as_ref()
                    .unwrap_err()
                    .contains(&format!("labelled {k} {v} but its body is a dsse 0.0.1")),
                "{r:?}"
            );
        }
        // The same entry relabelled as Rekor v2: its body is not one.
        let r = mutate(&|c| {
            *c.pointer_mut(&format!("{e}/kindVersion")).unwrap() =
                serde_json::json!({"kind": "hashedrekord", "version": "0.0.2"});
        });
        assert!(
            r.as_ref()
                .unwrap_err()
                .contains("labelled hashedrekord 0.0.2"),
            "{r:?}"
        );
    }
}
