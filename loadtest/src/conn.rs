//! The `conn` scenario: many idle connections.

use crate::check_target;
use crate::rss::rss_bytes;
use bytes::BytesMut;
use hdrhistogram::Histogram;
use herald_mqtt::{Codec, Connect, Packet, Properties, ProtocolVersion, ReasonCode};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Arguments of the `conn` scenario.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnArgs {
    /// The broker's MQTT address (loopback only).
    #[arg(long, default_value = "127.0.0.1:1883")]
    target: SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Connections opened per second at most.
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// Source addresses to spread connections over (comma-separated), to
    /// stay clear of the ephemeral-port limit per source address.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    sources: Vec<IpAddr>,
    /// Seconds to hold the connections after the last one is up.
    #[arg(long, default_value_t = 4)]
    hold: u64,
    /// MQTT protocol level (4 = 3.1.1, 5 = 5.0).
    #[arg(long, default_value_t = 4)]
    protocol: u8,
    /// The broker's pid, to report its RSS before and after.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Keep-alive sent in CONNECT, seconds.
    #[arg(long, default_value_t = 300)]
    keep_alive: u16,
    /// Client id prefix.
    #[arg(long, default_value = "lt")]
    prefix: String,
}

pub(crate) fn run(args: ConnArgs) -> anyhow::Result<()> {
    check_target(args.target)?;
    anyhow::ensure!(!args.sources.is_empty(), "--sources: at least one address");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: ConnArgs) -> anyhow::Result<()> {
    let version = match args.protocol {
        4 => ProtocolVersion::V311,
        5 => ProtocolVersion::V5,
        other => anyhow::bail!("--protocol: 4 or 5, not {other}"),
    };
    let rss_before = args.server_pid.map(rss_bytes).transpose()?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut held = Vec::with_capacity(args.connections);
    let mut failures = 0usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let started = Instant::now();
    for i in 0..args.connections {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let source = args.sources[i % args.sources.len()];
        let t0 = Instant::now();
        match connect(args.target, source, version, &format!("{}-{i}", args.prefix), args.keep_alive).await {
            Ok(stream) => {
                histogram.record(t0.elapsed().as_micros() as u64)?;
                held.push(stream);
            }
            Err(_) => failures += 1,
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let mut open = 0;
    for stream in &held {
        let mut probe = [0u8; 1];
        // Still open means a read would block (no EOF, no error).
        if matches!(stream.try_read(&mut probe), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            open += 1;
        }
    }
    let rss_after = args.server_pid.map(rss_bytes).transpose()?;
    let per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) if open > 0 => Some(after.saturating_sub(before) as f64 / open as f64),
        _ => None,
    };
    let rate = held.len() as f64 / connect_secs;
    let json = serde_json::json!({
        "scenario": "conn",
        "target": args.target.to_string(),
        "protocol": args.protocol,
        "requested": args.connections,
        "connected": held.len(),
        "open_after_hold": open,
        "failures": failures,
        "connect_seconds": connect_secs,
        "connects_per_second": rate,
        "handshake_us": {
            "p50": histogram.value_at_quantile(0.50),
            "p99": histogram.value_at_quantile(0.99),
            "p999": histogram.value_at_quantile(0.999),
            "max": histogram.max(),
        },
        "server_rss_before": rss_before,
        "server_rss_after": rss_after,
        "server_bytes_per_connection": per_connection,
    });
    println!("{json}");
    eprintln!(
        "conn: {}/{} connected ({} failed) in {:.2}s = {:.0}/s; handshake p50 {} us p99 {} us; {} open after {}s{}",
        held.len(),
        args.connections,
        failures,
        connect_secs,
        rate,
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        open,
        args.hold,
        per_connection.map(|b| format!("; server {b:.0} B/connection")).unwrap_or_default(),
    );
    Ok(())
}

/// Opens one connection and completes the MQTT handshake.
async fn connect(
    target: SocketAddr,
    source: IpAddr,
    version: ProtocolVersion,
    client_id: &str,
    keep_alive: u16,
) -> anyhow::Result<TcpStream> {
    let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    let mut stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(target)).await??;
    stream.set_nodelay(true)?;
    let mut codec = Codec::new(version, 1024 * 1024);
    let connect = Connect {
        protocol: version,
        clean_start: true,
        keep_alive,
        properties: Properties::default(),
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
    };
    let mut out = BytesMut::new();
    codec.encode(&Packet::Connect(Box::new(connect)), &mut out)?;
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(64);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(packet) = codec.decode(&mut buf)? {
            return match packet {
                Packet::ConnAck(ack) if ack.reason_code == ReasonCode::Success => Ok(stream),
                Packet::ConnAck(ack) => anyhow::bail!("refused: {:?}", ack.reason_code),
                other => anyhow::bail!("expected CONNACK, got {other:?}"),
            };
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(remaining, stream.read_buf(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed before CONNACK");
    }
}
