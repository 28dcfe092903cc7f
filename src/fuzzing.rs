//! Entry points of the fuzz targets (`fuzz/`), also run over the checked-in
//! corpus by `cargo test` (tests/fuzz_corpus.rs). Each takes arbitrary
//! bytes and panics only when an invariant breaks; that panic is the
//! finding. Not used by the server.

use std::time::Duration;

use serde_json::Value;

use crate::image_ref::ImageRef;
use crate::mutate::{MutateConfig, PullPolicy, Target};
use crate::policy::{ImagePattern, Policy, RegistryPattern};
use crate::review::workload::Object;
use crate::review::{admission, imagepolicy};
use crate::server::http::{Conn, Limits, MemoryTransport, ReadError};

/// Parsing never panics, and whatever parses prints back to itself.
pub fn image_ref(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match ImageRef::parse(s) {
        Ok(r) => {
            let printed = r.to_string();
            let again = ImageRef::parse(&printed);
            assert_eq!(again.as_ref(), Ok(&r), "{s:?} printed as {printed:?}");
            let _ = r.normalized();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(p) = RegistryPattern::parse(s)
        && let Ok(r) = ImageRef::parse("nginx:1")
    {
        let _ = p.matches(&r);
    }
    let _ = ImagePattern::parse(s);
}

/// Small limits so that the fuzzer reaches them.
const FUZZ_LIMITS: Limits = Limits {
    max_head: 2048,
    max_body: 4096,
    path_caps: &[("/image_policy", 8192)],
    request_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_secs(5),
    write_timeout: Duration::from_secs(5),
};

/// The HTTP reader on bytes arriving in pieces (the first byte picks the
/// piece size): requests respect the limits, errors are clean.
pub fn http_request(data: &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let size = 1 + usize::from(seed % 64);
    let pieces = rest.chunks(size).map(<[u8]>::to_vec);
    let Ok(mut conn) = Conn::new(MemoryTransport::new(pieces), FUZZ_LIMITS) else {
        return;
    };
    for _ in 0..32 {
        match conn.read_request() {
            Ok(req) => {
                assert!(req.body().len() <= FUZZ_LIMITS.body_cap(&req.path));
                assert!(!req.path.contains('?'));
                conn.answered(req);
            }
            Err(ReadError::Reject(code, _)) => {
                assert!((400..=599).contains(&code), "{code}");
                break;
            }
            Err(_) => break,
        }
    }
}

fn policy_and_mutations() -> (Policy, MutateConfig) {
    let policy = Policy {
        break_glass: true,
        allowed_registries: vec![
            RegistryPattern::parse("docker.io").unwrap_or_else(|e| unreachable!("{e}")),
        ],
        ..Policy::default()
    };
    let mutate = MutateConfig {
        rewrite_registry: Target::parse("mirror.example.com").ok(),
        image_pull_secrets: vec!["regcred".into()],
        image_pull_policy: Some(PullPolicy::Always),
        default_storage_class: Some("fast".into()),
        mutate_templates: true,
        ..MutateConfig::default()
    };
    (policy, mutate)
}

/// Both review decoders: every answer is a well-formed review of the right
/// kind (ImageReview always; AdmissionReview with the request's uid).
pub fn review(data: &[u8]) {
    let (policy, mutate) = policy_and_mutations();
    if let Ok((reply, _)) = imagepolicy::review(&policy, data, &crate::policy::no_facts) {
        let v: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
        assert_eq!(v["kind"], "ImageReview", "{v}");
        assert!(v["status"]["allowed"].is_boolean(), "{v}");
    }
    fast_reading_agrees(data);
    image_review_reading_agrees(data);
    // The one-pass and the two-pass readings of a review must agree.
    let fast = admission::validate_body(&policy, data, &crate::policy::no_facts)
        .map(|(reply, _, _)| reply);
    let slow = admission::parse(data)
        .map(|r| admission::validate(&policy, &r, &crate::policy::no_facts).0);
    assert_eq!(fast.is_ok(), slow.is_ok());
    if let (Ok(a), Ok(b)) = (&fast, &slow) {
        let (a, b): (Value, Value) = (
            serde_json::from_slice(a).unwrap_or_default(),
            serde_json::from_slice(b).unwrap_or_default(),
        );
        assert_eq!(
            a["response"]["allowed"], b["response"]["allowed"],
            "{a} vs {b}"
        );
        assert_eq!(a["response"]["uid"], b["response"]["uid"]);
    }
    if let Ok(r) = admission::parse(data) {
        for (reply, patch_allowed) in [
            (
                admission::validate(&policy, &r, &crate::policy::no_facts).0,
                false,
            ),
            (admission::mutate(&policy, &mutate, &r, None).0, true),
        ] {
            let v: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
            assert_eq!(v["kind"], "AdmissionReview", "{v}");
            assert_eq!(v["response"]["uid"].as_str(), Some(r.uid.as_str()), "{v}");
            assert!(v["response"]["allowed"].is_boolean(), "{v}");
            assert!(patch_allowed || v["response"].get("patch").is_none(), "{v}");
        }
    }
}

/// The fast reader (`review::json`) accepts a review only if serde_json
/// does, and reads from it exactly what the serde derives read: the
/// envelope, and object and oldObject as `workload::Object`.
pub fn fast_reading_agrees(data: &[u8]) {
    let Some(fast) = admission::read_fast(data) else {
        return;
    };
    let slow = match admission::parse(data) {
        Ok(r) => r,
        Err(e) => panic!("the fast reader accepted what serde_json refuses: {e}"),
    };
    assert_eq!(fast.api_version, slow.api_version);
    assert_eq!(fast.uid, slow.uid);
    let decode = |raw: Option<admission::Raw>| {
        raw.map(|raw| match serde_json::from_str::<Object>(raw.get()) {
            Ok(o) => o,
            Err(e) => panic!("the fast reader accepted an object serde refuses: {e}"),
        })
    };
    // Objects apart, the two requests print alike.
    let (mut fast, mut slow) = (fast.request, slow.request);
    let fast_objects = (fast.object.take(), fast.old_object.take());
    let slow_objects = (decode(slow.object.take()), decode(slow.old_object.take()));
    assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
    assert_eq!(format!("{fast_objects:?}"), format!("{slow_objects:?}"));
}

/// The ImageReview fast reader accepts a body only if serde_json does,
/// and reads from it what the serde derives read.
pub fn image_review_reading_agrees(data: &[u8]) {
    let Some(fast) = imagepolicy::ImageReview::read_fast(data) else {
        return;
    };
    match serde_json::from_slice::<imagepolicy::ImageReview>(data) {
        Ok(slow) => assert_eq!(format!("{fast:?}"), format!("{slow:?}")),
        Err(e) => panic!("the fast reader accepted an ImageReview serde_json refuses: {e}"),
    }
}

/// Bodies near the valid ones, for readers that must agree: `count` times
/// one of `bodies` with one to three pieces replaced, removed, doubled or
/// swapped for JSON's special characters (and a few review fields), from a
/// fixed seed, each handed to `each`.
pub fn mutations(bodies: &[Vec<u8>], count: usize, mut each: impl FnMut(&[u8])) {
    const PIECES: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b"\\",
        b"\\u0041",
        b"\\ud800",
        b"null",
        b"true",
        b"0",
        b"-",
        b".",
        b"e",
        b" ",
        b"\n",
        b"\x01",
        b"\xc3\xa9",
        b"01",
        b"1e5",
        b"\"image\":\"x\",",
        b"\"containers\":null,",
        b"\"metadata\":{},",
        b"\"spec\":[],",
        b"\"uid\":\"u\",",
        b"\"object\":null,",
        b"[[[[[[[[",
        b"\"annotations\":{\"a\":\"b\"},",
        b"\"namespace\":null,",
        b"\"kind\":\"ImageReview\",",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for _ in 0..count {
        let mut body = bodies[next(bodies.len())].clone();
        for _ in 0..1 + next(3) {
            if body.is_empty() {
                break;
            }
            let at = next(body.len());
            let end = (at + 1 + next(8)).min(body.len());
            match next(4) {
                0 => {
                    body.splice(at..end, PIECES[next(PIECES.len())].iter().copied());
                }
                1 => {
                    body.drain(at..end);
                }
                2 => {
                    let copy = body[at..end].to_vec();
                    body.splice(at..at, copy);
                }
                _ => {
                    body.splice(at..at, PIECES[next(PIECES.len())].iter().copied());
                }
            }
        }
        each(&body);
    }
}

/// A fast reader against serde on [`mutations`] of `bodies`: `agree`
/// checks each body (it panics where the two differ), `reads` says whether
/// the fast reader read it; both outcomes must have come up often, or the
/// mutations did not exercise the reader.
pub fn readers_agree_on_mutations(bodies: &[Vec<u8>], agree: fn(&[u8]), reads: fn(&[u8]) -> bool) {
    let (mut accepted, mut refused) = (0, 0);
    mutations(bodies, 6000, |body| {
        agree(body);
        if reads(body) {
            accepted += 1;
        } else {
            refused += 1;
        }
    });
    assert!(accepted > 500 && refused > 500, "{accepted} {refused}");
}
