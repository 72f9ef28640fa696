//! Regexes compiled once, shared by CEL's `matches` and the native evaluator: patterns come from
//! policies and (through `matches` on arguments) from agents, so the cache and each program are
//! bounded.

use regex::Regex;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

/// Regexes seen by `matches`, compiled once. Bounded: patterns that come from arguments must not
/// grow memory without limit, so past the bound a pattern is compiled and dropped.
static REGEXES: LazyLock<RwLock<HashMap<String, Arc<Regex>>>> = LazyLock::new(Default::default);
const REGEX_CACHE_LIMIT: usize = 4096;
/// Compiled regex programs are bounded too, so a hostile pattern cannot take unbounded memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(crate) fn cached_regex(pattern: &str) -> Result<Arc<Regex>, regex::Error> {
    if let Ok(cache) = REGEXES.read()
        && let Some(re) = cache.get(pattern)
    {
        return Ok(Arc::clone(re));
    }
    let re = Arc::new(regex::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build()?);
    if let Ok(mut cache) = REGEXES.write()
        && cache.len() < REGEX_CACHE_LIMIT
    {
        cache.insert(pattern.to_owned(), Arc::clone(&re));
    }
    Ok(re)
}
