//! The router's async shell: one task per attached gateway port applies
//! that gateway's uplink in order, and a timer task fires wills and
//! expiries. Both lock the state once per batch, never across an await.
//!
//! Durability (ADR 0013): a batch that changed durable state (retained
//! messages, persistent sessions, shared groups' queues) has its facts
//! committed to the [`Journal`] before any of its effects (replies,
//! deliveries) go out, so nothing is acknowledged that a restart would
//! lose. Batches take turns, so effects still leave in the order the state
//! applied them; a batch with nothing durable waits only for its turn.

use crate::owner::Locations;
use crate::state::{Effect, RouterConfig, RouterCounters, RouterState, ToLocate};
use herald_core::{Clock, NodeId, ShardGenerations, UnixMillis};
use herald_proto::journal::{DurableImage, Fact};
use herald_proto::seam::{Downlink, RouterPort, Uplink};
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// Items applied per lock of the state.
const BATCH: usize = 256;
/// Batches of pushes whose devices are located at their shards' owners at
/// once, at most (each of a gateway's uplink batch, [`BATCH`] items at
/// most); beyond, a batch's pushes are refused as busy (HTTP 503, sent
/// again later).
const LOCATING: usize = 256;
/// The timer task looks at the clock at least this often, so a clock that
/// is moved by hand (tests) or steps is noticed.
const TIMER_POLL: Duration = Duration::from_millis(250);

/// A commit in flight: resolves once the facts are durable.
pub type Committing = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Where a router commits the facts of each batch before answering it.
pub trait Journal: Send + Sync + 'static {
    /// Submits `facts` for commit, after everything submitted before;
    /// resolves once they are in line, to the commit in flight (so that the
    /// next batch can be submitted while this one is being made durable).
    fn submit<'a>(
        &'a self,
        facts: &'a [Fact],
    ) -> Pin<Box<dyn Future<Output = Result<Committing, String>> + Send + 'a>>;
}

/// Batches whose effects wait, in order, for their commits.
const PIPELINE: usize = 64;

/// One batch's effects and the commit they wait for.
struct Stage {
    effects: Vec<Effect>,
    commit: Option<Committing>,
    /// The `raft.commit` spans of the traced pushes in it: they end when
    /// the commit is done.
    traced: Vec<tracing::Span>,
    /// The batch's number (see [`RouterState::seal_batch`]).
    batch: u64,
}

/// A gateway link being served.
struct Attached {
    /// The gateway process (see [`Router::attach`]).
    incarnation: u64,
    /// This attachment.
    serial: u64,
    downlink: mpsc::Sender<Downlink>,
}

/// The in-process router: serves any number of gateway ports.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<RouterState>,
    gateways: Mutex<HashMap<NodeId, Attached>>,
    /// Numbers each attachment, so a replaced link's end is told apart.
    attachments: std::sync::atomic::AtomicU64,
    clock: Arc<dyn Clock>,
    timer_changed: Notify,
    journal: Option<Arc<dyn Journal>>,
    /// Held from applying a batch until it is submitted (or, with nothing
    /// pending, dispatched): submissions and stages keep apply order.
    turn: tokio::sync::Mutex<()>,
    /// Stages for the dispatcher (with a journal only).
    stages: Option<mpsc::Sender<Stage>>,
    /// Stages sent and not yet dispatched.
    queued: std::sync::atomic::AtomicUsize,
    /// Set when a commit failed: the router stops serving.
    failed: tokio::sync::watch::Sender<Option<String>>,
    /// Where registry changes go, when the registry is kept in Redis.
    registry: std::sync::OnceLock<Arc<crate::registry_redis::Mirror>>,
    /// Where devices are looked for in a router cluster (ADR 0033).
    locator: std::sync::OnceLock<crate::locate::Locator>,
    /// Pushes whose devices are being located: [`LOCATING`] at most.
    locating: Arc<tokio::sync::Semaphore>,
}

