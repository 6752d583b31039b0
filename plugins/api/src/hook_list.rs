//! The one list of hooks: a new hook is added here, and nowhere else.
//!
//! [`for_each_hook!`](crate::for_each_hook) hands the list to a macro of the caller's, which
//! expands it into what it needs: [`Hook`](crate::Hook) with `Hook::ALL` and `Hook::name`
//! (hook.rs), the hook methods of [`Plugin`](crate::Plugin) with their docs (plugin.rs), the
//! engine's `Call` and its dispatch (`src/hooks.rs`), and the test kit's check that a plugin
//! lists every hook it implements ([`crate::testing::unlisted_overrides`]).
//!
//! The callback gets two lists:
//!
//! ```text
//! hooks: [ $( $(#[doc])* $Hook:ident $name:literal; )* ]
//! chained: [ $( $(#[doc])* $Hook:ident $name:literal
//!               fn $method:ident(cx $(, txn)? $(; $($arg:ident: $ty:ty),+)?); )* ]
//! ```
//!
//! `hooks` holds every hook in the order of the SMTP conversation (`Hook::ALL`'s order).
//! `chained` holds the hooks the engine runs as chains, with the trait method's signature:
//! `cx` is the `&mut Cx`, `txn` the `&mut Transaction` of transaction hooks, then the hook's
//! own arguments (their lifetime is `'a`, the method's). The `logging` hook is in `hooks`
//! only: its method (`Plugin::logging`) is synchronous and called by the worker's services.

/// Calls `$callback! { hooks: [...] chained: [...] }` with the hook list (see the module docs).
#[macro_export]
macro_rules! for_each_hook {
    ($callback:ident) => {
        $crate::__split_hooks! { $callback [] []
            /// A connection was accepted, before any session state exists.
            PreConnection "pre-connection" fn pre_connection(cx);
            /// Before the banner.
            Connect "connect" fn connect(cx);
            /// `HELO host`, after syntax checks.
            Helo "helo" fn helo(cx; host: &'a str);
            /// `EHLO host`, after syntax checks.
            Ehlo "ehlo" fn ehlo(cx; host: &'a str);
            /// `MAIL FROM` before the path is parsed: `path` as sent (normally `<...>`), `params`
            /// the ESMTP parameters. `OK` with a text replaces the path (how
            /// `dont_require_anglebrackets` adds the brackets); a deny refuses the command with
            /// 501 (qpsmtpd's `mail_pre`).
            MailPre "mail_pre" fn mail_pre(cx; path: &'a str, params: &'a str);
            /// `MAIL FROM`: `txn.sender` and `txn.mail_params` are set; a deny discards `txn`.
            Mail "mail" fn mail(cx, txn);
            /// `RCPT TO` before the path is parsed, as `mail_pre`.
            RcptPre "rcpt_pre" fn rcpt_pre(cx; path: &'a str, params: &'a str);
            /// `RCPT TO`: `rcpt` joins `txn.recipients` on `OK`. Every plugin declining gives 450:
            /// some plugin must accept, so the server is never an open relay by accident.
            Rcpt "rcpt" fn rcpt(cx, txn; rcpt: &'a $crate::Recipient);
            /// `DATA` (or the first `BDAT`), before the 354.
            Data "data" fn data(cx, txn);
            /// The header section has been received; the body is still coming.
            /// Only the `*_DISCONNECT` outcomes act here.
            DataHeadersEnd "data_headers_end" fn data_headers_end(cx, txn);
            /// The whole message is in, before Received and Authentication-Results are added: the
            /// place to add headers (SPF, DKIM). The outcome is ignored, as in qpsmtpd.
            DataPostHeaders "data_post_headers" fn data_post_headers(cx, txn);
            /// The whole message is in and the core headers are added: content checks.
            DataPost "data_post" fn data_post(cx, txn);
            /// Before queueing.
            QueuePre "queue_pre" fn queue_pre(cx, txn);
            /// Deliver the message. `OK` means it is durable at the destination (fsync'd or
            /// accepted downstream); only then does the client get 250.
            Queue "queue" fn queue(cx, txn);
            /// After the queue reply was sent; the outcome is only logged.
            QueuePost "queue_post" fn queue_post(cx, txn);
            /// The transaction ends (RSET, new MAIL, after queueing or a data deny, disconnect).
            ResetTransaction "reset_transaction" fn reset_transaction(cx, txn);
            /// The session is ending (QUIT, a `*_DISCONNECT`, EOF). Outcome ignored.
            Disconnect "disconnect" fn disconnect(cx);
            /// The connection is closed. Outcome ignored.
            PostConnection "post-connection" fn post_connection(cx);
            /// A verb the core does not know; `verb` is lowercased.
            UnrecognizedCommand "unrecognized_command"
                fn unrecognized_command(cx; verb: &'a str, args: &'a str);
            /// `VRFY arg`.
            Vrfy "vrfy" fn vrfy(cx; arg: &'a str);
            /// `NOOP`.
            Noop "noop" fn noop(cx);
            /// `HELP args`.
            Help "help" fn help(cx; args: &'a str);
            /// `QUIT`.
            Quit "quit" fn quit(cx);
            /// Another plugin (`plugin`) denied at `hook`. Outcome ignored.
            Deny "deny" fn deny(cx; plugin: &'a str, hook: $crate::Hook, outcome: &'a $crate::Outcome);
            /// Another plugin (`plugin`) gave a non-deny outcome at `hook`. Outcome ignored.
            Ok "ok" fn ok(cx; plugin: &'a str, hook: $crate::Hook, outcome: &'a $crate::Outcome);
            /// The core is about to add its Received header; `protocol` is `SMTP`, `ESMTP`,
            /// `ESMTPS`, `ESMTPA` or `ESMTPSA` (RFC 3848). `Ok(Some(text))` replaces the header's
            /// value.
            ReceivedLine "received_line" fn received_line(cx, txn; protocol: &'a str);
            /// A log line (see `Plugin::logging`): not a chain, the worker's services call the
            /// logging plugins directly.
            Logging "logging";
            /// An SMTP AUTH attempt (RFC 4954): `OK` authenticates the client (235, it becomes a
            /// relay client); anything else fails it (535). Backends run in `config/plugins`
            /// order.
            Auth "auth" fn auth(cx; req: &'a $crate::auth::AuthRequest);
        }
    };
}

/// Sorts the entries of [`for_each_hook!`](crate::for_each_hook) into its two lists.
#[doc(hidden)]
#[macro_export]
macro_rules! __split_hooks {
    // Every entry sorted: call back.
    ($callback:ident [$($hooks:tt)*] [$($chained:tt)*]) => {
        $callback! { hooks: [$($hooks)*] chained: [$($chained)*] }
    };
    // A hook run as a chain.
    ($callback:ident [$($hooks:tt)*] [$($chained:tt)*]
        $(#[$doc:meta])* $hook:ident $name:literal fn $method:ident $sig:tt;
        $($rest:tt)*
    ) => {
        $crate::__split_hooks! { $callback
            [$($hooks)* $(#[$doc])* $hook $name;]
            [$($chained)* $(#[$doc])* $hook $name fn $method $sig;]
            $($rest)*
        }
    };
    // A hook with a call of its own (`logging`).
    ($callback:ident [$($hooks:tt)*] [$($chained:tt)*]
        $(#[$doc:meta])* $hook:ident $name:literal;
        $($rest:tt)*
    ) => {
        $crate::__split_hooks! { $callback [$($hooks)* $(#[$doc])* $hook $name;] [$($chained)*] $($rest)* }
    };
}
