//! Group commit: deliveries that finish while a commit is running wait for the next one, and
//! one blocking-pool job commits them all together (`queue/maildir`: their file fsyncs in
//! parallel, one fsync per `new/` directory, or one syncfs). One per Maildir for the whole
//! process (`by_path`): both workers' messages join the same batches.
//!
//! A submitted item joins the pending list. If fewer than `jobs` commit jobs are running, the
//! submitter starts one on its worker's blocking pool; else a running job takes the pending
//! list as its next batch when its current batch is done. A job runs until the list is empty,
//! so a batch is every item that arrived during a previous commit: under load the batches
//! grow by themselves, and a lone delivery is committed at once, with no timer. With two jobs
//! one batch's syncs overlap the next batch's writes and its wait for the disk; at most `jobs`
//! blocking threads are busy with commits, whatever the load and the number of workers.
//!
//! Each item gets its own result, through its own channel (the worker's task is woken from the
//! job's thread). A submitter that goes away (plugin timeout, client gone) does not stop the
//! job; its result is dropped. If the commit function panics, the items of that batch get no
//! result (`None`: the caller answers 4xx), and the job goes on with the next batch.

use std::sync::{Arc, Mutex};

use futures_channel::oneshot;
use ringsmtpd_plugin_api::Services;

use super::lock;

/// Commits a batch: one result per item, in the same order.
pub(crate) type CommitFn<I, R> = fn(Vec<I>) -> Vec<R>;

/// A group commit, shared by the workers (and plugin instances) that deliver into one place.
pub(crate) struct GroupCommit<I, R> {
    queue: Arc<Mutex<Queue<I, R>>>,
    commit: CommitFn<I, R>,
    jobs: usize,
}

struct Queue<I, R> {
    pending: Vec<(I, oneshot::Sender<R>)>,
    /// Commit jobs running (each takes `pending` before it ends).
    running: usize,
    /// Batches committed and their sizes (the unit tests look).
    #[cfg(test)]
    batches: Vec<usize>,
}

impl<I: Send + 'static, R: Send + 'static> GroupCommit<I, R> {
    /// Commits with `commit`, at most `jobs` (at least 1) batches at a time.
    pub(crate) fn new(commit: CommitFn<I, R>, jobs: usize) -> GroupCommit<I, R> {
        GroupCommit {
            queue: Arc::new(Mutex::new(Queue {
                pending: Vec::new(),
                running: 0,
                #[cfg(test)]
                batches: Vec::new(),
            })),
            commit,
            jobs: jobs.max(1),
        }
    }

    /// Commits `item` with whatever else is pending; `None` if the commit panicked.
    pub(crate) async fn submit(&self, svc: &dyn Services, item: I) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = lock(&self.queue);
            q.pending.push((item, tx));
            let start = q.running < self.jobs;
            if start {
                q.running += 1;
            }
            start
        };
        if start {
            let (queue, commit) = (Arc::clone(&self.queue), self.commit);
            svc.spawn_blocking(Box::new(move || drain(&queue, commit)));
        }
        rx.await.ok()
    }

    /// The sizes of the batches committed so far (tests).
    #[cfg(test)]
    pub(crate) fn batches(&self) -> Vec<usize> {
        lock(&self.queue).batches.clone()
    }

    /// Items submitted and not yet taken into a batch (tests).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        lock(&self.queue).pending.len()
    }
}

