//! `kubectl-approve` where kubectl users find it: the release script's archive and krew manifest
//! installed by the real krew (built from its Go module), offline, and run through kubectl; the
//! committed `plugins/approve.yaml` kept in step with what the script writes; completions.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use tollgate_e2e::{binary, krew, repo_file};

/// `hack/release-plugin.sh --out DIR`, packaging this build's plugin: the manifest and archive.
fn release(dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let out = Command::new("bash")
        .arg(repo_file("hack/release-plugin.sh"))
        .args(["--out", dir.to_str().context("path")?])
        .env("TOLLGATE_PLUGIN_BINARY", binary("tollgate-cli", "kubectl-approve")?)
        .output()?;
    ensure!(out.status.success(), "release-plugin.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    let archive = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| p.to_string_lossy().ends_with("_linux_amd64.tar.gz"));
    Ok((dir.join("approve.yaml"), archive.context("no linux/amd64 archive")?))
}

fn krew_install(root: &Path, manifest: &Path, archive: &Path) -> Result<Output> {
    Ok(Command::new(krew()?)
        .args(["install", "--manifest", manifest.to_str().context("path")?, "--archive", archive.to_str().context("path")?])
        .env("KREW_ROOT", root)
        .env("KREW_OS", "linux")
        .env("KREW_ARCH", "amd64")
        .output()?)
}

#[test]
fn krew_installs_the_released_plugin_and_kubectl_runs_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (manifest, archive) = release(dir.path())?;
    let root = dir.path().join("krew");
    let out = krew_install(&root, &manifest, &archive)?;
    ensure!(out.status.success(), "krew refused the manifest: {}", String::from_utf8_lossy(&out.stderr));
    ensure!(String::from_utf8_lossy(&out.stderr).contains("kubectl approve ui"), "no caveats shown: {}", String::from_utf8_lossy(&out.stderr));

    // kubectl finds the plugin krew linked, and its help shows the browser.
    let path = std::env::join_paths(std::iter::once(root.join("bin")).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())))?;
    let help = Command::new("kubectl").args(["approve", "--help"]).env("PATH", &path).output()?;
    let text = String::from_utf8(help.stdout)?;
    ensure!(help.status.success() && text.contains("ui ") && text.contains("Decide in a browser"), "kubectl approve --help: {text}");
    let ui_help = String::from_utf8(Command::new("kubectl").args(["approve", "ui", "--help"]).env("PATH", &path).output()?.stdout)?;
    ensure!(ui_help.contains("--port") && ui_help.contains("--no-browser") && ui_help.contains("one-time secret"), "{ui_help}");
    let plugins = String::from_utf8(Command::new("kubectl").args(["plugin", "list", "--name-only"]).env("PATH", &path).output()?.stdout)?;
    ensure!(plugins.lines().any(|l| l.trim() == "kubectl-approve"), "kubectl plugin list: {plugins}");
    Ok(())
}

#[test]
fn krew_refuses_a_broken_manifest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (manifest, archive) = release(dir.path())?;
    let good = std::fs::read_to_string(&manifest)?;
    let sha = good.lines().find_map(|l| l.trim().strip_prefix("sha256: ")).context("no sha256")?.to_owned();
    for (broken, why) in [
        (good.replace(&sha, &"0".repeat(64)), "checksum"),
        (good.replace("  shortDescription:", "  shortDescriptionX:"), "short description"),
        (good.replace("    bin: kubectl-approve\n", ""), "bin"),
    ] {
        std::fs::write(&manifest, &broken)?;
        let root = dir.path().join(format!("krew-{}", why.replace(' ', "-")));
        let out = krew_install(&root, &manifest, &archive)?;
        ensure!(!out.status.success(), "krew installed a manifest with a broken {why}");
    }
    Ok(())
}

/// The committed manifest is the script's output for this version: only the checksums (of a
/// release build made elsewhere) may differ.
#[test]
fn the_committed_manifest_is_what_the_release_script_writes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (manifest, _) = release(dir.path())?;
    let strip = |s: &str| s.lines().filter(|l| !l.trim_start().starts_with("sha256:")).collect::<Vec<_>>().join("\n");
    let committed = std::fs::read_to_string(repo_file("plugins/approve.yaml"))?;
    ensure!(strip(&committed) == strip(&std::fs::read_to_string(&manifest)?), "plugins/approve.yaml is stale: run hack/release-plugin.sh");
    Ok(())
}

#[test]
fn completions_know_every_subcommand() -> Result<()> {
    let plugin = binary("tollgate-cli", "kubectl-approve")?;
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(&plugin).args(["completion", shell]).output()?;
        let script = String::from_utf8(out.stdout)?;
        ensure!(out.status.success(), "completion {shell}: {}", String::from_utf8_lossy(&out.stderr));
        for sub in ["list", "show", "deny", "watch", "ui"] {
            ensure!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    // bash can load what it printed.
    let out = Command::new("bash").arg("-c").arg(format!("source <({} completion bash) && complete -p kubectl-approve", plugin.display())).output()?;
    ensure!(out.status.success(), "bash could not load the completion: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn kubectl_complete(path: &std::ffi::OsStr, words: &[&str]) -> Result<Vec<String>> {
    let out = Command::new("kubectl").arg("__complete").arg("approve").args(words).env("PATH", path).output()?;
    ensure!(out.status.success(), "kubectl __complete: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.lines().map(str::to_owned).collect())
}

#[test]
fn kubectl_completes_the_plugins_words() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = tollgate_e2e::plugin_path_with_completion(dir.path())?;
    let subs = kubectl_complete(&path, &[""])?;
    ensure!(subs.iter().any(|l| l.starts_with("ui\tDecide in a browser")) && subs.iter().any(|l| l.starts_with("deny\t")), "{subs:?}");
    ensure!(subs.last().is_some_and(|l| l == ":4"), "no directive: {subs:?}");
    let flags = kubectl_complete(&path, &["ui", "--"])?;
    ensure!(flags.iter().any(|l| l.starts_with("--no-browser")) && flags.iter().any(|l| l.starts_with("--port")), "{flags:?}");
    let formats = kubectl_complete(&path, &["list", "-o", "y"])?;
    ensure!(formats.first().is_some_and(|l| l == "yaml"), "{formats:?}");
    Ok(())
}
