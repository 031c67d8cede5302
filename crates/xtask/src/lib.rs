//! Every file of the repository that is a copy of another source, and how it is made.
//!
//! Kustomize and Helm read no file outside their own directory and Argo CD wants one script
//! per kind, so some things must be committed more than once. Each such file is generated here
//! from its one source: `cargo xtask generate` writes them all, and the `drift` test (part of
//! `cargo test`) fails when a committed copy differs from what would be generated.

use std::path::{Path, PathBuf};

/// One generated file: where it goes, what it is made from, and its contents.
pub struct Generated {
    /// Relative to the repository root.
    pub path: &'static str,
    /// The source, as a reader would look for it.
    pub source: &'static str,
    pub contents: String,
}

/// The repository root (this crate lives in `crates/xtask`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const ALERTS: &str = "deploy/monitoring/alerts.rules.yaml";
const DASHBOARD: &str = "deploy/monitoring/dashboard.json";
const ARGOCD: &str = "deploy/argocd/resource_customizations/acsoperator.io";
const HEALTH: &str = "deploy/argocd/resource_customizations/acsoperator.io/AcsIdentity/health.lua";
const DISCOVERY: &str =
    "deploy/argocd/resource_customizations/acsoperator.io/AcsIdentity/actions/discovery.lua";
const REFRESH: &str =
    "deploy/argocd/resource_customizations/acsoperator.io/AcsIdentity/actions/refresh/action.lua";

/// Every generated file, made from the sources under `root`.
pub fn generated(root: &Path) -> Result<Vec<Generated>, String> {
    let read =
        |path: &str| std::fs::read_to_string(root.join(path)).map_err(|e| format!("{path}: {e}"));
    let crds = acs_identity_operator::api::crds_yaml();
    let alerts = read(ALERTS)?;
    let dashboard = read(DASHBOARD)?;
    let health = read(HEALTH)?;
    let mut out = vec![];
    for path in [
        "crds/acsoperator.io.yaml",
        "deploy/base/crds.yaml",
        "charts/acs-identity-operator/files/crds.yaml",
    ] {
        out.push(Generated {
            path,
            source: "the Rust types (src/api/)",
            contents: crds.clone(),
        });
    }
    out.push(Generated {
        path: "charts/acs-identity-operator/files/alerts.rules.yaml",
        source: ALERTS,
        contents: alerts.clone(),
    });
    out.push(Generated {
        path: "deploy/monitoring/prometheusrule.yaml",
        source: ALERTS,
        contents: prometheus_rule(&alerts)?,
    });
    out.push(Generated {
        path: "charts/acs-identity-operator/files/dashboard.json",
        source: DASHBOARD,
        contents: dashboard,
    });
    // Argo CD looks a script up by group and kind: the three kinds' conditions mean the same.
    for path in [
        "deploy/argocd/resource_customizations/acsoperator.io/AcsConnection/health.lua",
        "deploy/argocd/resource_customizations/acsoperator.io/ClusterAcsConnection/health.lua",
    ] {
        out.push(Generated {
            path,
            source: HEALTH,
            contents: health.clone(),
        });
    }
    out.push(Generated {
        path: "deploy/argocd/argocd-cm.yaml",
        source: ARGOCD,
        contents: argocd_cm(&health, &read(DISCOVERY)?, &read(REFRESH)?),
    });
    Ok(out)
}

/// The rule file's groups as a Prometheus Operator PrometheusRule: the file is indented under
/// `spec`, comments and all, so the two read the same.
fn prometheus_rule(alerts: &str) -> Result<String, String> {
    let body = alerts
        .lines()
        .skip_while(|line| line.starts_with('#'))
        .collect::<Vec<_>>();
    if body.first().is_none_or(|line| !line.starts_with("groups:")) {
        return Err(format!(
            "{ALERTS}: expected `groups:` after the leading comments"
        ));
    }
    let mut out = String::from(
        "# Generated from alerts.rules.yaml by `cargo xtask generate`: edit that file, not this one.\n\
         # Its groups as a Prometheus Operator PrometheusRule. Label it for your Prometheus's\n\
         # ruleSelector if it has one.\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  name: acs-identity-operator\n  namespace: acs-identity-operator\n  labels:\n    app.kubernetes.io/name: acs-identity-operator\n\
         spec:\n",
    );
    out.push_str(&indent(&body.join("\n"), 2));
    out.push('\n');
    Ok(out)
}

/// The `argocd-cm` entries that install the scripts: one health script for the three kinds
/// (a YAML anchor), and the refresh action of AcsIdentity.
fn argocd_cm(health: &str, discovery: &str, refresh: &str) -> String {
    format!(
        "# Generated from {ARGOCD}/ by `cargo xtask generate`: edit the scripts there.\n\
         # Merge these entries into Argo CD's argocd-cm ConfigMap, e.g.\n\
         #   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file deploy/argocd/argocd-cm.yaml\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  name: argocd-cm\n  namespace: argocd\n  labels: {{app.kubernetes.io/part-of: argocd}}\n\
         data:\n  resource.customizations.health.acsoperator.io_AcsIdentity: &acs-health |\n{}\n\
         \x20 resource.customizations.health.acsoperator.io_AcsConnection: *acs-health\n\
         \x20 resource.customizations.health.acsoperator.io_ClusterAcsConnection: *acs-health\n\
         \x20 resource.customizations.actions.acsoperator.io_AcsIdentity: |\n\
         \x20   discovery.lua: |\n{}\n\
         \x20   definitions:\n\
         \x20   - name: refresh\n\
         \x20     action.lua: |\n{}\n",
        indent(health.trim_end(), 4),
        indent(discovery.trim_end(), 6),
        indent(refresh.trim_end(), 8),
    )
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("{}{line}", " ".repeat(by))
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The generated files whose committed contents differ (or that are missing).
pub fn stale(root: &Path) -> Result<Vec<&'static str>, String> {
    Ok(generated(root)?
        .into_iter()
        .filter(|g| std::fs::read_to_string(root.join(g.path)).ok() != Some(g.contents.clone()))
        .map(|g| g.path)
        .collect())
}

/// Writes every generated file; returns the ones that changed.
pub fn write(root: &Path) -> Result<Vec<&'static str>, String> {
    let stale = stale(root)?;
    for g in generated(root)? {
        if stale.contains(&g.path) {
            let path = root.join(g.path);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::write(&path, g.contents).map_err(|e| format!("{}: {e}", g.path))?;
        }
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prometheus_rule_is_the_rule_file_under_spec() {
        let rule = prometheus_rule("# a\n# b\ngroups:\n  - name: x\n\n    # c\n").unwrap();
        assert!(
            rule.ends_with("spec:\n  groups:\n    - name: x\n\n      # c\n"),
            "{rule}"
        );
        assert!(prometheus_rule("# only comments\n").is_err());
    }

    #[test]
    fn blank_lines_stay_blank_when_indented() {
        assert_eq!(indent("a\n\n b", 2), "  a\n\n   b");
    }
}
