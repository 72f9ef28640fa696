//! Shared measurement helpers for the benchmarks.

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
