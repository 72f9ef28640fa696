use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tollgate_e2e::{ControlPlane, User};

const CRDS: [&str; 9] =
    ["mcpservers", "toolpolicies", "clustertoolpolicies", "approvalworkflows", "approvalrequests", "managedagents", "modelproviders", "budgets", "gateways"];

#[test]
fn control_plane_serves_tollgate_crds() -> Result<()> {
    let cp = ControlPlane::shared();

    let listed: serde_json::Value =
        serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", "crd", "-o", "json"])?).context("parsing `kubectl get crd -o json`")?;
    let established: BTreeMap<&str, bool> = listed["items"]
        .as_array()
        .context("CRD list has no items")?
        .iter()
        .filter_map(|crd| {
            let name = crd["metadata"]["name"].as_str()?;
            let ok = crd["status"]["conditions"].as_array().is_some_and(|conds| conds.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
            Some((name, ok))
        })
        .collect();
    for plural in CRDS {
        let name = format!("{plural}.tollgate.dev");
        assert_eq!(established.get(name.as_str()), Some(&true), "{name} not established: {established:?}");
    }

    let ns = cp.create_namespace("crds")?;
    let outsider = cp.kubectl(User::Outsider, ["get", "toolpolicies", "-n", &ns])?;
    let stderr = String::from_utf8_lossy(&outsider.stderr);
    assert!(!outsider.status.success(), "outsider listed toolpolicies in {ns}");
    assert!(stderr.contains("forbidden"), "outsider refused for another reason: {stderr}");

    cp.kubectl_ok(User::Admin, ["get", "toolpolicies", "-n", &ns])?;
    Ok(())
}
