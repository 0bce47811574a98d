//! The deployment files under `deploy/`, checked without a container runtime: every YAML
//! file parses (multi-document files too); the Kubernetes overlays keep the tiers apart
//! (a namespace each, no shared Secret, a NetworkPolicy that lets no tier reach another's
//! Redis or apps), probe `/healthz` and `/readyz` on the admin port, run as non-root with
//! limits and a PodDisruptionBudget, and carry policies `portcullis check` accepts; the
//! Dockerfile builds in stages and runs as a non-root user with flags the binary has; the
//! compose file has its services and mounts files that exist, and its init script makes a
//! policy that `portcullis run` serves on Redis with one ACL user per tier.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::harness::eventually;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// Every document of a YAML file (empty documents left out), or why it does not parse.
fn parse_yaml(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = Value::deserialize(doc).map_err(|e| format!("{}: {e}", path.display()))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn yaml(path: &Path) -> Vec<Value> {
    parse_yaml(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Every `.yaml`/`.yml` file under a directory, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn kind(v: &Value) -> &str {
    str_of(v, "kind").unwrap_or("")
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

/// One tier's overlay as kustomize renders it, for what these checks read: its
/// namespace and name prefix applied to every object of the overlay and of the base.
struct Overlay {
    tier: String,
    dir: PathBuf,
    namespace: String,
    prefix: String,
    /// Objects with `metadata.name` prefixed and `metadata.namespace` set.
    objects: Vec<Value>,
    kustomization: Value,
}

impl Overlay {
    fn of_kind(&self, k: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| kind(o) == k).collect()
    }

    /// The overlay's own policy files (the ConfigMap generator's), by file name.
    fn policy_files(&self) -> BTreeMap<String, PathBuf> {
        let generators = seq(&self.kustomization["configMapGenerator"]);
        let policy = generators
            .iter()
            .find(|g| str_of(g, "name") == Some("portcullis-policy"))
            .unwrap_or_else(|| panic!("{}: no portcullis-policy configMapGenerator", self.dir.display()));
        seq(&policy["files"])
            .iter()
            .map(|f| {
                let rel = f.as_str().unwrap();
                let path = self.dir.join(rel);
                (path.file_name().unwrap().to_string_lossy().into_owned(), path)
            })
            .collect()
    }

    fn tier_file(&self) -> toml::Value {
        let path = &self.policy_files()[&format!("{}.toml", self.tier)];
        toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn gateway_file(&self) -> toml::Value {
        let path = &self.policy_files()["gateway.toml"];
        toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// IPv4 ranges of the tier's `upstream_allowlist`.
    fn upstream_ranges(&self) -> Vec<(u32, u32)> {
        self.tier_file()["upstream_allowlist"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| cidr(e.as_str()?))
            .collect()
    }
}

/// The objects of a kustomization directory and of the directories it names.
fn kustomize_resources(dir: &Path) -> Vec<Value> {
    let k = yaml(&dir.join("kustomization.yaml")).remove(0);
    let mut objects = Vec::new();
    for r in seq(&k["resources"]) {
        let path = dir.join(r.as_str().unwrap());
        if path.is_dir() {
            objects.extend(kustomize_resources(&path));
        } else {
            objects.extend(yaml(&path));
        }
    }
    objects
}

fn overlays() -> Vec<Overlay> {
    let root = deploy().join("k8s/overlays");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let tier = dir.file_name().unwrap().to_string_lossy().into_owned();
            let kustomization = yaml(&dir.join("kustomization.yaml")).remove(0);
            let namespace = str_of(&kustomization, "namespace")
                .unwrap_or_else(|| panic!("overlay {tier} sets no namespace"))
                .to_string();
            let prefix = str_of(&kustomization, "namePrefix").unwrap_or("").to_string();
            let mut objects = kustomize_resources(&dir);
            for o in &mut objects {
                if let Some(own) = o["metadata"]["namespace"].as_str() {
                    assert_eq!(
                        own,
                        namespace,
                        "overlay {tier}: {} {} names another namespace",
                        kind(o),
                        name(o)
                    );
                }
                // kustomize leaves a Namespace's own name alone.
                if kind(o) == "Namespace" {
                    continue;
                }
                let meta = o.get_mut("metadata").unwrap().as_mapping_mut().unwrap();
                let prefixed = format!("{prefix}{}", meta["name"].as_str().unwrap());
                meta.insert("name".into(), prefixed.into());
                meta.insert("namespace".into(), namespace.clone().into());
            }
            Overlay {
                tier,
                dir,
                namespace,
                prefix,
                objects,
                kustomization,
            }
        })
        .collect()
}

/// `a.b.c.d/n` as the first and last address of the range.
fn cidr(s: &str) -> Option<(u32, u32)> {
    let (ip, bits) = s.split_once('/')?;
    let ip = u32::from(ip.parse::<Ipv4Addr>().ok()?);
    let bits: u32 = bits.parse().ok()?;
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
    Some((ip & mask, (ip & mask) | !mask))
}

/// Whether an egress `ipBlock` lets traffic reach any address of `range`.
fn ip_block_reaches(block: &Value, range: (u32, u32)) -> bool {
    let (lo, hi) = cidr(str_of(block, "cidr").unwrap()).unwrap();
    let overlaps = lo <= range.1 && range.0 <= hi;
    let excepted = seq(&block["except"])
        .iter()
        .filter_map(|e| cidr(e.as_str()?))
        .any(|(elo, ehi)| elo <= range.0 && range.1 <= ehi);
    overlaps && !excepted
}

/// The pod templates' containers of a workload (Deployment, StatefulSet, DaemonSet, Job)
/// or a Pod; none for other kinds and for patches without containers.
fn containers(o: &Value) -> Vec<&Value> {
    let spec = if kind(o) == "Pod" {
        &o["spec"]
    } else {
        &o["spec"]["template"]["spec"]
    };
    seq(&spec["containers"]).iter().collect()
}

fn pod_spec(o: &Value) -> &Value {
    &o["spec"]["template"]["spec"]
}

/// If this broke, a manifest or the compose file would not even load: `kubectl apply`,
/// `kustomize build` or `docker compose up` would refuse it.
#[test]
fn every_yaml_file_under_deploy_parses() {
    let files = yaml_files(&deploy());
    assert!(
        files.len() >= 15,
        "expected the compose file, the IdP config and the k8s manifests, found {files:?}"
    );
    let broken: Vec<String> = files.iter().filter_map(|f| parse_yaml(f).err()).collect();
    assert!(broken.is_empty(), "YAML that does not parse:\n{}", broken.join("\n"));
    assert!(parse_yaml(Path::new("/dev/null")).unwrap().is_empty());
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "a: 1\n---\nb: [unclosed\n").unwrap();
    assert!(
        parse_yaml(bad.path()).is_err(),
        "a broken second document must be found"
    );
}

/// If this broke, two tiers would share a namespace, and with it their Secrets, their
/// Redis and every RBAC grant.
#[test]
fn each_tier_overlay_has_its_own_namespace() {
    let overlays = overlays();
    let tiers: Vec<&str> = overlays.iter().map(|o| o.tier.as_str()).collect();
    assert!(
        tiers.contains(&"prod") && tiers.contains(&"staging"),
        "overlays: {tiers:?}"
    );
    let namespaces: BTreeSet<&str> = overlays.iter().map(|o| o.namespace.as_str()).collect();
    assert_eq!(
        namespaces.len(),
        overlays.len(),
        "tiers share a namespace: {namespaces:?}"
    );
    let prefixes: BTreeSet<&str> = overlays.iter().map(|o| o.prefix.as_str()).collect();
    assert_eq!(prefixes.len(), overlays.len(), "tiers share a name prefix");
    for o in &overlays {
        assert_eq!(o.namespace, format!("portcullis-{}", o.tier));
        let ns = o.of_kind("Namespace");
        assert!(
            ns.iter().any(|n| name(n) == o.namespace),
            "overlay {} creates no Namespace {}",
            o.tier,
            o.namespace
        );
        // The policy in the namespace is the tier's own and nothing else.
        let tier_file = o.tier_file();
        assert_eq!(tier_file["name"].as_str(), Some(o.tier.as_str()));
        let files = o.policy_files();
        let tiers_in_files: Vec<&String> = files
            .keys()
            .filter(|f| overlays.iter().any(|other| **f == format!("{}.toml", other.tier)))
            .collect();
        assert_eq!(tiers_in_files, vec![&format!("{}.toml", o.tier)], "overlay {}", o.tier);
    }
}

/// If this broke, one tier's keys or Redis password would be another's: a leak in
/// staging would open production.
#[test]
fn no_secret_is_shared_between_tiers() {
    let overlays = overlays();
    let mut seen_ids: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut seen_values: BTreeMap<String, String> = BTreeMap::new();
    for o in &overlays {
        let secrets = o.of_kind("Secret");
        assert!(!secrets.is_empty(), "overlay {} defines no Secret", o.tier);
        let defined: BTreeSet<&str> = secrets.iter().map(|s| name(s)).collect();
        for s in &secrets {
            let id = (name(s).to_string(), o.namespace.clone());
            if let Some(other) = seen_ids.insert(id.clone(), o.tier.clone()) {
                panic!("Secret {id:?} is in tiers {other} and {}", o.tier);
            }
            for field in ["data", "stringData"] {
                for (_, v) in s[field].as_mapping().into_iter().flatten() {
                    let v = v.as_str().unwrap().to_string();
                    if let Some(other) = seen_values.insert(v.clone(), o.tier.clone()) {
                        assert_eq!(other, o.tier, "a value of Secret {} is also in tier {other}", name(s));
                    }
                }
            }
        }
        // Every Secret the pods use is this overlay's own.
        for d in o.of_kind("Deployment") {
            let mut used = Vec::new();
            for c in containers(d) {
                for e in seq(&c["env"]) {
                    if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                        used.push(n.to_string());
                    }
                }
            }
            for v in seq(&pod_spec(d)["volumes"]) {
                if let Some(n) = v["secret"]["secretName"].as_str() {
                    used.push(n.to_string());
                }
                for src in seq(&v["projected"]["sources"]) {
                    if let Some(n) = src["secret"]["name"].as_str() {
                        used.push(n.to_string());
                    }
                }
            }
            assert!(!used.is_empty(), "overlay {}: the pods use no Secret", o.tier);
            for n in used {
                assert!(
                    defined.contains(format!("{}{n}", o.prefix).as_str()) || defined.contains(n.as_str()),
                    "overlay {}: the pods use Secret {n}, which the overlay does not define",
                    o.tier
                );
            }
        }
    }
    // The policies connect as different Redis users to the tier's own Redis.
    let users: BTreeSet<String> = overlays
        .iter()
        .map(|o| o.tier_file()["redis_user"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(users.len(), overlays.len(), "tiers share a Redis user: {users:?}");
    for o in &overlays {
        let url = o.gateway_file()["store"]["url"].as_str().unwrap().to_string();
        assert!(
            url.contains(&format!(".{}.", o.namespace)),
            "overlay {}: store URL {url} is not the Redis of {}",
            o.tier,
            o.namespace
        );
    }
}

/// If this broke, a staging pod could open a connection to production's Redis or apps
/// (or anything could reach the gateways besides the ingress controller).
#[test]
fn each_tier_has_a_network_policy_that_keeps_other_tiers_out() {
    let overlays = overlays();
    for o in &overlays {
        let others: Vec<&Overlay> = overlays.iter().filter(|x| x.tier != o.tier).collect();
        let policies = o.of_kind("NetworkPolicy");
        let gateway_labels = &o.of_kind("Deployment")[0]["spec"]["template"]["metadata"]["labels"];
        let selects_gateway = |p: &&&Value| {
            let wanted = &p["spec"]["podSelector"]["matchLabels"];
            wanted
                .as_mapping()
                .is_none_or(|m| m.iter().all(|(k, v)| gateway_labels.get(k) == Some(v)))
        };
        let gateway_egress: Vec<&Value> = policies
            .iter()
            .filter(selects_gateway)
            .filter(|p| seq(&p["spec"]["policyTypes"]).iter().any(|t| t == "Egress"))
            .copied()
            .collect();
        assert!(
            gateway_egress
                .iter()
                .any(|p| p["spec"]["podSelector"]["matchLabels"].is_mapping()),
            "tier {}: no NetworkPolicy limits the gateways' egress",
            o.tier
        );
        for p in &policies {
            let ctx = format!("tier {} NetworkPolicy {}", o.tier, name(p));
            for rule in seq(&p["spec"]["egress"]) {
                let peers = seq(&rule["to"]);
                assert!(
                    !peers.is_empty(),
                    "{ctx}: an egress rule without `to` allows everything"
                );
                for peer in peers {
                    if let Some(ns) = peer.get("namespaceSelector") {
                        let label = ns["matchLabels"]["kubernetes.io/metadata.name"].as_str();
                        assert!(
                            label == Some(o.namespace.as_str()) || label == Some("kube-system"),
                            "{ctx}: egress to namespaces {ns:?} (only its own and kube-system's DNS)"
                        );
                        assert!(ns.get("matchExpressions").is_none(), "{ctx}: namespace expressions");
                    }
                    if let Some(block) = peer.get("ipBlock") {
                        for other in &others {
                            for range in other.upstream_ranges() {
                                assert!(
                                    !ip_block_reaches(block, range),
                                    "{ctx}: egress {block:?} reaches tier {}'s apps",
                                    other.tier
                                );
                            }
                        }
                    }
                }
            }
            for rule in seq(&p["spec"]["ingress"]) {
                let peers = seq(&rule["from"]);
                assert!(
                    !peers.is_empty(),
                    "{ctx}: an ingress rule without `from` admits everyone"
                );
                for peer in peers {
                    let label = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str();
                    assert!(
                        !others.iter().any(|x| label == Some(x.namespace.as_str())),
                        "{ctx}: admits another tier's namespace"
                    );
                    assert!(peer.get("ipBlock").is_none(), "{ctx}: ingress from addresses");
                }
            }
        }
        // The tier's own apps stay reachable.
        for range in o.upstream_ranges() {
            assert!(
                gateway_egress
                    .iter()
                    .flat_map(|p| seq(&p["spec"]["egress"]))
                    .flat_map(|r| seq(&r["to"]))
                    .filter_map(|peer| peer.get("ipBlock"))
                    .any(|b| ip_block_reaches(b, range)),
                "tier {}: its upstream range {range:?} is not reachable",
                o.tier
            );
        }
    }
    // The overlap test itself.
    let block: Value = serde_yaml_ng::from_str("cidr: 0.0.0.0/0\nexcept: [10.0.0.0/8]").unwrap();
    assert!(!ip_block_reaches(&block, cidr("10.20.0.0/16").unwrap()));
    assert!(ip_block_reaches(&block, cidr("192.168.1.0/24").unwrap()));
}

/// The admin listener's port of a policy's `gateway.toml`.
fn admin_port(gateway: &toml::Value) -> u16 {
    let addr: SocketAddr = gateway["listen"]["admin"].as_str().unwrap().parse().unwrap();
    addr.port()
}

/// If this broke, Kubernetes would restart healthy pods or send traffic to replicas that
/// lost Redis; or a container could run as root, write its image, grow without limit, or
/// a drain could take every replica at once.
#[test]
fn every_workload_probes_health_runs_as_non_root_with_limits() {
    let overlays = overlays();
    let mut checked = 0;
    for o in &overlays {
        let port = admin_port(&o.gateway_file());
        let deployments = o.of_kind("Deployment");
        assert!(!deployments.is_empty(), "tier {}: no Deployment", o.tier);
        for d in deployments {
            let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
            assert!(replicas >= 2, "tier {}: {replicas} replica(s)", o.tier);
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            let pdb = o.of_kind("PodDisruptionBudget").into_iter().find(|p| {
                p["spec"]["selector"]["matchLabels"]
                    .as_mapping()
                    .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
            });
            let pdb = pdb.unwrap_or_else(|| panic!("tier {}: no PodDisruptionBudget for {}", o.tier, name(d)));
            assert!(
                pdb["spec"]["minAvailable"]
                    .as_u64()
                    .is_some_and(|n| n >= 1 && n < replicas)
                    || pdb["spec"]["maxUnavailable"].as_u64() == Some(1),
                "tier {}: the PodDisruptionBudget protects nothing",
                o.tier
            );
            // The admin port of the containers is the policy's.
            for c in containers(d) {
                let admin = seq(&c["ports"]).iter().find(|p| str_of(p, "name") == Some("admin"));
                let admin = admin.unwrap_or_else(|| panic!("tier {}: no port named admin", o.tier));
                assert_eq!(
                    admin["containerPort"].as_u64(),
                    Some(u64::from(port)),
                    "tier {}",
                    o.tier
                );
            }
        }
    }
    // Every workload anywhere under deploy/ (base, overlays, patches with containers).
    for file in yaml_files(&deploy()) {
        for doc in yaml(&file) {
            let cs = containers(&doc);
            if cs.is_empty() {
                continue;
            }
            let ctx = format!("{} {}", file.display(), name(&doc));
            let pod = if kind(&doc) == "Pod" {
                &doc["spec"]
            } else {
                pod_spec(&doc)
            };
            for c in cs {
                checked += 1;
                let ctx = format!("{ctx} container {}", str_of(c, "name").unwrap_or("?"));
                for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                    let get = &c[probe]["httpGet"];
                    assert_eq!(get["path"].as_str(), Some(path), "{ctx}: {probe}");
                    let on_admin = get["port"].as_str() == Some("admin") || get["port"].as_u64() == Some(9090);
                    assert!(on_admin, "{ctx}: {probe} is not on the admin port: {:?}", get["port"]);
                }
                let non_root = |sc: &Value| sc["runAsNonRoot"].as_bool();
                assert!(
                    non_root(&c["securityContext"]).unwrap_or(false)
                        || (non_root(&pod["securityContext"]) == Some(true)
                            && non_root(&c["securityContext"]) != Some(false)),
                    "{ctx}: runAsNonRoot"
                );
                for sc in [&c["securityContext"], &pod["securityContext"]] {
                    assert_ne!(sc["runAsUser"].as_u64(), Some(0), "{ctx}: runs as root");
                }
                assert_eq!(
                    c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
                    Some(false),
                    "{ctx}: privilege escalation"
                );
                assert_eq!(
                    c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
                    Some(true),
                    "{ctx}: writable root filesystem"
                );
                for r in ["cpu", "memory"] {
                    assert!(!c["resources"]["limits"][r].is_null(), "{ctx}: no {r} limit");
                    assert!(!c["resources"]["requests"][r].is_null(), "{ctx}: no {r} request");
                }
                let args: Vec<String> = seq(&c["args"])
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect();
                assert_cli_accepts(&args, &ctx);
            }
        }
    }
    assert!(checked >= 1, "no container found under deploy/");
}

/// Asserts the binary has the subcommand and every `--flag` of an argument list.
fn assert_cli_accepts(args: &[String], ctx: &str) {
    let help = |args: &[&str]| {
        let out = Command::new(bin()).args(args).arg("--help").output().unwrap();
        assert!(out.status.success(), "portcullis {args:?} --help failed");
        String::from_utf8(out.stdout).unwrap()
    };
    let Some(sub) = args.first() else {
        panic!("{ctx}: no portcullis command");
    };
    let top = help(&[]);
    assert!(
        top.lines().any(|l| l.trim_start().starts_with(&format!("{sub} "))),
        "{ctx}: `portcullis {sub}` is no command:\n{top}"
    );
    let sub_help = help(&[sub]);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let flag = flag.split('=').next().unwrap();
        assert!(
            sub_help.contains(&format!("{flag} ")),
            "{ctx}: `portcullis {sub}` has no {flag}:\n{sub_help}"
        );
    }
}

/// Each overlay's policy files laid out as its pods see them (ConfigMap and Secret items
/// at their paths), with fresh keys at the Secret's paths.
fn overlay_policy_dir(o: &Overlay) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let patch = yaml(&o.dir.join("deployment-policy.yaml")).remove(0);
    let volumes = seq(&pod_spec(&patch)["volumes"]);
    let policy = volumes.iter().find(|v| str_of(v, "name") == Some("policy")).unwrap();
    let files = o.policy_files();
    let mut secret_paths = Vec::new();
    for src in seq(&policy["projected"]["sources"]) {
        for item in seq(&src["configMap"]["items"]) {
            let key = str_of(item, "key").unwrap();
            let to = dir.path().join(str_of(item, "path").unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let from = files
                .get(key)
                .unwrap_or_else(|| panic!("tier {}: item {key} is not in the ConfigMap", o.tier));
            std::fs::copy(from, to).unwrap();
        }
        for item in seq(&src["secret"]["items"]) {
            secret_paths.push(str_of(item, "path").unwrap().to_string());
        }
    }
    let out = Command::new(bin())
        .args(["keys", "init", "--tier", &o.tier, "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for p in secret_paths {
        assert!(
            dir.path().join(&p).is_file(),
            "tier {}: the Secret's item {p} is not where `keys init` puts the tier's keys",
            o.tier
        );
    }
    dir
}

/// If this broke, the pods of a tier would not start: a key of the policy files would be
/// unknown, a file the ConfigMap does not hold, or a secret at another path.
#[test]
fn the_tier_policies_pass_portcullis_check() {
    for o in overlays() {
        let dir = overlay_policy_dir(&o);
        let env_secrets: Vec<String> = o
            .of_kind("Deployment")
            .iter()
            .flat_map(|d| containers(d))
            .flat_map(|c| seq(&c["env"]))
            .filter(|e| !e["valueFrom"]["secretKeyRef"].is_null())
            .map(|e| str_of(e, "name").unwrap().to_string())
            .collect();
        let out = Command::new(bin())
            .args(["check", "--config"])
            .arg(dir.path())
            .envs(env_secrets.iter().map(|n| (n.as_str(), "a-test-value")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tier {}: portcullis check refused the overlay's policy:\n{}",
            o.tier,
            String::from_utf8_lossy(&out.stderr)
        );
        // Without the Secret's environment the same policy is refused: the check reads it.
        if !env_secrets.is_empty() {
            let out = Command::new(bin())
                .args(["check", "--config"])
                .arg(dir.path())
                .env_remove(&env_secrets[0])
                .output()
                .unwrap();
            assert!(
                !out.status.success(),
                "tier {}: check passed without {}",
                o.tier,
                env_secrets[0]
            );
        }
    }
}

/// The instructions of a Dockerfile, continuation lines joined, comments left out.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        joined.push(std::mem::take(&mut current));
    }
    joined
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (op, rest) = l.split_once(' ').unwrap_or((&l, ""));
            (op.to_uppercase(), rest.trim().to_string())
        })
        .collect()
}

