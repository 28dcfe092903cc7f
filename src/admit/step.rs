//! [`Admission`]: the one admission step every endpoint and `check` go
//! through — read the request (`review`), gather the facts that need I/O
//! (digests, signatures) within the request's time, let the policy decide,
//! write the reply (`review`) and say what happened (log line, metrics
//! outcome). One value holds the rules, the registry client made for them
//! and the verdict cache, so a reload swaps them together.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use log::{trace, warn};

use crate::config::Rules;
use crate::metrics::Outcome as Counted;
use crate::policy::{Facts, Request, SignatureFact};
use crate::registry::client::Client;
use crate::review::{admission, imagepolicy};

use super::signatures::Verdicts;

/// How long `check` gives the lookups of one document (the server's
/// reviews get the apiserver's time, [`super::lookup_budget`]).
pub const CHECK_LOOKUP_BUDGET: Duration = Duration::from_secs(20);
/// How long `check --resolve` gives each image's digest lookup.
pub const CHECK_RESOLVE_BUDGET: Duration = Duration::from_secs(10);

/// How a caller lets go of what it holds (the server: a worker permit)
/// while a review waits on registries.
pub trait Wait {
    fn lend(&self, f: &mut dyn FnMut());
}

/// Nothing to let go of (`check`, tests).
pub struct Hold;

impl Wait for Hold {
    fn lend(&self, f: &mut dyn FnMut()) {
        f();
    }
}

/// The reply to write, and how it counts.
pub struct Answer {
    pub reply: Reply,
    pub outcome: Counted,
}

pub enum Reply {
    /// HTTP 200, a JSON review.
    Json(Vec<u8>),
    /// A plain-text error with its status (AdmissionReview only: an
    /// ImageReview is always answered with 200).
    Text(u16, String),
}

/// Why a signature is unverified when no registry may be asked.
pub const OFFLINE: &str =
    "its signatures were not looked up (offline: image-bouncer test --resolve verifies them)";

/// The admission step with what it decides by: the rules, the registry
/// client for them, and the verdict cache (kept across reloads).
pub struct Admission {
    rules: Rules,
    registry: Client,
    verdicts: Arc<Verdicts>,
    /// No registry is asked (`image-bouncer test` without `--resolve`):
    /// signatures are unverified and digests are not pinned.
    offline: bool,
}

impl Admission {
    /// The step for `rules`, with a registry client for their settings and
    /// the process's proxy environment, and an empty verdict cache.
    pub fn new(rules: Rules) -> Admission {
        Admission {
            registry: super::registry_client(&rules.registry, &|k| std::env::var(k).ok()),
            rules,
            verdicts: Arc::default(),
            offline: false,
        }
    }

    /// The step for `rules` that asks no registry: every signature an
    /// entry requires is unverified (so refused), and no digest is pinned.
    pub fn offline(rules: Rules) -> Admission {
        Admission {
            offline: true,
            ..Admission::new(rules)
        }
    }

