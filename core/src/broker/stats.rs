//! What the broker has done, counted for operators (GET_BROKER_RUNTIME_INFO, the metrics
//! endpoint, the console): messages and bytes in per topic, out per topic and group, how far
//! each group has been served per queue, group commits. Plain fields updated on the request
//! paths (a map lookup by `&str`, an add); nothing here allocates once a topic or group has
//! its entry, and the number of entries is capped (`BrokerLimits::max_offset_entries`).

use std::collections::{BTreeMap, VecDeque};

use crate::metrics::Histogram;

/// Bounds of the group-commit histograms: sends acked by one flush...
pub const GROUP_COMMIT_SENDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// ...bytes one flush made durable...
pub const GROUP_COMMIT_BYTES: &[f64] = &[
    4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];
/// ...and milliseconds from asking a flush to its answer.
pub const GROUP_COMMIT_MS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 1000.0];

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub messages: u64,
    pub bytes: u64,
}

impl Traffic {
    fn add(&mut self, messages: u64, bytes: u64) {
        self.messages += messages;
        self.bytes += bytes;
    }
}

#[derive(Debug, Default)]
pub struct GroupOut {
    pub traffic: Traffic,
    /// Per queue, the offset after the last message served to the group (what it has
    /// pulled; in flight = this minus its committed offset).
    pub pulled: BTreeMap<u32, u64>,
}

const DAY_MS: u64 = 86_400_000;

/// Message totals at the start of today and of yesterday (msgPutTotalTodayMorning, ...).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DayMarks {
    day: u64,
    pub put_today: u64,
    pub got_today: u64,
    pub put_yesterday: u64,
    pub got_yesterday: u64,
}

/// Totals sampled about once a second, for rates over the last 10 s, 1 min and 10 min.
const SAMPLES_KEPT: usize = 601;

#[derive(Debug)]
pub struct BrokerStats {
    pub started_at: u64,
    pub put: BTreeMap<String, Traffic>,
    /// topic -> consumer group -> what was served.
    pub got: BTreeMap<String, BTreeMap<String, GroupOut>>,
    pub put_total: Traffic,
    pub got_total: Traffic,
    /// (when, messages put in all, messages served in all), oldest first.
    samples: VecDeque<(u64, u64, u64)>,
    pub group_commit_sends: Histogram,
    pub group_commit_bytes: Histogram,
    pub group_commit_ms: Histogram,
    /// Messages moved to a DLQ, by consumer group.
    pub to_dlq: BTreeMap<String, u64>,
    /// How the store's recovery at start went, as the driver measured it: wall time in ms,
    /// commit log bytes replayed, records dispatched again.
    pub recovery: Option<(u64, u64, u64)>,
    /// Totals at the start of today and yesterday (UTC days on the driver's clock).
    days: DayMarks,
    /// Entries of `put`, `got` and `to_dlq` (kept, not counted per request).
    entries: usize,
    entries_cap: usize,
}

impl BrokerStats {
    pub fn new(now: u64, entries_cap: usize) -> BrokerStats {
        BrokerStats {
            started_at: now,
            put: BTreeMap::new(),
            got: BTreeMap::new(),
            put_total: Traffic::default(),
            got_total: Traffic::default(),
            samples: VecDeque::from([(now, 0, 0)]),
            group_commit_sends: Histogram::new(GROUP_COMMIT_SENDS),
            group_commit_bytes: Histogram::new(GROUP_COMMIT_BYTES),
            group_commit_ms: Histogram::new(GROUP_COMMIT_MS),
            to_dlq: BTreeMap::new(),
            recovery: None,
            days: DayMarks {
                day: now / DAY_MS,
                ..DayMarks::default()
            },
            entries: 0,
            entries_cap,
        }
    }

    fn full(&self) -> bool {
        self.entries >= self.entries_cap
    }

    pub fn stored(&mut self, topic: &str, messages: u64, bytes: u64, now: u64) {
        self.put_total.add(messages, bytes);
        if let Some(group) = topic.strip_prefix(crate::protocol::topics::DLQ_GROUP_TOPIC_PREFIX) {
            self.sent_to_dlq(group);
        }
        let full = self.full();
        match self.put.get_mut(topic) {
            Some(t) => t.add(messages, bytes),
            None if !full => {
                let mut t = Traffic::default();
                t.add(messages, bytes);
                self.put.insert(topic.to_string(), t);
                self.entries += 1;
            }
            None => {}
        }
        self.sample(now);
    }

