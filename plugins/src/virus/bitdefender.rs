//! # virus/bitdefender — scan the message with BitDefender's command-line scanner bdc
//!
//! ## Synopsis
//!
//! ```text
//! virus/bitdefender [bitdefender_location PATH] [deny_viruses yes|no] [max_size KIB]
//!                   [timeout SECONDS] [max_scans N] [defer_on_error yes|no] [loglevel N]
//! ```
//!
//! ## Description
//!
//! At `data_post` runs `bdc --mail --all --arc FILE` (BitDefender Linux Edition) on a
//! multipart message of at most `max_size` KiB (others are not scanned: a log line says why).
//! FILE is the spool file, or a temporary copy of a message held in memory; the program runs
//! off the worker, killed with its process group at `timeout`, at most `max_scans` at once
//! per worker.
//!
//! A line `... infected: NAME` in bdc's output is a virus, whatever the exit code (qpsmtpd
//! read only these lines):
//!
//! - a virus with `deny_viruses yes` (the default): `552 5.7.1 Virus found: NAME`; with `no`:
//!   `X-Virus-Found: Yes` and `X-Virus-Details: NAME` are added;
//! - no such line and exit code 0: clean, `X-Virus-Checked: Checked by BitDefender on <me>`;
//! - no such line and another exit code, a signal, a program that cannot start or runs past
//!   `timeout`: the error policy, `451 4.7.1` with `defer_on_error yes` (the default), or
//!   through with `X-Virus-Checked: not scanned, virus/bitdefender error` with `no`.
//!
//! Every scan logs one line with its result and the time spent.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `bitdefender_location PATH` | `/opt/bdc/bdc` | the program |
//! | `deny_viruses yes\|no` | `yes` | refuse a message with a virus, or mark it with headers |
//! | `max_size KIB` | `128` | larger messages are not scanned |
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
//! **Tested with a stand-in program only**: bdc is proprietary and not available here; the
//! tests run a small shell script that prints `infected:` lines and exits as described above.
//! qpsmtpd ignored bdc's exit code and added no header field; here a clean scan must exit 0,
//! any other failure goes to the error policy, and the `X-Virus-*` fields are added as by the
//! other scanners. The scanner reads the message as received.
//!
//! ## Standards
//!
//! None.
//!
//! ## Security
//!
//! The output is hostile input: its first 16 KiB are read, a virus name is cleaned (letters,
//! digits and `._-:/+!@# `, anything else becomes `?`, at most 128 characters) before it
//! reaches the reply, a header or the log. No shell runs the program.

use ringsmtpd_plugin_api::args::parse_flag;
use ringsmtpd_plugin_api::{ConfigError, Cx, Hook, HookSet, Plugin, PluginInit, Step, Transaction};

use super::verdict::{build_product, kib, not_multipart, viruses, Found, Marks, Product};
use crate::helpers::command_scanner::Ran;
use crate::helpers::scan_metrics::scan_metrics;
use crate::helpers::scanner::too_big;
use crate::queue::local::output_for_log;

const DEFAULT_PROGRAM: &str = "/opt/bdc/bdc";
/// qpsmtpd's default `max_size`, KiB.
const DEFAULT_MAX_KIB: u64 = 128;
const OPTIONS: &[&str] = &["--mail", "--all", "--arc"];

/// The `virus/bitdefender` plugin.
pub struct BitDefender {
    product: Product,
    deny: bool,
    /// Bytes.
    max_size: u64,
}

/// Builds `virus/bitdefender` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build_plugin(init)?))
}

fn build_plugin(init: &PluginInit<'_>) -> Result<BitDefender, ConfigError> {
    let mut deny = true;
    let mut max_kib = DEFAULT_MAX_KIB;
    let marks = Marks::standard("BitDefender");
    let product = build_product(
        init,
        "bitdefender_location",
        DEFAULT_PROGRAM,
        marks,
        scan_metrics!("virus/bitdefender"),
        |key, value, _| {
            match key {
                "deny_viruses" => deny = parse_flag(key, value)?,
                "max_size" => max_kib = kib(value)?,
                _ => return Ok(false),
            }
            Ok(true)
        },
    )?;
    Ok(BitDefender {
        product,
        deny,
        max_size: max_kib * 1024,
    })
}

