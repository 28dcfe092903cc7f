//! Command-line flags and subcommands, as raw values.
//!
//! argh does the parsing; this module adds what argh lacks: `--flag=value`,
//! one set of policy flags shared by several subcommands, and the
//! kube-image-bouncer convention that the binary run with server flags and
//! no subcommand serves. Validation happens in `config.rs`.

use argh::FromArgs;

use std::path::PathBuf;

/// The policy flags shared by `check` and `serve`, after comma lists were
/// split. Built here; `config.rs`
/// validates them (`PolicyFlags::load_rules`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyFlags {
    pub file: Option<PathBuf>,
    pub allow_registries: Vec<String>,
    pub deny_registries: Vec<String>,
    pub require_digest: bool,
    pub allow_latest: bool,
    pub mode: Option<String>,
    pub exempt_namespaces: Vec<String>,
    pub exempt_images: Vec<String>,
    pub break_glass: bool,
    /// Read k8s-mutate-image-and-policy-webhook's variables (`REGISTRY`,
    /// ...): only in its drop-in mode, `image-bouncer` with no arguments,
    /// since names this generic are set by CI templates for other things.
    pub legacy_env: bool,
    /// Mutation flags; each one set replaces what env or file say.
    pub rewrite_registry: Option<String>,
    pub rewrite_layout: Option<String>,
    /// `from=to` pairs.
    pub registry_mirrors: Vec<String>,
    pub ignored_registries: Vec<String>,
    pub image_pull_secrets: Vec<String>,
    pub append_pull_secrets: bool,
    pub image_pull_policy: Option<String>,
    pub default_storage_class: Option<String>,
    pub exclude_namespaces: Vec<String>,
    pub mutate_templates: bool,
}

/// The environment variables of k8s-mutate-image-and-policy-webhook, read
/// so that this binary is a drop-in replacement for it.
pub const MUTATE_ENV: &[&str] = &[
    "REGISTRY",
    "IMAGE_PULL_SECRET",
    "IMAGE_PULL_SECRET_APPEND",
    "FORCE_IMAGE_PULL_POLICY",
    "IMAGE_PULL_POLICY_TO_FORCE",
    "DEFAULT_STORAGE_CLASS",
    "EXCLUDE_NAMESPACES",
    "IGNORED_REGISTRIES",
    "IGNORE_REGISTRIES",
];

