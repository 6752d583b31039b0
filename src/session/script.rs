//! A scripted transport: it hands out prepared input chunks, one per read, then EOF (or a read
//! that never ends), and collects what the session writes. It drives a whole session without
//! sockets: the session tests (`tests.rs`) and the fuzz target `session` (`src/fuzzing.rs`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use crate::transport::Transport;

/// Input chunks, one per read; after them EOF (or, with `hang_at_end`, a read that waits an
/// hour, for timeout tests).
#[derive(Default)]
pub struct Script {
    pub input: VecDeque<Vec<u8>>,
    pub hang_at_end: bool,
    /// Everything the session wrote, in order.
    pub out: Rc<RefCell<Vec<u8>>>,
    /// The number of writes.
    pub writes: Rc<RefCell<usize>>,
    /// Called at each read, before it is answered (the tests count allocations there).
    pub on_read: Option<Box<dyn FnMut()>>,
}

impl Transport for Script {
    async fn read(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if let Some(f) = &mut self.on_read {
            f();
        }
        match self.input.pop_front() {
            Some(chunk) => {
                buf.extend_from_slice(&chunk);
                (Ok(chunk.len()), buf)
            }
            None if self.hang_at_end => {
                monoio::time::sleep(Duration::from_secs(3600)).await;
                (Ok(0), buf)
            }
            None => (Ok(0), buf),
        }
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        self.out.borrow_mut().extend_from_slice(&buf);
        *self.writes.borrow_mut() += 1;
        (Ok(()), buf)
    }
}
