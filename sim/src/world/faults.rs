//! Fault injection: crashes, power losses, disk faults, partitions and clock swizzles, each
//! drawn from its own seeded stream.

use super::*;

impl Sim {
    /// Draws crashes and partitions once per broker tick, scaled to the time since the last,
    /// and injects them (each one recorded in `Outcome::faults`). A run with a schedule draws
    /// none: its faults come from the schedule (`Ev::Scheduled`).
    pub(super) fn maybe_faults(&mut self, broker: usize) {
        let f = self.cfg.faults.clone();
        let mut drawn = Vec::new();
        // Broker ticks come at least every second or so; treat each as a one-second chance.
        if self.chance(Stream::Crash, f.crash_per_sec) {
            let power = self.chance(Stream::Crash, f.power_loss_share);
            let after_ms = self.between(Stream::Crash, (0, 50));
            drawn.push(FaultAt {
                at: self.now,
                fault: Fault::Crash {
                    broker,
                    power,
                    after_ms,
                },
            });
        }
        // Cluster-wide faults are drawn on the first broker's ticks only.
        if broker == self.name_servers {
            self.draw_cluster_faults(&f, &mut drawn);
        }
        // A run with a schedule still draws (so every other draw stays where it was) but
        // starts the schedule's events instead, on the tick they were drawn on.
        let due: Vec<FaultAt> = match &self.cfg.schedule {
            None => drawn,
            Some(schedule) => {
                let first = self.name_servers;
                let due: Vec<usize> = (0..schedule.len())
                    .filter(|i| !self.scheduled_done.contains(i))
                    .filter(|&i| {
                        let e = &schedule[i];
                        let on = match e.fault {
                            Fault::Crash { broker: b, .. } => b,
                            _ => first,
                        };
                        e.at <= self.now && on == broker
                    })
                    .collect();
                self.scheduled_done.extend(due.iter().copied());
                due.into_iter().map(|i| schedule[i].clone()).collect()
            }
        };
        for f in due {
            self.faults.push(f.clone());
            self.inject(f);
        }
    }

    fn draw_cluster_faults(&mut self, f: &Faults, drawn: &mut Vec<FaultAt>) {
        let now = self.now;
        let first = self.first_client();
        let total = self.fabric.nodes.len();
        if self.chance(Stream::Partition, f.partition_per_sec) && total > first {
            let client = first + self.below(Stream::Partition, total - first);
            let ms = self.between(Stream::Partition, f.partition_ms);
            drawn.push(FaultAt {
                at: now,
                fault: Fault::CutFromBrokers { client, ms },
            });
        }
        if self.chance(Stream::OneWay, f.one_way_per_sec) {
            let node = self.below(Stream::OneWay, total);
            let deaf = self.chance(Stream::OneWay, 0.5);
            let ms = self.between(Stream::OneWay, f.partition_ms);
            drawn.push(FaultAt {
                at: now,
                fault: Fault::OneWay { node, deaf, ms },
            });
        }
        if self.chance(Stream::Isolate, f.isolate_per_sec) {
            let node = self.below(Stream::Isolate, total);
            let ms = self.between(Stream::Isolate, f.partition_ms);
            drawn.push(FaultAt {
                at: now,
                fault: Fault::Isolate { node, ms },
            });
        }
        if self.cfg.slaves > 0 && self.chance(Stream::ReplicaCut, f.replica_cut_per_sec) {
            let group = self.below(Stream::ReplicaCut, self.groups());
            let replicas = self.replicas_of(group);
            let a = self.below(Stream::ReplicaCut, replicas.len());
            let b = (a + 1 + self.below(Stream::ReplicaCut, replicas.len() - 1)) % replicas.len();
            let ms = self.between(Stream::ReplicaCut, f.partition_ms);
            drawn.push(FaultAt {
                at: now,
                fault: Fault::Cut {
                    a: replicas[a],
                    b: replicas[b],
                    ms,
                },
            });
        }
        if self.chance(Stream::Swizzle, f.swizzle_per_sec) {
            drawn.push(FaultAt {
                at: now,
                fault: Fault::Swizzle,
            });
        }
        if self.chance(Stream::Pause, f.pause_per_sec) {
            let node = self.below(Stream::Pause, total);
            let ms = self.between(Stream::Pause, f.pause_ms);
            drawn.push(FaultAt {
                at: now,
                fault: Fault::Pause { node, ms },
            });
        }
        if self.chance(Stream::Churn, f.churn_per_sec) {
            let consumers = self.cfg.all_consumers();
            if consumers > 0 {
                let consumer = total - consumers + self.below(Stream::Churn, consumers);
                drawn.push(FaultAt {
                    at: now,
                    fault: Fault::Leave { consumer },
                });
            }
        }
        if self.chance(Stream::ClientCrash, f.client_crash_per_sec) && total > first {
            let node = first + self.below(Stream::ClientCrash, total - first);
            drawn.push(FaultAt {
                at: now,
                fault: Fault::ClientCrash { node },
            });
        }
        if self.chance(Stream::Namesrv, f.namesrv_crash_per_sec) {
            let ns = self.between(Stream::Namesrv, (0, self.name_servers as u64 - 1)) as usize;
            drawn.push(FaultAt {
                at: now,
                fault: Fault::NsCrash { ns },
            });
        }
    }