/// Splits repeatable flag values on commas (`--allow-registry a,b`).
pub fn split_commas(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Defines a subcommand's flag struct with the shared policy flags appended
/// (argh has no `flatten`).
macro_rules! with_policy_flags {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($body:tt)* }
    ) => {
        #[derive(FromArgs, Debug, Default, PartialEq)]
        $(#[$meta])*
        pub struct $name {
            // Raw tokens, not `ty` fragments: argh inspects field types by
            // their path, which a captured `ty` would hide.
            $($body)*
            /// policy file (JSON): keys mode, namespaces, excludeNamespaces, denyLatest, requireDigest, allowedRegistries, deniedRegistries, exemptImages, exemptNamespaces, breakGlass, mutate, verifyImages, registries, registryCredentials (docs/policy.md); a directory of *.json/*.yaml/*.yml files is a set of policies; `image-bouncer check --policy FILE` checks one
            #[argh(option)]
            pub policy: Option<String>,
            /// allow only images from these registries (repeatable, comma lists accepted): host[:port], host/path/prefix or *.domain
            #[argh(option)]
            pub allow_registry: Vec<String>,
            /// alias of --allow-registry, as in kube-image-bouncer
            #[argh(option)]
            pub registry_whitelist: Vec<String>,
            /// deny images from these registries (repeatable, comma lists accepted); wins over the allow list
            #[argh(option)]
            pub deny_registry: Vec<String>,
            /// require every image to be pinned by digest
            #[argh(switch)]
            pub require_digest: bool,
            /// allow the latest tag and untagged images
            #[argh(switch)]
            pub allow_latest: bool,
            /// enforce (default) or warn: report violations but allow
            #[argh(option)]
            pub mode: Option<String>,
            /// skip every check in these namespaces (repeatable, comma lists, '*' patterns)
            #[argh(option)]
            pub exempt_namespace: Vec<String>,
            /// exempt images matching these patterns (repeatable, comma lists, '*' in the path)
            #[argh(option)]
            pub exempt_image: Vec<String>,
            /// honour `<x>.image-policy.k8s.io/<ticket>: break-glass` pod annotations
            #[argh(switch)]
            pub break_glass: bool,
            /// mutate: move images to this registry, e.g. mirror.example.com[/prefix]
            #[argh(option)]
            pub rewrite_registry: Option<String>,
            /// mutate: how --rewrite-registry names images: by-registry (target/<registry>/<path>, default) or flat (target/<path>: different images can share a name)
            #[argh(option)]
            pub rewrite_layout: Option<String>,
            /// mutate: move one registry's images, FROM=TO, e.g. docker.io=mirror.example.com/dockerhub (repeatable)
            #[argh(option)]
            pub registry_mirror: Vec<String>,
            /// mutate: never rewrite images from these registries (repeatable, comma lists)
            #[argh(option)]
            pub ignore_registry: Vec<String>,
            /// mutate: imagePullSecrets to inject (repeatable, comma lists)
            #[argh(option)]
            pub image_pull_secret: Vec<String>,
            /// mutate: add only missing pull secrets instead of replacing the list
            #[argh(switch)]
            pub append_pull_secrets: bool,
            /// mutate: force imagePullPolicy (Always, IfNotPresent or Never)
            #[argh(option)]
            pub image_pull_policy: Option<String>,
            /// mutate: storageClassName for PVCs created without one
            #[argh(option)]
            pub default_storage_class: Option<String>,
            /// mutate: leave these namespaces alone (repeatable, comma lists, '*' patterns)
            #[argh(option)]
            pub exclude_namespace: Vec<String>,
            /// mutate: also mutate pod templates of Deployments and other workloads
            #[argh(switch)]
            pub mutate_templates: bool,
        }

        impl $name {
            pub fn policy_flags(&self) -> PolicyFlags {
                let mut allow = split_commas(&self.allow_registry);
                allow.extend(split_commas(&self.registry_whitelist));
                PolicyFlags {
                    file: self.policy.as_ref().map(Into::into),
                    allow_registries: allow,
                    deny_registries: split_commas(&self.deny_registry),
                    require_digest: self.require_digest,
                    allow_latest: self.allow_latest,
                    mode: self.mode.clone(),
                    exempt_namespaces: split_commas(&self.exempt_namespace),
                    exempt_images: split_commas(&self.exempt_image),
                    break_glass: self.break_glass,
                    legacy_env: false,
                    rewrite_registry: self.rewrite_registry.clone(),
                    rewrite_layout: self.rewrite_layout.clone(),
                    registry_mirrors: self.registry_mirror.clone(),
                    ignored_registries: split_commas(&self.ignore_registry),
                    image_pull_secrets: split_commas(&self.image_pull_secret),
                    append_pull_secrets: self.append_pull_secrets,
                    image_pull_policy: self.image_pull_policy.clone(),
                    default_storage_class: self.default_storage_class.clone(),
                    exclude_namespaces: split_commas(&self.exclude_namespace),
                    mutate_templates: self.mutate_templates,
                }
            }
        }
    };
}

with_policy_flags! {
    /// Judge images offline: exit 0 if all are allowed, 1 if any is denied, 2 on a usage or configuration error.
    pub struct CheckArgs {
        /// read documents, JSON or YAML (several with ---): Pods, workloads, Lists (kubectl get -o json), AdmissionReviews, ImageReviews ('-' for stdin); repeatable
        #[argh(option, short = 'f')]
        pub file: Vec<String>,
        /// namespace to judge in (documents' own namespace wins)
        #[argh(option, short = 'n')]
        pub namespace: Option<String>,
        /// print the result as JSON (as --output json)
        #[argh(switch)]
        pub json: bool,
        /// output: text (default), json, or policyreport (wgpolicyk8s.io/v1alpha2 PolicyReports, one per namespace, a ClusterPolicyReport for objects without one, as a List for `kubectl apply -f -`; exit 0 once written)
        #[argh(option, short = 'o')]
        pub output: Option<String>,
        /// print the JSON Patch /mutate would apply to each object read with -f (one per line)
        #[argh(switch)]
        pub mutate: bool,
        /// with --mutate: then judge the mutated objects as /validate would (the mutate-then-validate set-up)
        #[argh(switch)]
        pub validate: bool,
        /// also ask each image's registry which digest it serves (registryCredentials and registries of the policy file); with --mutate, pin digests as /mutate would (mutateDigest)
        #[argh(switch)]
        pub resolve: bool,
        /// images to judge
        #[argh(positional)]
        pub images: Vec<String>,
    }
}

