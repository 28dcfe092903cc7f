//! The fast reader: the one reader whose requests are judged on the
//! validating paths (`/image_policy`, `/validate`, `/`). A strict JSON pull
//! reader (`json`) and, per wire format, what it reads out of a body, in
//! one pass and mostly without copies. Measured against serde_json alone
//! (bench/README.md), it saves 10 to 30 % of a Pod review's CPU.
//!
//! The serde derives beside each wire type are its oracle: the tests and
//! the fuzz corpus hold the two readings to the same result. serde_json
//! never produces a request here; it only words why a body this reader
//! refused is refused (`admission::read_validate`, `imagepolicy::read`).
//! `/mutate` reads the whole object as a JSON value, since it patches it.

use std::borrow::Cow;

pub mod admission;
pub mod imagepolicy;
pub mod json;
pub mod workload;

use json::{Read, Reader, Seen, optional};

/// A version or kind as read: borrowed when it is one the reader knows.
pub(crate) type Known = Option<Cow<'static, str>>;

/// A review's envelope by the fast reader: `apiVersion`, `kind` and the one
/// `field` that holds the review (`spec`, `request`), read by `read`; as a
/// serde-derived struct of three `Option`s reads it (`null` is `None`, a
/// field twice gives up, others are passed over). Versions and kinds in
/// `known` are not copied.
pub(crate) fn read_envelope<'a, T>(
    r: &mut Reader<'a>,
    field: &str,
    known: &[&'static str],
    mut read: impl FnMut(&mut Reader<'a>) -> Read<T>,
) -> Read<(Known, Known, Option<T>)> {
    let (mut api_version, mut kind, mut value) = (None, None, None);
    let mut seen = Seen::default();
    r.object(|r, key| {
        match key {
            "apiVersion" => {
                seen.first(0)?;
                api_version = r.known_string(known)?;
            }
            "kind" => {
                seen.first(1)?;
                kind = r.known_string(known)?;
            }
            _ if key == field => {
                seen.first(2)?;
                value = optional(r, &mut read)?;
            }
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok((api_version, kind, value))
}
