//! The qpsmtpd-style config directory ([`ConfigDir`]), the `config/plugins` format
//! ([`plugin_lines`]) and the core's own settings ([`Settings`]).
//!
//! # Lookup
//!
//! A config file `name` is read from the config directory if `<dir>/name` exists there, else
//! from the qmail control directory `${QMAIL:-/var/qmail}/control`, so a qmail-smtpd or qpsmtpd
//! installation can be pointed at as it is. (qpsmtpd also tried `<dir of $0>/config`; we have
//! exactly one configured directory.)
//!
//! # File format
//!
//! - One value per line. Leading and trailing whitespace is trimmed.
//! - Blank lines and lines whose first non-blank character is `#` are skipped. There are no
//!   trailing comments: `a # b` is the value `a # b`, as in qpsmtpd.
//! - `$include <file|dir>` splices in another file, or every regular, non-dot file of a
//!   directory in sorted (byte) order. A relative name goes through the same lookup as a
//!   config name (config directory, then qmail control directory); an absolute one is used as
//!   is. Including a file that is already being included (a cycle) is an error at the
//!   `$include` line; including the same file twice side by side is not a cycle.
//! - Differences from qpsmtpd, all stricter: a missing `$include` target, a `$include` line
//!   without exactly one argument, and a file that is not UTF-8 are errors that name the file
//!   and line, where qpsmtpd logged and carried on (or, for a cycle, dropped the whole file).
//!
//! Every value remembers the file and line it came from ([`ConfigLine`]), the included file for
//! included values, so an error always points at the line to fix.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ringsmtpd_plugin_api::{ConfigError, ConfigLine, ConfigSource, Level};

use crate::dns::ResolverConfig;

// ---------------------------------------------------------------------------------------------
// The config directory.

/// What a config name resolves to: the values, `None` if the file exists nowhere, or the error.
type Loaded = Result<Option<Vec<ConfigLine>>, ConfigError>;

/// A config directory with qpsmtpd's lookup (see the module docs).
///
/// Files are read on first use and cached for the life of the value; on SIGHUP the server
/// builds a new `ConfigDir`, so nothing is ever invalidated. The cache sits behind a `Mutex`,
/// so one `ConfigDir` can be shared by every worker in an `Arc`. Errors are cached too: asking
/// twice gives the same answer without touching the disk again.
#[derive(Debug)]
pub struct ConfigDir {
    dir: PathBuf,
    fallback: Option<PathBuf>,
    cache: Mutex<HashMap<String, Loaded>>,
    /// Every file read so far (canonical paths), for `--check`'s list of files nothing reads.
    read: Mutex<HashSet<PathBuf>>,
}

impl ConfigDir {
    /// The config directory `dir`, falling back to `${QMAIL:-/var/qmail}/control` for files
    /// that `dir` does not have (an empty `QMAIL` counts as unset, like the shell's `:-`).
    pub fn new(dir: impl Into<PathBuf>) -> ConfigDir {
        let qmail = match std::env::var_os("QMAIL") {
            Some(q) if !q.is_empty() => PathBuf::from(q),
            _ => PathBuf::from("/var/qmail"),
        };
        ConfigDir::with_fallback(dir, Some(qmail.join("control")))
    }

    /// The config directory `dir` with an explicit fallback directory (`None`: no fallback).
    pub fn with_fallback(dir: impl Into<PathBuf>, fallback: Option<PathBuf>) -> ConfigDir {
        ConfigDir {
            dir: dir.into(),
            fallback,
            cache: Mutex::new(HashMap::new()),
            read: Mutex::new(HashSet::new()),
        }
    }

    /// The primary config directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The fallback (qmail control) directory, if any.
    pub fn fallback(&self) -> Option<&Path> {
        self.fallback.as_deref()
    }

    /// Every file read so far (config files and the files they `$include`), canonical paths.
    pub fn files_read(&self) -> HashSet<PathBuf> {
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where `name` is: `<dir>/name` if that exists, else `<fallback>/name` if that exists.
    fn locate(&self, name: &str) -> Option<PathBuf> {
        let primary = self.dir.join(name);
        if primary.exists() {
            return Some(primary);
        }
        let fallback = self.fallback.as_ref()?.join(name);
        fallback.exists().then_some(fallback)
    }

    /// Reads `name` from disk, without the cache.
    fn load(&self, name: &str) -> Loaded {
        if name.is_empty() || Path::new(name).is_absolute() {
            return Err(ConfigError {
                file: name.to_string(),
                line: 0,
                reason: "a config name must be a relative file name".into(),
            });
        }
        let Some(path) = self.locate(name) else {
            // A link to nowhere is a mistake, not a missing file (which means "the default").
            let primary = self.dir.join(name);
            if let Ok(target) = fs::read_link(&primary) {
                return Err(ConfigError {
                    file: primary.display().to_string(),
                    line: 0,
                    reason: format!(
                        "a symbolic link to {}, which does not exist",
                        target.display()
                    ),
                });
            }
            return Ok(None);
        };
        let mut out = Vec::new();
        let mut stack = Vec::new();
        self.read_file(&path, &mut stack, &mut out)?;
        Ok(Some(out))
    }

    /// Appends the values of the file at `path` to `out`, expanding `$include`s. `stack` holds
    /// the identities of the files being read (the include chain), for cycle detection.
    fn read_file(
        &self,
        path: &Path,
        stack: &mut Vec<(PathBuf, String)>,
        out: &mut Vec<ConfigLine>,
    ) -> Result<(), ConfigError> {
        let shown = path.display().to_string();
        let whole = |reason: String| ConfigError {
            file: shown.clone(),
            line: 0,
            reason,
        };
        let meta = fs::metadata(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        if meta.is_dir() {
            return Err(whole("is a directory, not a config file".into()));
        }
        if !meta.is_file() {
            // A FIFO or a device would block the reader or never end.
            return Err(whole(
                "is not a regular file (a FIFO, socket or device?)".into(),
            ));
        }
        let bytes = fs::read(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        let id = identity(path);
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone());

        stack.push((id, shown.clone()));
        let result = self.parse_bytes(&bytes, &shown, stack, out);
        stack.pop();
        result
    }

    /// The line-by-line part of [`ConfigDir::read_file`].
    fn parse_bytes(
        &self,
        bytes: &[u8],
        shown: &str,
        stack: &mut Vec<(PathBuf, String)>,
        out: &mut Vec<ConfigLine>,
    ) -> Result<(), ConfigError> {
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let at = |reason: String| ConfigError {
                file: shown.to_string(),
                line,
                reason,
            };
            let text = std::str::from_utf8(raw)
                .map_err(|e| at(format!("not valid UTF-8 (byte {})", e.valid_up_to() + 1)))?;
            // A UTF-8 byte order mark, as some editors write, is not part of the first value.
            let text = if index == 0 {
                text.strip_prefix('\u{feff}').unwrap_or(text)
            } else {
                text
            };
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            if let Some(target) = include_target(text) {
                let target = target.map_err(at)?;
                self.include(target, shown, line, stack, out)?;
                continue;
            }
            out.push(ConfigLine {
                text: text.to_string(),
                file: shown.to_string(),
                line,
            });
        }
        Ok(())
    }

    /// Expands `$include target` found at `file:line`.
    fn include(
        &self,
        target: &str,
        file: &str,
        line: u32,
        stack: &mut Vec<(PathBuf, String)>,
        out: &mut Vec<ConfigLine>,
    ) -> Result<(), ConfigError> {
        let at = |reason: String| ConfigError {
            file: file.to_string(),
            line,
            reason,
        };
        let path = if Path::new(target).is_absolute() {
            let p = PathBuf::from(target);
            if !p.exists() {
                return Err(at(format!("$include target '{target}' does not exist")));
            }
            p
        } else {
            self.locate(target).ok_or_else(|| {
                let mut looked = vec![self.dir.join(target).display().to_string()];
                if let Some(f) = &self.fallback {
                    looked.push(f.join(target).display().to_string());
                }
                at(format!(
                    "$include target '{target}' not found (looked for {})",
                    looked.join(" and ")
                ))
            })?
        };

        let files = if path.is_dir() {
            let entries = fs::read_dir(&path).map_err(|e| {
                at(format!(
                    "cannot read $include directory {}: {e}",
                    path.display()
                ))
            })?;
            let mut files = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| {
                    at(format!(
                        "cannot read $include directory {}: {e}",
                        path.display()
                    ))
                })?;
                let name = entry.file_name();
                if name.as_encoded_bytes().first() == Some(&b'.') {
                    continue;
                }
                let p = entry.path();
                // Regular files only (following symlinks), as qpsmtpd's `-f`.
                if fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false) {
                    files.push((name, p));
                }
            }
            files.sort();
            files.into_iter().map(|(_, p)| p).collect()
        } else {
            vec![path]
        };

        for f in files {
            let id = identity(&f);
            if stack.iter().any(|(seen, _)| *seen == id) {
                let chain: Vec<&str> = stack.iter().map(|(_, shown)| shown.as_str()).collect();
                return Err(at(format!(
                    "circular $include: {} -> {}",
                    chain.join(" -> "),
                    f.display()
                )));
            }
            self.read_file(&f, stack, out)?;
        }
        Ok(())
    }
}

