//! Fault sites inside the machines' own code paths (FoundationDB's "buggify").
//!
//! A site is `buggify!("name")`: in a simulated run each site is switched on for the whole
//! run with some probability when first reached, and an active site then fires with some
//! probability each time it is reached. A site that fires takes a path the machine must
//! already survive in production (a busy reply, a short read, a late timer), only far more
//! often than production would, so rare paths get exercised by every seed.
//!
//! The sites exist only with the `buggify` feature (the simulator turns it on), and even then
//! do nothing until a simulator arms the current thread with [`arm`]: a real broker never
//! does, so no site ever fires outside a simulated run. All randomness comes from the seed
//! given to `arm`, so a run stays a function of its seed.
//!
//! The one `rockfish` binary carries the simulator (`rockfish sim`), so its machines are
//! built with the sites. A process that never armed a site nor set a bug pays one relaxed
//! load of a global flag per site reached ([`in_use`]), not a thread-local map lookup.

/// Set once any thread of this process armed its sites or set a bug; never cleared (a
/// process that simulated once keeps checking its threads' state).
#[cfg(feature = "buggify")]
static IN_USE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether any simulation in this process ever armed a site or set a bug.
#[cfg(feature = "buggify")]
#[inline]
fn in_use() -> bool {
    IN_USE.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(feature = "buggify")]
fn mark_in_use() {
    IN_USE.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(feature = "buggify")]
mod armed {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// Chance that a site is active for a run.
    const SITE_ON: f64 = 0.25;
    /// Chance that an active site fires when reached.
    const FIRE: f64 = 0.05;

    struct State {
        rng: Xoshiro256PlusPlus,
        sites: BTreeMap<&'static str, bool>,
        fired: u64,
    }

    thread_local! {
        static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
    }

    pub fn arm(seed: u64) {
        STATE.with(|s| {
            *s.borrow_mut() = Some(State {
                rng: Xoshiro256PlusPlus::seed_from_u64(seed),
                sites: BTreeMap::new(),
                fired: 0,
            })
        });
    }

    pub fn disarm() -> u64 {
        STATE.with(|s| s.borrow_mut().take().map_or(0, |st| st.fired))
    }

    pub fn fire(site: &'static str) -> bool {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let Some(st) = s.as_mut() else { return false };
            let active = match st.sites.get(site) {
                Some(on) => *on,
                None => {
                    let on = st.rng.random_bool(SITE_ON);
                    st.sites.insert(site, on);
                    on
                }
            };
            let fired = active && st.rng.random_bool(FIRE);
            st.fired += u64::from(fired);
            fired
        })
    }
}

/// Arms this thread's sites for one simulated run, all draws from `seed`.
#[cfg(feature = "buggify")]
pub fn arm(seed: u64) {
    mark_in_use();
    armed::arm(seed)
}

/// Disarms this thread's sites; returns how many times they fired.
#[cfg(feature = "buggify")]
pub fn disarm() -> u64 {
    armed::disarm()
}

/// Whether the site fires now. Always false unless built for simulation and armed.
#[inline]
pub fn fire(site: &'static str) -> bool {
    #[cfg(feature = "buggify")]
    {
        in_use() && armed::fire(site)
    }
    #[cfg(not(feature = "buggify"))]
    {
        let _ = site;
        false
    }
}

/// `buggify!("site")`: true when the named fault site fires (simulated runs only).
#[macro_export]
macro_rules! buggify {
    ($site:literal) => {
        $crate::buggify::fire($site)
    };
}

/// Deliberately broken machines, for proving the simulator's checkers: a named bug the
/// simulator switches on for one run (and off when it ends) makes a machine take a path it
/// must never take (`bug("broker.serve-unflushed")`). Like the sites, compiled only with the
/// `buggify` feature and inert until set on this thread.
#[cfg(feature = "buggify")]
mod bugs {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    thread_local! {
        static ON: RefCell<BTreeSet<&'static str>> = const { RefCell::new(BTreeSet::new()) };
    }

    pub fn set(name: &'static str) {
        ON.with(|b| b.borrow_mut().insert(name));
    }

    pub fn clear() {
        ON.with(|b| b.borrow_mut().clear());
    }

    pub fn on(name: &'static str) -> bool {
        ON.with(|b| b.borrow().contains(name))
    }
}

/// Switches a deliberate bug on for this thread (until [`clear_bugs`]).
#[cfg(feature = "buggify")]
pub fn set_bug(name: &'static str) {
    mark_in_use();
    bugs::set(name)
}

/// Switches every deliberate bug off on this thread.
#[cfg(feature = "buggify")]
pub fn clear_bugs() {
    bugs::clear()
}

/// Whether the named deliberate bug is on. Always false unless built for simulation and set.
#[inline]
pub fn bug(name: &'static str) -> bool {
    #[cfg(feature = "buggify")]
    {
        in_use() && bugs::on(name)
    }
    #[cfg(not(feature = "buggify"))]
    {
        let _ = name;
        false
    }
}

#[cfg(all(test, feature = "buggify"))]
mod tests {
    use super::*;

    #[test]
    fn unarmed_sites_never_fire_and_armed_ones_follow_the_seed() {
        assert!((0..10_000).all(|_| !fire("t")));
        let run = |seed| {
            arm(seed);
            let fires: Vec<bool> = (0..2_000)
                .map(|i| fire(["a", "b", "c", "d"][i % 4]))
                .collect();
            disarm();
            fires
        };
        assert_eq!(run(7), run(7));
        assert!(
            (0..20).any(|seed| run(seed).iter().any(|f| *f)),
            "some seed turns a site on"
        );
        assert!((0..10_000).all(|_| !fire("t")), "disarmed again");
    }
}
