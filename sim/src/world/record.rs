//! What the checkers judge: every node's view of the routes and what each broker stores.

use super::*;
use rockfish_store::message_store::SCHEDULE_TOPIC;

/// The name a workload message's body gives it (the part before its padding).
pub(super) fn body_name(payload: &[u8]) -> String {
    let name = payload.split(|b| *b == b'#').next().unwrap_or_default();
    String::from_utf8_lossy(name).into_owned()
}

/// Every record a queue holds, page by page; a queue that does not read ends the walk there
/// (store-consistent judges unreadable queues).
pub(super) fn each_record<D: rockfish_store::Disk>(
    store: &rockfish_store::MessageStore<D>,
    topic: &str,
    q: u32,
    mut visit: impl FnMut(&rockfish_store::StoredRecord),
) {
    let mut offset = store.min_offset(topic, q);
    while offset < store.max_offset(topic, q) {
        let Ok(got) = store.get(topic, q, offset, 256, usize::MAX, &|_| true) else {
            break;
        };
        got.messages.iter().for_each(&mut visit);
        if got.next_offset <= offset {
            break;
        }
        offset = got.next_offset;
    }
}

impl Sim {
    /// Each slave's log against its master's at the end: the same bytes as far as the slave
    /// goes, and no further than the master. A group whose master lost power is not judged:
    /// without a controller to move the mastership, a slave that held more than its master
    /// kept stays ahead of it (and is refused), the one case one history cannot be kept.
    pub(super) fn record_replicas(&mut self) {
        for g in 0..self.groups() {
            let master = self.master_of(g);
            let name = format!("broker-{g}");
            // Controller mode moves the mastership and cuts a returning replica's tail: one
            // history is kept whatever lost power.
            if !self.cfg.controller
                && self
                    .history
                    .crash_log
                    .iter()
                    .any(|c| c.power && c.broker == name)
            {
                continue;
            }
            let Node::Broker {
                machine: Some(m), ..
            } = &self.fabric.nodes[master]
            else {
                continue;
            };
            let Ok((mlog, _)) = m.store().read_replicated(0, usize::MAX) else {
                continue;
            };
            for node in self.replicas_of(g).into_iter().filter(|&n| n != master) {
                let Node::Broker {
                    machine: Some(sb), ..
                } = &self.fabric.nodes[node]
                else {
                    continue;
                };
                let slog = match sb.store().read_replicated(0, usize::MAX) {
                    Ok((l, _)) => l,
                    Err(e) => {
                        let what = format!("slave {node}'s log does not read: {e}");
                        self.history.replica_problems.push((name.clone(), what));
                        continue;
                    }
                };
                let common = slog.len().min(mlog.len());
                let differ = (0..common).find(|&i| slog[i] != mlog[i]);
                let what = match differ {
                    Some(at) => Some(format!(
                        "slave {node}'s log differs from its master's at byte {at}"
                    )),
                    None if slog.len() > mlog.len() => Some(format!(
                        "slave {node}'s log ends at {}, past its master's {}",
                        slog.len(),
                        mlog.len()
                    )),
                    None => None,
                };
                if let Some(what) = what {
                    let line = format!("t={} replica problem: {what}", self.now);
                    self.log(line);
                    self.history.replica_problems.push((name.clone(), what));
                }
            }
        }
    }

    /// What each running broker holds in its schedule topic and its dead-letter topics at the
    /// end: what the delay and dead-letter checkers hold deliveries against.
    pub(super) fn record_retries(&mut self) {
        let dlq = format!(
            "{}{}",
            rockfish_core::protocol::topics::DLQ_GROUP_TOPIC_PREFIX,
            CLUSTERING_GROUP
        );
        let pop_dlq = format!(
            "{}{}",
            rockfish_core::protocol::topics::DLQ_GROUP_TOPIC_PREFIX,
            POP_GROUP
        );
        for node in self.master_nodes() {
            let Node::Broker {
                machine: Some(b), ..
            } = &self.fabric.nodes[node]
            else {
                continue;
            };
            let name = b.config().broker_name.clone();
            let store = b.store();
            let queues: Vec<(String, u32)> = store
                .queue_ids()
                .filter(|(t, _)| *t == SCHEDULE_TOPIC || *t == dlq || *t == pop_dlq)
                .map(|(t, q)| (t.to_string(), q))
                .collect();
            for (topic, q) in queues {
                each_record(store, &topic, q, |m| {
                    let body = body_name(&m.body());
                    if topic == SCHEDULE_TOPIC {
                        self.history
                            .scheduled
                            .entry((name.clone(), body))
                            .or_default()
                            .push((m.store_timestamp(), q + 1, m.reconsume_times()));
                    } else if topic == pop_dlq {
                        self.history.pop_dead_letters.push((
                            name.clone(),
                            body,
                            m.reconsume_times(),
                        ));
                    } else {
                        self.history.dead_letters.push((
                            name.clone(),
                            topic.clone(),
                            body,
                            m.reconsume_times(),
                        ));
                    }
                });
            }
        }
    }