impl ConfigSource for ConfigDir {
    fn lines(&self, name: &str) -> Result<Option<Vec<ConfigLine>>, ConfigError> {
        let cache = || self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(hit) = cache().get(name) {
            return hit.clone();
        }
        // Read without holding the lock: another thread asking for another file is not held
        // up. Two threads racing for the same file both read it; the answers are the same.
        let loaded = self.load(name);
        cache().insert(name.to_string(), loaded.clone());
        loaded
    }

    fn dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

/// `Some(Ok(target))` if `text` is a `$include` line, `Some(Err)` if it is a malformed one,
/// `None` if it is an ordinary value.
fn include_target(text: &str) -> Option<Result<&str, String>> {
    let rest = text.strip_prefix("$include")?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None; // `$includes` and the like are plain values
    }
    let mut words = rest.split_whitespace();
    Some(match (words.next(), words.next()) {
        (Some(target), None) => Ok(target),
        (None, _) => Err("$include needs a file or directory name".into()),
        (Some(_), Some(_)) => Err("$include takes exactly one file or directory name".into()),
    })
}

/// A file's identity for cycle detection: its canonical path (symlinks and `..` resolved), or
/// the path as given if it cannot be canonicalized.
fn identity(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

// ---------------------------------------------------------------------------------------------
// config/plugins

/// One line of `config/plugins` (or `config/logging`, same format): `name [args...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLine {
    /// The instance name as written: `rcpt_ok`, `queue/maildir`, `relay:1`.
    pub name: String,
    /// The arguments, split on whitespace (qpsmtpd has no quoting).
    pub args: Vec<String>,
    /// The line, for errors about the plugin or its arguments.
    pub origin: ConfigLine,
}

impl PluginLine {
    /// The plugin's name without a `:N` instance suffix: `relay:1` gives `relay`.
    pub fn base_name(&self) -> &str {
        base_name(&self.name)
    }
}

fn base_name(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

/// Reads a plugin list (`plugins`, `logging`) in order. `Ok(empty)` if the file is missing.
///
/// Each line must be printable ASCII (spaces and tabs separate words). The name is
/// `[A-Za-z0-9_/.-]+`, optionally followed by `:N` (digits) to load another instance of the
/// same plugin with its own arguments. qpsmtpd's Perl module names (`My::Plugin`) have no
/// meaning here and are refused.
pub fn plugin_lines(cfg: &dyn ConfigSource, file: &str) -> Result<Vec<PluginLine>, ConfigError> {
    let Some(lines) = cfg.lines(file)? else {
        return Ok(Vec::new());
    };
    lines.into_iter().map(parse_plugin_line).collect()
}

fn parse_plugin_line(origin: ConfigLine) -> Result<PluginLine, ConfigError> {
    if let Some(bad) = origin
        .text
        .chars()
        .find(|&c| !(c == ' ' || c == '\t' || c.is_ascii_graphic()))
    {
        return Err(origin.error(format!(
            "a plugin line must be printable ASCII, found {bad:?}"
        )));
    }
    let mut words = origin.text.split_whitespace();
    // Config lines are trimmed and never empty, so there is a first word; be safe anyway.
    let name = words.next().unwrap_or_default().to_string();
    if let Err(reason) = check_plugin_name(&name) {
        return Err(origin.error(reason));
    }
    let args = words.map(str::to_string).collect();
    Ok(PluginLine { name, args, origin })
}

fn check_plugin_name(name: &str) -> Result<(), String> {
    let valid_base = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'/' | b'.' | b'-'))
    };
    let ok = match name.split_once(':') {
        None => valid_base(name),
        Some((base, n)) => {
            valid_base(base) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        }
    };
    if ok {
        return Ok(());
    }
    let hint = if name.contains("::") {
        " (Perl module plugins are not supported)"
    } else {
        ""
    };
    Err(format!(
        "invalid plugin name '{name}': expected letters, digits, '_', '/', '.', '-', \
         optionally followed by ':N'{hint}"
    ))
}

// ---------------------------------------------------------------------------------------------
// The core's settings.

