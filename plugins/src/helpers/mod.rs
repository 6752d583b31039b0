//! Helpers several built-in plugins share that are not part of the plugin API (what a
//! third-party plugin needs is in `ringsmtpd_plugin_api`: `Common`, `args`, `cidr`, `dnsutil`,
//! `mime`, `testing`).

pub(crate) mod backend;
pub(crate) mod command_scanner;
pub(crate) mod deadline;
pub(crate) mod limits;
pub(crate) mod matchers;
pub(crate) mod scan_metrics;
pub(crate) mod scanner;
