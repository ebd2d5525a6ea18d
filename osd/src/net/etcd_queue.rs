//! The OSD's etcd writes waiting their turn, in order, with a bound that holds through an
//! etcd outage of any length.
//!
//! The action loop carries out one write at a time and retries it until etcd answers, so
//! during an outage everything the daemon asks for waits here. Most of it is event
//! driven and bounded by the number of PGs (at most one claim per PG is outstanding, a
//! release follows a claim, history writes follow peerings, and once the lease deadline
//! passes the OSD stops every PG and asks for nothing more). The two kinds that repeat
//! are coalesced, so they cannot grow with time:
//!
//! | queued action of PG p   | new action for p | result                                      |
//! |-------------------------|------------------|---------------------------------------------|
//! | `PutPgStats`            | `PutPgStats`     | the queued one takes the new value in place |
//! | last is `PutPgState`    | `PutPgState`     | the queued one takes the new value in place |
//! | anything else           | anything         | appended                                    |
//!
//! Stats are plain puts independent of everything else, so one per PG is enough; a
//! state put replaces only a state put that is the PG's LAST queued action, because a
//! claim or release queued after it must still see the puts in their order.
//! As a last guard, stats are dropped (logged) once [`QUEUED_ACTIONS_MAX`] actions wait:
//! they are rewritten every second anyway.

use crate::cluster::PgKey;
use crate::daemon::EtcdAction;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use tokio::sync::Notify;

/// Beyond this many waiting actions, new stats are dropped.
pub const QUEUED_ACTIONS_MAX: usize = 65536;

#[derive(Default)]
pub struct EtcdQueue {
    actions: RefCell<VecDeque<EtcdAction>>,
    wake: Notify,
    dropped_stats: Cell<u64>,
}

fn pg_of(action: &EtcdAction) -> PgKey {
    match action {
        EtcdAction::ClaimPg { pg, .. }
        | EtcdAction::PutPgState { pg, .. }
        | EtcdAction::ReleasePg { pg }
        | EtcdAction::PutPgStats { pg, .. }
        | EtcdAction::PutPgHistory { pg, .. } => *pg,
    }
}

impl EtcdQueue {
    /// Queues `action` (or folds it into a queued one, see the table above).
    pub fn push(&self, action: EtcdAction) {
        let mut actions = self.actions.borrow_mut();
        let pg = pg_of(&action);
        match &action {
            EtcdAction::PutPgStats { .. } => {
                let queued = actions
                    .iter_mut()
                    .find(|a| matches!(a, EtcdAction::PutPgStats { pg: p, .. } if *p == pg));
                if let Some(queued) = queued {
                    *queued = action;
                    return;
                }
                if actions.len() >= QUEUED_ACTIONS_MAX {
                    let dropped = self.dropped_stats.get() + 1;
                    self.dropped_stats.set(dropped);
                    if dropped.is_power_of_two() {
                        tracing::warn!(
                            dropped,
                            "{QUEUED_ACTIONS_MAX} etcd writes are waiting; PG stats dropped"
                        );
                    }
                    return;
                }
            }
            EtcdAction::PutPgState { .. } => {
                let last = actions.iter_mut().rev().find(|a| pg_of(a) == pg);
                if let Some(last @ EtcdAction::PutPgState { .. }) = last {
                    *last = action;
                    return;
                }
            }
            _ => {}
        }
        actions.push_back(action);
        drop(actions);
        self.wake.notify_one();
    }

    /// The oldest action, once there is one.
    pub async fn next(&self) -> EtcdAction {
        loop {
            if let Some(action) = self.actions.borrow_mut().pop_front() {
                return action;
            }
            self.wake.notified().await;
        }
    }

    /// Actions waiting (the one being carried out is not counted).
    pub fn waiting(&self) -> usize {
        self.actions.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pg: u32, value: &str) -> EtcdAction {
        EtcdAction::PutPgStats {
            pg: (1, pg),
            value: value.into(),
        }
    }

    fn state(pg: u32, value: &str) -> EtcdAction {
        EtcdAction::PutPgState {
            pg: (1, pg),
            value: value.into(),
        }
    }

    fn drain(queue: &EtcdQueue) -> Vec<EtcdAction> {
        queue.actions.borrow_mut().drain(..).collect()
    }

    #[test]
    fn stats_stay_one_per_pg_for_ever() {
        let queue = EtcdQueue::default();
        for second in 0..10_000 {
            for pg in 1..=32 {
                queue.push(stats(pg, &second.to_string()));
            }
        }
        let left = drain(&queue);
        assert_eq!(left.len(), 32);
        assert!(left
            .iter()
            .all(|a| matches!(a, EtcdAction::PutPgStats { value, .. } if value == "9999")));
    }

    #[test]
    fn a_state_put_folds_only_into_the_pgs_last_action() {
        let queue = EtcdQueue::default();
        queue.push(state(1, "a"));
        queue.push(state(1, "b"));
        queue.push(EtcdAction::ReleasePg { pg: (1, 1) });
        queue.push(EtcdAction::ClaimPg {
            pg: (1, 1),
            value: "c".into(),
        });
        queue.push(state(2, "x"));
        queue.push(state(1, "d"));
        queue.push(state(1, "e"));
        let left = drain(&queue);
        assert_eq!(
            left,
            vec![
                state(1, "b"),
                EtcdAction::ReleasePg { pg: (1, 1) },
                EtcdAction::ClaimPg {
                    pg: (1, 1),
                    value: "c".into()
                },
                state(2, "x"),
                state(1, "e"),
            ]
        );
    }

    #[test]
    fn stats_are_dropped_past_the_limit_and_nothing_else_is() {
        let queue = EtcdQueue::default();
        for pg in 0..QUEUED_ACTIONS_MAX as u32 {
            queue.push(EtcdAction::ReleasePg { pg: (1, pg) });
        }
        queue.push(stats(1, "s"));
        assert_eq!(queue.waiting(), QUEUED_ACTIONS_MAX);
        queue.push(EtcdAction::ReleasePg { pg: (2, 0) });
        assert_eq!(queue.waiting(), QUEUED_ACTIONS_MAX + 1);
    }
}
