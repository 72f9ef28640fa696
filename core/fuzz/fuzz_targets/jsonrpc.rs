#![no_main]
// A body from an agent: the ambiguity check and the envelope parser answer, never panic.
libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let _ = tollgate_core::strict::check(body);
    if let Ok(tollgate_core::jsonrpc::Incoming::Single(env)) = tollgate_core::jsonrpc::parse(body)
        && env.method() == Some("tools/call")
    {
        let _ = tollgate_core::jsonrpc::tool_call_params(env.params);
    }
});
