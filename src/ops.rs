//! The operations listener of every mode: `/metrics` (Prometheus text
//! format 0.0.4), `/healthz` (the process serves HTTP) and `/readyz` (it
//! can take work: a gateway that is not draining; a router that knows a
//! leader).
//!
//! The HTTP side is `herald_gateway::ops_http` (HTTP stays at the edge
//! crate). Metrics are read from the parts' own counters at scrape time: nothing
//! on a hot path knows it is being measured.

use herald_gateway::GatewayStats;
use herald_gateway::router_client::LinkStatus;
use herald_router::Router;
use herald_router::raft::RaftNode;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Returns the router this node serves with, if any (a router node serves
/// only while it leads).
pub(crate) type RouterSource = Arc<dyn Fn() -> Option<Router> + Send + Sync>;

/// What a node exposes; each mode fills in the parts it runs.
#[derive(Clone, Default)]
pub(crate) struct Sources {
    pub(crate) gateway: Option<GatewayStats>,
    pub(crate) link: Option<Arc<LinkStatus>>,
    pub(crate) router: Option<RouterSource>,
    pub(crate) raft: Option<Arc<RaftNode>>,
    /// A router: whether it has caught up with its leader (kept by
    /// `RaftNode::watch_caught_up`).
    pub(crate) caught_up: Option<Arc<AtomicBool>>,
    /// A router's gateway-link service: what it refused.
    pub(crate) seam: Option<Arc<herald_router::grpc::SeamCounters>>,
    /// Set when shutdown begins: readiness fails from then on.
    pub(crate) draining: Arc<AtomicBool>,
    /// The session registry's writer to Redis, when there is one.
    pub(crate) registry: Option<Arc<herald_router::registry_redis::RegistryStats>>,
    /// A gateway's links to every router's registry (ADR 0033).
    pub(crate) registry_links: Option<Arc<herald_gateway::registry_links::RegistryLinks>>,
    /// A router's registry shards and the gateways linked to them.
    pub(crate) shard_owner: Option<herald_router::registry_link::RegistryService>,
    /// Where a router finds the push API's devices (ADR 0033).
    pub(crate) locator: Option<herald_router::locate::Locator>,
}

impl Sources {
    /// Whether the node can take work now.
    fn ready(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining");
        }
        if self.gateway.as_ref().is_some_and(herald_gateway::GatewayStats::over_memory) {
            return Err("past the memory high-water mark");
        }
        if self.gateway.is_none()
            && let Some(raft) = &self.raft
            && raft.gauges().leader.is_none()
        {
            return Err("no known leader");
        }
        if self.caught_up.as_ref().is_some_and(|caught_up| !caught_up.load(Ordering::Relaxed)) {
            return Err("catching up with the leader");
        }
        Ok(())
    }

    /// Renders every metric in the Prometheus text format.
    pub(crate) fn render(&self) -> String {
        let mut out = Exposition::default();
        out.gauge(
            "herald_heap_bytes",
            "Bytes allocated and not yet freed (resident memory also counts what the allocator keeps).",
            crate::heap_bytes(),
        );
        if let Some(gateway) = &self.gateway {
            let c = gateway.counters();
            out.gauge("herald_connections", "MQTT connections open now.", gateway.connections() as u64);
            out.counter(
                "herald_connections_opened_total",
                "MQTT connections accepted.",
                &c.connections_opened,
            );
            let closed = c.connections_closed.counts();
            let closed: Vec<(&str, u64)> = closed.iter().map(|(reason, n)| (reason.as_str(), *n)).collect();
            out.labelled_counter(
                "herald_connections_closed_total",
                "MQTT connections ended, by reason: normal (the client's DISCONNECT), lost (the socket \
                 closed or failed), or the reason code the server ended it with.",
                "reason",
                &closed,
            );
            out.counter(
                "herald_connections_refused_total",
                "Sockets closed on accept at the connection limit.",
                &c.connections_refused,
            );
            out.counter(
                "herald_messages_received_total",
                "Publishes taken from clients and sent on to be routed.",
                &c.messages_received,
            );
            out.counter("herald_deliveries_total", "Messages handed to local subscribers.", &c.deliveries);
            out.counter(
                "herald_tls_handshakes_failed_total",
                "TLS handshakes that failed or timed out.",
                &c.tls_handshakes_failed,
            );
            out.labelled_counter(
                "herald_acl_denied_total",
                "Publishes (wills included) and subscriptions the access rules refused.",
                "action",
                &[
                    ("publish", herald_gateway::read(&c.acl_denied_publish)),
                    ("subscribe", herald_gateway::read(&c.acl_denied_subscribe)),
                ],
            );
            render_push_api(gateway.api_metrics(), &mut out);
            render_user_lookups(gateway.user_lookups(), &mut out);
            out.counter(
                "herald_pending_connects_refused_total",
                "Sockets closed on accept: max_pending_connects sockets had not connected yet.",
                &c.pending_connects_refused,
            );
            out.counter(
                "herald_connect_rate_exceeded_total",
                "CONNECTs refused with 0x9F: past max_connect_rate.",
                &c.connect_rate_exceeded,
            );
            out.counter(
                "herald_requests_given_up_total",
                "Publishes and (un)subscriptions answered 0x80 (3.1.1: closed): no router answered in time.",
                &c.requests_given_up,
            );
            out.counter(
                "herald_acks_dropped_total",
                "Acknowledgements of persistent sessions' deliveries not passed to the router (too many waiting): those messages are resent with DUP on the next connection.",
                &c.acks_dropped,
            );
            out.counter(
                "herald_connects_shed_total",
                "CONNECTs refused with 0x89: past the memory high-water mark.",
                &c.connects_shed,
            );
            out.gauge(
                "herald_requests_awaiting_router",
                "Client publishes and (un)subscriptions waiting for the router's replies (at most 1024; connections wait past it).",
                gateway.requests_awaiting_router() as u64,
            );
            out.gauge(
                "herald_memory_over_high_water",
                "1 while resident memory is past memory_high_water_mb.",
                u64::from(gateway.over_memory()),
            );
            out.counter(
                "herald_publish_rate_exceeded_total",
                "Connections ended with 0x96 for publishing past their rate.",
                &c.publish_rate_exceeded,
            );
            out.counter(
                "herald_certificate_mismatches_total",
                "CONNECTs refused: the client id was not the client certificate's name.",
                &c.certificate_mismatches,
            );
            out.counter(
                "herald_gateway_dropped_total",
                "Deliveries dropped because a connection's queue was full.",
                &c.dropped_connection_backlog,
            );
        }
        if let Some(seam) = &self.seam {
            let read = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            out.counter_value(
                "herald_gateway_links_opened_total",
                "Gateway links accepted.",
                read(&seam.links_opened),
            );
            out.labelled_counter(
                "herald_gateway_links_refused_total",
                "Gateway links and batches refused, by reason.",
                "reason",
                &[
                    ("contract_version", read(&seam.refused_version)),
                    ("cluster", read(&seam.refused_cluster)),
                    ("malformed", read(&seam.refused_malformed)),
                    ("duplicate", read(&seam.refused_duplicate)),
                    ("not_leader", read(&seam.refused_not_leader)),
                ],
            );
        }
        if let Some(registry) = &self.registry {
            render_registry(registry, &mut out);
        }
        if let Some(links) = &self.registry_links {
            out.gauge(
                "herald_gateway_registry_links",
                "Routers this gateway has a registry link to.",
                links.open(),
            );
            let owners: Vec<(String, u64)> =
                links.shards_per_owner().into_iter().map(|(owner, n)| (owner.to_string(), n)).collect();
            let [granted, no_table, not_granted] = links.claims();
            out.labelled_counter(
                "herald_gateway_owner_claims_total",
                "Session claims at registry shard owners, by outcome (no_shard_table: the leader grants).",
                "outcome",
                &[("granted", granted), ("no_shard_table", no_table), ("not_granted", not_granted)],
            );
            out.labelled_gauge(
                "herald_gateway_registry_shards",
                "Registry shards per owning router, as the newest shard table the gateway has says.",
                "owner",
                &owners.iter().map(|(owner, n)| (owner.as_str(), *n)).collect::<Vec<_>>(),
            );
            let (listed, revocations) = links.listings();
            out.counter_value(
                "herald_gateway_registry_listed_total",
                "Sessions listed to registry shard owners (a link opened, shards moved or restarted).",
                listed,
            );
            out.counter_value(
                "herald_gateway_owner_revocations_total",
                "Revocations received from registry shard owners (a connection that lost its session).",
                revocations,
            );
        }
        if let Some(owner) = &self.shard_owner {
            let (served, inherited, sessions) = owner.counts();
            out.labelled_gauge(
                "herald_router_registry_shards",
                "Registry shards the table gives this router: served, or inherited from an earlier process and waiting for the leader to restart them.",
                "state",
                &[("served", served), ("inherited", inherited)],
            );
            out.gauge(
                "herald_router_registry_sessions",
                "Sessions known to this router's registry shards.",
                sessions,
            );
            out.gauge(
                "herald_router_registry_gateways",
                "Gateways linked to this router's registry.",
                owner.linked(),
            );
            let [locates, counts] = owner.answered();
            out.labelled_counter(
                "herald_router_registry_calls_answered_total",
                "Calls of the router serving the gateways that this router's registry shards answered: where sessions are (locate), how many online sessions of an app each gateway holds (count).",
                "call",
                &[("locate", locates), ("count", counts)],
            );
            let [here, forwarded, dropped] = owner.wills();
            out.labelled_counter(
                "herald_router_registry_wills_total",
                "Wills of transient sessions this router's registry shards ended: published here (this router leads), forwarded to the leader, or dropped (no leader took them in time).",
                "outcome",
                &[("here", here), ("forwarded", forwarded), ("dropped", dropped)],
            );
        }
        if let Some(locator) = &self.locator {
            let [here, elsewhere, not_located] = locator.counts();
            out.labelled_counter(
                "herald_router_push_devices_located_total",
                "Devices of push-API sends this router located while it leads: at its own registry shards, at another router's, or not located in time (reported unreachable).",
                "where",
                &[("here", here), ("elsewhere", elsewhere), ("not_located", not_located)],
            );
            let [counted, by_records] = locator.everyone_counts();
            out.labelled_counter(
                "herald_router_push_everyone_counted_total",
                "Push-API sends to everyone this router sent while it leads: by the online sessions every registry shard's owner counted, or by its own records (not counted in time).",
                "by",
                &[("owners", counted), ("records", by_records)],
            );
        }
        if let Some(link) = &self.link {
            out.gauge(
                "herald_router_quorum_reachable",
                "1 while a router that serves gateways is linked.",
                u64::from(link.is_linked()),
            );
            out.counter("herald_router_links_opened_total", "Router links opened.", &link.links_opened);
            out.counter("herald_router_links_lost_total", "Router links lost.", &link.links_lost);
            out.counter(
                "herald_router_requests_replayed_total",
                "Requests sent again on a new router link.",
                &link.requests_replayed,
            );
            out.counter(
                "herald_sessions_reattached_total",
                "Sessions given back to a router on a new link.",
                &link.sessions_reattached,
            );
            render_round_trips(&link.publish_round_trip, &mut out);
        }
        if let Some(router) = self.router.as_ref().and_then(|source| source()) {
            render_router(&router, &mut out);
        }
        if let Some(raft) = &self.raft {
            let g = raft.gauges();
            out.gauge("herald_raft_term", "The current Raft term.", g.term);
            out.gauge("herald_raft_is_leader", "1 on the leader.", u64::from(g.leader == Some(raft.id())));
            out.gauge("herald_raft_leader", "The known leader's node id (0: none).", g.leader.unwrap_or(0));
            out.gauge("herald_raft_last_log_index", "The last log index.", g.last_log_index);
            out.gauge("herald_raft_applied_index", "The last applied index.", g.applied_index);
            out.gauge(
                "herald_raft_apply_lag",
                "Log entries not applied yet.",
                g.last_log_index.saturating_sub(g.applied_index),
            );
            out.gauge("herald_raft_snapshot_index", "The last snapshot's index.", g.snapshot_index);
            out.gauge(
                "herald_raft_vote_withheld",
                "1 while this router, started with no data, votes for no one until it has caught up.",
                u64::from(g.vote_withheld),
            );
            out.labelled_counter(
                "herald_raft_snapshots_total",
                "Snapshots this node built from its state, or installed in its place, since it started.",
                "event",
                &[("built", g.snapshots_built), ("installed", g.snapshots_installed)],
            );
        }
        out.text
    }
}

