//! Drives a session with arbitrary packets; `herald_gateway::fuzz::fuzz_session` holds the checks.
//! The corpus replays through the same checks in an ordinary test
//! (`gateway/tests/fuzz_corpus.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_gateway::fuzz::fuzz_session(data);
});
