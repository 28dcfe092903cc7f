//! The admission step's log lines: one per decision (what, where, which
//! images, why, who signed), written so that nothing a request carries can
//! break a line or forge another.

use log::{info, warn};

use crate::metrics::Outcome as Counted;
use crate::policy::{Decision, MAX_LISTED, PolicySet, Request};
use crate::review::admission::MutateOutcome;

/// The `/mutate` log line, and how the answer counts.
pub fn mutation(what: &str, outcome: &MutateOutcome, policy: &PolicySet) -> Counted {
    match outcome {
        MutateOutcome::Patched(m) => {
            let mut changes: Vec<String> = m
                .rewrites
                .iter()
                .map(|(a, b)| format!("{a} -> {b}"))
                .collect();
            changes.extend(m.notes.iter().cloned());
            info!("/mutate: patched {what}: {}", changes.join("; "));
        }
        MutateOutcome::Unchanged(m) => {
            log::debug!(
                "/mutate: {what}: unchanged{}",
                m.skipped
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            );
        }
        MutateOutcome::Unreadable(e) => warn!("/mutate: {what}: allowed unpatched: {e}"),
        MutateOutcome::Denied { request, decision } => {
            self::decision("/mutate", what, request, decision, policy);
            return Counted::Denied;
        }
    }
    Counted::Allowed
}

/// One `info` line per decision; break-glass use also at `warn`.
pub fn decision(endpoint: &str, what: &str, request: &Request, d: &Decision, policy: &PolicySet) {
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
    super::COUNTS.decided(policy, request, d);
    let ns = request.namespace.as_deref().unwrap_or("");
    let verdict = if d.allowed { "allowed" } else { "denied" };
    // Why it was denied, then what only warned (a policy in warn mode).
    let mut detail = d.reason();
    let warnings = d.warnings();
    if !warnings.is_empty() {
        if !detail.is_empty() {
            detail.push_str("; also: ");
        }
        detail.push_str(&warnings.join("; "));
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
    // Who signed what was admitted (verifyImages), where the signature
    // was, and which policy's entry asked: for the audit trail.
    if d.allowed && !request.signatures.is_empty() {
        let signed: Vec<String> = request
            .signatures
            .iter()
            .flat_map(|(image, facts)| {
                facts.iter().filter_map(move |f| {
                    let s = f.outcome.as_ref().ok()?;
                    let rule = policy
                        .requirement(f.rule)
                        .map(|(name, v)| format!("policy {name:?} {}", v.label))
                        .unwrap_or_default();
                    Some(if s.digest.is_empty() {
                        format!("{image} {} ({rule})", s.by)
                    } else {
                        format!(
                            "{image} ({}) signed by {} in a {} ({rule})",
                            s.digest, s.by, s.found_in
                        )
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
    use super::{push_debug, push_without_controls};

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
}
