//! Feeds arbitrary bytes to the MQTT decoder at both protocol versions.
//! `herald_mqtt::fuzz_decode` holds the checks, so the seed corpus replays
//! through them in an ordinary test (`tests/fuzz_corpus.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_mqtt::fuzz_decode(data);
});