impl Plugin for BitDefender {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let common = &self.product.common;
        if too_big(common, cx, txn, self.max_size, "max_size") || not_multipart(common, cx, txn) {
            return Step::DECLINED;
        }
        Step::pending(async move {
            let deny = self.deny;
            self.product
                .scan(cx, txn, OPTIONS, read, move |_| deny)
                .await
        })
    }
}

/// bdc's `infected: NAME` lines, then its exit code.
fn read(ran: &Ran) -> Result<Found, String> {
    let text = ran.text();
    let names = text
        .lines()
        .filter_map(|l| l.split_once("infected: ").map(|(_, name)| name));
    match (viruses(names), ran.code) {
        (Found::Clean, Some(0)) => Ok(Found::Clean),
        (Found::Clean, _) => Err(format!(
            "bdc failed ({}): {}",
            ran.how(),
            output_for_log(&ran.output)
        )),
        (found, _) => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::scanner::test_kit::reply_of;
    use crate::virus::verdict::test_kit::{scan, stand_in, MULTIPART};
    use ringsmtpd_plugin_api::testing::{build, build_err};
    use ringsmtpd_plugin_api::Outcome;

    fn plugin(program: &str, more: &str) -> BitDefender {
        let line = format!("virus/bitdefender bitdefender_location {program} {more}");
        build(build_plugin, &line, &[]).unwrap()
    }

    /// A stand-in bdc: checks its options, then prints `out` and exits `code`.
    fn bdc(out: &str, code: u8) -> (ringsmtpd_plugin_api::testing::TempDir, String) {
        stand_in(
            "bdc",
            &format!(
                "[ \"$1 $2 $3\" = '--mail --all --arc' ] && [ -f \"$4\" ] || exit 9\n\
                 printf '{out}'; exit {code}"
            ),
        )
    }

    #[test]
    fn infected_lines_decide() {
        let (_d, p) = bdc("BDC\\n$4  ok\\n", 0);
        let (out, headers, _) = scan(&plugin(&p, ""), MULTIPART);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Checked: Checked by BitDefender on mx.example.test"));

        let (_d, p) = bdc("/tmp/f  infected: EICAR-Test-File (not a virus)\\n", 1);
        let (out, _, _) = scan(&plugin(&p, ""), MULTIPART);
        assert_eq!(
            reply_of(&out),
            (
                552,
                "5.7.1".into(),
                "Virus found: EICAR-Test-File ?not a virus?".into()
            )
        );
        let (out, headers, _) = scan(&plugin(&p, "deny_viruses no"), MULTIPART);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Found: Yes\r\n"));
    }

    #[test]
    fn failures_and_skips() {
        let (_d, p) = bdc("license expired\\n", 3);
        let (out, _, logs) = scan(&plugin(&p, ""), MULTIPART);
        assert_eq!(reply_of(&out).0, 451);
        assert!(logs
            .iter()
            .any(|l| l.contains("exit code 3") && l.contains("license expired")));
        let (out, headers, _) = scan(&plugin(&p, "defer_on_error no"), MULTIPART);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("not scanned, virus/bitdefender error"));
        let (_d, p) = bdc("x infected: V\\n", 1);
        let big = format!("{MULTIPART}{}", "a".repeat(2048));
        let (out, _, logs) = scan(&plugin(&p, "max_size 1"), &big);
        assert_eq!(out, Outcome::Declined);
        assert!(logs.iter().any(|l| l.starts_with("skip, too big")));
        let (out, _, _) = scan(&plugin(&p, ""), "Subject: x\r\n\r\nhi\r\n");
        assert_eq!(out, Outcome::Declined);
    }

    #[test]
    fn arguments() {
        let p: BitDefender = build(build_plugin, "virus/bitdefender", &[]).unwrap();
        assert_eq!(p.product.scanner.program.to_str(), Some(DEFAULT_PROGRAM));
        assert_eq!(p.max_size, 128 * 1024);
        for (args, why) in [
            ("max_size 0", "not a size"),
            ("bitdefender_location bdc", "absolute"),
            ("frob 1", "unknown argument"),
        ] {
            let e = build_err(build_plugin, &format!("virus/bitdefender {args}"), &[]);
            assert!(e.to_string().contains(why), "{args}: {e}");
        }
    }
}
