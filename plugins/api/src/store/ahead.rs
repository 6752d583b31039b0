//! One store round trip per hook, however many plugins of the hook keep state.
//!
//! Each plugin that keeps state sends one [`Batch`] per hook, and the plugins of a chain run
//! one after the other, so `karma` and `limit` at connect, or `greylisting` and `limit` at
//! MAIL, would each wait for a round trip of their own. Instead a plugin may *plan* its batch:
//!
//! 1. it lists the hooks it plans for in [`Plugin::store_hooks`](crate::Plugin::store_hooks)
//!    and builds the batch it will send in
//!    [`Plugin::store_ahead`](crate::Plugin::store_ahead);
//! 2. when a hook's chain reaches the first of two or more planning plugins, the engine asks
//!    that plugin and every later planning plugin of the chain for their batches and sends them
//!    to the store together ([`send_plans`]: one round trip, or one per [`MAX_BATCH`]
//!    operations);
//! 3. each plugin's hook builds its batch as usual and sends it with [`Cx::store_planned`]:
//!    when the batch is the one it planned, it gets the replies already there; otherwise (the
//!    plan was not made, as in unit tests, or the client's state changed in between) the batch
//!    goes to the store now, as [`Services::store`](crate::Services::store) would send it.
//!
//! A plan and its hook must build the same batch from the same state. Time is the one input
//! that moves: both read it from [`Cx::store_now`], one wall-clock reading per hook.
//!
//! What a plugin gives up: its planned operations are applied before its hook runs, even when
//! an earlier plugin of the chain decides first and the hook never runs (`limit` then counts a
//! connection another plugin refused; `greylisting` records a first attempt that `limit`
//! refused). A plugin whose planned operation must be undone later (`limit`'s concurrency count)
//! notes that in `store_ahead`, which gets `&mut Cx` for this.

use std::time::SystemTime;

use super::{Batch, Replies, StoreError, StoreFuture, MAX_BATCH};
use crate::context::{Cx, Services, Transaction};
use crate::envelope::Recipient;
use crate::hook::Hook;

/// What a plan is for: the hook, its transaction and its recipient (`rcpt`).
#[derive(Clone, Copy)]
pub struct Ahead<'a> {
    pub hook: Hook,
    pub txn: Option<&'a Transaction>,
    pub rcpt: Option<&'a Recipient>,
}

/// A planned batch and what the store answered, held by the [`Cx`] while its plugin's hook runs.
#[derive(Debug)]
pub struct Planned {
    batch: Batch,
    result: Result<Replies, StoreError>,
}

/// The state of one hook's plans on a connection.
#[derive(Debug, Default)]
pub struct Plans {
    /// The wall clock of the running hook, read once ([`Cx::store_now`]).
    pub(crate) now: Option<SystemTime>,
    /// The plan of the plugin whose hook runs now.
    pub(crate) current: Option<Planned>,
}

impl Cx {
    /// The wall clock for store keys and values: one reading for the whole hook while plans
    /// are made and used (so a plan and its hook agree), else the services' clock.
    pub fn store_now(&self) -> SystemTime {
        self.plans.now.unwrap_or_else(|| self.svc.now())
    }

    /// Sends `batch`, or answers it from this hook's plan when it is the batch the plugin
    /// planned (see the module docs).
    pub fn store_planned(&mut self, batch: Batch) -> StoreFuture {
        match self.plans.current.take() {
            Some(p) if p.batch == batch => Box::pin(std::future::ready(p.result)),
            _ => self.svc.store(batch),
        }
    }

    /// Starts a hook's plans: fixes its clock (the engine).
    pub fn begin_plans(&mut self) {
        self.plans.now = Some(self.svc.now());
    }

    /// Gives the next plugin its plan, or none (the engine, before each plugin's hook).
    pub fn hand_plan(&mut self, plan: Option<Planned>) {
        self.plans.current = plan;
    }

    /// Ends a hook's plans: an unused plan is dropped, the clock runs again (the engine).
    pub fn end_plans(&mut self) {
        self.plans = Plans::default();
    }

    /// True between [`Cx::begin_plans`] and [`Cx::end_plans`].
    pub fn planning(&self) -> bool {
        self.plans.now.is_some()
    }
}

/// Sends planned batches together: their operations in one batch (split at [`MAX_BATCH`]
/// operations, never inside a plan), one round trip each. Returns each plan with its replies,
/// in order. A plan over the limits gets [`StoreError::TooLarge`] and is not sent; a failed round
/// trip gives its error to every plan in it.
pub async fn send_plans(svc: &dyn Services, plans: Vec<Batch>) -> Vec<Planned> {
    let mut out: Vec<Planned> = Vec::with_capacity(plans.len());
    let mut group: Vec<Batch> = Vec::new();
    let mut ops = 0;
    for plan in plans {
        if let Err(e) = plan.check() {
            flush(svc, &mut group, &mut out).await;
            ops = 0;
            out.push(Planned {
                batch: plan,
                result: Err(e),
            });
            continue;
        }
        if ops + plan.ops.len() > MAX_BATCH {
            flush(svc, &mut group, &mut out).await;
            ops = 0;
        }
        ops += plan.ops.len();
        group.push(plan);
    }
    flush(svc, &mut group, &mut out).await;
    out
}

