//! # help — answer HELP from text files, or say it is not implemented
//!
//! ## Synopsis
//!
//! ```text
//! help [help_dir DIR] [not_implemented 0|1] [COMMAND FILE]... [loglevel N]
//! help                               # files from ./help/<command>
//! help help_dir /etc/ringsmtpd/help
//! help not_implemented 1             # every HELP gets 502
//! help mail mail.txt rcpt /srv/help/rcpt
//! ```
//!
//! ## Description
//!
//! Replaces the core's HELP text. `HELP` alone is answered
//! `214 2.0.0 Try 'HELP COMMAND' for getting help on COMMAND`. `HELP <command>` (the first
//! word, any case) is answered with the text of that command's file, one `214` line per line
//! of the file (a multi-line reply), or `214 2.0.0 No help available for SMTP command:
//! <command>` when there is none or the file is empty. A command that is not a word
//! (`HELP ../../etc/passwd`) gets `502 5.5.1 Invalid command name`. With `not_implemented 1`
//! every HELP gets `502 5.5.1 Not implemented.`
//!
//! **The files are read once, when the plugin is built** (at start and at reload), never
//! while answering: a HELP costs no I/O. Edit a file, then reload.
//!
//! Where the texts come from:
//!
//! - `COMMAND FILE` pairs: `FILE` is the text for `COMMAND`. A `FILE` with a `/` is taken as it
//!   is (relative to the working directory); a bare name is looked up in the help directory.
//!   These take precedence over the directory.
//! - `help_dir DIR`: every regular file of `DIR` whose name is a word (letters, digits, `_`)
//!   is the text of the command of that name, lowercased (`DIR/mail` for `HELP MAIL`).
//!   Other names (`README.txt`, dot files) are skipped.
//! - Without any argument (`help` alone), the directory is `./help`, as in qpsmtpd; it need
//!   not exist. When other arguments are given, there is no directory unless `help_dir` is
//!   one of them, except to resolve bare `FILE` names (`./help` again).
//!
//! Differences from qpsmtpd: a missing `FILE`, a `help_dir` that is not a directory, a file that
//! is not UTF-8 text, has a control character or a line over 500 bytes, stops the
//! configuration with the file (and line) named, where qpsmtpd logged a warning and answered
//! "No help available"; a bare `FILE` is looked up in the help directory (qpsmtpd's lookup
//! of `help/help/FILE` could never match).
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `help_dir` | `./help` when there are no arguments | the directory of per-command files |
//! | `not_implemented` | `0` | `1`: answer every HELP with 502 |
//! | `COMMAND FILE` | | the text of `HELP COMMAND`; `COMMAND` is a word |
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect |
//!
//! ## Config files
//!
//! None in the config directory; the help files themselves, as above.
//!
//! ## Hooks
//!
//! `help`: answers with `DONE` and its own reply every time (no later `help` plugin runs).
//!
//! ## Notes
//!
//! None.
//!
//! ## Standards
//!
//! RFC 5321 §4.1.1.8 (HELP, 211/214), §4.2.1 (multi-line replies), §4.5.3.1.5 (reply lines
//! up to 512 octets, so help lines are limited to 500 bytes); RFC 3463 (X.5.1).
//!
//! ## Security
//!
//! The client's argument is never used as a path: it only selects among the texts read at
//! start, so `HELP ../../etc/passwd` reads nothing. The texts are sent to anyone who asks:
//! put nothing secret in them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Reply,
    Step,
};

/// The default help directory (qpsmtpd's `./help/`).
const DEFAULT_DIR: &str = "./help";
/// The longest help line: a reply line is at most 512 octets with `214-2.0.0 ` and CRLF.
const MAX_LINE: usize = 500;
/// The largest help file read.
const MAX_FILE: u64 = 64 * 1024;

/// The `help` plugin.
pub struct Help {
    common: Common,
    not_implemented: bool,
    /// Lowercased command -> its text, line by line (empty: "No help available").
    texts: HashMap<String, Vec<Cow<'static, str>>>,
}

