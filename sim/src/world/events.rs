//! The event loop's one step: what each scheduled event does to the world.

use super::*;

impl Sim {
    /// The node an event happens on, if it is one a pause holds back.
    pub(super) fn target(ev: &Ev) -> Option<usize> {
        match ev {
            Ev::Frame { to, .. } | Ev::StreamBytes { to, .. } => Some(*to),
            Ev::StreamLost { node, .. } => Some(*node),
            Ev::Tick { node } => Some(*node),
            Ev::Send { producer, .. } => Some(*producer),
            Ev::FlushDone { broker, .. } | Ev::PersistDone { broker, .. } => Some(*broker),
            Ev::NsPersistDone { ns, .. } => Some(*ns),
            // A paused application finishes later.
            Ev::Processed { consumer, .. }
            | Ev::PopReceive { consumer, .. }
            | Ev::PopAnswer { consumer, .. } => Some(*consumer),
            _ => None,
        }
    }

    /// The broker at `node` if it still runs the generation a disk completion was for (one
    /// that crashed and restarted since never sees its predecessor's flushes).
    fn live_broker(&mut self, node: usize, generation: u64) -> Option<&mut Broker<MemDisk>> {
        match &mut self.fabric.nodes[node] {
            Node::Broker {
                machine: Some(b),
                generation: g,
                ..
            } if *g == generation => Some(b),
            _ => None,
        }
    }

