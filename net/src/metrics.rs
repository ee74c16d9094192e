//! The driver's own counts (requests' latency from read to answer queued, connections,
//! refused and malformed frames) and the Prometheus text of a set of snapshots. Counting is
//! done on the machine's task with plain maps: no locks, no atomics, no allocation once a
//! (request, response) code pair has its histogram.

use rustc_hash::FxHashMap;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use rockfish_core::machine::ConnId;
use rockfish_core::metrics::{Family, Histogram, HistogramFamily, Kind, Labels, Snapshot};
use rockfish_core::remoting::codes::{request, response};

/// RocketMQ 5's rpc latency buckets (RemotingMetricsManager), milliseconds.
pub const RPC_LATENCY_MS: &[f64] = &[1.0, 3.0, 5.0, 7.0, 10.0, 100.0, 1000.0, 2000.0, 3000.0];

/// Requests awaiting their answer that the driver remembers, at most (a machine that never
/// answers a flood of requests must not grow this without bound).
const MAX_PENDING: usize = 100_000;

#[derive(Debug, Default)]
pub struct DriverStats {
    /// connection -> opaque -> (request code, read at). Per connection so a close forgets
    /// its requests at once (not by a scan of every connection's). Fx: keys from the
    /// driver's own numbering and the peer's opaques (a peer can only slow its own lookups).
    pending: FxHashMap<ConnId, FxHashMap<i32, (i32, u64)>>,
    /// Requests in `pending`, all connections together (capped by `MAX_PENDING`).
    pending_count: usize,
    /// (request code, response code) -> latency.
    rpc: FxHashMap<(i32, i32), Histogram>,
    pub connections_open: u64,
    pub connections_accepted: u64,
    /// Frames refused as over a limit (answered) and malformed (connection closed).
    pub frames_refused: u64,
    pub frames_malformed: u64,
}

impl DriverStats {
    /// A request was handed to the machine.
    pub fn request(&mut self, conn: ConnId, opaque: i32, code: i32, received_at: u64) {
        if self.pending_count < MAX_PENDING
            && self
                .pending
                .entry(conn)
                .or_default()
                .insert(opaque, (code, received_at))
                .is_none()
        {
            self.pending_count += 1;
        }
    }

    /// A response is being written.
    pub fn answered(&mut self, conn: ConnId, opaque: i32, code: i32, now: u64) {
        let taken = self.pending.get_mut(&conn).and_then(|m| m.remove(&opaque));
        if let Some((req, at)) = taken {
            self.pending_count -= 1;
            self.rpc
                .entry((req, code))
                .or_insert_with(|| Histogram::new(RPC_LATENCY_MS))
                .observe(now.saturating_sub(at) as f64);
        }
    }

    pub fn closed(&mut self, conn: ConnId) {
        self.connections_open = self.connections_open.saturating_sub(1);
        if let Some(m) = self.pending.remove(&conn) {
            self.pending_count -= m.len();
        }
    }

    /// Adds the driver's families to a machine's snapshot.
    pub fn append(&self, snap: &mut Snapshot) {
        let code_name = |names: fn(i32) -> Option<&'static str>, c: i32| {
            names(c).map_or_else(|| c.to_string(), str::to_ascii_lowercase)
        };
        let mut rpc: Vec<_> = self
            .rpc
            .iter()
            .map(|((req, resp), h)| {
                (
                    vec![
                        ("protocol_type", "remoting".to_string()),
                        ("request_code", code_name(request::name, *req)),
                        ("response_code", code_name(response::name, *resp)),
                    ],
                    h.clone(),
                )
            })
            .collect();
        rpc.sort_by(|a, b| a.0.cmp(&b.0));
        snap.histograms.push(HistogramFamily {
            name: "rocketmq_rpc_latency",
            help: "From a request read off the wire to its answer queued for writing.",
            unit: Some("milliseconds"),
            samples: rpc,
        });
        snap.gauge("rockfish_connections", "Connections open.", None)
            .push(vec![], self.connections_open as f64);
        snap.counter("rockfish_connections_accepted", "Connections accepted.")
            .push(vec![], self.connections_accepted as f64);
        snap.counter(
            "rockfish_frames_refused",
            "Well-framed requests over a limit (answered with an error).",
        )
        .push(vec![], self.frames_refused as f64);
        snap.counter(
            "rockfish_decode_errors",
            "Malformed frames (their connection closed).",
        )
        .push(vec![], self.frames_malformed as f64);
    }
}

/// A sample's labels after its snapshot's common ones.
fn with_common(common: &Labels, labels: Labels) -> Labels {
    let mut l = common.clone();
    l.extend(labels);
    l
}

/// The family `is` finds in `families`, or a new one made by `new`.
fn merge_slot<F>(
    families: &mut Vec<F>,
    is: impl Fn(&F) -> bool,
    new: impl FnOnce() -> F,
) -> &mut F {
    match families.iter().position(is) {
        Some(i) => &mut families[i],
        None => {
            families.push(new());
            families.last_mut().expect("just pushed")
        }
    }
}