    /// Starts a fault event (drawn now, or from the schedule at its time).
    pub(super) fn inject(&mut self, f: FaultAt) {
        let at = self.now;
        match f.fault {
            Fault::Crash {
                broker,
                power,
                after_ms,
            } => self.push(
                at + after_ms,
                Ev::Crash {
                    broker,
                    power,
                    operator: false,
                },
            ),
            Fault::CutFromBrokers { client, ms } => {
                let brokers = self.broker_nodes().collect();
                self.partition(
                    "cut-from-brokers",
                    client,
                    [client].into(),
                    brokers,
                    true,
                    ms,
                );
            }
            Fault::OneWay { node, deaf, ms } => {
                let total = self.fabric.nodes.len();
                let others: BTreeSet<usize> = (0..total).filter(|n| *n != node).collect();
                let me = BTreeSet::from([node]);
                // Deaf: it hears nothing but is heard; mute: the other way round.
                if deaf {
                    self.partition("one-way-deaf", node, others, me, false, ms);
                } else {
                    self.partition("one-way-mute", node, me, others, false, ms);
                }
            }
            Fault::Isolate { node, ms } => {
                let total = self.fabric.nodes.len();
                let others = (0..total).filter(|n| *n != node).collect();
                self.partition("isolate", node, [node].into(), others, true, ms);
            }
            Fault::Cut { a, b, ms } => {
                self.partition("cut", a, [a].into(), [b].into(), true, ms);
            }
            Fault::Swizzle => self.swizzle(),
            Fault::Pause { node, ms } => self.push(at, Ev::Pause { node, ms }),
            Fault::Leave { consumer } => self.push(at, Ev::Leave { consumer }),
            Fault::ClientCrash { node } => self.push(at, Ev::ClientCrash { node }),
            Fault::NsCrash { ns } => self.push(at, Ev::NsCrash { ns }),
        }
    }

    /// A uniform draw in `0..n` (`n > 0`).
    pub(super) fn below(&mut self, s: Stream, n: usize) -> usize {
        self.between(s, (0, n as u64 - 1)) as usize
    }

    /// Starts a partition now (frames from `a` to `b` lost, and back if `both_ways`) that
    /// heals after `ms`; `what` and `node` name it in the trace.
    pub(super) fn partition(
        &mut self,
        what: &str,
        node: usize,
        a: BTreeSet<usize>,
        b: BTreeSet<usize>,
        both_ways: bool,
        ms: u64,
    ) {
        self.next_cut += 1;
        let id = self.next_cut;
        let line = format!("t={} fault {what} {node} for {ms}ms", self.now);
        self.log(line);
        self.push(self.now + ms, Ev::Heal { id, node });
        self.cuts.push(Cut {
            id,
            a,
            b,
            both_ways,
        });
    }

    /// FoundationDB's swizzle-clogging: a random handful of nodes clog one after another, stay
    /// clogged a while, then unclog one after another in a different random order.
    pub(super) fn swizzle(&mut self) {
        let total = self.fabric.nodes.len();
        let mut order: Vec<usize> = (0..total).collect();
        for i in (1..total).rev() {
            let j = self.below(Stream::Swizzle, i + 1);
            order.swap(i, j);
        }
        let k = 1 + self.below(Stream::Swizzle, total.div_ceil(2));
        order.truncate(k);
        let step = self.between(Stream::Swizzle, (50, 500));
        let hold = self.between(Stream::Swizzle, self.cfg.faults.partition_ms);
        let mut unclog = order.clone();
        for i in (1..k).rev() {
            let j = self.below(Stream::Swizzle, i + 1);
            unclog.swap(i, j);
        }
        let start = self.now;
        let all_clogged = start + k as u64 * step;
        for (i, node) in order.iter().enumerate() {
            let from = start + i as u64 * step;
            let pos = unclog.iter().position(|n| n == node).expect("same nodes");
            let until = all_clogged + hold + pos as u64 * step;
            self.clogs.push(Clog {
                node: *node,
                from,
                until,
            });
            let line = format!("t={} fault clog {node} from {from} until {until}", self.now);
            self.log(line);
        }
        let now = self.now;
        self.clogs.retain(|c| c.until > now);
    }
}
