//! Nodes: starting a broker on its disk, and draining a node's outputs and events after every
//! input (the machine contract in rockfish_core::machine).

use super::*;

impl Sim {
    pub(super) fn start_broker(&mut self, node: usize) {
        let now = self.now;
        let seed = self.stream(Stream::Main).random();
        let j = node - self.name_servers;
        let (group, broker_id) = self.group_and_id(node);
        let namesrv_addrs: Vec<String> = (0..self.name_servers).map(ns_addr).collect();
        let controller = self.cfg.controller;
        let mut config = BrokerConfig {
            broker_addr: broker_addr(j),
            broker_name: format!("broker-{group}"),
            // Controller mode: replicas 1.. (routes list whichever leads as 0).
            broker_id: broker_id + controller as u64,
            broker_role: if broker_id == 0 || controller {
                self.cfg.master_role
            } else {
                rockfish_core::broker::BrokerRole::Slave
            },
            enable_controller_mode: controller,
            controller_addrs: if controller {
                namesrv_addrs.clone()
            } else {
                Vec::new()
            },
            ha_max_time_slave_not_catchup_ms: 5_000,
            ha_addr: broker_ha_addr(j),
            namesrv_addrs,
            flush_disk_type: self.cfg.flush,
            limits: self.cfg.broker_limits.clone(),
            seed,
            transaction_timeout_ms: super::SIM_TX_TIMEOUT_MS,
            transaction_check_interval_ms: super::SIM_TX_CHECK_INTERVAL_MS,
            // Producers come back within a run: a half is never given up.
            transaction_check_max: 10_000,
            enable_property_filter: true,
            // The simulated log is small (64 KiB segments): early flushes and checkpoints by
            // bytes happen here as they do under a real broker's heavy load.
            flush_behind_bytes: 16 << 10,
            checkpoint_behind_bytes: 32 << 10,
            ..BrokerConfig::default()
        };
        if self.cfg.bugs.register_once {
            config.register_interval_ms = 1 << 40;
        }
        // Recovery, then the broker's own start (it persists its topic table): either may
        // meet a disk fault; the supervisor tries again. While faults fly, another crash may
        // cut recovery short at one of its disk operations.
        let clock = self.local(node);
        let fuse = self.faults_on && self.chance(Stream::Crash, self.cfg.faults.crash_at_io);
        let power = fuse && self.chance(Stream::Crash, self.cfg.faults.power_loss_share);
        let ops = self.between(Stream::Crash, (0, 60));
        let Node::Broker { disk, .. } = &self.fabric.nodes[node] else {
            unreachable!()
        };
        if fuse {
            disk.arm_fuse(ops);
        }
        let Node::Broker {
            machine,
            disk,
            generation,
        } = &mut self.fabric.nodes[node]
        else {
            unreachable!()
        };
        let started = MessageStore::open(disk.clone(), super::sim_store_config(), clock)
            .map_err(|e| format!("recovery failed: {e}"))
            .and_then(|(store, report)| {
                Broker::new(config, store, clock)
                    .map(|b| (b, report))
                    .map_err(|e| format!("start failed: {e}"))
            });
        if fuse && disk.fuse_blown() {
            let disk = disk.clone();
            drop(started);
            let how = if power { "lost power" } else { "died" };
            let line =
                format!("t={now} broker {node} {how} during recovery at disk operation {ops}");
            self.log(line);
            if power {
                disk.power_loss();
            } else {
                disk.crash();
            }
            let was_master = self.died_as_master[node];
            self.record_crash(node, power, was_master);
            self.push(now + 500, Ev::Restart { broker: node });
            return;
        }
        disk.disarm_fuse();
        let mut pop_recovered = false;
        let line = match started {
            Ok((broker, report)) => {
                *machine = Some(Box::new(broker));
                *generation += 1;
                pop_recovered = true;
                let mut line = format!(
                    "t={now} broker {node} up gen={generation} log_end={} truncated={}",
                    report.log_end,
                    report.truncated.is_some()
                );
                if let Some(problem) = &report.checkpoint_problem {
                    line.push_str(&format!(" checkpoint_problem={problem:?}"));
                }
                if !report.rebuilt_queues.is_empty() {
                    line.push_str(&format!(" rebuilt={:?}", report.rebuilt_queues));
                }
                if let Some(note) = &report.index_note {
                    line.push_str(&format!(" index={note:?}"));
                }
                line
            }
            Err(e) => {
                self.push(now + 500, Ev::Restart { broker: node });
                format!("t={now} broker {node} {e}; retrying")
            }
        };
        self.log(line);
        if pop_recovered && self.cfg.pop_consumers > 0 {
            self.scan_pop_journal(node, true);
        }
    }

