//! A validated configuration ([`Snapshot`]): the config directory loaded and checked once, on
//! the main thread, before any worker sees it (at start and at every reload).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ringsmtpd_plugin_api::owner::{self, Access};
use ringsmtpd_plugin_api::ConfigError;

use crate::config::{plugin_lines, ConfigDir, PluginLine, Settings};
use crate::hooks::Chains;
use crate::session::AuthPolicy;
use crate::tls::TlsSetup;

/// A validated configuration: settings, plugin lines (`config/logging` first, then
/// `config/plugins`, as qpsmtpd loads them), the TLS setup, and the directory they came from.
pub struct Snapshot {
    pub settings: Arc<Settings>,
    pub plugins: Vec<PluginLine>,
    /// From the `tls` line of `config/plugins`: TLS is built into the core, configured the
    /// way qpsmtpd's `tls` plugin is.
    pub tls: Option<TlsSetup>,
    pub auth: AuthPolicy,
    /// Where the metrics listener goes (config `metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Worker CPU placement (config `cpu_affinity`), applied at start only.
    pub affinity: crate::affinity::Affinity,
    pub config: Arc<ConfigDir>,
}

impl Snapshot {
    /// Loads and validates `dir`: every file parses, the certificates load and every plugin
    /// builds (once, here, so a bad config is refused before any worker sees it).
    pub fn load(dir: &Path) -> Result<(Snapshot, Chains), ConfigError> {
        Snapshot::load_from(Arc::new(ConfigDir::new(dir)), |_| true)
    }

    /// [`Snapshot::load`] from an open config directory, with the plugin lines `keep` accepts
    /// (`--check` leaves out the ones it already reported, to check the rest).
    pub fn load_from(
        config: Arc<ConfigDir>,
        keep: impl Fn(&PluginLine) -> bool,
    ) -> Result<(Snapshot, Chains), ConfigError> {
        let dir = config.dir().to_path_buf();
        let settings = Settings::load(&*config)?;
        // Created here, so a reload that moves it works too; owned by the account the
        // server drops to (see `privileges`), which must be able to write it.
        owner::create_dir_all(&settings.spool_dir).map_err(|e| ConfigError {
            file: format!("{}/spool_dir", dir.display()),
            line: 0,
            reason: format!("{}: {e}", settings.spool_dir.display()),
        })?;
        owner::require(&settings.spool_dir, Access::Write);
        let mut plugins = plugin_lines(&*config, "logging")?;
        plugins.extend(plugin_lines(&*config, "plugins")?);
        plugins.retain(|l| keep(l));
        let mut tls = None;
        for line in plugins.iter().filter(|l| l.base_name() == "tls") {
            if tls.is_some() {
                return Err(line.origin.error("tls: configured twice"));
            }
            tls = Some(TlsSetup::load(line, &*config)?);
        }
        plugins.retain(|l| l.base_name() != "tls");
        if tls.is_none() {
            if let Some(spec) = settings.listen.iter().find(|s| s.tls) {
                let reason = format!(
                    "listener {} is marked tls, but config/plugins has no tls line",
                    spec.addr
                );
                return Err(ConfigError {
                    file: format!("{}/listen", dir.display()),
                    line: 0,
                    reason,
                });
            }
        }
        let auth = AuthPolicy::load(&*config)?;
        let metrics = crate::metrics::listen_addr(&*config)?;
        let affinity = crate::affinity::load(&*config)?;
        let settings = Arc::new(settings);
        let snapshot = Snapshot {
            settings,
            plugins,
            tls,
            auth,
            metrics,
            affinity,
            config,
        };
        let chains = snapshot.chains()?;
        Ok((snapshot, chains))
    }

    /// The plugin chains for one worker.
    pub fn chains(&self) -> Result<Chains, ConfigError> {
        let timeout = self.settings.plugin_timeout;
        Chains::build(
            &self.plugins,
            &*self.config,
            ringsmtpd_plugins::find,
            timeout,
        )
    }
}