with_policy_flags! {
    /// Serve the webhook: POST /image_policy (ImageReview), /validate and / (AdmissionReview), POST /mutate (JSON Patch), GET /healthz, /readyz, /metrics.
    #[argh(note = "--cert and --key are required unless --self-signed (or --insecure-http) is given.\nEnvironment: BOUNCER_CERTIFICATE, BOUNCER_KEY, BOUNCER_PORT, BOUNCER_DEBUG (kube-image-bouncer's, when the flags are not given); RUST_LOG (log level). With no arguments at all, k8s-mutate-image-and-policy-webhook's TLS_CERT_FILE, TLS_KEY_FILE, PORT, REGISTRY, IMAGE_PULL_SECRET, ... (docs/migration.md, \"Mutating webhook\").")]
    pub struct ServeArgs {
        /// PEM certificate chain to serve (reloaded when it changes)
        #[argh(option, short = 'c')]
        pub cert: Option<String>,
        /// PEM private key (RSA, ECDSA or Ed25519; PKCS#1, PKCS#8 or SEC1)
        #[argh(option, short = 'k')]
        pub key: Option<String>,
        /// port to listen on, on all addresses (default 1323)
        #[argh(option, short = 'p')]
        pub port: Option<u16>,
        /// address to listen on, e.g. 127.0.0.1:8443 or [::]:8443 (overrides --port)
        #[argh(option)]
        pub listen: Option<String>,
        /// require client certificates signed by this PEM CA (the apiserver's client-certificate)
        #[argh(option)]
        pub client_ca: Option<String>,
        /// accept only client certificates with this subject CN or DNS name (repeatable; needs --client-ca)
        #[argh(option)]
        pub client_name: Vec<String>,
        /// requests decoded and judged at once (default: number of CPUs, at least 2)
        #[argh(option)]
        pub workers: Option<usize>,
        /// connections open at once; past it, the cheapest to close goes: oldest handshake, then oldest idle keep-alive, then oldest request still arriving (default 4096)
        #[argh(option)]
        pub max_connections: Option<usize>,
        /// connections one client address may hold; past it, that client's own cheapest connection is closed (default 256)
        #[argh(option)]
        pub max_connections_per_peer: Option<usize>,
        /// request bodies all connections may hold at once, in MiB; more waits (default 64)
        #[argh(option)]
        pub max_body_memory_mib: Option<usize>,
        /// time to receive a whole request once it started, e.g. 10s (default 10s)
        #[argh(option)]
        pub request_timeout: Option<String>,
        /// time an idle keep-alive connection stays open (default 120s, above the apiserver's 90s)
        #[argh(option)]
        pub idle_timeout: Option<String>,
        /// time for a TLS handshake (default 5s)
        #[argh(option)]
        pub handshake_timeout: Option<String>,
        /// time to finish requests in flight on SIGTERM (default 10s)
        #[argh(option)]
        pub drain_timeout: Option<String>,
        /// how often certificate and policy files are checked for changes (default 2s)
        #[argh(option)]
        pub reload_interval: Option<String>,
        /// log format: text (default) or json (then nothing else goes to stdout)
        #[argh(option)]
        pub log_format: Option<String>,
        /// also serve GET /metrics, /healthz and /readyz over plain HTTP here, e.g. 127.0.0.1:9090 (for Prometheus and probes without a client certificate)
        #[argh(option)]
        pub metrics_listen: Option<String>,
        /// log at debug level (RUST_LOG overrides)
        #[argh(switch)]
        pub debug: bool,
        /// write every log line when it is logged (default: info lines are written every 100 ms; warnings and errors at once)
        #[argh(switch)]
        pub log_sync: bool,
        /// serve plain HTTP without TLS (testing only; the apiserver requires https)
        #[argh(switch)]
        pub insecure_http: bool,
        /// for a first try: make an in-memory certificate for localhost, 127.0.0.1 and ::1 (listens on 127.0.0.1 unless --listen says otherwise)
        #[argh(switch)]
        pub self_signed: bool,
        /// with --self-signed: where to write the CA certificate for clients (default ./image-bouncer-ca.crt)
        #[argh(option)]
        pub self_signed_ca: Option<String>,
    }
}

/// Switches of every subcommand: `--switch=value` is an error, not a value.
const SWITCHES: &[&str] = &[
    "--json",
    "--require-digest",
    "--allow-latest",
    "--break-glass",
    "--help",
    "--debug",
    "--insecure-http",
    "--append-pull-secrets",
    "--mutate-templates",
    "--mutate",
    "--self-signed",
    "--force",
    "--default-allow",
];

