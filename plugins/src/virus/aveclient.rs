//! # virus/aveclient — scan the message with Kaspersky's aveclient (aveserver's client)
//!
//! ## Synopsis
//!
//! ```text
//! virus/aveclient [avclient_bin PATH] [avdaemon_sock PATH] [blockonerror 0|1]
//!                 [timeout SECONDS] [max_scans N] [defer_on_error yes|no] [loglevel N]
//! ```
//!
//! ## Description
//!
//! At `data_post` runs `aveclient -p SOCKET -s FILE` (Kaspersky Anti-Virus 5.x server suite:
//! the client asks the aveserver daemon on SOCKET, which has the signatures loaded). FILE is
//! the spool file, or a temporary copy of a message held in memory; the program runs off the
//! worker, killed with its process group at `timeout`, at most `max_scans` at once per worker.
//!
//! | exit | meaning (`aveclient(1)`) | outcome |
//! |---|---|---|
//! | 0 | no virus | `X-Virus-Checked: Checked by Kaspersky on <me>` added |
//! | 2, 3, 4 | unknown virus, suspicious object, infected object | `552 5.7.1 Virus found: NAMES` |
//! | 5 | every infected object was disinfected (so there were some) | as 4 |
//! | 6, 8 | encrypted or password-protected file; corrupted file or I/O error (no result) | as 4, as qpsmtpd did: a scanner that cannot look inside is not a pass |
//! | 1, 7, 9 | cannot reach aveserver, cannot read the file, missing parameters | the error policy |
//! | any other code, a signal, cannot start, past `timeout` | | the error policy |
//!
//! The names are the last word of each output line after the first (aveclient's report lines
//! end with the verdict and name), at most three, or `unnamed`.
//!
//! The error policy: `defer_on_error yes` (the default) answers `451 4.7.1`; `no` lets the
//! message through with `X-Virus-Checked: not scanned, virus/aveclient error`. qpsmtpd's
//! `blockonerror 1` is `defer_on_error yes` here, `blockonerror 0` is `defer_on_error no`.
//! Every scan logs one line with its result and the time spent.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `avclient_bin PATH` | `/opt/kav/bin/aveclient` | the program |
//! | `avdaemon_sock PATH` | `/var/run/aveserver` | aveserver's unix socket, passed with `-p` |
//! | `blockonerror 0\|1` | | qpsmtpd's error policy, see above |
//! | `timeout SECONDS` | `25` | the whole scan, queueing included; keep it below `plugin_timeout` (30) |
//! | `max_scans N` | `8` | scans in flight per worker; more wait in a queue |
//! | `defer_on_error yes\|no` | `yes` | the error policy |
//! | `loglevel N` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `data_post`.
//!
//! ## Notes
//!
//! **Tested with a stand-in program only**: aveclient is proprietary and not available here;
//! the tests run a small shell script that follows the exit codes above. Differences from
//! qpsmtpd: its default was to let a message through on a scanner error, and `blockonerror 1`
//! refused it permanently (5xx); here the default is to defer (451 4.7.1), so that an outage
//! neither loses mail nor lets it in unscanned. Exit code 5 refuses the message (qpsmtpd let
//! it through). The scanner reads the message as received (qpsmtpd wrote a copy of every
//! message; here a spooled message is scanned in place).
//!
//! ## Standards
//!
//! None.
//!
//! ## Security
//!
//! The output is hostile input: its first 16 KiB are read, a virus name is cleaned (letters,
//! digits and `._-:/+!@# `, anything else becomes `?`, at most 128 characters) before it
//! reaches the reply or the log. No shell runs the program.

use ringsmtpd_plugin_api::args::parse_flag;
use ringsmtpd_plugin_api::{ConfigError, Cx, Hook, HookSet, Plugin, PluginInit, Step, Transaction};

use super::verdict::{build_product, viruses, Found, Marks, Product};
use crate::helpers::command_scanner::{absolute, Ran};
use crate::helpers::scan_metrics::scan_metrics;
use crate::queue::local::output_for_log;

const DEFAULT_PROGRAM: &str = "/opt/kav/bin/aveclient";
const DEFAULT_SOCKET: &str = "/var/run/aveserver";

/// The `virus/aveclient` plugin.
pub struct AveClient {
    product: Product,
    socket: String,
}

/// Builds `virus/aveclient` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build_plugin(init)?))
}

