//! # deny_helo
//!
//! ```text
//! deny_helo [reject 0|1|naughty] [reject_type perm|temp|disconnect] [loglevel N]
//! ```
//!
//! Refuses the HELO/EHLO names listed in `config/deny_helo`, one per line.

use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Step,
};

pub struct DenyHelo {
    common: Common,
    names: Vec<String>,
}

pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let common = init.common_only(CommonArgs::DEFAULT)?;
    let mut names = Vec::new();
    for line in init.config.lines("deny_helo")?.unwrap_or_default() {
        if line.text.contains(char::is_whitespace) {
            return Err(line.error("one host name per line")); // `deny_helo:3: one host ...`
        }
        names.push(line.text.to_ascii_lowercase());
    }
    Ok(Box::new(DenyHelo { common, names }))
}

impl Plugin for DenyHelo {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Helo, Hook::Ehlo])
    }
    fn helo<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        if !self.names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
            return Step::DECLINED;
        }
        self.common
            .log(cx, Level::Info, format_args!("{host} is listed"));
        Step::Ready(self.common.reject(cx, "5.7.1 Your HELO name is refused"))
    }
    fn ehlo<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        self.helo(cx, host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{build, build_err, cx, run};
    use ringsmtpd_plugin_api::{shared::Naughty, Outcome};

    const FILES: &[(&str, &str)] = &[("deny_helo", "# known bots\nbad.example\n")];

    #[test]
    fn refuses_listed_names_only() {
        let p = build(new, "deny_helo", FILES).unwrap();
        let (mut cx, svc) = cx("192.0.2.1:4242");
        assert_eq!(run(p.helo(&mut cx, "good.example")), Outcome::Declined);
        let refused = run(p.ehlo(&mut cx, "BAD.example"));
        assert_eq!(refused, Outcome::deny("5.7.1 Your HELO name is refused"));
        assert!(svc.logged("BAD.example is listed"));
    }

    #[test]
    fn reject_naughty_marks_and_declines() {
        let p = build(new, "deny_helo reject naughty", FILES).unwrap();
        let (mut cx, _) = cx("192.0.2.1:4242");
        assert_eq!(run(p.helo(&mut cx, "bad.example")), Outcome::Declined);
        assert!(cx.conn.notes.contains::<Naughty>());
    }

    #[test]
    fn mistakes_point_at_their_line() {
        let e = build_err(new, "deny_helo", &[("deny_helo", "ok.example\na b\n")]);
        assert_eq!(e.to_string(), "deny_helo:2: one host name per line");
        let e = build_err(new, "deny_helo strict", &[]);
        assert_eq!(
            e.to_string(),
            "plugins:1: deny_helo: unknown argument 'strict'"
        );
    }
}
