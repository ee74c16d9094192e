//! Checkers over a run's history. Each judges one promise; each has a test with a
//! deliberately broken component that it catches.

use rockfish_core::broker::FlushDiskType;
use rockfish_core::producer::SendStatus;

use crate::config::SimConfig;
use crate::world::History;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A consumer received something no producer sent.
    Phantom { body: String },
    /// A send acknowledged as durable (SEND_OK under SYNC_FLUSH, or under ASYNC_FLUSH with no
    /// power loss) never reached the consumer group.
    AckedLost { body: String },
    /// A message sent after the heal was not acknowledged, or not consumed, by the end.
    NotConverged { body: String, acked: bool },
}

impl Violation {
    /// The invariant broken, as scenario files name it.
    pub fn invariant(&self) -> &'static str {
        match self {
            Violation::Phantom { .. } => "no-phantom",
            Violation::AckedLost { .. } => "acked-durable-not-lost",
            Violation::NotConverged { .. } => "liveness-converges",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub violations: Vec<Violation>,
    pub acked: usize,
    pub delivered_distinct: usize,
    /// Deliveries beyond the first of each message: allowed (at-least-once), reported.
    pub duplicates: usize,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

pub fn check(cfg: &SimConfig, h: &History) -> CheckReport {
    let mut report = CheckReport::default();
    let mut seen = std::collections::BTreeSet::new();
    for (_, body) in &h.delivered {
        if !h.sent.contains_key(body) {
            report
                .violations
                .push(Violation::Phantom { body: body.clone() });
        }
        if !seen.insert(body.clone()) {
            report.duplicates += 1;
        }
    }
    report.delivered_distinct = seen.len();
    let promised = cfg.flush == FlushDiskType::Sync || h.power_losses == 0;
    for (body, status) in &h.sent {
        let after_heal = body.contains("-L");
        let acked = *status == Some(SendStatus::SendOk);
        if after_heal && (!acked || !seen.contains(body)) {
            report.violations.push(Violation::NotConverged {
                body: body.clone(),
                acked,
            });
        }
        if *status == Some(SendStatus::SendOk) {
            report.acked += 1;
            if promised && !seen.contains(body) {
                report
                    .violations
                    .push(Violation::AckedLost { body: body.clone() });
            }
        }
    }
    report
        .violations
        .retain(|v| cfg.invariants.iter().any(|i| i == v.invariant()));
    report
}
