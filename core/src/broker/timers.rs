//! The broker's timers as one table. A new timer is a [`Timer`] variant, armed where it is
//! first due and handled in `Broker::on_timeout`; `poll_timeout` and the due checks are
//! shared, so nothing else changes (before, each timer was a field touched in `new`,
//! `poll_timeout` and `on_timeout`).

/// Every timer the broker keeps, in the order `on_timeout` handles them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// REGISTER_BROKER to every name server, each register interval.
    Register,
    /// A registration still unanswered by then is sent again.
    RegisterRetry,
    /// ASYNC_FLUSH: the commit log is flushed each flush interval.
    Flush,
    /// A checkpoint starts (and a failed topics.json write is retried).
    Checkpoint,
    /// Auto-created topics waiting to be persisted and registered together.
    TopicsPersist,
    /// Consumer offsets are written.
    OffsetPersist,
    /// Clients that stopped sending heartbeats are expired.
    ClientScan,
    /// The earliest delayed message falls due (or a delivery is tried again).
    Schedule,
    /// The timing wheel: the next timer message falls due, or the next window loads.
    Wheel,
    /// Undecided transaction halves are checked back with their producers.
    TransactionCheck,
    /// A slave asks its master for its configs.
    SlaveSync,
    /// Controller mode: a heartbeat (or registration) to the controller.
    ControllerBeat,
    /// Pop: the earliest checkpoint falls due (its un-acked messages are revived).
    PopRevive,
}

const TIMERS: usize = 13;

#[derive(Debug, Default)]
pub(super) struct Timers {
    at: [Option<u64>; TIMERS],
}

impl Timers {
    pub(super) fn set(&mut self, t: Timer, at: u64) {
        self.at[t as usize] = Some(at);
    }

    pub(super) fn clear(&mut self, t: Timer) {
        self.at[t as usize] = None;
    }

    pub(super) fn at(&self, t: Timer) -> Option<u64> {
        self.at[t as usize]
    }

    pub(super) fn is_set(&self, t: Timer) -> bool {
        self.at[t as usize].is_some()
    }

    /// Armed and reached by `now`.
    pub(super) fn due(&self, t: Timer, now: u64) -> bool {
        self.at[t as usize].is_some_and(|at| now >= at)
    }

    /// The earliest armed timer.
    pub(super) fn next(&self) -> Option<u64> {
        self.at.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_deadline_is_the_earliest_armed_timer() {
        let mut t = Timers::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Checkpoint, 30);
        t.set(Timer::ClientScan, 10);
        assert_eq!(t.next(), Some(10));
        assert!(t.due(Timer::ClientScan, 10) && !t.due(Timer::Checkpoint, 29));
        t.clear(Timer::ClientScan);
        assert_eq!(t.next(), Some(30));
        assert!(!t.is_set(Timer::Flush) && !t.due(Timer::Flush, u64::MAX));
    }
}
