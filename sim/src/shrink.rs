//! Shrinking a failing run: with the seed fixed, turn faults off and make the workload
//! smaller one step at a time, keeping each step only if the same invariant still breaks;
//! then replay the run's own fault events as a schedule and drop them, halves first, down to
//! single events. What remains is the smallest fault plan found that still fails: the faults
//! that matter, each at its time.

use crate::check::check;
use crate::config::{Faults, SimConfig};
use crate::knobs::{FAULT_STEPS, set};
use crate::world::Sim;

/// The end of a shrink.
#[derive(Debug, Clone)]
pub struct Shrunk {
    pub config: SimConfig,
    /// The invariant that keeps breaking.
    pub invariant: &'static str,
    /// Runs made while shrinking.
    pub attempts: u32,
    /// What each kept step changed, in order.
    pub steps: Vec<String>,
}

/// An upper bound on runs, so a shrink always ends.
const MAX_ATTEMPTS: u32 = 400;

/// The first invariant `cfg` breaks, if any.
pub fn failing_invariant(cfg: &SimConfig) -> Option<&'static str> {
    let out = Sim::new(cfg.clone()).run();
    check(cfg, &out.history)
        .violations
        .first()
        .map(|v| v.invariant())
}

type Step = (&'static str, fn(&mut SimConfig) -> bool);

/// Candidate simplifications beyond turning one fault off (`knobs::FAULT_STEPS`, tried
/// first); each returns false when it changes nothing.
const STEPS: &[Step] = &[
    ("no reconsume requests", |c| {
        set(&mut c.reconsume_share, 0.0)
    }),
    ("half the crash rate", |c| {
        halve(&mut c.faults.crash_per_sec)
    }),
    ("half the partition rate", |c| {
        halve(&mut c.faults.partition_per_sec)
    }),
    ("half the drop rate", |c| halve(&mut c.faults.drop)),
    ("one name server", |c| {
        std::mem::replace(&mut c.name_servers, 1) != 1
    }),
    ("fewer brokers", |c| fewer(&mut c.brokers, |n| n - 1)),
    ("one producer", |c| {
        std::mem::replace(&mut c.producers, 1) != 1
    }),
    ("fewer consumers", |c| fewer(&mut c.consumers, |n| n - 1)),
    ("fewer broadcast consumers", |c| {
        fewer(&mut c.broadcast_consumers, |n| n - 1)
    }),
    ("fewer tagged consumers", |c| {
        fewer(&mut c.tagged_consumers, |n| n - 1)
    }),
    ("fewer pop consumers", |c| {
        fewer(&mut c.pop_consumers, |n| n - 1)
    }),
    ("half the messages", |c| fewer(&mut c.messages, |n| n / 2)),
];

/// A step on the faults or on the rest of the config.
#[derive(Clone, Copy)]
enum Candidate {
    Fault(fn(&mut Faults) -> bool),
    Config(fn(&mut SimConfig) -> bool),
}

impl Candidate {
    fn apply(self, c: &mut SimConfig) -> bool {
        match self {
            Candidate::Fault(step) => step(&mut c.faults),
            Candidate::Config(step) => step(c),
        }
    }
}

/// Every step, fault knobs first.
fn candidates() -> impl Iterator<Item = (&'static str, Candidate)> {
    let faults = FAULT_STEPS
        .iter()
        .map(|(what, step)| (*what, Candidate::Fault(*step)));
    let others = STEPS
        .iter()
        .map(|(what, step)| (*what, Candidate::Config(*step)));
    faults.chain(others)
}

/// Makes a count smaller, never below 1.
fn fewer(x: &mut usize, smaller: fn(usize) -> usize) -> bool {
    if *x > 1 {
        *x = smaller(*x);
        true
    } else {
        false
    }
}

fn halve(x: &mut f64) -> bool {
    if *x > 1e-4 {
        *x /= 2.0;
        true
    } else {
        false
    }
}

/// Shrinks a failing `cfg` (same seed). `None` if `cfg` does not fail.
pub fn shrink(cfg: &SimConfig) -> Option<Shrunk> {
    let invariant = failing_invariant(cfg)?;
    let mut best = cfg.clone();
    let mut attempts = 1;
    let mut steps = Vec::new();
    // Repeat passes until one keeps nothing: a later step can make an earlier one possible.
    loop {
        let mut progressed = false;
        for (what, step) in candidates() {
            if attempts >= MAX_ATTEMPTS {
                break;
            }
            let mut candidate = best.clone();
            if !step.apply(&mut candidate) {
                continue;
            }
            attempts += 1;
            if failing_invariant(&candidate) == Some(invariant) {
                best = candidate;
                steps.push(what.to_string());
                progressed = true;
            }
        }
        if !progressed || attempts >= MAX_ATTEMPTS {
            break;
        }
    }
    shrink_schedule(&mut best, invariant, &mut attempts, &mut steps);
    Some(Shrunk {
        config: best,
        invariant,
        attempts,
        steps,
    })
}

/// Turns `best`'s drawn faults into a schedule (if the same invariant still breaks when they
/// are injected as such) and removes events from it: chunks of half the schedule, then
/// quarters, down to single events, keeping each removal that still fails.
fn shrink_schedule(
    best: &mut SimConfig,
    invariant: &'static str,
    attempts: &mut u32,
    steps: &mut Vec<String>,
) {
    if best.schedule.is_none() && *attempts < MAX_ATTEMPTS {
        let drawn = Sim::new(best.clone()).run().faults;
        let mut scheduled = best.clone();
        let n = drawn.len();
        scheduled.schedule = Some(drawn);
        *attempts += 2;
        if failing_invariant(&scheduled) != Some(invariant) {
            return; // the failure needs the draws as they were: keep the rates
        }
        *best = scheduled;
        steps.push(format!("its {n} fault events as a schedule"));
    }
    let Some(mut events) = best.schedule.clone() else {
        return;
    };
    let mut chunk = events.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < events.len() && *attempts < MAX_ATTEMPTS {
            let mut fewer = events.clone();
            let gone: Vec<_> = fewer.drain(i..(i + chunk).min(events.len())).collect();
            let mut candidate = best.clone();
            candidate.schedule = Some(fewer.clone());
            *attempts += 1;
            if failing_invariant(&candidate) == Some(invariant) {
                steps.push(match gone.as_slice() {
                    [one] => format!("without {:?} at {} ms", one.fault, one.at),
                    many => format!("without {} fault events", many.len()),
                });
                events = fewer;
                *best = candidate;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 || *attempts >= MAX_ATTEMPTS {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
}
