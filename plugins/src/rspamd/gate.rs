//! At most N scans in flight per worker: a plugin instance lives on one worker thread, so a
//! counter and a FIFO queue of waiting sessions in a `RefCell` are enough (no lock, no thread).
//! A session that finds every slot taken waits in the queue as a future; first come, first
//! served. A waiter given up (its hook timed out) leaves the queue and passes its turn on.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

pub struct Gate {
    max: usize,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    in_use: usize,
    next_id: u64,
    /// Waiting sessions in arrival order: their id and the waker of their last poll.
    queue: VecDeque<(u64, Option<Waker>)>,
}

impl State {
    /// Wakes the first waiter when a slot is free.
    fn wake_front(&mut self, max: usize) {
        if self.in_use < max {
            if let Some(w) = self.queue.front_mut().and_then(|(_, w)| w.take()) {
                w.wake();
            }
        }
    }
}

impl Gate {
    pub fn new(max: usize) -> Gate {
        Gate {
            max,
            state: RefCell::default(),
        }
    }

    /// A slot, now or when one is free and every earlier waiter has had its turn.
    pub fn acquire(&self) -> Acquire<'_> {
        let mut st = self.state.borrow_mut();
        let id = st.next_id;
        st.next_id += 1;
        st.queue.push_back((id, None));
        Acquire {
            gate: self,
            id,
            done: false,
        }
    }

    /// Scans in flight and sessions waiting, for logs.
    pub fn load(&self) -> (usize, usize) {
        let st = self.state.borrow();
        (st.in_use, st.queue.len())
    }
}

/// The wait for a slot (see [`Gate::acquire`]).
pub struct Acquire<'g> {
    gate: &'g Gate,
    id: u64,
    done: bool,
}

impl<'g> Future for Acquire<'g> {
    type Output = Permit<'g>;

    fn poll(mut self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<Permit<'g>> {
        let gate = self.gate;
        let mut st = gate.state.borrow_mut();
        let first = st.queue.front().map(|(id, _)| *id) == Some(self.id);
        if first && st.in_use < gate.max {
            st.queue.pop_front();
            st.in_use += 1;
            // The next waiter may fit too.
            st.wake_front(gate.max);
            drop(st);
            self.done = true;
            return Poll::Ready(Permit(gate));
        }
        if let Some(entry) = st.queue.iter_mut().find(|(id, _)| *id == self.id) {
            entry.1 = Some(task.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.gate.state.borrow_mut();
        st.queue.retain(|(id, _)| *id != self.id);
        st.wake_front(self.gate.max);
    }
}

/// A slot held: given back on drop, to the first waiter.
pub struct Permit<'g>(&'g Gate);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.borrow_mut();
        st.in_use -= 1;
        st.wake_front(self.0.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn poll<'g>(a: &mut Pin<Box<Acquire<'g>>>, flag: &Arc<Flag>) -> Option<Permit<'g>> {
        let waker = Waker::from(flag.clone());
        match a.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(p) => Some(p),
            Poll::Pending => None,
        }
    }

    fn flag() -> Arc<Flag> {
        Arc::new(Flag(false.into()))
    }

    fn woken(f: &Arc<Flag>) -> bool {
        f.0.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn first_come_first_served_and_given_up_turns_pass_on() {
        let gate = Gate::new(1);
        let (fa, fb, fc) = (flag(), flag(), flag());
        let mut a = Box::pin(gate.acquire());
        let pa = poll(&mut a, &fa).expect("a free slot");
        let mut b = Box::pin(gate.acquire());
        let mut c = Box::pin(gate.acquire());
        assert!(poll(&mut c, &fc).is_none() && poll(&mut b, &fb).is_none());
        assert_eq!(gate.load(), (1, 2));
        drop(pa);
        // b came first: it is woken, c is not, and c cannot jump the queue.
        assert!(woken(&fb) && !woken(&fc));
        assert!(poll(&mut c, &fc).is_none());
        // b gives up (its hook timed out): c's turn.
        drop(b);
        assert!(woken(&fc));
        let pc = poll(&mut c, &fc).expect("c's turn");
        assert_eq!(gate.load(), (1, 0));
        drop(pc);
        assert_eq!(gate.load(), (0, 0));
    }

    #[test]
    fn several_slots() {
        let gate = Gate::new(2);
        let f = flag();
        let mut a = Box::pin(gate.acquire());
        let mut b = Box::pin(gate.acquire());
        let mut c = Box::pin(gate.acquire());
        let (_pa, _pb) = (poll(&mut a, &f).expect("a"), poll(&mut b, &f).expect("b"));
        assert!(poll(&mut c, &f).is_none());
        assert_eq!(gate.load(), (2, 1));
    }
}
