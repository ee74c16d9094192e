//! rockfish-sim: the deterministic simulator.
//!
//! Owns the single-threaded discrete-event loop that steps the unchanged core machines with
//! real encoded frames over a faulty simulated network and `rockfish_store::MemDisk`, the
//! workloads, the checkers over the recorded history, traces, replay and shrinking.
//!
//! Must never: read the wall clock, use unseeded randomness, or iterate a std `HashMap` where
//! the order can reach the trace. One seed decides everything a run does.
//!
//! Status: filled by issue 5.