/// Issue a serving certificate for the given names and a client certificate for the apiserver (ECDSA P-256), from the CA in the folder (renewal keeps it) or a new one; rotate the CA with overlap.
#[derive(FromArgs, Debug, Default, PartialEq)]
pub struct CertsArgs {
    /// folder to write ca.crt, ca.key, tls.crt, tls.key, apiserver-client.crt and apiserver-client.key into
    #[argh(option)]
    pub out: String,
    /// DNS name of the webhook, e.g. image-bouncer.local or image-bouncer.image-bouncer.svc (repeatable)
    #[argh(option)]
    pub host: Vec<String>,
    /// IP address of the webhook, e.g. 127.0.0.1 (repeatable)
    #[argh(option)]
    pub ip: Vec<String>,
    /// validity in days (default 365)
    #[argh(option, default = "365")]
    pub days: u32,
    /// replace existing files
    #[argh(switch)]
    pub force: bool,
    /// make a new CA even if the folder has one (everything that trusts the old one must change)
    #[argh(switch)]
    pub new_ca: bool,
    /// issue from this CA certificate (with --ca-key) instead of the folder's
    #[argh(option)]
    pub ca_cert: Option<String>,
    /// the key of --ca-cert
    #[argh(option)]
    pub ca_key: Option<String>,
    /// one step of a CA rotation with overlap: begin (new CA, trusted beside the old), switch (new leaves from it), finish (drop the old CA)
    #[argh(option)]
    pub rotate_ca: Option<String>,
    /// also write the apiserver's client certificate for in-cluster (*.svc) names, which do not need one
    #[argh(switch)]
    pub client_cert: bool,
    /// the service's group (e.g. image-bouncer), which may then read the folder (0750), the certificates and the serving key (0640); the CA and client keys stay the owner's
    #[argh(option)]
    pub group: Option<String>,
}

/// Write the AdmissionConfiguration and kubeconfig for the ImagePolicyWebhook plugin, and print the kube-apiserver flags, kubeadm mounts and /etc/hosts line.
#[derive(FromArgs, Debug, Default, PartialEq)]
pub struct ApiserverArgs {
    /// the webhook's URL as the apiserver will call it, e.g. https://image-bouncer.local:8443/image_policy
    #[argh(option)]
    pub url: String,
    /// folder with ca.crt, tls.crt, apiserver-client.crt and apiserver-client.key (from `image-bouncer certs`)
    #[argh(option)]
    pub pki: String,
    /// admit pods on every webhook error: unreachable, timed out, any non-200 answer (default: refuse them; allowing fails open)
    #[argh(switch)]
    pub default_allow: bool,
    /// folder to write admission-config.yaml and kubeconfig.yaml into, and where the apiserver will read them (default /etc/kubernetes/image-bouncer)
    #[argh(option, default = "String::from(\"/etc/kubernetes/image-bouncer\")")]
    pub out: String,
    /// seconds (1 to 1800) the apiserver keeps an "allowed" answer (allowTTL, default 50): after a switch to enforce, images admitted just before stay admitted this long
    #[argh(option, default = "50")]
    pub allow_ttl: u32,
    /// seconds (1 to 1800) the apiserver keeps a "denied" answer (denyTTL, default 50)
    #[argh(option, default = "50")]
    pub deny_ttl: u32,
    /// replace the files if they exist
    #[argh(switch)]
    pub force: bool,
}

/// Print a ValidatingWebhookConfiguration (and with --mutate a MutatingWebhookConfiguration) for the in-cluster server.
#[derive(FromArgs, Debug, Default, PartialEq)]
pub struct WebhookArgs {
    /// namespace of the webhook's Service (default image-bouncer)
    #[argh(option, default = "String::from(\"image-bouncer\")")]
    pub namespace: String,
    /// name of the webhook's Service (default image-bouncer)
    #[argh(option, default = "String::from(\"image-bouncer\")")]
    pub service: String,
    /// PEM CA (or CA bundle) that signed the serving certificate; becomes the caBundle
    #[argh(option)]
    pub ca: String,
    /// the serving certificate, checked for the Service's DNS name (default: tls.crt beside --ca, if there)
    #[argh(option)]
    pub cert: Option<String>,
    /// also print a MutatingWebhookConfiguration for /mutate
    #[argh(switch)]
    pub mutate: bool,
    /// with --mutate: also send workloads to /mutate (for mutateTemplates)
    #[argh(switch)]
    pub mutate_templates: bool,
    /// port of the Service (default 443)
    #[argh(option, default = "443")]
    pub port: u16,
    /// seconds the apiserver waits for an answer, 1 to 30 (default 5; 10 for /mutate when --policy pins digests)
    #[argh(option)]
    pub timeout: Option<u8>,
    /// the policy file the server will run: when it pins digests (mutateDigest), /mutate gets time for registry lookups
    #[argh(option)]
    pub policy: Option<String>,
}

