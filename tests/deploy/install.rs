//! One test's install of a deploy/ overlay: rendered with `kubectl kustomize` through a small
//! kustomization of the test's own that moves it into the test's namespace and suffixes its
//! names, so that tests running at once share no cluster-scoped object (the CRDs excepted:
//! kustomize leaves their names alone, and every install applies the same ones).

use crate::support;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use serde::Deserialize;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The kinds an install may create outside its namespace besides the CRDs; removed again
/// when the [`Install`] is dropped.
const CLUSTER_SCOPED_RBAC: [&str; 2] = ["ClusterRole", "ClusterRoleBinding"];

pub struct Install {
    /// The rendered objects, in kustomize's order.
    pub objects: Vec<Value>,
    pub namespace: String,
    yaml: String,
    applied: bool,
}

impl Install {
    /// Renders `deploy/overlays/<overlay>` into `namespace`.
    pub fn render(overlay: &str, namespace: &str) -> Install {
        Self::render_with(overlay, &[], namespace)
    }

    /// Renders `deploy/overlays/<overlay>` with `deploy/components/<component>`s into
    /// `namespace`, as a user's own overlay would.
    pub fn render_with(overlay: &str, components: &[&str], namespace: &str) -> Install {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        // kustomize takes only relative paths to other kustomizations.
        let target = relative(dir.path(), &repo.join("deploy/overlays").join(overlay));
        let suffix = namespace.rsplit('-').next().unwrap();
        let mut kustomization = format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             namespace: \"{namespace}\"\nnameSuffix: \"-{suffix}\"\nresources:\n  - {}\n",
            target.display()
        );
        if !components.is_empty() {
            kustomization.push_str("components:\n");
            for c in components {
                let path = relative(dir.path(), &repo.join("deploy/components").join(c));
                kustomization.push_str(&format!("  - {}\n", path.display()));
            }
        }
        std::fs::write(dir.path().join("kustomization.yaml"), kustomization).unwrap();
        let yaml = run(
            Command::new(support::tools::kubectl())
                .args(["kustomize", dir.path().to_str().unwrap()]),
            None,
        )
        .unwrap_or_else(|message| panic!("{message}"));
        Install::parsed(yaml, namespace)
    }

    /// Renders the Helm chart with `helm template` into `namespace`, as the release
    /// `acs-identity-operator-<suffix>` (so its names are the ones [`Install::render`] gives),
    /// with the Lease named as deploy/ names it; `values` are more `helm template` arguments
    /// (`--set k=v`, `-f file`).
    pub fn chart(values: &[&str], namespace: &str) -> Install {
        let suffix = namespace.rsplit('-').next().unwrap();
        let release = format!("acs-identity-operator-{suffix}");
        let yaml = run(
            support::tools::helm_command()
                .args(["template", &release])
                .arg(support::tools::chart_dir())
                .args(["--namespace", namespace])
                .args(["--set", "leaderElection.leaseName=acs-identity-operator"])
                .args(values),
            None,
        )
        .unwrap_or_else(|message| panic!("{message}"));
        Install::parsed(yaml, namespace)
    }

    fn parsed(yaml: String, namespace: &str) -> Install {
        let objects = parse_all(&yaml);
        Install {
            objects,
            namespace: namespace.to_string(),
            yaml,
            applied: false,
        }
    }

    /// `kubectl apply --server-side --dry-run=server`: the server validates and admits every
    /// object and persists nothing.
    pub fn apply_dry_run(&self) -> String {
        kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--dry-run=server",
                "-f",
                "-",
            ],
            Some(&self.yaml),
        )
    }

    /// `kubectl apply --server-side`, as deploy/README.md tells users to install. Forcing
    /// conflicts only matters for the CRDs, which the operator tests' harness also applies,
    /// from the Rust types, as another field manager.
    pub fn apply(&mut self) -> String {
        self.applied = true;
        kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(&self.yaml),
        )
    }

    /// The objects of `kind`.
    pub fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The one object of `kind` whose name starts with `name` (before the suffix).
    pub fn one(&self, kind: &str, name: &str) -> &Value {
        let suffix = format!("-{}", self.namespace.rsplit('-').next().unwrap());
        let found: Vec<_> = self
            .all(kind)
            .into_iter()
            .filter(|o| {
                let n = o["metadata"]["name"].as_str().unwrap();
                n == name || n == format!("{name}{suffix}")
            })
            .collect();
        assert_eq!(found.len(), 1, "one {kind} {name} in the install");
        found[0]
    }

    pub fn deployment(&self) -> &Value {
        self.one("Deployment", "acs-identity-operator")
    }

    /// The operator's ServiceAccount name.
    pub fn service_account(&self) -> String {
        name_of(self.one("ServiceAccount", "acs-identity-operator")).to_string()
    }

    /// Reads every rendered object back from the server (admin client); panics naming the
    /// first one missing.
    pub async fn assert_all_exist(&self, client: &Client) {
        for obj in &self.objects {
            let found = fetch(client, obj).await;
            assert!(
                found.is_some(),
                "{} {} was not created",
                obj["kind"],
                name_of(obj)
            );
        }
    }
}

