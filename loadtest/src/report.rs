//! What a scenario hands back: one JSON object (scenario name, parameters,
//! results) and a one-paragraph summary; and the latency histograms the
//! results are read from.

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::{Mutex, MutexGuard};

/// The outcome of one scenario run.
#[derive(Debug, Clone)]
pub struct Report {
    /// `{"scenario": …, "params": {…}, "results": {…}}`, printed as one line.
    pub json: Value,
    /// A summary for people, printed on stderr.
    pub summary: String,
}

impl Report {
    /// Returns the report of scenario `name`, run with `params`.
    pub(crate) fn new(name: &str, params: &impl Serialize, results: Value, summary: String) -> Report {
        let params = serde_json::to_value(params).unwrap_or(Value::Null);
        Report { json: json!({ "scenario": name, "params": params, "results": results }), summary }
    }
}

/// Returns the report in `line` if it is one (a JSON object with a
/// `scenario` key), for scripts and tests that read `herald loadtest`'s
/// output.
pub fn parse_report_line(line: &str) -> Option<Value> {
    let value: Value = serde_json::from_str(line.trim()).ok()?;
    value.get("scenario")?;
    Some(value)
}

/// Returns a histogram of microseconds from 1 µs to 10 minutes at three
/// significant figures.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

/// Returns the percentiles of `histogram` as JSON, or `null` when it is
/// empty.
pub(crate) fn latency_json(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return Value::Null;
    }
    json!({
        "count": histogram.len(),
        "p50": histogram.value_at_quantile(0.50),
        "p99": histogram.value_at_quantile(0.99),
        "p999": histogram.value_at_quantile(0.999),
        "max": histogram.max(),
        "mean": histogram.mean(),
    })
}

/// Returns `p50/p99/p99.9/max` of `histogram` in µs, for summaries.
pub(crate) fn latency_text(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "n/a".into();
    }
    format!(
        "p50 {} / p99 {} / p99.9 {} / max {} µs",
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max()
    )
}

/// Histograms shared by many tasks, split in shards so that tasks on
/// different threads rarely meet on one lock. A task locks its shard once
/// per batch of packets, never across an `.await`.
#[derive(Debug)]
pub(crate) struct Shards {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Shards {
    /// Returns `count` empty shards (at least one).
    pub(crate) fn new(count: usize) -> Shards {
        Shards { shards: (0..count.max(1)).map(|_| Mutex::new(histogram())).collect() }
    }

    /// Locks the shard of task `index`.
    pub(crate) fn lock(&self, index: usize) -> MutexGuard<'_, Histogram<u64>> {
        self.shards[index % self.shards.len()].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns every shard added into one histogram.
    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut merged = histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            merged.add(&*shard).expect("same bounds");
        }
        merged
    }
}

/// Returns the fields of every object in `parts` in one object.
pub(crate) fn merge(parts: impl IntoIterator<Item = Value>) -> Value {
    let mut merged = serde_json::Map::new();
    for part in parts {
        if let Value::Object(fields) = part {
            merged.extend(fields);
        }
    }
    Value::Object(merged)
}

/// Returns `count / seconds`, or 0 when no time passed.
pub(crate) fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_line_round_trips() {
        let report = Report::new("p2p", &json!({"qos": 1}), json!({"losses": 0}), String::new());
        let parsed = parse_report_line(&report.json.to_string()).expect("a report");
        assert_eq!(parsed["scenario"], "p2p");
        assert_eq!(parsed["params"]["qos"], 1);
        assert_eq!(parsed["results"]["losses"], 0);
        assert!(parse_report_line("conn: 3/3 connected").is_none());
        assert!(parse_report_line("{\"other\": 1}").is_none());
    }

    #[test]
    fn shards_merge_and_empty_histograms_are_null() {
        let shards = Shards::new(3);
        assert_eq!(latency_json(&shards.merged()), Value::Null);
        for index in 0..6 {
            shards.lock(index).record(100 * (index as u64 + 1)).expect("in range");
        }
        let merged = shards.merged();
        assert_eq!(merged.len(), 6);
        assert_eq!(latency_json(&merged)["max"], merged.max());
        assert_eq!(per_second(10, 2.0), 5.0);
        assert_eq!(per_second(10, 0.0), 0.0);
        assert_eq!(merge([json!({"a": 1}), json!({"b": 2}), Value::Null]), json!({"a": 1, "b": 2}));
    }
}