/// Default `databytes`: 50 MiB. qpsmtpd's default is unlimited; a production server needs a
/// bound, and 50 MiB is above what the big mailbox providers accept.
pub const DEFAULT_DATABYTES: u64 = 50 * 1024 * 1024;
/// Default idle timeout: 300 s, the server-side minimum of RFC 5321 §4.5.3.2.7. qpsmtpd's
/// 1200 s suited a process per connection; here an idle connection is cheap, but a bound still
/// sheds clients that went away without closing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default spool directory, relative to the working directory.
pub const DEFAULT_SPOOL_DIR: &str = "./spool";
/// Default `size_threshold`: 1 MiB. Most mail is far smaller and never touches the disk before
/// queueing; qpsmtpd's default 0 (always spool) costs a file per message.
pub const DEFAULT_SIZE_THRESHOLD: u64 = 1024 * 1024;
/// Default log level: info (6), so the per-connection and per-transaction summary lines are
/// written. qpsmtpd's default is 4 (warn).
pub const DEFAULT_LOGLEVEL: Level = Level::Info;
/// Default listen address: loopback only, unprivileged port. Safe to start anywhere; a
/// public listener is a deliberate `config/listen` line.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";
/// Default `listen_backlog`: 1024 connections queued per listening socket (one per worker
/// and listen address). At the few thousand connections a second one worker answers (served
/// or refused), a full queue is a fraction of a second of waiting; a deeper one only makes
/// clients wait longer before the same answer.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 1024;
/// Default recipients per message: 100, the minimum RFC 5321 §4.5.3.1.8 asks a server to buffer.
pub const DEFAULT_MAX_RCPTS: usize = 100;
/// Default (and minimum) command line length including CRLF: 512 (RFC 5321 §4.5.3.1.4).
pub const DEFAULT_MAX_LINE: usize = 512;
/// Default DATA line length limit including CRLF: 1 MiB. RFC 5321 §4.5.3.1.6 requires 1000;
/// real mail has longer lines (HTML without line breaks), qpsmtpd had no limit at all; 1 MiB
/// is generous and still bounds memory.
pub const DEFAULT_DATA_LINE_LENGTH: usize = 1024 * 1024;
/// Default number of unknown commands before `421` and disconnect.
pub const DEFAULT_MAX_UNRECOGNIZED: u32 = 10;
/// Default number of error replies to commands before `421` and disconnect (Postfix's
/// `smtpd_hard_error_limit` default).
pub const DEFAULT_MAX_ERRORS: u32 = 20;
/// Default per-plugin timeout for a pending hook.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time to drain in-flight transactions on SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest reply text that fits a 512-byte reply line: `220 ` + text + CRLF
/// (RFC 5321 §4.5.3.1.5).
const MAX_REPLY_TEXT: usize = 512 - 4 - 2;

/// The core's settings, read from the config directory and validated. See `docs/config.md`.
///
/// A file that is missing, or has only comments, gives the default. Single-value files must
/// have exactly one value (qpsmtpd silently used the first; a second value is a mistake we
/// report).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `me`: this host's name, for the banner, the EHLO reply, Received and QUIT. Default: the
    /// system host name, `localhost` if it cannot be had. Printable ASCII, no spaces.
    pub me: String,
    /// `smtpgreeting`: the `220` banner text. Default `<me> ESMTP ringsmtpd ready`. As in
    /// qpsmtpd, ` ESMTP` is appended when the text lacks the word `ESMTP` (clients look for it).
    pub smtpgreeting: String,
    /// `databytes`: maximum message size in bytes, advertised as `SIZE`. `0` means unlimited
    /// (qmail and qpsmtpd meaning). Default when the file is absent: 50 MiB
    /// ([`DEFAULT_DATABYTES`]), not unlimited as in qpsmtpd.
    pub databytes: u64,
    /// `timeoutsmtpd` (the qmail name, checked first), else `timeout`: idle timeout waiting
    /// for a client command, seconds, 1..=86400. Default 300 ([`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// `timeout_data`: idle timeout while receiving DATA, seconds, 1..=86400. Default: the
    /// same as `timeout` (RFC 5321 §4.5.3.2 gives the client 10 min for the DATA
    /// termination; the server side is ours to choose).
    pub data_timeout: Duration,
    /// `spool_dir`: where message bodies above `size_threshold` are written. Default
    /// `./spool`; a relative path is relative to the working directory.
    pub spool_dir: PathBuf,
    /// `size_threshold`: bytes of a message kept in memory before it is spooled to disk,
    /// 0..=1 GiB (0 = always spool, qpsmtpd's default). Default 1 MiB.
    pub size_threshold: u64,
    /// `loglevel`: log lines at or below this level are written; a number 0..=7 or a name
    /// (`info`, `LOGINFO`). Default 6, info ([`DEFAULT_LOGLEVEL`]); qpsmtpd's is 4.
    pub loglevel: Level,
    /// `listen`: one address per line, `ADDR:PORT [proxy] [tls]` (see [`ListenSpec::parse`]).
    /// Default `127.0.0.1:2525`. New in ringsmtpd (qpsmtpd took it on the command line).
    pub listen: Vec<ListenSpec>,
    /// `max_connections`: connections open at once in this process, 1..=10000000; the next
    /// one gets `421 4.3.2` and is closed (see `crate::admission`). `None` (no file): the
    /// open-file limit less a reserve.
    pub max_connections: Option<usize>,
    /// `listen_backlog`: connections the kernel queues per listening socket before the
    /// server accepts them, 1..=65535 (capped by `net.core.somaxconn`). Default
    /// [`DEFAULT_LISTEN_BACKLOG`]. Beyond it the kernel drops SYNs.
    pub listen_backlog: u32,
    /// `max_rcpts`: recipients per message, 1..=100000; the next `RCPT` gets
    /// `452 4.5.3`. Default 100.
    pub max_rcpts: usize,
    /// `max_line_length`: longest command line including CRLF, 512..=65536. Default 512.
    pub max_line: usize,
    /// `data_line_length`: longest DATA line including CRLF, 1000..=16 MiB. Default 1 MiB.
    pub data_line_length: usize,
    /// `max_unrecognized`: unknown commands in a session before `421` and disconnect,
    /// 1..=1000. Default 10. (qpsmtpd did this in the `count_unrecognized_commands` plugin.)
    pub max_unrecognized: u32,
    /// `max_errors`: error replies to commands (syntax errors, bad sequence, denied
    /// commands) in a session before `421` and disconnect, 1..=1000. Default 20.
    pub max_errors: u32,
    /// `bare_newline`: `reject` (default) refuses a bare CR or LF in commands and DATA, so the
    /// server is never an SMTP smuggling vector; `accept-normalize` turns them into CRLF.
    pub bare_newline: BareNewlinePolicy,
    /// `plugin_timeout`: how long a pending hook may take, seconds, 1..=3600; on expiry the
    /// client gets a temporary failure. Default 30.
    pub plugin_timeout: Duration,
    /// `shutdown_timeout`: seconds to drain in-flight transactions on SIGTERM, 0..=3600
    /// (0: close at once). Default 30.
    pub shutdown_timeout: Duration,
    /// `dns_servers`: the upstream resolvers, one `IP[:port]` per line (IPv6 with a port in
    /// brackets: `[::1]:5353`), tried in order. Default: the `nameserver` lines of
    /// `/etc/resolv.conf`, else `127.0.0.1`. See `docs/dns.md`.
    pub dns_servers: Vec<SocketAddr>,
    /// `dns_timeout`: seconds one DNS try waits for its answer, 1..=60. Default 5.
    pub dns_timeout: Duration,
    /// `dns_retries`: DNS tries after the first, each to the next upstream, 0..=10. Default 2.
    pub dns_retries: u32,
    /// `dns_cache_size`: DNS answers cached per worker, 0..=10000000 (0: no cache). Default
    /// 10000.
    pub dns_cache_size: usize,
    /// `state_store`: the state store plugins share (`embedded`, the default, or `redis`);
    /// see [`crate::store::settings::StoreConfig`] and `docs/config.md`.
    pub store: crate::store::settings::StoreConfig,
}

/// What to do with a bare CR or LF (config `bare_newline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareNewlinePolicy {
    /// Refuse the command or message (the default).
    Reject,
    /// Accept and rewrite the line ending to CRLF.
    Normalize,
}

