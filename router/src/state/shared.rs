//! Shared subscription groups (`$share/{group}/{filter}`, §4.8.2).
//!
//! The router knows, per group, which gateways have members (a gateway
//! joins when its first local member subscribes and leaves with its last:
//! route changes, not per-member writes). Each message matching the group
//! goes to one gateway, picked by the configured strategy; the gateway
//! picks the member. With no gateway in the group, QoS 1/2 messages wait
//! in the group's bounded queue and go to the first gateway that joins.

use super::{Effect, RouterState};
use herald_core::{AppId, Dispatcher, NodeId, QoS, TopicFilter, TopicTree};
use herald_proto::Message;
use herald_proto::journal::GroupQueue;
use herald_proto::seam::Downlink;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The shared subscription groups of one app.
#[derive(Debug, Default)]
pub(super) struct SharedGroups {
    /// Group filters by their matching part, to find a message's groups.
    index: TopicTree<TopicFilter, ()>,
    groups: HashMap<TopicFilter, Group>,
}

impl SharedGroups {
    /// Returns the group `filter`, creating it (and indexing its filter)
    /// when it is new.
    fn group(&mut self, filter: &TopicFilter) -> &mut Group {
        if !self.groups.contains_key(filter) {
            self.index.insert(filter.match_filter(), filter.clone(), ());
        }
        self.groups.entry(filter.clone()).or_default()
    }

    /// Returns the groups' filters.
    pub(super) fn filters(&self) -> impl Iterator<Item = &TopicFilter> {
        self.groups.keys()
    }
}

#[derive(Debug, Default)]
struct Group {
    /// Gateways with at least one member.
    gateways: Vec<NodeId>,
    /// Messages waiting for a member (QoS 1/2 only), oldest first.
    queue: VecDeque<Arc<Message>>,
    dispatcher: Dispatcher<NodeId>,
}

impl RouterState {
    /// `gateway` has its first local member of `filter`.
    pub(super) fn join_group(
        &mut self,
        gateway: NodeId,
        app: AppId,
        filter: TopicFilter,
        out: &mut Vec<Effect>,
    ) {
        let group = self.shared.entry(app.clone()).or_default().group(&filter);
        if !group.gateways.contains(&gateway) {
            group.gateways.push(gateway);
        }
        // Whatever waited for a member goes to the first gateway with one.
        let drained = !group.queue.is_empty();
        for message in group.queue.drain(..) {
            out.push((gateway, Downlink::DeliverShared { filter: filter.clone(), message }));
        }
        if drained {
            self.dirty_groups.insert((app, filter));
        }
    }

    /// `gateway` has no local member of `filter` any more. The group stays:
    /// persistent members may be offline, and its messages wait for them.
    pub(super) fn leave_group(&mut self, gateway: NodeId, app: &AppId, filter: &TopicFilter) {
        let Some(groups) = self.shared.get_mut(app) else { return };
        if let Some(group) = groups.groups.get_mut(filter) {
            group.gateways.retain(|g| *g != gateway);
        }
    }

    /// Makes sure the group `filter` exists, so that its messages wait even
    /// while none of its members is online.
    pub(super) fn ensure_group(&mut self, app: &AppId, filter: &TopicFilter) {
        self.shared.entry(app.clone()).or_default().group(filter);
    }

    /// Sends `message` to one gateway of every group it matches. Returns
    /// whether any group matched.
    pub(super) fn dispatch_to_groups(&mut self, message: &Arc<Message>, out: &mut Vec<Effect>) -> bool {
        let Some(groups) = self.shared.get(&message.app) else { return false };
        let mut matching = Vec::new();
        groups.index.for_each_match(message.topic.as_str(), |filter, ()| matching.push(filter.clone()));
        for filter in &matching {
            self.dispatch_to_group(filter, message.clone(), out);
        }
        !matching.is_empty()
    }

    /// Sends `message` to one gateway of the group `filter`, or queues it
    /// when the group has none (QoS 0 is dropped then, and counted).
    pub(super) fn dispatch_to_group(
        &mut self,
        filter: &TopicFilter,
        message: Arc<Message>,
        out: &mut Vec<Effect>,
    ) {
        let strategy = self.config.shared_strategy;
        let limit = self.config.max_queued_messages;
        let group = self.shared.entry(message.app.clone()).or_default().group(filter);
        let publisher = message.origin.as_ref().map(|c| c.as_str());
        match group.dispatcher.pick(strategy, &group.gateways, publisher, message.topic.as_str()) {
            Some(gateway) => out.push((gateway, Downlink::DeliverShared { filter: filter.clone(), message })),
            None if message.qos == QoS::AtMostOnce => self.counters.dropped_shared_no_member += 1,
            None if group.queue.len() >= limit => self.counters.dropped_queue_full += 1,
            None => {
                let app = message.app.clone();
                group.queue.push_back(message);
                self.mark_group(&app, filter);
            }
        }
    }

    /// Returns the messages waiting in the group `filter` of `app`.
    pub(super) fn group_queue(&self, app: &AppId, filter: &TopicFilter) -> Vec<Arc<Message>> {
        let group = self.shared.get(app).and_then(|g| g.groups.get(filter));
        group.map(|g| g.queue.iter().cloned().collect()).unwrap_or_default()
    }

    /// Puts back the messages a group had waiting before a restart.
    pub(super) fn restore_group_queue(&mut self, queue: GroupQueue) {
        let group = self.shared.entry(queue.app).or_default().group(&queue.filter);
        group.queue = queue.messages.into();
    }

    /// Returns the number of messages waiting in the group `filter` of `app`.
    pub fn group_backlog(&self, app: &AppId, filter: &TopicFilter) -> usize {
        self.shared.get(app).and_then(|g| g.groups.get(filter)).map_or(0, |g| g.queue.len())
    }
}
