//! [`unlisted_overrides`]: the hooks a plugin implements but leaves out of its hook set.

use crate::auth::{AuthRequest, Mechanism, Secret};
use crate::context::{Level, Transaction};
use crate::envelope::{Address, RcptParams, Recipient};
use crate::hook::Hook;
use crate::outcome::Outcome;
use crate::plugin::{take_default_reached, LogRecord, Plugin};

use super::services::cx;

/// The hooks `plugin` implements but leaves out of [`Plugin::hooks`], where the engine would
/// never call them. Every hook not listed is called once with sample arguments (the `Step` is
/// dropped unpolled); a call that does not reach the trait's default method, or panics, is an
/// override and is reported.
pub fn unlisted_overrides(plugin: &dyn Plugin) -> Vec<Hook> {
    let listed = plugin.hooks();
    Hook::ALL
        .into_iter()
        .filter(|&hook| !listed.contains(hook) && !reaches_default(plugin, hook))
        .collect()
}

fn reaches_default(plugin: &dyn Plugin, hook: Hook) -> bool {
    take_default_reached();
    let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        call_with_samples(plugin, hook, &Samples::default())
    }));
    called.is_ok() && take_default_reached()
}

/// The values hook arguments borrow in [`unlisted_overrides`].
struct Samples {
    recipient: Recipient,
    outcome: Outcome,
    auth: AuthRequest,
}

impl Default for Samples {
    fn default() -> Samples {
        Samples {
            recipient: Recipient {
                addr: Address::default(),
                params: RcptParams::default(),
            },
            outcome: Outcome::Declined,
            auth: AuthRequest {
                mechanism: Mechanism::Plain,
                user: "user".to_string(),
                secret: Secret::Password("password".to_string()),
            },
        }
    }
}

/// A sample value for a hook argument of this type.
trait Sample<'s> {
    fn sample(samples: &'s Samples) -> Self;
}

impl<'s> Sample<'s> for Hook {
    fn sample(_: &'s Samples) -> Self {
        Hook::Rcpt
    }
}

impl<'s> Sample<'s> for &'s str {
    fn sample(_: &'s Samples) -> Self {
        ""
    }
}

impl<'s> Sample<'s> for &'s Recipient {
    fn sample(samples: &'s Samples) -> Self {
        &samples.recipient
    }
}

impl<'s> Sample<'s> for &'s Outcome {
    fn sample(samples: &'s Samples) -> Self {
        &samples.outcome
    }
}

impl<'s> Sample<'s> for &'s AuthRequest {
    fn sample(samples: &'s Samples) -> Self {
        &samples.auth
    }
}

/// `call_with_samples`, which calls any hook, from the hook list.
macro_rules! hook_caller {
    (
        hooks: [$($hooks:tt)*]
        chained: [$(
            $(#[$doc:meta])* $hook:ident $name:literal
            fn $method:ident(cx $(, $txn:ident)? $(; $($arg:ident: $ty:ty),+)?);
        )*]
    ) => {
        /// Calls `hook` of `plugin` with sample arguments and drops the step unpolled.
        fn call_with_samples(plugin: &dyn Plugin, hook: Hook, samples: &Samples) {
            let (mut cx, _svc) = cx("192.0.2.1:4242");
            let mut txn = Transaction::default();
            match hook {
                $(Hook::$hook => {
                    $(let $txn = &mut txn;)?
                    $($(let $arg = Sample::sample(samples);)+)?
                    drop(plugin.$method(&mut cx, $($txn,)? $($($arg,)+)?));
                })*
                Hook::Logging => {
                    let msg = format_args!("sample");
                    let record = LogRecord {
                        level: Level::Info,
                        conn: cx.conn.id,
                        source: "core",
                        msg: &msg,
                    };
                    plugin.logging(&record);
                }
            }
        }
    };
}

crate::for_each_hook!(hook_caller);
