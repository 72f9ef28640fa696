#![no_main]
// A body from an agent: the ambiguity check and the envelope parser answer, never panic.
libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let _ = tollgate_core::mcp::strict::check(body);
    if let Ok(tollgate_core::mcp::jsonrpc::Incoming::Single(env)) = tollgate_core::mcp::jsonrpc::parse(body)
        && env.method() == Some("tools/call")
    {
        let _ = tollgate_core::mcp::jsonrpc::tool_call_params(env.params);
    }
});
