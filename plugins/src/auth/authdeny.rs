//! # auth/authdeny — fail every SMTP AUTH attempt
//!
//! ## Synopsis
//!
//! ```text
//! auth/authdeny [loglevel N]
//! ```
//!
//! ## Description
//!
//! Answers every AUTH attempt with `DENY` (535 5.7.8), whatever the user and password, and
//! logs it at `warn`. Like qpsmtpd's catch-all `auth` hook it takes every mechanism, so with
//! it the server advertises `AUTH PLAIN LOGIN CRAM-MD5`.
//!
//! What it is for: a listener where AUTH must be offered but nobody may log in (a honeypot, a
//! test of clients' failure handling, a backend taken out of service without changing what
//! EHLO says). qpsmtpd called it a proof of concept, not for production.
//!
//! Difference from qpsmtpd: qpsmtpd's `authdeny` returned `DECLINED` and, as a catch-all,
//! ran after every mechanism-specific backend, so other backends could still succeed. Here
//! backends run in `config/plugins` order and `DENY` ends the chain: **put it last** if other
//! backends are listed (it then only turns "no backend knew the user" into a logged refusal),
//! or alone.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect. |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `auth` (PLAIN, LOGIN, CRAM-MD5).
//!
//! ## Notes
//!
//! None.
//!
//! ## Standards
//!
//! RFC 4954 §6 (535 5.7.8).
//!
//! ## Security
//!
//! Never authenticates anyone. The user name is logged with control characters replaced.

use ringsmtpd_plugin_api::auth::{AuthRequest, Mechanism};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Step,
};

use super::{Shown, INVALID};

/// The `auth/authdeny` plugin.
pub struct AuthDeny {
    common: Common,
}

/// Builds `auth/authdeny` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let common = init.common_only(CommonArgs::DEFAULT)?;
    Ok(Box::new(AuthDeny { common }))
}

impl Plugin for AuthDeny {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Auth])
    }

    fn auth_mechanisms(&self) -> &'static [Mechanism] {
        &Mechanism::ALL
    }

    fn auth<'a>(&'a self, cx: &'a mut Cx, req: &'a AuthRequest) -> Step<'a> {
        self.common.log(
            cx,
            Level::Warn,
            format_args!(
                "fail: cannot authenticate '{}' ({}): every attempt is refused",
                Shown(&req.user),
                req.mechanism
            ),
        );
        Step::Ready(Outcome::deny(INVALID))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::auth::Secret;
    use ringsmtpd_plugin_api::testing::{build, build_err, cx, run};

    #[test]
    fn denies_everything_with_every_mechanism() {
        let p = build(new, "auth/authdeny", &[]).unwrap();
        assert_eq!(p.auth_mechanisms(), &Mechanism::ALL);
        assert!(p.hooks().contains(Hook::Auth));
        for (mechanism, secret) in [
            (Mechanism::Plain, Secret::Password("right".into())),
            (Mechanism::Login, Secret::Password(String::new())),
            (
                Mechanism::CramMd5,
                Secret::CramMd5 {
                    challenge: "<1@x>".into(),
                    digest: "00".into(),
                },
            ),
        ] {
            let (mut c, svc) = cx("192.0.2.1:1");
            let req = AuthRequest {
                mechanism,
                user: "bogus\r\nuser".into(),
                secret,
            };
            assert_eq!(run(p.auth(&mut c, &req)), Outcome::deny(INVALID));
            assert!(svc.logged("cannot authenticate 'bogus??user'"));
            assert_eq!(svc.logs.borrow()[0].0, Level::Warn);
        }
    }

    #[test]
    fn arguments() {
        assert!(build(new, "auth/authdeny loglevel +1", &[]).is_ok());
        let err = build_err(new, "auth/authdeny x", &[]);
        assert!(err.to_string().contains("unknown argument 'x'"), "{err}");
        build_err(new, "auth/authdeny reject_type nope", &[]);
    }
}