impl Router {
    /// Returns a router whose state starts empty. `generation` must exceed
    /// that of any earlier run, so epochs never go backwards.
    pub fn new(config: RouterConfig, generation: u64, clock: Arc<dyn Clock>) -> Router {
        Router::build(config, ShardGenerations::uniform(generation), clock, None)
    }

    /// Returns a router that commits durable facts to `journal` and starts
    /// from `image`, the durable state a previous run committed, with each
    /// registry shard at its newly committed generation.
    pub fn durable(
        config: RouterConfig,
        generations: ShardGenerations,
        clock: Arc<dyn Clock>,
        journal: Arc<dyn Journal>,
        image: DurableImage,
    ) -> Router {
        let router = Router::build(config, generations, clock, Some(journal));
        let now = router.inner.clock.now();
        router.inner.state().restore(image, now);
        router
    }

    fn build(
        config: RouterConfig,
        generations: ShardGenerations,
        clock: Arc<dyn Clock>,
        journal: Option<Arc<dyn Journal>>,
    ) -> Router {
        let (stages, pending) = match journal {
            Some(_) => {
                let (sender, receiver) = mpsc::channel(PIPELINE);
                (Some(sender), Some(receiver))
            }
            None => (None, None),
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(RouterState::with_generations(config, generations)),
            gateways: Mutex::new(HashMap::new()),
            attachments: std::sync::atomic::AtomicU64::new(1),
            clock,
            timer_changed: Notify::new(),
            journal,
            turn: tokio::sync::Mutex::new(()),
            stages,
            queued: std::sync::atomic::AtomicUsize::new(0),
            failed: tokio::sync::watch::channel(None).0,
            registry: std::sync::OnceLock::new(),
            locator: std::sync::OnceLock::new(),
            locating: Arc::new(tokio::sync::Semaphore::new(LOCATING)),
        });
        if let Some(pending) = pending {
            tokio::spawn(dispatch_in_order(Arc::downgrade(&inner), pending));
        }
        Router { inner }
    }

    /// Returns the gateways linked to this router, each with its online
    /// sessions.
    pub fn gateway_sessions(&self) -> Vec<(u64, usize)> {
        let mut counts: std::collections::BTreeMap<u64, usize> =
            self.inner.gateways().keys().map(|gateway| (gateway.0, 0)).collect();
        for (gateway, sessions) in self.inner.state().online_per_gateway() {
            *counts.entry(gateway.0).or_default() += sessions;
        }
        counts.into_iter().collect()
    }

    /// Items waiting in each linked gateway's downlink (its stream backlog;
    /// full at the downlink's capacity, when deliveries start to drop).
    pub fn gateway_backlogs(&self) -> Vec<(u64, usize)> {
        let mut backlogs: Vec<(u64, usize)> = self
            .inner
            .gateways()
            .iter()
            .map(|(gateway, attached)| {
                (gateway.0, attached.downlink.max_capacity() - attached.downlink.capacity())
            })
            .collect();
        backlogs.sort_unstable();
        backlogs
    }

    /// Waits, up to `timeout`, until every batch applied so far has been
    /// committed and its replies handed to the gateways' downlinks: a
    /// router that stops serving lets go of its gateways after this, so
    /// that the answers to what it already committed are not lost (a
    /// gateway asks again for what got no answer, and a claim or a queue
    /// handed out twice is what that would cost).
    pub async fn settle(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.inner.queued.load(std::sync::atomic::Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Lets go of every gateway: their links end, and they find the
    /// cluster's serving router again.
    pub fn disconnect_gateways(&self) {
        self.inner.gateways().clear();
    }

    /// Resolves, with the reason, once a commit to the journal failed: the
    /// router has disconnected every gateway and must be restarted.
    pub async fn failed(&self) -> String {
        let mut failed = self.inner.failed.subscribe();
        loop {
            if let Some(reason) = failed.borrow_and_update().clone() {
                return reason;
            }
            if failed.changed().await.is_err() {
                return "router dropped".into();
            }
        }
    }

    /// Keeps the session registry in Redis from now on (ADR 0029): every
    /// change of ownership is written there after its batch, and the whole
    /// registry at start and whenever Redis may have missed changes.
    /// The writer counts what it does in `stats`, and ends with the router.
    pub fn keep_registry_in_redis(
        &self,
        config: crate::registry_redis::RedisRegistryConfig,
        stats: Arc<crate::registry_redis::RegistryStats>,
    ) {
        self.inner.state().track_registry();
        let snapshots = Snapshotter(Arc::downgrade(&self.inner));
        let (mirror, writer) = crate::registry_redis::start(config, snapshots, stats);
        if self.inner.registry.set(mirror).is_ok() {
            tokio::spawn(writer);
        }
    }

    /// Finds the devices of pushes by client id or alias at their registry
    /// shards' owners from now on (a router cluster, ADR 0033), instead of
    /// in this router's records of transient sessions.
    pub fn locate_through(&self, locator: crate::locate::Locator) {
        let _ = self.inner.locator.set(locator);
    }

    /// Returns a snapshot of the counters.
    pub fn counters(&self) -> RouterCounters {
        self.inner.state().counters().clone()
    }

    /// Follows the replicated registry shard table (each shard's generation
    /// now): grants of an owner that lost its shard since are refused.
    pub fn follow_shard_table(&self, generations: herald_core::ShardGenerations) {
        self.inner.state().follow_shard_table(generations);
    }

    /// Runs `f` with the state locked (for inspection by operators' tools
    /// and tests).
    pub fn with_state<T>(&self, f: impl FnOnce(&RouterState) -> T) -> T {
        f(&self.inner.state())
    }

    /// Starts serving a gateway's port. The task ends when the gateway drops
    /// its uplink sender; the gateway's sessions then wait for its lease
    /// (it may link again and take them back).
    ///
    /// `incarnation` tells processes apart: a port of the same gateway
    /// process replaces its old link (the process linked again before this
    /// router saw the old stream end); another process with a gateway id
    /// attached already is refused with `None`. `acks`: the gateway reports
    /// its clients' acknowledgements (a gateway of an earlier version does
    /// not, ADR 0028).
    pub fn attach(&self, port: RouterPort, incarnation: u64, acks: bool) -> Option<JoinHandle<()>> {
        let RouterPort { gateway, mut uplink, downlink } = port;
        let serial = self.inner.attachments.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut gateways = self.inner.gateways();
            if gateways.get(&gateway).is_some_and(|attached| attached.incarnation != incarnation) {
                return None;
            }
            gateways.insert(gateway, Attached { incarnation, serial, downlink });
        }
        let inner = self.inner.clone();
        Some(tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut effects = Vec::new();
            inner
                .run_batch(&mut effects, |state, _, out| {
                    state.gateway_linked(gateway, acks);
                    state.send_api_keys(gateway, out);
                })
                .await;
            while uplink.recv_many(&mut batch, BATCH).await > 0 {
                // A link that was replaced or let go applies nothing more:
                // its replies could not reach the gateway, which asks
                // again on its current link.
                if inner.gateways().get(&gateway).is_none_or(|attached| attached.serial != serial) {
                    break;
                }
                let refused = match inner.locator.get() {
                    Some(locator) => locate_items(&inner, locator, (gateway, serial), &mut batch),
                    None => Vec::new(),
                };
                inner
                    .run_batch_traced(&mut effects, |state, now, out| {
                        // Items beyond the lookups under way: the gateway
                        // answers 503, to be sent again.
                        out.extend(refused.into_iter().map(|refusal| (gateway, refusal)));
                        apply_traced(state, gateway, batch.drain(..), None, now, out)
                    })
                    .await;
                inner.timer_changed.notify_one();
            }
            let replaced = {
                let mut gateways = inner.gateways();
                match gateways.get(&gateway) {
                    Some(attached) if attached.serial != serial => true,
                    Some(_) => {
                        gateways.remove(&gateway);
                        false
                    }
                    None => false,
                }
            };
            if !replaced {
                inner
                    .run_batch(&mut effects, |state, now, out| state.gateway_unlinked(gateway, now, out))
                    .await;
                inner.timer_changed.notify_one();
            }
        }))
    }

    /// Publishes the wills a registry shard owner sends (ADR 0033), as any
    /// will; returns once they are in line with every other batch.
    pub async fn publish_wills(&self, wills: Vec<Box<herald_proto::seam::Will>>) {
        let mut effects = Vec::new();
        self.inner
            .run_batch(&mut effects, |state, now, out| state.publish_owner_wills(wills, now, out))
            .await;
        self.inner.timer_changed.notify_one();
    }

    /// Starts the task that fires wills and session expiries on time. It
    /// ends when `shutdown` resolves.
    pub fn spawn_timers(&self, shutdown: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let mut effects = Vec::new();
            loop {
                let now = inner.clock.now();
                let mut next = None;
                inner.run_batch(&mut effects, |state, now, out| next = state.tick(now, out)).await;
                let wait = next.map_or(TIMER_POLL, |at| wait_until(now, at).min(TIMER_POLL));
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(wait) => {}
                    () = inner.timer_changed.notified() => {}
                }
            }
        })
    }
}

