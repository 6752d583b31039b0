//! Drives each back end (and the io_uring one with its features off) through a dialogue whose
//! commands and end of data arrive split across reads and coalesced into one, over loopback,
//! and checks every reply byte.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

/// The floor, listening on a port of its own choosing; killed when dropped.
struct Floor(Child, u16);

impl Floor {
    fn start(args: &[&str]) -> Floor {
        let mut child = Command::new(env!("CARGO_BIN_EXE_floor"))
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start floor");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok());
        Floor(child, port.unwrap_or_else(|| panic!("no port in {line:?}")))
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Each step is written on its own after a pause, so the server reads it apart from the next
/// (TCP_NODELAY: each write is a segment of its own).
const STEPS: &[&[u8]] = &[
    b"EH",
    b"LO client.test\r",
    b"\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n", // three at once
    b"Subject: split\r\n\r\n..a dot-stuffed line\r\n.not the end\r\nlast line\r\n.",
    b"\r",
    b"\n",
    b"mail FROM:<a@example.org>\r\n",
    b"RCPT TO:<b@example.com>\r\nDATA\r\n.\r\nRSET\r\nMAILX\r\nNOOP\r\nHELO x\r\nDATA\r\nbody\r",
    b"\n.\r\nQU",
    b"IT\r\n",
];

const REPLIES: &[&str] = &[
    "220 floor ESMTP",
    "250 floor",
    "250 2.1.0 Ok",
    "250 2.1.5 Ok",
    "354 End data with <CR><LF>.<CR><LF>",
    "250 2.0.0 Ok: queued",
    "250 2.1.0 Ok",
    "250 2.1.5 Ok",
    "354 End data with <CR><LF>.<CR><LF>",
    "250 2.0.0 Ok: queued",
    "250 2.0.0 Ok",
    "502 5.5.2 Error: command not recognized",
    "250 2.0.0 Ok",
    "250 floor",
    "354 End data with <CR><LF>.<CR><LF>",
    "250 2.0.0 Ok: queued",
    "221 2.0.0 Bye",
];

fn dialogue(args: &[&str]) {
    let floor = Floor::start(args);
    for _ in 0..2 {
        // twice: the second connection may reuse the first one's descriptor slot
        let mut s = TcpStream::connect(("127.0.0.1", floor.1)).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        for step in STEPS {
            s.write_all(step).expect("write");
            sleep(Duration::from_millis(30));
        }
        let mut got = String::new();
        s.read_to_string(&mut got).expect("read until the server closes after QUIT");
        let want: String = REPLIES.iter().map(|r| format!("{r}\r\n")).collect();
        assert_eq!(got, want, "floor {args:?}");
    }
}

#[test]
fn epoll() {
    dialogue(&["--backend", "epoll"]);
}

#[test]
fn uring_every_feature() {
    dialogue(&["--backend", "uring"]);
}

#[test]
fn uring_single_shot_poll_first() {
    dialogue(&["--backend", "uring", "--recv", "poll-first", "--accept", "single"]);
}

#[test]
fn uring_every_feature_off() {
    dialogue(&[
        "--backend", "uring", "--recv", "single", "--accept", "single", "--no-skip", "--no-fixed",
        "--no-defer", "--no-ring-fd",
    ]);
}
