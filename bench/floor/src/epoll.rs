//! The epoll back end: what smtp-sink does, minus Postfix. Non-blocking sockets in one
//! level-triggered epoll set per thread; a readable connection gets one read(2) into the
//! thread's buffer (what is left is reported again by the next epoll_wait) and the replies it
//! calls for go out in one send(2).

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};

use crate::smtp::{Outcome, Session, BANNER};

const READ: usize = 4096;
const EVENTS: usize = 256;

/// The result of a libc call that returns -1 and sets errno.
fn check(rc: libc::c_long) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

struct Worker {
    epfd: RawFd,
    /// Sessions by descriptor.
    sessions: Vec<Option<Session>>,
    out: Vec<u8>,
}

impl Worker {
    fn add(&mut self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        check(unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } as _)?;
        Ok(())
    }

    /// Writes all of `bytes`, or reports that the connection must go (error, or a send buffer
    /// too full to take a reply: a client that does not read).
    fn send(fd: RawFd, bytes: &[u8]) -> bool {
        // SAFETY: `bytes` is a valid slice for the duration of the call. MSG_NOSIGNAL: a peer
        // gone is an error here, not a SIGPIPE.
        let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        n == bytes.len() as isize
    }

    fn close(&mut self, fd: RawFd) {
        self.sessions[fd as usize] = None;
        // SAFETY: `fd` is a connection this worker accepted and has not closed; closing it
        // also takes it out of the epoll set.
        unsafe { libc::close(fd) };
    }

    fn accept(&mut self, listener: RawFd) -> io::Result<()> {
        loop {
            // SAFETY: null address pointers are allowed (the peer's address is not wanted).
            let fd = unsafe {
                libc::accept4(
                    listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::ECONNABORTED) | Some(libc::EINTR) => Ok(()),
                    // Out of descriptors: leave the rest in the queue for later.
                    Some(libc::EMFILE) | Some(libc::ENFILE) => Ok(()),
                    _ => Err(e),
                };
            }
            let i = fd as usize;
            if self.sessions.len() <= i {
                self.sessions.resize_with(i + 1, || None);
            }
            if !Self::send(fd, BANNER) {
                // SAFETY: just accepted, not yet known to anything else.
                unsafe { libc::close(fd) };
                continue;
            }
            self.sessions[i] = Some(Session::default());
            self.add(fd)?;
        }
    }

    fn readable(&mut self, fd: RawFd, buf: &mut [u8; READ]) {
        if self.sessions[fd as usize].is_none() {
            return; // closed earlier in this batch of events
        }
        // SAFETY: `buf` is valid for READ bytes for the duration of the call.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), READ) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
            return;
        }
        if n <= 0 {
            return self.close(fd); // the peer closed, or an error
        }
        let Some(session) = self.sessions[fd as usize].as_mut() else { return };
        self.out.clear();
        let outcome = session.feed(&buf[..n as usize], &mut self.out);
        let sent = self.out.is_empty() || Self::send(fd, &self.out);
        if !sent || outcome == Outcome::Quit {
            self.close(fd);
        }
    }
}

/// Serves `listener`'s connections on this thread, forever.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let lfd = listener.as_raw_fd();
    // SAFETY: plain system call; the descriptor is owned by this worker for its life.
    let epfd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as _)? as RawFd;
    let mut w = Worker { epfd, sessions: Vec::new(), out: Vec::with_capacity(64 * 1024) };
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: u64::MAX };
    // SAFETY: `ev` is valid for the call; `lfd` is the listener, alive for this function.
    check(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, lfd, &mut ev) } as _)?;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut buf = Box::new([0u8; READ]);
    loop {
        // SAFETY: `events` is valid for EVENTS entries for the duration of the call.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), EVENTS as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            if ev.u64 == u64::MAX {
                w.accept(lfd)?;
            } else {
                w.readable(ev.u64 as RawFd, &mut buf);
            }
        }
    }
}
