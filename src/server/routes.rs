//! Which path does what, the decision log line, and metrics per request.
//!
//! Review endpoints run under a worker permit (the fixed-size pool that
//! bounds how many requests are decoded and judged at once); health and
//! metrics do not, so they answer even when every worker is busy.

use std::time::Instant;

use log::{info, log_enabled, trace, warn};

use crate::metrics::{Endpoint, Outcome as Counted};
use crate::policy::{Decision, MAX_LISTED, Request};
use crate::review::{admission, imagepolicy};
use crate::server::http::{Request as HttpRequest, Response};
use crate::server::{Port, Shared};

const JSON: &str = "application/json";

/// Answers one request.
pub fn handle(shared: &Shared, req: &HttpRequest, port: Port) -> Response {
    let started = Instant::now();
    let probe = matches!(req.path.as_ref(), "/healthz" | "/readyz" | "/metrics");
    if port == Port::Probes && !probe {
        shared
            .metrics
            .request(Endpoint::Other, Counted::Invalid, started.elapsed());
        return Response::text(
            404,
            format!(
                "{}: this port serves /metrics, /healthz and /readyz only",
                req.path
            ),
        );
    }
    let (endpoint, allowed_methods) = match req.path.as_ref() {
        "/image_policy" => (Endpoint::ImagePolicy, "POST"),
        "/validate" | "/" => (Endpoint::Validate, "POST"),
        "/mutate" => (Endpoint::Mutate, "POST"),
        "/healthz" => (Endpoint::Healthz, "GET"),
        "/readyz" => (Endpoint::Readyz, "GET"),
        "/metrics" => (Endpoint::Metrics, "GET"),
        _ => {
            shared
                .metrics
                .request(Endpoint::Other, Counted::Invalid, started.elapsed());
            return Response::text(404, format!("no such path: {}", req.path));
        }
    };
    let (response, outcome) = if req.method != allowed_methods {
        let mut r = Response::text(
            405,
            format!(
                "{} {} is not supported; use {allowed_methods}",
                req.method, req.path
            ),
        );
        r.headers.push(("Allow", allowed_methods.to_string()));
        (r, Counted::Invalid)
    } else {
        match endpoint {
            Endpoint::Healthz => (Response::text(200, "ok"), Counted::Served),
            Endpoint::Readyz => (readyz(shared), Counted::Served),
            Endpoint::Metrics => (
                Response::new(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    shared.metrics.render()
                        + &shared.registry().stats().render()
                        + &crate::admit::COUNTS.render(),
                ),
                Counted::Served,
            ),
            Endpoint::ImagePolicy if !is_json(req.content_type.as_deref()) => (
                image_review_refused(&format!(
                    "Content-Type {:?} is not JSON; send application/json",
                    req.content_type.as_deref().unwrap_or("")
                )),
                Counted::Invalid,
            ),
            _ if !is_json(req.content_type.as_deref()) => (
                Response::text(
                    415,
                    format!(
                        "Content-Type {:?} is not JSON; send application/json",
                        req.content_type.as_deref().unwrap_or("")
                    ),
                ),
                Counted::Invalid,
            ),
            _ => {
                let _permit = shared.workers.acquire(&shared.metrics);
                if log_enabled!(log::Level::Trace) {
                    trace!(
                        "{} request body: {}",
                        req.path,
                        String::from_utf8_lossy(req.body())
                    );
                }
                match endpoint {
                    Endpoint::ImagePolicy => image_policy(shared, req.body(), req.timeout),
                    Endpoint::Mutate => mutate(shared, req.body(), req.timeout),
                    _ => validate(shared, req.body(), req.timeout),
                }
            }
        }
    };
    shared.metrics.request(endpoint, outcome, started.elapsed());
    response
}