/// Device-user lookups by source and outcome.
fn render_registry(r: &herald_router::registry_redis::RegistryStats, out: &mut Exposition) {
    out.gauge(
        "herald_registry_redis_up",
        "1 while the session registry's last write to Redis succeeded.",
        u64::from(r.up.load(Ordering::Relaxed)),
    );
    out.counter(
        "herald_registry_redis_writes_total",
        "Session registry entries written to Redis or deleted.",
        &r.written,
    );
    out.counter(
        "herald_registry_redis_fenced_total",
        "Registry entries Redis kept because a router of a later generation wrote them.",
        &r.fenced,
    );
    out.counter(
        "herald_registry_redis_resyncs_total",
        "Times the whole registry was written to Redis again.",
        &r.resyncs,
    );
    out.counter(
        "herald_registry_redis_overflows_total",
        "Batches of registry changes dropped by a full queue (each causes a resync).",
        &r.overflowed,
    );
    out.counter(
        "herald_registry_redis_errors_total",
        "Round trips to Redis that failed (then retried).",
        &r.errors,
    );
}

fn render_user_lookups(counters: &herald_gateway::device_users::LookupCounters, out: &mut Exposition) {
    let name = "herald_device_user_lookups_total";
    out.header(name, "Device-user lookups at CONNECT by source (router, redis) and outcome.", "counter");
    for (source, outcome, count) in counters.all() {
        let _ = writeln!(out.text, "{name}{{source=\"{source}\",outcome=\"{outcome}\"}} {count}");
    }
}