/// One listening socket (config `listen`, command line `--listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub addr: SocketAddr,
    /// Expect a PROXY protocol (v1 or v2) header before SMTP.
    pub proxy: bool,
    /// Implicit TLS (SMTPS, RFC 8314): the TLS handshake comes before the banner.
    pub tls: bool,
}

impl ListenSpec {
    /// Parses `ADDR:PORT [proxy] [tls]`. `ADDR` is an IPv4 address, an IPv6 address in
    /// brackets (`[::1]:25`), or `*` for every address: `*` gives two specs, `0.0.0.0` and
    /// `[::]`, and the IPv6 socket is expected to be bound with `IPV6_V6ONLY` so the two do
    /// not collide. `PORT` is 1..=65535 (port 0 would give each worker a different port).
    /// Host names are refused: a listener binds addresses.
    pub fn parse(s: &str) -> Result<Vec<ListenSpec>, String> {
        let mut words = s.split_whitespace();
        let Some(addr) = words.next() else {
            return Err("empty listen address".into());
        };
        let (mut proxy, mut tls) = (false, false);
        for w in words {
            let flag = match w {
                "proxy" => &mut proxy,
                "tls" => &mut tls,
                _ => {
                    return Err(format!(
                        "unknown listen option '{w}' (expected 'proxy' or 'tls')"
                    ))
                }
            };
            if *flag {
                return Err(format!("listen option '{w}' given twice"));
            }
            *flag = true;
        }
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Err(format!("'{addr}' is not ADDR:PORT"));
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(format!("bad port '{port}' in '{addr}' (expected 1-65535)")),
        };
        let ips: Vec<IpAddr> = if host == "*" {
            vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ]
        } else if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let ip = inner
                .parse::<Ipv6Addr>()
                .map_err(|_| format!("'{inner}' is not an IPv6 address"))?;
            vec![IpAddr::V6(ip)]
        } else if host.contains(':') {
            return Err(format!(
                "'{addr}': an IPv6 address must be in brackets, as [::1]:25"
            ));
        } else {
            let ip = host
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("'{host}' is not an IPv4 address, [IPv6] or '*'"))?;
            vec![IpAddr::V4(ip)]
        };
        Ok(ips
            .into_iter()
            .map(|ip| ListenSpec {
                addr: SocketAddr::new(ip, port),
                proxy,
                tls,
            })
            .collect())
    }
}

impl Settings {
    /// Reads and validates every core setting. The first bad value gives a `file:line: reason`
    /// error.
    pub fn load(cfg: &dyn ConfigSource) -> Result<Settings, ConfigError> {
        let me = match single(cfg, "me")? {
            None => system_hostname(),
            Some(l) => {
                if !is_host_text(&l.text) {
                    return Err(l.error(format!(
                        "not a host name (printable ASCII without spaces, at most 255 \
                         characters): '{}'",
                        l.text
                    )));
                }
                l.text
            }
        };

        let smtpgreeting = match single(cfg, "smtpgreeting")? {
            None => format!("{me} ESMTP ringsmtpd ready"),
            Some(l) => {
                if let Some(c) = l
                    .text
                    .chars()
                    .find(|&c| !(c == ' ' || c.is_ascii_graphic()))
                {
                    return Err(
                        l.error(format!("the greeting must be printable ASCII, found {c:?}"))
                    );
                }
                let mut text = l.text.clone();
                if !has_word(&text, "ESMTP") {
                    text.push_str(" ESMTP");
                }
                if text.len() > MAX_REPLY_TEXT {
                    return Err(l.error(format!(
                        "the greeting is too long ({} characters, at most {MAX_REPLY_TEXT} \
                         with ' ESMTP')",
                        text.len()
                    )));
                }
                text
            }
        };

        let databytes = number(cfg, "databytes", 0, u64::MAX)?.unwrap_or(DEFAULT_DATABYTES);

        let timeout = match number(cfg, "timeoutsmtpd", 1, 86_400)? {
            Some(t) => Some(t),
            None => number(cfg, "timeout", 1, 86_400)?,
        }
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
        let data_timeout = number(cfg, "timeout_data", 1, 86_400)?
            .map(Duration::from_secs)
            .unwrap_or(timeout);

        let spool_dir = single(cfg, "spool_dir")?
            .map(|l| PathBuf::from(l.text))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL_DIR));
        let size_threshold =
            number(cfg, "size_threshold", 0, 1 << 30)?.unwrap_or(DEFAULT_SIZE_THRESHOLD);

        let loglevel = match single(cfg, "loglevel")? {
            None => DEFAULT_LOGLEVEL,
            Some(l) => parse_level(&l.text).ok_or_else(|| {
                l.error(format!(
                    "not a log level (0-7 or a name such as 'info'): '{}'",
                    l.text
                ))
            })?,
        };

        let listen = match cfg.lines("listen")? {
            Some(lines) if !lines.is_empty() => {
                let mut specs: Vec<ListenSpec> = Vec::new();
                let mut seen = HashSet::new();
                for l in &lines {
                    for spec in ListenSpec::parse(&l.text).map_err(|r| l.error(r))? {
                        if !seen.insert(spec.addr) {
                            return Err(l.error(format!("{} is listed twice", spec.addr)));
                        }
                        specs.push(spec);
                    }
                }
                specs
            }
            _ => ListenSpec::parse(DEFAULT_LISTEN).map_err(|reason| ConfigError {
                file: "listen".into(),
                line: 0,
                reason,
            })?,
        };

        let max_connections = number(cfg, "max_connections", 1, 10_000_000)?
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let listen_backlog = number(cfg, "listen_backlog", 1, 65_535)?
            .map_or(DEFAULT_LISTEN_BACKLOG, |n| {
                u32::try_from(n).unwrap_or(u32::MAX)
            });
        let max_rcpts = usize_setting(cfg, "max_rcpts", 1, 100_000, DEFAULT_MAX_RCPTS)?;
        let max_line = usize_setting(cfg, "max_line_length", 512, 65_536, DEFAULT_MAX_LINE)?;
        let data_line_length = usize_setting(
            cfg,
            "data_line_length",
            1000,
            16 << 20,
            DEFAULT_DATA_LINE_LENGTH,
        )?;
        let max_unrecognized =
            u32_setting(cfg, "max_unrecognized", 1, 1000, DEFAULT_MAX_UNRECOGNIZED)?;
        let max_errors = u32_setting(cfg, "max_errors", 1, 1000, DEFAULT_MAX_ERRORS)?;

        let bare_newline = match single(cfg, "bare_newline")? {
            None => BareNewlinePolicy::Reject,
            Some(l) => match l.text.as_str() {
                "reject" => BareNewlinePolicy::Reject,
                "accept-normalize" => BareNewlinePolicy::Normalize,
                other => {
                    return Err(l.error(format!(
                        "must be 'reject' or 'accept-normalize', not '{other}'"
                    )))
                }
            },
        };

        let plugin_timeout = number(cfg, "plugin_timeout", 1, 3600)?
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_PLUGIN_TIMEOUT);
        let shutdown_timeout = number(cfg, "shutdown_timeout", 0, 3600)?
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);

        let dns_servers = match cfg.lines("dns_servers")? {
            Some(lines) if !lines.is_empty() => {
                let mut servers: Vec<SocketAddr> = Vec::new();
                for l in &lines {
                    let addr = crate::dns::parse_server(&l.text).map_err(|r| l.error(r))?;
                    if servers.contains(&addr) {
                        return Err(l.error(format!("{addr} is listed twice")));
                    }
                    servers.push(addr);
                }
                servers
            }
            _ => crate::dns::default_servers(),
        };
        let dns_timeout = number(cfg, "dns_timeout", 1, 60)?
            .map(Duration::from_secs)
            .unwrap_or(crate::dns::DEFAULT_DNS_TIMEOUT);
        let dns_retries = u32_setting(cfg, "dns_retries", 0, 10, crate::dns::DEFAULT_DNS_RETRIES)?;
        let dns_cache_size = usize_setting(
            cfg,
            "dns_cache_size",
            0,
            10_000_000,
            crate::dns::DEFAULT_DNS_CACHE_SIZE,
        )?;

        Ok(Settings {
            me,
            smtpgreeting,
            databytes,
            timeout,
            data_timeout,
            spool_dir,
            size_threshold,
            loglevel,
            listen,
            max_connections,
            listen_backlog,
            max_rcpts,
            max_line,
            data_line_length,
            max_unrecognized,
            max_errors,
            bare_newline,
            plugin_timeout,
            shutdown_timeout,
            dns_servers,
            dns_timeout,
            dns_retries,
            dns_cache_size,
            store: crate::store::settings::StoreConfig::load(cfg)?,
        })
    }

    /// The resolver's configuration from the `dns_*` settings.
    pub fn resolver_config(&self) -> ResolverConfig {
        ResolverConfig {
            servers: self.dns_servers.clone(),
            timeout: self.dns_timeout,
            retries: self.dns_retries,
            cache_size: self.dns_cache_size,
            ..ResolverConfig::new(Vec::new())
        }
    }
}