fn build_plugin(init: &PluginInit<'_>) -> Result<AveClient, ConfigError> {
    let mut socket = DEFAULT_SOCKET.to_string();
    let marks = Marks::standard("Kaspersky");
    let product = build_product(
        init,
        "avclient_bin",
        DEFAULT_PROGRAM,
        marks,
        scan_metrics!("virus/aveclient"),
        |key, value, args| {
            match key {
                "avdaemon_sock" => socket = absolute(value)?.display().to_string(),
                "blockonerror" => args.defer_on_error = parse_flag(key, value)?,
                _ => return Ok(false),
            }
            Ok(true)
        },
    )?;
    Ok(AveClient { product, socket })
}

impl Plugin for AveClient {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::pending(async move {
            let argv = ["-p", self.socket.as_str(), "-s"];
            self.product.scan(cx, txn, &argv, read, |_| true).await
        })
    }
}

/// aveclient's exit code, and its report lines for the names.
fn read(ran: &Ran) -> Result<Found, String> {
    let why = match ran.code {
        Some(0) => return Ok(Found::Clean),
        Some(2..=6 | 8) => {
            let text = ran.text();
            let names = text
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().last());
            return Ok(match viruses(names) {
                Found::Clean => Found::Viruses(vec!["unnamed".into()]),
                found => found,
            });
        }
        Some(1) => "cannot connect to aveserver",
        Some(7) => "cannot read the file",
        Some(9) => "parameters missing",
        _ => "unknown exit",
    };
    Err(format!(
        "aveclient: {why} ({}): {}",
        ran.how(),
        output_for_log(&ran.output)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::scanner::test_kit::reply_of;
    use crate::virus::verdict::test_kit::{scan, stand_in};
    use ringsmtpd_plugin_api::testing::{build, build_err};
    use ringsmtpd_plugin_api::Outcome;

    const MESSAGE: &str = "Subject: hi\r\n\r\nhello\r\n";

    fn plugin(program: &str, more: &str) -> AveClient {
        let line = format!("virus/aveclient avclient_bin {program} avdaemon_sock /run/ave {more}");
        build(build_plugin, &line, &[]).unwrap()
    }

    /// A stand-in aveclient: checks its arguments, prints a report and exits `code`.
    fn aveclient(code: u8) -> (ringsmtpd_plugin_api::testing::TempDir, String) {
        stand_in(
            "aveclient",
            &format!(
                "[ \"$1 $2 $3\" = '-p /run/ave -s' ] && [ -f \"$4\" ] || exit 9\n\
                 echo \"Scanning $4\"; echo \"$4/part2  infected  EICAR-Test-File\"; exit {code}"
            ),
        )
    }

    #[test]
    fn exit_codes() {
        let (_d, p) = aveclient(0);
        let (out, headers, _) = scan(&plugin(&p, ""), MESSAGE);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Checked: Checked by Kaspersky on mx.example.test"));
        for code in [2, 3, 4, 5, 6, 8] {
            let (_d, p) = aveclient(code);
            assert_eq!(
                reply_of(&scan(&plugin(&p, ""), MESSAGE).0),
                (552, "5.7.1".into(), "Virus found: EICAR-Test-File".into()),
                "{code}"
            );
        }
        for (code, why) in [
            (1, "cannot connect"),
            (7, "cannot read"),
            (9, "parameters"),
            (42, "unknown"),
        ] {
            let (_d, p) = aveclient(code);
            let (out, _, logs) = scan(&plugin(&p, ""), MESSAGE);
            assert_eq!(reply_of(&out).0, 451, "{code}");
            assert!(logs.iter().any(|l| l.contains(why)), "{logs:?}");
        }
        let (_d, p) = aveclient(1);
        let (out, headers, _) = scan(&plugin(&p, "blockonerror 0"), MESSAGE);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Checked: not scanned, virus/aveclient error"));
    }

    #[test]
    fn arguments() {
        let p: AveClient = build(build_plugin, "virus/aveclient", &[]).unwrap();
        assert_eq!(p.product.scanner.program.to_str(), Some(DEFAULT_PROGRAM));
        assert_eq!(p.socket, DEFAULT_SOCKET);
        assert!(p.product.scanner.args.defer_on_error);
        for (args, why) in [
            ("avdaemon_sock ave", "absolute"),
            ("blockonerror 2", "blockonerror"),
            ("frob 1", "unknown argument"),
        ] {
            let e = build_err(build_plugin, &format!("virus/aveclient {args}"), &[]);
            assert!(e.to_string().contains(why), "{args}: {e}");
        }
    }
}