/// Takes the items of `batch` that ask where sessions are (push-API sends,
/// directory answers showing whether devices are online) and applies them
/// once their shards' owners said, together, in a task of their own: a
/// shard being rebuilt holds back those items, not the gateway's others.
/// With [`LOCATING`] lookups under way, they are refused (their refusals
/// returned): the gateway's stream never waits for one. They are applied
/// only if the gateway's link (`serial`) is still the one they came on: a
/// gateway that linked again sends its unanswered requests again.
fn locate_items(
    inner: &Arc<Inner>,
    locator: &crate::locate::Locator,
    (gateway, serial): (NodeId, u64),
    batch: &mut Vec<Uplink>,
) -> Vec<Downlink> {
    if !batch.iter().any(crate::state::may_locate) {
        return Vec::new();
    }
    // The batch's items are located together: one call per owner.
    let (mut located_items, mut sessions, mut apps) = (Vec::new(), Vec::new(), HashSet::new());
    let state = inner.state();
    for item in std::mem::take(batch) {
        match state.to_locate(&item) {
            None => {
                batch.push(item);
                continue;
            }
            Some(ToLocate::Sessions(named)) => sessions.extend(named),
            Some(ToLocate::Everyone(app)) => {
                apps.insert(app);
            }
        }
        located_items.push(item);
    }
    drop(state);
    if located_items.is_empty() {
        return Vec::new();
    }
    let Ok(permit) = inner.locating.clone().try_acquire_owned() else {
        return located_items.iter().filter_map(busy).collect();
    };
    let (inner, locator) = (inner.clone(), locator.clone());
    tokio::spawn(async move {
        // Apps' counts and devices' locations are asked at once.
        let mut counting = tokio::task::JoinSet::new();
        for app in apps {
            let locator = locator.clone();
            counting.spawn(async move { (locator.count_online(&app).await, app) });
        }
        let mut located = Locations { sessions: locator.locate(sessions).await, ..Locations::default() };
        while let Some(counted) = counting.join_next().await {
            if let Ok((Some(counts), app)) = counted {
                located.everyone.insert(app, counts);
            }
        }
        let located = Arc::new(located);
        if inner.gateways().get(&gateway).is_none_or(|attached| attached.serial != serial) {
            return;
        }
        let mut effects = Vec::new();
        inner
            .run_batch_traced(&mut effects, |state, now, out| {
                apply_traced(state, gateway, located_items, Some(located), now, out)
            })
            .await;
        inner.timer_changed.notify_one();
        drop(permit);
    });
    Vec::new()
}

