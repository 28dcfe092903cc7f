//! Which path does what, the decision log line, and metrics per request.
//!
//! Review endpoints run under a worker permit (the fixed-size pool that
//! bounds how many requests are decoded and judged at once); health and
//! metrics do not, so they answer even when every worker is busy.

use std::time::Instant;

use crate::admit::{Admission, Answer, Reply};
use crate::metrics::{Endpoint, Outcome as Counted};
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
                    shared.metrics.render() + &shared.admission().metrics(),
                ),
                Counted::Served,
            ),
            Endpoint::ImagePolicy if !is_json(req.content_type.as_deref()) => {
                answered(Admission::image_review_refused(&format!(
                    "Content-Type {:?} is not JSON; send application/json",
                    req.content_type.as_deref().unwrap_or("")
                )))
            }
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
                let admission = shared.admission();
                let wait = shared.lender();
                let (body, timeout) = (req.body(), req.timeout);
                answered(match endpoint {
                    Endpoint::ImagePolicy => admission.image_review(body, timeout, &wait),
                    Endpoint::Mutate => admission.mutate(body, timeout, &wait),
                    _ => admission.validate(body, timeout, &wait),
                })
            }
        }
    };
    shared.metrics.request(endpoint, outcome, started.elapsed());
    response
}

/// The admission step's answer as an HTTP response.
fn answered(a: Answer) -> (Response, Counted) {
    let response = match a.reply {
        Reply::Json(bytes) => Response::json(bytes),
        Reply::Text(status, text) => Response::text(status, text),
    };
    (response, a.outcome)
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

/// The answer to a request the HTTP layer refused (`status`, `message`)
/// after reading its head: for `/image_policy` a denying ImageReview, for
/// the rest the plain status.
pub fn refused(path: Option<&str>, status: u16, message: &str) -> Response {
    if path == Some("/image_policy") {
        answered(Admission::image_review_refused(&format!(
            "request refused ({status}): {message}"
        )))
        .0
    } else {
        Response::text(status, message)
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

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
