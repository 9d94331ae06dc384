//! What this gateway's devices did with push-API messages, reported to
//! the router for their delivery status: counts gathered per message and
//! sent every half second as one `Uplink::Report`, numbered per gateway
//! process so the router counts each report once even when a new link
//! asks again.

use crate::Shared;
use crate::session::PushEvent;
use herald_core::{AppId, MessageId};
use herald_proto::seam::{PushDelta, Uplink};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often counts go to the router.
const EVERY: Duration = Duration::from_millis(500);
/// How long a report waits for its answer before the next one goes.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Messages counted between two reports at most; past it, further
/// messages' counts wait for the next report (policy: bounded memory,
/// nothing dropped while the router answers).
const MAX_MESSAGES: usize = 100_000;

/// Counts gathered since the last report.
#[derive(Default)]
pub(crate) struct Reports {
    counts: Mutex<HashMap<(AppId, MessageId), PushDelta>>,
}

impl Reports {
    /// Counts one event of a device of `app`.
    pub(crate) fn add(&self, app: &AppId, event: PushEvent) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let message = match event {
            PushEvent::Delivered { message, .. }
            | PushEvent::Acknowledged { message }
            | PushEvent::Cancelled { message }
            | PushEvent::Replaced { message } => message,
        };
        let key = (app.clone(), message);
        if !counts.contains_key(&key) && counts.len() >= MAX_MESSAGES {
            return;
        }
        let delta = counts.entry(key).or_insert_with(|| PushDelta {
            app: app.clone(),
            message,
            delivered_online: 0,
            delivered_from_offline: 0,
            acknowledged: 0,
            cancelled: 0,
            replaced: 0,
        });
        match event {
            PushEvent::Delivered { from_offline: true, .. } => delta.delivered_from_offline += 1,
            PushEvent::Delivered { from_offline: false, .. } => delta.delivered_online += 1,
            PushEvent::Acknowledged { .. } => delta.acknowledged += 1,
            PushEvent::Cancelled { .. } => delta.cancelled += 1,
            PushEvent::Replaced { .. } => delta.replaced += 1,
        }
    }

    fn take(&self) -> Vec<PushDelta> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *counts).into_values().collect()
    }
}

/// Sends the gathered counts to the router until the gateway stops.
pub(crate) async fn run(shared: Arc<Shared>, origin: u64) {
    let mut batch = 0;
    // A report not answered yet goes again with its own number until it
    // is (the router counts each number once).
    let mut unanswered: Option<Vec<PushDelta>> = None;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let deltas = match unanswered.take() {
            Some(deltas) => deltas,
            None => {
                let deltas = shared.reports.take();
                if deltas.is_empty() {
                    continue;
                }
                batch += 1;
                deltas
            }
        };
        let Some((request, answered)) = shared.api.begin(usize::MAX) else { continue };
        let report = Uplink::Report { request, origin, batch, deltas: deltas.clone() };
        if shared.uplink.send(report).await.is_err() {
            return;
        }
        // Asked again on a new link while this waits (router_client).
        if !matches!(tokio::time::timeout(ANSWER_WAIT, answered).await, Ok(Ok(_))) {
            shared.api.forget(request);
            unanswered = Some(deltas);
        }
    }
}
