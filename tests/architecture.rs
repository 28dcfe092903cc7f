//! The house's shape, checked: no import circle between the crate's
//! top-level modules, `policy` pure (it imports only `image_ref`),
//! `config` free of the runtime parts, and the admission path one-way:
//! `server` reaches decisions only through `admit`, and `review` only
//! translates wire formats.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the crate modules its non-test code names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let top = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            if top == "main" || top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let deps = out.entry(top.clone()).or_default();
            for part in code.split("crate::").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    deps.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn no_import_circles_and_pure_parts_stay_pure() {
    let graph = imports();
    // Depth-first search for a path back to the start.
    fn reaches(
        g: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        to: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        g.get(from)
            .into_iter()
            .flatten()
            .any(|d| d == to || (seen.insert(d.clone()) && reaches(g, d, to, seen)))
    }
    for m in graph.keys() {
        assert!(
            !reaches(&graph, m, m, &mut BTreeSet::new()),
            "{m} is in an import circle: {graph:#?}"
        );
    }
    assert_eq!(
        graph["policy"].iter().collect::<Vec<_>>(),
        ["image_ref"],
        "policy must stay pure"
    );
    // Values only: no runtime parts, no registry client, no certificate
    // making (the server makes `--self-signed`'s at start).
    for runtime in ["server", "setup", "check", "registry", "certs", "admit"] {
        assert!(
            !graph["config"].contains(runtime),
            "config imports {runtime}"
        );
    }
    // The server owns sockets, TLS, HTTP and reloads, and hands a body to
    // one method of `admit::Admission`: it decides nothing itself.
    for m in ["policy", "registry", "verify", "review", "mutate"] {
        assert!(!graph["server"].contains(m), "server imports {m}");
    }
    // Wire formats in, replies out: no lookups, no verification, and no
    // way back into the step that calls it.
    for m in ["admit", "registry", "verify", "server"] {
        assert!(!graph["review"].contains(m), "review imports {m}");
    }
    assert!(
        graph["cli"].is_empty(),
        "cli holds raw flags only: {:?}",
        graph["cli"]
    );
    // The verifier gets bytes and returns facts: no registry, policy,
    // configuration, server or admission step (only the bottom value
    // modules: DER, time, digests and hex).
    for m in &graph["verify"] {
        assert!(
            ["der", "time", "digest"].contains(&m.as_str()),
            "verify imports {m}: {:?}",
            graph["verify"]
        );
    }
    // Admission never fetches a trusted root: neither the server nor the
    // admission step reaches the TUF client or its command.
    for m in ["server", "admit"] {
        for t in ["tuf", "trust"] {
            assert!(!graph[m].contains(t), "{m} imports {t}");
        }
    }
    // The TUF client is pure too: metadata bytes in, a verdict out; the
    // command that fetches (`trust`) lends it a fetch function.
    for m in &graph["tuf"] {
        assert!(
            ["digest", "time"].contains(&m.as_str()),
            "tuf imports {m}: {:?}",
            graph["tuf"]
        );
    }
    // The registry client knows no policy, verifier or server either.
    for m in ["policy", "verify", "server", "config", "admit"] {
        assert!(!graph["registry"].contains(m), "registry imports {m}");
    }
}
