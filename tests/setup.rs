//! The set-up commands, end to end: certificates that a real TLS server
//! and client accept, generated YAML parsed back with a YAML parser, and
//! `serve --self-signed`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;

use crate::common::{
    BIN, Client, Server, client_config, fixtures, loopback, run, spawn_listening, stderr, stdout,
    temp_dir,
};

/// Parsed with yaml-rust2's own loader, not the project's YAML code.
fn yaml_docs(text: &str) -> Vec<Value> {
    use yaml_rust2::Yaml;
    fn value(y: &Yaml) -> Value {
        match y {
            Yaml::Real(r) => serde_json::json!(r.parse::<f64>().unwrap()),
            Yaml::Integer(i) => serde_json::json!(i),
            Yaml::String(s) => Value::String(s.clone()),
            Yaml::Boolean(b) => Value::Bool(*b),
            Yaml::Array(a) => Value::Array(a.iter().map(value).collect()),
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().map_or_else(|| format!("{k:?}"), str::to_string),
                            value(v),
                        )
                    })
                    .collect(),
            ),
            Yaml::Null => Value::Null,
            other => panic!("unexpected YAML node {other:?}"),
        }
    }
    yaml_rust2::YamlLoader::load_from_str(text)
        .unwrap_or_else(|e| panic!("{e}:\n{text}"))
        .iter()
        .map(value)
        .collect()
}