/// Sends `group` as one batch and splits the replies back into its plans.
async fn flush(svc: &dyn Services, group: &mut Vec<Batch>, out: &mut Vec<Planned>) {
    if group.is_empty() {
        return;
    }
    let combined = Batch {
        ops: group.iter().flat_map(|b| b.ops.iter().cloned()).collect(),
    };
    let total = combined.ops.len();
    let result = svc.store(combined).await;
    let mut replies = match result {
        Ok(Replies(r)) if r.len() == total => Ok(r.into_iter()),
        Ok(Replies(r)) => Err(StoreError::Protocol(format!(
            "{} replies to {total} operations",
            r.len()
        ))),
        Err(e) => Err(e),
    };
    for batch in group.drain(..) {
        let result = match &mut replies {
            Ok(r) => Ok(Replies(r.by_ref().take(batch.ops.len()).collect())),
            Err(e) => Err(e.clone()),
        };
        out.push(Planned { batch, result });
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;
    use crate::store::{Key, Slot};
    use crate::testing::{block_on as run, store_client, FakeServices};

    fn key(n: u32) -> Key {
        Key::new("t", &[n.to_string().as_bytes()]).unwrap()
    }

    fn counting() -> (Rc<FakeServices>, Cx) {
        let (cx, svc) = store_client("192.0.2.1:4242", None);
        (svc, cx)
    }

    #[test]
    fn plans_share_one_round_trip_and_get_their_own_replies() {
        let (svc, _cx) = counting();
        let mut a = Batch::new();
        a.incr(key(1), 2, None);
        a.get(key(2));
        let mut b = Batch::new();
        b.incr(key(1), 3, None);
        let out = run(send_plans(&*svc, vec![a.clone(), b.clone()]));
        assert_eq!(svc.store_calls.get(), 1);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].batch, a);
        let ra = out[0].result.as_ref().unwrap();
        let rb = out[1].result.as_ref().unwrap();
        assert_eq!(ra.0.len(), 2);
        assert_eq!(rb.0.len(), 1);
        // Applied in order: the second plan's incr sees the first's.
        assert_eq!(ra.int(Slot(0)), 2);
        assert_eq!(rb.int(Slot(0)), 5);
    }

    #[test]
    fn plans_beyond_the_batch_limit_take_more_round_trips_and_a_bad_plan_is_refused() {
        let (svc, _cx) = counting();
        let big = |n: usize| {
            let mut b = Batch::new();
            for i in 0..n {
                b.get(key(i as u32));
            }
            b
        };
        let too_big = big(MAX_BATCH + 1);
        let out = run(send_plans(&*svc, vec![big(40), big(40), too_big, big(1)]));
        assert_eq!(out.len(), 4);
        assert_eq!(out[2].result, Err(StoreError::TooLarge));
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, p)| i == 2 || p.result.is_ok()));
        assert_eq!(svc.store_calls.get(), 3, "40 | 40 | (refused) 1");
    }

    #[test]
    fn a_failed_round_trip_fails_every_plan_in_it() {
        let (svc, _cx) = counting();
        *svc.store_fails.borrow_mut() = Some(StoreError::Timeout);
        let mut a = Batch::new();
        a.get(key(1));
        let out = run(send_plans(&*svc, vec![a.clone(), a]));
        assert!(out.iter().all(|p| p.result == Err(StoreError::Timeout)));
        assert_eq!(svc.store_calls.get(), 1);
    }

    #[test]
    fn store_planned_answers_the_planned_batch_and_sends_any_other() {
        let (svc, mut cx) = counting();
        let mut a = Batch::new();
        a.incr(key(1), 1, Some(Duration::from_secs(60)));
        let mut plans = run(send_plans(&*svc, vec![a.clone()]));
        assert_eq!(svc.store_calls.get(), 1);
        cx.begin_plans();
        cx.hand_plan(plans.pop());
        let r = run(cx.store_planned(a.clone())).unwrap();
        assert_eq!(r.int(Slot(0)), 1);
        assert_eq!(svc.store_calls.get(), 1, "answered from the plan");
        // Used once: the same batch again goes to the store.
        let r = run(cx.store_planned(a.clone())).unwrap();
        assert_eq!(r.int(Slot(0)), 2);
        assert_eq!(svc.store_calls.get(), 2);
        // A batch other than the plan is sent, and the plan is dropped.
        cx.hand_plan(run(send_plans(&*svc, vec![a.clone()])).pop());
        let mut other = Batch::new();
        other.get(key(1));
        let r = run(cx.store_planned(other)).unwrap();
        assert_eq!(r.value(Slot(0)), Some(&b"3"[..]));
        assert_eq!(svc.store_calls.get(), 4);
        cx.end_plans();
        assert!(!cx.planning());
    }

    #[test]
    fn the_store_clock_holds_still_for_a_hook() {
        let (svc, mut cx) = counting();
        cx.begin_plans();
        let t = cx.store_now();
        svc.advance(Duration::from_secs(5));
        assert_eq!(cx.store_now(), t);
        cx.end_plans();
        assert_eq!(
            cx.store_now().duration_since(t).unwrap(),
            Duration::from_secs(5)
        );
    }
}
