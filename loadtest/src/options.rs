//! The options every scenario shares, and the rules they must obey: the
//! target and every source address are loopback, the sockets fit the
//! process's open-file limit.

use herald_mqtt::{ProtocolVersion, QoS};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Options shared by every scenario: where the broker is and how to reach it.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct CommonArgs {
    /// The broker's MQTT address (loopback only).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub(crate) target: SocketAddr,
    /// Source addresses to spread client sockets over (comma-separated,
    /// loopback only), to stay clear of the ephemeral-port limit per source
    /// address.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    pub(crate) sources: Vec<IpAddr>,
    /// MQTT protocol level (4 = 3.1.1, 5 = 5.0).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub(crate) protocol: u8,
    /// The broker's pid, to report its CPU time and memory; several
    /// (comma-separated) for a broker of several processes: their CPU times
    /// and memory are summed.
    #[arg(long, value_delimiter = ',')]
    pub(crate) server_pid: Vec<u32>,
    /// Generator threads (1 = a current-thread runtime).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) threads: u16,
    /// Client id prefix.
    #[arg(long, default_value = "lt")]
    pub(crate) prefix: String,
}

impl CommonArgs {
    /// Checks the loopback rule and the source list.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        check_target(self.target)?;
        anyhow::ensure!(!self.sources.is_empty(), "--sources: at least one address");
        for source in &self.sources {
            anyhow::ensure!(source.is_loopback(), "refusing source {source}: loopback addresses only");
            anyhow::ensure!(
                source.is_ipv4() == self.target.is_ipv4(),
                "source {source} and target {} are not the same address family",
                self.target
            );
        }
        anyhow::ensure!(!self.prefix.is_empty() && self.prefix.len() <= 8, "--prefix: 1 to 8 characters");
        Ok(())
    }

    /// Returns the protocol version `--protocol` names.
    pub(crate) fn version(&self) -> ProtocolVersion {
        ProtocolVersion::from_level(self.protocol).expect("clap keeps --protocol at 4 or 5")
    }

    /// Returns the source address of the `index`th client socket.
    pub(crate) fn source(&self, index: usize) -> IpAddr {
        self.sources[index % self.sources.len()]
    }

    /// Returns the options of the `index`th client: its source address, the
    /// protocol version and the client id `{prefix}-{id}`.
    pub(crate) fn client(&self, index: u32, id: std::fmt::Arguments<'_>) -> crate::client::ConnectOptions {
        crate::client::ConnectOptions::new(
            self.target,
            self.source(index as usize),
            self.version(),
            format!("{}-{id}", self.prefix),
        )
    }

    /// Runs `scenario` on the runtime `--threads` asks for, after checking
    /// the options and that `sockets` fit the open-file limit, failing if it
    /// is not done within `limit`.
    pub(crate) fn run_bounded<T>(
        &self,
        name: &str,
        sockets: usize,
        limit: Duration,
        scenario: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        self.validate()?;
        check_open_files(sockets)?;
        self.runtime()?.block_on(async {
            tokio::time::timeout(limit, scenario)
                .await
                .map_err(|_| anyhow::anyhow!("{name}: overall deadline of {limit:?} passed"))?
        })
    }

    /// Builds the runtime `--threads` asks for.
    pub(crate) fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        let runtime = if self.threads <= 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(usize::from(self.threads))
                .enable_all()
                .build()?
        };
        Ok(runtime)
    }
}

/// Options of scenarios that set many clients up before measuring.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct SetupArgs {
    /// Seconds allowed to connect (and subscribe) every client; past it the
    /// run fails.
    #[arg(long, default_value_t = 30)]
    pub(crate) connect_timeout: u64,
    /// Handshakes in flight at once while setting clients up.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) parallel: u32,
}

impl SetupArgs {
    /// Returns `--connect-timeout` as a duration.
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
    }
}

/// Refuses any target outside the loopback range.
pub(crate) fn check_target(target: SocketAddr) -> anyhow::Result<()> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => Ok(()),
        IpAddr::V6(ip) if ip.is_loopback() => Ok(()),
        ip => anyhow::bail!("refusing target {ip}: loadtest only drives brokers on 127.0.0.0/8 or ::1"),
    }
}

/// Fails early when `sockets` client sockets would not fit under the
/// process's open-file limit (a few descriptors are kept for the runtime).
pub(crate) fn check_open_files(sockets: usize) -> anyhow::Result<()> {
    if let Some(limit) = crate::proc::open_files_limit() {
        let needed = sockets as u64 + 32;
        anyhow::ensure!(
            needed <= limit,
            "{sockets} sockets do not fit under this process's open-file limit of {limit}; \
             run several generator processes"
        );
    }
    Ok(())
}

/// Returns the QoS for `--qos` (clap keeps it at 0, 1 or 2).
pub(crate) fn qos(level: u8) -> QoS {
    QoS::from_u8(level).expect("clap keeps --qos at 0, 1 or 2")
}

/// Returns a keep-alive, in seconds, long enough that no client needs to
/// ping during a run of `seconds` (keep-alive covers client → server
/// silence, and subscribers at QoS 0 never send).
pub(crate) fn keep_alive_for(seconds: u64) -> u16 {
    u16::try_from(seconds.saturating_add(60).max(300)).unwrap_or(u16::MAX)
}

/// Returns a short id for this run, so that its client ids and topics
/// cannot meet those of an earlier run on the same broker.
pub(crate) fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let mut value = (u64::from(std::process::id()) << 32) ^ u64::from(nanos);
    let mut id = String::new();
    for _ in 0..6 {
        let digit = (value % 36) as u32;
        id.push(char::from_digit(digit, 36).expect("digit below 36"));
        value /= 36;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(check_target("127.0.0.9:1883".parse().expect("addr")).is_ok());
        assert!(check_target("[::1]:1883".parse().expect("addr")).is_ok());
        assert!(check_target("10.0.0.1:1883".parse().expect("addr")).is_err());
        assert!(check_target("192.168.1.1:1883".parse().expect("addr")).is_err());
    }

    #[test]
    fn sources_must_be_loopback_too() {
        let mut args = CommonArgs {
            target: "127.0.0.1:1883".parse().expect("addr"),
            sources: vec!["127.0.0.2".parse().expect("addr")],
            protocol: 4,
            server_pid: Vec::new(),
            threads: 1,
            prefix: "lt".into(),
        };
        assert!(args.validate().is_ok());
        args.sources.push("10.1.1.1".parse().expect("addr"));
        assert!(args.validate().is_err());
    }

    #[test]
    fn run_ids_are_short_and_plain() {
        let id = run_id();
        assert_eq!(id.len(), 6);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn keep_alive_outlasts_the_run() {
        assert_eq!(keep_alive_for(10), 300);
        assert_eq!(keep_alive_for(1000), 1060);
        assert_eq!(keep_alive_for(u64::MAX), u16::MAX);
    }
}
