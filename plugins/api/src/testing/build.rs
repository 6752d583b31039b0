//! Building a plugin from its `config/plugins` line and config files in memory ([`build`]),
//! and checks of what a plugin refuses to build from.

use std::collections::HashMap;

use crate::context::Cx;
use crate::outcome::Outcome;
use crate::plugin::{ConfigError, ConfigLine, ConfigSource, PluginInit};

use super::services::cx;

/// A config directory in memory: file name -> contents (as the file would hold them).
#[derive(Default)]
pub struct MemConfig {
    pub files: HashMap<String, String>,
}

impl MemConfig {
    pub fn new(files: &[(&str, &str)]) -> MemConfig {
        MemConfig {
            files: files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl ConfigSource for MemConfig {
    fn lines(&self, name: &str) -> Result<Option<Vec<ConfigLine>>, ConfigError> {
        Ok(self.files.get(name).map(|text| {
            text.lines()
                .enumerate()
                .map(|(i, l)| (i, l.trim()))
                .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
                .map(|(i, l)| ConfigLine {
                    text: l.to_string(),
                    file: name.to_string(),
                    line: i as u32 + 1,
                })
                .collect()
        }))
    }
}

/// The `config/plugins` line a test plugin is built from.
pub fn origin(line: &str) -> ConfigLine {
    ConfigLine {
        text: line.to_string(),
        file: "plugins".to_string(),
        line: 1,
    }
}

/// Builds a plugin with `new` from its `config/plugins` line (`"badmailfrom reject 0"`: the
/// first word is the instance name) and config files in memory (name, contents). `new` may be
/// the registered factory or a constructor that returns the concrete type.
pub fn build<T>(
    new: impl FnOnce(&PluginInit<'_>) -> Result<T, ConfigError>,
    line: &str,
    files: &[(&str, &str)],
) -> Result<T, ConfigError> {
    let mut words = line.split_whitespace();
    let name = words
        .next()
        .expect("a plugin line starts with the plugin's name");
    build_args(new, name, &words.collect::<Vec<_>>(), files)
}

/// The error of a [`build`] that must fail.
pub fn build_err<T>(
    new: impl FnOnce(&PluginInit<'_>) -> Result<T, ConfigError>,
    line: &str,
    files: &[(&str, &str)],
) -> ConfigError {
    match build(new, line, files) {
        Ok(_) => panic!("'{line}' built, but must not"),
        Err(e) => e,
    }
}

/// Plugin arguments and a check of the outcome they must give, for tables of cases.
pub type Case = (&'static [&'static str], fn(&Outcome) -> bool);

/// How a failing check came out under each `reject` form (see [`reject_forms`]).
#[derive(Debug)]
pub struct RejectForms {
    /// With `reject 0`.
    pub log_only: Outcome,
    /// With `reject_type temp`.
    pub temp: Outcome,
    /// With `reject naughty`.
    pub naughty: Outcome,
    /// The message `reject naughty` left in the connection note `Naughty`, if any.
    pub naughty_msg: Option<String>,
}

/// Runs a failing check under `reject 0`, `reject_type temp` and `reject naughty`: `line` is
/// the plugin's config line without them, `fire` runs the hook that fails on a new
/// connection.
pub fn reject_forms<P: crate::Plugin + ?Sized>(
    new: impl Fn(&PluginInit<'_>) -> Result<Box<P>, ConfigError>,
    line: &str,
    files: &[(&str, &str)],
    fire: impl Fn(&P, &mut Cx) -> Outcome,
) -> RejectForms {
    let outcome = |extra: &str| {
        let p = build(&new, &format!("{line} {extra}"), files).expect("the plugin builds");
        let (mut c, _) = cx("192.0.2.1:1");
        let outcome = fire(&p, &mut c);
        let note = c.conn.notes.get::<crate::shared::Naughty>();
        (outcome, note.map(|n| n.msg.clone()))
    };
    let (naughty, naughty_msg) = outcome("reject naughty");
    RejectForms {
        log_only: outcome("reject 0").0,
        temp: outcome("reject_type temp").0,
        naughty,
        naughty_msg,
    }
}

/// Asserts that `line` does not build with each of `cases` (the contents of the config file
/// `file`, the number of the line the error must name).
pub fn assert_bad_lines<T>(
    new: impl Fn(&PluginInit<'_>) -> Result<T, ConfigError>,
    line: &str,
    file: &str,
    cases: &[(&str, u32)],
) {
    for &(text, n) in cases {
        let e = build_err(&new, line, &[(file, text)]);
        assert_eq!((e.file.as_str(), e.line), (file, n), "{text:?}: {e}");
    }
}

/// Asserts that `name` does not build with each of `cases` (its arguments, one word each: a
/// word may hold a space here), and that each error names the plugin's line and the plugin.
pub fn assert_bad_args<T>(
    new: impl Fn(&PluginInit<'_>) -> Result<T, ConfigError>,
    name: &str,
    cases: &[&[&str]],
) {
    let config = MemConfig::default();
    for case in cases {
        let args: Vec<String> = case.iter().map(|s| s.to_string()).collect();
        let init = PluginInit {
            name,
            args: &args,
            config: &config,
            origin: &origin(name),
        };
        let Err(e) = new(&init) else {
            panic!("{name} {case:?} built, but must not");
        };
        let e = e.to_string();
        assert!(
            e.starts_with(&format!("plugins:1: {name}: ")),
            "{case:?}: {e}"
        );
    }
}

/// As [`build`], with the instance name and the arguments given apart: an argument may then
/// hold a blank (which no `config/plugins` line can give), to test that a plugin refuses it.
pub fn build_args<T>(
    new: impl FnOnce(&PluginInit<'_>) -> Result<T, ConfigError>,
    name: &str,
    args: &[&str],
    files: &[(&str, &str)],
) -> Result<T, ConfigError> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let config = MemConfig::new(files);
    new(&PluginInit {
        name,
        args: &args,
        config: &config,
        origin: &origin(&format!("{name} {}", args.join(" "))),
    })
}
