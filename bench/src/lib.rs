//! Shared measurement helpers for the benchmarks.

pub mod litellm;
pub mod load;

use std::time::Instant;

/// Nanosecond samples of `f`, taken in `rounds` interleaved with the other measured paths by the
/// caller, so drift in machine load touches every path alike.
pub fn sample(iterations: usize, mut f: impl FnMut()) -> Vec<u64> {
    let mut out = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        f();
        out.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    out
}

/// The q-quantile (0..=1) of the samples, in microseconds.
pub fn quantile_us(samples: &mut [u64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let max_index = samples.len() - 1;
    let idx = ((max_index as f64) * q).round() as usize;
    samples[idx.min(max_index)] as f64 / 1000.0
}

/// Targets missed so far in this process (issue 18: a bench exits non-zero when a figure passes
/// its target, so whoever runs it sees the regression).
static MISSED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// One target: `what` measured `value`, at most `limit` allowed. Returns the line to print;
/// a miss is remembered for [`finish`].
pub fn target(what: &str, value: f64, limit: f64, unit: &str) -> String {
    let met = value <= limit;
    if !met {
        MISSED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(format!("{what}: {value:.2}{unit} > {limit}{unit}"));
    }
    format!("target: {what} ≤ {limit}{unit}: {value:.2}{unit} → {}", if met { "met" } else { "MISSED" })
}

/// The bench's end: an error naming every missed target, so the process exits non-zero.
pub fn finish() -> anyhow::Result<()> {
    let missed = std::mem::take(&mut *MISSED.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    anyhow::ensure!(missed.is_empty(), "{} target(s) missed:\n  {}", missed.len(), missed.join("\n  "));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missed_target_fails_the_bench() {
        assert!(super::target("a", 1.0, 2.0, "×").ends_with("met"));
        assert!(super::finish().is_ok());
        assert!(super::target("b", 3.0, 2.0, "×").ends_with("MISSED"));
        let err = super::finish().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("b: 3.00× > 2×"), "{err}");
        assert!(super::finish().is_ok(), "reported once");
    }
}
