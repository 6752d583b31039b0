//! Shared by the plugins that count something per connection and refuse at a limit
//! (`count_unrecognized_commands`, `noop_counter`, `loop`), and by plugins that do the same at
//! several hooks (`misbehave`, `random_error`, `noop_counter`, `naughty`).

use ringsmtpd_plugin_api::args;
use ringsmtpd_plugin_api::{Common, CommonArgs, ConfigError, PluginInit, RejectType};

/// The arguments of a plugin that refuses a client at the Nth of something on a connection:
/// `[N]` (a positive integer, `default_max` when absent) and the common ones, where
/// `reject_type` is `disconnect` (the default) or `perm`.
pub(crate) fn limit_args(
    init: &PluginInit<'_>,
    default_max: u32,
) -> Result<(Common, u32), ConfigError> {
    let defaults = CommonArgs {
        reject_type: RejectType::Disconnect,
        ..CommonArgs::DEFAULT
    };
    let (common, rest) = init.common(defaults)?;
    if matches!(
        common.args.reject_type,
        RejectType::Temp | RejectType::TempDisconnect
    ) {
        return Err(init.error("reject_type must be disconnect or perm"));
    }
    let max = args::positive(init, &rest, "N", default_max)?;
    Ok((common, max))
}

/// Adds one to a per-connection counter and returns the new count.
pub(crate) fn bump(count: &mut u32) -> u32 {
    *count = count.saturating_add(1);
    *count
}

/// `Plugin` hook methods that each call `self.$act(cx, Hook::…)`, for a plugin that does the
/// same at several hooks: `same_at!(act: connect, helo, mail)` inside `impl Plugin`. The hooks
/// it knows are those its arms list.
macro_rules! same_at {
    ($act:ident: $($hook:ident),+ $(,)?) => { $(same_at!(@hook $act $hook);)+ };
    (@hook $act:ident connect) => { same_at!(@fn $act connect Connect ()); };
    (@hook $act:ident helo) => { same_at!(@fn $act helo Helo (str)); };
    (@hook $act:ident ehlo) => { same_at!(@fn $act ehlo Ehlo (str)); };
    (@hook $act:ident vrfy) => { same_at!(@fn $act vrfy Vrfy (str)); };
    (@hook $act:ident help) => { same_at!(@fn $act help Help (str)); };
    (@hook $act:ident mail_pre) => { same_at!(@fn $act mail_pre MailPre (str, str)); };
    (@hook $act:ident rcpt_pre) => { same_at!(@fn $act rcpt_pre RcptPre (str, str)); };
    (@hook $act:ident unrecognized_command) => {
        same_at!(@fn $act unrecognized_command UnrecognizedCommand (str, str));
    };
    (@hook $act:ident mail) => { same_at!(@fn $act mail Mail (txn)); };
    (@hook $act:ident rcpt) => { same_at!(@fn $act rcpt Rcpt (txn, rcpt)); };
    (@hook $act:ident data) => { same_at!(@fn $act data Data (txn)); };
    (@hook $act:ident data_post) => { same_at!(@fn $act data_post DataPost (txn)); };
    (@hook $act:ident queue) => { same_at!(@fn $act queue Queue (txn)); };
    (@hook $act:ident reset_transaction) => {
        same_at!(@fn $act reset_transaction ResetTransaction (txn));
    };
    (@fn $act:ident $f:ident $hook:ident ($($arg:ident),*)) => {
        fn $f<'a>(
            &'a self,
            cx: &'a mut ringsmtpd_plugin_api::Cx,
            $(_: same_at!(@arg $arg)),*
        ) -> ringsmtpd_plugin_api::Step<'a> {
            self.$act(cx, ringsmtpd_plugin_api::Hook::$hook)
        }
    };
    (@arg str) => { &'a str };
    (@arg txn) => { &'a mut ringsmtpd_plugin_api::Transaction };
    (@arg rcpt) => { &'a ringsmtpd_plugin_api::Recipient };
}
pub(crate) use same_at;
