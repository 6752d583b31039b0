//! A worker-local shutdown flag, set once. Each worker has two (src/worker.rs): one set when
//! the server stops, awaited by the accept loops; one set after the drain's grace, awaited by
//! every read of every session (which then answers 421).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A worker-local shutdown flag that sessions can wait on.
///
/// Each waiting future owns one slot and frees it when dropped (every read of every session
/// waits on this), so the list holds only the sessions waiting now: no growth with the
/// sessions served, no scan per poll.
#[derive(Default)]
pub struct Shutdown {
    set: Cell<bool>,
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Shutdown {
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub fn trigger(&self) {
        self.set.set(true);
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once the flag is set.
    pub fn wait(&self) -> ShutdownWait<'_> {
        ShutdownWait {
            shutdown: self,
            slot: None,
        }
    }

    /// Slots in use (for tests).
    pub fn waiting(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.is_some()).count()
    }
}

/// The future of [`Shutdown::wait`].
pub struct ShutdownWait<'a> {
    shutdown: &'a Shutdown,
    slot: Option<usize>,
}

impl Future for ShutdownWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.set.get() {
            return Poll::Ready(());
        }
        let waker = cx.waker().clone();
        let mut slots = self.shutdown.slots.borrow_mut();
        match self.slot {
            Some(i) => slots[i] = Some(waker),
            None => {
                let i = match self.shutdown.free.borrow_mut().pop() {
                    Some(i) => {
                        slots[i] = Some(waker);
                        i
                    }
                    None => {
                        slots.push(Some(waker));
                        slots.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for ShutdownWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            if let Some(slot) = self.shutdown.slots.borrow_mut().get_mut(i) {
                *slot = None;
            }
            self.shutdown.free.borrow_mut().push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;
    use crate::runtime::{run_on, Driver};

    /// Every read of every session waits on the shutdown flag: finished waits must leave
    /// nothing behind (the benchmark once showed memory and CPU growing per session served).
    #[test]
    fn shutdown_waits_leave_no_trace_and_all_wake() {
        let sd = Rc::new(Shutdown::default());
        let sd2 = sd.clone();
        run_on(Driver::Epoll, move || async move {
            for _ in 0..1000 {
                let _ = monoio::time::timeout(Duration::from_micros(10), sd2.wait()).await;
            }
            assert_eq!(sd2.waiting(), 0);
            assert!(sd2.slots.borrow().len() <= 1, "slots are reused");
            let (a, b) = (sd2.clone(), sd2.clone());
            let ta = monoio::spawn(async move { a.wait().await });
            let tb = monoio::spawn(async move { b.wait().await });
            monoio::time::sleep(Duration::from_millis(5)).await;
            assert_eq!(sd2.waiting(), 2);
            sd2.trigger();
            ta.await;
            tb.await;
            assert_eq!(sd2.waiting(), 0);
        })
        .unwrap();
        assert!(sd.is_set());
    }
}
