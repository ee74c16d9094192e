//! Where a topic's messages can go: the writable queues of its route and their brokers.

use std::collections::BTreeMap;

use crate::protocol::{MessageQueue, TopicRouteData, perm};

/// RocketMQ's TopicPublishInfo: the queues a topic can be sent to, and the master address
/// of each broker holding them.
#[derive(Debug, Clone)]
pub(super) struct TopicPublishInfo {
    pub queues: Vec<MessageQueue>,
    /// Broker name to its master's address.
    pub brokers: BTreeMap<String, String>,
}

impl TopicPublishInfo {
    /// The queue at `hash` modulo the queue count (ordered sends: one key, one queue).
    pub fn by_hash(&self, hash: i32) -> Option<(MessageQueue, String)> {
        let n = self.queues.len();
        if n == 0 {
            return None;
        }
        self.pick(&self.queues[(hash % n as i32).unsigned_abs() as usize])
    }

    /// RocketMQ's selectOneMessageQueue: round-robin from `start`, the first queue whose
    /// broker `usable` accepts, else the queue at `start`.
    pub fn round_robin(
        &self,
        start: u32,
        usable: impl Fn(&str) -> bool,
    ) -> Option<(MessageQueue, String)> {
        let n = self.queues.len();
        if n == 0 {
            return None;
        }
        let at = |i: usize| &self.queues[(start as usize).wrapping_add(i) % n];
        (0..n)
            .map(at)
            .find(|mq| usable(&mq.broker_name))
            .map_or_else(|| self.pick(at(0)), |mq| self.pick(mq))
    }

    fn pick(&self, mq: &MessageQueue) -> Option<(MessageQueue, String)> {
        self.brokers
            .get(&mq.broker_name)
            .map(|a| (mq.clone(), a.clone()))
    }
}

/// RocketMQ's topicRouteData2TopicPublishInfo: every writable queue of every broker whose
/// master is known, in route order (brokers sorted by name, as name servers send them).
pub(super) fn publish_info(topic: &str, route: &TopicRouteData) -> TopicPublishInfo {
    let mut qds = route.queue_datas.clone();
    qds.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
    let mut brokers = BTreeMap::new();
    let mut queues = Vec::new();
    for qd in qds {
        if !perm::writeable(qd.perm) {
            continue;
        }
        let Some(addr) = route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == qd.broker_name)
            .and_then(|b| b.master_addr())
        else {
            continue;
        };
        brokers.insert(qd.broker_name.clone(), addr.to_string());
        for q in 0..qd.write_queue_nums {
            queues.push(MessageQueue {
                topic: topic.to_string(),
                broker_name: qd.broker_name.clone(),
                queue_id: q,
            });
        }
    }
    TopicPublishInfo { queues, brokers }
}