    /// Every live node's view of each topic's route, and which brokers host each topic.
    pub(super) fn record_routes(&mut self) {
        let mut views = Vec::new();
        let mut hosting: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for topic in TOPICS {
            for (n, node) in self.fabric.nodes.iter().enumerate() {
                let brokers: Option<BTreeSet<String>> = match node {
                    Node::NameServer(ns) if !self.down.contains(&n) => Some(
                        ns.route(topic)
                            .map(|r| r.broker_datas.into_iter().map(|b| b.broker_name).collect())
                            .unwrap_or_default(),
                    ),
                    Node::Broker {
                        machine: Some(b), ..
                    } => {
                        if b.topic(topic).is_some() {
                            hosting
                                .entry(topic.to_string())
                                .or_default()
                                .push(b.config().broker_name.clone());
                        }
                        None
                    }
                    Node::Producer(p) => Some(
                        p.queues(topic)
                            .unwrap_or_default()
                            .iter()
                            .map(|q| q.broker_name.clone())
                            .collect(),
                    ),
                    Node::Consumer(c) if !self.left.contains(&n) => Some(
                        c.route(topic)
                            .map(|r| {
                                r.broker_datas
                                    .iter()
                                    .map(|b| b.broker_name.clone())
                                    .collect()
                            })
                            .unwrap_or_default(),
                    ),
                    _ => None,
                };
                if let Some(brokers) = brokers {
                    views.push(RouteView {
                        node: n,
                        topic: topic.to_string(),
                        brokers: brokers.into_iter().collect(),
                    });
                }
            }
        }
        // A group's slave hosts what its master does: one name per group.
        for names in hosting.values_mut() {
            names.sort();
            names.dedup();
        }
        self.history.hosting = hosting;
        self.history.routes = views;
    }

    /// What each running broker holds of the topic at the end, queue offset by queue offset,
    /// and whether its store agrees with itself and with its disk: every consume queue entry
    /// reads back as the record it points at, every stored message is found by its key, the
    /// checkpoint is no further than the flushed offset, and a power loss now would keep at
    /// least what the broker believes flushed (`History::store_problems`).
    pub(super) fn record_stored(&mut self) {
        self.history
            .stored_topics
            .extend(TOPICS.iter().map(|t| t.to_string()));
        for node in self.master_nodes() {
            let Node::Broker {
                machine: Some(b),
                disk,
                ..
            } = &self.fabric.nodes[node]
            else {
                continue;
            };
            let name = b.config().broker_name.clone();
            let store = b.store();
            let mut problems = Vec::new();
            let queues: Vec<(&str, u32)> = store
                .queue_ids()
                .filter(|(t, _)| TOPICS.contains(t))
                .collect();
            for (topic, q) in queues {
                let mut offset = store.min_offset(topic, q);
                while offset < store.max_offset(topic, q) {
                    // The tag code of each entry read, to hold against its record's tag.
                    let codes = std::cell::RefCell::new(Vec::new());
                    let all = |c: i64| {
                        codes.borrow_mut().push(c);
                        true
                    };
                    let got = match store.get(topic, q, offset, 256, usize::MAX, &all) {
                        Ok(got) => got,
                        Err(e) => {
                            problems.push(format!("{topic}/q{q}@{offset} does not read: {e}"));
                            break;
                        }
                    };
                    let codes = codes.into_inner();
                    for (i, m) in got.messages.iter().enumerate() {
                        let tags = m.property("TAGS").unwrap_or_default();
                        let want = rockfish_store::message_store::tags_code(
                            store.config(),
                            topic,
                            m.properties(),
                            0,
                        );
                        if codes.get(i) != Some(&want) {
                            problems.push(format!(
                                "{topic}/q{q}@{}: the consume queue's tag code {:?} is not its \
                                 record's ({want}, tags {:?})",
                                m.queue_offset(),
                                codes.get(i),
                                String::from_utf8_lossy(tags)
                            ));
                        }
                        let payload = m.body();
                        let body = payload.split(|b| *b == b'#').next().unwrap_or_default();
                        let body = String::from_utf8_lossy(body).into_owned();
                        let slot = (name.clone(), topic.to_string(), q, m.queue_offset());
                        if let Some(key) = m.property("KEYS") {
                            let key = String::from_utf8_lossy(key).into_owned();
                            let found =
                                store
                                    .query_by_key(topic, &key, 0, i64::MAX, 64)
                                    .map(|hits| {
                                        hits.iter()
                                            .any(|h| h.physical_offset() == m.physical_offset())
                                    });
                            if !matches!(found, Ok(true)) {
                                problems.push(format!(
                                    "{topic}/q{q}@{} ({body}) is not found by its key {key}: \
                                     {found:?}",
                                    m.queue_offset()
                                ));
                            }
                        }
                        self.history.stored.insert(slot, body);
                    }
                    if got.next_offset <= offset {
                        break;
                    }
                    offset = got.next_offset;
                }
            }
            let flushed = store.flushed();
            if store.checkpointed() > flushed {
                problems.push(format!(
                    "the checkpoint ({}) is past the flushed offset ({flushed})",
                    store.checkpointed()
                ));
            }
            // What a power loss right now would leave: recovery must find at least what the
            // broker believes flushed (SYNC_FLUSH acknowledged sends up to there).
            let image = disk.durable_image();
            match MessageStore::open(image, super::sim_store_config(), self.local(node)) {
                Ok((_, report)) if report.log_end < flushed => problems.push(format!(
                    "a power loss now would keep {} bytes of the log, but {flushed} are \
                     believed flushed",
                    report.log_end
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!("a power loss now would leave no store: {e}")),
            }
            for what in problems {
                self.history.store_problems.push((name.clone(), what));
            }
            self.history.stored_brokers.insert(name);
        }
    }

    /// Which queues each running consumer of a clustering group owns at the end.
    pub(super) fn record_owners(&mut self) {
        for (n, node) in self.fabric.nodes.iter().enumerate() {
            let Node::Consumer(c) = node else { continue };
            let group = self.group_of(n);
            if self.left.contains(&n) || group == Group::Broadcast {
                continue;
            }
            for mq in c.assigned() {
                self.history
                    .owners
                    .entry((group, mq.broker_name.clone(), mq.topic.clone(), mq.queue_id))
                    .or_default()
                    .push(n);
            }
        }
    }
}
