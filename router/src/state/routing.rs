//! Routes (which gateways subscribe to what) and retained messages.

use super::{Effect, RouterState};
use herald_core::{AppId, NodeId, Topic, TopicFilter};
use herald_proto::Message;
use herald_proto::seam::Downlink;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Retained messages of one app, one per topic.
#[derive(Debug, Default)]
pub(super) struct RetainedStore {
    by_topic: BTreeMap<Topic, Arc<Message>>,
}

impl RetainedStore {
    pub(super) fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// Stores `message` as its topic's retained message; an empty payload
    /// deletes it [MQTT-3.3.1-6].
    pub(super) fn store(&mut self, message: &Arc<Message>) {
        if message.payload.is_empty() {
            self.by_topic.remove(&message.topic);
        } else {
            self.by_topic.insert(message.topic.clone(), message.clone());
        }
    }

    /// Calls `visit` for every retained message.
    pub(super) fn for_each(&self, visit: impl FnMut(&Arc<Message>)) {
        self.by_topic.values().for_each(visit);
    }

    /// Calls `visit` for every retained message matching `filter`.
    pub(super) fn for_each_match(&self, filter: &TopicFilter, mut visit: impl FnMut(&Arc<Message>)) {
        let pattern = filter.match_filter();
        // A filter without wildcards names at most one topic.
        if !filter.has_wildcards() {
            if let Some(m) = Topic::new(pattern.to_owned()).ok().and_then(|t| self.by_topic.get(&t)) {
                visit(m);
            }
            return;
        }
        for (topic, message) in &self.by_topic {
            if filter.matches(topic) {
                visit(message);
            }
        }
    }
}

impl RouterState {
    pub(super) fn change_routes(
        &mut self,
        gateway: NodeId,
        add: Vec<(AppId, TopicFilter)>,
        remove: Vec<(AppId, TopicFilter)>,
        out: &mut Vec<Effect>,
    ) {
        for (app, filter) in add {
            self.gateway_routes.entry(gateway).or_default().insert((app.clone(), filter.clone()));
            if filter.share_group().is_some() {
                self.join_group(gateway, app, filter, out);
            } else {
                let key = (gateway, filter.clone());
                self.routes.entry(app).or_default().insert(filter.match_filter(), key, ());
            }
        }
        for (app, filter) in remove {
            if let Some(owned) = self.gateway_routes.get_mut(&gateway) {
                owned.remove(&(app.clone(), filter.clone()));
            }
            if filter.share_group().is_some() {
                self.leave_group(gateway, &app, &filter);
            } else if let Some(tree) = self.routes.get_mut(&app) {
                tree.remove(filter.match_filter(), &(gateway, filter.clone()));
            }
        }
    }

    /// Sends `message` to every gateway with a matching route. Returns
    /// whether any matched.
    pub(super) fn deliver_to_gateways(&mut self, message: &Arc<Message>, out: &mut Vec<Effect>) -> bool {
        let Some(tree) = self.routes.get(&message.app) else { return false };
        let mut gateways: Vec<NodeId> = Vec::new();
        tree.for_each_match(message.topic.as_str(), |(gateway, _filter), ()| {
            if !gateways.contains(gateway) {
                gateways.push(*gateway);
            }
        });
        for gateway in &gateways {
            out.push((*gateway, Downlink::Deliver(message.clone())));
        }
        !gateways.is_empty()
    }
}
