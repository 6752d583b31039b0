//! # require_auth
//!
//! ```text
//! require_auth
//! ```
//!
//! Refuses mail from clients that have not authenticated: for a submission listener (port 587,
//! RFC 6409 §4.3; 465 with implicit TLS, RFC 8314), where every client must log in first.
//! `MAIL FROM` before a successful `AUTH` gets `530 5.7.0 Authentication required`
//! (RFC 4954 §6); authenticated clients pass on to the next plugin.
//!
//! Run it in a config directory of its own (a second `ringsmtpd --config ...` for the
//! submission ports: plugins are per config directory), after `tls` and an `auth/*` backend.
//! An example: `examples/submission/` and docs/deploy.md.
//!
//! ## Arguments
//!
//! None besides `loglevel`.
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `mail`.
//!
//! ## Notes
//!
//! Reads `cx.conn.auth`, set by the core after a successful AUTH.
//!
//! ## Standards
//!
//! RFC 4954 §6 (530 5.7.0), RFC 6409 §4.3 (submission requires authentication).
//!
//! ## Security
//!
//! Not a replacement for AUTH over TLS only (`tls_before_auth 1`, the default): it only makes
//! authentication mandatory.

use ringsmtpd_plugin_api::{
    CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Reply, Step,
    Transaction,
};

pub struct RequireAuth {
    name: String,
    common: CommonArgs,
}

pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) =
        CommonArgs::extract(init.args, CommonArgs::DEFAULT).map_err(|e| init.error(e))?;
    if let Some(extra) = rest.first() {
        return Err(init.error(format!("takes no arguments, not '{extra}'")));
    }
    Ok(Box::new(RequireAuth {
        name: init.name.to_string(),
        common,
    }))
}

impl Plugin for RequireAuth {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Mail])
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if cx.conn.auth.is_some() {
            return Step::DECLINED;
        }
        if let Some(level) = self.common.adjust(Level::Info) {
            cx.log(
                level,
                &self.name,
                format_args!("MAIL {} without AUTH refused", txn.sender),
            );
        }
        Step::Ready(Outcome::Done(Some(Reply::new(
            530,
            "5.7.0",
            "Authentication required",
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{cx, origin, run, MemConfig};
    use ringsmtpd_plugin_api::AuthInfo;

    fn plugin(args: &[&str]) -> Result<Box<dyn Plugin>, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let cfg = MemConfig::default();
        let o = origin("require_auth");
        new(&PluginInit {
            name: "require_auth",
            args: &args,
            config: &cfg,
            origin: &o,
        })
    }

    #[test]
    fn unauthenticated_mail_gets_530_authenticated_passes() {
        let p = plugin(&[]).unwrap();
        let (mut c, _svc) = cx("192.0.2.1:1");
        let mut txn = Transaction::default();
        match run(p.mail(&mut c, &mut txn)) {
            Outcome::Done(Some(r)) => {
                assert_eq!((r.code, r.enhanced.as_deref()), (530, Some("5.7.0")));
                assert!(!r.disconnect);
            }
            other => panic!("expected 530, got {other:?}"),
        }
        c.conn.auth = Some(AuthInfo {
            user: "u".into(),
            mechanism: "PLAIN".into(),
        });
        assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::Declined);
    }

    #[test]
    fn arguments() {
        assert!(plugin(&["loglevel", "-1"]).is_ok());
        let e = plugin(&["strict"]).err().unwrap();
        assert_eq!(
            e.to_string(),
            "plugins:1: require_auth: takes no arguments, not 'strict'"
        );
    }
}
