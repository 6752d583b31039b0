//! What a session needs only while it is busy, kept per worker thread and lent out: the read
//! and write buffers, the mail transaction (with its buffers), and the boxed future of a busy period (commands, DATA, hooks: several
//! KiB of state). An idle connection holds none of them, only its small [`super::Session`]
//! and a readiness wait, so 100,000 idle connections cost little (docs/benchmarks.md, memory
//! per idle connection). A busy session takes them back from here, so a client sending one
//! message after another allocates nothing per message.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ringsmtpd_plugin_api::Transaction;

/// How many of each kind a worker keeps; beyond that, what is given back is freed. About the
/// number of sessions busy at the same moment on one worker; at most 64 x 64 KiB of buffers.
const KEEP: usize = 64;

thread_local! {
    static READ: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static FUTURES: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
    // Boxes, not values: a session's transaction is a `Box` (see `State::txn`), lent and given
    // back without a move or an allocation.
    #[allow(clippy::vec_box)]
    static TRANSACTIONS: RefCell<Vec<Box<Transaction>>> = const { RefCell::new(Vec::new()) };
}

/// Which buffer pool.
#[derive(Clone, Copy)]
pub enum Buf {
    Read,
    Write,
}

impl Buf {
    fn with<R>(self, f: impl FnOnce(&mut Vec<Vec<u8>>) -> R) -> R {
        let pool = match self {
            Buf::Read => &READ,
            Buf::Write => &WRITE,
        };
        pool.with(|p| f(&mut p.borrow_mut()))
    }
}

/// An empty buffer: a recycled one, else a new one of `capacity`.
pub fn take(kind: Buf, capacity: usize) -> Vec<u8> {
    kind.with(|p| p.pop())
        .unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// Gives `buf` back (emptied), or frees it when the pool is full.
pub fn give(kind: Buf, mut buf: Vec<u8>) {
    if buf.capacity() == 0 {
        return;
    }
    buf.clear();
    kind.with(|p| {
        if p.len() < KEEP {
            p.push(buf);
        }
    });
}

/// A cleared transaction: a recycled one (its buffers kept), else a new one.
pub fn take_transaction() -> Box<Transaction> {
    TRANSACTIONS
        .with(|t| t.borrow_mut().pop())
        .unwrap_or_default()
}

/// The most of a transaction's buffers kept when it goes back to the pool: a typical message
/// fits, and a burst of messages near `size_threshold` (1 MiB by default) does not leave
/// 64 MiB behind per worker.
const KEEP_BYTES: usize = 64 * 1024;

/// Spare recipient addresses a pooled transaction keeps (a message to more recipients
/// allocates the rest).
const KEEP_ADDRESSES: usize = 100;

/// Gives `txn` back, cleared and trimmed, or frees it when the pool is full.
pub fn give_transaction(mut txn: Box<Transaction>) {
    txn.clear();
    txn.trim(KEEP_BYTES, KEEP_ADDRESSES);
    TRANSACTIONS.with(|t| {
        let mut t = t.borrow_mut();
        if t.len() < KEEP {
            t.push(txn);
        }
    });
}

/// Runs `fut` in a heap slot of its type, reused from an earlier run on this thread if one was
/// given back, and gives the slot back when `fut` completes (a slot whose future is dropped
/// before completion is freed with it). A plain function returning [`Lent`], not an `async fn`,
/// so the caller's future holds only the slot's pointer, never `fut` itself.
pub fn boxed<F: Future + 'static>(fut: F) -> Lent<F> {
    let reused = FUTURES.with(|f| {
        let mut f = f.borrow_mut();
        let i = f.iter().rposition(|b| b.is::<F>())?;
        f.swap_remove(i).downcast::<F>().ok()
    });
    let slot = match reused {
        Some(done) => {
            let mut slot = Box::into_pin(done);
            slot.set(fut); // drops the completed future in place, writes the new one there
            slot
        }
        None => Box::pin(fut),
    };
    Lent(Some(slot))
}

/// A future running in a lent slot (see [`boxed`]).
pub struct Lent<F: Future + 'static>(Option<Pin<Box<F>>>);

impl<F: Future + 'static> Future for Lent<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(slot) = self.0.as_mut() else {
            panic!("a lent future polled after it completed");
        };
        let out = std::task::ready!(slot.as_mut().poll(cx));
        if let Some(slot) = self.0.take() {
            // SAFETY: `into_inner_unchecked` requires that the pinned value is never moved
            // out of its place. It is not: the Box is only coerced to `Box<dyn Any>` (same
            // heap address), later downcast back to `Box<F>` (same address again) and
            // re-pinned in `boxed`, where `Pin::set` drops the old value in place; or it is
            // freed in place when the pool is full or the thread ends. Nothing ever moves the
            // `F` out of the allocation.
            let done: Box<F> = unsafe { Pin::into_inner_unchecked(slot) };
            FUTURES.with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < KEEP {
                    f.push(done);
                }
            });
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_the_pool_is_bounded() {
        let mut b = take(Buf::Write, 100);
        b.extend_from_slice(b"250 ok\r\n");
        let ptr = b.as_ptr();
        give(Buf::Write, b);
        let again = take(Buf::Write, 100);
        assert_eq!(again.as_ptr(), ptr, "the given-back buffer is lent again");
        assert!(again.is_empty());
        for _ in 0..KEEP + 10 {
            give(Buf::Read, Vec::with_capacity(16));
        }
        assert_eq!(READ.with(|p| p.borrow().len()), KEEP);
    }

    #[test]
    fn a_large_transaction_comes_back_trimmed() {
        let mut txn = take_transaction();
        txn.body.mem.resize(1 << 20, b'x');
        txn.added_headers.push_str(&"h".repeat(200_000));
        give_transaction(txn);
        let again = take_transaction();
        assert!(again.body.mem.is_empty());
        assert!(
            again.body.mem.capacity() <= KEEP_BYTES,
            "{}",
            again.body.mem.capacity()
        );
        assert!(again.added_headers.capacity() <= KEEP_BYTES);
    }

    #[test]
    fn a_future_slot_is_reused_and_its_output_returned() {
        /// Pending once (waking itself), then ready: an await point that allocates nothing.
        struct YieldOnce(bool);
        impl Future for YieldOnce {
            type Output = ();
            fn poll(
                mut self: Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<()> {
                if self.0 {
                    return std::task::Poll::Ready(());
                }
                self.0 = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        }
        async fn job(n: u32) -> u32 {
            let big = [n as u8; 2048]; // state kept across an await: the slot is big
            YieldOnce(false).await;
            n + big[100] as u32
        }
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            let first = ringsmtpd_plugin_api::testing::allocations();
            assert_eq!(boxed(job(1)).await, 2);
            let counted = ringsmtpd_plugin_api::testing::allocations() - first;
            assert!(
                counted > 0,
                "the first run allocates its slot (allocations counted)"
            );
            let before = ringsmtpd_plugin_api::testing::allocations();
            for i in 0..10 {
                assert_eq!(boxed(job(i)).await, 2 * i);
            }
            let after = ringsmtpd_plugin_api::testing::allocations();
            assert_eq!(after - before, 0, "allocations for 10 runs");
        });
    }
}
