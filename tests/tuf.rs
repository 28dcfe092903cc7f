//! `image-bouncer trust update` against TUF repositories made here with
//! python-tuf (tests/tuf/repo.py), served on loopback over plain HTTP by a
//! small file server that can also send endless data or stall: a normal
//! update, a root rotation from version 1 to 3 with threshold changes,
//! and each attack the TUF specification names. Every refusal exits 1,
//! says why, and leaves the old `trusted_root.json` as it was.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::common::{run, stderr, stdout, temp_dir};

/// What the file server does for a path.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Endless,
    Stall,
}

/// Serves a folder on 127.0.0.1; `modes` bends chosen paths.
struct Files {
    port: u16,
    modes: Arc<Mutex<HashMap<String, Mode>>>,
}

impl Files {
    fn start(dir: &Path) -> Files {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let modes: Arc<Mutex<HashMap<String, Mode>>> = Arc::default();
        let (dir, m) = (dir.to_path_buf(), modes.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (dir, m) = (dir.clone(), m.clone());
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) <= 2 {
                            break;
                        }
                    }
                    let path = line
                        .split(' ')
                        .nth(1)
                        .unwrap_or("/")
                        .trim_start_matches('/')
                        .to_string();
                    let mode = m.lock().unwrap().get(&path).copied();
                    match mode {
                        Some(Mode::Stall) => std::thread::sleep(std::time::Duration::from_secs(20)),
                        Some(Mode::Endless) => {
                            let _ =
                                stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                            let chunk = vec![b' '; 64 * 1024];
                            for _ in 0..2048 {
                                if stream.write_all(&chunk).is_err() {
                                    break;
                                }
                            }
                        }
                        None => match std::fs::read(dir.join(&path)) {
                            Ok(body) => {
                                let _ = write!(
                                    stream,
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    body.len()
                                );
                                let _ = stream.write_all(&body);
                            }
                            Err(_) => {
                                let _ = stream.write_all(
                                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                                );
                            }
                        },
                    }
                });
            }
        });
        Files { port, modes }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn bend(&self, path: &str, mode: Option<Mode>) {
        let mut m = self.modes.lock().unwrap();
        match mode {
            Some(mode) => m.insert(path.to_string(), mode),
            None => m.remove(path),
        };
    }
}

/// python-tuf, or `None` where it is not installed (CI installs it and
/// sets CI=true, where it missing is a failure).
fn have_python_tuf() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import tuf, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "python-tuf is needed (pip install tuf)"
        );
        eprintln!("skip: python-tuf is not installed");
    }
    ok
}

/// Runs tests/tuf/repo.py.
fn repo(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tuf/repo.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "repo.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/sigstore/trusted-roots/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A repository, its server, where the client writes, and the root the
/// client starts from (the repository's version 1).
struct Setup {
    repo: PathBuf,
    files: Files,
    out: PathBuf,
    root1: PathBuf,
}

fn set_up(name: &str) -> Option<Setup> {
    if !have_python_tuf() {
        return None;
    }
    let dir = temp_dir(name);
    let repo_dir = dir.join("repo");
    repo(&[
        "init",
        repo_dir.to_str().unwrap(),
        &fixture("public-good.json"),
    ]);
    let root1 = dir.join("initial-root.json");
    std::fs::copy(repo_dir.join("1.root.json"), &root1).unwrap();
    Some(Setup {
        files: Files::start(&repo_dir),
        repo: repo_dir,
        out: dir.join("out/trusted_root.json"),
        root1,
    })
}

impl Setup {
    /// `trust update`: (success, stdout, stderr).
    fn update(&self) -> (bool, String, String) {
        std::fs::create_dir_all(self.out.parent().unwrap()).unwrap();
        let o = run(
            &[
                "trust",
                "update",
                "--out",
                self.out.to_str().unwrap(),
                "--tuf-root",
                self.root1.to_str().unwrap(),
                "--tuf-url",
                &self.files.url(),
                "--timeout",
                "2",
            ],
            None,
        );
        if !o.status.success() {
            assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        }
        (o.status.success(), stdout(&o), stderr(&o))
    }

    fn r(&self, args: &[&str]) {
        let mut all = vec![args[0], self.repo.to_str().unwrap()];
        all.extend_from_slice(&args[1..]);
        repo(&all);
    }

    fn out_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.out).unwrap_or_default()
    }

    /// A refused update: says `says`, and the output is what it was.
    fn refused(&self, says: &str) {
        let before = self.out_bytes();
        let (ok, out, err) = self.update();
        assert!(!ok, "updated: {out}");
        assert!(err.contains(says), "{says:?} in {err}");
        assert!(err.contains("is left as it was"), "{err}");
        assert_eq!(self.out_bytes(), before, "the trusted root changed");
    }

    fn latest(&self, role: &str) -> u64 {
        std::fs::read_dir(&self.repo)
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                n.strip_suffix(&format!(".{role}.json"))?.parse().ok()
            })
            .max()
            .unwrap()
    }
}

