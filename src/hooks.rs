//! The hook runner: builds one chain per hook from `config/plugins`, runs a chain in order
//! until a plugin decides, and keeps one bad plugin from hurting anything but its own session.
//!
//! - Order: `config/plugins` order; the first outcome other than `DECLINED` wins.
//! - Continuations: a `Step::Pending` is awaited under `plugin_timeout`. A timeout becomes
//!   `DENYSOFT` (4xx), so a broken spam check never accepts silently (qpsmtpd #294).
//! - Panics: caught per call; the session gets `DENYSOFT`, the worker and its other sessions go
//!   on (a panic in a monoio task would otherwise kill the whole worker thread).
//! - After every decision the `deny` or `ok` hook runs, as in qpsmtpd (results ignored).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use ringsmtpd_plugin_api::{
    ConfigError, ConfigSource, Cx, Hook, Level, Outcome, Plugin, PluginInit, Step, Transaction,
};

use crate::config::PluginLine;
use crate::metrics::{PluginStats, WorkerMetrics};

/// `Call`, `Call::hook` and `dispatch` from the hook list (`for_each_hook!`).
macro_rules! calls {
    (
        hooks: [$($hooks:tt)*]
        chained: [$(
            $(#[$doc:meta])* $hook:ident $name:literal
            fn $method:ident(cx $(, $txn:ident)? $(; $($arg:ident: $ty:ty),+)?);
        )*]
    ) => {
        /// One hook invocation with its arguments. Hooks that run inside a transaction get it
        /// separately (see [`Chains::run`]).
        #[derive(Clone, Copy)]
        pub enum Call<'a> {
            $(
                #[doc = concat!("The `", $name, "` hook.")]
                $hook $(($($ty),+))?,
            )*
        }

        impl Call<'_> {
            pub fn hook(&self) -> Hook {
                match self {
                    $(Call::$hook { .. } => Hook::$hook,)*
                }
            }
        }

        /// Calls the plugin method for `call`. A transaction hook without a transaction
        /// declines (the session never does that; this keeps the engine total).
        fn dispatch<'a>(
            p: &'a dyn Plugin,
            cx: &'a mut Cx,
            txn: Option<&'a mut Transaction>,
            call: Call<'a>,
        ) -> Step<'a> {
            match call {
                $(
                    Call::$hook $(($($arg),+))? => {
                        $(let Some($txn) = txn else {
                            return Step::DECLINED;
                        };)?
                        p.$method(cx, $($txn,)? $($($arg,)+)?)
                    }
                )*
            }
        }
    };
}

ringsmtpd_plugin_api::for_each_hook!(calls);

/// A plugin instance with its config-line name. `Rc`, because logging plugins are also held
/// by the worker's services, which call their `logging` hook.
struct Loaded {
    name: Rc<str>,
    plugin: Rc<dyn Plugin>,
}

/// The plugin chains of one worker, built from one config snapshot.
pub struct Chains {
    plugins: Vec<Loaded>,
    /// For each hook (by `Hook as usize`), the indices of the plugins implementing it.
    by_hook: Vec<Vec<u16>>,
    timeout: Duration,
    /// The SASL mechanisms the auth backends can check, in the order EHLO lists them.
    mechanisms: Vec<ringsmtpd_plugin_api::auth::Mechanism>,
    /// Every queue plugin passes the DSN parameters on (and there is one): EHLO offers DSN.
    dsn: bool,
    /// Counters per plugin per hook, in `by_hook`'s shape, once metrics are attached.
    stats: Vec<Vec<Arc<PluginStats>>>,
}

/// The result of running a chain: the outcome and the plugin that decided.
pub struct Decision {
    pub outcome: Outcome,
    pub plugin: Option<Rc<str>>,
}

/// How a factory is found for a plugin name (the plugins crate's registry, or a test's).
pub type Lookup = fn(&str) -> Option<ringsmtpd_plugin_api::Factory>;

