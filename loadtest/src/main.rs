//! `smtp-loadtest`: parse the options, run, print the report (table or JSON), write the SVG.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use smtp_loadtest::config::USAGE;
use smtp_loadtest::output;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("smtp-loadtest {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let cfg = match smtp_loadtest::parse_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smtp-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(ip) = cfg
        .targets
        .iter()
        .map(|t| t.ip())
        .find(|ip| !smtp_loadtest::config::is_loopback(*ip))
    {
        eprintln!(
            "smtp-loadtest: warning: {ip} is not a loopback address (allowed by --allow-host)"
        );
    }
    // A first SIGINT/SIGTERM stops starting messages; in-flight ones finish (up to --timeout)
    // and the report is printed. A second one ends the process at once, without a report
    // (exit status 128 + the signal), for a run stuck on a server that does not answer. The
    // exit is registered first, so the first signal finds the flag still clear.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, stop.clone());
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let report = match smtp_loadtest::run(&cfg, stop) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("smtp-loadtest: {e}");
            return ExitCode::from(1);
        }
    };
    if cfg.json {
        println!("{}", output::json(&report));
    } else {
        print!("{}", output::table(&report));
    }
    if let Some(path) = &cfg.svg {
        if let Err(e) = std::fs::write(path, output::svg(&report)) {
            eprintln!("smtp-loadtest: {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if let Some(path) = &cfg.accepted_log {
        if let Err(e) = std::fs::write(path, output::accepted(&report)) {
            eprintln!("smtp-loadtest: {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    let s = &report.stats;
    if s.sessions == 0 && s.conn_failed > 0 {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
