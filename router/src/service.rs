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
                }
                inner.timer_changed.notify_one();
                inner.dispatch(&mut effects).await;
            }
            // The gateway is gone: whatever it still held ends here.
            inner.gateways().remove(&gateway);
            {
                let now = inner.clock.now();
                inner.state().gateway_gone(gateway, now, &mut effects);
            }
            inner.timer_changed.notify_one();
            inner.dispatch(&mut effects).await;
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
                let next = inner.state().tick(now, &mut effects);
                inner.dispatch(&mut effects).await;
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

    /// Sends effects to their gateways. Deliveries are offered and dropped
    /// (counted) when a gateway's downlink is full; replies and revocations
    /// wait for room, since they are bounded by requests in flight.
    async fn dispatch(&self, effects: &mut Vec<Effect>) {
        for (gateway, item) in effects.drain(..) {
            let Some(sender) = self.gateways().get(&gateway).cloned() else { continue };
            match item {
                Downlink::Deliver(_) => {
                    if let Err(mpsc::error::TrySendError::Full(_)) = sender.try_send(item) {
                        self.state().count_gateway_backlog_drop();
                    }
                }
                other => {
                    // A closed downlink means the gateway is gone; its
                    // sessions are released by its shutdown or lease.
                    let _ = sender.send(other).await;
                }
            }
        }
    }
}