impl Chains {
    /// Builds every plugin of `lines` (in order). Errors name the config file and line.
    pub fn build(
        lines: &[PluginLine],
        cfg: &dyn ConfigSource,
        lookup: Lookup,
        timeout: Duration,
    ) -> Result<Chains, ConfigError> {
        let mut plugins = Vec::with_capacity(lines.len());
        for line in lines {
            let factory = lookup(&line.name)
                .ok_or_else(|| line.origin.error(format!("unknown plugin '{}'", line.name)))?;
            let init = PluginInit {
                name: &line.name,
                args: &line.args,
                config: cfg,
                origin: &line.origin,
            };
            let plugin: Rc<dyn Plugin> = Rc::from(factory(&init)?);
            let name = Rc::from(line.name.as_str());
            plugins.push(Loaded { name, plugin });
        }
        Ok(Chains::from_plugins(plugins, timeout))
    }

    fn from_plugins(plugins: Vec<Loaded>, timeout: Duration) -> Chains {
        let mut by_hook = vec![Vec::new(); Hook::ALL.len()];
        for (i, p) in plugins.iter().enumerate() {
            for hook in p.plugin.hooks().iter() {
                by_hook[hook as usize].push(i as u16);
            }
        }
        let mechanisms = ringsmtpd_plugin_api::auth::Mechanism::ALL
            .into_iter()
            .filter(|m| {
                by_hook[Hook::Auth as usize]
                    .iter()
                    .any(|&i| plugins[i as usize].plugin.auth_mechanisms().contains(m))
            })
            .collect();
        let queues = &by_hook[Hook::Queue as usize];
        let dsn = !queues.is_empty()
            && queues
                .iter()
                .all(|&i| plugins[i as usize].plugin.carries_dsn());
        Chains {
            plugins,
            by_hook,
            timeout,
            mechanisms,
            dsn,
            stats: Vec::new(),
        }
    }

    /// Counts every hook call of these chains in `metrics` (a worker's counters).
    pub fn attach_metrics(&mut self, metrics: &WorkerMetrics) {
        self.stats = Hook::ALL
            .iter()
            .map(|&hook| {
                self.by_hook[hook as usize]
                    .iter()
                    .map(|&i| metrics.plugin(&self.plugins[i as usize].name, hook))
                    .collect()
            })
            .collect();
    }

    /// True if EHLO offers DSN: every queue plugin carries the DSN parameters on
    /// ([`Plugin::carries_dsn`]), so what the client asks for can be honoured downstream.
    pub fn offers_dsn(&self) -> bool {
        self.dsn
    }

    /// The SASL mechanisms to advertise (empty without auth backends).
    pub fn auth_mechanisms(&self) -> &[ringsmtpd_plugin_api::auth::Mechanism] {
        &self.mechanisms
    }

    /// Runs the `auth` backends on one attempt.
    pub async fn run_auth(
        &self,
        cx: &mut Cx,
        req: &ringsmtpd_plugin_api::auth::AuthRequest,
    ) -> Decision {
        self.run(cx, None, Call::Auth(req)).await
    }

    /// Chains from ready-made plugins (tests).
    pub fn from_instances(list: Vec<(&str, Box<dyn Plugin>)>, timeout: Duration) -> Chains {
        let plugins = list
            .into_iter()
            .map(|(name, plugin)| Loaded {
                name: Rc::from(name),
                plugin: Rc::from(plugin),
            })
            .collect();
        Chains::from_plugins(plugins, timeout)
    }

    /// The plugins implementing the `logging` hook, in order.
    pub fn loggers(&self) -> Vec<Rc<dyn Plugin>> {
        self.by_hook[Hook::Logging as usize]
            .iter()
            .map(|&i| self.plugins[i as usize].plugin.clone())
            .collect()
    }

    /// True if some plugin implements `hook`.
    pub fn has(&self, hook: Hook) -> bool {
        !self.by_hook[hook as usize].is_empty()
    }

