//! A real `redis-server` for tests: on a free loopback port, with a
//! password, no persistence, killed on drop. `redis-cli` talks to it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password the server requires.
pub const PASSWORD: &str = "redis-pass";
/// The database tests use.
pub const DB: u32 = 2;

/// A running (or stopped) `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server on a free port of 127.0.0.1 and waits (up to 10 s)
    /// until it answers.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("addr")
            .port();
        let dir = std::env::temp_dir().join(format!("herald-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let mut server = RedisServer { child: None, port, dir };
        server.restart();
        server
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database [`DB`], with the password.
    pub fn url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}/{DB}", self.port)
    }

    /// Kills the server (its data is lost: nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (stopping it first if it
    /// runs) and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let started = Instant::now();
        loop {
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--requirepass", PASSWORD])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server (Debian package redis-server)");
            self.child = Some(child);
            while started.elapsed() < Duration::from_secs(10) {
                if self.cli(&["PING"]) == "PONG" {
                    return;
                }
                // The port may still be held by the server just killed.
                if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a command in database [`DB`] and returns its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-a", PASSWORD, "--no-auth-warning"])
            .args(["-n", &DB.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli (Debian package redis-tools)");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Waits up to `timeout` until `check` holds for the output of `args`;
    /// returns the last output.
    pub fn wait_for(&self, args: &[&str], timeout: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.cli(args);
            if check(&output) || Instant::now() >= deadline {
                return output;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
