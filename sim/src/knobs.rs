//! Every fault knob, declared once.
//!
//! A knob used to be spelled in eight places: the drawn `Faults`, its default, the scenario
//! file's bounds, their default, the draw, validation, `ScenarioFile::exactly` and a shrink
//! step. Here each knob is one entry of `fault_knobs!` and the macro writes all of those. A
//! new fault is one entry here plus the code in `world/faults.rs` that makes it happen.
//!
//! Kinds of knob:
//! - `rates`: a probability (or a chance per second), drawn per seed from a `Bound<f64>`,
//!   checked to lie in [0, 1], shrunk by setting it to the named value.
//! - `spans`: a `[lo, hi]` range in ms that the run itself draws from (not the seed's
//!   config), checked to be non-empty, optionally shrunk by a function of the range.
//! - `disk`: rates of the brokers' `MemDisk` fault plan.
//!
//! Draw order is declaration order (rates, then disk rates): moving an entry changes every
//! seed's drawn config, so add new knobs at the end of their section.

use rand::Rng;
use rand::distr::uniform::SampleUniform;
use rand_xoshiro::Xoshiro256PlusPlus;
use rockfish_store::FaultPlan;
use serde::{Deserialize, Serialize};

/// A knob in a scenario file: one value, or an inclusive range the seed draws from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bound<T> {
    Value(T),
    Range([T; 2]),
}

impl<T: SampleUniform + PartialOrd + Copy> Bound<T> {
    pub(crate) fn draw(self, rng: &mut Xoshiro256PlusPlus) -> T {
        match self {
            Bound::Value(v) => v,
            Bound::Range([lo, hi]) if hi > lo => rng.random_range(lo..=hi),
            Bound::Range([lo, _]) => lo,
        }
    }

    /// The lowest and highest value the bound allows.
    pub(crate) fn span(self) -> (T, T) {
        match self {
            Bound::Value(v) => (v, v),
            Bound::Range([lo, hi]) => (lo, hi),
        }
    }
}