    /// The plugin names per hook, for `ringsmtpd --check`.
    pub fn describe(&self) -> Vec<(Hook, Vec<&str>)> {
        Hook::ALL
            .into_iter()
            .filter(|h| self.has(*h))
            .map(|h| {
                let names = self.by_hook[h as usize]
                    .iter()
                    .map(|&i| &*self.plugins[i as usize].name)
                    .collect();
                (h, names)
            })
            .collect()
    }

    /// Runs the chain for `call`. `txn` is the open transaction for transaction hooks.
    pub async fn run(
        &self,
        cx: &mut Cx,
        mut txn: Option<&mut Transaction>,
        call: Call<'_>,
    ) -> Decision {
        let hook = call.hook();
        for (n, &i) in self.by_hook[hook as usize].iter().enumerate() {
            let loaded = &self.plugins[i as usize];
            let stats = self.stats.get(hook as usize).and_then(|s| s.get(n));
            let started = stats.map(|_| Instant::now());
            let outcome = self
                .call_one(loaded, cx, txn.as_deref_mut(), call, stats)
                .await;
            if let (Some(stats), Some(started)) = (stats, started) {
                stats.record(&outcome, started.elapsed());
            }
            if outcome == Outcome::Declined {
                continue;
            }
            // qpsmtpd runs `deny` after a DENY*, `ok` after anything else (not recursively).
            if !matches!(hook, Hook::Deny | Hook::Ok) {
                // A DONE reply of 4xx/5xx (`loop`'s 554) is a refusal for the deny hook too.
                let refused = outcome.is_deny()
                    || matches!(&outcome, Outcome::Done(Some(r)) if r.code >= 400);
                let follow = if refused {
                    Call::Deny(&loaded.name, hook, &outcome)
                } else {
                    Call::Ok(&loaded.name, hook, &outcome)
                };
                if self.has(follow.hook()) {
                    Box::pin(self.run(cx, None, follow)).await;
                }
            }
            return Decision {
                outcome,
                plugin: Some(loaded.name.clone()),
            };
        }
        Decision {
            outcome: Outcome::Declined,
            plugin: None,
        }
    }

    async fn call_one(
        &self,
        loaded: &Loaded,
        cx: &mut Cx,
        txn: Option<&mut Transaction>,
        call: Call<'_>,
        stats: Option<&Arc<PluginStats>>,
    ) -> Outcome {
        let hook = call.hook();
        let plugin = &*loaded.plugin;
        // The step borrows `cx` and `txn`; the block ends that borrow before the logging below.
        let result = {
            let (c, t) = (&mut *cx, txn);
            match catch_unwind(AssertUnwindSafe(move || dispatch(plugin, c, t, call))) {
                Ok(Step::Ready(outcome)) => return outcome,
                Ok(Step::Pending(fut)) => {
                    let guarded = crate::catch::CatchUnwind(fut);
                    match monoio::time::timeout(self.timeout, guarded).await {
                        Ok(Ok(outcome)) => return outcome,
                        Ok(Err(())) => Failure::Panic,
                        Err(_elapsed) => Failure::Timeout,
                    }
                }
                Err(_panic) => Failure::Panic,
            }
        };
        // The future (and its borrow of `cx`) is gone: count, log and fail soft.
        if let Some(stats) = stats {
            stats.failed();
        }
        let what = match result {
            Failure::Panic => "panicked",
            Failure::Timeout => "timed out",
        };
        cx.log(
            Level::Crit,
            &loaded.name,
            format_args!(
                "plugin {what} in hook {hook} (limit {:?}); answering 4xx",
                self.timeout
            ),
        );
        Outcome::DenySoft(Some(std::borrow::Cow::Borrowed(match result {
            Failure::Panic => "4.3.0 Internal error in a mail check, try again later",
            Failure::Timeout => "4.4.3 A mail check timed out, try again later",
        })))
    }
}

enum Failure {
    Panic,
    Timeout,
}
