//! The set-up commands: `certs`, `config apiserver` and `config webhook`.
//!
//! They write the files that users of the older tools most often got wrong:
//! certificates with the right SANs, the apiserver's AdmissionConfiguration
//! and kubeconfig (with the kubeadm mounts and `/etc/hosts` line to go with
//! them), and webhook configurations with the caBundle filled in. YAML is
//! written as text (no YAML library at run time); every value that comes
//! from the user is quoted as a JSON string, which is valid YAML.

use base64::Engine as _;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::certs::{self, CLIENT_CERT, CLIENT_CN, CLIENT_KEY, SERVER_CERT};
use crate::cli::{ApiserverArgs, CertsArgs, WebhookArgs};
use crate::der;
use crate::files::read_limited;

/// `image-bouncer certs`.
// One function on purpose, the flags' checks, then one message per rotation step: the messages
// are what makes it long.
pub fn run_certs(a: &CertsArgs) -> Result<(), Error> {
    let step = a
        .rotate_ca
        .as_deref()
        .map(certs::RotateStep::parse)
        .transpose()
        .map_err(|e| Error::Usage(format!("--rotate-ca: {e}")))?;
    // Only the steps that issue leaves need the names.
    let (hosts, ips) = match step {
        Some(certs::RotateStep::Begin | certs::RotateStep::Finish) => (Vec::new(), Vec::new()),
        _ => names(&a.host, &a.ip)?,
    };
    if a.days == 0 || a.days > certs::MAX_DAYS {
        return Err(Error::Usage(format!(
            "--days must be between 1 and {}",
            certs::MAX_DAYS
        )));
    }
    let source = match (&a.ca_cert, &a.ca_key, a.new_ca) {
        (Some(_), _, true) | (None, Some(_), true) => {
            return Err(Error::Usage(
                "--new-ca and --ca-cert/--ca-key exclude each other".into(),
            ));
        }
        (Some(c), Some(k), false) => certs::CaSource::Given {
            cert: c.into(),
            key: k.into(),
        },
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err(Error::Usage("--ca-cert and --ca-key go together".into()));
        }
        (None, None, true) => certs::CaSource::New,
        (None, None, false) => certs::CaSource::Folder,
    };
    // In-cluster names need no client certificate: the apiserver calls
    // admission webhooks without one unless told otherwise.
    let in_cluster = !hosts.is_empty()
        && ips.is_empty()
        && hosts
            .iter()
            .all(|h| h.ends_with(".svc") || h.ends_with(".svc.cluster.local"));
    let client = a.client_cert || !in_cluster;
    let group = a
        .group
        .as_deref()
        .map(crate::files::group_id)
        .transpose()
        .map_err(|e| Error::Input(format!("--group: {e}")))?;
    let request = certs::Issue {
        dir: Path::new(&a.out),
        hosts: &hosts,
        ips: &ips,
        days: a.days,
        client,
        group,
        force: a.force,
        ca: source,
    };
    let issued = match step {
        Some(step) => certs::rotate(step, &request),
        None => certs::issue(&request),
    }
    .map_err(|e| Error::Input(e.to_string()))?;
    for p in &issued.written {
        println!("wrote {}", p.display());
    }
    let out = a.out.trim_end_matches('/');
    match step {
        Some(certs::RotateStep::Begin) => {
            println!(
                "rotation begun: {out}/{} now trusts the old and the new CA. Next: give every client the new bundle (off-cluster: `image-bouncer config apiserver ... --force`, whose kubeconfig embeds it, then restart the kube-apiserver; in-cluster: `image-bouncer config webhook --ca {out}/{} | kubectl apply -f -`); the server reloads it by itself. Then run --rotate-ca switch.",
                certs::CA_BUNDLE,
                certs::CA_BUNDLE
            );
            return Ok(());
        }
        Some(certs::RotateStep::Finish) => {
            println!(
                "rotation finished: {out}/{} trusts only the new CA; give clients the new bundle again (as for begin).",
                certs::CA_BUNDLE
            );
            return Ok(());
        }
        _ => {}
    }
    if issued.ca_reused && step.is_none() {
        println!("issued from the existing CA: whatever trusts it needs no change");
    }
    if issued.cut_to_ca {
        println!(
            "the CA expires on {}, sooner than --days {}: the certificates end with it; rotate the CA (--rotate-ca begin) before then",
            crate::time::date(issued.ca_not_after),
            a.days
        );
    }
    // The kubeconfig embeds the client certificate: the apiserver takes a
    // new one only from `config apiserver --force` and a restart.
    let replaced = a.force || step == Some(certs::RotateStep::Switch);
    if client && replaced && issued.written.iter().any(|p| p.ends_with(CLIENT_CERT)) {
        println!(
            "the kube-apiserver presents its previous client certificate until `image-bouncer config apiserver ... --force` embeds this one in its kubeconfig and it restarts{}",
            if step == Some(certs::RotateStep::Switch) {
                ": do that before --rotate-ca finish, which stops trusting the old CA"
            } else {
                " (the previous one stays valid until it expires)"
            }
        );
    }
    let expiry = crate::time::date(issued.not_after);
    let days = issued.not_after.div_euclid(86_400) - crate::time::unix_now().div_euclid(86_400);
    println!(
        "the certificates expire on {} ({days} days); serving names: {}",
        expiry,
        hosts
            .iter()
            .cloned()
            .chain(ips.iter().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if client {
        println!(
            "serve with: image-bouncer serve --cert {out}/{SERVER_CERT} --key {out}/tls.key --client-ca {out}/{} --client-name {CLIENT_CN}",
            certs::CA_BUNDLE
        );
    } else {
        println!(
            "in-cluster names: no client certificate written (--client-cert writes one); serve with --cert {out}/{SERVER_CERT} --key {out}/tls.key"
        );
    }
    if step == Some(certs::RotateStep::Switch) {
        println!(
            "leaves switched to the new CA (the server reloads them). When every client has the new client certificate, run --rotate-ca finish."
        );
    }
    Ok(())
}

/// Validates `--host` and `--ip` values.
fn names(hosts: &[String], ips: &[String]) -> Result<(Vec<String>, Vec<IpAddr>), Error> {
    let hosts: Vec<String> = crate::cli::split_commas(hosts);
    let mut problems = Vec::new();
    for h in &hosts {
        if let Err(e) = certs::check_host(h) {
            problems.push(format!("--host: {e}"));
        }
    }
    let mut parsed = Vec::new();
    for ip in crate::cli::split_commas(ips) {
        match ip.parse::<IpAddr>() {
            Ok(x) => parsed.push(x),
            Err(_) => problems.push(format!("--ip: {ip:?} is not an IP address")),
        }
    }
    if hosts.is_empty() && parsed.is_empty() {
        problems
            .push("give at least one --host or --ip: the names the webhook is called by".into());
    }
    if problems.is_empty() {
        Ok((hosts, parsed))
    } else {
        Err(Error::Config(crate::config::ConfigError {
            problems,
            files: Vec::new(),
            files_seen: Default::default(),
        }))
    }
}

/// A value quoted for YAML (a JSON string is a YAML double-quoted scalar).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The parts of an `https://host[:port]/path` URL that matter here.
struct Url {
    host: String,
    port: u16,
}

fn parse_url(url: &str) -> Result<Url, String> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        format!("--url {url:?} must start with https:// (the apiserver requires TLS)")
    })?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if path.split('?').next() != Some("image_policy") {
        return Err(format!(
            "--url {url:?} should end in /image_policy, the ImageReview endpoint"
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("--url: port {p:?} is not a number"))?,
        ),
        _ => (authority, 443),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(format!("--url {url:?} has no host"));
    }
    Ok(Url { host, port })
}