    /// The broker's process dies now (a kill, or the machine losing power); `lost`: the
    /// machine never comes back.
    pub(super) fn crash_broker(&mut self, broker: usize, power: bool, lost: bool) {
        self.replica_views.remove(&broker);
        let Node::Broker { machine, disk, .. } = &mut self.fabric.nodes[broker] else {
            unreachable!()
        };
        let Some(gone) = machine.take() else {
            return;
        };
        let was_master = gone.role().is_master();
        self.died_as_master[broker] = was_master;
        self.pop_died_at.insert(broker, self.now);
        drop(gone);
        if power {
            disk.power_loss();
        } else {
            disk.crash();
        }
        self.record_crash(broker, power, was_master);
        let line = format!(
            "t={} broker {broker} {}",
            self.now,
            if power { "power loss" } else { "crash" }
        );
        self.log(line);
        // Its connections die with it: a killed process's kernel closes those it dialed (the
        // name servers see its registration connection close); a machine that lost power
        // closes nothing.
        if !power {
            self.disconnect(broker);
        }
        self.fabric.forget_server(broker);
        self.fabric.forget_untold(broker);
        self.streams_die_with(broker, power);
        self.ticks.remove(&broker);
        // A killed process's sockets are closed by its kernel: its clients see the
        // connections drop at once. A machine that lost power closes nothing: its
        // clients find out when what they asked of it times out.
        if !power {
            let addr = broker_addr(broker - self.name_servers);
            for n in self.first_client()..self.fabric.nodes.len() {
                if self.left.contains(&n) {
                    continue;
                }
                let now = self.local(n);
                self.fabric.nodes[n].on_peer_lost(&addr, now);
                self.after(n);
            }
        }
        if lost {
            self.lost.insert(broker);
            let name = format!("broker-{}", broker - self.name_servers);
            let line = format!("t={} fault broker {broker} lost for good", self.now);
            self.log(line);
            self.history.lost_brokers.insert(name);
            return;
        }
        let down = self.between(Stream::Crash, self.cfg.faults.down_ms);
        self.push(self.now + down, Ev::Restart { broker });
    }

