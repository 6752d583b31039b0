//! Plugin arguments beyond the common ones ([`crate::Common`]) and free-text config files:
//! qpsmtpd's `key value` pairs, a `timeout SECONDS`, a positive count, config files parsed a
//! line at a time, the lines of a message file.
//!
//! ```ignore
//! let (common, rest) = init.common(CommonArgs::DEFAULT)?;
//! let timeout = args::timeout_only(init, &rest, Duration::from_secs(10))?;
//! let rejectmsg = args::lines_text(init.config, "dnsbl_rejectmsg")?;
//! ```

use std::time::Duration;

use crate::plugin::{ConfigError, ConfigSource, PluginInit};

/// qpsmtpd's plugin arguments after the common ones are `key value` pairs.
pub fn key_values<'s>(rest: &[&'s str]) -> Result<Vec<(&'s str, &'s str)>, String> {
    if !rest.len().is_multiple_of(2) {
        return Err(format!(
            "argument '{}' needs a value",
            rest.last().copied().unwrap_or_default()
        ));
    }
    Ok(rest.chunks(2).map(|kv| (kv[0], kv[1])).collect())
}

/// What [`take_own`] returns: the plugin's own `(key, value)` pairs, and the other arguments.
pub type OwnAndOthers<'s> = (Vec<(&'s str, &'s str)>, Vec<String>);

/// Takes each `KEY VALUE` whose KEY is one of `own` out of all of a plugin's arguments, before
/// the common ones are parsed: for a plugin argument that shadows a common one (dspam's
/// `reject PROBABILITY`). Returns those pairs in order, and the other arguments.
pub fn take_own<'s>(args: &'s [String], own: &[&str]) -> Result<OwnAndOthers<'s>, String> {
    let mut taken = Vec::new();
    let mut others = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if !own.contains(&arg.as_str()) {
            others.push(arg.clone());
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("argument '{arg}' needs a value"))?;
        taken.push((arg.as_str(), value.as_str()));
    }
    Ok((taken, others))
}

/// A `timeout` value: seconds, a decimal number above 0 and at most an hour.
pub fn parse_timeout(value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 3600.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "timeout must be seconds between 0 and 3600, not '{value}'"
        )),
    }
}

/// A yes/no argument: `1`, `yes`, `true`, `on` or `0`, `no`, `false`, `off`, any case.
pub fn parse_flag(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err(format!("{key} must be yes or no, not '{value}'")),
    }
}

/// A count argument: a whole number above 0.
pub fn parse_count(key: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{key} must be a positive number, not '{value}'")),
    }
}

/// The `timeout SECONDS` of a plugin whose only other argument it is (`default` without it).
pub fn timeout_only(
    init: &PluginInit<'_>,
    rest: &[&str],
    default: Duration,
) -> Result<Duration, ConfigError> {
    let mut timeout = default;
    for (key, value) in key_values(rest).map_err(|e| init.error(e))? {
        match key {
            "timeout" => timeout = parse_timeout(value).map_err(|e| init.error(e))?,
            _ => return Err(init.unknown(key)),
        }
    }
    Ok(timeout)
}

/// The lines of a free-text config file (none if it is missing).
pub fn lines_text(config: &dyn ConfigSource, name: &str) -> Result<Vec<String>, ConfigError> {
    Ok(config
        .lines(name)?
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.text)
        .collect())
}

/// Parses each line of the config file `file` (none when it is missing) with `parse`; an
/// error names the file and the line.
pub fn parse_lines<T>(
    init: &PluginInit<'_>,
    file: &str,
    mut parse: impl FnMut(&str) -> Result<T, String>,
) -> Result<Vec<T>, ConfigError> {
    let lines = init.config.lines(file)?.unwrap_or_default();
    lines
        .iter()
        .map(|line| parse(&line.text).map_err(|e| line.error(e)))
        .collect()
}

/// A plugin's only positional argument, a positive integer named `what` in errors; `default`
/// when there is none.
pub fn positive(
    init: &PluginInit<'_>,
    rest: &[&str],
    what: &str,
    default: u32,
) -> Result<u32, ConfigError> {
    match rest {
        [] => Ok(default),
        [n] => match n.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(init.error(format!("{what} must be a positive integer, not '{n}'"))),
        },
        [_, extra, ..] => Err(init.unknown(extra)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build, build_err};

    #[test]
    fn own_arguments_come_out_before_the_common_ones() {
        let args: Vec<String> = ["reject", ".9", "loglevel", "6", "reject", "agree", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (own, others) = take_own(&args, &["reject"]).unwrap();
        assert_eq!(own, [("reject", ".9"), ("reject", "agree")]);
        assert_eq!(others, ["loglevel", "6", "x"]);
        assert_eq!(
            take_own(&args[..1], &["reject"]),
            Err("argument 'reject' needs a value".to_string())
        );
    }

    #[test]
    fn pairs_and_timeouts() {
        assert_eq!(
            key_values(&["a", "1", "b", "2"]),
            Ok(vec![("a", "1"), ("b", "2")])
        );
        assert_eq!(
            key_values(&["a", "1", "b"]),
            Err("argument 'b' needs a value".to_string())
        );
        assert_eq!(parse_timeout("2.5"), Ok(Duration::from_millis(2500)));
        for bad in ["0", "-1", "x", "3601", "NaN"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
        assert_eq!(
            (parse_flag("f", "YES"), parse_flag("f", "off")),
            (Ok(true), Ok(false))
        );
        assert!(parse_flag("f", "2").is_err());
        assert_eq!(parse_count("n", "3"), Ok(3));
        assert!(parse_count("n", "0").is_err() && parse_count("n", "-1").is_err());
        let only = |init: &PluginInit<'_>| {
            timeout_only(
                init,
                &init.args.iter().map(String::as_str).collect::<Vec<_>>(),
                Duration::from_secs(7),
            )
        };
        assert_eq!(build(only, "p", &[]).unwrap(), Duration::from_secs(7));
        assert_eq!(
            build(only, "p timeout 3", &[]).unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(
            build_err(only, "p retries 3", &[]).to_string(),
            "plugins:1: p: unknown argument 'retries'"
        );
        let text = |init: &PluginInit<'_>| lines_text(init.config, "msg");
        assert_eq!(
            build(text, "p", &[("msg", "a\n# c\nb c\n")]).unwrap(),
            ["a", "b c"]
        );
        assert!(build(text, "p", &[]).unwrap().is_empty());
    }
}