/// JSON or unspecified (the apiserver always sends application/json).
fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let essence = ct.as_bytes();
    let essence = match essence.iter().position(|&b| b == b';') {
        Some(i) => &essence[..i],
        None => essence,
    }
    .trim_ascii();
    // Case-insensitive, without a lowered copy.
    let starts = |p: &str| {
        essence
            .get(..p.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(p.as_bytes()))
    };
    let ends = |p: &str| {
        essence.len() >= p.len()
            && essence[essence.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes())
    };
    essence.eq_ignore_ascii_case(JSON.as_bytes()) || (starts("application/") && ends("+json"))
}

fn readyz(shared: &Shared) -> Response {
    match shared.not_ready_reason() {
        None => Response::text(200, "ready"),
        Some(why) => Response::text(503, why),
    }
}

/// The admission step for signatures: what `verifyImages` needs, gathered
/// within the apiserver's time for this call.
fn gather_signatures<'a>(
    shared: &'a Shared,
    rules: &'a crate::config::Rules,
    apiserver_timeout: Option<std::time::Duration>,
) -> impl Fn(&Request) -> crate::policy::Facts + 'a {
    let budget = crate::admit::lookup_budget(apiserver_timeout);
    move |req| {
        if rules.policy.verify_images.is_empty() {
            return crate::policy::Facts::new();
        }
        // Waiting on registries holds no worker.
        shared.workers.lend(&shared.metrics, || {
            crate::admit::signatures::gather(
                &rules.policy,
                &rules.verify,
                req,
                &shared.registry(),
                &shared.verdicts,
                budget,
            )
        })
    }
}

fn image_policy(
    shared: &Shared,
    body: &[u8],
    apiserver_timeout: Option<std::time::Duration>,
) -> (Response, Counted) {
    let rules = shared.rules();
    let gather = gather_signatures(shared, &rules, apiserver_timeout);
    match imagepolicy::review(&rules.policy, body, &gather) {
        Err(imagepolicy::NotJson(e)) => {
            warn!("/image_policy: denied a body that is not JSON: {e}");
            (
                image_review_refused(&format!("request body is not JSON: {e}")),
                Counted::Invalid,
            )
        }
        Ok((reply, outcome)) => {
            let counted = match &outcome {
                imagepolicy::Outcome::Decided { request, decision } => {
                    log_decision("/image_policy", "Pod (ImageReview)", request, decision);
                    if decision.allowed {
                        Counted::Allowed
                    } else {
                        Counted::Denied
                    }
                }
                imagepolicy::Outcome::Invalid(e) => {
                    warn!("/image_policy: denied an unreadable ImageReview: {e}");
                    Counted::Invalid
                }
            };
            (Response::json(reply), counted)
        }
    }
}

/// An ImageReview that was not judged, answered as the apiserver needs: HTTP
/// 200 and `allowed: false` (any other status makes it fall back to
/// `defaultAllow`).
fn image_review_refused(reason: &str) -> Response {
    Response::json(imagepolicy::refusal(reason))
}

/// The answer to a request the HTTP layer refused (`status`, `message`)
/// after reading its head: for `/image_policy` a denying ImageReview, for
/// the rest the plain status.
pub fn refused(path: Option<&str>, status: u16, message: &str) -> Response {
    if path == Some("/image_policy") {
        image_review_refused(&format!("request refused ({status}): {message}"))
    } else {
        Response::text(status, message)
    }
}

fn validate(
    shared: &Shared,
    body: &[u8],
    apiserver_timeout: Option<std::time::Duration>,
) -> (Response, Counted) {
    let rules = shared.rules();
    let gather = gather_signatures(shared, &rules, apiserver_timeout);
    let (reply, outcome, summary) = match admission::validate_body(&rules.policy, body, &gather) {
        Ok(x) => x,
        Err(e) => {
            warn!("/validate: {e}");
            return (Response::text(400, e), Counted::Invalid);
        }
    };
    let what = summary.text();
    let counted = match &outcome {
        admission::Outcome::Skipped(why) => {
            log::debug!("/validate: {what}: allowed without judgement: {why}");
            Counted::Allowed
        }
        admission::Outcome::Invalid(e) => {
            warn!("/validate: {what}: denied: {e}");
            Counted::Invalid
        }
        admission::Outcome::Decided { request, decision } => {
            log_decision("/validate", &what, request, decision);
            if decision.allowed {
                Counted::Allowed
            } else {
                Counted::Denied
            }
        }
    };
    (Response::json(reply), counted)
}

