//! `ringsmtpd --config DIR --check`: loads the config directory as the server would, then looks
//! for the mistakes that lose or relay mail, and prints each as a finding with a severity and a
//! message that says how to fix it, then the plugin chain of each hook.
//!
//! | severity | exit | examples |
//! |---|---|---|
//! | error | 1 | a file or line the server refuses, an unknown plugin, no queue plugin, an open relay, AUTH in clear text, an expired certificate |
//! | warning | 0 | a certificate that expires within 30 days or does not name `me`, a listen address in use, a plugin path that does not exist, risky whitelists |
//! | note | 0 | what ringsmtpd does differently from qpsmtpd with this directory: Debian's compatibility names, defaults, files nothing reads |
//!
//! Findings go to stderr as `SEVERITY: FILE[:LINE]: message`; `config DIR is valid` (without
//! errors) and the chains go to stdout. The checks: [`names`] (plugin names), [`relay`] (open
//! relay), [`cert`] (TLS certificates); the rest is here.

mod cert;
mod names;
mod relay;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use ringsmtpd_plugin_api::{ConfigError, ConfigSource, Hook};

use crate::config::{plugin_lines, ConfigDir, PluginLine, Settings};
use crate::snapshot::Snapshot;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The server would refuse to start, or would lose or relay mail: `--check` exits 1.
    Error,
    /// Probably a mistake; the server starts.
    Warning,
    /// What ringsmtpd does differently from qpsmtpd with this directory.
    Note,
}

/// One finding: where (a file, or `file:line`), and what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub at: String,
    pub message: String,
}

impl Finding {
    fn new(severity: Severity, at: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            severity,
            at: at.into(),
            message: message.into(),
        }
    }

    /// A finding at a config line (`file:line`).
    fn at_line(severity: Severity, line: &PluginLine, message: impl Into<String>) -> Finding {
        Finding::new(
            severity,
            format!("{}:{}", line.origin.file, line.origin.line),
            message,
        )
    }

    fn from_error(e: &ConfigError) -> Finding {
        let at = if e.line == 0 {
            e.file.clone()
        } else {
            format!("{}:{}", e.file, e.line)
        };
        Finding::new(Severity::Error, at, e.reason.clone())
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{severity}: {}: {}", self.at, self.message)
    }
}

/// What the check depends on besides the directory (a parameter, so tests set it).
pub struct Env {
    /// `--stdio` was given too: the server will run under tcpserver or inetd.
    pub stdio: bool,
    /// `RELAYCLIENT` is set in the environment (the `relay` plugin reads it).
    pub relayclient: bool,
    /// The time certificates are checked against.
    pub now: SystemTime,
}

impl Env {
    /// This process's environment and clock.
    pub fn current(stdio: bool) -> Env {
        Env {
            stdio,
            relayclient: std::env::var_os("RELAYCLIENT").is_some(),
            now: SystemTime::now(),
        }
    }
}