impl Drop for Install {
    /// Deletes the cluster-scoped RBAC objects it applied (the namespace and what is in it
    /// go with the test's `TestNamespace`; the CRDs are shared and stay).
    fn drop(&mut self) {
        if !self.applied {
            return;
        }
        let cluster_scoped: Vec<String> = self
            .objects
            .iter()
            .filter(|o| CLUSTER_SCOPED_RBAC.contains(&o["kind"].as_str().unwrap_or_default()))
            .map(|o| serde_yaml::to_string(o).unwrap())
            .collect();
        if cluster_scoped.is_empty() {
            return;
        }
        let result = run_kubectl(
            &["delete", "--ignore-not-found", "--wait=false", "-f", "-"],
            Some(&cluster_scoped.join("---\n")),
        );
        if let Err(message) = result {
            eprintln!("warning: cleaning up the install: {message}");
        }
    }
}

/// Every object of a multi-document YAML stream (empty documents left out).
pub fn parse_all(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().expect("metadata.name")
}

/// The object as the server has it, if it exists.
pub async fn fetch(client: &Client, obj: &Value) -> Option<DynamicObject> {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().unwrap());
    let (resource, capabilities) = pinned_kind(client, &gvk).await.unwrap();
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            obj["metadata"]["namespace"].as_str().unwrap(),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.get_opt(name_of(obj)).await.unwrap()
}

/// Runs kubectl against the test cluster, `stdin` fed to it; panics with its stderr if it
/// fails. Returns its stdout.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    run_kubectl(args, stdin).unwrap_or_else(|message| panic!("{message}"))
}

fn run_kubectl(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    run(
        Command::new(support::tools::kubectl())
            .args(args)
            .env("KUBECONFIG", support::kubeconfig_env()),
        stdin,
    )
}

pub fn run(command: &mut Command, stdin: Option<&str>) -> Result<String, String> {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {what}: {e}"))?;
    // Written from a thread while the output is read: a large input cannot deadlock on
    // full pipes.
    let mut input = child.stdin.take().unwrap();
    let data = stdin.unwrap_or_default().to_string();
    let writer = std::thread::spawn(move || input.write_all(data.as_bytes()));
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    writer
        .join()
        .unwrap()
        .map_err(|e| format!("writing to kubectl: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8(output.stdout).unwrap())
}

/// `to` relative to the directory `from`.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to) = (from.canonicalize().unwrap(), to.canonicalize().unwrap());
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut path = PathBuf::new();
    for _ in from.components().skip(common) {
        path.push("..");
    }
    for part in to.components().skip(common) {
        path.push(part);
    }
    path
}
