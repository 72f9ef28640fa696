//! LiteLLM's proxy, the gateway most users would otherwise put in front of their models, started
//! for a comparison: the version `e2e/scripts/install-litellm.sh` pins, without a database (its
//! lightest form: no spend tracking, no budgets), on the CPU the gateway runs on, forwarding to
//! the same mock provider. Its defaults otherwise, as `litellm --config` starts it.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use tollgate_e2e::{Process, free_ports, random_hex};

/// Where the pinned install is: `TOLLGATE_LITELLM` (set by `hack/bench.sh`), or `None`.
pub fn installed() -> Option<PathBuf> {
    std::env::var_os("TOLLGATE_LITELLM").map(PathBuf::from).filter(|d| d.join("venv/bin/litellm").is_file())
}

pub struct LiteLlm {
    pub process: Process,
    /// Its chat completions URL.
    pub url: String,
    /// The `authorization` header its calls carry (a master key: LiteLLM refuses to start
    /// without one).
    pub authorization: String,
    pub version: String,
}

/// LiteLLM serving `gpt-4o-mini` from the OpenAI-style provider at `provider`, on CPU 1; its
/// files in `work`. Ready when this returns.
pub fn start(install: &Path, provider: &str, work: &Path) -> Result<LiteLlm> {
    let python = install.join("venv/bin/python");
    let version = Command::new(&python).args(["-c", "import importlib.metadata as m; print(m.version('litellm'))"]).output().context("LiteLLM's version")?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let config = work.join("litellm.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: {provider}/v1\n      api_key: sk-bench\nlitellm_settings:\n  telemetry: false\n"
        ),
    )?;
    let key = format!("sk-{}", random_hex(24)?);
    let [port] = free_ports::<1>()?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"])
        .arg(install.join("venv/bin/litellm"))
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env("LITELLM_MASTER_KEY", &key)
        // The model cost map from the package, not fetched from GitHub at start.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True");
    let process = Process::spawn(cmd, work.join("litellm.log"))?;
    process.wait_http_ok("LiteLLM", port, "/health/liveliness")?;
    Ok(LiteLlm { process, url: format!("http://127.0.0.1:{port}/v1/chat/completions"), authorization: format!("Bearer {key}"), version })
}