/// Verify one sigstore bundle offline, as the sigstore-conformance client protocol asks: exit 0 when it verifies, 1 with the reason when not.
#[derive(FromArgs, Debug, Default, PartialEq)]
pub struct VerifyBundleArgs {
    /// the sigstore bundle (JSON)
    #[argh(option)]
    pub bundle: String,
    /// the signer's identity (certificate SAN), exact
    #[argh(option)]
    pub certificate_identity: Option<String>,
    /// the signer's OIDC issuer, exact
    #[argh(option)]
    pub certificate_oidc_issuer: Option<String>,
    /// a PEM public key the bundle must be signed with (instead of an identity)
    #[argh(option)]
    pub key: Option<String>,
    /// the sigstore trusted_root.json (required: nothing is fetched)
    #[argh(option)]
    pub trusted_root: Option<String>,
    /// the staging instance: still needs --trusted-root (nothing is fetched)
    #[argh(switch)]
    pub staging: bool,
    /// the artifact: a file, or sha256:<hex> (sha512:<hex> for a DSSE statement)
    #[argh(positional)]
    pub artifact: String,
}

/// Run a table of policy test cases through the admission step, as the server would judge them.
#[derive(FromArgs, Debug, PartialEq, Default)]
pub struct TestArgs {
    /// the policy file or directory (a `policy:` in the cases file, beside it, is used otherwise)
    #[argh(option)]
    pub policy: Option<String>,
    /// let registry lookups happen (signatures, digests to pin); offline by default
    #[argh(switch)]
    pub resolve: bool,
    /// the cases: YAML or JSON (see docs/policy.md#policy-tests)
    #[argh(positional)]
    pub cases: String,
}

/// Update a sigstore trusted_root.json from a TUF repository (sigstore's by default), verified before it is written.
#[derive(FromArgs, Debug, PartialEq, Default)]
pub struct TrustUpdateArgs {
    /// where to write the trusted root; the TUF metadata trusted is kept beside it, in <out>.tuf/
    #[argh(option)]
    pub out: String,
    /// the TUF root to start from the first time (default: sigstore's public-good root, built in)
    #[argh(option)]
    pub tuf_root: Option<String>,
    /// the TUF repository's metadata URL (default https://tuf-repo-cdn.sigstore.dev; http:// is allowed, metadata is signed)
    #[argh(option)]
    pub tuf_url: Option<String>,
    /// the repository's targets URL (default: <tuf-url>/targets)
    #[argh(option)]
    pub targets_url: Option<String>,
    /// seconds one download may take (default 30)
    #[argh(option)]
    pub timeout: Option<u64>,
    /// read the TUF metadata last trusted from this folder (e.g. a mounted ConfigMap) instead of <out>.tuf/
    #[argh(option)]
    pub previous: Option<String>,
    /// also write the trusted root and the TUF metadata as a JSON merge patch of a ConfigMap's data (for `kubectl patch --patch-file`)
    #[argh(option)]
    pub configmap_patch: Option<String>,
}

/// Show what a sigstore trusted_root.json holds: Fulcio CAs, Rekor and CT logs, timestamp authorities, each with its validity.
#[derive(FromArgs, Debug, PartialEq, Default)]
pub struct TrustShowArgs {
    /// the trusted_root.json
    #[argh(positional)]
    pub file: String,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Check(Box<CheckArgs>),
    Test(TestArgs),
    VerifyBundle(VerifyBundleArgs),
    TrustUpdate(TrustUpdateArgs),
    TrustShow(TrustShowArgs),
    /// With whether the older project's environment is read (drop-in mode).
    Serve(Box<ServeArgs>, bool),
    Certs(CertsArgs),
    ConfigApiserver(ApiserverArgs),
    ConfigWebhook(WebhookArgs),
    /// Top-level help or version: print and exit 0.
    Print(String),
}

/// A usage error (exit 2) or a help text (exit 0).
#[derive(Debug, PartialEq)]
pub struct Early {
    pub output: String,
    pub ok: bool,
}

const OVERVIEW: &str = "\
Usage: image-bouncer <command> [<args>]

Kubernetes admission webhook that decides which container images may run.

