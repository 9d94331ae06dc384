//! The router's async shell: one task per attached gateway port applies
//! that gateway's uplink in order, and a timer task fires wills and
//! expiries. Both lock the state once per batch, never across an await.

use crate::state::{Effect, RouterConfig, RouterCounters, RouterState};
use herald_core::{Clock, NodeId, UnixMillis};
use herald_proto::seam::{Downlink, RouterPort};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// Items applied per lock of the state.
const BATCH: usize = 256;
/// The timer task looks at the clock at least this often, so a clock that
/// is moved by hand (tests) or steps is noticed.
const TIMER_POLL: Duration = Duration::from_millis(250);

/// The in-process router: serves any number of gateway ports.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<RouterState>,
    gateways: Mutex<HashMap<NodeId, mpsc::Sender<Downlink>>>,
    clock: Arc<dyn Clock>,
    timer_changed: Notify,
}

impl Router {
    /// Returns a router whose state starts empty. `generation` must exceed
    /// that of any earlier run, so epochs never go backwards.
    pub fn new(config: RouterConfig, generation: u64, clock: Arc<dyn Clock>) -> Router {
        let inner = Inner {
            state: Mutex::new(RouterState::new(config, generation)),
            gateways: Mutex::new(HashMap::new()),
            clock,
            timer_changed: Notify::new(),
        };
        Router { inner: Arc::new(inner) }
    }

    /// Returns a snapshot of the counters.
    pub fn counters(&self) -> RouterCounters {
        self.inner.state().counters().clone()
    }

    /// Runs `f` with the state locked (for inspection by operators' tools
    /// and tests).
    pub fn with_state<T>(&self, f: impl FnOnce(&RouterState) -> T) -> T {
        f(&self.inner.state())
    }

    /// Starts serving a gateway's port. The task ends when the gateway drops
    /// its uplink sender.
    ///
    /// Returns `None`, attaching nothing, when a gateway with the same id is
    /// attached already (checked and inserted under one lock).
    pub fn attach(&self, port: RouterPort) -> Option<JoinHandle<()>> {
        let RouterPort { gateway, mut uplink, downlink } = port;
        {
            let mut gateways = self.inner.gateways();
            if gateways.contains_key(&gateway) {
                return None;
            }
            gateways.insert(gateway, downlink);
        }
        let inner = self.inner.clone();
        Some(tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut effects = Vec::new();
            while uplink.recv_many(&mut batch, BATCH).await > 0 {
                {
                    let now = inner.clock.now();
                    let mut state = inner.state();
                    for item in batch.drain(..) {
                        state.apply(gateway, item, now, &mut effects);
                    }
                    inner.dispatch(&mut state, &mut effects);
                }
                inner.timer_changed.notify_one();
            }
            // The gateway is gone: whatever it still held ends here.
            inner.gateways().remove(&gateway);
            {
                let now = inner.clock.now();
                let mut state = inner.state();
                state.gateway_gone(gateway, now, &mut effects);
                inner.dispatch(&mut state, &mut effects);
            }
            inner.timer_changed.notify_one();
        }))
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
                let next = {
                    let mut state = inner.state();
                    let next = state.tick(now, &mut effects);
                    inner.dispatch(&mut state, &mut effects);
                    next
                };
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

fn wait_until(now: UnixMillis, at: UnixMillis) -> Duration {
    Duration::from_millis(at.0.saturating_sub(now.0))
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn gateways(&self) -> MutexGuard<'_, HashMap<NodeId, mpsc::Sender<Downlink>>> {
        self.gateways.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands effects to their gateways' downlinks while the state is still
    /// locked, so every gateway sees items in the order the state applied
    /// them (a delivery routed before a release arrives before `Released`,
    /// whichever gateway's uplink caused either), and never waits.
    ///
    /// Overflow policy: a delivery offered to a full downlink is dropped and
    /// counted (`dropped_gateway_backlog`); any other item (a reply, a
    /// revocation, a handover) to a full downlink means the gateway stopped
    /// draining: it is disconnected (`gateways_overloaded`), which ends its
    /// link and, as for any gateway gone, its sessions.
    fn dispatch(&self, state: &mut RouterState, effects: &mut Vec<Effect>) {
        let mut gateways = self.gateways();
        for (gateway, item) in effects.drain(..) {
            let Some(sender) = gateways.get(&gateway) else { continue };
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