fn absolute(p: &str) -> Result<PathBuf, Error> {
    std::path::absolute(p).map_err(|e| Error::Input(format!("{p}: {e}")))
}

/// `image-bouncer config apiserver`.
pub fn run_apiserver(a: &ApiserverArgs) -> Result<(), Error> {
    let url = parse_url(&a.url).map_err(Error::Usage)?;
    let pki = absolute(&a.pki)?;
    let out = absolute(&a.out)?;
    let mut problems = Vec::new();
    for f in ["ca.crt", CLIENT_CERT, CLIENT_KEY, SERVER_CERT] {
        if !pki.join(f).is_file() {
            problems.push(format!(
                "{}: missing (make it with `image-bouncer certs --out {}`)",
                pki.join(f).display(),
                a.pki
            ));
        }
    }
    // The apiserver checks our certificate against the URL's host name.
    if let Ok(pem) = read_limited(&pki.join(SERVER_CERT), 1 << 20) {
        use rustls::pki_types::pem::PemObject;
        let names = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .ok()
            .and_then(|c| der::cert_info(&c))
            .map(|i| i.dns_names)
            .unwrap_or_default();
        let is_ip = url.host.parse::<IpAddr>().is_ok();
        if !is_ip && !names.iter().any(|n| n.eq_ignore_ascii_case(&url.host)) {
            problems.push(format!(
                "{}: has no DNS name {:?} (it has {names:?}); regenerate with `image-bouncer certs --host {}`",
                pki.join(SERVER_CERT).display(),
                url.host,
                url.host
            ));
        }
    }
    for (flag, ttl) in [("--allow-ttl", a.allow_ttl), ("--deny-ttl", a.deny_ttl)] {
        // The plugin refuses more than 30 minutes (and the apiserver then
        // does not start).
        if !(1..=1800).contains(&ttl) {
            problems.push(format!("{flag} must be between 1 and 1800 seconds"));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Config(crate::config::ConfigError {
            problems,
            files: Vec::new(),
            files_seen: Default::default(),
        }));
    }
    let kubeconfig_path = out.join("kubeconfig.yaml");
    let admission_path = out.join("admission-config.yaml");
    let patch_path = out.join("kubeadm-patches").join("kube-apiserver+json.json");
    let cluster_path = out.join("kubeadm-cluster-configuration.yaml");
    // As `certs`: what is there is replaced only when asked.
    let existing: Vec<String> = [
        &kubeconfig_path,
        &admission_path,
        &patch_path,
        &cluster_path,
    ]
    .iter()
    .filter(|p| crate::files::exists(p))
    .map(|p| p.display().to_string())
    .collect();
    if !a.force && !existing.is_empty() {
        return Err(Error::Input(format!(
            "{} already exist; use --force to replace them",
            existing.join(", ")
        )));
    }
    crate::files::private_dir(&out).map_err(|e| Error::Input(format!("{}: {e}", out.display())))?;
    let write = |p: &Path, text: &str, mode: u32| {
        certs::write_file(p, text.as_bytes(), mode).map_err(|e| Error::Input(e.to_string()))
    };
    write(&kubeconfig_path, &kubeconfig(&a.url, &pki)?, 0o600)?;
    write(
        &admission_path,
        &admission_config(&kubeconfig_path, a.default_allow, a.allow_ttl, a.deny_ttl),
        0o644,
    )?;
    let patches = out.join("kubeadm-patches");
    crate::files::private_dir(&patches)
        .map_err(|e| Error::Input(format!("{}: {e}", patches.display())))?;
    write(&patch_path, &kubeadm_patch(&out, &admission_path), 0o644)?;
    write(
        &cluster_path,
        &cluster_configuration(&out, &admission_path),
        0o644,
    )?;
    for p in [
        &admission_path,
        &kubeconfig_path,
        &patch_path,
        &cluster_path,
    ] {
        println!("wrote {}", p.display());
    }
    println!();
    print!(
        "{}",
        apiserver_instructions(&url, &pki, &out, &admission_path)
    );
    Ok(())
}

