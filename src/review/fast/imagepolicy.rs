//! The ImageReview, read by the fast reader exactly as the serde derives
//! of `review::imagepolicy` read it.

use std::collections::BTreeMap;

use super::json::{GaveUp, Read, Reader, Seen, optional};
use crate::review::imagepolicy::{API_VERSION, ContainerSpec, ImageReview, KIND, Spec};
use crate::review::workload::Capped;

impl ImageReview {
    /// The review in one pass of the fast reader (`review::fast`), read
    /// exactly as the serde derives above read it; `None` when the reader
    /// gave up, and serde_json must read the body and say what is wrong.
    pub fn read_fast(body: &[u8]) -> Option<ImageReview> {
        let text = std::str::from_utf8(body).ok()?;
        let mut r = Reader::new(text);
        let review = read_review(&mut r).ok()?;
        r.end().ok()?;
        Some(review)
    }
}

/// Unknown fields are passed over, a field twice gives up (a serde struct
/// refuses it), `null` is `None` for every `Option`.
fn read_review(r: &mut Reader<'_>) -> Read<ImageReview> {
    let (api_version, kind, spec) =
        super::read_envelope(r, "spec", &[API_VERSION, KIND], read_spec)?;
    Ok(ImageReview {
        api_version,
        kind,
        spec,
    })
}

fn read_spec(r: &mut Reader<'_>) -> Read<Spec> {
    let mut spec = Spec::default();
    let mut seen = Seen::default();
    r.object(|r, key| {
        match key {
            "containers" => {
                seen.first(0)?;
                spec.containers = optional(r, |r| Capped::read(r, read_container))?;
            }
            "annotations" => {
                seen.first(1)?;
                spec.annotations = optional(r, |r| {
                    // A map, unlike a struct, takes a key twice: the last wins.
                    let mut map = BTreeMap::new();
                    r.object(|r, key| {
                        map.insert(key.to_string(), r.string()?.into_owned());
                        Ok(())
                    })?;
                    Ok(map)
                })?;
            }
            "namespace" => {
                seen.first(2)?;
                spec.namespace = r.optional_string()?;
            }
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok(spec)
}

/// `image` is required and must be a string (not `null`).
fn read_container(r: &mut Reader<'_>) -> Read<ContainerSpec> {
    let mut image = None;
    r.object(|r, key| {
        if key == "image" {
            if image.is_some() {
                return Err(GaveUp);
            }
            image = Some(r.string()?.into_owned());
            Ok(())
        } else {
            r.skip()
        }
    })?;
    Ok(ContainerSpec {
        image: image.ok_or(GaveUp)?,
    })
}
