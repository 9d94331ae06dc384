//! Matching a published topic against a subscription index of one million
//! filters: the router's and each gateway's per-message lookup.
//!
//! The index holds a push platform's typical mix: one exact per-device
//! filter per device (`devices/{id}/inbox`), per-device wildcards
//! (`devices/{id}/+`), and group filters with `#` (`groups/{g}/#`).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use herald_core::TopicTree;
use std::hint::black_box;

const FILTERS: usize = 1_000_000;

fn index() -> TopicTree<u32, ()> {
    let mut tree = TopicTree::new();
    for i in 0..FILTERS as u32 {
        let filter = match i % 4 {
            0 | 1 => format!("devices/{}/inbox", i / 2),
            2 => format!("devices/{}/+", i / 4),
            _ => format!("groups/{}/#", i % 1000),
        };
        tree.insert(&filter, i, ());
    }
    tree
}

fn matching(c: &mut Criterion) {
    let tree = index();
    assert!(tree.len() >= FILTERS / 2);
    let mut group = c.benchmark_group("topic_tree_1m_filters");
    for topic in ["devices/4242/inbox", "groups/19/news/today", "nobody/listens/here"] {
        group.bench_with_input(BenchmarkId::new("for_each_match", topic), topic, |b, topic| {
            b.iter(|| {
                let mut hits = 0u32;
                tree.for_each_match(black_box(topic), |key, ()| {
                    black_box(key);
                    hits += 1;
                });
                hits
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);
