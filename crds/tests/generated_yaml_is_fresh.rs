//! The committed CRD YAML (under `crds/` and the chart) must be what the Rust types generate.

use std::path::PathBuf;

#[test]
fn committed_crds_match_the_types() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stale = Vec::new();
    let crds = tollgate_api::all_crds();
    assert_eq!(crds.len(), 9, "every kind of DESIGN §2 has a CRD");
    for (plural, crd) in crds {
        let want = tollgate_api::crd_yaml(&crd)?;
        for dir in ["crds", "charts/tollgate/crds"] {
            let path = root.join(dir).join(format!("{plural}.yaml"));
            if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
                stale.push(format!("{dir}/{plural}.yaml"));
            }
        }
    }
    assert!(stale.is_empty(), "stale generated CRDs: {stale:?}; run `cargo run -p tollgate-api --bin crdgen`");
    Ok(())
}

#[test]
fn every_kind_has_status_category_and_short_name() {
    for (plural, crd) in tollgate_api::all_crds() {
        assert_eq!(crd.spec.group, "tollgate.dev");
        assert!(crd.spec.names.categories.as_deref().unwrap_or_default().contains(&"tollgate".to_string()), "{plural}");
        assert!(!crd.spec.names.short_names.as_deref().unwrap_or_default().is_empty(), "{plural}");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{plural}: status subresource");
        let schema = serde_json::to_value(&version.schema).unwrap_or_default();
        let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert!(status.get("observedGeneration").is_some(), "{plural}: observedGeneration");
        assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map", "{plural}: conditions list-map");
        assert_eq!(status["conditions"]["x-kubernetes-list-map-keys"], serde_json::json!(["type"]), "{plural}");
        let columns = version.additional_printer_columns.as_deref().unwrap_or_default();
        assert!(columns.iter().any(|c| c.name == "Age"), "{plural}: printer columns");
    }
}