Commands:
  serve              run the webhook server (also: image-bouncer --cert F --key F ...)
  check              judge images or manifests offline (for CI pipelines)
  test               run a table of policy test cases (allow, deny, warn) as the server would judge them
  certs              make a CA, a serving and an apiserver client certificate
  config apiserver   write the ImagePolicyWebhook admission config and kubeconfig
  config webhook     print Validating/MutatingWebhookConfiguration with the caBundle
  verify-bundle      verify one sigstore bundle offline (why a signature is refused)
  trust update       update a sigstore trusted_root.json from its TUF repository (beside the webhook)
  trust show         show what a trusted_root.json holds (CAs, logs, TSAs, validity)

Run 'image-bouncer <command> --help' for the flags of a command.";

const CONFIG_HELP: &str = "\
Usage: image-bouncer config apiserver|webhook [<args>]

  config apiserver   write the ImagePolicyWebhook admission config, kubeconfig and kubeadm patches
  config webhook     print Validating/MutatingWebhookConfiguration with the caBundle

Run 'image-bouncer config apiserver --help' or 'image-bouncer config webhook --help' for their flags.";

/// `image-bouncer 0.1.0`, with the source revision when the build knew it
/// (the Nix flake sets `IMAGE_BOUNCER_REVISION`).
pub fn version() -> String {
    match option_env!("IMAGE_BOUNCER_REVISION") {
        Some(rev) if !rev.is_empty() => {
            format!("image-bouncer {} ({rev})", env!("CARGO_PKG_VERSION"))
        }
        _ => format!("image-bouncer {}", env!("CARGO_PKG_VERSION")),
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, Early> {
    let usage = |m: String| Early {
        output: m,
        ok: false,
    };
    let Some(first) = args.first() else {
        return match legacy_env_serve(&|k| std::env::var(k).ok()) {
            Some(serve) => Ok(Command::Serve(Box::new(serve), true)),
            None => Err(usage(OVERVIEW.to_string())),
        };
    };
    match first.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Print(OVERVIEW.to_string())),
        "-V" | "--version" | "version" => Ok(Command::Print(version())),
        "check" => sub(&["image-bouncer check"], &args[1..]).map(|c| Command::Check(Box::new(c))),
        "test" => sub(&["image-bouncer test"], &args[1..]).map(Command::Test),
        "verify-bundle" => {
            sub(&["image-bouncer verify-bundle"], &args[1..]).map(Command::VerifyBundle)
        }
        "trust" => match args.get(1).map(String::as_str) {
            Some("update") => {
                sub(&["image-bouncer trust update"], &args[2..]).map(Command::TrustUpdate)
            }
            Some("show") => sub(&["image-bouncer trust show"], &args[2..]).map(Command::TrustShow),
            _ => Err(usage(format!(
                "usage: image-bouncer trust update|show [--help]\n\n{OVERVIEW}"
            ))),
        },
        "serve" => sub(&["image-bouncer serve"], &args[1..]).map(serve_with_env),
        "certs" => sub(&["image-bouncer certs"], &args[1..]).map(Command::Certs),
        "config" => match args.get(1).map(String::as_str) {
            Some("-h" | "--help" | "help") => Ok(Command::Print(CONFIG_HELP.to_string())),
            Some("apiserver") => {
                sub(&["image-bouncer config apiserver"], &args[2..]).map(Command::ConfigApiserver)
            }
            Some("webhook") => {
                sub(&["image-bouncer config webhook"], &args[2..]).map(Command::ConfigWebhook)
            }
            _ => Err(usage(format!(
                "usage: image-bouncer config apiserver|webhook [--help]\n\n{OVERVIEW}"
            ))),
        },
        // kube-image-bouncer had no subcommands: its flags alone mean serve.
        flag if flag.starts_with('-') => sub(&["image-bouncer"], args).map(serve_with_env),
        other => Err(usage(format!("unknown command {other:?}\n\n{OVERVIEW}"))),
    }
}

/// kube-image-bouncer read `BOUNCER_CERTIFICATE`, `BOUNCER_KEY`,
/// `BOUNCER_PORT` and `BOUNCER_DEBUG` when the flags were not given: so do
/// we (flags win).
pub fn apply_bouncer_env(a: &mut ServeArgs, env: &dyn Fn(&str) -> Option<String>) {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    if a.cert.is_none() {
        a.cert = get("BOUNCER_CERTIFICATE");
    }
    if a.key.is_none() {
        a.key = get("BOUNCER_KEY");
    }
    if a.port.is_none() && a.listen.is_none() {
        a.port = get("BOUNCER_PORT").and_then(|p| p.parse().ok());
    }
    if let Some(d) = get("BOUNCER_DEBUG") {
        a.debug |= matches!(d.to_ascii_lowercase().as_str(), "1" | "true" | "yes");
    }
}

