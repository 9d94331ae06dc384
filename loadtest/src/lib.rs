//! `herald loadtest`: a black-box load generator for any MQTT broker.
//!
//! Owns: scenarios that drive a broker over real sockets (`conn`, `fanout`,
//! `fanin`, `p2p`, `shared`, `storm`, `persist`; and for Herald's push API
//! `devices` and `push`; and `history`, for fault tests) and report one JSON line on stdout
//! (for scripts) and a summary on stderr (for people); a small async MQTT
//! client with the QoS 1 and QoS 2 flows; the payload that carries a
//! publisher id, a sequence number and a send timestamp, from which
//! latency, losses and duplicates are counted; reading a server's CPU time
//! and memory from `/proc`; and `bench.sh`, which runs the scenarios against
//! Herald and Mosquitto side by side.
//!
//! It refuses targets and source addresses outside the loopback range: it
//! is for measuring brokers on this machine. Every scenario is bounded in
//! time, and every queue in it is bounded.
//!
//! Must never depend on: gateway or router internals; it speaks MQTT
//! through the shared codec (`herald-mqtt`) only.
//!
//! Start here:
//! - `options.rs`: the options every scenario shares, the loopback rule.
//! - `client.rs`: connect, subscribe, publish over one socket;
//!   `flow.rs`: the QoS 1/2 acknowledgement state, pure.
//! - `fanout.rs`: the engine behind `fanout`, `fanin` and `p2p`, with its
//!   tasks in `publisher.rs` and `subscriber.rs`; `delivery.rs`: what each
//!   subscriber received, losses and duplicates.
//! - `storm.rs`, `persist.rs`, `conn.rs`, `devices.rs`, `push.rs` (with its
//!   small HTTP client in `http.rs`): the other scenarios;
//!   `history.rs`: clients that ride through faults, and the check of what
//!   they saw, for the fault tests.
//! - `payload.rs`, `report.rs`, `proc.rs`: payload layout and clock, the
//!   JSON report, `/proc` readings.

mod client;
mod conn;
mod delivery;
mod devices;
mod fanout;
mod flow;
pub mod history;
mod history_check;
mod http;
mod options;
mod payload;
mod persist;
mod proc;
mod publisher;
mod push;
mod report;
mod storm;
mod subscriber;
mod workers;

pub use report::{Report, parse_report_line};
/// The JSON value a [`Report`] is made of, for callers that read reports.
pub use serde_json::Value;

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
    /// memory per connection. Past this process's open-file limit, the
    /// connections are spread over several worker processes.
    #[command(args_override_self = true)]
    Conn(conn::ConnArgs),
    /// One publisher, N subscribers on its topic.
    Fanout(fanout::FlowArgs),
    /// N publishers on their own topics, one subscriber on a wildcard.
    Fanin(fanout::FlowArgs),
    /// N publisher/subscriber pairs, each pair on its own topic.
    P2p(fanout::FlowArgs),
    /// One publisher, N members of a shared-subscription group
    /// (`$share/lt/…`): each message to one member.
    Shared(fanout::FlowArgs),
    /// N clients connect, drop their sockets at once and reconnect at once;
    /// reports the time until all are back.
    Storm(storm::StormArgs),
    /// N persistent subscribers go offline, a publisher sends M messages,
    /// the subscribers come back and every message must reach each of them
    /// in order.
    Persist(persist::PersistArgs),
    /// N push-API devices subscribed to their own topics, waiting for what
    /// an app backend sends them (a broadcast, a tag expression); reports
    /// each delivery's latency from the HTTP send.
    Devices(devices::DevicesArgs),
    /// N devices on `$push/{client id}` and one HTTP request per device
    /// through the push API (by client id or by alias); reports pushes per
    /// second and each delivery's latency from its request.
    Push(push::PushArgs),
    /// N publisher/persistent-subscriber pairs that connect again through
    /// faults, logging every acknowledgement and delivery; checks the log
    /// for acknowledged loss, per-publisher order and lost sessions.
    History(history::HistoryArgs),
}

/// Runs the scenario `args` names, prints its JSON line on stdout and its
/// summary on stderr.
///
/// Returns an error when the scenario could not be set up or run (bad
/// options, a target outside loopback, a broker that refuses connections,
/// the overall deadline passed); a run that completes with losses is a
/// result, not an error.
pub fn main(args: Args) -> anyhow::Result<()> {
    let report = run_scenario(args)?;
    println!("{}", report.json);
    eprintln!("{}", report.summary);
    Ok(())
}

/// Runs the scenario `args` names and returns its report without printing
/// it.
pub fn run_scenario(args: Args) -> anyhow::Result<report::Report> {
    match args.scenario {
        Scenario::Conn(args) => conn::run(args),
        Scenario::Fanout(args) => fanout::run(fanout::Shape::Fanout, args),
        Scenario::Fanin(args) => fanout::run(fanout::Shape::Fanin, args),
        Scenario::P2p(args) => fanout::run(fanout::Shape::P2p, args),
        Scenario::Shared(args) => fanout::run(fanout::Shape::Shared, args),
        Scenario::Storm(args) => storm::run(args),
        Scenario::Persist(args) => persist::run(args),
        Scenario::Devices(args) => devices::run(args),
        Scenario::History(args) => history::run(args),
        Scenario::Push(args) => push::run(args),
    }
}