/// The findings and, if the directory loaded, the plugin chains.
pub struct Report {
    pub findings: Vec<Finding>,
    /// (hook, plugin names) for each hook with plugins; empty if the config did not load.
    pub chains: Vec<(&'static str, Vec<String>)>,
    pub tls: bool,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// `ringsmtpd --config DIR --check [--stdio]`: prints the report, exits 1 on errors.
/// `runs_as` is the account line of the privilege plan, or why a start would refuse to run
/// (an error finding at the `user` file).
pub fn run(dir: &Path, stdio: bool, runs_as: Result<String, String>) -> ExitCode {
    let mut report = report(dir, &Env::current(stdio));
    if let Err(why) = &runs_as {
        let at = dir.join("user").display().to_string();
        report
            .findings
            .push(Finding::new(Severity::Error, at, why.clone()));
    }
    for f in &report.findings {
        eprintln!("{f}");
    }
    let (errors, warnings, notes) = (
        report.errors(),
        report.count(Severity::Warning),
        report.count(Severity::Note),
    );
    eprintln!(
        "ringsmtpd --check: {errors} error(s), {warnings} warning(s), {notes} note(s) in {}",
        dir.display()
    );
    if errors == 0 {
        println!("config {} is valid", dir.display());
    }
    // Not indented: the indented lines below are the chains, one per hook.
    if let Ok(line) = &runs_as {
        println!("{line}");
    }
    if report.tls {
        println!("  tls                    STARTTLS and tls listeners (built into the core)");
    }
    for (hook, names) in &report.chains {
        println!("  {hook:<22} {}", names.join(" -> "));
    }
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Checks the config directory `dir`.
pub fn report(dir: &Path, env: &Env) -> Report {
    let config = Arc::new(ConfigDir::new(dir));
    let mut report = Report {
        findings: Vec::new(),
        chains: Vec::new(),
        tls: false,
    };
    let out = &mut report.findings;
    if !dir.is_dir() {
        out.push(Finding::new(
            Severity::Error,
            dir.display().to_string(),
            "not a directory: give --config the config directory (the one with plugins)",
        ));
        return report;
    }
    let mut lines = Vec::new();
    for file in ["logging", "plugins"] {
        match plugin_lines(&*config, file) {
            Ok(l) => lines.extend(l),
            Err(e) => out.push(Finding::from_error(&e)),
        }
    }
    if !out.is_empty() {
        return report; // the plugin list itself is unreadable: nothing else can be judged
    }
    let unknown = names::check(&lines, out);
    let known = |l: &PluginLine| !unknown.contains(&(l.origin.file.clone(), l.origin.line));
    lines.retain(known);
    match Snapshot::load_from(config.clone(), known) {
        Ok((snapshot, chains)) => {
            report.tls = snapshot.tls.is_some();
            report.chains = chains
                .describe()
                .into_iter()
                .map(|(h, n)| (h.name(), n.into_iter().map(str::to_string).collect()))
                .collect();
            auth(&snapshot, chains.has(Hook::Auth), env, out);
            if let Some(tls) = &snapshot.tls {
                cert::check(&tls.leaves, &snapshot.settings.me, env.now, out);
            }
            listeners(&snapshot, out);
            if let Err(why) = crate::store::verify(&snapshot.settings.store) {
                out.push(Finding::new(
                    Severity::Error,
                    dir.join("state_store").display().to_string(),
                    why,
                ));
            }
            // Only a directory that loaded says which files are read and which are defaults.
            defaults(&config, &snapshot.settings, out);
            unread(&config, out);
        }
        Err(e) => out.push(Finding::from_error(&e)),
    }
    queue(&lines, dir, out);
    relay::check(&lines, &*config, env, out);
    paths(&lines, out);
    report.findings.sort_by_key(|f| f.severity);
    report
}

/// No queue plugin: every message is refused with 451 after DATA.
fn queue(lines: &[PluginLine], dir: &Path, out: &mut Vec<Finding>) {
    if lines
        .iter()
        .any(|l| names::plugin_of(l.base_name()).starts_with("queue/"))
    {
        return;
    }
    out.push(Finding::new(
        Severity::Error,
        dir.join("plugins").display().to_string(),
        "no queue plugin: every message would be refused with 451 4.3.0 after its DATA. \
         Add one as the last line, e.g. `queue/maildir /var/mail/Maildir`, \
         `queue/smtp-forward 127.0.0.1 10025` or `queue/qmail-queue` (`ringsmtpd help` lists them)",
    ));
}

/// AUTH offered in clear text, or never offered at all.
fn auth(snapshot: &Snapshot, has_auth: bool, env: &Env, out: &mut Vec<Finding>) {
    if !has_auth {
        return;
    }
    let dir = snapshot.config.dir();
    let at = dir.join("tls_before_auth").display().to_string();
    let plugins = dir.join("plugins").display().to_string();
    match (snapshot.tls.is_some(), snapshot.auth.plaintext, env.stdio) {
        (false, true, false) => out.push(Finding::new(
            Severity::Error,
            at,
            "AUTH is offered without TLS: passwords cross the network in clear text. Add a `tls` \
             line to plugins (`ringsmtpd tls-cert` makes a certificate to try) and remove \
             tls_before_auth (or set it to 1)",
        )),
        (false, true, true) => out.push(Finding::new(
            Severity::Warning,
            at,
            "AUTH is offered without TLS under --stdio: safe only if the program in front \
             (stunnel, tcpserver with TLS) encrypts the connection; otherwise add a `tls` line",
        )),
        (false, false, _) => out.push(Finding::new(
            Severity::Warning,
            plugins,
            "an auth plugin is loaded but AUTH is never offered: tls_before_auth requires TLS \
             and there is no `tls` line. Add `tls` (certificate and key) to plugins",
        )),
        (true, true, _) => out.push(Finding::new(
            Severity::Warning,
            at,
            "tls_before_auth is 0: AUTH is offered before STARTTLS, so a client may send its \
             password in clear text. Remove tls_before_auth (the default 1 offers AUTH only over TLS)",
        )),
        (true, false, _) => {}
    }
}

/// Listen (and metrics) addresses something already listens on.
fn listeners(snapshot: &Snapshot, out: &mut Vec<Finding>) {
    let dir = snapshot.config.dir();
    let specs = snapshot.settings.listen.iter().map(|s| (s.addr, "listen"));
    for (addr, file) in specs.chain(snapshot.metrics.map(|a| (a, "metrics"))) {
        if let Err(e) = crate::listener::check_free(addr) {
            out.push(Finding::new(
                Severity::Warning,
                dir.join(file).display().to_string(),
                format!(
                    "{addr} is not free ({e}): if a running ringsmtpd holds it, reload that one \
                     with SIGHUP or start the new one with --join; otherwise stop the server \
                     that listens there or change {file}"
                ),
            ));
        }
    }
}

/// Plugin arguments that look like paths (`/…`, `./…`, `../…`) naming nothing that exists,
/// not even the directory the file would be created in.
fn paths(lines: &[PluginLine], out: &mut Vec<Finding>) {
    for line in lines {
        for arg in &line.args {
            if !(arg.starts_with('/') || arg.starts_with("./") || arg.starts_with("../")) {
                continue;
            }
            let path = Path::new(arg);
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            if path.exists() || parent.is_some_and(Path::exists) {
                continue;
            }
            out.push(Finding::at_line(
                Severity::Warning,
                line,
                format!(
                    "{}: {arg} does not exist, nor the directory it would be made in: create it \
                     (owned by the user the server runs as) or fix the path",
                    line.name
                ),
            ));
        }
    }
}

/// Core settings whose default differs from qpsmtpd's, when the directory leaves them unset.
fn defaults(config: &ConfigDir, settings: &Settings, out: &mut Vec<Finding>) {
    let absent = |names: &[&str]| names.iter().all(|n| !present(config, n));
    let notes: [(&[&str], String); 5] = [
        (
            &["databytes"],
            format!(
                "no databytes: messages are limited to {} bytes (qpsmtpd: unlimited); write a \
                 size in bytes, or 0 for no limit",
                settings.databytes
            ),
        ),
        (
            &["timeoutsmtpd", "timeout"],
            format!(
                "no timeout: an idle client is dropped after {} s (qpsmtpd: 1200 s)",
                settings.timeout.as_secs()
            ),
        ),
        (
            &["size_threshold"],
            format!(
                "no size_threshold: messages up to {} bytes stay in memory (qpsmtpd: 0, every \
                 message is spooled to disk)",
                settings.size_threshold
            ),
        ),
        (
            &["loglevel"],
            "no loglevel: ringsmtpd logs at 6, info, with a line per connection and per \
             transaction (qpsmtpd: 4, warn)"
                .to_string(),
        ),
        (
            &["listen"],
            format!(
                "no listen file: ringsmtpd listens on {} (qpsmtpd took the address on its \
                 command line); write `*:25` or `ADDR:PORT` lines to receive mail",
                crate::config::DEFAULT_LISTEN
            ),
        ),
    ];
    for (names, note) in notes {
        if absent(names) {
            out.push(Finding::new(
                Severity::Note,
                config
                    .dir()
                    .join(names[names.len() - 1])
                    .display()
                    .to_string(),
                note,
            ));
        }
    }
}

/// True if config file `name` has at least one value.
fn present(config: &ConfigDir, name: &str) -> bool {
    matches!(config.lines(name), Ok(Some(v)) if !v.is_empty())
}

/// Regular files of the directory that no part of this configuration read.
fn unread(config: &ConfigDir, out: &mut Vec<Finding>) {
    let read = config.files_read();
    let Ok(entries) = std::fs::read_dir(config.dir()) else {
        return;
    };
    let mut unread: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().as_encoded_bytes().first() != Some(&b'.'))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| !read.contains(&std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())))
        .collect();
    unread.sort();
    let read_names: HashSet<_> = read.iter().filter_map(|p| p.file_name()).collect();
    for path in unread {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let why = match name.as_deref() {
            Some("plugin_dirs") => {
                "qpsmtpd's plugin search path; ringsmtpd's plugins are compiled in".to_string()
            }
            Some(n) if n.ends_with(".example") || n.ends_with(".sample") => {
                "an example to copy from".to_string()
            }
            Some(n) if read_names.contains(std::ffi::OsStr::new(n)) => {
                "a file of that name was read from elsewhere".to_string()
            }
            _ => "no core setting and no plugin in this chain reads it; the plugin that would \
                  is not in plugins, or not implemented (`ringsmtpd help` lists the plugins and \
                  their files)"
                .to_string(),
        };
        out.push(Finding::new(
            Severity::Note,
            path.display().to_string(),
            format!("not read: {why}"),
        ));
    }
}
