//! The hook runner: builds one chain per hook from `config/plugins`, runs a chain in order
//! until a plugin decides, and keeps one bad plugin from hurting anything but its own session.
//!
//! - Order: `config/plugins` order; the first outcome other than `DECLINED` wins.
//! - Continuations: a `Step::Pending` is awaited under `plugin_timeout`. A timeout becomes
//!   `DENYSOFT` (4xx), so a broken spam check never accepts silently (qpsmtpd #294).
//! - Panics: caught per call; the session gets `DENYSOFT`, the worker and its other sessions go
//!   on (a panic in a monoio task would otherwise kill the whole worker thread).
//! - After every decision the `deny` or `ok` hook runs, as in qpsmtpd (results ignored).
//! - Store plans: when a chain reaches the first of two or more plugins that plan their
//!   state-store batch for the hook (`Plugin::store_ahead`), the plans of that plugin and the
//!   later ones go to the store in one round trip (`ringsmtpd_plugin_api::store::ahead`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use ringsmtpd_plugin_api::store::{send_plans, Ahead, Planned};
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
    /// For each hook, the plugins that plan their store batch for it, in chain order; empty
    /// when fewer than two do (one plan alone saves no round trip).
    planners: Vec<Vec<u16>>,
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
        let planners = Hook::ALL
            .iter()
            .map(|&hook| {
                let list: Vec<u16> = by_hook[hook as usize]
                    .iter()
                    .copied()
                    .filter(|&i| plugins[i as usize].plugin.store_hooks().contains(hook))
                    .collect();
                if list.len() >= 2 {
                    list
                } else {
                    Vec::new()
                }
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
            planners,
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
        let planners = &self.planners[hook as usize];
        // A `deny`/`ok` chain run inside another hook's leaves that hook's plans alone.
        let plans_here = !planners.is_empty() && !cx.planning();
        let mut plans: Vec<(u16, Planned)> = Vec::new();
        let decision = 'chain: {
            for (n, &i) in self.by_hook[hook as usize].iter().enumerate() {
                if plans_here && !cx.planning() {
                    if let Some(first) = planners.iter().position(|&p| p == i) {
                        let at = txn.as_deref();
                        plans = self.plan(cx, at, call, &planners[first..]).await;
                    }
                }
                let plan = plans.iter().position(|(p, _)| *p == i);
                cx.hand_plan(plan.map(|at| plans.swap_remove(at).1));
                let loaded = &self.plugins[i as usize];
                let stats = self.stats.get(hook as usize).and_then(|s| s.get(n));
                let started = stats.map(|_| Instant::now());
                let outcome = self
                    .call_one(loaded, cx, txn.as_deref_mut(), call, stats)
                    .await;
                if let (Some(stats), Some(started)) = (stats, started) {
                    stats.record(&outcome, started.elapsed());
                }
                cx.hand_plan(None);
                if outcome == Outcome::Declined {
                    continue;
                }
                break 'chain self.decided(cx, hook, loaded, outcome).await;
            }
            Decision {
                outcome: Outcome::Declined,
                plugin: None,
            }
        };
        if plans_here {
            cx.end_plans();
        }
        decision
    }

    /// Makes the plans of `planners` (the chain's planning plugins from the one it reached) and
    /// sends them in one round trip, under the plugin timeout.
    async fn plan(
        &self,
        cx: &mut Cx,
        txn: Option<&Transaction>,
        call: Call<'_>,
        planners: &[u16],
    ) -> Vec<(u16, Planned)> {
        cx.begin_plans();
        let at = Ahead {
            hook: call.hook(),
            txn,
            rcpt: match call {
                Call::Rcpt(rcpt) => Some(rcpt),
                _ => None,
            },
        };
        let mut who = Vec::with_capacity(planners.len());
        let mut batches = Vec::with_capacity(planners.len());
        for &i in planners {
            let plugin = &*self.plugins[i as usize].plugin;
            // A panicking plan is no plan: the hook itself then runs (and is caught) as usual.
            if let Ok(Some(batch)) = catch_unwind(AssertUnwindSafe(|| plugin.store_ahead(cx, &at)))
            {
                who.push(i);
                batches.push(batch);
            }
        }
        if batches.is_empty() {
            return Vec::new();
        }
        // The store has timeouts of its own, shorter than the plugin timeout; should this one
        // still pass, the hooks send their batches themselves (each under its own timeout).
        let svc = cx.svc.clone();
        match monoio::time::timeout(self.timeout, send_plans(&*svc, batches)).await {
            Ok(planned) => who.into_iter().zip(planned).collect(),
            Err(_elapsed) => Vec::new(),
        }
    }

    /// A plugin decided at `hook`: qpsmtpd runs `deny` after a DENY*, `ok` after anything else
    /// (not recursively).
    async fn decided(
        &self,
        cx: &mut Cx,
        hook: Hook,
        loaded: &Loaded,
        outcome: Outcome,
    ) -> Decision {
        if !matches!(hook, Hook::Deny | Hook::Ok) {
            // A DONE reply of 4xx/5xx (`loop`'s 554) is a refusal for the deny hook too.
            let refused =
                outcome.is_deny() || matches!(&outcome, Outcome::Done(Some(r)) if r.code >= 400);
            let follow = if refused {
                Call::Deny(&loaded.name, hook, &outcome)
            } else {
                Call::Ok(&loaded.name, hook, &outcome)
            };
            if self.has(follow.hook()) {
                Box::pin(self.run(cx, None, follow)).await;
            }
        }
        Decision {
            outcome,
            plugin: Some(loaded.name.clone()),
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

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    use ringsmtpd_plugin_api::store::{Ahead, Batch, Key, Slot};
    use ringsmtpd_plugin_api::testing::{build, store_client, txn_from, FakeServices, STORE_T0};
    use ringsmtpd_plugin_api::{HookSet, Reply};

    use super::*;
    use crate::runtime::{run_on, Driver};

    fn on_runtime<T>(f: impl std::future::Future<Output = T>) -> T {
        run_on(Driver::Epoll, move || f).expect("runtime")
    }

    fn real(line: &str) -> (&'static str, Box<dyn Plugin>) {
        let name = line.split_whitespace().next().expect("name");
        let factory = ringsmtpd_plugins::find(name).expect("known plugin");
        (
            Box::leak(name.to_string().into_boxed_str()),
            build(factory, line, &[]).expect("builds"),
        )
    }

    /// The namespaces of the store's live keys, sorted.
    fn namespaces(svc: &FakeServices) -> Vec<String> {
        let now = STORE_T0 * 1000 + 1000;
        let mut names: Vec<String> = svc
            .store_table()
            .live_entries(now)
            .iter()
            .filter_map(|(k, _)| {
                let raw = k.as_bytes();
                let colon = raw.iter().position(|&b| b == b':')?;
                let len: usize = std::str::from_utf8(&raw[..colon]).ok()?.parse().ok()?;
                Some(String::from_utf8_lossy(raw.get(colon + 1..colon + 1 + len)?).into_owned())
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// karma and limit at connect, greylisting and limit at MAIL: one store round trip per hook,
    /// and each plugin decides as it would alone.
    #[test]
    fn state_plugins_share_one_round_trip_per_hook() {
        let chains = Chains::from_instances(
            vec![
                real("karma"),
                real("greylisting black_timeout 1"),
                real("limit concurrency 5 rate_conn 100/1m rate_msg_host 100/1m"),
            ],
            Duration::from_secs(30),
        );
        let (mut cx, svc) = store_client("192.0.2.7:4000", None);
        let (connect, mail) = on_runtime(async {
            let connect = chains.run(&mut cx, None, Call::Connect).await;
            let calls = svc.store_calls.get();
            let mut txn = txn_from("<someone@example.org>");
            let mail = chains.run(&mut cx, Some(&mut txn), Call::Mail).await;
            ((connect, calls), (mail, svc.store_calls.get() - calls))
        });
        assert_eq!(connect.0.outcome, Outcome::Declined);
        assert_eq!(connect.1, 1, "karma and limit at connect: one round trip");
        assert_eq!(mail.1, 1, "greylisting and limit at MAIL: one round trip");
        let Outcome::Done(Some(Reply { code, .. })) = &mail.0.outcome else {
            panic!("a first attempt is greylisted: {:?}", mail.0.outcome);
        };
        assert_eq!(*code, 451);
        assert_eq!(mail.0.plugin.as_deref(), Some("greylisting"));
        assert_eq!(namespaces(&svc), ["greylisting", "karma", "limit"]);
        assert!(!cx.planning(), "the plans end with their hook");
    }

    /// A test plugin that plans one `incr` of its own key and sends the same batch in its
    /// connect hook; it plans only after `Marker` ran, and may decide.
    struct Planner {
        key: &'static str,
        deny: bool,
        needs_mark: bool,
        /// What its hook saw: the incr's value.
        saw: Saw,
        ran: Rc<Cell<bool>>,
    }

    type Saw = Rc<RefCell<Vec<i64>>>;

    struct Mark;

    impl Planner {
        fn batch(&self) -> (Batch, Slot) {
            let mut b = Batch::new();
            let slot = b.incr(Key::new("t", &[self.key.as_bytes()]).unwrap(), 1, None);
            (b, slot)
        }
        async fn hook(&self, cx: &mut Cx) -> Outcome {
            self.ran.set(true);
            let (b, slot) = self.batch();
            let r = cx.store_planned(b).await.expect("store");
            self.saw.borrow_mut().push(r.int(slot));
            if self.deny {
                Outcome::Deny(Some("no".into()))
            } else {
                Outcome::Declined
            }
        }
    }

    impl Plugin for Planner {
        fn hooks(&self) -> HookSet {
            HookSet::of(&[Hook::Connect])
        }
        fn store_hooks(&self) -> HookSet {
            HookSet::of(&[Hook::Connect])
        }
        fn store_ahead(&self, cx: &mut Cx, _at: &Ahead<'_>) -> Option<Batch> {
            (!self.needs_mark || cx.conn.notes.contains::<Mark>()).then(|| self.batch().0)
        }
        fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
            Step::pending(self.hook(cx))
        }
    }

    /// Sets `Mark` at connect, plans nothing.
    struct Marker;

    impl Plugin for Marker {
        fn hooks(&self) -> HookSet {
            HookSet::of(&[Hook::Connect])
        }
        fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
            cx.conn.notes.set(Mark);
            Step::DECLINED
        }
    }

    fn planner(key: &'static str, deny: bool) -> (Planner, Saw, Rc<Cell<bool>>) {
        let saw = Rc::new(RefCell::new(Vec::new()));
        let ran = Rc::new(Cell::new(false));
        let p = Planner {
            key,
            deny,
            needs_mark: true,
            saw: saw.clone(),
            ran: ran.clone(),
        };
        (p, saw, ran)
    }

    fn value(svc: &FakeServices, key: &str) -> Option<Vec<u8>> {
        let mut b = Batch::new();
        let slot = b.get(Key::new("t", &[key.as_bytes()]).unwrap());
        let r = svc.store_table().apply(&b, STORE_T0 * 1000).expect("get");
        r.value(slot).map(<[u8]>::to_vec)
    }

    /// Plans are made when the chain reaches the first planner (after `Marker`, whose note they
    /// need), go in one round trip, and are applied even for a planner after the one that
    /// decides: the documented price of one round trip per hook.
    #[test]
    fn plans_start_at_the_first_planner_and_apply_even_past_the_decision() {
        let (a, a_saw, _) = planner("a", true);
        let (b, b_saw, b_ran) = planner("b", false);
        let chains = Chains::from_instances(
            vec![
                ("marker", Box::new(Marker)),
                ("a", Box::new(a)),
                ("b", Box::new(b)),
            ],
            Duration::from_secs(30),
        );
        let (mut cx, svc) = store_client("192.0.2.8:4000", None);
        let d = on_runtime(chains.run(&mut cx, None, Call::Connect));
        assert_eq!(d.plugin.as_deref(), Some("a"));
        assert_eq!(svc.store_calls.get(), 1, "both plans in one round trip");
        assert_eq!(*a_saw.borrow(), [1], "a's hook got its planned reply");
        assert!(!b_ran.get() && b_saw.borrow().is_empty());
        assert_eq!(value(&svc, "a").as_deref(), Some(&b"1"[..]));
        assert_eq!(
            value(&svc, "b").as_deref(),
            Some(&b"1"[..]),
            "b's plan was applied"
        );
    }

    /// With one planner in the chain there is nothing to share: it sends its batch itself, so a
    /// chain that decides before it never applies it.
    #[test]
    fn a_lone_planner_is_not_planned_for() {
        struct Deny;
        impl Plugin for Deny {
            fn hooks(&self) -> HookSet {
                HookSet::of(&[Hook::Connect])
            }
            fn connect<'a>(&'a self, _cx: &'a mut Cx) -> Step<'a> {
                Step::Ready(Outcome::Deny(None))
            }
        }
        let (b, _, b_ran) = planner("b", false);
        let chains = Chains::from_instances(
            vec![("deny", Box::new(Deny)), ("b", Box::new(b))],
            Duration::from_secs(30),
        );
        let (mut cx, svc) = store_client("192.0.2.9:4000", None);
        on_runtime(chains.run(&mut cx, None, Call::Connect));
        assert_eq!(svc.store_calls.get(), 0);
        assert!(!b_ran.get());
        assert_eq!(value(&svc, "b"), None);
    }

    /// A store that is down fails every plan of the round trip; each plugin's hook gets the
    /// error (and applies its own fail policy), and nothing is sent twice.
    #[test]
    fn a_failed_round_trip_reaches_every_planner() {
        let (a, a_saw, _) = planner("a", false);
        let (b, b_saw, b_ran) = planner("b", false);
        let (a, b) = (
            Planner {
                needs_mark: false,
                ..a
            },
            Planner {
                needs_mark: false,
                ..b
            },
        );
        struct Failing(Planner);
        impl Plugin for Failing {
            fn hooks(&self) -> HookSet {
                self.0.hooks()
            }
            fn store_hooks(&self) -> HookSet {
                self.0.store_hooks()
            }
            fn store_ahead(&self, cx: &mut Cx, at: &Ahead<'_>) -> Option<Batch> {
                self.0.store_ahead(cx, at)
            }
            fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
                Step::pending(async move {
                    let (batch, _) = self.0.batch();
                    match cx.store_planned(batch).await {
                        Ok(_) => Outcome::Declined,
                        Err(e) => Outcome::DenySoft(Some(e.to_string().into())),
                    }
                })
            }
        }
        let chains = Chains::from_instances(
            vec![("a", Box::new(Failing(a))), ("b", Box::new(Failing(b)))],
            Duration::from_secs(30),
        );
        let (mut cx, svc) = store_client("192.0.2.10:4000", None);
        *svc.store_fails.borrow_mut() = Some(ringsmtpd_plugin_api::store::StoreError::Unavailable(
            "down".into(),
        ));
        let d = on_runtime(chains.run(&mut cx, None, Call::Connect));
        assert_eq!(d.plugin.as_deref(), Some("a"));
        assert!(matches!(d.outcome, Outcome::DenySoft(_)));
        assert_eq!(svc.store_calls.get(), 1, "the hook used the failed plan");
        assert!(!b_ran.get() && a_saw.borrow().is_empty() && b_saw.borrow().is_empty());
    }
}