/// A normal update, a new trusted root published, then a root rotation
/// from version 1 to 3 (a key added and the threshold raised to 2 of 3,
/// then the first key dropped and new timestamp and snapshot keys): each
/// written, `trust show` reads the result.
#[test]
fn updates_follow_new_targets_and_root_rotations() {
    let Some(s) = set_up("tuf-update") else {
        return;
    };
    let (ok, out, err) = s.update();
    assert!(ok, "{err}");
    assert!(
        out.contains("updated (TUF root version 1, timestamp version 1"),
        "{out}"
    );
    assert_eq!(
        s.out_bytes(),
        std::fs::read(fixture("public-good.json")).unwrap()
    );
    let kept = s.out.with_file_name("trusted_root.json.tuf");
    for f in [
        "root.json",
        "timestamp.json",
        "snapshot.json",
        "targets.json",
    ] {
        assert!(kept.join(f).exists(), "{f} kept");
    }
    // Nothing new: unchanged.
    let (ok, out, _) = s.update();
    assert!(ok && out.contains("unchanged"), "{out}");
    // A new trusted root.
    s.r(&["target", &fixture("staging.json")]);
    let (ok, out, err) = s.update();
    assert!(ok && out.contains("updated"), "{out}{err}");
    assert_eq!(
        s.out_bytes(),
        std::fs::read(fixture("staging.json")).unwrap()
    );
    // Root rotations 1 → 3, new online keys among them.
    s.r(&["rotate"]);
    s.r(&["rotate"]);
    s.r(&["target", &fixture("public-good.json")]);
    let (ok, out, err) = s.update();
    assert!(ok, "{err}");
    assert!(out.contains("TUF root version 1 → 3"), "{out}");
    assert_eq!(
        s.out_bytes(),
        std::fs::read(fixture("public-good.json")).unwrap()
    );
    let o = run(&["trust", "show", s.out.to_str().unwrap()], None);
    let shown = stdout(&o);
    assert!(
        shown.contains("Fulcio CA        https://fulcio.sigstore.dev"),
        "{shown}"
    );
    assert!(
        shown.contains("Rekor v2         https://log2025-1.rekor.sigstore.dev"),
        "{shown}"
    );
}