    /// The step for new rules, keeping the verdict cache (a changed key or
    /// root changes its fingerprint, so nothing stale is reused).
    pub fn reloaded(&self, rules: Rules) -> Admission {
        Admission {
            verdicts: self.verdicts.clone(),
            ..Admission::new(rules)
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The step's own metrics: registry lookups and what the step counted.
    pub fn metrics(&self) -> String {
        self.registry.stats().render() + &super::COUNTS.render()
    }

    /// The signatures `verifyImages` needs for `request`, within `budget`.
    fn signatures(&self, request: &Request, budget: Duration, wait: &dyn Wait) -> Facts {
        if !self.rules.policy.verifies() {
            return Facts::new();
        }
        if self.offline {
            let mut facts = Facts::new();
            for input in &request.images {
                for rule in self
                    .rules
                    .policy
                    .verification_for(request.namespace.as_deref(), &input.image)
                {
                    facts
                        .entry(input.image.clone())
                        .or_default()
                        .push(SignatureFact {
                            rule,
                            outcome: Err(OFFLINE.to_string()),
                            unmet: None,
                        });
                }
            }
            return facts;
        }
        let mut facts = Facts::new();
        // Waiting on registries holds nothing of the caller's.
        wait.lend(&mut || {
            facts = super::signatures::gather(
                &self.rules.policy,
                &self.rules.verify,
                request,
                &self.registry,
                &self.verdicts,
                budget,
            );
        });
        facts
    }

    /// `POST /image_policy`: an ImageReview, always answered with a JSON
    /// ImageReview (any other answer lets the apiserver fall back to
    /// `defaultAllow`).
    pub fn image_review(&self, body: &[u8], timeout: Option<Duration>, wait: &dyn Wait) -> Answer {
        trace_body("/image_policy", body);
        let read = match imagepolicy::read(body) {
            Ok(read) => read,
            Err(imagepolicy::NotJson(e)) => {
                warn!("/image_policy: denied a body that is not JSON: {e}");
                return Answer {
                    reply: Reply::Json(imagepolicy::refusal(&format!(
                        "request body is not JSON: {e}"
                    ))),
                    outcome: Counted::Invalid,
                };
            }
        };
        let read = read.map(|mut request| {
            request.signatures = self.signatures(&request, super::lookup_budget(timeout), wait);
            request
        });
        let outcome = imagepolicy::decide(read, &self.rules.policy);
        let counted = match &outcome {
            imagepolicy::Outcome::Decided { request, decision } => {
                super::record::decision(
                    "/image_policy",
                    "Pod (ImageReview)",
                    request,
                    decision,
                    &self.rules.policy,
                );
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
        Answer {
            reply: Reply::Json(imagepolicy::reply(&outcome)),
            outcome: counted,
        }
    }

    /// An ImageReview refused before it was read (its content type, the
    /// HTTP layer's limits): denied with HTTP 200, with why.
    pub fn image_review_refused(reason: &str) -> Answer {
        Answer {
            reply: Reply::Json(imagepolicy::refusal(reason)),
            outcome: Counted::Invalid,
        }
    }

    /// `POST /validate`: an AdmissionReview of any workload.
    pub fn validate(&self, body: &[u8], timeout: Option<Duration>, wait: &dyn Wait) -> Answer {
        trace_body("/validate", body);
        let read = match admission::read_validate(body) {
            Ok(read) => read,
            Err(e) => return unreadable("/validate", &e),
        };
        let step = match read.step {
            admission::Step::Judge(mut request) => {
                request.signatures = self.signatures(&request, super::lookup_budget(timeout), wait);
                admission::Step::Judge(request)
            }
            other => other,
        };
        let outcome = step.decide(&self.rules.policy);
        let what = read.head.summary.text();
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
                super::record::decision("/validate", &what, request, decision, &self.rules.policy);
                if decision.allowed {
                    Counted::Allowed
                } else {
                    Counted::Denied
                }
            }
        };
        Answer {
            reply: Reply::Json(admission::validate_reply(&read.head, &outcome)),
            outcome: counted,
        }
    }

    /// `POST /mutate`: an AdmissionReview, patched as the mutations say;
    /// digests to pin are looked up first.
    pub fn mutate(&self, body: &[u8], timeout: Option<Duration>, wait: &dyn Wait) -> Answer {
        trace_body("/mutate", body);
        let review = match admission::parse(body) {
            Ok(r) => r,
            Err(e) => return unreadable("/mutate", &e),
        };
        let pins = match self.pins(&review, super::lookup_budget(timeout), wait) {
            Ok(p) => p,
            Err(reason) => {
                warn!("/mutate: {}: denied: {reason}", review.request.summary());
                return Answer {
                    reply: Reply::Json(admission::refusal(&review, &reason)),
                    outcome: Counted::Denied,
                };
            }
        };
        let (reply, outcome) =
            admission::mutate(&self.rules.policy, &self.rules.mutate, &review, Some(&pins));
        let what = review.request.summary().text();
        let counted = super::record::mutation(&what, &outcome, &self.rules.policy);
        Answer {
            reply: Reply::Json(reply),
            outcome: counted,
        }
    }

    /// The digests `mutateDigest` pins in `review`, looked up within
    /// `budget`; `Err` is the reason to deny.
    pub fn pins(
        &self,
        review: &admission::Review,
        budget: Duration,
        wait: &dyn Wait,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut pins = Ok(BTreeMap::new());
        if self.rules.mutate.mutate_digest.is_empty() || self.offline {
            return pins;
        }
        wait.lend(&mut || {
            pins = super::digest_pins(
                &self.rules.policy,
                &self.rules.mutate,
                review,
                &self.registry,
                budget,
            );
        });
        pins
    }

    /// `check`: the facts of each request gathered as a review's would be
    /// (within [`CHECK_LOOKUP_BUDGET`] each); the caller decides and
    /// reports.
    pub fn gather_for_check<L>(&self, requests: &mut [(L, Request)]) {
        for (_, request) in requests {
            request.signatures = self.signatures(request, CHECK_LOOKUP_BUDGET, &Hold);
        }
    }

    /// `check --resolve`: the digest `image` names now.
    pub fn resolve(&self, image: &str) -> Result<String, String> {
        let r = crate::image_ref::ImageRef::parse(image).map_err(|e| e.to_string())?;
        self.registry
            .resolve(&r, CHECK_RESOLVE_BUDGET)
            .map(|d| d.to_string())
            .map_err(|e| e.to_string())
    }
}

/// An AdmissionReview that cannot be read: 400, with why.
fn unreadable(endpoint: &str, e: &admission::BadReview) -> Answer {
    warn!("{endpoint}: {e}");
    Answer {
        reply: Reply::Text(400, e.to_string()),
        outcome: Counted::Invalid,
    }
}

fn trace_body(path: &str, body: &[u8]) {
    if log::log_enabled!(log::Level::Trace) {
        trace!("{path} request body: {}", String::from_utf8_lossy(body));
    }
}