#[test]
fn certs_make_a_chain_the_server_and_apiserver_client_accept() {
    let dir = temp_dir("certs-cmd");
    let pki = dir.join("pki");
    let out = run(
        &[
            "certs",
            "--out",
            pki.to_str().unwrap(),
            "--host",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--days",
            "30",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("(30 days)"), "{}", stdout(&out));
    for (f, mode) in [
        ("ca.crt", 0o644),
        ("ca.key", 0o600),
        ("tls.crt", 0o644),
        ("tls.key", 0o600),
        ("apiserver-client.crt", 0o644),
        ("apiserver-client.key", 0o600),
    ] {
        let m = std::fs::metadata(pki.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, mode, "{f}");
    }
    // No overwrite without --force.
    let again = run(
        &[
            "certs",
            "--out",
            pki.to_str().unwrap(),
            "--host",
            "localhost",
        ],
        None,
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    // The files work together: mTLS with the apiserver's client certificate.
    let p = |f: &str| pki.join(f).to_str().unwrap().to_string();
    let server = Server::start(&[
        "--cert",
        &p("tls.crt"),
        "--key",
        &p("tls.key"),
        "--client-ca",
        &p("ca.crt"),
        "--client-name",
        "kube-apiserver",
    ]);
    let config = client_config(
        &pki.join("ca.crt"),
        Some((
            &pki.join("apiserver-client.crt"),
            &pki.join("apiserver-client.key"),
        )),
    );
    let body =
        std::fs::read(fixtures().join("imagereview/pod-create-allowed.request.json")).unwrap();
    let r = Client::tls(server.addr, config)
        .unwrap()
        .post("/image_policy", &body)
        .unwrap();
    assert_eq!(r.json()["status"]["allowed"], true);
    // Bad names are refused with a clear message.
    let bad = run(
        &[
            "certs",
            "--out",
            dir.join("x").to_str().unwrap(),
            "--host",
            "not a host",
            "--ip",
            "1.2.3",
        ],
        None,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("\"not a host\"") && stderr(&bad).contains("\"1.2.3\" is not an IP"),
        "{}",
        stderr(&bad)
    );
}

/// Issue 34, 1 and 2: `--group` lets the service's group read the folder
/// and the serving key (nothing else secret), renewals keep it; a folder
/// whose CA key was moved away (step 7) is never given a new CA by
/// `--force`: it refuses and says what to do, and leaves everything as it
/// was.
#[test]
fn certs_share_with_the_service_group_and_never_replace_a_ca_implicitly() {
    use std::os::unix::fs::MetadataExt;
    let dir = temp_dir("certs-group");
    let pki = dir.join("pki");
    let certs = |extra: &[&str]| {
        let mut args = vec![
            "certs",
            "--out",
            pki.to_str().unwrap(),
            "--host",
            "localhost",
        ];
        args.extend_from_slice(extra);
        run(&args, None)
    };
    // This process's own group, by number (a group the caller may give
    // files to whether or not it runs as root).
    let gid: u32 = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Gid:"))
        .and_then(|ids| ids.split_whitespace().next()?.parse().ok())
        .unwrap();
    let out = certs(&["--group", &gid.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let meta = |f: &str| std::fs::metadata(pki.join(f)).unwrap();
    let mode = |f: &str| meta(f).mode() & 0o7777;
    assert_eq!(std::fs::metadata(&pki).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(std::fs::metadata(&pki).unwrap().gid(), gid);
    assert_eq!((mode("tls.key"), meta("tls.key").gid()), (0o640, gid));
    for secret in ["ca.key", "apiserver-client.key"] {
        assert_eq!(mode(secret), 0o600, "{secret}");
    }
    for public in ["ca.crt", "tls.crt", "ca-bundle.crt"] {
        assert_eq!(mode(public), 0o644, "{public}");
    }
    // Step 7: the CA key leaves the node. A renewal with --force refuses.
    let ca_key = std::fs::read(pki.join("ca.key")).unwrap();
    std::fs::remove_file(pki.join("ca.key")).unwrap();
    let before: Vec<Vec<u8>> = ["ca.crt", "tls.crt", "tls.key"]
        .iter()
        .map(|f| std::fs::read(pki.join(f)).unwrap())
        .collect();
    let refused = certs(&["--force"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
    let e = stderr(&refused);
    assert!(
        e.contains("ca.key is not") && e.contains("Bring ca.key back") && e.contains("--new-ca"),
        "{e}"
    );
    let after: Vec<Vec<u8>> = ["ca.crt", "tls.crt", "tls.key"]
        .iter()
        .map(|f| std::fs::read(pki.join(f)).unwrap())
        .collect();
    assert_eq!(before, after, "nothing was written");
    assert!(!pki.join("ca.key").exists());
    // With the key back: leaves only, from the same CA, the group kept
    // without --group.
    std::fs::write(pki.join("ca.key"), &ca_key).unwrap();
    let renewed = certs(&["--force"]);
    assert_eq!(renewed.status.code(), Some(0), "{}", stderr(&renewed));
    assert!(stdout(&renewed).contains("issued from the existing CA"));
    assert_eq!(std::fs::read(pki.join("ca.crt")).unwrap(), before[0]);
    assert_ne!(std::fs::read(pki.join("tls.crt")).unwrap(), before[1]);
    assert_eq!((mode("tls.key"), meta("tls.key").gid()), (0o640, gid));
    // A new CA only when asked for.
    let new_ca = certs(&["--force", "--new-ca"]);
    assert_eq!(new_ca.status.code(), Some(0), "{}", stderr(&new_ca));
    assert_ne!(std::fs::read(pki.join("ca.crt")).unwrap(), before[0]);
    // An unknown group is a clear error.
    let bad = certs(&["--force", "--group", "no-such-group-here"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("no group \"no-such-group-here\""),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn config_apiserver_writes_valid_yaml_and_explains_the_rest() {
    let dir = temp_dir("config-apiserver");
    let pki = dir.join("pki");
    assert!(
        run(
            &[
                "certs",
                "--out",
                pki.to_str().unwrap(),
                "--host",
                "image-bouncer.local"
            ],
            None
        )
        .status
        .success()
    );
    let cfg = dir.join("cfg");
    let out = run(
        &[
            "config",
            "apiserver",
            "--url",
            "https://image-bouncer.local:8443/image_policy",
            "--pki",
            pki.to_str().unwrap(),
            "--out",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        &format!(
            "--admission-control-config-file={}/admission-config.yaml",
            cfg.display()
        ),
        "127.0.0.1 image-bouncer.local",
        &format!("--patches {}/kubeadm-patches", cfg.display()),
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // The kubeadm patch, applied to the manifest kubeadm writes, gives
    // exactly the flags, volumes and mounts wanted, and nothing else.
    let manifest_text =
        std::fs::read_to_string(fixtures().join("kubeadm/kube-apiserver.yaml")).unwrap();
    let manifest = yaml_docs(&manifest_text).remove(0);
    let patch: json_patch::Patch = serde_json::from_str(
        &std::fs::read_to_string(cfg.join("kubeadm-patches/kube-apiserver+json.json")).unwrap(),
    )
    .unwrap();
    let mut patched = manifest.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    // Still YAML a parser accepts (JSON is YAML), and a Pod.
    let patched = yaml_docs(&serde_json::to_string_pretty(&patched).unwrap()).remove(0);
    let list = |v: &Value, p: &str| v.pointer(p).unwrap().as_array().unwrap().clone();
    let added = |p: &str| {
        let before = list(&manifest, p);
        list(&patched, p)
            .into_iter()
            .filter(|x| !before.contains(x))
            .collect::<Vec<_>>()
    };
    let adm_path = cfg.join("admission-config.yaml");
    assert_eq!(
        added("/spec/containers/0/command"),
        [
            Value::from("--enable-admission-plugins=ImagePolicyWebhook"),
            Value::from(format!(
                "--admission-control-config-file={}",
                adm_path.display()
            )),
        ]
    );
    assert!(
        list(&patched, "/spec/containers/0/command")
            .contains(&Value::from("--enable-admission-plugins=NodeRestriction"))
    );
    assert_eq!(
        added("/spec/volumes"),
        [
            serde_json::json!({"name": "image-bouncer-config", "hostPath": {"path": cfg.to_str().unwrap(), "type": "Directory"}}),
        ]
    );
    assert_eq!(
        added("/spec/containers/0/volumeMounts"),
        [
            serde_json::json!({"name": "image-bouncer-config", "mountPath": cfg.to_str().unwrap(), "readOnly": true}),
        ]
    );
    // The ClusterConfiguration, kubeadm's current API, for upgrades.
    let cc = &yaml_docs(
        &std::fs::read_to_string(cfg.join("kubeadm-cluster-configuration.yaml")).unwrap(),
    )[0];
    assert_eq!(cc["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(cc["kind"], "ClusterConfiguration");
    assert_eq!(
        cc["apiServer"]["extraArgs"][0],
        serde_json::json!({"name": "enable-admission-plugins", "value": "NodeRestriction,ImagePolicyWebhook"})
    );
    let volumes = cc["apiServer"]["extraVolumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0]["pathType"], "Directory");
    assert_eq!(volumes[0]["hostPath"], cfg.to_str().unwrap());
    let adm = &yaml_docs(&std::fs::read_to_string(cfg.join("admission-config.yaml")).unwrap())[0];
    assert_eq!(adm["apiVersion"], "apiserver.config.k8s.io/v1");
    assert_eq!(adm["kind"], "AdmissionConfiguration");
    let plugin = &adm["plugins"][0];
    assert_eq!(plugin["name"], "ImagePolicyWebhook");
    let ip = &plugin["configuration"]["imagePolicy"];
    assert_eq!(
        ip["kubeConfigFile"],
        cfg.join("kubeconfig.yaml").to_str().unwrap()
    );
    assert_eq!(ip["defaultAllow"], false);
    assert_eq!(
        (
            ip["allowTTL"].as_u64(),
            ip["denyTTL"].as_u64(),
            ip["retryBackoff"].as_u64()
        ),
        (Some(50), Some(50), Some(500))
    );
    let kc = &yaml_docs(&std::fs::read_to_string(cfg.join("kubeconfig.yaml")).unwrap())[0];
    assert_eq!(kc["kind"], "Config");
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://image-bouncer.local:8443/image_policy"
    );
    // Embedded, never named by path: client-go rereads named client
    // certificate files at each connection and closes every connection
    // to the webhook when they change, refusing the pod under review.
    let embedded = |v: &Value, file: &str| {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, std::fs::read(pki.join(file)).unwrap(), "{file}");
    };
    let cluster = &kc["clusters"][0]["cluster"];
    embedded(&cluster["certificate-authority-data"], "ca-bundle.crt");
    let user = &kc["users"][0]["user"];
    embedded(&user["client-certificate-data"], "apiserver-client.crt");
    embedded(&user["client-key-data"], "apiserver-client.key");
    for named in ["certificate-authority", "client-certificate", "client-key"] {
        assert!(
            cluster.get(named).is_none() && user.get(named).is_none(),
            "{named} names a file"
        );
    }
    assert_eq!(kc["current-context"], kc["contexts"][0]["name"]);
    let mode = std::fs::metadata(cfg.join("kubeconfig.yaml"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // What is there is not replaced without --force (as `certs`).
    let written = std::fs::read(cfg.join("admission-config.yaml")).unwrap();
    let again = run(
        &[
            "config",
            "apiserver",
            "--url",
            "https://image-bouncer.local/image_policy",
            "--pki",
            pki.to_str().unwrap(),
            "--out",
            cfg.to_str().unwrap(),
            "--default-allow",
        ],
        None,
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("use --force"), "{}", stderr(&again));
    assert_eq!(
        std::fs::read(cfg.join("admission-config.yaml")).unwrap(),
        written
    );
    // --default-allow and the TTLs are written as asked.
    let out = run(
        &[
            "config",
            "apiserver",
            "--url",
            "https://image-bouncer.local/image_policy",
            "--pki",
            pki.to_str().unwrap(),
            "--out",
            cfg.to_str().unwrap(),
            "--default-allow",
            "--allow-ttl",
            "5",
            "--deny-ttl",
            "30",
            "--force",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let adm = &yaml_docs(&std::fs::read_to_string(cfg.join("admission-config.yaml")).unwrap())[0];
    let image_policy = &adm["plugins"][0]["configuration"]["imagePolicy"];
    assert_eq!(image_policy["defaultAllow"], true);
    assert_eq!(image_policy["allowTTL"], 5);
    assert_eq!(image_policy["denyTTL"], 30);
    // A host name the serving certificate does not carry is caught now,
    // not as an obscure TLS error in the apiserver's log later.
    let out = run(
        &[
            "config",
            "apiserver",
            "--url",
            "https://other.local:8443/image_policy",
            "--pki",
            pki.to_str().unwrap(),
            "--out",
            cfg.to_str().unwrap(),
            "--force",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no DNS name \"other.local\""),
        "{}",
        stderr(&out)
    );
    let out = run(
        &[
            "config",
            "apiserver",
            "--url",
            "http://image-bouncer.local/image_policy",
            "--pki",
            pki.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("https://"));
}

#[test]
fn config_webhook_prints_complete_configurations() {
    let dir = temp_dir("config-webhook");
    assert!(
        run(
            &[
                "certs",
                "--out",
                dir.to_str().unwrap(),
                "--host",
                "image-bouncer.ib.svc"
            ],
            None
        )
        .status
        .success()
    );
    let ca = dir.join("ca.crt");
    let out = run(
        &[
            "config",
            "webhook",
            "--namespace",
            "ib",
            "--service",
            "image-bouncer",
            "--ca",
            ca.to_str().unwrap(),
            "--mutate",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let docs = yaml_docs(&stdout(&out));
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["kind"], "ValidatingWebhookConfiguration");
    assert_eq!(docs[1]["kind"], "MutatingWebhookConfiguration");
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    for (doc, path) in docs.iter().zip(["/validate", "/mutate"]) {
        assert_eq!(doc["apiVersion"], "admissionregistration.k8s.io/v1");
        let w = &doc["webhooks"][0];
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(
            w["admissionReviewVersions"],
            serde_json::json!(["v1", "v1beta1"])
        );
        assert!(w["timeoutSeconds"].as_u64().unwrap() <= 10);
        assert_eq!(
            w["clientConfig"]["service"],
            serde_json::json!({"namespace": "ib", "name": "image-bouncer", "path": path, "port": 443})
        );
        let bundle = crate::golden::base64_decode(w["clientConfig"]["caBundle"].as_str().unwrap());
        assert_eq!(String::from_utf8(bundle).unwrap(), ca_pem);
        let excluded = &w["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
        assert_eq!(excluded["operator"], "NotIn");
        assert_eq!(excluded["values"], serde_json::json!(["kube-system", "ib"]));
    }
    let resources: Vec<String> = docs[0]["webhooks"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
        })
        .collect();
    for r in [
        "pods",
        "pods/ephemeralcontainers",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "jobs",
        "cronjobs",
        "replicationcontrollers",
        "podtemplates",
    ] {
        assert!(
            resources.contains(&r.to_string()),
            "validating rules lack {r}"
        );
    }
    // Sidecars injected by webhooks after this one must be rewritten too.
    assert_eq!(docs[1]["webhooks"][0]["reinvocationPolicy"], "IfNeeded");
    assert!(docs[0]["webhooks"][0].get("reinvocationPolicy").is_none());
    let mutate_rules = docs[1]["webhooks"][0]["rules"].to_string();
    // A serving certificate without the Service's name, and a leaf given as
    // the CA, are refused before the apiserver would fail on them.
    let webhook = |ca: &str, service: &str| {
        run(
            &[
                "config",
                "webhook",
                "--namespace",
                "ib",
                "--service",
                service,
                "--ca",
                ca,
            ],
            None,
        )
    };
    let wrong = webhook(ca.to_str().unwrap(), "other");
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        stderr(&wrong).contains("has no DNS name \"other.ib.svc\""),
        "{}",
        stderr(&wrong)
    );
    let leaf = webhook(dir.join("tls.crt").to_str().unwrap(), "image-bouncer");
    assert_eq!(leaf.status.code(), Some(2));
    assert!(stderr(&leaf).contains("not a CA"), "{}", stderr(&leaf));
    let bundle = webhook(dir.join("ca-bundle.crt").to_str().unwrap(), "image-bouncer");
    assert_eq!(bundle.status.code(), Some(0), "{}", stderr(&bundle));
    assert!(
        mutate_rules.contains("persistentvolumeclaims") && !mutate_rules.contains("deployments")
    );
    // Without --mutate: the validating configuration only.
    let out = run(
        &[
            "config",
            "webhook",
            "--namespace",
            "ib",
            "--ca",
            ca.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(yaml_docs(&stdout(&out)).len(), 1, "{}", stderr(&out));
    let out = run(
        &[
            "config",
            "webhook",
            "--ca",
            dir.join("tls.key").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no PEM certificate"),
        "{}",
        stderr(&out)
    );
}

/// `certs` writes keys only where it means to: never through a symlink,
/// never into a folder others can write to.
#[test]
fn certs_never_write_through_symlinks_or_into_open_folders() {
    let dir = temp_dir("certs-safe");
    let pki = dir.join("pki");
    std::fs::create_dir(&pki).unwrap();
    std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o700)).unwrap();
    let elsewhere = dir.join("stolen-ca.key");
    std::os::unix::fs::symlink(&elsewhere, pki.join("ca.key")).unwrap();
    // --force alone refuses a folder with half a CA (here a dangling
    // ca.key); --force --new-ca replaces it.
    let certs = |force: bool| {
        let mut args = vec![
            "certs",
            "--out",
            pki.to_str().unwrap(),
            "--host",
            "localhost",
        ];
        if force {
            args.extend(["--force", "--new-ca"]);
        }
        run(&args, None)
    };
    // A dangling symlink counts as a file there.
    let out = certs(false);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("ca.key"), "{}", stderr(&out));
    assert!(!elsewhere.exists());
    let half = run(
        &[
            "certs",
            "--out",
            pki.to_str().unwrap(),
            "--host",
            "localhost",
            "--force",
        ],
        None,
    );
    assert_eq!(half.status.code(), Some(2), "{}", stderr(&half));
    assert!(stderr(&half).contains("ca.crt is not"), "{}", stderr(&half));
    assert!(!elsewhere.exists());
    // --force --new-ca replaces the symlink itself.
    let out = certs(true);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!elsewhere.exists(), "the CA key went through the symlink");
    let m = std::fs::symlink_metadata(pki.join("ca.key")).unwrap();
    assert!(m.file_type().is_file());
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    // A folder others can write to is refused.
    std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = certs(true);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("writable by others"),
        "{}",
        stderr(&out)
    );
    // A new folder is created private.
    let fresh = dir.join("fresh");
    let out = run(
        &[
            "certs",
            "--out",
            fresh.to_str().unwrap(),
            "--host",
            "localhost",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o700
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn self_signed_dirs() -> Vec<std::path::PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("image-bouncer-self-signed-"))
        })
        .collect()
}

#[test]
fn serve_self_signed_needs_no_set_up() {
    let dir = temp_dir("self-signed");
    let ca = dir.join("ca.crt");
    let before = self_signed_dirs();
    let before_dirs = before.clone();
    let (mut child, addr) = spawn_listening(Command::new(BIN).args([
        "serve",
        "--self-signed",
        "--self-signed-ca",
        ca.to_str().unwrap(),
        "--port",
        "0",
    ]));
    assert!(
        addr.ip().is_loopback(),
        "a self-signed first try listens on loopback only: {addr}"
    );
    let body =
        std::fs::read(fixtures().join("imagereview/pod-create-latest.request.json")).unwrap();
    let r = Client::tls(addr, client_config(&ca, None))
        .unwrap()
        .post("/image_policy", &body)
        .unwrap();
    assert_eq!(r.json()["status"]["allowed"], false);
    // The throwaway keys are in a new private folder with a random name,
    // not one named after the process that anybody could make first.
    let new: Vec<_> = self_signed_dirs()
        .into_iter()
        .filter(|d| !before.contains(d))
        .collect();
    assert!(!new.is_empty());
    for d in &new {
        assert_eq!(
            std::fs::metadata(d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(
            !d.to_string_lossy().ends_with(&format!("-{}", child.id())),
            "{}",
            d.display()
        );
    }
    // A second start on the same port fails to bind and leaves the
    // running server's CA file as it was.
    let before = std::fs::read(&ca).unwrap();
    let out = run(
        &[
            "serve",
            "--self-signed",
            "--self-signed-ca",
            ca.to_str().unwrap(),
            "--port",
            &addr.port().to_string(),
        ],
        None,
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("cannot listen"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&ca).unwrap(), before);
    // The throwaway folders go with their servers: the failed one's now,
    // the running one's when it stops (SIGTERM).
    let left: Vec<_> = self_signed_dirs()
        .into_iter()
        .filter(|d| !before_dirs.contains(d))
        .collect();
    assert_eq!(left, new, "the failed start left its folder");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    for d in &new {
        assert!(!d.exists(), "{} outlived the server", d.display());
    }
    let out = run(&["serve", "--self-signed", "--insecure-http"], None);
    assert_eq!(out.status.code(), Some(2));
}

/// Every manifest under deploy/ parses, and the Deployment is what a
/// fail-closed webhook needs.
#[test]
fn deploy_manifests_are_complete() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut by_kind = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            for doc in yaml_docs(&std::fs::read_to_string(&path).unwrap()) {
                by_kind.insert(doc["kind"].as_str().unwrap().to_string(), doc);
            }
        }
    }
    for kind in [
        "Kustomization",
        "Namespace",
        "ServiceAccount",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(by_kind.contains_key(kind), "deploy/ lacks a {kind}");
    }
    let kustomization = &by_kind["Kustomization"];
    for r in kustomization["resources"].as_array().unwrap() {
        assert!(
            dir.join(r.as_str().unwrap()).exists(),
            "{r} is listed but missing"
        );
    }
    let d = &by_kind["Deployment"];
    assert!(d["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pod = &d["spec"]["template"]["spec"];
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    let image = c["image"].as_str().unwrap();
    assert!(
        !image.ends_with(":latest") && image.contains(':'),
        "{image}"
    );
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert!(
        c["resources"]["requests"].is_object() && c["resources"]["limits"]["memory"].is_string()
    );
    let pdb = &by_kind["PodDisruptionBudget"];
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    // The image tag matches what the flake builds (the crate version).
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(image, format!("image-bouncer:{version}"));
    assert_eq!(kustomization["images"][0]["newTag"], version);

    // The container's arguments really start the server: same flags, with
    // the mounted files replaced by files made here.
    let tmp = temp_dir("deploy-args");
    assert!(
        run(
            &[
                "certs",
                "--out",
                tmp.to_str().unwrap(),
                "--host",
                "localhost"
            ],
            None
        )
        .status
        .success()
    );
    let args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .replace("/tls/", &format!("{}/", tmp.display()))
                .replace(
                    "/policy/policy.json",
                    dir.join("policy.json").to_str().unwrap(),
                )
                // Test servers listen on loopback only.
                .replace("--port=8443", "--listen=127.0.0.1:0")
                .replace(
                    "--metrics-listen=0.0.0.0:9090",
                    "--metrics-listen=127.0.0.1:0",
                )
        })
        .collect();
    assert_eq!(args[0], "serve");
    let (mut child, printed) = spawn_listening(Command::new(BIN).args(&args));
    let addr = loopback(printed);
    let r = Client::tls(addr, client_config(&tmp.join("ca.crt"), None))
        .unwrap()
        .get("/readyz")
        .unwrap();
    assert_eq!(r.status, 200);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The monitoring bundle: the operator's PrometheusRule holds exactly the
/// rule file's groups (promtool tests the file: tests/packaging.sh), and
/// the ServiceMonitor finds the Service's metrics port.
#[test]
fn monitoring_manifests_agree() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let read = |p: &str| yaml_docs(&std::fs::read_to_string(dir.join(p)).unwrap()).remove(0);
    let rules = read("monitoring/rules.yaml");
    let crd = read("monitoring/prometheusrule.yaml");
    assert_eq!(crd["kind"], "PrometheusRule");
    assert_eq!(crd["spec"]["groups"], rules["groups"]);
    assert!(rules["groups"][0]["rules"].as_array().unwrap().len() >= 7);
    let monitor = read("monitoring/servicemonitor.yaml");
    let service = read("service.yaml");
    let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port),
        "{service}"
    );
}

/// With a policy that pins digests, /mutate gets time for registry
/// lookups (10 s, of which the server gives lookups 8) and /validate
/// keeps 5 s; a timeout that leaves lookups no time is refused.
#[test]
fn config_webhook_sizes_the_timeout_for_lookups() {
    let dir = temp_dir("config-webhook-timeout");
    assert!(
        run(
            &[
                "certs",
                "--out",
                dir.to_str().unwrap(),
                "--host",
                "image-bouncer.ib.svc"
            ],
            None
        )
        .status
        .success()
    );
    let policy = dir.join("policy.json");
    std::fs::write(&policy, r#"{"mutate": {"mutateDigest": ["*"]}}"#).unwrap();
    let ca = dir.join("ca.crt");
    let webhook = |extra: &[&str]| {
        let mut args = vec![
            "config",
            "webhook",
            "--namespace",
            "ib",
            "--ca",
            ca.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args, None)
    };
    let out = webhook(&["--mutate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let docs = yaml_docs(&stdout(&out));
    assert_eq!(docs[0]["webhooks"][0]["timeoutSeconds"], 5);
    assert_eq!(docs[1]["webhooks"][0]["timeoutSeconds"], 10);
    let out = webhook(&["--mutate", "--timeout", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("at least 4"), "{}", stderr(&out));
    let out = webhook(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("add --mutate"), "{}", stderr(&out));
    // A policy without lookups changes nothing.
    std::fs::write(&policy, r#"{"denyLatest": true}"#).unwrap();
    let out = webhook(&["--mutate"]);
    let docs = yaml_docs(&stdout(&out));
    assert_eq!(docs[1]["webhooks"][0]["timeoutSeconds"], 5);
    // A policy folder is read as the server reads it: the file that pins
    // digests is found among the others.
    let set = dir.join("policy.d");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::write(set.join("base.json"), r#"{"denyLatest": true}"#).unwrap();
    std::fs::write(set.join("pins.yaml"), "mutate:\n  mutateDigest: [\"*\"]\n").unwrap();
    std::fs::remove_file(&policy).unwrap();
    std::os::unix::fs::symlink(&set, &policy).unwrap();
    let out = webhook(&["--mutate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let docs = yaml_docs(&stdout(&out));
    assert_eq!(docs[1]["webhooks"][0]["timeoutSeconds"], 10);
    let out = webhook(&[]);
    assert!(stderr(&out).contains("add --mutate"), "{}", stderr(&out));
}
