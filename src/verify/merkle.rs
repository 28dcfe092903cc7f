//! A Rekor v1 entry's inclusion proof (RFC 6962/9162: leaf =
//! SHA-256(0x00 ‖ body), node = SHA-256(0x01 ‖ left ‖ right)) and the
//! signed checkpoint (a C2SP signed note) that commits to its root: the
//! note's text (origin, tree size, base64 root hash, extensions) signed by
//! the log's key, the signature line picked by the log's name and key
//! hint; other lines (witnesses) are ignored.

use base64::Engine as _;

use crate::verify::trust::Log;

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The root an inclusion proof leads to from `body` at `index` in a tree
/// of `size` leaves (RFC 9162 §2.1.3.2), or why the proof is malformed.
pub fn root_from_proof(
    body: &[u8],
    index: u64,
    size: u64,
    hashes: &[[u8; 32]],
) -> Result<[u8; 32], String> {
    if index >= size {
        return Err("the inclusion proof's index is not in the tree".into());
    }
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = sha256(&[&[0], body]);
    for p in hashes {
        if snode == 0 {
            return Err("the inclusion proof is longer than its tree".into());
        }
        if fnode & 1 == 1 || fnode == snode {
            r = sha256(&[&[1], p, &r]);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = sha256(&[&[1], &r, p]);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err("the inclusion proof is shorter than its tree".into());
    }
    Ok(r)
}

/// Verifies a checkpoint note with `log`'s key and returns (tree size,
/// root hash) it commits to.
pub fn verify_checkpoint(note: &str, log: &Log) -> Result<(u64, [u8; 32]), String> {
    let (text, sigs) = note
        .split_once("\n\n")
        .ok_or("the checkpoint has no signature block")?;
    let text = format!("{text}\n");
    let mut lines = text.lines();
    let origin = lines.next().unwrap_or("");
    let size: u64 = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or("the checkpoint's tree size is not a number")?;
    let root = lines
        .next()
        .and_then(|l| base64::engine::general_purpose::STANDARD.decode(l).ok())
        .filter(|r| r.len() == 32)
        .ok_or("the checkpoint's root hash is not 32 bytes of base64")?;
    // The signer's name is the origin's host part for Rekor v1
    // (`rekor.sigstore.dev - <tree id>`).
    let name = origin.split(" - ").next().unwrap_or(origin);
    // The key hint: the first bytes of the log's ID (for Rekor v1 the
    // sha256 of its key, for Rekor v2 the signed-note key ID).
    let hint = log
        .id
        .get(..4)
        .ok_or("the log's ID is too short for a checkpoint key hint")?;
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            continue;
        };
        let Some((signer, sig)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig) else {
            continue;
        };
        if signer != name || sig.len() < 5 || &sig[..4] != hint {
            continue;
        }
        if log.key.verify(text.as_bytes(), &sig[4..]) {
            let mut r = [0; 32];
            r.copy_from_slice(&root);
            return Ok((size, r));
        }
        return Err("the checkpoint's signature does not verify with the log's key".into());
    }
    Err("the checkpoint is not signed by the log".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_of_small_trees() {
        // A tree of 3 leaves a, b, c: root = H(1 ‖ H(1 ‖ la ‖ lb) ‖ lc).
        let leaf = |x: &[u8]| sha256(&[&[0], x]);
        let (la, lb, lc) = (leaf(b"a"), leaf(b"b"), leaf(b"c"));
        let ab = sha256(&[&[1], &la, &lb]);
        let root = sha256(&[&[1], &ab, &lc]);
        assert_eq!(root_from_proof(b"a", 0, 3, &[lb, lc]).unwrap(), root);
        assert_eq!(root_from_proof(b"b", 1, 3, &[la, lc]).unwrap(), root);
        assert_eq!(root_from_proof(b"c", 2, 3, &[ab]).unwrap(), root);
        assert_ne!(root_from_proof(b"x", 2, 3, &[ab]).unwrap(), root);
        assert!(root_from_proof(b"c", 3, 3, &[ab]).is_err());
        assert!(root_from_proof(b"c", 2, 3, &[ab, ab]).is_err());
        assert!(root_from_proof(b"a", 0, 3, &[lb]).is_err());
        assert_eq!(root_from_proof(b"a", 0, 1, &[]).unwrap(), la);
    }
}