/// A snapshot, encoded when scraped.
#[derive(Debug)]
struct SnapshotCollector(Snapshot);

fn unit(u: Option<&'static str>) -> Option<Unit> {
    match u? {
        "bytes" => Some(Unit::Bytes),
        "seconds" => Some(Unit::Seconds),
        other => Some(Unit::Other(other.to_string())),
    }
}

impl prometheus_client::collector::Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0.families {
            let u = unit(f.unit);
            let ty = match f.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut d = encoder.encode_descriptor(f.name, f.help, u.as_ref(), ty)?;
            for (labels, v) in &f.samples {
                let e = d.encode_family(labels)?;
                match f.kind {
                    Kind::Counter => ConstCounter::new(*v).encode(e)?,
                    Kind::Gauge => ConstGauge::new(*v).encode(e)?,
                }
            }
        }
        for h in &self.0.histograms {
            let u = unit(h.unit);
            let mut d =
                encoder.encode_descriptor(h.name, h.help, u.as_ref(), MetricType::Histogram)?;
            for (labels, hist) in &h.samples {
                let mut e = d.encode_family(labels)?;
                e.encode_histogram::<Vec<(String, String)>>(
                    hist.sum,
                    hist.count(),
                    &hist.buckets(),
                    None,
                )?;
            }
        }
        Ok(())
    }
}

/// Prometheus text (format 0.0.4) of the snapshots: each sample carries its snapshot's
/// common labels, and a family two snapshots share (a standalone's name server and broker)
/// is written once.
pub fn encode(snapshots: Vec<Snapshot>) -> String {
    let mut merged = Snapshot::default();
    for s in snapshots {
        for f in s.families {
            let name = f.name;
            let into = merge_slot(
                &mut merged.families,
                |m| m.name == name,
                || Family {
                    samples: Vec::new(),
                    ..f.clone()
                },
            );
            into.samples.extend(
                f.samples
                    .into_iter()
                    .map(|(l, v)| (with_common(&s.common, l), v)),
            );
        }
        for h in s.histograms {
            let name = h.name;
            let into = merge_slot(
                &mut merged.histograms,
                |m| m.name == name,
                || HistogramFamily {
                    samples: Vec::new(),
                    ..h.clone()
                },
            );
            into.samples.extend(
                h.samples
                    .into_iter()
                    .map(|(l, v)| (with_common(&s.common, l), v)),
            );
        }
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(merged)));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_units_totals_and_common_labels() {
        let mut d = DriverStats::default();
        d.request(ConnId(1), 7, request::SEND_MESSAGE_V2, 100);
        d.answered(ConnId(1), 7, response::SUCCESS, 104);
        let mut s = Snapshot {
            common: vec![("cluster", "C".into()), ("node_id", "b".into())],
            ..Snapshot::default()
        };
        s.counter("rocketmq_messages_in", "in")
            .push(vec![("topic", "T".into())], 3.0);
        s.gauge("rocketmq_storage_size", "size", Some("bytes"))
            .push(vec![], 10.0);
        d.append(&mut s);
        let text = encode(vec![s]);
        for want in [
            "rocketmq_messages_in_total{",
            "topic=\"T\"",
            "cluster=\"C\"",
            "rocketmq_storage_size_bytes{",
            "rocketmq_rpc_latency_milliseconds_bucket{",
            "request_code=\"send_message_v2\"",
            "response_code=\"success\"",
            "le=\"5\"} 1",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }

    #[test]
    fn a_close_forgets_its_requests_and_the_cap_holds() {
        let mut d = DriverStats::default();
        d.request(ConnId(1), 1, request::SEND_MESSAGE_V2, 0);
        d.request(ConnId(1), 2, request::SEND_MESSAGE_V2, 0);
        d.request(ConnId(2), 1, request::SEND_MESSAGE_V2, 0);
        d.request(ConnId(2), 1, request::SEND_MESSAGE_V2, 0); // the same opaque again
        assert_eq!(d.pending_count, 3);
        d.closed(ConnId(1));
        assert_eq!(d.pending_count, 1);
        d.answered(ConnId(1), 1, response::SUCCESS, 5);
        assert!(
            d.rpc.is_empty(),
            "an answer on a closed connection is not counted"
        );
        d.answered(ConnId(2), 1, response::SUCCESS, 5);
        assert_eq!(d.pending_count, 0);
        assert_eq!(d.rpc.len(), 1);
        for opaque in 0..(MAX_PENDING as i32 + 10) {
            d.request(ConnId(3), opaque, request::PULL_MESSAGE, 0);
        }
        assert_eq!(d.pending_count, MAX_PENDING, "never more than the cap");
        d.closed(ConnId(3));
        assert_eq!(d.pending_count, 0);
    }
}