/// Where k8s-mutate-image-and-policy-webhook's certificate was mounted.
const LEGACY_CERT: &str = "/run/secrets/tls/webhook-server-tls.crt";
const LEGACY_KEY: &str = "/run/secrets/tls/webhook-server-tls.key";

/// Without arguments, the older tools' environment still means "serve":
/// kube-image-bouncer's `BOUNCER_*` variables, or
/// k8s-mutate-image-and-policy-webhook's, which was configured by
/// environment alone (its certificate paths and port 8443 by default; the
/// mutation variables are read by `config.rs`).
pub fn legacy_env_serve(env: &dyn Fn(&str) -> Option<String>) -> Option<ServeArgs> {
    let set = |k: &&str| env(k).is_some_and(|v| !v.is_empty());
    let bouncer = [
        "BOUNCER_CERTIFICATE",
        "BOUNCER_KEY",
        "BOUNCER_PORT",
        "BOUNCER_DEBUG",
    ];
    // The older project's mode needs its certificate: named by a variable,
    // or at its default path (PORT or REGISTRY alone are too common).
    let mutate_tls = ["TLS_CERT_FILE", "TLS_KEY_FILE"];
    let mut a = ServeArgs::default();
    if mutate_tls.iter().any(set) || std::path::Path::new(LEGACY_CERT).is_file() {
        let or = |k: &str, default: &str| {
            env(k)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        a.cert = Some(or("TLS_CERT_FILE", LEGACY_CERT));
        a.key = Some(or("TLS_KEY_FILE", LEGACY_KEY));
        a.listen = Some(format!("0.0.0.0:{}", or("PORT", "8443")));
    } else if !bouncer.iter().any(set) {
        return None;
    }
    apply_bouncer_env(&mut a, env);
    Some(a)
}

fn serve_with_env(mut a: ServeArgs) -> Command {
    apply_bouncer_env(&mut a, &|k| std::env::var(k).ok());
    Command::Serve(Box::new(a), false)
}

/// Parses one subcommand's flags with argh, after `--flag=value` splitting.
fn sub<T: FromArgs>(name: &[&str], args: &[String]) -> Result<T, Early> {
    let rest = split_equals(args).map_err(|m| Early {
        output: m,
        ok: false,
    })?;
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    T::from_args(name, &rest).map_err(|e| Early {
        output: e.output,
        ok: e.status.is_ok(),
    })
}

/// Turns `--flag=value` into `--flag value` up to a `--`; after `--`
/// everything is positional.
pub fn split_equals(args: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(args.len() + 4);
    let mut options_ended = false;
    for a in args {
        if options_ended {
            out.push(a.clone());
            continue;
        }
        if a == "--" {
            options_ended = true;
            out.push(a.clone());
            continue;
        }
        match a.strip_prefix("--").and_then(|rest| rest.split_once('=')) {
            Some((name, value)) => {
                let flag = format!("--{name}");
                if SWITCHES.contains(&flag.as_str()) {
                    return Err(format!("{flag} is a switch and takes no value (got {a:?})"));
                }
                out.push(flag);
                out.push(value.to_string());
            }
            None => out.push(a.clone()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn check(s: &[&str]) -> CheckArgs {
        match parse(&args(s)) {
            Ok(Command::Check(c)) => *c,
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    #[test]
    fn equals_and_space_forms_are_the_same() {
        let a = check(&[
            "check",
            "--allow-registry=ghcr.io,quay.io",
            "--namespace=prod",
            "nginx:1",
        ]);
        let b = check(&[
            "check",
            "--allow-registry",
            "ghcr.io,quay.io",
            "--namespace",
            "prod",
            "nginx:1",
        ]);
        assert_eq!(a, b);
        assert_eq!(a.policy_flags().allow_registries, ["ghcr.io", "quay.io"]);
        assert_eq!(a.namespace.as_deref(), Some("prod"));
        assert_eq!(a.images, ["nginx:1"]);
    }

    #[test]
    fn registry_whitelist_alias() {
        let c = check(&[
            "check",
            "--registry-whitelist=a.io,b.io",
            "--allow-registry",
            "c.io",
        ]);
        assert_eq!(c.policy_flags().allow_registries, ["c.io", "a.io", "b.io"]);
    }

    #[test]
    fn double_dash_ends_options() {
        let c = check(&["check", "--json", "--", "--allow-latest", "-f", "x=y"]);
        assert!(c.json);
        assert!(!c.allow_latest);
        assert_eq!(c.images, ["--allow-latest", "-f", "x=y"]);
    }

    #[test]
    fn kube_image_bouncer_arguments_serve() {
        let Ok(Command::Serve(s, _)) = parse(&args(&[
            "--cert=/tls/tls.crt",
            "--key=/tls/tls.key",
            "--debug",
            "--registry-whitelist=a.io,b.io",
        ])) else {
            panic!("not serve");
        };
        assert_eq!(s.cert.as_deref(), Some("/tls/tls.crt"));
        assert_eq!(s.key.as_deref(), Some("/tls/tls.key"));
        assert!(s.debug);
        assert_eq!(s.policy_flags().allow_registries, ["a.io", "b.io"]);
        let Ok(Command::Serve(s, _)) = parse(&args(&["-k", "k.pem", "-c", "c.pem", "-p", "8443"]))
        else {
            panic!("not serve");
        };
        assert_eq!(
            (s.key.as_deref(), s.cert.as_deref(), s.port),
            (Some("k.pem"), Some("c.pem"), Some(8443))
        );
    }

    #[test]
    fn help_says_what_the_commands_do() {
        assert!(
            matches!(parse(&args(&["config", "--help"])), Ok(Command::Print(t)) if t.contains("config apiserver"))
        );
        let Err(serve) = parse(&args(&["serve", "--help"])) else {
            panic!("serve --help is printed by argh");
        };
        assert!(serve.ok);
        for want in [
            "POST /mutate",
            "required unless --self-signed",
            "BOUNCER_CERTIFICATE",
            "--metrics-listen",
        ] {
            assert!(serve.output.contains(want), "{want}: {}", serve.output);
        }
        let Err(check) = parse(&args(&["check", "--help"])) else {
            panic!("check --help");
        };
        assert!(
            check.output.contains("allowedRegistries"),
            "{}",
            check.output
        );
    }

    #[test]
    fn legacy_environment_alone_serves() {
        let env = |k: &str| match k {
            "REGISTRY" => Some("mirror.example.com".to_string()),
            "PORT" => Some("9443".to_string()),
            "TLS_KEY_FILE" => Some("/k.pem".to_string()),
            _ => None,
        };
        let s = legacy_env_serve(&env).unwrap();
        assert_eq!(
            s.cert.as_deref(),
            Some("/run/secrets/tls/webhook-server-tls.crt")
        );
        assert_eq!(s.listen.as_deref(), Some("0.0.0.0:9443"));
        // PORT or REGISTRY alone (common in CI) do not make a server.
        for k in ["PORT", "REGISTRY"] {
            let only = |name: &str| (name == k).then(|| "x".to_string());
            assert!(legacy_env_serve(&only).is_none(), "{k}");
        }
        assert!(legacy_env_serve(&|_| None).is_none());
        assert!(legacy_env_serve(&|_| Some(String::new())).is_none());
        // kube-image-bouncer's variables, as fallbacks for its flags.
        let env = |k: &str| match k {
            "BOUNCER_CERTIFICATE" => Some("/c.pem".to_string()),
            "BOUNCER_KEY" => Some("/k.pem".to_string()),
            "BOUNCER_PORT" => Some("9000".to_string()),
            "BOUNCER_DEBUG" => Some("true".to_string()),
            _ => None,
        };
        let s = legacy_env_serve(&env).unwrap();
        assert_eq!(
            (s.cert.as_deref(), s.key.as_deref(), s.port, s.debug),
            (Some("/c.pem"), Some("/k.pem"), Some(9000), true)
        );
        let mut flags = ServeArgs {
            cert: Some("/flag.pem".into()),
            port: Some(1),
            ..ServeArgs::default()
        };
        apply_bouncer_env(&mut flags, &env);
        assert_eq!(
            (flags.cert.as_deref(), flags.key.as_deref(), flags.port),
            (Some("/flag.pem"), Some("/k.pem"), Some(1))
        );
    }

    #[test]
    fn usage_errors() {
        let e = parse(&args(&["check", "--json=yes"])).unwrap_err();
        assert!(!e.ok && e.output.contains("--json is a switch"), "{e:?}");
        let e = parse(&args(&["check", "--bogus"])).unwrap_err();
        assert!(!e.ok && e.output.contains("--bogus"), "{e:?}");
        let e = parse(&args(&["frobnicate"])).unwrap_err();
        assert!(!e.ok && e.output.contains("unknown command"), "{e:?}");
        let help = parse(&args(&["check", "--help"])).unwrap_err();
        assert!(help.ok && help.output.contains("--allow-registry"));
    }
}
