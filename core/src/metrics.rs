//! Metrics as plain values: what a machine reports when its driver asks (`snapshot`), and
//! fixed-bucket histograms a machine keeps as plain fields. Counting is an add on a field
//! (no allocation, no lock, no clock); the driver turns a snapshot into Prometheus text.

/// A histogram over fixed upper bounds (the last bucket is +Inf).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    /// `counts[i]`: observations in (bounds[i-1], bounds[i]]; one more for +Inf.
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Counts per upper bound, each bucket alone (what prometheus-client's encoder takes; it
    /// accumulates them), +Inf last.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }

    /// Cumulative counts per upper bound, as Prometheus writes buckets (+Inf last).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.counts)
            .map(|(b, c)| {
                acc += c;
                (b, acc)
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric family: a name (RocketMQ 5's where it has one), its samples by label set.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Without the unit or `_total` suffix (the encoder adds them).
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<&'static str>,
    pub kind: Kind,
    pub samples: Vec<(Labels, f64)>,
}

pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, PartialEq)]
pub struct HistogramFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<&'static str>,
    pub samples: Vec<(Labels, Histogram)>,
}

/// What a machine reports: its families; the driver adds its own and the common labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Labels on every sample (cluster, node_type, node_id).
    pub common: Labels,
    pub families: Vec<Family>,
    pub histograms: Vec<HistogramFamily>,
}

impl Snapshot {
    pub fn counter(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, None, Kind::Counter)
    }

    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        unit: Option<&'static str>,
    ) -> &mut Family {
        self.family(name, help, unit, Kind::Gauge)
    }

    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        unit: Option<&'static str>,
        kind: Kind,
    ) -> &mut Family {
        if let Some(i) = self.families.iter().position(|f| f.name == name) {
            return &mut self.families[i];
        }
        self.families.push(Family {
            name,
            help,
            unit,
            kind,
            samples: Vec::new(),
        });
        self.families.last_mut().expect("just pushed")
    }

    /// The value of `name`'s sample whose labels include every pair of `labels` (tests).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let f = self.families.iter().find(|f| f.name == name)?;
        f.samples
            .iter()
            .find(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, v)| *v)
    }
}

impl Family {
    pub fn push(&mut self, labels: Labels, value: f64) -> &mut Family {
        self.samples.push((labels, value));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_inclusive_and_cumulative() {
        let mut h = Histogram::new(&[1.0, 3.0, 5.0]);
        for v in [0.5, 1.0, 2.0, 3.0, 4.0, 9.0] {
            h.observe(v);
        }
        assert_eq!(
            h.cumulative(),
            vec![(1.0, 2), (3.0, 4), (5.0, 5), (f64::INFINITY, 6)]
        );
        assert_eq!(h.count(), 6);
        assert_eq!(h.sum, 19.5);
    }
}
