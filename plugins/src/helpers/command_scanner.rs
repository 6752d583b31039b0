//! Running a command-line scanner on the message: `virus/clamav`, `virus/uvscan`,
//! `virus/bitdefender`, `virus/hbedv`, `virus/aveclient` and `dspam` (DESIGN.md §11 "Scanner
//! clients"; the arguments and the error policy are those of [`super::scanner`]).
//!
//! - [`MessageFile`]: the message as a file a program, or a daemon such as sophie, can read:
//!   the spool file itself when the message was spooled (nothing is copied); a message held in
//!   memory is written to a new temporary file (mode 0600) on the blocking pool, and removed
//!   on the blocking pool when the scan is over, however it ends.
//! - [`CommandScanner::run`]: waits for one of the `max_scans` slots of this worker (a FIFO
//!   queue of futures, not threads), then runs the program on the slow helpers' pool
//!   ([`ringsmtpd_plugin_api::helper`]) through the queue plugins' child runner
//!   (`queue::local::run_child`): in a process group of its own, the whole group killed at the
//!   deadline, stdout and stderr captured together in an anonymous memory file of which the
//!   first 16 KiB are read. The `timeout` argument bounds the whole call: the queue, the file,
//!   the program. A worker never waits on the process.
//!
//! What the output and the exit code mean is each product's business: the plugins parse
//! [`Ran`].

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ringsmtpd_plugin_api::{blocking, helper, Services, Transaction};

use super::deadline::within;
use super::scan_metrics::ScanMetrics;
use super::scanner::{ScannerArgs, Slots};
use crate::queue::local::{run_child, ChildSpec, FeedError};

/// How the program gets the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// The file's path is its last argument (the virus scanners).
    LastArgument,
    /// The file is its standard input (dspam).
    Stdin,
}

/// How a program that ran to its end exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ran {
    /// The exit code; `None` if a signal killed it.
    pub code: Option<i32>,
    /// What it wrote to stdout and stderr, the first 16 KiB.
    pub output: Vec<u8>,
}

impl Ran {
    /// The output as text, lossily: parsers must still treat it as hostile.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// How it ended, for an error message: `exit code 7` or `killed by a signal`.
    pub(crate) fn how(&self) -> String {
        match self.code {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".into(),
        }
    }
}

/// A scanner program with its deadline, error policy, per-worker slots and the plugin's
/// counters.
pub(crate) struct CommandScanner {
    pub program: PathBuf,
    pub args: ScannerArgs,
    pub metrics: ScanMetrics,
    /// Where a message held in memory is written for the program.
    pub tmp_dir: PathBuf,
    slots: Slots,
}

impl CommandScanner {
    /// `program` must be an absolute path; it is looked for only when a scan runs (a missing
    /// program is an error for the error policy, logged with every scan).
    pub(crate) fn new(
        program: &str,
        args: ScannerArgs,
        metrics: ScanMetrics,
    ) -> Result<CommandScanner, String> {
        Ok(CommandScanner {
            program: absolute(program)?,
            args,
            metrics,
            tmp_dir: std::env::temp_dir(),
            slots: Slots::new(args.max_scans),
        })
    }

    /// Runs the program with `argv` on the message of `txn` (given as `input` says) and waits
    /// for its exit, all within the `timeout` argument. `Err` says what went wrong: no slot in
    /// time, no temporary file, the program could not start, was killed at the deadline, or
    /// did not read its input.
    pub(crate) async fn run(
        &self,
        svc: &Rc<dyn Services>,
        txn: &Transaction,
        argv: &[&str],
        input: Input,
    ) -> Result<Ran, String> {
        let deadline = Instant::now() + self.args.timeout;
        self.run_until(svc, txn, argv, input, deadline).await
    }

    /// [`CommandScanner::run`] with an earlier deadline: a second run in the same hook
    /// (dspam's training) shares the first one's `timeout`. Each run is counted
    /// ([`ScanMetrics::took`]).
    pub(crate) async fn run_until(
        &self,
        svc: &Rc<dyn Services>,
        txn: &Transaction,
        argv: &[&str],
        input: Input,
        deadline: Instant,
    ) -> Result<Ran, String> {
        let started = Instant::now();
        let result = self.run_uncounted(svc, txn, argv, input, deadline).await;
        self.metrics.took(started.elapsed(), result.is_ok());
        result
    }