fn json_args(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|_| panic!("not an exec-form (JSON) list: {s}"))
}

/// If this broke, the image would carry the toolchain and sources, run as root, or start
/// `portcullis` with a flag it does not have (the container would exit at once).
#[test]
fn the_dockerfile_builds_in_stages_and_runs_as_a_user() {
    let instructions = dockerfile();
    let froms: Vec<&String> = instructions
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert!(froms.len() >= 2, "not multi-stage: {froms:?}");
    assert!(
        froms[0].contains("rust"),
        "the build stage is not a Rust image: {}",
        froms[0]
    );
    let runtime = froms.last().unwrap();
    assert!(
        !runtime.contains("rust"),
        "the runtime image is the toolchain's: {runtime}"
    );
    let last_stage: Vec<&(String, String)> = instructions
        .iter()
        .skip_while(|i| !(i.0 == "FROM" && &i.1 == *runtime))
        .collect();
    let user = last_stage
        .iter()
        .filter(|(op, _)| op == "USER")
        .map(|(_, a)| a.as_str())
        .next_back()
        .expect("the runtime stage sets no USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|n| n != 0),
        "USER {user}: not a numeric non-root id"
    );
    let built = instructions
        .iter()
        .any(|(op, a)| op == "RUN" && a.contains("cargo build --release --locked"));
    assert!(built, "the build stage does not run cargo build --release --locked");
    let copies: Vec<&String> = last_stage
        .iter()
        .filter(|(op, _)| op == "COPY")
        .map(|(_, a)| a)
        .collect();
    assert!(
        copies.iter().all(|c| c.starts_with("--from=")),
        "the runtime stage copies from the build context: {copies:?}"
    );

    let entry = instructions
        .iter()
        .find(|(op, _)| op == "ENTRYPOINT")
        .expect("ENTRYPOINT");
    assert_eq!(json_args(&entry.1), vec!["portcullis"]);
    let cmd = instructions.iter().find(|(op, _)| op == "CMD").expect("CMD");
    assert_cli_accepts(&json_args(&cmd.1), "Dockerfile CMD");

    let exposed: BTreeSet<u16> = instructions
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, a)| {
            a.split_whitespace()
                .map(|p| p.parse::<u16>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    for o in overlays() {
        let gateway = o.gateway_file();
        let public: SocketAddr = gateway["listen"]["public"].as_str().unwrap().parse().unwrap();
        for port in [public.port(), admin_port(&gateway)] {
            assert!(
                exposed.contains(&port),
                "EXPOSE {exposed:?} lacks {port} of tier {}",
                o.tier
            );
        }
    }
}

fn compose() -> Value {
    yaml(&deploy().join("docker-compose.yml")).remove(0)
}

/// Bind mounts of a compose service: (source on the host, target in the container).
fn binds(service: &Value) -> Vec<(PathBuf, String)> {
    seq(&service["volumes"])
        .iter()
        .filter_map(|v| {
            let spec = v.as_str()?;
            let mut parts = spec.split(':');
            let source = parts.next()?;
            let target = parts.next()?;
            (source.starts_with('.') || source.starts_with('/')).then(|| (deploy().join(source), target.to_string()))
        })
        .collect()
}

/// If this broke, `docker compose up` would not start two replicas on one Redis with an
/// IdP and an app, or would mount a file that is not in the repo.
#[test]
fn the_compose_file_has_its_services_and_mounts_files_that_exist() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let by_name: BTreeMap<&str, &Value> = services.iter().map(|(k, v)| (k.as_str().unwrap(), v)).collect();
    let image = |s: &Value| str_of(s, "image").unwrap_or("").to_string();
    let args = |s: &Value, key: &str| -> Vec<String> {
        seq(&s[key]).iter().map(|a| a.as_str().unwrap().to_string()).collect()
    };
    let gateways: Vec<&&str> = by_name
        .iter()
        .filter(|(_, s)| args(s, "command").first().map(String::as_str) == Some("run"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(gateways.len(), 2, "gateway replicas: {gateways:?}");
    assert!(by_name.values().any(|s| image(s).starts_with("redis:")), "no Redis");
    assert!(by_name.contains_key("idp"), "no idp service");
    assert!(by_name.keys().any(|n| n.starts_with("upstream")), "no upstream service");

    let declared: BTreeSet<&str> = compose["volumes"]
        .as_mapping()
        .map(|m| m.keys().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (service_name, service) in &by_name {
        let ctx = format!("compose service {service_name}");
        if let Some(build) = service.get("build") {
            let context = deploy().join(str_of(build, "context").unwrap());
            assert!(
                context.join(str_of(build, "dockerfile").unwrap()).is_file(),
                "{ctx}: Dockerfile"
            );
            assert!(
                context.join("Cargo.toml").is_file(),
                "{ctx}: build context is not the repo"
            );
        }
        for (source, _) in binds(service) {
            assert!(
                source.exists(),
                "{ctx}: mounts {} which does not exist",
                source.display()
            );
        }
        for v in seq(&service["volumes"]) {
            let source = v.as_str().unwrap().split(':').next().unwrap();
            if !(source.starts_with('.') || source.starts_with('/')) {
                assert!(declared.contains(source), "{ctx}: undeclared volume {source}");
            }
        }
        // A file named by the command or entrypoint inside a bind mount is in the repo.
        for arg in args(service, "command").into_iter().chain(args(service, "entrypoint")) {
            for (source, target) in binds(service) {
                if let Some(rest) = arg.strip_prefix(&format!("{target}/")) {
                    assert!(
                        source.join(rest).is_file(),
                        "{ctx}: {arg} is not in {}",
                        source.display()
                    );
                }
            }
        }
        if gateways.contains(&service_name) {
            assert_cli_accepts(&args(service, "command"), &ctx);
            assert_eq!(image(service), "portcullis:local", "{ctx}");
        }
        for dep in service["depends_on"].as_mapping().into_iter().flat_map(|m| m.keys()) {
            assert!(
                by_name.contains_key(dep.as_str().unwrap()),
                "{ctx}: depends on a missing service"
            );
        }
    }

    // The policy's names are the compose network's: Redis, the apps, the IdP.
    let policies = deploy().join("compose/policies");
    let gateway: toml::Value =
        toml::from_str(&std::fs::read_to_string(policies.join("gateway.toml")).unwrap()).unwrap();
    let store = gateway["store"]["url"].as_str().unwrap();
    let redis_host = store.trim_start_matches("redis://").split(':').next().unwrap();
    assert!(by_name.contains_key(redis_host), "store {store} is no compose service");
    for entry in std::fs::read_dir(policies.join("tenants")).unwrap() {
        let tenant: toml::Value = toml::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        let upstream = tenant["upstream"].as_str().unwrap();
        let host = upstream.trim_start_matches("http://").split(':').next().unwrap();
        assert!(by_name.contains_key(host), "upstream {upstream} is no compose service");
        if let Some(issuer) = tenant.get("sso").and_then(|s| s["issuer"].as_str()) {
            let host = issuer.trim_start_matches("http://").split([':', '/']).next().unwrap();
            let aliases = seq(&by_name["idp"]["networks"]["default"]["aliases"]);
            assert!(
                aliases.iter().any(|a| a == host),
                "issuer {issuer}: the gateways cannot resolve {host}"
            );
        }
    }
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// Starts `redis-server` with `acl_file` on a free port in `dir`: (the server, its port).
///
/// A port picked as free can be taken by another test before the server binds it; that
/// server then exits, and the next of up to five attempts picks a fresh port. What counts
/// is this server's own log saying it is ready, not a PING another server could answer.
async fn redis_with_acl(acl_file: &Path, dir: &Path) -> (Child, u16) {
    for attempt in 0..5 {
        let port = free_port();
        let log = dir.join(format!("redis-{attempt}.log"));
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(dir)
            .arg("--aclfile")
            .arg(acl_file)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (apt-get install redis-server)");
        for _ in 0..400 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if said.contains("Ready to accept connections") {
                return (Child(child), port);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("redis-server did not come up on any of 5 free ports");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

fn run_init(policy: &Path, acl: &Path, tokens: &Path) {
    let out = Command::new("sh")
        .arg(deploy().join("compose/init.sh"))
        .env("POLICY_SOURCE", deploy().join("compose/policies"))
        .env("POLICY_DIR", policy)
        .env("REDIS_ACL_DIR", acl)
        .env("OPERATOR_TOKENS_DIR", tokens)
        .env("PORTCULLIS", bin())
        .env("PORTCULLIS_OWNER", "")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn redis_cli(port: u16, user: &str, password: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &port.to_string(),
            "--user",
            user,
            "--pass",
            password,
            "--no-auth-warning",
        ])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// If this broke, `docker compose up` would stop at its init step, or the gateways would
/// not get onto Redis with the tier users it made, or the operator token it printed would
/// not open the admin API, or a second `up` would replace the keys and log everyone out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_init_makes_a_policy_served_on_redis_with_a_user_per_tier() {
    let work = tempfile::tempdir().unwrap();
    let (policy, acl, tokens) = (
        work.path().join("policy"),
        work.path().join("acl"),
        work.path().join("tokens"),
    );
    run_init(&policy, &acl, &tokens);
    let secrets = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir.join("secrets"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect()
    };
    let first = secrets(&policy);
    assert!(first.contains_key("prod-cookie.key") && first.contains_key("redis-staging.password"));
    run_init(&policy, &acl, &tokens);
    assert_eq!(first, secrets(&policy), "a second run replaced the secrets");
    let acl_text = std::fs::read_to_string(acl.join("users.acl")).unwrap();
    for password in first.values() {
        let password = String::from_utf8_lossy(password);
        assert!(!acl_text.contains(password.trim()), "the ACL file holds a secret");
    }

    let redis_dir = tempfile::tempdir().unwrap();
    let (_redis, redis_port) = redis_with_acl(&acl.join("users.acl"), redis_dir.path()).await;
    let pinged = eventually(Duration::from_secs(5), || async {
        let out = Command::new("redis-cli")
            .args(["-p", &redis_port.to_string(), "PING"])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == "PONG").then_some(())
    })
    .await;
    assert!(pinged.is_some(), "redis-server did not start with the init's ACL file");

    let store = format!("redis://127.0.0.1:{redis_port}");
    let log = work.path().join("gateway.log");
    let _gateway = Child(
        Command::new(bin())
            .args(["run", "--config"])
            .arg(&policy)
            .args([
                "--store",
                &store,
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let admin: Option<SocketAddr> = eventually(Duration::from_secs(30), || async {
        logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == "listening")
            .and_then(|l| l["admin"].as_str()?.parse().ok())
    })
    .await;
    let admin = admin.unwrap_or_else(|| panic!("portcullis run did not start:\n{}", logs()));
    let client = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(10), || async {
        let r = client.get(format!("http://{admin}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "/readyz never answered 200:\n{}", logs());
    assert_eq!(
        client
            .get(format!("http://{admin}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    for (tier, operator) in [("prod", "olivia"), ("staging", "sofia")] {
        let token = std::fs::read_to_string(tokens.join(format!("{tier}-{operator}.token"))).unwrap();
        let r = client
            .get(format!("http://{admin}/v1/breakers"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the {tier} operator token the init made is refused");
    }

    // A user added as the README says lands under the tier's prefix, through its ACL user.
    let added = Command::new(bin())
        .args(["user", "add", "--config"])
        .arg(&policy)
        .args(["--store", &store, "--tenant", "acme", "--username", "alice"])
        .env("PORTCULLIS_NEW_PASSWORD", "a long demo password 7c1e")
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let password = |tier: &str| String::from_utf8(first[&format!("redis-{tier}.password")].clone()).unwrap();
    let prod_keys = redis_cli(
        redis_port,
        "portcullis-prod",
        &password("prod"),
        &["--scan", "--pattern", "portcullis:prod:*"],
    );
    assert!(!prod_keys.trim().is_empty(), "no prod keys after user add");
    let key = prod_keys.lines().next().unwrap();
    let cross = redis_cli(redis_port, "portcullis-staging", &password("staging"), &["TYPE", key]);
    assert!(
        cross.contains("NOPERM"),
        "staging's Redis user reads prod's {key}: {cross}"
    );
}