/// Applies `items` from `gateway` (with what the shards' owners said of
/// them: `located`), each traced push inside its routing span; returns the
/// spans of their Raft commits.
fn apply_traced(
    state: &mut RouterState,
    gateway: NodeId,
    items: impl IntoIterator<Item = Uplink>,
    located: Option<Arc<Locations>>,
    now: UnixMillis,
    out: &mut Vec<Effect>,
) -> Vec<tracing::Span> {
    let mut commits = Vec::new();
    for mut item in items {
        let traced = trace_push(&mut item);
        {
            let _entered = traced.as_ref().map(|(route, _)| route.enter());
            state.apply_located(gateway, item, located.clone(), now, out);
        }
        commits.extend(traced.map(|(_, commit)| commit));
    }
    commits
}

/// The refusal of an item not located for want of room: busy, to be sent
/// again.
fn busy(item: &Uplink) -> Option<Downlink> {
    let busy = herald_core::ErrorCode::ServerBusy;
    match item {
        Uplink::Push(push) => Some(Downlink::Pushed { request: push.request, result: Err(busy) }),
        Uplink::Directory { request, .. } => {
            Some(Downlink::DirectoryDone { request: *request, result: Err(busy) })
        }
        _ => None,
    }
}

/// The spans of a traced push (its message carries a trace context): its
/// routing, entered while the state applies it, and its Raft commit, which
/// ends once committed. Its deliveries then carry the routing span as their
/// parent.
fn trace_push(item: &mut Uplink) -> Option<(tracing::Span, tracing::Span)> {
    let Uplink::Push(push) = item else { return None };
    let parent = push.message.trace?;
    let route = tracing::info_span!("push.route", app = %push.message.app, message_id = %push.message.id);
    herald_proto::trace::set_parent(&route, &parent);
    let commit = tracing::info_span!(parent: &route, "raft.commit");
    if let Some(context) = herald_proto::trace::context_of(&route) {
        Arc::make_mut(&mut push.message).trace = Some(context);
    }
    Some((route, commit))
}