/// The single value of `name`; an error if the file has more than one.
pub(crate) fn single(
    cfg: &dyn ConfigSource,
    name: &str,
) -> Result<Option<ConfigLine>, ConfigError> {
    let Some(mut lines) = cfg.lines(name)? else {
        return Ok(None);
    };
    if let Some(extra) = lines.get(1) {
        return Err(extra.error(format!(
            "'{name}' takes one value; the first is at {}:{}",
            lines[0].file, lines[0].line
        )));
    }
    Ok(lines.pop())
}

/// The single value of `name` as a decimal number in `min..=max`.
fn number(
    cfg: &dyn ConfigSource,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ConfigError> {
    let Some(l) = single(cfg, name)? else {
        return Ok(None);
    };
    if l.text.is_empty() || !l.text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(l.error(format!("not a number: '{}'", l.text)));
    }
    match l.text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(l.error(format!("out of range: {} (must be {min} to {max})", l.text))),
    }
}

fn usize_setting(
    cfg: &dyn ConfigSource,
    name: &str,
    min: usize,
    max: usize,
    default: usize,
) -> Result<usize, ConfigError> {
    // The bounds fit in u32, so the conversions below cannot fail; fall back to the default
    // rather than panic if they ever did.
    Ok(number(cfg, name, min as u64, max as u64)?
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(default))
}

fn u32_setting(
    cfg: &dyn ConfigSource,
    name: &str,
    min: u32,
    max: u32,
    default: u32,
) -> Result<u32, ConfigError> {
    Ok(number(cfg, name, min.into(), max.into())?
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(default))
}

/// A level number 0..=7 or a name; numbers out of range are refused (the API's
/// `Level::parse` would clamp them).
fn parse_level(s: &str) -> Option<Level> {
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'-' || b == b'+')
    {
        return match s.parse::<i32>() {
            Ok(n) if (0..=7).contains(&n) => Some(Level::from_number(n)),
            _ => None,
        };
    }
    Level::parse(s)
}