/// A shrink step: what it does, and the change (false when it changes nothing).
pub(crate) type FaultStep = (&'static str, fn(&mut Faults) -> bool);

macro_rules! fault_knobs {
    (
        rates { $( $(#[$rm:meta])* $rate:ident: shrink to $rto:literal, $rwhat:literal; )* }
        spans { $( $(#[$sm:meta])* $span:ident = ($slo:literal, $shi:literal)
                   $(, shrink $swhat:literal by $sby:expr)?; )* }
        disk { $( $(#[$dm:meta])* $disk:ident: shrink to $dto:literal, $dwhat:literal; )* }
    ) => {
        /// Fault rates for the safety phase, as drawn for one seed. All zero is a fault-free
        /// run.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Faults {
            $( $(#[$rm])* pub $rate: f64, )*
            $( $(#[$sm])* pub $span: (u64, u64), )*
            /// Arm the machines' own fault sites (`rockfish_core::buggify`).
            pub buggify: bool,
            /// The brokers' disk fault plan (torn pages and write-back at power loss, bit
            /// flips, capacity).
            pub disk: FaultPlan,
        }

        impl Default for Faults {
            fn default() -> Self {
                Faults {
                    $( $rate: 0.0, )*
                    $( $span: ($slo, $shi), )*
                    buggify: false,
                    disk: FaultPlan::default(),
                }
            }
        }

        /// A scenario file's `[faults]`: the bounds each seed draws its `Faults` from.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct FaultBounds {
            $( $(#[$rm])* pub $rate: Bound<f64>, )*
            $( $(#[$sm])* pub $span: [u64; 2], )*
            /// Arm the fault sites inside the machines (busy replies, short reads, late
            /// timers).
            pub buggify: bool,
        }

        impl Default for FaultBounds {
            fn default() -> Self {
                FaultBounds {
                    $( $rate: Bound::Value(0.0), )*
                    $( $span: [$slo, $shi], )*
                    buggify: true,
                }
            }
        }

        /// A scenario file's `[disk]`: the bounds of the brokers' disk fault plan.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct DiskBounds {
            $( $(#[$dm])* pub $disk: Bound<f64>, )*
            /// Bytes the disk holds; absent is unbounded.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub capacity: Option<u64>,
        }

        impl Default for DiskBounds {
            fn default() -> Self {
                DiskBounds {
                    $( $disk: Bound::Value(0.0), )*
                    capacity: None,
                }
            }
        }

        impl FaultBounds {
            /// One seed's faults: rates drawn in declaration order, then the disk's.
            pub(crate) fn draw(&self, disk: &DiskBounds, r: &mut Xoshiro256PlusPlus) -> Faults {
                Faults {
                    $( $rate: self.$rate.draw(r), )*
                    $( $span: (self.$span[0], self.$span[1]), )*
                    buggify: self.buggify,
                    disk: FaultPlan {
                        $( $disk: disk.$disk.draw(r), )*
                        capacity: disk.capacity,
                    },
                }
            }

            /// Bounds that draw exactly `f`, whatever the seed.
            pub(crate) fn exactly(f: &Faults) -> (FaultBounds, DiskBounds) {
                (
                    FaultBounds {
                        $( $rate: Bound::Value(f.$rate), )*
                        $( $span: [f.$span.0, f.$span.1], )*
                        buggify: f.buggify,
                    },
                    DiskBounds {
                        $( $disk: Bound::Value(f.disk.$disk), )*
                        capacity: f.disk.capacity,
                    },
                )
            }

            /// Every probability knob with its name in the file, for validation.
            pub(crate) fn probabilities(&self, disk: &DiskBounds) -> Vec<(&'static str, Bound<f64>)> {
                vec![
                    $( (concat!("faults.", stringify!($rate)), self.$rate), )*
                    $( (concat!("disk.", stringify!($disk)), disk.$disk), )*
                ]
            }

            /// Every range knob with its name in the file, for validation.
            pub(crate) fn spans(&self) -> Vec<(&'static str, [u64; 2])> {
                vec![ $( (concat!("faults.", stringify!($span)), self.$span), )* ]
            }
        }

        /// Shrink steps that turn one fault off each, in declaration order.
        pub(crate) const FAULT_STEPS: &[FaultStep] = &[
            $( ($rwhat, |f| set(&mut f.$rate, $rto)), )*
            ("no buggify sites", |f| std::mem::take(&mut f.buggify)),
            $( $( ($swhat, |f| {
                let by: fn((u64, u64)) -> (u64, u64) = $sby;
                let shrunk = by(f.$span);
                std::mem::replace(&mut f.$span, shrunk) != shrunk
            }), )? )*
            $( ($dwhat, |f| set(&mut f.disk.$disk, $dto)), )*
            ("no disk capacity limit", |f| f.disk.capacity.take().is_some()),
        ];
    };
}

/// Sets a rate; true when that changed it.
pub(crate) fn set(x: &mut f64, v: f64) -> bool {
    let changed = *x != v;
    *x = v;
    changed
}

fault_knobs! {
    rates {
        /// Probability a frame is lost.
        drop: shrink to 0.0, "no dropped frames";
        /// Probability a frame is delivered twice.
        duplicate: shrink to 0.0, "no duplicated frames";
        /// Chance per second that a broker crashes.
        crash_per_sec: shrink to 0.0, "no crashes";
        /// Of crashes, the share that are power losses.
        power_loss_share: shrink to 0.0, "no power losses";
        /// Chance per second that a client is cut off from the broker for a while.
        partition_per_sec: shrink to 0.0, "no partitions";
        /// Chance per second that a name server dies (and comes back with an empty route
        /// table).
        namesrv_crash_per_sec: shrink to 0.0, "no name server crashes";
        /// Chance per second that one node stops hearing from (or stops reaching) every other.
        one_way_per_sec: shrink to 0.0, "no one-way partitions";
        /// Chance per second that one node (any kind) is cut off from all others both ways.
        isolate_per_sec: shrink to 0.0, "no isolated nodes";
        /// Chance per second that two replicas of one broker group (a master and its slave)
        /// stop hearing each other for `partition_ms`, each still reaching everyone else.
        replica_cut_per_sec: shrink to 0.0, "no cuts between replicas";
        /// Chance per second of a swizzle: a few nodes' links clog one after another (frames
        /// are held, not lost), then unclog in another order (FoundationDB's swizzle-clogging).
        swizzle_per_sec: shrink to 0.0, "no swizzle-clogging";
        /// Chance per second that a node pauses (a stop-the-world GC, a stalled VM): it
        /// handles nothing while its clock runs on.
        pause_per_sec: shrink to 0.0, "no pauses";
        /// Chance per second that a consumer leaves its group (and rejoins after `down_ms`).
        churn_per_sec: shrink to 0.0, "no consumer churn";
        /// Chance per second that a producer or consumer process is killed (no goodbye: no
        /// unregister, no offset commit, no unlock) and restarted after `down_ms`.
        client_crash_per_sec: shrink to 0.0, "no client crashes";
        /// Probability that a broker's flush or persist takes `slow_sync_ms` (a slow or
        /// stalled disk) instead of `sync_ms`.
        slow_sync: shrink to 0.0, "no slow syncs";
        /// Of broker crashes, the share that strike at a random disk operation (mid write,
        /// mid flush, mid checkpoint) instead of between two events; also the chance that a
        /// restarted broker's recovery is cut short by another crash at one of its operations.
        crash_at_io: shrink to 0.0, "crashes only between events";
        /// Of broker crashes, the share after which the broker never comes back (never the
        /// last one standing): the name servers expire it (120 s) and every route drops it.
        broker_lost_share: shrink to 0.0, "every crashed broker comes back";
    }
    spans {
        /// One-way latency bounds, ms.
        latency_ms = (1, 5), shrink "fixed latency" by |(lo, _)| (lo, lo);
        /// How long a crashed broker stays down, ms.
        down_ms = (500, 3_000);
        /// How long a partition lasts, ms.
        partition_ms = (500, 5_000);
        /// Each node's clock runs ahead of simulated time by a fixed amount drawn from this
        /// range, ms.
        clock_skew_ms = (0, 0), shrink "no clock skew" by |_| (0, 0);
        /// Each node's clock also runs fast or slow by up to this many parts per million
        /// (drawn per node, either way): timers on different nodes disagree more and more.
        clock_drift_ppm = (0, 0), shrink "no clock drift" by |_| (0, 0);
        /// A process that restarts (broker, name server or client) finds its clock stepped
        /// by this much, forward or back, ms: within a process the driver's clock never steps
        /// (`rockfish_net::now_ms`), but what it persisted was stamped by the old one.
        clock_step_ms = (0, 0), shrink "no clock steps" by |_| (0, 0);
        /// How long a pause lasts, ms.
        pause_ms = (100, 3_000);
        /// How long a broker's flush or persist takes, ms.
        sync_ms = (1, 4);
        /// How long a slow one takes, ms (the long tail: a disk stalled behind writeback).
        slow_sync_ms = (100, 2_000);
    }
    disk {
        /// Probability that a write fails (a prefix of it may have landed).
        write_error: shrink to 0.0, "no failed writes";
        /// Probability that a sync fails (fsyncgate: the pages are then marked clean).
        sync_error: shrink to 0.0, "no failed syncs";
        /// Probability that a read returns one bit flipped.
        read_bitflip: shrink to 0.0, "no bit flips";
        /// At power loss, the chance a dirty page had been written back whole.
        writeback: shrink to 1.0, "every dirty page written back at power loss";
        /// At power loss, the chance a page not written back was torn.
        torn_page: shrink to 0.0, "no torn pages";
        /// Of a torn page's sectors that kept neither their new bytes, the chance each holds
        /// garbage rather than its old bytes (else old bytes, or zeros if never written).
        torn_garbage: shrink to 0.0, "torn sectors keep their old bytes";
    }
}