fn mutate(
    shared: &Shared,
    body: &[u8],
    apiserver_timeout: Option<std::time::Duration>,
) -> (Response, Counted) {
    let review = match admission::parse(body) {
        Ok(r) => r,
        Err(e) => {
            warn!("/mutate: {e}");
            return (Response::text(400, e), Counted::Invalid);
        }
    };
    let rules = shared.rules();
    // Digests to pin are looked up first (the admission step), each
    // distinct image once; a failed lookup denies unless configured not to.
    let budget = crate::admit::lookup_budget(apiserver_timeout);
    let pin = || {
        crate::admit::digest_pins(
            &rules.policy,
            &rules.mutate,
            &review,
            &*shared.registry(),
            budget,
        )
    };
    // Waiting on registries holds no worker.
    let pins = match if rules.mutate.mutate_digest.is_empty() {
        pin()
    } else {
        shared.workers.lend(&shared.metrics, pin)
    } {
        Ok(p) => p,
        Err(reason) => {
            warn!("/mutate: {}: denied: {reason}", review.request.summary());
            return (
                Response::json(admission::refusal(&review, &reason)),
                Counted::Denied,
            );
        }
    };
    let (reply, outcome) = admission::mutate(&rules.policy, &rules.mutate, &review, Some(&pins));
    let what = review.request.summary().text();
    match &outcome {
        admission::MutateOutcome::Patched(m) => {
            let mut changes: Vec<String> = m
                .rewrites
                .iter()
                .map(|(a, b)| format!("{a} -> {b}"))
                .collect();
            changes.extend(m.notes.iter().cloned());
            info!("/mutate: patched {what}: {}", changes.join("; "));
        }
        admission::MutateOutcome::Unchanged(m) => {
            log::debug!(
                "/mutate: {what}: unchanged{}",
                m.skipped
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            );
        }
        admission::MutateOutcome::Unreadable(e) => warn!("/mutate: {what}: allowed unpatched: {e}"),
        admission::MutateOutcome::Denied { request, decision } => {
            log_decision("/mutate", &what, request, decision);
            return (Response::json(reply), Counted::Denied);
        }
    }
    (Response::json(reply), Counted::Allowed)
}