    pub(super) fn step(&mut self, ev: Ev) {
        // A paused node handles nothing until it resumes: its events wait, in order.
        if let Some(node) = Self::target(&ev)
            && let Some(until) = self.paused.get(&node).copied()
        {
            if until > self.now {
                let mut ev = ev;
                match &mut ev {
                    Ev::Tick { node } => {
                        if self.ticks.get(node) != Some(&self.now) {
                            return;
                        }
                        self.ticks.insert(*node, until);
                    }
                    Ev::Frame { arrived, .. } => {
                        arrived.get_or_insert(self.now);
                    }
                    _ => {}
                }
                self.push(until, ev);
                return;
            }
            self.paused.remove(&node);
            let line = format!("t={} recover resume {node}", self.now);
            self.log(line);
        }
        match ev {
            Ev::StreamBytes {
                sid,
                from,
                to,
                bytes,
                epochs,
            } => self.deliver_stream(sid, (from, to), epochs, bytes),
            Ev::StreamLost { node, conn, epoch } => {
                if self.epochs[node] == epoch
                    && !self.down.contains(&node)
                    && self.fabric.take_untold(node, conn)
                {
                    let now = self.local(node);
                    if let Some(b) = self.fabric.nodes[node].broker() {
                        b.on_disconnect(conn, now);
                    }
                    let line = format!("t={} stream {conn:?} of {node} lost", self.now);
                    self.log(line);
                    self.after(node);
                }
            }
            Ev::Frame {
                sent,
                from,
                to,
                frame,
                epochs,
                arrived,
            } => {
                let arrived = arrived.unwrap_or(self.now);
                self.deliver(sent, arrived, (from, to), epochs, frame)
            }
            Ev::Tick { node } => {
                if self.ticks.get(&node) != Some(&self.now) {
                    return;
                }
                self.ticks.remove(&node);
                let now = self.local(node);
                self.fabric.nodes[node].on_timeout(now);
                // A broker's timeout revives pop checkpoints that fell due: the pop journal
                // read after it tells revives from acks.
                self.pop_timeout = Some(node);
                self.after(node);
                self.pop_timeout = None;
                // A machine that handled its timeout and is due again at once, time after
                // time, spins: a real driver would burn a core on it.
                let again = self.fabric.nodes[node]
                    .poll_timeout()
                    .is_some_and(|t| t <= now);
                let streak = self.due_streak.entry(node).or_default();
                *streak = if again { *streak + 1 } else { 0 };
                if *streak == BUSY_TIMER_STREAK {
                    let line = format!("t={} node {node} timer spins", self.now);
                    self.log(line);
                    self.history.busy_timers.push((node, self.now));
                }
                if self.is_broker(node) && self.faults_on {
                    self.maybe_faults(node);
                }
            }
            Ev::Send { producer, n } if self.left.contains(&producer) => {
                let line = format!(
                    "t={} producer {producer} is down: send {n} not made",
                    self.now
                );
                self.log(line);
            }
            Ev::Send { producer, n } => {
                let p = producer - self.first_client();
                let (m, l) = (self.cfg.messages, self.cfg.liveness_messages);
                let body = if n < m {
                    format!("p{p}-{n}")
                } else if n < m + l {
                    format!("p{p}-L{}", n - m)
                } else {
                    format!("p{p}-S{}", n - m - l)
                };
                let now = self.local(producer);
                let orderly = self.cfg.orderly;
                let tag = TAGS[n % TAGS.len()];
                // Mixed sends: mostly async, then sync, oneway and a batch of three.
                let (mode, batch) = match (self.cfg.mixed_sends, n % 8) {
                    (true, 5) => (SendMode::Sync, false),
                    (true, 6) => (SendMode::Oneway, false),
                    (true, 7) if !orderly => (SendMode::Async, true),
                    _ => (SendMode::Async, false),
                };
                // Delayed (single sends of a concurrent group) and poison messages, decided
                // once per message: an application's re-send is the same message.
                let (delay, timer, poison) = if self.history.sent.contains_key(&body) {
                    (
                        self.history.delayed.get(&body).copied(),
                        self.history.timers.get(&body).copied(),
                        self.history.poison.contains(&body),
                    )
                } else {
                    let delay = (!batch
                        && !orderly
                        && self.cfg.delay_share > 0.0
                        && self.chance(Stream::Workload, self.cfg.delay_share))
                    .then(|| self.between(Stream::Workload, (1, super::SIM_MAX_SEND_LEVEL)) as u32);
                    let timer = (delay.is_none()
                        && !batch
                        && !orderly
                        && self.cfg.timer_share > 0.0
                        && self.chance(Stream::Workload, self.cfg.timer_share))
                    .then(|| self.between(Stream::Workload, (500, 5_000)));
                    let poison = self.cfg.poison_share > 0.0
                        && self.chance(Stream::Workload, self.cfg.poison_share);
                    (delay, timer, poison)
                };
                // A transaction: single concurrent sends, not delayed, planned once.
                let tx = match self.history.transactions.get(&body).copied() {
                    Some(plan) => Some(plan),
                    // Sent while the faults fly: the liveness phase has time to resolve it.
                    None if n < m
                        && !batch
                        && !orderly
                        && delay.is_none()
                        && timer.is_none()
                        && !self.history.sent.contains_key(&body)
                        && self.cfg.transaction_share > 0.0
                        && self.chance(Stream::Transaction, self.cfg.transaction_share) =>
                    {
                        let commit = self.chance(Stream::Transaction, 0.7);
                        let ends = self.chance(Stream::Transaction, 0.8);
                        let end_after_ms = if self.chance(Stream::Transaction, 0.2) {
                            self.between(Stream::Transaction, (2_000, 8_000))
                        } else {
                            self.between(Stream::Transaction, (0, 200))
                        };
                        Some(super::TxPlan {
                            commit,
                            ends,
                            end_after_ms,
                        })
                    }
                    None => None,
                };
                let bodies: Vec<String> = if batch {
                    (0..3)
                        .map(|i| {
                            if i == 0 {
                                body.clone()
                            } else {
                                format!("{body}.{i}")
                            }
                        })
                        .collect()
                } else {
                    vec![body]
                };
                let msgs: Vec<Message> = bodies
                    .iter()
                    .map(|body| {
                        // Padding after a '#' fills the disk; the part before it names the
                        // message.
                        let mut payload = body.clone().into_bytes();
                        if payload.len() < self.cfg.body_bytes {
                            payload.push(b'#');
                            payload.resize(self.cfg.body_bytes, b'.');
                        }
                        let mut msg = Message::new(topic_of(n), payload);
                        msg.tags = Some(tag.to_string());
                        msg.keys = vec![format!("k{}", body.replace('.', "-"))];
                        if let Some(level) = delay {
                            msg = msg.with_delay_level(level);
                        }
                        if let Some(ms) = timer {
                            msg.properties
                                .insert("TIMER_DELAY_MS".into(), ms.to_string());
                        }
                        if self.cfg.tagged_sql {
                            msg.properties
                                .insert("prio".into(), super::sql_prio(n).to_string());
                        }
                        msg
                    })
                    .collect();
                if let Node::Producer(p) = &mut self.fabric.nodes[producer] {
                    let mut msgs = msgs;
                    let id = if let Some(plan) = tx {
                        self.history.transactions.insert(bodies[0].clone(), plan);
                        self.tx_sent_at.insert(bodies[0].clone(), self.now);
                        p.send_transactional(msgs.pop().expect("one message"), now)
                    } else if batch {
                        p.send_batch(msgs, mode, now)
                    } else if orderly {
                        // Messages of one sharding key go to one queue, in order.
                        let msg = msgs.pop().expect("one message");
                        p.send_ordered(msg, &format!("k{}", n % 8), mode, now)
                    } else {
                        p.send(msgs.pop().expect("one message"), mode, now)
                    };
                    for body in &bodies {
                        if let Some(level) = delay {
                            self.history.delayed.insert(body.clone(), level);
                        }
                        if poison {
                            self.history.poison.insert(body.clone());
                        }
                        if let Some(ms) = timer {
                            self.history.timers.insert(body.clone(), ms);
                        }
                        self.history.sent_at.entry(body.clone()).or_insert(self.now);
                        self.history.sent.entry(body.clone()).or_insert(None);
                        self.history.tags.insert(body.clone(), tag.to_string());
                        if self.cfg.tagged_sql {
                            self.history.prio.insert(body.clone(), super::sql_prio(n));
                        }
                        if mode == SendMode::Oneway {
                            self.history.oneway.insert(body.clone());
                        }
                    }
                    self.sends.insert((producer, id), (n, bodies));
                }
                self.after(producer);
            }
            Ev::FlushDone {
                broker,
                generation,
                upto,
                work,
            } => {
                let work = self.disk_work.remove(&work).expect("work is run once");
                let lying = self.cfg.bugs.lying_flush;
                let now = self.local(broker);
                if let Some(b) = self.live_broker(broker, generation) {
                    let done = if lying {
                        b.on_flushed(upto, now);
                        Ok(())
                    } else {
                        match work.and_then(|work| work()) {
                            Ok(()) => {
                                b.on_flushed(upto, now);
                                Ok(())
                            }
                            Err(e) => {
                                b.on_flush_failed(e.clone(), now);
                                Err(e)
                            }
                        }
                    };
                    let line = match done {
                        Ok(()) => format!("t={} flushed {broker} upto={upto}", self.now),
                        Err(e) => format!("t={} flush failed {broker} upto={upto}: {e}", self.now),
                    };
                    self.log(line);
                    self.after(broker);
                }
            }
            Ev::NsPersistDone {
                ns,
                epoch,
                token,
                work,
            } => {
                let work = self.disk_work.remove(&work).expect("work is run once");
                // A name server that went down since never finished its write.
                if self.down.contains(&ns) || self.epochs[ns] != epoch {
                    return;
                }
                let now = self.local(ns);
                if let Node::NameServer(n) = &mut self.fabric.nodes[ns] {
                    n.on_persisted(token, work.and_then(|work| work()), now);
                    self.after(ns);
                }
            }
            Ev::PersistDone {
                broker,
                generation,
                token,
                work,
            } => {
                let work = self.disk_work.remove(&work).expect("work is run once");
                let now = self.local(broker);
                if let Some(b) = self.live_broker(broker, generation) {
                    b.on_persisted(token, work.and_then(|work| work()), now);
                    self.after(broker);
                }
            }
            Ev::Crash {
                broker,
                power,
                operator,
            } => {
                if !self.faults_on && !operator {
                    return;
                }
                let Node::Broker {
                    machine: Some(_),
                    disk,
                    generation,
                } = &self.fabric.nodes[broker]
                else {
                    return;
                };
                if self.armed.contains_key(&broker) {
                    return; // it dies at a disk operation soon
                }
                let (disk, generation) = (disk.clone(), *generation);
                let brokers = self.broker_nodes().count();
                let lost = !operator
                    && self.lost.len() + 1 < brokers
                    && self.chance(Stream::Crash, self.cfg.faults.broker_lost_share);
                if !operator && self.chance(Stream::Crash, self.cfg.faults.crash_at_io) {
                    // It dies at one of its next disk operations, mid whatever it does then.
                    let ops = self.between(Stream::Crash, (0, 40));
                    disk.arm_fuse(ops);
                    self.armed.insert(broker, (power, lost));
                    let line = format!(
                        "t={} fault broker {broker} dies at its disk operation {ops} from now",
                        self.now
                    );
                    self.log(line);
                    // One that does no disk work for a while dies anyway.
                    self.push(
                        self.now + FUSE_FALLBACK_MS,
                        Ev::FuseFallback { broker, generation },
                    );
                    return;
                }
                self.crash_broker(broker, power, lost);
            }
            Ev::FuseFallback { broker, generation } => {
                let live = matches!(
                    &self.fabric.nodes[broker],
                    Node::Broker { machine: Some(_), generation: g, .. } if *g == generation
                );
                if live && let Some((power, lost)) = self.armed.remove(&broker) {
                    if let Node::Broker { disk, .. } = &self.fabric.nodes[broker] {
                        disk.disarm_fuse();
                    }
                    self.crash_broker(broker, power, lost);
                }
            }
            Ev::Restart { broker } => {
                if (self.cfg.bugs.no_restart && self.history.crashes > 0)
                    || self.lost.contains(&broker)
                {
                    return;
                }
                if matches!(
                    self.fabric.nodes[broker],
                    Node::Broker { machine: None, .. }
                ) {
                    self.step_clock(broker);
                    self.start_broker(broker);
                    self.after(broker);
                }
            }
            Ev::NsCrash { ns } => {
                if !self.faults_on || !self.down.insert(ns) {
                    return;
                }
                self.history.namesrv_crashes += 1;
                self.epochs[ns] += 1;
                let line = format!("t={} name server {ns} down", self.now);
                self.log(line);
                self.fabric.forget_server(ns);
                self.ticks.remove(&ns);
                let d = self.between(Stream::Namesrv, self.cfg.faults.down_ms);
                self.push(self.now + d, Ev::NsRestart { ns });
            }
            Ev::NsRestart { ns } => {
                if self.down.remove(&ns) {
                    self.step_clock(ns);
                    // It comes back with an empty route table: brokers fill it again. Its
                    // controller comes back from its raft log.
                    let log = self.ns_disks[ns]
                        .read_file(rockfish_core::controller::RAFT_LOG_FILE)
                        .expect("a name server's disk reads");
                    self.fabric.nodes[ns] = Node::NameServer(super::name_server(
                        &self.cfg,
                        ns,
                        self.name_servers,
                        log.as_deref(),
                        self.local(ns),
                    ));
                    let line = format!("t={} name server {ns} up", self.now);
                    self.log(line);
                    self.after(ns);
                }
            }
            Ev::Heal { id, node } => {
                let before = self.cuts.len();
                self.cuts.retain(|c| c.id != id);
                if self.cuts.len() < before {
                    let line = format!("t={} recover heal {node}", self.now);
                    self.log(line);
                }
            }
            Ev::Pause { node, ms } => {
                if self.faults_on && !self.paused.contains_key(&node) {
                    let line = format!("t={} fault pause {node} for {ms}ms", self.now);
                    self.log(line);
                    self.paused.insert(node, self.now + ms);
                }
            }
            Ev::Leave { consumer } => {
                if !self.faults_on || self.left.contains(&consumer) {
                    return;
                }
                let line = format!("t={} fault leave {consumer}", self.now);
                self.log(line);
                let now = self.local(consumer);
                if let Node::Consumer(c) = &mut self.fabric.nodes[consumer] {
                    c.shutdown(now);
                }
                // Its goodbyes go out, then its connections close.
                self.after(consumer);
                self.pop_app_stopped(consumer);
                self.left.insert(consumer);
                self.epochs[consumer] += 1;
                self.ticks.remove(&consumer);
                self.disconnect(consumer);
                self.stop_application(consumer);
                let d = self.between(Stream::Churn, self.cfg.faults.down_ms);
                self.push(self.now + d, Ev::Join { consumer });
            }
            Ev::ClientCrash { node } => {
                if !self.faults_on || self.left.contains(&node) {
                    return;
                }
                let line = format!("t={} fault kill {node}", self.now);
                self.log(line);
                // Nothing it held in memory survives: sends in flight are never answered,
                // the application's batches stop, its connections drop unannounced.
                self.left.insert(node);
                self.epochs[node] += 1;
                self.ticks.remove(&node);
                self.sends.retain(|(p, _), _| *p != node);
                self.pop_app_stopped(node);
                self.stop_application(node);
                self.disconnect(node);
                self.killed.insert(node);
                let d = self.between(Stream::ClientCrash, self.cfg.faults.down_ms);
                self.push(self.now + d, Ev::Join { consumer: node });
            }
            Ev::Processed { consumer, job } => {
                // Gone if its consumer left meanwhile.
                let Some(job) = self.jobs.remove(&job) else {
                    return;
                };
                self.record_processing(&job);
                let now = self.local(consumer);
                if let Node::Consumer(c) = &mut self.fabric.nodes[consumer] {
                    for (offset, result) in &job.answers {
                        c.ack(&job.mq, *offset, *result, now);
                    }
                }
                self.after(consumer);
            }
            Ev::Join { consumer } => {
                if !self.left.remove(&consumer) {
                    return;
                }
                let line = format!("t={} recover join {consumer}", self.now);
                self.log(line);
                self.step_clock(consumer);
                let killed = self.killed.remove(&consumer);
                if let Node::Producer(_) = &self.fabric.nodes[consumer] {
                    // A producer process restarted: a new instance, nothing remembered.
                    let i = consumer - self.first_client();
                    let seed = self.stream(Stream::ClientCrash).random();
                    let pc = producer_config(&self.cfg, i, seed);
                    let now = self.local(consumer);
                    self.fabric.nodes[consumer] = Node::Producer(Producer::new(pc, now));
                    self.after(consumer);
                    return;
                }
                if let Node::Simple(_) = &self.fabric.nodes[consumer] {
                    self.restart_pop_consumer(consumer);
                    return;
                }
                let i = consumer - self.first_client() - self.cfg.producers;
                let group = self.group_of(consumer);
                let broadcast = group == Group::Broadcast;
                let seed = self.stream(Stream::Churn).random();
                let cc = consumer_config(&self.cfg, i, group, seed);
                let now = self.local(consumer);
                if let Node::Consumer(c) = &mut self.fabric.nodes[consumer] {
                    // A broadcasting consumer starts from the offsets it kept (a killed
                    // one kept none: it starts over from the first offset).
                    let kept = if broadcast && !killed {
                        c.offsets().clone()
                    } else {
                        BTreeMap::new()
                    };
                    *c = Consumer::new(cc, kept, now);
                }
                self.after(consumer);
            }
            Ev::EndTransaction { ticket } => self.end_transaction(ticket),
            Ev::PopReceive {
                consumer,
                epoch,
                topic,
            } => self.pop_receive(consumer, epoch, topic),
            Ev::PopAnswer {
                consumer,
                epoch,
                delivery,
                action,
            } => self.pop_answer(consumer, epoch, delivery, action),
            Ev::Liveness => {
                self.faults_on = false;
                // The machines' own fault sites stop with the other faults.
                self.buggify_fired += rockfish_core::buggify::disarm();
                self.cuts.clear();
                for c in &mut self.clogs {
                    c.until = c.until.min(self.now);
                }
                for consumer in self.left.clone() {
                    self.push(self.now, Ev::Join { consumer });
                }
                let line = format!("t={} liveness phase: faults off", self.now);
                self.log(line);
                for ns in std::mem::take(&mut self.down) {
                    self.down.insert(ns);
                    self.push(self.now, Ev::NsRestart { ns });
                }
                for broker in self.broker_nodes() {
                    if let Node::Broker { disk, .. } = &self.fabric.nodes[broker] {
                        disk.set_plan(FaultPlan::default());
                    }
                    // A store that stopped accepting writes after a disk failure stays
                    // stopped until restarted: the operator (or supervisor) restarts it.
                    let stopped = match &self.fabric.nodes[broker] {
                        Node::Broker {
                            machine: Some(b), ..
                        } => b.store().stopped().map(str::to_owned),
                        _ => None,
                    };
                    if let Some(reason) = stopped {
                        let line =
                            format!("t={} operator restarts broker {broker}: {reason}", self.now);
                        self.log(line);
                        self.push(
                            self.now,
                            Ev::Crash {
                                broker,
                                power: false,
                                operator: true,
                            },
                        );
                    }
                    self.push(self.now, Ev::Restart { broker });
                }
            }
        }
    }
}