/// The apiserver flags image-bouncer needs: (name, value).
type Flags = [(&'static str, String); 2];
/// Its read-only mounts: (volume name, host path, also the mount path).
/// Only the folder of the admission configuration and kubeconfig: the
/// kubeconfig embeds the certificates, so the PKI folder stays unmounted.
type Mounts<'a> = [(&'static str, &'a Path); 1];

/// The flags, volumes and mounts the apiserver's static pod needs.
fn apiserver_additions<'a>(out: &'a Path, admission: &'a Path) -> (Flags, Mounts<'a>) {
    (
        [
            // A second --enable-admission-plugins adds to the first (a
            // string-slice flag), so NodeRestriction and the rest stay.
            ("enable-admission-plugins", "ImagePolicyWebhook".to_string()),
            (
                "admission-control-config-file",
                admission.display().to_string(),
            ),
        ],
        [("image-bouncer-config", out)],
    )
}

/// A JSON patch (RFC 6902) for kubeadm's `--patches` folder: kubeadm
/// applies `kube-apiserver+json.json` to the manifest it writes on `init`,
/// `join` and `upgrade`. Volumes are of type `Directory`, so a path typo
/// fails the pod instead of creating an empty folder.
pub fn kubeadm_patch(out: &Path, admission: &Path) -> String {
    let (flags, volumes) = apiserver_additions(out, admission);
    let mut ops = Vec::new();
    for (name, value) in flags {
        ops.push(serde_json::json!({"op": "add", "path": "/spec/containers/0/command/-", "value": format!("--{name}={value}")}));
    }
    for (name, path) in volumes {
        let path = path.display().to_string();
        ops.push(serde_json::json!({"op": "add", "path": "/spec/volumes/-",
            "value": {"name": name, "hostPath": {"path": path, "type": "Directory"}}}));
        ops.push(
            serde_json::json!({"op": "add", "path": "/spec/containers/0/volumeMounts/-",
            "value": {"name": name, "mountPath": path, "readOnly": true}}),
        );
    }
    // Serialising plain JSON values cannot fail.
    serde_json::to_string_pretty(&ops).unwrap_or_default() + "\n"
}

/// The same for kubeadm's `ClusterConfiguration` (API v1beta4), which
/// kubeadm keeps in the `kubeadm-config` ConfigMap and reuses on upgrade.
pub fn cluster_configuration(out: &Path, admission: &Path) -> String {
    let (flags, volumes) = apiserver_additions(out, admission);
    let mut s = String::from(
        "# Written by `image-bouncer config apiserver`: merge into your ClusterConfiguration
# (kubectl -n kube-system edit configmap kubeadm-config) so that kubeadm upgrade keeps it.
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
apiServer:
  extraArgs:
",
    );
    for (name, value) in flags {
        // extraArgs replace kubeadm's own value: keep NodeRestriction.
        let value = if name == "enable-admission-plugins" {
            format!("NodeRestriction,{value}")
        } else {
            value
        };
        let _ = writeln!(s, "  - name: {name}\n    value: {}", q(&value));
    }
    s.push_str("  extraVolumes:\n");
    for (name, path) in volumes {
        let p = q(&path.display().to_string());
        let _ = writeln!(
            s,
            "  - name: {name}\n    hostPath: {p}\n    mountPath: {p}\n    readOnly: true\n    pathType: Directory"
        );
    }
    s
}

/// The kubeconfig the ImagePolicyWebhook plugin reads: whom to call, the
/// CAs to trust, and the apiserver's client identity — all embedded, never
/// named by path. client-go rereads a client certificate named by path at
/// every new connection and, when it has changed, closes all its
/// connections to the webhook, the one being opened for a review among
/// them: the plugin does not retry that, and the pod is refused (seen on
/// kube-apiserver 1.32). Embedded, what the apiserver presents changes only
/// when it restarts, after `config apiserver --force`.
pub fn kubeconfig(url: &str, pki: &Path) -> Result<String, Error> {
    let file = |f: &str| {
        read_limited(&pki.join(f), 1 << 20)
            .map(|text| base64::engine::general_purpose::STANDARD.encode(text))
            .map_err(Error::Input)
    };
    // The bundle, so that during a CA rotation both CAs are trusted.
    let ca = if pki.join(certs::CA_BUNDLE).is_file() {
        certs::CA_BUNDLE
    } else {
        certs::CA_CERT
    };
    Ok(format!(
        "# Written by `image-bouncer config apiserver` from {pki}: how the kube-apiserver's
# ImagePolicyWebhook plugin reaches image-bouncer. The certificates and key are
# embedded: the apiserver reads them when it starts, and a renewal reaches it
# by `config apiserver --force` and a restart (README, \"Certificates\").
apiVersion: v1
kind: Config
clusters:
- name: image-bouncer
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: kube-apiserver
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: image-bouncer
  context:
    cluster: image-bouncer
    user: kube-apiserver
current-context: image-bouncer
",
        pki = pki.display(),
        server = q(url),
        ca = file(ca)?,
        cert = file(CLIENT_CERT)?,
        key = file(CLIENT_KEY)?,
    ))
}

/// The AdmissionConfiguration for `--admission-control-config-file`.
pub fn admission_config(
    kubeconfig: &Path,
    default_allow: bool,
    allow_ttl: u32,
    deny_ttl: u32,
) -> String {
    format!(
        "# Written by `image-bouncer config apiserver`; pass it to kube-apiserver with
# --admission-control-config-file and enable the ImagePolicyWebhook plugin.
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ImagePolicyWebhook
  configuration:
    imagePolicy:
      kubeConfigFile: {kc}
      # Seconds an answer is cached: a policy change is seen after at most
      # this (after a switch to enforce, images admitted just before stay
      # admitted this long). `config apiserver --allow-ttl/--deny-ttl`.
      allowTTL: {allow_ttl}
      denyTTL: {deny_ttl}
      # Milliseconds between retries when the webhook does not answer.
      retryBackoff: 500
      # false: refuse pods when image-bouncer cannot be reached (fail closed).
      defaultAllow: {default_allow}
",
        kc = q(&kubeconfig.display().to_string()),
    )
}

fn apiserver_instructions(url: &Url, pki: &Path, out: &Path, admission: &Path) -> String {
    let mut s = String::new();
    let patches = out.join("kubeadm-patches");
    let _ = writeln!(
        s,
        "1. kube-apiserver needs two flags and one read-only mount:\n\
         \x20   --enable-admission-plugins=...,ImagePolicyWebhook\n\
         \x20   --admission-control-config-file={adm}\n\
         \x20   {out} (hostPath type Directory: a typo fails, it is not created; the\n\
         \x20   kubeconfig embeds the certificates from {pki}, which stays unmounted)\n\
         \x20  kubeadm applies them without hand edits from the patches folder:\n\
         \x20   this node now:   kubectl -n kube-system get configmap kubeadm-config -o jsonpath='{{.data.ClusterConfiguration}}' > /tmp/kubeadm.yaml\n\
         \x20                    kubeadm init phase control-plane apiserver --config /tmp/kubeadm.yaml --patches {patches}\n\
         \x20   new nodes:       kubeadm init|join ... --patches {patches}\n\
         \x20   upgrades:        kubeadm upgrade apply|node ... --patches {patches}\n\
         \x20  or merge {out}/kubeadm-cluster-configuration.yaml (kubeadm v1beta4) into the\n\
         \x20  kubeadm-config ConfigMap, which kubeadm upgrade reuses.\n",
        adm = admission.display(),
        out = out.display(),
        pki = pki.display(),
        patches = patches.display(),
    );
    if url.host.parse::<IpAddr>().is_err() {
        let _ = writeln!(
            s,
            "2. The apiserver uses the node's resolver (hostNetwork): add to /etc/hosts on every\n\
             \x20  control-plane node (use the address image-bouncer listens on):\n\
             \x20   127.0.0.1 {}\n",
            url.host
        );
    }
    let _ = writeln!(
        s,
        "3. Run image-bouncer on that node, listening where the URL points (before step 1):\n\
         \x20   image-bouncer serve --listen 127.0.0.1:{port} --cert {pki}/{SERVER_CERT} --key {pki}/tls.key \\\n\
         \x20     --client-ca {pki}/ca-bundle.crt --client-name {CLIENT_CN} --policy /etc/image-bouncer/policy.d",
        port = url.port,
        pki = pki.display(),
    );
    s
}

/// `image-bouncer config webhook`.
pub fn run_webhook(a: &WebhookArgs) -> Result<(), Error> {
    let mut problems = Vec::new();
    for (flag, v) in [("--namespace", &a.namespace), ("--service", &a.service)] {
        if crate::policy::NamespacePattern::parse(v).is_err() || v.contains('*') {
            problems.push(format!("{flag}: {v:?} is not a Kubernetes name"));
        }
    }
    if a.timeout.is_some_and(|t| !(1..=30).contains(&t)) {
        problems.push("--timeout must be between 1 and 30 seconds".into());
    }
    let lookups = match &a.policy {
        None => false,
        Some(p) => match (crate::cli::PolicyFlags {
            file: Some(p.into()),
            ..Default::default()
        })
        .load_rules()
        {
            Ok(rules) => !rules.mutate.mutate_digest.is_empty(),
            Err(e) => {
                problems.extend(e.problems);
                false
            }
        },
    };
    if lookups && !a.mutate {
        problems.push(format!(
            "{}: pins digests (mutateDigest), which only /mutate does; add --mutate",
            a.policy.as_deref().unwrap_or("")
        ));
    }
    if lookups && a.timeout.is_some_and(|t| t < MUTATE_LOOKUP_MIN) {
        problems.push(format!(
            "--timeout {} leaves under 2 s for registry lookups, and the policy pins digests; give at least {MUTATE_LOOKUP_MIN} (default with --policy: {MUTATE_LOOKUP_TIMEOUT})",
            a.timeout.unwrap_or(0)
        ));
    }
    if a.mutate_templates && !a.mutate {
        problems.push("--mutate-templates needs --mutate".into());
    }
    let ca = read_limited(Path::new(&a.ca), 1 << 20).map_err(|e| {
        problems.push(e);
    });
    if let Ok(pem) = &ca {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            problems.push(format!("{}: no PEM certificate in it", a.ca));
        }
        // A leaf as caBundle makes the apiserver refuse the webhook.
        if certs
            .iter()
            .any(|c| der::cert_info(c).is_some_and(|i| !i.is_ca))
        {
            problems.push(format!(
                "{}: holds a certificate that is not a CA (a serving certificate?); give the CA, e.g. ca-bundle.crt from `image-bouncer certs`",
                a.ca
            ));
        }
    }
    // The apiserver calls <service>.<namespace>.svc and checks that name.
    let dns = format!("{}.{}.svc", a.service, a.namespace);
    let cert_path = a.cert.clone().map(PathBuf::from).or_else(|| {
        let beside = Path::new(&a.ca).with_file_name(SERVER_CERT);
        beside.is_file().then_some(beside)
    });
    if let Some(path) = cert_path {
        use rustls::pki_types::pem::PemObject;
        let names = read_limited(&path, 1 << 20)
            .ok()
            .and_then(|pem| rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok())
            .and_then(|c| der::cert_info(&c))
            .map(|i| i.dns_names);
        match names {
            None => problems.push(format!("{}: no readable certificate", path.display())),
            Some(n) if !n.iter().any(|x| x.eq_ignore_ascii_case(&dns)) => problems.push(format!(
                "{}: has no DNS name {dns:?} (it has {n:?}), which the apiserver checks; regenerate with `image-bouncer certs --host {dns}`",
                path.display()
            )),
            Some(_) => {}
        }
    }
    match ca {
        Ok(pem) if problems.is_empty() => {
            print!(
                "{}",
                webhook_configs(
                    a,
                    &base64::engine::general_purpose::STANDARD.encode(pem),
                    lookups
                )
            );
            Ok(())
        }
        _ => Err(Error::Config(crate::config::ConfigError {
            problems,
            files: Vec::new(),
            files_seen: Default::default(),
        })),
    }
}