    /// A broker process died (its disk already crashed or lost power): counted for the
    /// checkers, and its connections' frames are lost from now on.
    /// A SYNC_MASTER's SEND_OK was just heard: the group's slave must hold the message
    /// durably already (it was acked on the slave's durable report).
    fn judge_sync_ack(&mut self, r: &rockfish_core::producer::SendResult, bodies: &[String]) {
        if self.cfg.slaves == 0
            || self.cfg.master_role != rockfish_core::broker::BrokerRole::SyncMaster
        {
            return;
        }
        let Some(group) = r
            .queue
            .broker_name
            .strip_prefix("broker-")
            .and_then(|g| g.parse::<usize>().ok())
        else {
            return;
        };
        let ids: Vec<_> = r
            .offset_msg_id
            .split(',')
            .filter_map(rockfish_core::message::parse_offset_msg_id)
            .collect();
        let last = ids.iter().map(|(_, phys)| *phys).max();
        // The replica that acked (its address is in the offset message id); the others must
        // hold the message (controller mode: whichever replica leads).
        let acker = ids.first().and_then(|(host, _)| {
            self.replicas_of(group).into_iter().find(|&n| {
                rockfish_core::broker::parse_host(&broker_addr(n - self.name_servers))
                    .is_some_and(|h| h == *host)
            })
        });
        let others: Vec<usize> = self
            .replicas_of(group)
            .into_iter()
            .filter(|&n| Some(n) != acker)
            .collect();
        // Held: durable on some other replica, and the same message there (a replica whose
        // log diverged may hold other bytes at the offset).
        let mut durable = 0;
        let mut same = false;
        for n in others {
            let Some(b) = self.fabric.nodes[n].broker() else {
                return; // down now: its durable log is on its disk, judged when it runs
            };
            let flushed = b.store().flushed();
            durable = durable.max(flushed);
            same |= last.is_some_and(|phys| flushed > phys)
                && ids.iter().zip(bodies).all(|((_, phys), body)| {
                    b.store()
                        .read(*phys)
                        .is_ok_and(|rec| rec.body().as_ref() == body.as_bytes())
                });
        }
        if let Some(phys) = last
            && !same
        {
            let what = if durable > phys {
                format!(
                    "acked at log offset {phys} of {}; its slave holds other bytes there",
                    r.queue.broker_name
                )
            } else {
                format!(
                    "acked at log offset {phys} of {}; its slave holds {durable} durably",
                    r.queue.broker_name
                )
            };
            let line = format!("t={} sync ack unreplicated: {what}", self.now);
            self.log(line);
            for body in bodies {
                self.history
                    .sync_unreplicated
                    .push((body.clone(), what.clone()));
            }
        }
    }

    /// Controller mode: a replica acting as master of an epoch another replica led is two
    /// masters in one epoch.
    fn record_epoch_master(&mut self, node: usize) {
        let Node::Broker {
            machine: Some(b), ..
        } = &self.fabric.nodes[node]
        else {
            return;
        };
        let view = (
            b.role().is_master(),
            b.master_epoch(),
            b.store().write_pos(),
        );
        if let Some(&(master, epoch, end)) = self.replica_views.get(&node)
            && (master, epoch) != (view.0, view.1)
        {
            let role = if view.0 { "master" } else { "slave" };
            let line = format!(
                "t={} broker {node} now {role} in epoch {} at {} (was {} in epoch {epoch} at {end})",
                self.now,
                view.1,
                view.2,
                if master { "master" } else { "slave" },
            );
            self.log(line);
        }
        if let Some(&(_, _, end)) = self.replica_views.get(&node)
            && view.2 < end
        {
            let line = format!(
                "t={} broker {node} log cut from {end} to {}",
                self.now, view.2
            );
            self.log(line);
        }
        self.replica_views.insert(node, view);
        if !view.0 {
            return;
        }
        let epoch = view.1;
        let (group, _) = self.group_and_id(node);
        match self.history.epoch_masters.get(&(group, epoch)).copied() {
            None => {
                if self
                    .history
                    .epoch_masters
                    .keys()
                    .any(|(g, e)| *g == group && *e < epoch)
                {
                    self.history.failovers += 1;
                }
                self.history.epoch_masters.insert((group, epoch), node);
                let line = format!(
                    "t={} broker {node} leads broker-{group} in epoch {epoch}",
                    self.now
                );
                self.log(line);
            }
            Some(other) if other != node => {
                let what = format!("brokers {other} and {node} both led epoch {epoch}");
                let line = format!("t={} two masters: {what}", self.now);
                self.log(line);
                self.history
                    .two_masters
                    .push((format!("broker-{group}"), what));
            }
            Some(_) => {}
        }
    }

    /// `was_master`: controller mode names a crash by the role the replica had (a master's
    /// power loss may take what it acked under ASYNC_FLUSH, as a configured master's).
    pub(super) fn record_crash(&mut self, broker: usize, power: bool, was_master: bool) {
        self.epochs[broker] += 1;
        if power {
            self.history.power_losses += 1;
        }
        self.history.crashes += 1;
        let (group, id) = self.group_and_id(broker);
        self.history.crash_log.push(CrashRecord {
            at: self.now,
            broker: if (id == 0 && !self.cfg.controller) || (self.cfg.controller && was_master) {
                format!("broker-{group}")
            } else {
                format!("broker-{group}-slave{id}")
            },
            power,
        });
    }

