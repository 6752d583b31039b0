//! What the command-line virus scanners (`virus/clamav`, `virus/uvscan`, `virus/bitdefender`,
//! `virus/hbedv`, `virus/aveclient`) and `virus/sophie` share once their product-specific part
//! has read the scanner's answer: the skip checks (size, multipart), one scan through
//! [`CommandScanner`] with its log line and time spent, and what a [`Found`] becomes: a
//! header saying the message was checked, a refusal `552 5.7.1 Virus found: NAMES`, or
//! headers naming the viruses; an error goes to the error policy (`defer_on_error`).

use std::time::{Duration, Instant};

use ringsmtpd_plugin_api::args::key_values;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Level, Outcome, PluginInit, Reply, Transaction,
};

use crate::helpers::command_scanner::{CommandScanner, Input, Ran};
use crate::helpers::scan_metrics::ScanMetrics;
use crate::helpers::scanner::ScannerArgs;

/// At most this many virus names are shown (each at most 128 characters, `clean_name`).
const MAX_NAMES: usize = 3;

/// What a scanner found in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    Clean,
    /// Virus names, already cleaned (`super::clean_name`); at least one.
    Viruses(Vec<String>),
    /// Refused for another reason the product reports (uvscan: a password-protected archive).
    Refuse(&'static str),
}

impl Found {
    /// Itself, counted in `metrics` as found when it names viruses.
    pub(crate) fn counted(self, metrics: ScanMetrics) -> Found {
        if matches!(self, Found::Viruses(_)) {
            metrics.found();
        }
        self
    }
}

/// The header fields a product marks messages with.
pub(crate) struct Marks {
    /// `X-Virus-Found: Yes` when a virus is let through.
    pub found: &'static str,
    /// The virus names, when a virus is let through.
    pub details: &'static str,
    /// On a clean message `Checked by <by> on <me>`; also the field saying a message was
    /// accepted unscanned (`defer_on_error no`).
    pub checked: &'static str,
    /// The product for `checked`; empty: the value is just `Checked` (hbedv).
    pub by: &'static str,
}

impl Marks {
    /// The usual `X-Virus-Found`, `X-Virus-Details`, `X-Virus-Checked` fields.
    pub(crate) const fn standard(by: &'static str) -> Marks {
        Marks {
            found: "X-Virus-Found",
            details: "X-Virus-Details",
            checked: "X-Virus-Checked",
            by,
        }
    }
}

/// Builds a command-line scanner's [`Product`] from its `key value` arguments: the scanner
/// arguments (`timeout`, `max_scans`, `defer_on_error`), `program_key PATH` (the program;
/// `default` without it), and the plugin's own, handed to `own` with the scanner arguments
/// (`Ok(false)`: an unknown argument).
pub(crate) fn build_product(
    init: &PluginInit<'_>,
    program_key: &str,
    default: &str,
    marks: Marks,
    metrics: ScanMetrics,
    mut own: impl FnMut(&str, &str, &mut ScannerArgs) -> Result<bool, String>,
) -> Result<Product, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut args = ScannerArgs::default();
    let mut program = default;
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        if args.take(key, value).map_err(|e| init.error(e))? {
            continue;
        }
        if key == program_key {
            program = value;
        } else if !own(key, value, &mut args).map_err(|e| init.error(e))? {
            return Err(init.unknown(key));
        }
    }
    Ok(Product {
        common,
        scanner: CommandScanner::new(program, args, metrics).map_err(|e| init.error(e))?,
        marks,
    })
}

/// A `max_size` in KiB (bitdefender, sophie): 1 to 4 GiB.
pub(crate) fn kib(value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=4 * 1024 * 1024).contains(n))
        .ok_or_else(|| format!("max_size '{value}' is not a size in KiB"))
}

/// True (and logged) if the message is not multipart: not scanned (a virus needs an
/// attachment; qpsmtpd's uvscan, sophie and bitdefender scan only those).
pub(crate) fn not_multipart(common: &Common, cx: &Cx, txn: &Transaction) -> bool {
    if super::is_multipart(txn) {
        return false;
    }
    common.log(cx, Level::Info, format_args!("skip, not multipart"));
    true
}

/// A command-line scanner plugin's common parts: its name and common arguments, the program
/// with its deadline, slots and error policy, and the header fields it adds.
pub(crate) struct Product {
    pub common: Common,
    pub scanner: CommandScanner,
    pub marks: Marks,
}