/// One `info` line per decision; break-glass use also at `warn`.
fn log_decision(endpoint: &str, what: &str, request: &Request, d: &Decision) {
    // Bounded like the reply: a request's size must not become log volume.
    let mut images: Vec<&str> = d
        .images
        .iter()
        .take(MAX_LISTED)
        .map(|v| v.image.as_str())
        .collect();
    let more = d.images.len().saturating_sub(MAX_LISTED);
    let more_text;
    if more > 0 {
        more_text = format!("(and {more} more)");
        images.push(&more_text);
    }
    let ns = request.namespace.as_deref().unwrap_or("");
    let verdict = if d.allowed { "allowed" } else { "denied" };
    let mut detail = d.reason();
    if detail.is_empty() {
        detail = d.warnings().join("; ");
    }
    if let Some(key) = &d.break_glass {
        warn!(
            "{endpoint}: break-glass annotation {key:?} used in namespace {ns:?} for images {images:?}"
        );
    }
    // The same facts as fields, for JSON log lines (`--log-format json`);
    // text lines do not show them.
    let images_list = if crate::logging::shows_fields() {
        images.join(",")
    } else {
        String::new()
    };
    let break_glass = d.break_glass.as_deref().unwrap_or("");
    // The text, as `format!("{endpoint}: {verdict}: {what} namespace={ns:?}
    // images={images:?}[: {detail}]")` writes it, in one buffer.
    let mut line = String::with_capacity(
        64 + endpoint.len()
            + what.len()
            + ns.len()
            + detail.len()
            + images.iter().map(|i| i.len() + 4).sum::<usize>(),
    );
    for piece in [endpoint, ": ", verdict, ": "] {
        line.push_str(piece);
    }
    // The object's kind and name come from the request: a client other
    // than the apiserver could put a newline in them to forge a line.
    push_without_controls(&mut line, what);
    line.push_str(" namespace=");
    push_debug(&mut line, ns);
    line.push_str(" images=[");
    for (n, image) in images.iter().enumerate() {
        if n > 0 {
            line.push_str(", ");
        }
        push_debug(&mut line, image);
    }
    line.push(']');
    if !detail.is_empty() {
        line.push_str(": ");
        push_without_controls(&mut line, &detail);
    }
    // Who signed what was admitted (verifyImages), for the audit trail.
    if d.allowed && !request.signatures.is_empty() {
        let signed: Vec<String> = request
            .signatures
            .iter()
            .flat_map(|(image, facts)| {
                facts.iter().filter_map(move |f| {
                    let s = f.outcome.as_ref().ok()?;
                    Some(if s.digest.is_empty() {
                        format!("{image} {}", s.by)
                    } else {
                        format!("{image} ({}) signed by {}", s.digest, s.by)
                    })
                })
            })
            .take(MAX_LISTED)
            .collect();
        if !signed.is_empty() {
            line.push_str("; ");
            push_without_controls(&mut line, &signed.join("; "));
        }
    }
    info!(endpoint = endpoint, verdict = verdict, object = what, namespace = ns,
          images = images_list.as_str(), reason = detail.as_str(), break_glass = break_glass;
          "{line}");
}

/// `s` with its control characters (newlines, escapes) written as `{:?}`
/// writes them (`\n`, `\u{1b}`), the rest as it is.
fn push_without_controls(out: &mut String, s: &str) {
    if !s.chars().any(char::is_control) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
}

/// `s` as `{s:?}` writes it; a string of printable ASCII without quotes
/// or backslashes (nearly every name) is copied between quotes without
/// going through the escaping formatter.
fn push_debug(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{s:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::{is_json, push_debug, push_without_controls};

    #[test]
    fn request_text_in_a_log_line_cannot_break_it() {
        let mut out = String::new();
        push_without_controls(
            &mut out,
            "CREATE Pod shop/a\n2026-01-01T00:00:00Z INFO  forged\u{1b}[2J\u{85}",
        );
        assert!(!out.chars().any(char::is_control), "{out:?}");
        assert_eq!(
            out,
            "CREATE Pod shop/a\\n2026-01-01T00:00:00Z INFO  forged\\u{1b}[2J\\u{85}"
        );
        let mut plain = String::new();
        push_without_controls(&mut plain, "CREATE Pod shop/é \"x\"");
        assert_eq!(plain, "CREATE Pod shop/é \"x\"");
    }

    #[test]
    fn names_are_quoted_as_debug_quotes_them() {
        for s in [
            "",
            "shop",
            "nginx:1.25",
            "a\"b",
            "back\\slash",
            "tab\there",
            "é",
            "\u{7f}",
            "\u{1b}[31m",
            "'",
        ] {
            let mut out = String::new();
            push_debug(&mut out, s);
            assert_eq!(out, format!("{s:?}"), "{s}");
        }
    }

    #[test]
    fn json_content_types() {
        for ok in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("Application/JSON"),
            Some("application/merge-patch+json"),
        ] {
            assert!(is_json(ok), "{ok:?}");
        }
        for bad in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some(""),
        ] {
            assert!(!is_json(bad), "{bad:?}");
        }
    }
}
