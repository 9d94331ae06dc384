//! A client of the operations listener: fetches its endpoints with Python's HTTP client and
//! parses `/metrics` with the Prometheus client library's parser (`py/scrape.py`).

use std::collections::HashMap;
use std::process::Command;

/// The address an operations listener announced in `log`.
pub(crate) fn ops_address(log: &str) -> String {
    let line =
        log.lines().find(|line| line.contains("serving operations endpoints")).expect("an operations line");
    let start = line.find("ops=").expect("ops= field") + 4;
    line[start..].split_whitespace().next().expect("address").to_owned()
}

/// Fetches `path`; returns the status and the body's lines (samples for `/metrics`).
pub(crate) fn fetch(address: &str, path: &str) -> (u16, Vec<String>) {
    let output = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/standalone/py/scrape.py"))
        .arg(format!("http://{address}{path}"))
        .output()
        .expect("run scrape.py (needs python3-prometheus-client)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "scrape.py failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let mut lines = stdout.lines().map(str::to_owned);
    let status = lines.next().and_then(|l| l.strip_prefix("status=")?.parse().ok()).expect("status line");
    (status, lines.collect())
}

/// Parses `sample NAME{LABELS} VALUE` lines.
pub(crate) fn samples(lines: &[String]) -> HashMap<String, f64> {
    lines
        .iter()
        .filter_map(|line| {
            let (name, value) = line.strip_prefix("sample ")?.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}
