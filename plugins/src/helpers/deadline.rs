//! A deadline on a future, on the worker's timer: the auth backends (`auth/auth_imap`,
//! `auth/auth_ldap_bind`) and the content scanners (`spamassassin`, `virus/clamdscan`) bound a
//! whole exchange with a server by it.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use ringsmtpd_plugin_api::Services;

/// Awaits `fut` for at most `dur`; `None` if the timer fired first. The work is polled before
/// the timer, so an answer that is already there wins over an expired timer.
pub(crate) async fn within<T>(
    svc: &dyn Services,
    dur: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    let mut fut = pin!(fut);
    let mut timer = svc.sleep(dur);
    std::future::poll_fn(|task| {
        if let Poll::Ready(v) = fut.as_mut().poll(task) {
            return Poll::Ready(Some(v));
        }
        if timer.as_mut().poll(task).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
