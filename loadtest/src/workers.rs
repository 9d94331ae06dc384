//! Worker processes for `conn` past one process's open-file limit. The
//! parent runs `herald loadtest conn` again per share of the connections
//! (its own arguments, with the share's count, rate and first index
//! overriding them), waits until every worker has connected, samples the
//! server, holds, tells the workers to count their open connections, and
//! merges what they report into one report.
//!
//! A worker says two lines on stdout: once connected, its figures (with
//! every handshake latency, so the merged percentiles are exact); then,
//! after a line on (or the end of) its stdin, its report with how many of
//! its connections are still open.

use crate::conn::{ConnArgs, Connected, Tally, report};
use crate::report::{Report, histogram};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// Descriptors a process keeps besides its sockets.
const SPARE_FILES: usize = 64;

/// Sockets one process may open under its open-file limit, if it has one.
pub(crate) fn sockets_per_process() -> Option<usize> {
    crate::proc::open_files_limit().map(|limit| (limit as usize).saturating_sub(SPARE_FILES).max(1))
}

/// The worker's side: reports `connected`, holds the connections until the
/// parent says, then reports how many are open.
pub(crate) async fn serve_as_worker(args: &ConnArgs, connected: Connected) -> anyhow::Result<Report> {
    let ready = json!({
        "connected": connected.held.len(),
        "failures": connected.failures,
        "first_error": connected.first_error,
        "connect_seconds": connected.connect_seconds,
        "handshakes_us": connected.handshakes_us,
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
    }
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await?;
    let open = connected.held.iter().filter(|client| client.is_open()).count();
    Ok(Report::new("conn", args, json!({ "open": open }), format!("conn worker: {open} open")))
}

/// The parent's side: `args.connections` over as many workers as it takes
/// at `per_process` sockets each.
pub(crate) fn run_conn(args: &ConnArgs, per_process: usize, limit: Duration) -> anyhow::Result<Report> {
    args.common.validate()?;
    let total = args.connections as usize;
    let count = total.div_ceil(per_process);
    let server_before = crate::proc::sample(&args.common.server_pid);
    let mut workers = Workers(Vec::with_capacity(count));
    let mut first = 0;
    for index in 0..count {
        let share = total / count + usize::from(index < total % count);
        workers.0.push(spawn(args, share, count, first)?);
        first += share;
    }
    let started = std::time::Instant::now();
    let mut tally = Tally {
        connected: 0,
        open: 0,
        failures: 0,
        first_error: None,
        connect_seconds: 0.0,
        handshakes: histogram(),
        workers: count,
    };
    for (_, stdout) in &mut workers.0 {
        let ready = read_line(stdout, "connected")?;
        tally.connected += ready["connected"].as_u64().unwrap_or(0);
        tally.failures += ready["failures"].as_u64().unwrap_or(0);
        if tally.first_error.is_none() {
            tally.first_error = ready["first_error"].as_str().map(str::to_owned);
        }
        tally.connect_seconds = tally.connect_seconds.max(ready["connect_seconds"].as_f64().unwrap_or(0.0));
        for us in ready["handshakes_us"].as_array().into_iter().flatten() {
            tally.handshakes.saturating_record(us.as_u64().unwrap_or(1));
        }
    }
    let server_connected = crate::proc::sample(&args.common.server_pid);
    std::thread::sleep(Duration::from_secs(args.hold));
    let server_after = crate::proc::sample(&args.common.server_pid);
    anyhow::ensure!(started.elapsed() < limit, "conn: overall deadline of {limit:?} passed");
    for (child, _) in &mut workers.0 {
        // The line, or our end of the pipe closing, releases the worker.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin);
        }
    }
    for (_, stdout) in &mut workers.0 {
        tally.open += read_line(stdout, "open")?["results"]["open"].as_u64().unwrap_or(0);
    }
    for (child, _) in &mut workers.0 {
        child.wait()?;
    }
    Ok(report(args, tally, [server_before, server_connected, server_after]))
}

/// The workers, killed if the parent gives up on them.
struct Workers(Vec<(Child, BufReader<ChildStdout>)>);

impl Drop for Workers {
    fn drop(&mut self) {
        for (child, _) in &mut self.0 {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Starts a worker for `share` connections from index `first`, with this
/// process's arguments (the later ones override the earlier).
fn spawn(
    args: &ConnArgs,
    share: usize,
    count: usize,
    first: usize,
) -> anyhow::Result<(Child, BufReader<ChildStdout>)> {
    let rate = (u64::from(args.rate) * share as u64 / u64::from(args.connections)).max(1);
    let parallel = (args.parallel as usize / count).max(1);
    let mut child = Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .args(["--connections", &share.to_string(), "--rate", &rate.to_string()])
        .args(["--parallel", &parallel.to_string(), "--worker-first", &first.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("a worker without stdout"))?;
    Ok((child, BufReader::new(stdout)))
}

/// Reads a worker's next line as JSON.
fn read_line(stdout: &mut BufReader<ChildStdout>, what: &str) -> anyhow::Result<Value> {
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    anyhow::ensure!(!line.is_empty(), "a conn worker ended before saying it was {what}");
    Ok(serde_json::from_str(&line)?)
}