/// Builds `help` from its config line, reading every help file.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    if rest.len() % 2 != 0 {
        return Err(init.error(format!(
            "arguments come in pairs; '{}' has no value",
            rest[rest.len() - 1]
        )));
    }
    let mut not_implemented = false;
    let mut help_dir: Option<PathBuf> = rest.is_empty().then(|| PathBuf::from(DEFAULT_DIR));
    let mut pairs: Vec<(String, &str)> = Vec::new();
    for pair in rest.chunks(2) {
        let (key, value) = (pair[0], pair[1]);
        match key {
            "not_implemented" => {
                not_implemented = match value {
                    "0" => false,
                    "1" => true,
                    v => {
                        return Err(init.error(format!("not_implemented must be 0 or 1, not '{v}'")))
                    }
                }
            }
            "help_dir" => {
                let dir = PathBuf::from(value);
                if !dir.is_dir() {
                    return Err(init.error(format!("help_dir {value} is not a directory")));
                }
                help_dir = Some(dir);
            }
            cmd if is_word(cmd) => pairs.push((cmd.to_ascii_lowercase(), value)),
            other => {
                return Err(init.error(format!(
                    "unknown argument '{other}' (a command is letters, digits and '_')"
                )))
            }
        }
    }
    let mut texts = HashMap::new();
    if let Some(dir) = &help_dir {
        // The default directory need not exist.
        if dir.is_dir() {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| init.error(format!("cannot read {}: {e}", dir.display())))?;
            for entry in entries {
                let entry =
                    entry.map_err(|e| init.error(format!("cannot read {}: {e}", dir.display())))?;
                let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let path = entry.path();
                if !is_word(&file_name) || !path.is_file() {
                    continue;
                }
                texts.insert(file_name.to_ascii_lowercase(), read_text(&path)?);
            }
        }
    }
    for (cmd, file) in pairs {
        let path = if file.contains('/') {
            PathBuf::from(file)
        } else {
            help_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
                .join(file)
        };
        if !path.is_file() {
            return Err(init.error(format!(
                "no help file {} for command '{cmd}'",
                path.display()
            )));
        }
        texts.insert(cmd, read_text(&path)?);
    }
    Ok(Box::new(Help {
        common,
        not_implemented,
        texts,
    }))
}

