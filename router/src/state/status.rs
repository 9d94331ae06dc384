//! Delivery status of push-API messages: a record per message, made when
//! it is sent (who it was for, who was online, stored, unreachable) and
//! counted up from the gateways' reports (deliveries written, each device
//! once; acknowledgements). Reports are counted once per
//! `(gateway, origin, batch)`, so a report sent again on a new link does
//! not count twice.

use super::{Effect, RouterState};
use herald_core::{AppId, MessageId, NodeId, UnixMillis};
use herald_proto::Message;
use herald_proto::journal::{Fact, MessageRecord, ReportMark};
use herald_proto::seam::{Downlink, MessageStatus, PushDelta, PushReport};
use std::collections::{HashMap, VecDeque};

/// How long a record is kept after its message's ttl ends.
pub const RECORD_KEEP_MS: u64 = 24 * 3600 * 1000;
/// When an online-only message (ttl 0) is final: after this long.
pub const ONLINE_ONLY_FINAL_MS: u64 = 60_000;
/// Records kept per app at most; past it the oldest is forgotten early.
pub const MAX_RECORDS_PER_APP: usize = 100_000;
/// Gateway processes whose last report is remembered, per gateway.
const MARKS_PER_GATEWAY: usize = 16;

/// Every app's message records.
#[derive(Debug, Clone, Default)]
pub(super) struct Records {
    records: super::expiring::Expiring<MessageId, MessageRecord, MAX_RECORDS_PER_APP>,
    /// Per gateway, its recent processes and the last batch counted.
    marks: HashMap<NodeId, VecDeque<(u64, u64)>>,
}

impl Records {
    /// Keeps `record`, forgetting the app's oldest past the cap. Every
    /// replica runs the same rule.
    pub(super) fn keep(&mut self, record: MessageRecord) {
        let (app, message, until) = (record.app.clone(), record.status.message, record.forget_at);
        self.records.insert(app, message, until, record);
    }

    /// Counts a report unless its batch was counted: returns whether it was.
    pub(super) fn report(&mut self, gateway: NodeId, origin: u64, batch: u64, deltas: &[PushDelta]) -> bool {
        let marks = self.marks.entry(gateway).or_default();
        match marks.iter_mut().find(|(o, _)| *o == origin) {
            Some((_, last)) if *last >= batch => return false,
            Some((_, last)) => *last = batch,
            None => {
                marks.push_back((origin, batch));
                if marks.len() > MARKS_PER_GATEWAY {
                    marks.pop_front();
                }
            }
        }
        for delta in deltas {
            if let Some(record) = self.records.get_mut(&delta.app, &delta.message) {
                let s = &mut record.status;
                s.delivered_online = s.delivered_online.saturating_add(delta.delivered_online);
                s.delivered_from_offline =
                    s.delivered_from_offline.saturating_add(delta.delivered_from_offline);
                s.acknowledged = s.acknowledged.saturating_add(delta.acknowledged);
                s.cancelled = s.cancelled.saturating_add(delta.cancelled);
                s.replaced = s.replaced.saturating_add(delta.replaced);
            }
        }
        true
    }

    /// Counts copies of a message taken back.
    pub(super) fn retract(&mut self, app: &AppId, message: MessageId, cancelled: u64, replaced: u64) {
        if let Some(record) = self.records.get_mut(app, &message) {
            record.status.cancelled = record.status.cancelled.saturating_add(cancelled);
            record.status.replaced = record.status.replaced.saturating_add(replaced);
        }
    }

    /// Forgets the records whose time is over before `before`.
    pub(super) fn forget(&mut self, before: UnixMillis) -> bool {
        self.records.expire(before)
    }

    /// Returns a message's status at `now`.
    pub(super) fn status(&self, app: &AppId, message: MessageId, now: UnixMillis) -> Option<MessageStatus> {
        let record = self.records.get(app, &message)?;
        let mut s = record.status.clone();
        let end = s.expires_at.unwrap_or(UnixMillis(s.created_at.0.saturating_add(ONLINE_ONLY_FINAL_MS)));
        let delivered = s.delivered_online.saturating_add(s.delivered_from_offline);
        let accounted = [s.unreachable, s.cancelled, s.replaced, delivered.max(s.acknowledged)]
            .into_iter()
            .fold(0u64, u64::saturating_add);
        let left = s.targeted.saturating_sub(accounted);
        s.is_final = now >= end;
        (s.expired, s.pending) = if s.is_final { (left, 0) } else { (0, left) };
        s.as_of = now;
        Some(s)
    }

    /// Adds every record and mark to an image.
    pub(super) fn image(&self, records: &mut Vec<MessageRecord>, marks: &mut Vec<ReportMark>) {
        records.extend(self.records.values().cloned());
        for (gateway, list) in &self.marks {
            marks.extend(list.iter().map(|(origin, batch)| ReportMark {
                gateway: *gateway,
                origin: *origin,
                batch: *batch,
            }));
        }
    }

    /// Rebuilds from an image.
    pub(super) fn restore(&mut self, records: Vec<MessageRecord>, marks: Vec<ReportMark>) {
        for record in records {
            self.keep(record);
        }
        for mark in marks {
            self.marks.entry(mark.gateway).or_default().push_back((mark.origin, mark.batch));
        }
    }
}

impl RouterState {
    /// Makes the record of a message just sent.
    pub(super) fn record_message(&mut self, message: &Message, report: &PushReport) {
        let by_device = !report.devices.is_empty() || !report.unknown_aliases.is_empty();
        let unreachable = (report.devices.len() as u64).saturating_sub(report.online + report.stored);
        let status = MessageStatus {
            message: message.id,
            created_at: message.created_at,
            expires_at: message.expires_at,
            qos: message.qos.as_u8(),
            targeted: if by_device { report.devices.len() as u64 } else { report.online + report.stored },
            online: report.online,
            stored: report.stored,
            unreachable: if by_device { unreachable } else { 0 },
            ..MessageStatus::default()
        };
        let end = message
            .expires_at
            .unwrap_or(UnixMillis(message.created_at.0.saturating_add(ONLINE_ONLY_FINAL_MS)));
        let record = MessageRecord {
            app: message.app.clone(),
            status,
            forget_at: UnixMillis(end.0.saturating_add(RECORD_KEEP_MS)),
        };
        self.journal.push(Fact::MessageRecorded(Box::new(record.clone())));
        self.records.keep(record);
    }

    /// Counts a gateway's report (once per batch) and answers it.
    pub(super) fn report(
        &mut self,
        gateway: NodeId,
        request: u64,
        (origin, batch): (u64, u64),
        deltas: Vec<PushDelta>,
        out: &mut Vec<Effect>,
    ) {
        if self.records.report(gateway, origin, batch, &deltas) {
            self.journal.push(Fact::MessageReport { gateway, origin, batch, deltas });
        }
        out.push((gateway, Downlink::Reported { request }));
    }

    /// Forgets records whose time is over (a fact, so replicas agree).
    pub(super) fn forget_records(&mut self, now: UnixMillis) {
        if self.records.forget(now) {
            self.journal.push(Fact::MessagesForgotten(now));
        }
    }
}