/// The commit job: batch after batch until nothing is pending.
fn drain<I, R>(queue: &Mutex<Queue<I, R>>, commit: CommitFn<I, R>) {
    loop {
        let batch = {
            let mut q = lock(queue);
            if q.pending.is_empty() {
                q.running -= 1;
                return;
            }
            let batch = std::mem::take(&mut q.pending);
            #[cfg(test)]
            q.batches.push(batch.len());
            batch
        };
        let (items, replies): (Vec<I>, Vec<oneshot::Sender<R>>) = batch.into_iter().unzip();
        // A panic costs this batch its results (the senders are dropped: `None`), not the job:
        // the items queued meanwhile are still committed.
        let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit(items)));
        if let Ok(results) = committed {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result); // the submitter may be gone
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{block_on, FakeServices};

    fn double(items: Vec<u32>) -> Vec<u32> {
        items.into_iter().map(|i| i * 2).collect()
    }

    #[test]
    fn a_lone_item_is_committed_at_once() {
        let svc = FakeServices::new("test.example");
        let gc = GroupCommit::new(double, 1);
        assert_eq!(block_on(gc.submit(&*svc, 21)), Some(42));
        assert_eq!(block_on(gc.submit(&*svc, 1)), Some(2));
        assert_eq!(gc.batches(), vec![1, 1]);
    }

    #[test]
    fn items_arriving_during_a_commit_share_the_next_one() {
        use std::sync::mpsc;
        // The first commit is held until four more items wait: they are one batch.
        static HOLD: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);
        fn held(items: Vec<u32>) -> Vec<u32> {
            if items == [0] {
                let rx = lock(&HOLD).take().expect("held once");
                rx.recv_timeout(std::time::Duration::from_secs(60))
                    .expect("the test releases the first commit");
            }
            double(items)
        }
        let (release, rx) = mpsc::channel();
        *lock(&HOLD) = Some(rx);
        let svc = FakeServices::new("test.example");
        let gc = GroupCommit::new(held, 1);
        let results = block_on(async {
            let first = gc.submit(&*svc, 0);
            let mut first = std::pin::pin!(first);
            // Poll once: the job starts with item 0 and blocks in `held`.
            assert!(futures_poll_once(first.as_mut()).is_none());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while gc.batches().is_empty() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the job never started"
                );
                std::thread::yield_now();
            }
            let rest = futures_join(&gc, &svc, &[1, 2, 3, 4], || {
                let _ = release.send(());
            });
            let rest = rest.await;
            (first.await, rest)
        });
        assert_eq!(results.0, Some(0));
        assert_eq!(results.1, vec![Some(2), Some(4), Some(6), Some(8)]);
        assert_eq!(gc.batches(), vec![1, 4]);
    }

    #[test]
    fn a_panicking_commit_answers_none_and_the_job_goes_on() {
        fn boom(items: Vec<u32>) -> Vec<u32> {
            assert!(!items.contains(&13), "unlucky");
            double(items)
        }
        let svc = FakeServices::new("test.example");
        let gc = GroupCommit::new(boom, 1);
        assert_eq!(block_on(gc.submit(&*svc, 13)), None);
        assert_eq!(block_on(gc.submit(&*svc, 2)), Some(4));
    }

    #[test]
    fn with_two_jobs_every_item_gets_its_own_result() {
        let svc = FakeServices::new("test.example");
        let gc = GroupCommit::new(double, 2);
        let results = block_on(async {
            let mut futs: Vec<_> = (1..=8).map(|i| Box::pin(gc.submit(&*svc, i))).collect();
            // Each polled once, so all are submitted before any is awaited.
            let early: Vec<_> = futs
                .iter_mut()
                .map(|f| futures_poll_once(f.as_mut()))
                .collect();
            let mut out = Vec::new();
            for (f, early) in futs.into_iter().zip(early) {
                out.push(match early {
                    Some(r) => r,
                    None => f.await,
                });
            }
            out
        });
        assert_eq!(results, (1..=8).map(|i| Some(i * 2)).collect::<Vec<_>>());
        assert_eq!(gc.batches().iter().sum::<usize>(), 8);
        // The jobs end once they find nothing pending (just after sending the last result).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while lock(&gc.queue).running != 0 {
            assert!(std::time::Instant::now() < deadline, "a job never ended");
            std::thread::yield_now();
        }
    }

    /// Polls `fut` once with a no-op waker.
    fn futures_poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> Option<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    /// Submits every item (each polled once, so that it is pending), then calls `then`, then
    /// awaits them all.
    async fn futures_join(
        gc: &GroupCommit<u32, u32>,
        svc: &FakeServices,
        items: &[u32],
        then: impl FnOnce(),
    ) -> Vec<Option<u32>> {
        let mut futs: Vec<_> = items.iter().map(|&i| Box::pin(gc.submit(svc, i))).collect();
        for f in &mut futs {
            assert!(futures_poll_once(f.as_mut()).is_none());
        }
        then();
        let mut out = Vec::new();
        for f in futs {
            out.push(f.await);
        }
        out
    }
}
