//! Writes `crds/<plural>.yaml` and the chart's copies from the Rust types.
//! `--check` exits non-zero when the committed files are stale instead of writing them.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

fn main() -> Result<()> {
    let check = std::env::args().any(|a| a == "--check");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dirs = [root.join("crds"), root.join("charts/tollgate/crds")];
    let mut stale = Vec::new();
    for (plural, crd) in tollgate_api::all_crds() {
        let yaml = tollgate_api::crd_yaml(&crd)?;
        for dir in &dirs {
            let path = dir.join(format!("{plural}.yaml"));
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == yaml {
                continue;
            }
            if check {
                stale.push(path.display().to_string());
            } else {
                std::fs::create_dir_all(dir)?;
                std::fs::write(&path, &yaml).with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        bail!("stale CRD YAML (run `cargo run -p tollgate-api --bin crdgen`): {}", stale.join(", "));
    }
    Ok(())
}