    /// A broker's disk work (a flush or a persist) is built now, as the driver builds it for
    /// its flush thread, and completes after a simulated latency, as long as the broker is
    /// not restarted meanwhile (the event carries its generation).
    pub(super) fn disk_done(
        &mut self,
        node: usize,
        work: Result<SyncWork, String>,
        ev: impl FnOnce(usize, u64, u64) -> Ev,
    ) {
        let Node::Broker { generation, .. } = &self.fabric.nodes[node] else {
            return;
        };
        let generation = *generation;
        self.next_work += 1;
        let id = self.next_work;
        self.disk_work.insert(id, work);
        // A sync takes `sync_ms`, now and then (while faults fly) the long tail.
        let mut took = self.between(Stream::Main, self.cfg.faults.sync_ms);
        let slow = self.faults_on && self.chance(Stream::Disk, self.cfg.faults.slow_sync);
        if slow {
            took = self.between(Stream::Disk, self.cfg.faults.slow_sync_ms);
            let line = format!("t={} fault slow sync {node} {took}ms", self.now);
            self.log(line);
        }
        self.push(self.now + took, ev(node, generation, id));
    }

    /// A consumer's process exited: its application stops mid-batch, never answering.
    pub(super) fn stop_application(&mut self, consumer: usize) {
        let stopped: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.consumer == consumer)
            .map(|(id, _)| *id)
            .collect();
        for id in stopped {
            let job = self.jobs.remove(&id).expect("listed");
            self.record_processing(&job);
        }
    }

    /// The clustering group's application held `job`'s queue until now.
    pub(super) fn record_processing(&mut self, job: &Job) {
        if self.group_of(job.consumer) != Group::Clustering {
            return;
        }
        self.history.processing.push(Processing {
            consumer: job.consumer,
            broker: job.mq.broker_name.clone(),
            topic: job.mq.topic.clone(),
            queue: job.mq.queue_id,
            from: job.from,
            to: self.now,
        });
    }

    /// Drains a node's outputs and events, then arms its timer.
    pub(super) fn after(&mut self, node: usize) {
        // A consumer that left is a process that exited: nothing runs there.
        if self.left.contains(&node) {
            return;
        }
        // What a broker handed out to pop consumers, read from its journal as written (also
        // what it wrote before a disk operation that killed it, if its disk still reads).
        if self.cfg.pop_consumers > 0 && self.is_broker(node) {
            self.scan_pop_journal(node, false);
        }
        // A broker whose armed crash struck at a disk operation just now: it died there, and
        // nothing it did after that operation leaves the process.
        if let Some(&(power, lost)) = self.armed.get(&node)
            && let Node::Broker { disk, .. } = &self.fabric.nodes[node]
            && disk.fuse_blown()
        {
            self.armed.remove(&node);
            let line = format!("t={} broker {node} died at a disk operation", self.now);
            self.log(line);
            self.crash_broker(node, power, lost);
            return;
        }
        if self.cfg.controller && self.is_broker(node) {
            self.record_epoch_master(node);
        }
        let mut outs = Vec::new();
        let mut delivered = Vec::new();
        let mut sent = Vec::new();
        let mut popped = Vec::new();
        match &mut self.fabric.nodes[node] {
            Node::NameServer(ns) => outs.extend(std::iter::from_fn(|| ns.poll_output())),
            Node::Broker {
                machine: Some(b), ..
            } => outs.extend(std::iter::from_fn(|| b.poll_output())),
            Node::Broker { machine: None, .. } => {}
            Node::Producer(p) => {
                outs.extend(std::iter::from_fn(|| p.poll_output()));
                sent.extend(std::iter::from_fn(|| p.poll_event()));
            }
            Node::Consumer(c) => {
                outs.extend(std::iter::from_fn(|| c.poll_output()));
                delivered.extend(std::iter::from_fn(|| c.poll_event()));
            }
            Node::Simple(c) => {
                outs.extend(std::iter::from_fn(|| c.poll_output()));
                popped.extend(std::iter::from_fn(|| c.poll_event()));
            }
            // No scenario runs a proxy yet (its machine tests use the harness `Cluster`).
            Node::Proxy(p) => outs.extend(std::iter::from_fn(|| p.poll_output())),
        }
        for out in outs {
            let kind = out.kind();
            match self.fabric.route(node, out) {
                Routed::Frame { to, frame } => self.transmit(node, to, frame),
                Routed::Flush { upto } => {
                    let Some(b) = self.fabric.nodes[node].broker() else {
                        continue;
                    };
                    let work = b.flush_work(upto);
                    self.disk_done(node, work, |broker, generation, work| Ev::FlushDone {
                        broker,
                        generation,
                        upto,
                        work,
                    })
                }
                Routed::Persist { token, files } if node < self.name_servers => {
                    // The embedded controller's raft log, written after a sync's latency.
                    let work = self.ns_disks[node].write_job(files);
                    self.next_work += 1;
                    let id = self.next_work;
                    self.disk_work.insert(id, work);
                    let took = self.between(Stream::Main, self.cfg.faults.sync_ms);
                    let epoch = self.epochs[node];
                    self.push(
                        self.now + took,
                        Ev::NsPersistDone {
                            ns: node,
                            epoch,
                            token,
                            work: id,
                        },
                    );
                }
                Routed::Persist { token, files } => {
                    let Some(b) = self.fabric.nodes[node].broker() else {
                        continue;
                    };
                    let work = b.persist_work(token, files);
                    self.disk_done(node, work, |broker, generation, work| Ev::PersistDone {
                        broker,
                        generation,
                        token,
                        work,
                    })
                }
                Routed::Close { conn, reason } => self.close(node, conn, &reason),
                Routed::OpenStream { addr } => self.open_stream(node, &addr),
                Routed::StreamBytes { sid, to, bytes } => {
                    self.transmit_stream(sid, node, to, bytes)
                }
                Routed::CloseStream { sid } => self.close_stream(node, sid),
                Routed::CloseUntold { conn } => {
                    if self.fabric.take_untold(node, conn) {
                        let now = self.local(node);
                        if let Some(b) = self.fabric.nodes[node].broker() {
                            b.on_disconnect(conn, now);
                        }
                        self.after(node);
                    }
                }
                Routed::Nowhere => {
                    // As on a socket: a write to a closed connection is lost. Traced, not
                    // silent.
                    let line = format!("t={} {node} {kind} lost: peer gone", self.now);
                    self.log(line);
                }
            }
        }
        for event in sent {
            let (id, result) = match event {
                ProducerEvent::Sent { id, result, .. } => (id, result),
                ProducerEvent::CheckTransaction(check) => {
                    self.on_transaction_check(node, *check);
                    continue;
                }
            };
            let Some((n, bodies)) = self.sends.remove(&(node, id)) else {
                continue;
            };
            // A oneway send reports once written: no acknowledgement, nothing to judge.
            if bodies.iter().any(|b| self.history.oneway.contains(b)) {
                continue;
            }
            let status = result.as_ref().ok().map(|r| r.status);
            let tx = bodies
                .first()
                .is_some_and(|b| self.history.transactions.contains_key(b));
            if tx && let Ok(r) = &result {
                self.transaction_sent(node, r.clone(), bodies[0].clone());
            }
            // A transaction is not sent again by the application: its first half may still
            // be committed by a check-back.
            if self.cfg.resend_failed
                && !tx
                && status != Some(SendStatus::SendOk)
                && !self.faults_on
                && let Some(first) = bodies.first()
                && *self.resent.entry(first.clone()).or_default() < APP_RESENDS
            {
                *self.resent.get_mut(first).expect("entered") += 1;
                let line = format!("t={} app resends {first} after {status:?}", self.now);
                self.log(line);
                self.push(self.now + APP_RESEND_MS, Ev::Send { producer: node, n });
            }
            if let Ok(r) = &result
                && r.status == SendStatus::SendOk
            {
                self.judge_sync_ack(r, &bodies);
            }
            for (i, body) in bodies.into_iter().enumerate() {
                let line = format!("t={} sent {body} {:?} by {node}", self.now, status);
                self.log(line);
                // A delayed send's offset is its place in the schedule topic, not in its topic.
                if let Ok(r) = &result
                    && r.status == SendStatus::SendOk
                    && !self.history.delayed.contains_key(&body)
                    && !self.history.timers.contains_key(&body)
                    && !tx
                {
                    // A batch's messages take consecutive offsets from the first.
                    let slot = (
                        r.queue.broker_name.clone(),
                        r.queue.topic.clone(),
                        r.queue.queue_id,
                        r.queue_offset + i as u64,
                    );
                    self.history.acked_at.insert(body.clone(), slot);
                }
                self.history.sent.insert(body, status);
            }
        }
        if !popped.is_empty() {
            self.on_pop_events(node, popped);
        }
        let group = self.group_of(node);
        for e in delivered {
            let ConsumerEvent::Deliver { mq, msgs } = e else {
                continue;
            };
            let mut answers = Vec::new();
            for m in msgs {
                let payload = m.body();
                let name = payload.split(|b| *b == b'#').next().unwrap_or_default();
                let body = String::from_utf8_lossy(name).into_owned();
                // The application consumes it, or now and then asks for it again later.
                let asked_again = self.chance(Stream::App, self.cfg.reconsume_share);
                let poison = group == Group::Clustering && self.history.poison.contains(&body);
                let consumed = !asked_again && !poison;
                let line = format!(
                    "t={} deliver c{} {body} {}/q{}@{}{}",
                    self.now,
                    node,
                    mq.broker_name,
                    mq.queue_id,
                    m.queue_offset(),
                    if consumed { "" } else { " later" }
                );
                self.log(line);
                self.history.delivered.push(Delivery {
                    at: self.now,
                    consumer: node,
                    group,
                    body,
                    tags: m
                        .property("TAGS")
                        .map(|t| String::from_utf8_lossy(t).into_owned())
                        .unwrap_or_default(),
                    broker: mq.broker_name.clone(),
                    topic: mq.topic.clone(),
                    queue: mq.queue_id,
                    offset: m.queue_offset(),
                    consumed,
                    reconsumed: m.stored_reconsume_times(),
                    stored_ts: m.store_timestamp(),
                    via_schedule: m.property("REAL_TOPIC").is_some(),
                    timer_due: m
                        .property("TIMER_OUT_MS")
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.parse().ok()),
                });
                let result = if consumed {
                    ConsumeResult::Success
                } else {
                    ConsumeResult::ReconsumeLater
                };
                answers.push((m.queue_offset(), result));
            }
            // The application answers once it has worked through the batch.
            let mut ms = 0;
            for _ in &answers {
                ms += self.between(Stream::App, PROCESSING_MS);
            }
            self.next_job += 1;
            let job = self.next_job;
            self.jobs.insert(
                job,
                Job {
                    consumer: node,
                    mq,
                    from: self.now,
                    answers,
                },
            );
            self.push(
                self.now + ms,
                Ev::Processed {
                    consumer: node,
                    job,
                },
            );
        }
        let next = self.fabric.nodes[node].poll_timeout();
        if let Some(t) = next {
            // The machine's deadline is on its own clock.
            let t = self.sim_time_of(node, t).max(self.now + 1);
            if self
                .ticks
                .get(&node)
                .is_none_or(|cur| t < *cur || *cur <= self.now)
            {
                self.ticks.insert(node, t);
                self.push(t, Ev::Tick { node });
            }
        }
    }
}