/// How long publishes waited for the router's reply, as a histogram.
fn render_round_trips(round_trips: &herald_gateway::router_client::RoundTrips, out: &mut Exposition) {
    let name = "herald_router_publish_round_trip_seconds";
    out.header(
        name,
        "From a publish taken for the router link to the router's reply: the gateway-router-gateway hop.",
        "histogram",
    );
    let (buckets, sum) = round_trips.snapshot();
    out.histogram_series(name, None, &herald_gateway::router_client::ROUND_TRIP_BUCKETS, &buckets, sum);
}

/// The push API's requests by operation and status, their latency, and
/// rate-limit refusals.
fn render_push_api(metrics: &herald_gateway::push_api::metrics::ApiMetrics, out: &mut Exposition) {
    out.header("herald_push_requests_total", "Push-API requests by operation and HTTP status.", "counter");
    for ((operation, status), count) in metrics.requests() {
        let _ = writeln!(
            out.text,
            "herald_push_requests_total{{operation=\"{operation}\",status=\"{status}\"}} {count}"
        );
    }
    let name = "herald_push_request_duration_seconds";
    out.header(name, "Push-API request latency, from the key check to the answer.", "histogram");
    for (operation, latency) in metrics.latency() {
        let bounds = &herald_gateway::push_api::metrics::BUCKETS;
        out.histogram_series(name, Some(("operation", operation)), bounds, &latency.buckets, latency.sum);
    }
    out.counter(
        "herald_push_rate_limited_total",
        "Push-API requests refused with 429: the app was past its rate.",
        &metrics.rate_limited,
    );
}

