//! The io_uring back end, each feature behind a switch (`crate::Uring`): multishot accept,
//! multishot recv from a provided buffer ring (or single-shot recv, optionally with
//! IORING_RECVSEND_POLL_FIRST), sends that post no completion on success
//! (IOSQE_CQE_SKIP_SUCCESS), direct descriptors, SINGLE_ISSUER | DEFER_TASKRUN, a registered
//! ring descriptor. One ring per thread; the loop submits everything queued and waits for one
//! completion in a single io_uring_enter, then handles every completion there is.
//!
//! Where a send's bytes live: the worker's `out` buffer, whose capacity is reserved once and
//! never grows. Every send carries MSG_DONTWAIT, so the kernel marks it REQ_F_NOWAIT: it is
//! issued inside the io_uring_enter that submits it (sends are always the head of their link
//! chain, never a deferred successor) and there it either copies its bytes into the socket or
//! fails with EAGAIN; it never reads them later. `out` is therefore cleared only when the
//! submission queue is empty after an enter. A send that would block means the client lets
//! its replies pile up in the socket buffer: the connection is closed (with skipped
//! completions a send cut short there goes unnoticed, on a connection that the next reply's
//! EAGAIN closes).

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use io_uring::cqueue::{buffer_select, more};
use io_uring::squeue::{Entry, Flags};
use io_uring::types::{DestinationSlot, Fd, Fixed};
use io_uring::{opcode, IoUring, SubmissionQueue, Submitter};

use crate::bufring::BufRing;
use crate::smtp::{Outcome, Session, BANNER, MAX_REPLY};
use crate::{Recv, Uring};

const SQ_ENTRIES: u32 = 4096;
const CQ_ENTRIES: u32 = 16384;
/// Direct descriptors per ring (the file table registered sparse), at most: the kernel also
/// caps it at the process's descriptor limit.
const FILES: u32 = 65536;
/// Provided buffers: group id, count, size.
const BGID: u16 = 0;
const BUFS: u16 = 512;
const BUF_SIZE: usize = 4096;
/// The reply buffer: room for the replies to several full reads before it must be flushed.
const OUT_CAP: usize = 256 * 1024;
/// IORING_RECVSEND_POLL_FIRST (include/uapi/linux/io_uring.h): arm the poll before trying.
const RECVSEND_POLL_FIRST: u16 = 1;

// user_data: kind (4 bits) | generation (20) | connection key (20) | send length (20).
const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;
const CANCEL: u64 = 4;
const CLOSE: u64 = 5;
const BITS: u32 = 20;
const MASK: u64 = (1 << BITS) - 1;

fn user_data(kind: u64, gen: u32, key: u32, len: usize) -> u64 {
    kind << 60 | (gen as u64 & MASK) << 40 | (key as u64 & MASK) << 20 | (len as u64 & MASK)
}

struct Conn {
    /// Tells this connection's completions from those of an earlier one with the same key.
    gen: u32,
    session: Session,
    /// A recv of ours is pending in the kernel.
    recv_armed: bool,
}

struct Worker<'a> {
    submitter: Submitter<'a>,
    sq: SubmissionQueue<'a>,
    bufs: BufRing,
    /// By key: the direct descriptor's slot, or the file descriptor.
    conns: Vec<Option<Conn>>,
    next_gen: u32,
    /// Replies waiting for their send to be submitted; capacity OUT_CAP, never grown.
    out: Vec<u8>,
    f: Uring,
    listener: i32,
}

/// An operation on connection `key`, as a direct descriptor or a plain one.
macro_rules! on_fd {
    ($w:expr, $key:expr, |$fd:ident| $build:expr) => {
        if $w.f.fixed_files {
            let $fd = Fixed($key);
            $build
        } else {
            let $fd = Fd($key as i32);
            $build
        }
    };
}