/// One rule of a webhook configuration.
fn rule(group: &str, operations: &str, resources: &str) -> String {
    format!(
        "  - apiGroups: [\"{group}\"]
    apiVersions: [\"v1\"]
    operations: [{operations}]
    resources: [{resources}]
    scope: Namespaced
"
    )
}

const CREATE_UPDATE: &str = "\"CREATE\", \"UPDATE\"";

/// The workloads with a pod template, outside the core group.
fn workload_rules() -> String {
    rule(
        "apps",
        CREATE_UPDATE,
        "\"deployments\", \"replicasets\", \"statefulsets\", \"daemonsets\"",
    ) + &rule("batch", CREATE_UPDATE, "\"jobs\", \"cronjobs\"")
}

/// `timeoutSeconds` of /mutate when its policy pins digests: the server
/// gives lookups the apiserver's timeout less 2 s (`admit::lookup_budget`),
/// 8 s here, room for a token round trip and a slow registry.
const MUTATE_LOOKUP_TIMEOUT: u8 = 10;
/// Less than this leaves the lookups under 2 s.
const MUTATE_LOOKUP_MIN: u8 = 4;
/// Without lookups: the apiserver's callers wait at most this long.
const DEFAULT_TIMEOUT: u8 = 5;

/// The YAML of the webhook configurations; `lookups`: the policy pins
/// digests, so /mutate waits on registries.
pub fn webhook_configs(a: &WebhookArgs, ca_bundle: &str, lookups: bool) -> String {
    let common = |path: &str| {
        let timeout = a.timeout.unwrap_or(if lookups && path == "/mutate" {
            MUTATE_LOOKUP_TIMEOUT
        } else {
            DEFAULT_TIMEOUT
        });
        format!(
            "  admissionReviewVersions: [\"v1\", \"v1beta1\"]
  sideEffects: None
  # Refuse when image-bouncer cannot answer: a policy that fails open is no policy.
  failurePolicy: Fail
  timeoutSeconds: {timeout}
  matchPolicy: Equivalent
  clientConfig:
    service:
      namespace: {ns}
      name: {svc}
      path: {path}
      port: {port}
    caBundle: {ca}
  # Never for kube-system, nor for image-bouncer's own namespace: a webhook
  # that fails closed must not be able to block its own restart.
  namespaceSelector:
    matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: [\"kube-system\", {ns}]
",
            ns = q(&a.namespace),
            svc = q(&a.service),
            path = q(path),
            port = a.port,
            ca = q(ca_bundle),
        )
    };
    // Everything before a webhook's own settings.
    let header = |kind: &str, webhook: &str| {
        format!(
            "apiVersion: admissionregistration.k8s.io/v1
kind: {kind}
metadata:
  name: image-bouncer
  labels:
    app.kubernetes.io/name: image-bouncer
webhooks:
- name: {webhook}
"
        )
    };
    let mut out = format!(
        "# Written by `image-bouncer config webhook`.
{header}{common}  rules:
{pods}{workloads}",
        header = header(
            "ValidatingWebhookConfiguration",
            "validate.image-bouncer.io"
        ),
        common = common("/validate"),
        pods = rule(
            "",
            CREATE_UPDATE,
            "\"pods\", \"pods/ephemeralcontainers\", \"replicationcontrollers\", \"podtemplates\""
        ),
        workloads = workload_rules(),
    );
    if a.mutate {
        let workloads = if a.mutate_templates {
            workload_rules()
                + &rule(
                    "",
                    CREATE_UPDATE,
                    "\"replicationcontrollers\", \"podtemplates\"",
                )
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "---
{header}{common}  # Called again after webhooks ordered after this one (sidecar injectors:
  # istio, linkerd, vault), so that their containers are rewritten too;
  # the mutations are idempotent, which makes the second call safe.
  reinvocationPolicy: IfNeeded
  rules:
{pods}{pvcs}{workloads}",
            header = header("MutatingWebhookConfiguration", "mutate.image-bouncer.io"),
            common = common("/mutate"),
            pods = rule("", CREATE_UPDATE, "\"pods\", \"pods/ephemeralcontainers\""),
            pvcs = rule("", "\"CREATE\"", "\"persistentvolumeclaims\""),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("https://image-bouncer.local:8443/image_policy").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("image-bouncer.local", 8443));
        let u = parse_url("https://[::1]:9443/image_policy").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9443));
        assert_eq!(
            parse_url("https://x.example/image_policy").unwrap().port,
            443
        );
        for bad in [
            "http://x/image_policy",
            "https://x:port/image_policy",
            "https://x/validate",
            "https:///image_policy",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoting_is_json() {
        assert_eq!(q("a\"b: c"), "\"a\\\"b: c\"");
    }
}