impl Product {
    /// One scan of `txn` with `argv` (the file's path is added last), the program's result
    /// read by `read` and judged ([`judge`]), or the error policy.
    pub(crate) async fn scan(
        &self,
        cx: &mut Cx,
        txn: &mut Transaction,
        argv: &[&str],
        read: impl FnOnce(&Ran) -> Result<Found, String>,
        deny: impl FnOnce(&[String]) -> bool,
    ) -> Outcome {
        let start = Instant::now();
        let svc = cx.svc.clone();
        let answer = self
            .scanner
            .run(&svc, txn, argv, Input::LastArgument)
            .await
            .and_then(|ran| read(&ran));
        let spent = start.elapsed();
        match answer {
            Ok(found) => {
                let found = found.counted(self.scanner.metrics);
                judge(&self.common, cx, txn, found, &self.marks, deny, spent)
            }
            Err(e) => {
                self.scanner
                    .args
                    .on_error(&self.common, cx, txn, self.marks.checked, &e, spent)
            }
        }
    }
}

/// What `found` becomes, logged once with the time `spent`; `deny` says whether these
/// viruses refuse the message (else they are named in headers).
pub(crate) fn judge(
    common: &Common,
    cx: &Cx,
    txn: &mut Transaction,
    found: Found,
    marks: &Marks,
    deny: impl FnOnce(&[String]) -> bool,
    spent: Duration,
) -> Outcome {
    let secs = spent.as_secs_f64();
    match found {
        Found::Clean => {
            common.log(cx, Level::Info, format_args!("pass, clean ({secs:.3}s)"));
            let value = if marks.by.is_empty() {
                "Checked".to_string()
            } else {
                format!("Checked by {} on {}", marks.by, cx.svc.me())
            };
            txn.append_header(marks.checked, &value);
            Outcome::Declined
        }
        Found::Refuse(why) => {
            common.log(cx, Level::Notice, format_args!("fail, {why} ({secs:.3}s)"));
            Outcome::Done(Some(Reply::new(552, "5.7.1", why)))
        }
        Found::Viruses(names) => {
            let shown = names
                .iter()
                .take(MAX_NAMES)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            common.log(
                cx,
                Level::Notice,
                format_args!("fail, found virus {shown} ({secs:.3}s)"),
            );
            if deny(&names) {
                return Outcome::Done(Some(Reply::new(
                    552,
                    "5.7.1",
                    format!("Virus found: {shown}"),
                )));
            }
            txn.append_header(marks.found, "Yes");
            txn.append_header(marks.details, &shown);
            Outcome::Declined
        }
    }
}

/// The cleaned, distinct, non-empty names among `names`, in order; `Found::Clean` if none.
pub(crate) fn viruses<'a>(names: impl IntoIterator<Item = &'a str>) -> Found {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let name = super::clean_name(name);
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    if out.is_empty() {
        Found::Clean
    } else {
        Found::Viruses(out)
    }
}

/// What the command-line scanners' tests share: a stand-in program and a scan through a
/// plugin.
#[cfg(test)]
pub(crate) mod test_kit {
    use ringsmtpd_plugin_api::testing::{cx, executable, run, set_message, TempDir};
    use ringsmtpd_plugin_api::{Outcome, Plugin, Transaction};

    /// A multipart message (the uvscan, sophie and bitdefender plugins scan only those).
    pub(crate) const MULTIPART: &str = "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
                                        --b\r\n\r\nhello\r\n--b--\r\n";

    /// A stand-in scanner: `/bin/sh` running `body` (the file is the last argument, `$@`),
    /// in a new temp dir; returns the dir and the program's path.
    pub(crate) fn stand_in(name: &str, body: &str) -> (TempDir, String) {
        let dir = TempDir::new(name);
        let path = dir.path().join(name);
        executable(&path, &format!("#!/bin/sh\n{body}\n"));
        let path = path.display().to_string();
        (dir, path)
    }

    /// The data_post outcome of `p` for `message`, the added headers and the log lines.
    pub(crate) fn scan(p: &dyn Plugin, message: &str) -> (Outcome, String, Vec<String>) {
        let (mut c, svc) = cx("192.0.2.1:1");
        let mut txn = Transaction::default();
        set_message(&mut txn, message);
        let out = run(p.data_post(&mut c, &mut txn));
        let logs = svc.logs.borrow().iter().map(|l| l.2.clone()).collect();
        (out, txn.added_headers, logs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_deduplicated() {
        assert_eq!(viruses(["", "  "]), Found::Clean);
        assert_eq!(
            viruses(["Eicar", "W32/Evil\r\nX-Injected: 1", "Eicar"]),
            Found::Viruses(vec!["Eicar".into(), "W32/Evil??X-Injected: 1".into()])
        );
    }
}
