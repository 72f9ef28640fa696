#![no_main]
// A server's event stream in arbitrary chunks: events or an error, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut p = tollgate_core::mcp::sse::Parser::default();
    for chunk in data.chunks(7) {
        if p.push_bytes(chunk).is_err() {
            return;
        }
    }
});