    /// One run, not counted.
    async fn run_uncounted(
        &self,
        svc: &Rc<dyn Services>,
        txn: &Transaction,
        argv: &[&str],
        input: Input,
        deadline: Instant,
    ) -> Result<Ran, String> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let secs = self.args.timeout.as_secs_f64();
        let Some(_slot) = within(&**svc, timeout, self.slots.acquire()).await else {
            return Err(format!(
                "no free scan slot within the timeout ({secs}s): max_scans {} are busy",
                self.args.max_scans
            ));
        };
        let file = MessageFile::of(svc, txn, &self.tmp_dir).await?;
        let path = file
            .path
            .to_str()
            .ok_or_else(|| format!("the message file {:?} is not UTF-8", file.path))?
            .to_string();
        let mut argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        if input == Input::LastArgument {
            argv.push(path.clone());
        }
        let program = self.program.clone();
        // The job bounds itself by `deadline` (the child is killed there), so this await
        // ends about then even though the timer does not watch it.
        let ran = helper(&**svc, move || {
            run_program(&program, &argv, Path::new(&path), input, deadline)
        })
        .await;
        drop(file);
        let shown = self.program.display();
        match ran {
            Some(Ok(Run::Exited(ran))) => Ok(ran),
            Some(Ok(Run::TimedOut)) => Err(format!(
                "{shown} ran past the timeout ({secs}s) and was killed"
            )),
            Some(Err(e)) => Err(format!("{shown}: {e}")),
            None => Err(format!("the job running {shown} panicked")),
        }
    }
}

/// An absolute path (a program, a directory).
pub(crate) fn absolute(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Err(format!("'{path}' is not an absolute path"))
    }
}

enum Run {
    Exited(Ran),
    TimedOut,
}

/// Runs the program until it exits or `deadline` passes. Blocking: on the helpers' pool.
fn run_program(
    program: &Path,
    argv: &[String],
    file: &Path,
    input: Input,
    deadline: Instant,
) -> Result<Run, String> {
    let timeout = deadline.saturating_duration_since(Instant::now());
    if timeout.is_zero() {
        return Ok(Run::TimedOut);
    }
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let spec = ChildSpec {
        program,
        args: &args,
        timeout,
        fd1_input: false,
    };
    let res = run_child(&spec, |mut stdin, _| {
        if input == Input::Stdin {
            let mut message = File::open(file).map_err(FeedError::Spool)?;
            io::copy(&mut message, &mut stdin).map_err(FeedError::Sink)?;
            stdin.flush().map_err(FeedError::Sink)?;
        }
        Ok(())
    })
    .map_err(|e| format!("cannot start it: {e}"))?;
    if res.timed_out {
        return Ok(Run::TimedOut);
    }
    if let Some(e) = res.feed_error {
        return Err(format!("the message did not reach it ({e})"));
    }
    Ok(Run::Exited(Ran {
        code: res.status.code(),
        output: res.output,
    }))
}

/// The message as a file: the spool file, or a temporary copy of a message held in memory.
pub(crate) struct MessageFile {
    pub path: PathBuf,
    /// The temporary copy, removed on the blocking pool when this is dropped.
    temp: Option<(TempPath, Rc<dyn Services>)>,
}

impl MessageFile {
    /// The spool file of `txn`, or its message written to a new file in `dir`.
    pub(crate) async fn of(
        svc: &Rc<dyn Services>,
        txn: &Transaction,
        dir: &Path,
    ) -> Result<MessageFile, String> {
        if let Some(spool) = &txn.body.spool {
            return Ok(MessageFile {
                path: spool.path.clone(),
                temp: None,
            });
        }
        // Held in memory, so small (below the spool threshold): a copy for the job.
        let data = txn.body.mem.clone();
        let dir = dir.to_path_buf();
        // If this call is given up before the answer, the job's result is dropped on its own
        // thread, and the file with it.
        let temp = blocking(&**svc, move || write_temp(&dir, &data))
            .await
            .unwrap_or_else(|| Err(io::Error::other("the write job panicked")))
            .map_err(|e| format!("cannot write the message to a temporary file: {e}"))?;
        Ok(MessageFile {
            path: temp.0.clone(),
            temp: Some((temp, svc.clone())),
        })
    }
}

impl Drop for MessageFile {
    fn drop(&mut self) {
        if let Some((temp, svc)) = self.temp.take() {
            svc.spawn_blocking(Box::new(move || drop(temp)));
        }
    }
}

