//! The check that what a registry sent is what was asked for: the bytes
//! hashed while they stream in, under a size cap, and compared with the
//! digest of the reference (or of the descriptor). A registry's
//! `Docker-Content-Digest` header is never taken for it: a lying registry
//! must be caught by the bytes.

use ring::digest;

/// A `sha256:<64 hex>` or `sha512:<128 hex>` digest, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    /// Lowercase hex.
    hex: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Algorithm {
    Sha256,
    Sha512,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, String> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("digest {s:?} is not algorithm:hex"))?;
        let (algorithm, len) = match alg {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            other => {
                return Err(format!(
                    "digest algorithm {other:?} is not supported (sha256, sha512)"
                ));
            }
        };
        if hex.len() != len
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!("digest {s:?} must have {len} lowercase hex digits"));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// `sha256-<hex>`: the tag the OCI referrers fallback (tag schema)
    /// and cosign's attachments are named after.
    pub fn tag_form(&self) -> String {
        self.to_string().replace(':', "-")
    }

    /// The sha256 digest of `bytes` (for a tag, whose digest is what the
    /// registry sent).
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex(digest::digest(&digest::SHA256, bytes).as_ref()),
        }
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alg = match self.algorithm {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        };
        write!(f, "{alg}:{}", self.hex)
    }
}

/// Lowercase hex, as digests and log IDs are written.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// The bytes of a hex string (either case); `None` if it is not one.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Hashes content whose digest is not known in advance (a manifest
/// fetched by tag), under a cap: sha256, as registries compute it.
pub struct Hasher {
    algorithm: Algorithm,
    ctx: digest::Context,
    received: usize,
    cap: usize,
}

impl Hasher {
    pub fn new(cap: usize) -> Self {
        Hasher::of(Algorithm::Sha256, cap)
    }

    fn of(algorithm: Algorithm, cap: usize) -> Self {
        let alg = match algorithm {
            Algorithm::Sha256 => &digest::SHA256,
            Algorithm::Sha512 => &digest::SHA512,
        };
        Hasher {
            algorithm,
            ctx: digest::Context::new(alg),
            received: 0,
            cap,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) -> Result<(), Refused> {
        self.received = self.received.saturating_add(chunk.len());
        if self.received > self.cap {
            return Err(Refused::TooLarge { cap: self.cap });
        }
        self.ctx.update(chunk);
        Ok(())
    }

    pub fn finish(self) -> Digest {
        Digest {
            algorithm: self.algorithm,
            hex: hex(self.ctx.finish().as_ref()),
        }
    }
}

/// Why received content was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// More than the cap arrived.
    TooLarge { cap: usize },
    /// The bytes hash to something else.
    Mismatch { expected: String, got: String },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::TooLarge { cap } => write!(f, "the registry sent more than {cap} bytes"),
            Refused::Mismatch { expected, got } => write!(
                f,
                "the registry sent content whose digest is {got}, not the {expected} asked for"
            ),
        }
    }
}

/// Hashes content as it arrives, refusing more than `cap` bytes, and
/// checks it against the digest asked for.
pub struct Verifier {
    expected: Digest,
    hasher: Hasher,
}

impl Verifier {
    pub fn new(expected: Digest, cap: usize) -> Self {
        Verifier {
            hasher: Hasher::of(expected.algorithm, cap),
            expected,
        }
    }

    /// Bytes taken so far.
    pub fn received(&self) -> usize {
        self.hasher.received
    }

    pub fn update(&mut self, chunk: &[u8]) -> Result<(), Refused> {
        self.hasher.update(chunk)
    }

    /// Checks the whole content.
    pub fn finish(self) -> Result<(), Refused> {
        let got = self.hasher.finish();
        if got.hex == self.expected.hex {
            Ok(())
        } else {
            Err(Refused::Mismatch {
                expected: self.expected.to_string(),
                got: got.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sha256 of the empty string and of "abc" (FIPS 180-2 vectors).
    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn content_is_checked_against_the_digest_asked_for() {
        assert_eq!(Digest::sha256_of(b"").to_string(), EMPTY);
        let mut v = Verifier::new(Digest::parse(ABC).unwrap(), 10);
        v.update(b"a").unwrap();
        v.update(b"bc").unwrap();
        v.finish().unwrap();
        // A lying registry: other bytes for the same digest.
        let mut v = Verifier::new(Digest::parse(ABC).unwrap(), 10);
        v.update(b"abd").unwrap();
        let e = v.finish().unwrap_err();
        assert!(e.to_string().contains("not the sha256:ba7816bf"), "{e}");
        // More than the cap: refused as it arrives.
        let mut v = Verifier::new(Digest::parse(EMPTY).unwrap(), 4);
        v.update(b"1234").unwrap();
        assert_eq!(v.update(b"5"), Err(Refused::TooLarge { cap: 4 }));
        let sha512 = format!("sha512:{}", "a".repeat(128));
        assert!(Digest::parse(&sha512).is_ok());
        for bad in [
            "md5:00",
            "sha256:ABC",
            "sha256",
            &format!("sha256:{}", "g".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }
}