/// True if `word` occurs in `text` with no word character (alphanumeric or `_`) on either
/// side: qpsmtpd's `/(^|\W)ESMTP(\W|$)/`.
fn has_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Printable ASCII without spaces, 1..=255 bytes: fit for the banner and Received.
fn is_host_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The system's host name (`gethostname(2)`), or `localhost` if it fails or is not a usable
/// host name.
pub fn system_hostname() -> String {
    // POSIX limits host names to 255 bytes; one more for the terminating NUL.
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is a live, writable array of `buf.len()` bytes, and gethostname writes at
    // most `len` bytes into the buffer it is given. `c_char` and `u8` have the same size and
    // alignment, so the pointer cast is valid. Nothing else aliases `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast::<libc::c_char>(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    // Without a NUL the name may have been truncated: not trustworthy.
    let Some(end) = buf.iter().position(|&b| b == 0) else {
        return "localhost".into();
    };
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if is_host_text(name) => name.to_string(),
        _ => "localhost".into(),
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "ringsmtpd-config-{}-{}-{tag}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
        fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
            let p = self.0.join(name);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).unwrap();
            }
            fs::write(&p, content).unwrap();
            p
        }
        fn cfg(&self) -> ConfigDir {
            ConfigDir::with_fallback(&self.0, None)
        }
        fn shown(&self, name: &str) -> String {
            self.0.join(name).display().to_string()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn texts(cfg: &dyn ConfigSource, name: &str) -> Vec<String> {
        cfg.lines(name)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|l| l.text)
            .collect()
    }

    fn err(cfg: &dyn ConfigSource, name: &str) -> ConfigError {
        cfg.lines(name).unwrap_err()
    }

    // --- file format ---

    #[test]
    fn comments_blank_lines_and_trim() {
        let t = TempDir::new("format");
        t.write(
            "rcpthosts",
            "# comment\n\n  example.org  \n\t# indented comment\r\nexample.net\r\n  \nlast # not a comment",
        );
        let cfg = t.cfg();
        let lines = cfg.lines("rcpthosts").unwrap().unwrap();
        let got: Vec<_> = lines.iter().map(|l| (l.text.as_str(), l.line)).collect();
        assert_eq!(
            got,
            vec![
                ("example.org", 3),
                ("example.net", 5),
                ("last # not a comment", 7)
            ]
        );
        assert_eq!(lines[0].file, t.shown("rcpthosts"));
        assert_eq!(cfg.first("rcpthosts").unwrap().unwrap().text, "example.org");
    }

    #[test]
    fn missing_file_is_none_and_empty_file_is_empty() {
        let t = TempDir::new("missing");
        t.write("empty", "# only a comment\n\n");
        let cfg = t.cfg();
        assert_eq!(cfg.lines("nothere").unwrap(), None);
        assert_eq!(cfg.first("nothere").unwrap(), None);
        assert_eq!(cfg.lines("empty").unwrap(), Some(vec![]));
        assert_eq!(cfg.first("empty").unwrap(), None);
    }

    #[test]
    fn byte_order_mark_is_dropped() {
        let t = TempDir::new("bom");
        t.write("me", "\u{feff}mx.example.org\n");
        assert_eq!(texts(&t.cfg(), "me"), vec!["mx.example.org"]);
    }

    #[test]
    fn results_are_cached() {
        let t = TempDir::new("cache");
        t.write("me", "one\n");
        let cfg = t.cfg();
        assert_eq!(texts(&cfg, "me"), vec!["one"]);
        t.write("me", "two\n");
        assert_eq!(texts(&cfg, "me"), vec!["one"]);
        assert_eq!(texts(&t.cfg(), "me"), vec!["two"]);
    }

    #[test]
    fn config_dir_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ConfigDir>();
    }

    #[test]
    fn non_utf8_file_is_an_error_with_line() {
        let t = TempDir::new("utf8");
        t.write("badmailfrom", b"ok@example.org\nbad\xff@example.org\n");
        let e = err(&t.cfg(), "badmailfrom");
        assert_eq!(e.file, t.shown("badmailfrom"));
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("UTF-8"), "{e}");
    }

    #[test]
    fn directory_as_config_file_is_an_error() {
        let t = TempDir::new("isdir");
        fs::create_dir(t.path().join("plugins")).unwrap();
        let e = err(&t.cfg(), "plugins");
        assert_eq!(e.line, 0);
        assert!(e.reason.contains("directory"), "{e}");
    }

    #[test]
    fn absolute_config_name_is_refused() {
        let t = TempDir::new("absname");
        assert!(t.cfg().lines("/etc/passwd").is_err());
        assert!(t.cfg().lines("").is_err());
    }

    // --- $include ---

    #[test]
    fn include_file() {
        let t = TempDir::new("incfile");
        t.write("rcpthosts", "a.example\n$include more\nc.example\n");
        t.write("more", "# comment\nb1.example\nb2.example\n");
        let cfg = t.cfg();
        let lines = cfg.lines("rcpthosts").unwrap().unwrap();
        let got: Vec<_> = lines
            .iter()
            .map(|l| (l.text.as_str(), l.file.clone(), l.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.example", t.shown("rcpthosts"), 1),
                ("b1.example", t.shown("more"), 2),
                ("b2.example", t.shown("more"), 3),
                ("c.example", t.shown("rcpthosts"), 3),
            ]
        );
    }

    #[test]
    fn include_absolute_path() {
        let t = TempDir::new("incabs");
        let other = TempDir::new("incabs-other");
        let p = other.write("list", "x\n");
        t.write("rcpthosts", format!("$include {}\n", p.display()));
        assert_eq!(texts(&t.cfg(), "rcpthosts"), vec!["x"]);
    }

    #[test]
    fn include_directory_sorted_without_dotfiles() {
        let t = TempDir::new("incdir");
        t.write("rcpthosts", "first\n$include rcpthosts.d\nlast\n");
        t.write("rcpthosts.d/b", "b\n");
        t.write("rcpthosts.d/a", "a1\na2\n");
        t.write("rcpthosts.d/c", "c\n");
        t.write("rcpthosts.d/.hidden", "hidden\n");
        t.write("rcpthosts.d/.swp", "swap\n");
        fs::create_dir(t.path().join("rcpthosts.d/subdir")).unwrap();
        let cfg = t.cfg();
        assert_eq!(
            texts(&cfg, "rcpthosts"),
            vec!["first", "a1", "a2", "b", "c", "last"]
        );
        let lines = cfg.lines("rcpthosts").unwrap().unwrap();
        assert_eq!(lines[2].file, t.shown("rcpthosts.d/a"));
        assert_eq!(lines[2].line, 2);
    }

    #[test]
    fn nested_include() {
        let t = TempDir::new("nested");
        t.write("top", "1\n$include mid\n5\n");
        t.write("mid", "2\n$include bottom\n4\n");
        t.write("bottom", "3\n");
        assert_eq!(texts(&t.cfg(), "top"), vec!["1", "2", "3", "4", "5"]);
    }

    #[test]
    fn same_file_twice_is_not_a_cycle() {
        let t = TempDir::new("twice");
        t.write("top", "$include common\n$include common\n");
        t.write("common", "x\n");
        assert_eq!(texts(&t.cfg(), "top"), vec!["x", "x"]);
    }

    #[test]
    fn circular_include_names_the_include_line() {
        let t = TempDir::new("circular");
        t.write("a", "x\n$include b\n");
        t.write("b", "y\n\n$include a\n");
        let e = err(&t.cfg(), "a");
        assert_eq!(e.file, t.shown("b"));
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("circular"), "{e}");

        t.write("self", "# me\n$include self\n");
        let e = err(&t.cfg(), "self");
        assert_eq!((e.file.clone(), e.line), (t.shown("self"), 2));
    }

    #[test]
    fn circular_include_through_directory() {
        let t = TempDir::new("circdir");
        t.write("top", "$include top.d\n");
        t.write("top.d/x", "$include top\n");
        let e = err(&t.cfg(), "top");
        assert_eq!((e.file.clone(), e.line), (t.shown("top.d/x"), 1));
    }

    #[test]
    fn missing_include_is_an_error() {
        let t = TempDir::new("incmissing");
        t.write("rcpthosts", "a\n\n$include nothere\n");
        let e = err(&t.cfg(), "rcpthosts");
        assert_eq!((e.file.clone(), e.line), (t.shown("rcpthosts"), 3));
        assert!(e.reason.contains("nothere"), "{e}");

        t.write("abs", "$include /nonexistent/ringsmtpd/x\n");
        assert_eq!(err(&t.cfg(), "abs").line, 1);
    }

    #[test]
    fn malformed_include_lines() {
        let t = TempDir::new("incbad");
        t.write("noarg", "$include\n");
        t.write("twoargs", "x\n$include a b\n");
        t.write("plain", "$includes\n");
        assert_eq!(err(&t.cfg(), "noarg").line, 1);
        assert_eq!(err(&t.cfg(), "twoargs").line, 2);
        assert_eq!(texts(&t.cfg(), "plain"), vec!["$includes"]);
    }

    #[test]
    fn error_in_included_file_points_there() {
        let t = TempDir::new("incerr");
        t.write("top", "$include sub\n");
        t.write("sub", b"ok\n\xfe\n");
        let e = err(&t.cfg(), "top");
        assert_eq!((e.file.clone(), e.line), (t.shown("sub"), 2));
    }

    // --- qmail fallback ---

    #[test]
    fn qmail_fallback() {
        let primary = TempDir::new("primary");
        let control = TempDir::new("control");
        control.write("rcpthosts", "from-control\n");
        control.write("me", "control.example\n");
        control.write("list", "l1\n");
        primary.write("me", "primary.example\n");
        primary.write("inc", "$include list\n");
        let cfg = ConfigDir::with_fallback(primary.path(), Some(control.path().to_path_buf()));
        assert_eq!(cfg.dir(), primary.path());
        assert_eq!(cfg.fallback(), Some(control.path()));
        assert_eq!(texts(&cfg, "me"), vec!["primary.example"]);
        let l = cfg.first("rcpthosts").unwrap().unwrap();
        assert_eq!(l.text, "from-control");
        assert_eq!(l.file, control.shown("rcpthosts"));
        // A relative include goes through the same lookup.
        assert_eq!(texts(&cfg, "inc"), vec!["l1"]);
        assert_eq!(cfg.lines("nowhere").unwrap(), None);
    }

    #[test]
    fn new_uses_qmail_control() {
        let cfg = ConfigDir::new("config");
        assert_eq!(cfg.dir(), Path::new("config"));
        let expected = match std::env::var_os("QMAIL") {
            Some(q) if !q.is_empty() => PathBuf::from(q).join("control"),
            _ => PathBuf::from("/var/qmail/control"),
        };
        assert_eq!(cfg.fallback(), Some(expected.as_path()));
    }

    // --- plugins ---

    #[test]
    fn plugin_lines_with_args_and_instances() {
        let t = TempDir::new("plugins");
        t.write(
            "plugins",
            "# comment\nhosts_allow\nrelay:0 only_localhost\nrelay:1\tfoo  bar\nqueue/maildir /var/mail/%u\ndnsbl reject naughty\n",
        );
        let cfg = t.cfg();
        let p = plugin_lines(&cfg, "plugins").unwrap();
        let got: Vec<_> = p
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.base_name(),
                    l.args.clone(),
                    l.origin.line,
                )
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                ("hosts_allow", "hosts_allow", s(&[]), 2),
                ("relay:0", "relay", s(&["only_localhost"]), 3),
                ("relay:1", "relay", s(&["foo", "bar"]), 4),
                ("queue/maildir", "queue/maildir", s(&["/var/mail/%u"]), 5),
                ("dnsbl", "dnsbl", s(&["reject", "naughty"]), 6),
            ]
        );
        assert_eq!(p[1].origin.file, t.shown("plugins"));
        assert_eq!(plugin_lines(&cfg, "logging").unwrap(), vec![]);
    }

    #[test]
    fn invalid_plugin_lines() {
        for (i, bad) in [
            "My::Plugin",
            "relay:",
            "relay:x",
            "relay:1:2",
            ":1",
            "bad$name",
            "caf\u{e9}",
            "plugin arg\u{7f}",
            "plugin ärg",
        ]
        .iter()
        .enumerate()
        {
            let t = TempDir::new(&format!("badplugin{i}"));
            t.write("plugins", format!("rcpt_ok\n\n{bad}\n"));
            let e = plugin_lines(&t.cfg(), "plugins").unwrap_err();
            assert_eq!(
                (e.file.clone(), e.line),
                (t.shown("plugins"), 3),
                "{bad}: {e}"
            );
        }
    }

    // --- settings ---

    #[test]
    fn settings_defaults() {
        let t = TempDir::new("defaults");
        let s = Settings::load(&t.cfg()).unwrap();
        let me = system_hostname();
        assert!(!me.is_empty());
        assert_eq!(
            s,
            Settings {
                me: me.clone(),
                smtpgreeting: format!("{me} ESMTP ringsmtpd ready"),
                databytes: 52_428_800,
                timeout: Duration::from_secs(300),
                data_timeout: Duration::from_secs(300),
                spool_dir: PathBuf::from("./spool"),
                size_threshold: 1_048_576,
                loglevel: Level::Info,
                listen: vec![ListenSpec {
                    addr: "127.0.0.1:2525".parse().unwrap(),
                    proxy: false,
                    tls: false
                }],
                max_connections: None,
                listen_backlog: 1024,
                max_rcpts: 100,
                max_line: 512,
                data_line_length: 1_048_576,
                max_unrecognized: 10,
                max_errors: 20,
                bare_newline: BareNewlinePolicy::Reject,
                plugin_timeout: Duration::from_secs(30),
                shutdown_timeout: Duration::from_secs(30),
                dns_servers: crate::dns::default_servers(),
                dns_timeout: Duration::from_secs(5),
                dns_retries: 2,
                dns_cache_size: 10_000,
                store: crate::store::settings::StoreConfig::default(),
            }
        );
    }

    #[test]
    fn settings_every_file() {
        let t = TempDir::new("allfiles");
        for (name, value) in [
            ("me", "mx.example.org"),
            ("smtpgreeting", "mx.example.org ESMTP welcome"),
            ("databytes", "1000000"),
            ("timeout", "900"),
            ("timeout_data", "600"),
            ("spool_dir", "/var/spool/ringsmtpd"),
            ("size_threshold", "0"),
            ("loglevel", "7"),
            ("listen", "*:25\n[::1]:587 tls\n127.0.0.1:10025 proxy tls"),
            ("max_connections", "2000"),
            ("listen_backlog", "128"),
            ("max_rcpts", "500"),
            ("max_line_length", "4096"),
            ("data_line_length", "1000"),
            ("max_unrecognized", "3"),
            ("max_errors", "5"),
            ("bare_newline", "accept-normalize"),
            ("plugin_timeout", "10"),
            ("shutdown_timeout", "0"),
            ("dns_servers", "192.0.2.53\n[2001:db8::53]:5353"),
            ("dns_timeout", "2"),
            ("dns_retries", "0"),
            ("dns_cache_size", "0"),
            (
                "state_store",
                "embedded dir /var/lib/ringsmtpd max_entries 50",
            ),
        ] {
            t.write(name, format!("# {name}\n{value}\n"));
        }
        let s = Settings::load(&t.cfg()).unwrap();
        let spec = |a: &str, proxy, tls| ListenSpec {
            addr: a.parse().unwrap(),
            proxy,
            tls,
        };
        assert_eq!(
            s,
            Settings {
                me: "mx.example.org".into(),
                smtpgreeting: "mx.example.org ESMTP welcome".into(),
                databytes: 1_000_000,
                timeout: Duration::from_secs(900),
                data_timeout: Duration::from_secs(600),
                spool_dir: PathBuf::from("/var/spool/ringsmtpd"),
                size_threshold: 0,
                loglevel: Level::Debug,
                listen: vec![
                    spec("0.0.0.0:25", false, false),
                    spec("[::]:25", false, false),
                    spec("[::1]:587", false, true),
                    spec("127.0.0.1:10025", true, true),
                ],
                max_connections: Some(2000),
                listen_backlog: 128,
                max_rcpts: 500,
                max_line: 4096,
                data_line_length: 1000,
                max_unrecognized: 3,
                max_errors: 5,
                bare_newline: BareNewlinePolicy::Normalize,
                plugin_timeout: Duration::from_secs(10),
                shutdown_timeout: Duration::ZERO,
                dns_servers: vec![
                    "192.0.2.53:53".parse().unwrap(),
                    "[2001:db8::53]:5353".parse().unwrap()
                ],
                dns_timeout: Duration::from_secs(2),
                dns_retries: 0,
                dns_cache_size: 0,
                store: crate::store::settings::StoreConfig::Embedded {
                    dir: "/var/lib/ringsmtpd".into(),
                    max_entries: 50,
                },
            }
        );
    }

    #[test]
    fn settings_special_cases() {
        let t = TempDir::new("special");
        t.write("me", "mx.example.org");
        t.write("smtpgreeting", "Hello there");
        t.write("timeout", "900");
        t.write("timeoutsmtpd", "120");
        t.write("databytes", "0");
        t.write("loglevel", "LOGNOTICE");
        t.write("listen", "# nothing yet\n");
        let s = Settings::load(&t.cfg()).unwrap();
        assert_eq!(s.smtpgreeting, "Hello there ESMTP");
        // timeoutsmtpd wins over timeout, and timeout_data follows it.
        assert_eq!(s.timeout, Duration::from_secs(120));
        assert_eq!(s.data_timeout, Duration::from_secs(120));
        assert_eq!(s.databytes, 0, "0 keeps qpsmtpd's meaning: unlimited");
        assert_eq!(s.loglevel, Level::Notice);
        assert_eq!(s.listen, ListenSpec::parse(DEFAULT_LISTEN).unwrap());
        // The default greeting uses the configured `me`.
        fs::remove_file(t.path().join("smtpgreeting")).unwrap();
        assert_eq!(
            Settings::load(&t.cfg()).unwrap().smtpgreeting,
            "mx.example.org ESMTP ringsmtpd ready"
        );
        // "ESMTP" must be a word of its own to count.
        t.write("smtpgreeting", "mx ESMTPX ready");
        assert_eq!(
            Settings::load(&t.cfg()).unwrap().smtpgreeting,
            "mx ESMTPX ready ESMTP"
        );
        t.write("smtpgreeting", "mx (ESMTP) ready");
        assert_eq!(
            Settings::load(&t.cfg()).unwrap().smtpgreeting,
            "mx (ESMTP) ready"
        );
    }

    #[test]
    fn settings_bad_values_name_file_and_line() {
        let long_greeting = "g".repeat(MAX_REPLY_TEXT - 5);
        let long_me = "h".repeat(256);
        let cases: &[(&str, &str)] = &[
            ("me", "mx example"),
            ("me", "mx\u{e9}.example"),
            ("me", long_me.as_str()),
            ("smtpgreeting", "caf\u{e9} ESMTP"),
            ("smtpgreeting", long_greeting.as_str()),
            ("databytes", "10MB"),
            ("databytes", "-1"),
            ("databytes", "99999999999999999999999"),
            ("timeout", "0"),
            ("timeout", "86401"),
            ("timeout", "5m"),
            ("timeoutsmtpd", "x"),
            ("timeout_data", "0"),
            ("size_threshold", "2000000000"),
            ("loglevel", "8"),
            ("loglevel", "-1"),
            ("loglevel", "chatty"),
            ("listen", "localhost:25"),
            ("max_rcpts", "0"),
            ("max_rcpts", "many"),
            ("max_line_length", "511"),
            ("max_line_length", "65537"),
            ("data_line_length", "999"),
            ("max_unrecognized", "0"),
            ("max_errors", "1001"),
            ("bare_newline", "accept"),
            ("plugin_timeout", "0"),
            ("shutdown_timeout", "3601"),
            ("dns_servers", "resolver.example"),
            ("dns_servers", "192.0.2.53:0"),
            ("dns_servers", "2001:db8::53:53x"),
            ("dns_timeout", "0"),
            ("dns_timeout", "61"),
            ("dns_retries", "11"),
            ("dns_cache_size", "10000001"),
            ("dns_cache_size", "lots"),
        ];
        for (i, (name, value)) in cases.iter().enumerate() {
            let t = TempDir::new(&format!("bad{i}"));
            t.write(name, format!("# comment\n\n{value}\n"));
            let e = Settings::load(&t.cfg()).unwrap_err();
            assert_eq!(
                (e.file.clone(), e.line),
                (t.shown(name), 3),
                "{name} = {value:?}: {e}"
            );
        }

        let t = TempDir::new("badmsg");
        t.write("databytes", "10MB\n");
        let e = Settings::load(&t.cfg()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}:1: not a number: '10MB'", t.shown("databytes"))
        );
    }

    #[test]
    fn settings_second_value_is_an_error() {
        let t = TempDir::new("twovalues");
        t.write("databytes", "1000\n2000\n");
        let e = Settings::load(&t.cfg()).unwrap_err();
        assert_eq!((e.file.clone(), e.line), (t.shown("databytes"), 2));
    }

    #[test]
    fn settings_listen_errors() {
        let t = TempDir::new("listenbad");
        t.write("listen", "127.0.0.1:25\n[::1]:25\n127.0.0.1:25 tls\n");
        let e = Settings::load(&t.cfg()).unwrap_err();
        assert_eq!((e.file.clone(), e.line), (t.shown("listen"), 3));
        assert!(e.reason.contains("twice"), "{e}");

        t.write("listen", "*:25\n0.0.0.0:25\n");
        let e = Settings::load(&t.cfg()).unwrap_err();
        assert_eq!(e.line, 2);

        t.write("listen", "127.0.0.1:25\n127.0.0.1:26 starttls\n");
        let e = Settings::load(&t.cfg()).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("starttls"), "{e}");
    }

    #[test]
    fn settings_dns_servers() {
        let t = TempDir::new("dnsservers");
        t.write("dns_servers", "# upstreams\n127.0.0.1:5353\n\n::1\n");
        let s = Settings::load(&t.cfg()).unwrap();
        assert_eq!(
            s.dns_servers,
            vec![
                "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        // Only comments: the default (resolv.conf, else 127.0.0.1).
        t.write("dns_servers", "# none\n");
        let s = Settings::load(&t.cfg()).unwrap();
        assert_eq!(s.dns_servers, crate::dns::default_servers());
        assert!(!s.dns_servers.is_empty());
        t.write("dns_servers", "127.0.0.1\n127.0.0.2\n127.0.0.1:53\n");
        let e = Settings::load(&t.cfg()).unwrap_err();
        assert_eq!((e.file.clone(), e.line), (t.shown("dns_servers"), 3));
        assert!(e.reason.contains("twice"), "{e}");
        t.write("dns_servers", "127.0.0.1\nns1.example\n");
        let e = Settings::load(&t.cfg()).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("not an IP address"), "{e}");
    }

    #[test]
    fn listen_spec_parse() {
        let one = |s: &str| {
            let v = ListenSpec::parse(s).unwrap();
            assert_eq!(v.len(), 1, "{s}");
            v.into_iter().next().unwrap()
        };
        let v4 = one("192.0.2.1:25");
        assert_eq!(v4.addr, "192.0.2.1:25".parse().unwrap());
        assert!(!v4.proxy && !v4.tls);
        let v6 = one("[2001:db8::1]:587");
        assert_eq!(v6.addr, "[2001:db8::1]:587".parse().unwrap());
        let p = one("  127.0.0.1:2525   proxy  ");
        assert!(p.proxy && !p.tls);
        let both = one("[::1]:465 tls proxy");
        assert!(both.proxy && both.tls);

        let all = ListenSpec::parse("*:25 tls").unwrap();
        assert_eq!(
            all.iter().map(|s| s.addr).collect::<Vec<_>>(),
            vec![
                "0.0.0.0:25".parse::<SocketAddr>().unwrap(),
                "[::]:25".parse().unwrap()
            ]
        );
        assert!(all.iter().all(|s| s.tls && !s.proxy));

        for bad in [
            "",
            "   ",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:+25",
            "127.0.0.1:25x",
            "localhost:25",
            "::1:25",
            "[::1]",
            "[127.0.0.1]:25",
            "[fe80::1%eth0]:25",
            "256.0.0.1:25",
            "127.0.0.1:25 tls tls",
            "127.0.0.1:25 TLS",
            "127.0.0.1:25 starttls",
            "*:0",
        ] {
            assert!(ListenSpec::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn hostname_is_usable() {
        let h = system_hostname();
        assert!(is_host_text(&h), "{h:?}");
    }
}