/// A temporary file, removed when dropped (on whatever thread drops it: keep it off workers).
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `data` to a new file `ringsmtpd-scan-<pid>-<n>` in `dir`, readable by this user only.
fn write_temp(dir: &Path, data: &[u8]) -> io::Result<TempPath> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("ringsmtpd-scan-{}-{n}", std::process::id()));
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            // A leftover of an earlier process with the same pid: take the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let temp = TempPath(path);
        f.write_all(data)?;
        return Ok(temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::FakeServices;
    use ringsmtpd_plugin_api::testing::{block_on, executable, set_message, spool, TempDir};
    use std::time::Duration;

    const MESSAGE: &str = "Subject: hi\r\n\r\nhello\r\n";

    fn scanner(dir: &TempDir, body: &str, timeout: u64) -> CommandScanner {
        let prog = dir.path().join("scan");
        executable(&prog, &format!("#!/bin/sh\n{body}\n"));
        let args = ScannerArgs {
            timeout: Duration::from_secs(timeout),
            ..ScannerArgs::default()
        };
        let m = crate::helpers::scan_metrics::scan_metrics!("command_scanner_test");
        let mut s = CommandScanner::new(prog.to_str().unwrap(), args, m).unwrap();
        s.tmp_dir = dir.path().join("tmp");
        std::fs::create_dir_all(&s.tmp_dir).unwrap();
        s
    }

    fn scan(s: &CommandScanner, txn: &Transaction, input: Input) -> Result<Ran, String> {
        let svc: Rc<dyn Services> = FakeServices::new("mx.test");
        block_on(s.run(&svc, txn, &["--opt"], input))
    }

    fn in_memory() -> Transaction {
        let mut txn = Transaction::default();
        set_message(&mut txn, MESSAGE);
        txn
    }

    fn tmp_files(s: &CommandScanner) -> usize {
        std::fs::read_dir(&s.tmp_dir).unwrap().count()
    }

    #[test]
    fn a_message_in_memory_is_a_temporary_file_removed_after() {
        let dir = TempDir::new("cmdscan-mem");
        let s = scanner(&dir, r#"echo "args: $*"; cat "$2"; exit 3"#, 10);
        let ran = scan(&s, &in_memory(), Input::LastArgument).unwrap();
        assert_eq!(ran.code, Some(3));
        let text = ran.text();
        assert!(text.starts_with("args: --opt "), "{text}");
        assert!(text.contains("ringsmtpd-scan-"), "{text}");
        assert!(text.ends_with(MESSAGE), "{text}");
        // Removed on the blocking pool (a thread in the test kit): wait for it.
        let until = Instant::now() + Duration::from_secs(10);
        while tmp_files(&s) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(tmp_files(&s), 0, "the temporary file was left behind");
    }

    #[test]
    fn a_spooled_message_is_scanned_in_place_or_given_on_stdin() {
        let dir = TempDir::new("cmdscan-spool");
        let s = scanner(&dir, r#"echo "file: $2"; cat"#, 10);
        let mut txn = Transaction::default();
        let path = dir.path().join("spooled");
        spool(&mut txn.body, &path, MESSAGE.as_bytes());
        let ran = scan(&s, &txn, Input::LastArgument).unwrap();
        assert_eq!(ran.code, Some(0));
        assert_eq!(ran.text(), format!("file: {}\n", path.display()));
        assert_eq!(tmp_files(&s), 0, "a spooled message was copied");
        let ran = scan(&s, &txn, Input::Stdin).unwrap();
        assert_eq!(ran.text(), format!("file: \n{MESSAGE}"));
        txn.body.spool = None;
    }

    #[test]
    fn a_hanging_program_is_killed_with_its_children_at_the_deadline() {
        let dir = TempDir::new("cmdscan-hang");
        let pids = dir.path().join("pids");
        // A child in the background and the program itself both sleep: both must go.
        let s = scanner(
            &dir,
            &format!("sleep 60 & echo $! $$ > {}; wait", pids.display()),
            1,
        );
        let err = scan(&s, &in_memory(), Input::LastArgument).unwrap_err();
        assert!(
            err.contains("ran past the timeout (1s) and was killed"),
            "{err}"
        );
        let pids = std::fs::read_to_string(&pids).unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        for pid in pids.split_whitespace() {
            let proc_dir = Path::new("/proc").join(pid);
            while proc_dir.exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(!proc_dir.exists(), "process {pid} outlived the deadline");
        }
    }

    #[test]
    fn megabytes_of_output_are_cut_and_signals_and_missing_programs_reported() {
        let dir = TempDir::new("cmdscan-out");
        let s = scanner(&dir, "head -c 5000000 /dev/zero | tr '\\0' x; exit 1", 20);
        let ran = scan(&s, &in_memory(), Input::LastArgument).unwrap();
        assert_eq!(ran.code, Some(1));
        assert_eq!(ran.output.len(), 16 * 1024);

        let s = scanner(&dir, "kill -9 $$", 10);
        let ran = scan(&s, &in_memory(), Input::LastArgument).unwrap();
        assert_eq!((ran.code, ran.how()), (None, "killed by a signal".into()));

        let mut s = scanner(&dir, "", 10);
        s.program = dir.path().join("missing");
        let err = scan(&s, &in_memory(), Input::LastArgument).unwrap_err();
        assert!(err.contains("missing: cannot start it"), "{err}");
        let m = crate::helpers::scan_metrics::scan_metrics!("command_scanner_test");
        assert!(CommandScanner::new("bin/scan", ScannerArgs::default(), m).is_err());
    }

    #[test]
    fn no_free_slot_within_the_timeout_is_an_error() {
        let dir = TempDir::new("cmdscan-slots");
        let mut s = scanner(&dir, "exit 0", 10);
        s.args.max_scans = 1;
        s.slots = Slots::new(1);
        let held = block_on(s.slots.acquire());
        // The test kit's timer fires at once: the queued scan gives up without running.
        let err = scan(&s, &in_memory(), Input::LastArgument).unwrap_err();
        assert!(err.contains("no free scan slot"), "{err}");
        drop(held);
        assert_eq!(
            scan(&s, &in_memory(), Input::LastArgument).unwrap().code,
            Some(0)
        );
    }
}
