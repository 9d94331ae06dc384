//! Replays the corpora of the gateway's cargo-fuzz targets (`fuzz/corpus/`)
//! through the targets' checks: every input a fuzzing run kept, and the
//! seeds, run in every CI build without libFuzzer.

use std::fs;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut inputs = Vec::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("readable dir entry").path();
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        inputs.push((path.display().to_string(), data));
    }
    assert!(!inputs.is_empty(), "{} holds no inputs", dir.display());
    inputs
}

fn replay(target: &str, check: fn(&[u8])) {
    for (name, data) in corpus(target) {
        // Shown only when a check fails.
        println!("replaying {name}");
        check(&data);
        // Truncated inputs too: a stream cut anywhere.
        for cut in (0..data.len()).step_by(data.len() / 64 + 1) {
            check(&data[..cut]);
        }
    }
}

#[test]
fn the_session_corpus_replays_clean() {
    replay("session", herald_gateway::fuzz::fuzz_session);
}

#[test]
fn the_tag_expression_corpus_replays_clean() {
    replay("tag_expr", herald_gateway::fuzz::fuzz_tag_expr);
}

#[test]
fn the_push_json_corpus_replays_clean() {
    replay("push_json", herald_gateway::fuzz::fuzz_push_json);
}
