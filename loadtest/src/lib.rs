//! `herald loadtest`: a black-box load generator for any MQTT broker.
//!
//! Owns: scenarios that drive a broker over real sockets and report one
//! JSON line on stdout (for scripts) and a summary on stderr (for people).
//! It refuses targets outside 127.0.0.0/8: it is for measuring brokers on
//! this machine, side by side.
//!
//! Must never depend on: gateway or router internals; it speaks MQTT
//! through the shared codec only.
//!
//! Start here: `conn.rs`.

mod conn;
mod rss;

use std::net::{IpAddr, SocketAddr};

/// Command-line arguments of `herald loadtest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, clap::Subcommand)]
enum Scenario {
    /// Open N idle connections at a given rate, hold them, and report the
    /// connect rate, handshake latency and (given its pid) the server's
    /// memory per connection.
    Conn(conn::ConnArgs),
}

/// Runs the scenario `args` names.
pub fn main(args: Args) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Conn(args) => conn::run(args),
    }
}

/// Refuses any target outside the loopback range.
fn check_target(target: SocketAddr) -> anyhow::Result<()> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => Ok(()),
        IpAddr::V6(ip) if ip.is_loopback() => Ok(()),
        ip => anyhow::bail!("refusing target {ip}: loadtest only drives brokers on 127.0.0.0/8 or ::1"),
    }
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
}