/// Dispatches each stage's effects once its commit is done, in the order
/// the stages were sent; after a failed commit, nothing more.
async fn dispatch_in_order(inner: std::sync::Weak<Inner>, mut stages: mpsc::Receiver<Stage>) {
    while let Some(mut stage) = stages.recv().await {
        let outcome = match stage.commit.take() {
            Some(committing) => committing.await,
            None => Ok(()),
        };
        let Some(inner) = inner.upgrade() else { return };
        match outcome {
            Ok(()) if inner.failed.borrow().is_none() => {
                let mut state = inner.state();
                inner.dispatch(&mut state, &mut stage.effects);
                state.settle_batch(stage.batch);
            }
            Ok(()) => {}
            Err(reason) => inner.fail(reason),
        }
        // The traced pushes' `raft.commit` spans end with their commit.
        drop(std::mem::take(&mut stage.traced));
        inner.queued.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Reads the registry for the Redis writer.
struct Snapshotter(std::sync::Weak<Inner>);

impl crate::registry_redis::Snapshots for Snapshotter {
    fn snapshot(
        &self,
        queued: &mut mpsc::Receiver<Vec<crate::state::RegistryEntry>>,
    ) -> crate::registry_redis::Snapshot {
        let Some(inner) = self.0.upgrade() else { return crate::registry_redis::Snapshot::Gone };
        let mut state = inner.state();
        // Changes are offered with the state locked: what is queued now is
        // older than the snapshot, and what comes after it is newer.
        while queued.try_recv().is_ok() {}
        crate::registry_redis::Snapshot::Ready(state.generations().clone(), state.registry_snapshot())
    }
}

fn wait_until(now: UnixMillis, at: UnixMillis) -> Duration {
    Duration::from_millis(at.0.saturating_sub(now.0))
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies one batch of work to the state and, in turn with every other
    /// batch, submits its durable facts; its effects go out once they are
    /// committed, after those of every earlier batch.
    async fn run_batch(
        &self,
        effects: &mut Vec<Effect>,
        work: impl FnOnce(&mut RouterState, UnixMillis, &mut Vec<Effect>),
    ) {
        self.run_batch_traced(effects, |state, now, out| {
            work(state, now, out);
            Vec::new()
        })
        .await;
    }

    /// [`Inner::run_batch`] for work that returns the spans to end once
    /// its commit is done.
    async fn run_batch_traced(
        &self,
        effects: &mut Vec<Effect>,
        work: impl FnOnce(&mut RouterState, UnixMillis, &mut Vec<Effect>) -> Vec<tracing::Span>,
    ) {
        let _turn = self.turn.lock().await;
        let facts = {
            let now = self.clock.now();
            let mut state = self.state();
            let traced = work(&mut state, now, effects);
            let batch = state.seal_batch();
            let facts = state.take_journal();
            let nothing_pending = self.queued.load(std::sync::atomic::Ordering::Acquire) == 0;
            if self.stages.is_none() || (facts.is_empty() && nothing_pending) {
                self.dispatch(&mut state, effects);
                state.settle_batch(batch);
                return;
            }
            (facts, batch, traced)
        };
        let (facts, batch, traced) = facts;
        let (Some(journal), Some(stages)) = (&self.journal, &self.stages) else { return };
        let commit = if facts.is_empty() {
            None
        } else {
            match journal.submit(&facts).await {
                Ok(committing) => Some(committing),
                Err(reason) => {
                    effects.clear();
                    return self.fail(reason);
                }
            }
        };
        self.queued.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let stage = Stage { effects: std::mem::take(effects), commit, batch, traced };
        if stages.send(stage).await.is_err() {
            self.queued.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// A commit failed: nothing of it may be acknowledged, and the state now
    /// differs from what is durable. Stops serving.
    fn fail(&self, reason: String) {
        tracing::error!(%reason, "journal commit failed: disconnecting every gateway");
        self.gateways().clear();
        self.failed.send_replace(Some(reason));
    }

    fn gateways(&self) -> MutexGuard<'_, HashMap<NodeId, Attached>> {
        self.gateways.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands effects to their gateways' downlinks while the state is still
    /// locked, so every gateway sees items in the order the state applied
    /// them (a delivery routed before a release arrives before `Released`,
    /// whichever gateway's uplink caused either), and never waits.
    ///
    /// Overflow policy: a delivery offered to a downlink more than half full
    /// is dropped and counted (`dropped_gateway_backlog`), which keeps the
    /// other half for replies (a gateway has at most an eighth of the
    /// downlink's capacity of its clients' requests waiting for replies);
    /// any other item (a reply, a revocation, a handover) to a full
    /// downlink means the gateway stopped draining: it is disconnected
    /// (`gateways_overloaded`), which ends its link and, as for any gateway
    /// gone, its sessions.
    fn dispatch(&self, state: &mut RouterState, effects: &mut Vec<Effect>) {
        if let Some(registry) = self.registry.get() {
            registry.offer(state.take_registry_changes());
        }
        let mut gateways = self.gateways();
        for (gateway, item) in effects.drain(..) {
            let Some(sender) = gateways.get(&gateway).map(|attached| &attached.downlink) else { continue };
            // Deliveries take at most half the downlink: the other half is
            // for replies, which the gateway bounds (an eighth of it).
            if matches!(item, Downlink::Deliver(_)) && sender.capacity() < sender.max_capacity() / 2 {
                state.count_gateway_backlog_drop();
                continue;
            }
            match sender.try_send(item) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(Downlink::Deliver(_))) => {
                    state.count_gateway_backlog_drop()
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::error!(%gateway, "gateway downlink full of replies: disconnecting it");
                    gateways.remove(&gateway);
                    state.count_gateway_overloaded();
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
