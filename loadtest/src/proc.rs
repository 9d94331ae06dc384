//! Readings from `/proc`: a process's resident memory and CPU time, and
//! this process's open-file limit.

use serde_json::{Value, json};

/// Clock ticks per second of `/proc/PID/stat` times. Linux fixes USER_HZ at
/// 100 on every architecture it reports to user space with.
const TICKS_PER_SECOND: f64 = 100.0;

/// Returns the resident set size of process `pid` in bytes.
pub(crate) fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))?;
    let kib: u64 = line.split_whitespace().nth(1).unwrap_or("0").parse()?;
    Ok(kib * 1024)
}

/// Returns the CPU seconds (user + system) process `pid` has used.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))
}

/// Returns the CPU seconds this process has used.
pub(crate) fn own_cpu_seconds() -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Reads utime + stime (fields 14 and 15) from a `/proc/PID/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

/// Returns this process's soft limit on open files, if it has one.
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A server's CPU time and memory at one instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// CPU seconds used so far.
    pub(crate) cpu_seconds: f64,
    /// Resident memory, bytes.
    pub(crate) rss_bytes: u64,
}

impl Sample {
    /// Reads process `pid` now.
    pub(crate) fn take(pid: u32) -> anyhow::Result<Sample> {
        Ok(Sample { cpu_seconds: cpu_seconds(pid)?, rss_bytes: rss_bytes(pid)? })
    }
}

/// Returns the JSON report of what the server used between `before` and
/// `after`: CPU seconds, CPU microseconds per unit of `work` (as
/// `cpu_us_per_<unit>`, when there was any work) and RSS before and after.
/// `null` without both samples.
pub(crate) fn usage_json(before: Option<Sample>, after: Option<Sample>, work: u64, unit: &str) -> Value {
    let (Some(before), Some(after)) = (before, after) else {
        return Value::Null;
    };
    let cpu = (after.cpu_seconds - before.cpu_seconds).max(0.0);
    let mut usage = json!({
        "cpu_seconds": cpu,
        "rss_before": before.rss_bytes,
        "rss_after": after.rss_bytes,
    });
    usage[format!("cpu_us_per_{unit}")] = if work > 0 { json!(cpu * 1e6 / work as f64) } else { Value::Null };
    usage
}

/// Reads the processes `pids` (summed) if any are given; a process that
/// vanished makes the reading `None`.
pub(crate) fn sample(pids: &[u32]) -> Option<Sample> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold(Sample { cpu_seconds: 0.0, rss_bytes: 0 }, |sum, pid| {
        let one = Sample::take(*pid).ok()?;
        Some(Sample {
            cpu_seconds: sum.cpu_seconds + one.cpu_seconds,
            rss_bytes: sum.rss_bytes + one.rss_bytes,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_fields_are_counted_from_the_command_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }

    #[test]
    fn usage_is_per_unit_of_work() {
        let before = Sample { cpu_seconds: 1.0, rss_bytes: 100 };
        let after = Sample { cpu_seconds: 3.0, rss_bytes: 300 };
        let usage = usage_json(Some(before), Some(after), 4, "delivery");
        assert_eq!(usage["cpu_seconds"], 2.0);
        assert_eq!(usage["cpu_us_per_delivery"], 500_000.0);
        assert_eq!(usage["rss_after"], 300);
        assert!(usage_json(Some(before), Some(after), 0, "delivery")["cpu_us_per_delivery"].is_null());
        assert!(usage_json(None, Some(after), 4, "delivery").is_null());
    }

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).expect("rss") > 0);
        assert!(cpu_seconds(pid).expect("cpu") >= 0.0);
        assert!(own_cpu_seconds().is_some());
        assert!(open_files_limit().is_some_and(|limit| limit > 0));
    }
}
