//! The AdmissionReview, object and old object decoded in one pass of the
//! fast reader, exactly as the serde derives of `review::admission` and
//! `review::workload` read them.

use super::json::{GaveUp, Read, Reader, Seen, optional};
use crate::review::admission::{
    AdmissionRequest, AdmissionReview, GroupVersionKind, KIND, KNOWN_VERSIONS, Review, V1, V1BETA1,
    checked,
};
use crate::review::workload::Object;

/// The review, object and old object decoded, in one pass of the fast
/// reader (`review::fast`); `None` when it gave up or the envelope is not
/// one we answer, and the body must be read with serde_json to say why.
pub fn read_fast(body: &[u8]) -> Option<Review<Box<Object>>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut r = Reader::new(text);
    let review = read_envelope(&mut r).ok()?;
    r.end().ok()?;
    checked(review).ok()
}

fn read_envelope(r: &mut Reader<'_>) -> Read<AdmissionReview<Box<Object>>> {
    let (api_version, kind, request) =
        super::read_envelope(r, "request", &[V1, V1BETA1, KIND], read_request)?;
    Ok(AdmissionReview {
        api_version,
        kind,
        request,
    })
}

fn read_request(r: &mut Reader<'_>) -> Read<AdmissionRequest<Box<Object>>> {
    let mut req = AdmissionRequest::default();
    let mut seen = Seen::default();
    r.object(|r, key| {
        match key {
            "uid" => {
                seen.first(0)?;
                req.uid = r.optional_string()?;
            }
            "kind" => {
                seen.first(1)?;
                let mut gvk = GroupVersionKind::default();
                let mut fields = Seen::default();
                r.object(|r, key| {
                    let (n, to, known) = match key {
                        "group" => (0, &mut gvk.group, crate::kinds::GROUPS),
                        "version" => (1, &mut gvk.version, KNOWN_VERSIONS),
                        "kind" => (2, &mut gvk.kind, crate::kinds::KINDS),
                        _ => return r.skip(),
                    };
                    fields.first(n)?;
                    // A string, not `null` (serde's `String` refuses it).
                    *to = r.known_string(known)?.ok_or(GaveUp)?;
                    Ok(())
                })?;
                req.kind = gvk;
            }
            "subResource" => {
                seen.first(2)?;
                req.sub_resource = r.optional_string()?;
            }
            "name" => {
                seen.first(3)?;
                req.name = r.optional_string()?;
            }
            "namespace" => {
                seen.first(4)?;
                req.namespace = r.optional_string()?;
            }
            "operation" => {
                seen.first(5)?;
                req.operation = r.known_string(&["CREATE", "UPDATE", "DELETE", "CONNECT"])?;
            }
            "dryRun" => {
                seen.first(6)?;
                req.dry_run = optional(r, Reader::bool)?;
            }
            "object" => {
                seen.first(7)?;
                req.object = optional(r, Object::read_boxed)?;
            }
            "oldObject" => {
                seen.first(8)?;
                req.old_object = optional(r, Object::read_boxed)?;
            }
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok(req)
}
