//! Stopping a run: the first SIGTERM lets in-flight messages finish, a second one ends the
//! process at once (a run stuck on a server that never answers must not need SIGKILL).

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid of our own child (not yet reaped, so not reused) and a valid
    // signal number has no memory effects.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// The child is killed and reaped if the test fails before it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_sigterm_ends_a_run_stuck_on_a_silent_server() {
    // Accepts connections and never writes: every connection waits for a banner.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_smtp-loadtest"))
            .args(["--connections", "2", "--messages", "10", "--timeout", "120"])
            .args(["--target", &addr.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    // Wait (bounded) until the run has connected and waits on us.
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let _held = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("smtp-loadtest ended before connecting: {status:?}");
        }
        assert!(Instant::now() < deadline, "no connection within 20 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    signal(child.id(), libc::SIGTERM);
    // The first signal only stops new messages: the one waiting for its banner keeps the
    // run alive (--timeout is 120 s, far longer than this test waits).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "ended on the first SIGTERM"
    );
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            panic!("still running 20 s after the second SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.is_empty(), "no report after a forced stop: {out}");
}