fn render_router(router: &Router, out: &mut Exposition) {
    let c = router.counters();
    let g = router.with_state(herald_router::state::RouterState::gauges);
    out.gauge(
        "herald_sessions",
        "Sessions the router knows (online and persistent offline).",
        g.sessions as u64,
    );
    out.gauge("herald_sessions_online", "Sessions with a live connection.", g.online as u64);
    out.gauge("herald_sessions_persistent", "Sessions that outlive their connection.", g.persistent as u64);
    out.gauge(
        "herald_subscriptions",
        "Subscriptions recorded for persistent sessions.",
        g.subscriptions as u64,
    );
    out.gauge("herald_routes", "Routes: (gateway, app, filter) the gateways listed.", g.routes as u64);
    out.gauge(
        "herald_inbox_messages",
        "Messages queued for offline persistent sessions.",
        g.inbox_messages as u64,
    );
    out.gauge(
        "herald_inbox_bytes",
        "Payload bytes queued for offline persistent sessions.",
        g.inbox_bytes as u64,
    );
    out.header(
        "herald_gateway_backlog",
        "Items waiting in a linked gateway's downlink stream, by gateway.",
        "gauge",
    );
    // The linked gateways, from their links (not a pass over the sessions).
    let backlogs = router.gateway_backlogs();
    for (gateway, backlog) in &backlogs {
        let _ = writeln!(out.text, "herald_gateway_backlog{{gateway=\"{gateway}\"}} {backlog}");
    }
    out.gauge("herald_gateways_linked", "Gateways linked to this router.", backlogs.len() as u64);
    out.counter_value("herald_messages_routed_total", "Messages routed.", c.messages_routed);
    out.counter_value("herald_wills_published_total", "Will messages published.", c.wills_published);
    out.counter_value(
        "herald_sessions_expired_total",
        "Persistent sessions ended by expiry.",
        c.sessions_expired,
    );
    out.counter_value(
        "herald_sessions_handed_over_total",
        "Unacknowledged messages handed to a takeover.",
        c.handed_over,
    );
    out.counter_value(
        "herald_inbox_acknowledged_total",
        "Inbox messages of persistent sessions acknowledged by their clients (and removed).",
        c.inbox_acknowledged,
    );
    out.counter_value(
        "herald_inbox_overflow_online_total",
        "Messages for online persistent sessions their full inboxes did not keep (still delivered, not kept against a gateway's loss).",
        c.inbox_overflow_online,
    );
    out.counter_value(
        "herald_stale_epoch_refused_total",
        "Items refused for a stale ownership epoch.",
        c.stale_epoch_refused,
    );
    out.counter_value(
        "herald_gateways_overloaded_total",
        "Gateways disconnected for not draining their downlink.",
        c.gateways_overloaded,
    );
    out.labelled_counter(
        "herald_messages_dropped_total",
        "Messages the router dropped, by reason (each a written policy).",
        "reason",
        &[
            ("offline_qos0", c.dropped_offline_qos0),
            ("queue_full", c.dropped_queue_full),
            ("queue_oldest", c.dropped_queue_oldest),
            ("expired", c.dropped_expired),
            ("gateway_backlog", c.dropped_gateway_backlog),
            ("shared_no_member", c.dropped_shared_no_member),
            ("duplicate", c.duplicates_ignored),
            ("fanout_oldest", c.fanout_dropped),
        ],
    );
    out.counter_value(
        "herald_fanout_gaps_total",
        "Sessions that came back after fan-out log entries meant for them were dropped.",
        c.fanout_gaps,
    );
}