impl Worker<'_> {
    /// Queues `entries` together (a link chain is never split across two submissions).
    ///
    /// Soundness: every pointer in an entry is valid until the kernel is done with it. The
    /// kinds pushed: accepts (null address pointers), recvs (buffers from the buffer ring,
    /// which lives for the process), sends (bytes in `out`, see the module's note), cancels
    /// and closes (no pointers).
    fn push(&mut self, entries: &[Entry]) -> io::Result<()> {
        loop {
            // SAFETY: see above.
            if unsafe { self.sq.push_multiple(entries) }.is_ok() {
                return Ok(());
            }
            self.sq.sync();
            self.submitter.submit()?;
            self.sq.sync();
        }
    }

    /// Submits what is queued; then every send has read its bytes and `out` can be reused.
    fn flush(&mut self) -> io::Result<()> {
        self.sq.sync();
        self.submitter.submit()?;
        self.sq.sync();
        if !self.sq.is_empty() {
            return Err(io::Error::other("the kernel left submissions queued"));
        }
        self.out.clear();
        Ok(())
    }

    /// Makes room in `out` for `need` more bytes without it growing.
    fn room(&mut self, need: usize) -> io::Result<()> {
        assert!(need <= OUT_CAP);
        if self.out.capacity() - self.out.len() < need {
            self.flush()?;
        }
        Ok(())
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let l = Fd(self.listener);
        let e = match (self.f.multishot_accept, self.f.fixed_files) {
            (true, fixed) => opcode::AcceptMulti::new(l).allocate_file_index(fixed).build(),
            (false, true) => opcode::Accept::new(l, std::ptr::null_mut(), std::ptr::null_mut())
                .file_index(Some(DestinationSlot::auto_target()))
                .build(),
            (false, false) => opcode::Accept::new(l, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build(),
        };
        self.push(&[e.user_data(user_data(ACCEPT, 0, 0, 0))])
    }

    fn arm_recv(&mut self, key: u32) -> io::Result<()> {
        let Some(c) = self.conns[key as usize].as_mut() else { return Ok(()) };
        c.recv_armed = true;
        let ud = user_data(RECV, c.gen, key, 0);
        let e = match self.f.recv {
            Recv::Multi => on_fd!(self, key, |fd| opcode::RecvMulti::new(fd, BGID).build()),
            Recv::Single | Recv::PollFirst => {
                let ioprio = if self.f.recv == Recv::PollFirst { RECVSEND_POLL_FIRST } else { 0 };
                on_fd!(self, key, |fd| opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                    .buf_group(BGID)
                    .ioprio(ioprio)
                    .build()
                    .flags(Flags::BUFFER_SELECT))
            }
        };
        self.push(&[e.user_data(ud)])
    }

    /// A send of `out[start..]`, flagged `link` when the connection's close must follow it.
    fn send(&self, key: u32, gen: u32, start: usize, link: Flags) -> Entry {
        let bytes = &self.out[start..];
        let skip = if self.f.skip_success { Flags::SKIP_SUCCESS } else { Flags::empty() };
        on_fd!(self, key, |fd| opcode::Send::new(fd, bytes.as_ptr(), bytes.len() as u32)
            .flags(libc::MSG_DONTWAIT)
            .build())
        .flags(skip | link)
        .user_data(user_data(SEND, gen, key, bytes.len()))
    }

    /// The entries that end connection `key` (whose state is gone already): cancel its recv
    /// if one is armed (so the socket is released and its FIN sent now), then close it.
    fn closing(&self, key: u32, gen: u32, recv_armed: bool) -> Vec<Entry> {
        let mut v = Vec::with_capacity(2);
        if recv_armed {
            v.push(
                opcode::AsyncCancel::new(user_data(RECV, gen, key, 0))
                    .build()
                    .flags(Flags::IO_HARDLINK | Flags::SKIP_SUCCESS)
                    .user_data(user_data(CANCEL, gen, key, 0)),
            );
        }
        v.push(
            on_fd!(self, key, |fd| opcode::Close::new(fd).build())
                .flags(Flags::SKIP_SUCCESS)
                .user_data(user_data(CLOSE, gen, key, 0)),
        );
        v
    }

    fn close(&mut self, key: u32) -> io::Result<()> {
        let Some(c) = self.conns[key as usize].take() else { return Ok(()) };
        let entries = self.closing(key, c.gen, c.recv_armed);
        self.push(&entries)
    }

    fn open(&mut self, key: u32) -> io::Result<()> {
        let gen = self.next_gen;
        self.next_gen = (self.next_gen + 1) & MASK as u32;
        if key as u64 > MASK {
            return self.push(&self.closing(key, gen, false)); // beyond user_data's key bits
        }
        let i = key as usize;
        if self.conns.len() <= i {
            self.conns.resize_with(i + 1, || None);
        }
        self.conns[i] = Some(Conn { gen, session: Session::default(), recv_armed: false });
        self.room(BANNER.len())?;
        let start = self.out.len();
        self.out.extend_from_slice(BANNER);
        let e = self.send(key, gen, start, Flags::empty());
        self.push(&[e])?;
        self.arm_recv(key)
    }

    fn received(&mut self, key: u32, res: i32, flags: u32) -> io::Result<()> {
        let bid = buffer_select(flags);
        let Some(c) = self.conns[key as usize].as_mut() else {
            if let Some(bid) = bid {
                self.bufs.recycle(bid); // a late completion of a closed connection
            }
            return Ok(());
        };
        if !more(flags) {
            c.recv_armed = false;
        }
        if res <= 0 {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return match -res {
                libc::ENOBUFS if !c.recv_armed => self.arm_recv(key), // buffers all in use
                _ => self.close(key),                                   // EOF or an error
            };
        }
        let (len, gen) = (res as usize, c.gen);
        let bid = bid.ok_or_else(|| io::Error::other("a recv completion without its buffer"))?;
        self.room(MAX_REPLY * len)?;
        let start = self.out.len();
        let c = self.conns[key as usize].as_mut().expect("looked up above");
        // SAFETY: `bid` was handed over by this completion and is recycled only below, after
        // the slice's last use; `len` is what the completion reported.
        let input = unsafe { self.bufs.get(bid, len) };
        let outcome = c.session.feed(input, &mut self.out);
        let recv_armed = c.recv_armed;
        self.bufs.recycle(bid);
        if outcome == Outcome::Quit {
            self.conns[key as usize] = None;
            let mut chain = vec![self.send(key, gen, start, Flags::IO_HARDLINK)];
            chain.extend(self.closing(key, gen, recv_armed));
            return self.push(&chain);
        }
        if self.out.len() > start {
            let e = self.send(key, gen, start, Flags::empty());
            self.push(&[e])?;
        }
        if !recv_armed {
            self.arm_recv(key)?;
        }
        Ok(())
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) -> io::Result<()> {
        let kind = ud >> 60;
        let gen = ((ud >> 40) & MASK) as u32;
        let key = ((ud >> 20) & MASK) as u32;
        let live = self.conns.get(key as usize).and_then(|c| c.as_ref()).map(|c| c.gen) == Some(gen);
        match kind {
            ACCEPT => {
                if !self.f.multishot_accept || !more(flags) {
                    self.arm_accept()?;
                }
                if res >= 0 {
                    self.open(res as u32)?;
                }
                Ok(())
            }
            RECV if live => self.received(key, res, flags),
            RECV => {
                if let Some(bid) = buffer_select(flags) {
                    self.bufs.recycle(bid); // a late completion of a closed connection
                }
                Ok(())
            }
            // A send that failed or fell short (EAGAIN: the client does not read its replies).
            SEND if live && (res < 0 || res as u64 != ud & MASK) => self.close(key),
            _ => Ok(()), // successful sends without SKIP_SUCCESS, failed cancels and closes
        }
    }
}