    pub fn served(
        &mut self,
        topic: &str,
        group: &str,
        queue_id: u32,
        (messages, bytes): (u64, u64),
        next_offset: u64,
        now: u64,
    ) {
        self.got_total.add(messages, bytes);
        let full = self.full();
        let groups = match self.got.get_mut(topic) {
            Some(g) => g,
            None if !full => self.got.entry(topic.to_string()).or_default(),
            None => return,
        };
        let out = match groups.get_mut(group) {
            Some(o) => o,
            None if !full => {
                self.entries += 1;
                groups.entry(group.to_string()).or_default()
            }
            None => return,
        };
        out.traffic.add(messages, bytes);
        match out.pulled.get_mut(&queue_id) {
            Some(p) => *p = (*p).max(next_offset),
            // Queue ids are bounded by the topic's queue count.
            None => {
                out.pulled.insert(queue_id, next_offset);
            }
        }
        self.sample(now);
    }

    pub fn sent_to_dlq(&mut self, group: &str) {
        let full = self.full();
        match self.to_dlq.get_mut(group) {
            Some(n) => *n += 1,
            None if !full => {
                self.to_dlq.insert(group.to_string(), 1);
                self.entries += 1;
            }
            None => {}
        }
    }

    pub fn forget_topic(&mut self, topic: &str) {
        self.entries -= usize::from(self.put.remove(topic).is_some());
        self.entries -= self.got.remove(topic).map_or(0, |g| g.len());
    }

    pub fn forget_group(&mut self, group: &str) {
        for groups in self.got.values_mut() {
            self.entries -= usize::from(groups.remove(group).is_some());
        }
        self.got.retain(|_, g| !g.is_empty());
        self.entries -= usize::from(self.to_dlq.remove(group).is_some());
    }

    /// Records the totals at most once a second.
    pub fn sample(&mut self, now: u64) {
        let last = self.samples.back().map_or(0, |s| s.0);
        if now >= last + 1000 {
            if now / DAY_MS != self.days.day {
                let d = &mut self.days;
                // Yesterday's morning is today's only if the day just turned.
                (d.put_yesterday, d.got_yesterday) = if now / DAY_MS == d.day + 1 {
                    (d.put_today, d.got_today)
                } else {
                    (self.put_total.messages, self.got_total.messages)
                };
                d.day = now / DAY_MS;
                d.put_today = self.put_total.messages;
                d.got_today = self.got_total.messages;
            }
            if self.samples.len() == SAMPLES_KEPT {
                self.samples.pop_front();
            }
            self.samples
                .push_back((now, self.put_total.messages, self.got_total.messages));
        }
    }

    pub fn day_marks(&self) -> DayMarks {
        self.days
    }

    /// Messages per second put and served over the last `window_ms` (as far back as
    /// samples go).
    pub fn rates(&self, now: u64, window_ms: u64) -> (f64, f64) {
        let since = now.saturating_sub(window_ms);
        let base = self
            .samples
            .iter()
            .rev()
            .find(|s| s.0 <= since)
            .or(self.samples.front())
            .copied()
            .unwrap_or((now, 0, 0));
        let secs = (now.saturating_sub(base.0)).max(1) as f64 / 1000.0;
        (
            (self.put_total.messages - base.1) as f64 / secs,
            (self.got_total.messages - base.2) as f64 / secs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_topic_and_group_and_caps_entries() {
        let mut s = BrokerStats::new(0, 3);
        s.stored("a", 2, 200, 10);
        s.stored("a", 1, 100, 20);
        s.served("a", "g", 0, (3, 300), 3, 30);
        s.served("a", "g", 0, (0, 0), 2, 40);
        assert_eq!(
            s.put["a"],
            Traffic {
                messages: 3,
                bytes: 300
            }
        );
        assert_eq!(s.got["a"]["g"].pulled[&0], 3, "pulled only moves forward");
        s.stored("b", 1, 1, 50);
        // Full (3 entries): a new topic is counted in the totals only.
        s.stored("c", 1, 1, 60);
        assert!(!s.put.contains_key("c"));
        assert_eq!(s.put_total.messages, 5);
    }

    #[test]
    fn rates_use_the_sample_at_the_window_start() {
        let mut s = BrokerStats::new(0, 10);
        for t in 1..=20u64 {
            s.stored("a", 10, 10, t * 1000);
        }
        let (put, got) = s.rates(20_000, 10_000);
        assert!((put - 10.0).abs() < 1e-9, "{put}");
        assert_eq!(got, 0.0);
    }
}
