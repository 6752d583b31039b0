//! # require_auth — no AUTH, no mail (for submission listeners)
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
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Reply,
    Step, Transaction,
};

pub struct RequireAuth {
    common: Common,
}

pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    if let Some(extra) = rest.first() {
        return Err(init.error(format!("takes no arguments, not '{extra}'")));
    }
    Ok(Box::new(RequireAuth { common }))
}

impl Plugin for RequireAuth {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Mail])
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if cx.conn.auth.is_some() {
            return Step::DECLINED;
        }
        let sender = &txn.sender;
        self.common.log(
            cx,
            Level::Info,
            format_args!("MAIL {sender} without AUTH refused"),
        );
        let reply = Reply::new(530, "5.7.0", "Authentication required");
        Step::Ready(Outcome::Done(Some(reply)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{build, build_err, cx, run};
    use ringsmtpd_plugin_api::AuthInfo;

    #[test]
    fn unauthenticated_mail_gets_530_authenticated_passes() {
        let p = build(new, "require_auth", &[]).unwrap();
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
        assert!(build(new, "require_auth loglevel -1", &[]).is_ok());
        let e = build_err(new, "require_auth strict", &[]);
        assert_eq!(
            e.to_string(),
            "plugins:1: require_auth: takes no arguments, not 'strict'"
        );
    }
}