/// Each attack: refused with its reason, the old trusted root kept.
#[test]
fn attacks_are_refused_and_the_old_root_kept() {
    let Some(s) = set_up("tuf-attacks") else {
        return;
    };
    assert!(s.update().0);
    // A target that does not match its hash.
    s.r(&["target", &fixture("staging.json")]);
    let target = std::fs::read_dir(s.repo.join("targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap() == std::fs::read(fixture("staging.json")).unwrap())
        .unwrap();
    let good = std::fs::read(&target).unwrap();
    let mut bad = good.clone();
    bad[10] ^= 1;
    std::fs::write(&target, &bad).unwrap();
    s.refused("trusted_root.json does not match its sha256 hash");
    std::fs::write(&target, &good).unwrap();
    assert!(s.update().0);
    // An expired timestamp.
    let timestamp = s.repo.join("timestamp.json");
    let current = std::fs::read(&timestamp).unwrap();
    s.r(&["timestamp", "2021-01-01T00:00:00+00:00"]);
    s.refused("timestamp.json expired at 2021-01-01T00:00:00Z");
    // Rollback, and a freeze: the old (unexpired) timestamp replayed.
    let old_timestamp = current;
    s.r(&["timestamp"]);
    assert!(s.update().0);
    let newest = std::fs::read(&timestamp).unwrap();
    std::fs::write(&timestamp, &old_timestamp).unwrap();
    s.refused("older than the version");
    std::fs::write(&timestamp, &newest).unwrap();
    s.r(&["timestamp"]);
    let (ok, _, err) = s.update();
    assert!(ok, "{err}");
    // Mix and match: the targets of another version under this one's name.
    let t = s.latest("targets");
    let name = s.repo.join(format!("{t}.targets.json"));
    let this = std::fs::read(&name).unwrap();
    std::fs::copy(s.repo.join(format!("{}.targets.json", t - 1)), &name).unwrap();
    s.refused(&format!(
        "{t}.targets.json is version {}, not the {t}",
        t - 1
    ));
    std::fs::write(&name, &this).unwrap();
    // Endless data, file by file (the target read to its listed length at
    // most), and a server that stalls.
    let target_path = format!("targets/{}", target.file_name().unwrap().to_str().unwrap());
    let snapshot = format!("{}.snapshot.json", s.latest("snapshot"));
    for (path, says) in [
        ("timestamp.json", "sent more than 16384 bytes"),
        (snapshot.as_str(), "sent more than 2000000 bytes"),
        ("2.root.json", "sent more than 512000 bytes"),
        (&format!("{t}.targets.json"), "sent more than 5000000 bytes"),
        (&target_path, "sent more than"),
    ] {
        s.files.bend(path, Some(Mode::Endless));
        s.refused(says);
        s.files.bend(path, None);
    }
    s.files.bend("timestamp.json", Some(Mode::Stall));
    let began = std::time::Instant::now();
    s.refused("timestamp.json");
    assert!(began.elapsed() < std::time::Duration::from_secs(15));
    s.files.bend("timestamp.json", None);
    // And after all that, a good update still goes through.
    assert!(s.update().0);
}

/// The in-cluster way (deploy/trust/): the CronJob's own arguments, as
/// its manifest gives them, with the ConfigMap's data as a mounted folder
/// between runs. Each run starts from what the last one trusted (so a
/// replayed timestamp is refused), and writes the merge patch kubectl
/// applies; the Role reaches that ConfigMap only.
#[test]
fn the_cronjob_keeps_its_state_in_the_configmap() {
    use yaml_rust2::{Yaml, YamlLoader};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/trust");
    let load = |f: &str| {
        YamlLoader::load_from_str(&std::fs::read_to_string(format!("{dir}/{f}")).unwrap()).unwrap()
    };
    let cron = &load("cronjob.yaml")[0];
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let strings = |y: &Yaml| -> Vec<String> {
        y.as_vec()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let update = strings(&pod["initContainers"][0]["args"]);
    let publish = strings(&pod["containers"][0]["args"]);
    // The binary reads the update's arguments as meant.
    match image_bouncer::cli::parse(&update) {
        Ok(image_bouncer::cli::Command::TrustUpdate(a)) => {
            assert_eq!(a.previous.as_deref(), Some("/previous"));
            assert_eq!(a.configmap_patch.as_deref(), Some("/work/patch.json"));
        }
        other => panic!("{update:?}: {other:?}"),
    }
    assert_eq!(
        publish,
        [
            "patch",
            "configmap",
            "image-bouncer-trust",
            "--type",
            "merge",
            "--patch-file",
            "/work/patch.json"
        ]
    );
    assert_eq!(
        pod["volumes"][1]["configMap"]["name"].as_str(),
        Some("image-bouncer-trust")
    );
    let rbac = load("rbac.yaml");
    let role = rbac
        .iter()
        .find(|d| d["kind"].as_str() == Some("Role"))
        .unwrap();
    assert_eq!(
        strings(&role["rules"][0]["resourceNames"]),
        ["image-bouncer-trust"]
    );
    assert_eq!(strings(&role["rules"][0]["verbs"]), ["get", "patch"]);
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        Some("image-bouncer-trust")
    );

    let Some(s) = set_up("tuf-cronjob") else {
        return;
    };
    let work = s.out.parent().unwrap().join("cron");
    let mounted = work.join("previous");
    std::fs::create_dir_all(&mounted).unwrap();
    // One run: the job's arguments, with its folders here.
    let run_job = || {
        let _ = std::fs::remove_dir_all(work.join("work"));
        std::fs::create_dir_all(work.join("work")).unwrap();
        let args: Vec<String> = update
            .iter()
            .map(|a| {
                a.replace("/work", work.join("work").to_str().unwrap())
                    .replace("/previous", mounted.to_str().unwrap())
            })
            .chain([
                "--tuf-root".into(),
                s.root1.to_str().unwrap().into(),
                "--tuf-url".into(),
                s.files.url(),
            ])
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args, None);
        (o.status.success(), stderr(&o))
    };
    // kubectl's merge patch, then the kubelet's refresh of the mount.
    let apply = || {
        let patch: serde_json::Value =
            serde_json::from_slice(&std::fs::read(work.join("work/patch.json")).unwrap()).unwrap();
        for (k, v) in patch["data"].as_object().unwrap() {
            std::fs::write(mounted.join(k), v.as_str().unwrap()).unwrap();
        }
    };
    let (ok, err) = run_job();
    assert!(ok, "{err}");
    apply();
    for key in [
        "trusted_root.json",
        "root.json",
        "timestamp.json",
        "snapshot.json",
        "targets.json",
    ] {
        assert!(mounted.join(key).exists(), "{key} in the ConfigMap");
    }
    assert_eq!(
        std::fs::read(mounted.join("trusted_root.json")).unwrap(),
        std::fs::read(fixture("public-good.json")).unwrap()
    );
    let old_timestamp = std::fs::read(s.repo.join("timestamp.json")).unwrap();
    s.r(&["target", &fixture("staging.json")]);
    let (ok, err) = run_job();
    assert!(ok, "{err}");
    apply();
    assert_eq!(
        std::fs::read(mounted.join("trusted_root.json")).unwrap(),
        std::fs::read(fixture("staging.json")).unwrap()
    );
    // A replayed timestamp: refused from the state the ConfigMap carries.
    std::fs::write(s.repo.join("timestamp.json"), old_timestamp).unwrap();
    let (ok, err) = run_job();
    assert!(!ok && err.contains("older than the version"), "{err}");
}