/// qpsmtpd's `^\w+$` (ASCII).
fn is_word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A help file as reply lines, checked: UTF-8, no control characters, lines of at most
/// [`MAX_LINE`] bytes. Errors name the file and line.
fn read_text(path: &Path) -> Result<Vec<Cow<'static, str>>, ConfigError> {
    let file = path.display().to_string();
    let whole = |reason: String| ConfigError {
        file: file.clone(),
        line: 0,
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| whole(format!("cannot read: {e}")))?
        .len();
    if size > MAX_FILE {
        return Err(whole(format!("larger than {MAX_FILE} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| whole("not UTF-8 text".into()))?;
    let mut lines: Vec<Cow<'static, str>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |reason: &str| ConfigError {
            file: file.clone(),
            line: i as u32 + 1,
            reason: reason.to_string(),
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.len() > MAX_LINE {
            return Err(at(
                "line longer than 500 bytes (a reply line is 512 at most)",
            ));
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(at("control character in a help line"));
        }
        lines.push(Cow::Owned(line.to_string()));
    }
    // Trailing empty lines would become empty reply lines.
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    Ok(lines)
}

fn reply(code: u16, enhanced: &'static str, lines: Vec<Cow<'static, str>>) -> Outcome {
    Outcome::Done(Some(Reply {
        code,
        enhanced: Some(Cow::Borrowed(enhanced)),
        lines,
        disconnect: false,
    }))
}

impl Plugin for Help {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Help])
    }

    fn help<'a>(&'a self, cx: &'a mut Cx, args: &'a str) -> Step<'a> {
        if self.not_implemented {
            return Step::Ready(reply(502, "5.5.1", vec!["Not implemented.".into()]));
        }
        let Some(word) = args.split_whitespace().next() else {
            let text = "Try 'HELP COMMAND' for getting help on COMMAND";
            return Step::Ready(reply(214, "2.0.0", vec![text.into()]));
        };
        if !is_word(word) {
            return Step::Ready(reply(502, "5.5.1", vec!["Invalid command name".into()]));
        }
        let cmd = word.to_ascii_lowercase();
        match self.texts.get(&cmd) {
            Some(lines) if !lines.is_empty() => {
                self.common
                    .log(cx, Level::Debug, format_args!("help for {cmd}"));
                Step::Ready(reply(214, "2.0.0", lines.clone()))
            }
            _ => {
                let text = format!("No help available for SMTP command: {cmd}");
                Step::Ready(reply(214, "2.0.0", vec![text.into()]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{self, assert_bad_args, cx, run, TempDir};

    /// A help directory and its path as an argument.
    fn help_dir(tag: &str) -> (TempDir, String) {
        let d = TempDir::new(&format!("help-{tag}"));
        let path = d.path().display().to_string();
        (d, path)
    }

    fn build(args: &[&str]) -> Result<Box<dyn Plugin>, ConfigError> {
        testing::build(new, &format!("help {}", args.join(" ")), &[])
    }

    /// (code, lines) of the answer to `HELP <args>`.
    fn ask(p: &dyn Plugin, args: &str) -> (u16, Vec<String>) {
        let (mut c, _) = cx("192.0.2.1:1");
        match run(p.help(&mut c, args)) {
            Outcome::Done(Some(r)) => (r.code, r.lines.iter().map(|l| l.to_string()).collect()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn texts_from_help_dir_any_case() {
        let (d, dir) = help_dir("dir");
        d.write("mail", b"MAIL FROM:<address>\nStarts a transaction.\n\n");
        d.write("README.txt", b"skipped");
        d.write("empty", b"");
        let p = build(&["help_dir", &dir]).unwrap();
        assert_eq!(
            ask(&*p, "Mail"),
            (
                214,
                vec!["MAIL FROM:<address>".into(), "Starts a transaction.".into()]
            )
        );
        assert_eq!(
            ask(&*p, "readme"),
            (
                214,
                vec!["No help available for SMTP command: readme".into()]
            )
        );
        assert_eq!(
            ask(&*p, "EMPTY extra words"),
            (
                214,
                vec!["No help available for SMTP command: empty".into()]
            )
        );
        assert_eq!(
            ask(&*p, ""),
            (
                214,
                vec!["Try 'HELP COMMAND' for getting help on COMMAND".into()]
            )
        );
    }

    #[test]
    fn files_are_read_at_construction_only() {
        let (d, dir) = help_dir("once");
        d.write("rcpt", b"before\n");
        let p = build(&["help_dir", &dir]).unwrap();
        d.write("rcpt", b"after\n");
        std::fs::remove_file(d.path().join("rcpt")).unwrap();
        assert_eq!(ask(&*p, "rcpt"), (214, vec!["before".into()]));
    }

    #[test]
    fn command_file_pairs() {
        let (d, dir) = help_dir("pairs");
        let abs = d.write("data-help", b"DATA text\r\n");
        d.write("quit.txt", b"bye\n");
        d.write("vrfy", b"from the dir\n");
        let p = build(&[
            "help_dir", &dir, "DATA", &abs, "quit", "quit.txt", "vrfy", "quit.txt",
        ])
        .unwrap();
        assert_eq!(ask(&*p, "data"), (214, vec!["DATA text".into()]));
        assert_eq!(ask(&*p, "QUIT"), (214, vec!["bye".into()]));
        assert_eq!(
            ask(&*p, "vrfy"),
            (214, vec!["bye".into()]),
            "pairs take precedence"
        );
        // Without help_dir, only the pairs.
        let p = build(&["data", &abs]).unwrap();
        assert_eq!(ask(&*p, "data"), (214, vec!["DATA text".into()]));
        assert_eq!(
            ask(&*p, "vrfy").1[0],
            "No help available for SMTP command: vrfy"
        );
    }

    #[test]
    fn not_implemented_and_bad_words() {
        let p = build(&["not_implemented", "1"]).unwrap();
        assert_eq!(ask(&*p, ""), (502, vec!["Not implemented.".into()]));
        assert_eq!(ask(&*p, "mail").0, 502);
        let p = build(&["not_implemented", "0"]).unwrap();
        assert_eq!(ask(&*p, "").0, 214);
        assert_eq!(
            ask(&*p, "../../etc/passwd"),
            (502, vec!["Invalid command name".into()])
        );
        assert_eq!(ask(&*p, "ma-il").0, 502);
    }

    #[test]
    fn default_dir_need_not_exist() {
        // The tests run in the crate directory, which has no ./help.
        let p = build(&[]).unwrap();
        assert_eq!(ask(&*p, "mail").0, 214);
    }

    #[test]
    fn bad_files_name_file_and_line() {
        let (d, dir) = help_dir("bad");
        let long = d.write("long", format!("ok\n{}\n", "x".repeat(501)).as_bytes());
        let err = build(&["mail", &long]).err().unwrap();
        assert_eq!((err.file.as_str(), err.line), (long.as_str(), 2));
        let ctl = d.write("ctl", b"a\nb\x1b[31m\n");
        let err = build(&["mail", &ctl]).err().unwrap();
        assert_eq!(err.line, 2);
        assert!(err.to_string().contains("control character"), "{err}");
        let bin = d.write("bin", b"\xff\xfe");
        let err = build(&["mail", &bin]).err().unwrap();
        assert_eq!(err.to_string(), format!("{bin}: not UTF-8 text"));
        let big = d.write("big", vec![b'a'; 70_000]);
        assert!(build(&["mail", &big]).is_err());
        // A bad file in help_dir is an error too.
        let err = build(&["help_dir", &dir]).err().unwrap();
        assert!(err.file.starts_with(&dir), "{err}");
    }

    #[test]
    fn bad_arguments() {
        let d = TempDir::new("help-args");
        let missing = d.join("nope");
        let bad = [
            &["help_dir"][..],
            &["help_dir", &missing],
            &["not_implemented", "yes"],
            &["mail", &missing],
            &["mail", "missing-bare-name"],
            &["ma.il", "x"],
            &["reject"],
        ];
        assert_bad_args(new, "help", &bad);
    }
}
