//! The deploy's phases, and which moves between them are possible.
//!
//! ```text
//! Preparing ─▶ Starting ─▶ Switching ─▶ Draining ─▶ Stopping ─▶ Done
//!                  └─▶ Canary ─┘ (a canary's steps, then promotion)
//!     │            │            └──────────│───────────────────▲ (nothing to retire)
//!     └────────────┴────────────────────────┴─▶ Failed
//! ```
//!
//! `Done` and `Failed` are terminal. A deploy can fail before the switch (the
//! old release was never touched) or after it, while the old instances still
//! run (switched or draining): the new instances are
//! watched for `watch_after_switch` after the switch, and one that exits sends
//! traffic back to the old instances, which are still running. Once the old
//! instances are being stopped, the deploy can no longer fail.

pub(crate) use crate::protocol::Phase;

/// No way out of these.
#[cfg(test)]
pub(crate) fn is_terminal(phase: Phase) -> bool {
    matches!(phase, Phase::Done | Phase::Failed)
}

/// Whether `from → next` is a legal move.
pub(crate) fn can_move(from: Phase, next: Phase) -> bool {
    use Phase::*;
    matches!(
        (from, next),
        (Preparing, Starting)
            | (Preparing, Switching)
            | (Preparing, Failed)
            | (Starting, Switching)
            | (Starting, Failed)
            // a canary: its steps, then promotion or rollback
            | (Starting, Canary)
            | (Canary, Canary)
            | (Canary, Switching)
            | (Canary, Failed)
            | (Switching, Draining)
            | (Switching, Done)
            // rolling: a switched batch that dies within min_uptime
            | (Switching, Failed)
            | (Draining, Stopping)
            | (Draining, Failed)
            | (Stopping, Done)
            // rolling: the next batch starts after the previous one's switch
            | (Draining, Starting)
            | (Switching, Starting)
    )
}

/// A deploy's phase with checked moves.
#[derive(Debug)]
pub(crate) struct Machine {
    phase: Phase,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            phase: Phase::Preparing,
        }
    }
}

impl Machine {
    /// The phase now.
    #[cfg(test)]
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Moves on.
    ///
    /// # Panics
    /// On an illegal move: that is a bug in the deploy code, not bad input.
    pub(crate) fn advance(&mut self, next: Phase) {
        assert!(
            can_move(self.phase, next),
            "deploy cannot move from {} to {next}",
            self.phase
        );
        self.phase = next;
    }
}

#[cfg(test)]
mod tests {
    use super::Phase::*;
    use super::*;

    /// Once the old instances are being stopped, there is nothing to go back
    /// to, so a deploy cannot turn into a failure.
    #[test]
    fn no_failure_once_old_stops() {
        for p in [Stopping, Done] {
            assert!(!can_move(p, Failed), "{p} -> failed must be impossible");
        }
    }

    /// Terminal phases have no way out.
    #[test]
    fn terminal_is_final() {
        let all = [
            Preparing, Starting, Switching, Draining, Stopping, Done, Failed,
        ];
        for t in [Done, Failed] {
            assert!(is_terminal(t));
            for n in all {
                assert!(!can_move(t, n), "{t} -> {n} must be impossible");
            }
        }
    }

    /// Old instances are never stopped before the switch.
    #[test]
    fn no_stop_before_switch() {
        for p in [Preparing, Starting] {
            assert!(!can_move(p, Draining));
            assert!(!can_move(p, Stopping));
        }
    }

    /// The blue-green path is legal end to end.
    #[test]
    #[should_panic(expected = "cannot move")]
    fn machine_rejects_illegal_moves() {
        let mut m = Machine::default();
        for p in [Starting, Switching, Draining, Stopping, Done] {
            m.advance(p);
        }
        assert_eq!(m.phase(), Done);
        m.advance(Starting);
    }
}