/// Serves `listener`'s connections on this thread, forever.
pub fn serve(listener: TcpListener, f: Uring) -> io::Result<()> {
    let mut b = IoUring::builder();
    b.setup_submit_all().setup_cqsize(CQ_ENTRIES);
    if f.defer_taskrun {
        b.setup_single_issuer().setup_defer_taskrun();
    }
    let mut ring: IoUring = b.build(SQ_ENTRIES)?;
    let (mut submitter, sq, mut cq) = ring.split();
    if f.ring_fd {
        submitter.register_ring_fd()?;
    }
    if f.fixed_files {
        // SAFETY: getrlimit writes one rlimit into the struct passed.
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
        submitter.register_files_sparse(FILES.min(lim.rlim_cur.min(u32::MAX as u64) as u32))?;
    }
    let bufs = BufRing::new(&submitter, BGID, BUFS, BUF_SIZE)?;
    let mut w = Worker {
        submitter,
        sq,
        bufs,
        conns: Vec::new(),
        next_gen: 0,
        out: Vec::with_capacity(OUT_CAP),
        f,
        listener: listener.as_raw_fd(),
    };
    w.arm_accept()?;
    loop {
        w.sq.sync();
        match w.submitter.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        w.sq.sync();
        if w.sq.is_empty() {
            w.out.clear(); // every send submitted has read its bytes (module note)
        }
        cq.sync();
        for cqe in &mut cq {
            w.complete(cqe.user_data(), cqe.result(), cqe.flags())?;
        }
        // Publish the consumed head before the next wait: with a stale head the kernel sees
        // these completions still queued and returns from the wait at once.
        cq.sync();
    }
}
