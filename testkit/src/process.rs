//! Child processes for tests: started with captured output, waited on with
//! deadlines, and always stopped on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A running child whose stderr (and optionally stdout) lines are collected
/// by background threads, so its pipes never fill.
pub struct Supervised {
    name: String,
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    new_line: mpsc::Receiver<String>,
    /// Output streams read to their end, out of `streams`.
    drained: Arc<std::sync::atomic::AtomicUsize>,
    streams: usize,
}

impl Supervised {
    /// Starts `command` with piped output. `name` labels failures.
    pub fn start(name: &str, mut command: Command) -> std::io::Result<Supervised> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let drained = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let streams: Vec<_> = [child.stdout.take().map(read_box), child.stderr.take().map(read_box)]
            .into_iter()
            .flatten()
            .collect();
        let count = streams.len();
        for stream in streams {
            let lines = lines.clone();
            let tx = tx.clone();
            let drained = drained.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line.clone());
                    let _ = tx.send(line);
                }
                drained.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        Ok(Supervised {
            name: name.to_string(),
            child: Some(child),
            lines,
            new_line: rx,
            drained,
            streams: count,
        })
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits up to `timeout` for an output line containing `needle`, and
    /// returns it. Panics with the output so far when it does not appear.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        if let Some(line) = self.output().into_iter().find(|l| l.contains(needle)) {
            return line;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.new_line.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no line containing {needle:?} within {timeout:?}; output:\n{}",
                    self.name,
                    self.output().join("\n")
                ),
            }
        }
    }

    /// Returns every output line so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends `signal` (a `kill` signal name such as `TERM`, `KILL`, `STOP`).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status();
    }

    /// Waits up to `timeout` for the process to exit; returns its status, or
    /// `None` if it is still running. Once it has exited, its last output
    /// lines are in [`Supervised::output`] (the readers are given up to a
    /// second to reach the end of its pipes).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let read_by = Instant::now() + Duration::from_secs(1);
                while self.drained.load(std::sync::atomic::Ordering::SeqCst) < self.streams
                    && Instant::now() < read_by
                {
                    thread::sleep(Duration::from_millis(5));
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL after `grace`. Returns the
    /// exit status if it exited on SIGTERM.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal("TERM");
        let status = self.wait_timeout(grace);
        if let Some(child) = self.child.as_mut().filter(|_| status.is_none()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = None;
        status
    }
}

fn read_box<R: std::io::Read + Send + 'static>(r: R) -> Box<dyn std::io::Read + Send> {
    Box::new(r)
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
