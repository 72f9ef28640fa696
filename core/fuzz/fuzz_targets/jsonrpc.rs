#![no_main]
// A body from an agent: the one reading (the ambiguity check) and the envelope parser answer,
// never panic; `core/tests/one_reading.rs` holds the two to the same answer.
libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    if let Ok(checked) = tollgate_core::mcp::strict::read(body)
        && let Some(message) = checked.message
        && message.call.params.is_none()
    {
        let _ = tollgate_core::mcp::jsonrpc::tool_call_params(message.envelope.params);
    }
    if let Ok(tollgate_core::mcp::jsonrpc::Incoming::Single(env)) = tollgate_core::mcp::jsonrpc::parse(body)
        && env.method() == Some("tools/call")
    {
        let _ = tollgate_core::mcp::jsonrpc::tool_call_params(env.params);
    }
});