/// A Prometheus text exposition being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "gauge");
        let _ = writeln!(self.text, "{name} {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: &AtomicU64) {
        self.counter_value(name, help, value.load(Ordering::Relaxed));
    }

    fn counter_value(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        let _ = writeln!(self.text, "{name} {value}");
    }

    /// One series of a histogram (its header written already): `buckets`
    /// counts per bucket, not cumulative, the last past every bound.
    fn histogram_series(
        &mut self,
        name: &str,
        label: Option<(&str, &str)>,
        bounds: &[f64],
        buckets: &[u64],
        sum: f64,
    ) {
        let (before_le, alone) = match label {
            Some((key, value)) => (format!("{key}=\"{value}\","), format!("{{{key}=\"{value}\"}}")),
            None => (String::new(), String::new()),
        };
        let bounds = bounds.iter().map(f64::to_string).chain(["+Inf".to_owned()]);
        let mut cumulative = 0;
        for (bound, count) in bounds.zip(buckets) {
            cumulative += count;
            let _ = writeln!(self.text, "{name}_bucket{{{before_le}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(self.text, "{name}_sum{alone} {sum}");
        let _ = writeln!(self.text, "{name}_count{alone} {cumulative}");
    }

    fn labelled_gauge(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        self.labelled(name, help, "gauge", label, values);
    }

    fn labelled_counter(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        self.labelled(name, help, "counter", label, values);
    }

    /// A metric of `kind` with one series per value of `label`.
    fn labelled(&mut self, name: &str, help: &str, kind: &str, label: &str, values: &[(&str, u64)]) {
        self.header(name, help, kind);
        for (value_label, value) in values {
            let _ = writeln!(self.text, "{name}{{{label}=\"{value_label}\"}} {value}");
        }
    }
}

/// A running operations listener (or none).
pub(crate) struct Ops {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Ops {
    /// Stops the listener (after the node has drained).
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Starts the operations listener on `address` (if set). Returns it and
/// `shutdown` wrapped so that readiness fails as soon as shutdown begins,
/// while the listener keeps answering until [`Ops::stop`].
pub(crate) async fn start(
    address: Option<SocketAddr>,
    sources: Sources,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<(Ops, impl Future<Output = ()>)> {
    let draining = sources.draining.clone();
    let ops = match address {
        Some(address) => {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let sources = Arc::new(sources);
            let (render, ready) = (sources.clone(), sources);
            let task = herald_gateway::ops_http::serve(
                address,
                Arc::new(move || render.render()),
                Arc::new(move || ready.ready()),
                async move {
                    let _ = stopped.await;
                },
            )
            .await?;
            Ops { stop: Some(stop), task: Some(task) }
        }
        None => Ops { stop: None, task: None },
    };
    let shutdown = async move {
        shutdown.await;
        draining.store(true, Ordering::Relaxed);
    };
    Ok((ops, shutdown))
}
