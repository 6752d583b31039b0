//! The `ringsmtpd` binary: parse the command line, load and check the config directory, bind,
//! start the workers, then wait for signals (HUP reloads, TERM/INT drain and stop).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;

use ringsmtpd::config::ListenSpec;
use ringsmtpd::control::Control;
use ringsmtpd::log;
use ringsmtpd::runtime::{self, Driver};
use ringsmtpd::session::Session;
use ringsmtpd::snapshot::Snapshot;
use ringsmtpd::{listener, worker};
use ringsmtpd_plugin_api::{Connection, Level};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: ringsmtpd [options]
  --config DIR        config directory (default: $QPSMTPD_CONFIG, else ./config)
  --listen ADDR:PORT  listen here instead of the `listen` file (repeatable; add ' proxy')
  --threads N         worker threads (default: available cores)
  --driver D          auto | uring | epoll (default auto: io_uring if the kernel allows)
  --join              share ports another ringsmtpd already listens on (SO_REUSEPORT)
  --check             validate the config, print the plugin chain per hook, exit
  --stdio             one session on stdin/stdout (tcpserver, inetd); peer from TCPREMOTEIP...
  --version           print the version
  --help              print this text

usage: ringsmtpd help [PLUGIN]
  lists the plugins with a line each, or prints a plugin's manual page (Markdown, the header
  of its source; also docs/plugins/PLUGIN.md). PLUGIN as in config/plugins: queue/maildir,
  rcpt_ok:2, check_badmailfrom

usage: ringsmtpd tls-cert [--dir DIR] [--host NAME] [--days N]
  writes a self-signed CA and a server certificate for the tls plugin line (qpsmtpd's
  tls_cert): DIR/qpsmtpd-ca.crt, qpsmtpd-ca.key, qpsmtpd-server.crt, qpsmtpd-server.key
  (defaults: --dir ssl, --host this host's name, --days 365)";

struct Args {
    config: PathBuf,
    listen: Vec<ListenSpec>,
    threads: usize,
    driver: Driver,
    join: bool,
    check: bool,
    stdio: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: std::env::var_os("QPSMTPD_CONFIG").map_or_else(|| "config".into(), PathBuf::from),
        listen: Vec::new(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        driver: Driver::Auto,
        join: false,
        check: false,
        stdio: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--config" | "-c" => args.config = value("--config")?.into(),
            "--listen" | "-l" => args.listen.extend(ListenSpec::parse(&value("--listen")?)?),
            "--threads" | "-j" => {
                args.threads = value("--threads")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or("--threads takes a number from 1 to 1024")?
            }
            "--driver" => {
                args.driver = match value("--driver")?.as_str() {
                    "auto" => Driver::Auto,
                    "uring" | "io_uring" => Driver::Uring,
                    "epoll" | "legacy" => Driver::Epoll,
                    d => return Err(format!("unknown driver '{d}': auto, uring or epoll")),
                }
            }
            "--join" => args.join = true,
            "--check" => args.check = true,
            "--stdio" => args.stdio = true,
            "--version" | "-V" => {
                println!("ringsmtpd {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("tls-cert") => return tls_cert(),
        Some("help") => return help(),
        _ => {}
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ringsmtpd: {e}");
            return ExitCode::from(2);
        }
    };
    let (snapshot, chains) = match Snapshot::load(&args.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringsmtpd: config error: {e}");
            return ExitCode::from(1);
        }
    };
    log::set_level(snapshot.settings.loglevel);
    // The state store is read now, so a damaged file stops the start (and `--check`).
    if let Err(e) = ringsmtpd::store::open(&snapshot.settings.store) {
        eprintln!("ringsmtpd: {e}");
        return ExitCode::from(1);
    }
    if args.check {
        ringsmtpd::store::close();
        println!("config {} is valid", args.config.display());
        if snapshot.tls.is_some() {
            println!("  tls                    STARTTLS and tls listeners (built into the core)");
        }
        for (hook, names) in chains.describe() {
            println!("  {:<22} {}", hook.name(), names.join(" -> "));
        }
        return ExitCode::SUCCESS;
    }
    let code = if args.stdio {
        stdio(snapshot, chains, args.driver)
    } else {
        drop(chains); // each worker builds its own
        match serve(args, snapshot) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringsmtpd: {e}");
                ExitCode::from(1)
            }
        }
    };
    ringsmtpd::store::close();
    // Logging plugins write from background threads: let them finish the last lines.
    ringsmtpd_plugins::logging::flush_all(std::time::Duration::from_secs(2));
    code
}

fn serve(args: Args, snapshot: Snapshot) -> Result<(), String> {
    let specs = if args.listen.is_empty() {
        snapshot.settings.listen.clone()
    } else {
        args.listen.clone()
    };
    if !args.join {
        for spec in &specs {
            listener::check_free(spec.addr).map_err(|e| {
                format!(
                    "cannot listen on {}: {e} (another server there? --join shares it)",
                    spec.addr
                )
            })?;
        }
    }
    let mut per_worker = Vec::with_capacity(args.threads);
    for _ in 0..args.threads {
        let mut socks = Vec::new();
        for spec in &specs {
            let sock =
                listener::bind(spec).map_err(|e| format!("cannot listen on {}: {e}", spec.addr))?;
            socks.push((sock, spec.clone()));
        }
        per_worker.push(socks);
    }
    let driver = args.driver.resolve();
    if let Some(addr) = snapshot.metrics {
        // Bound before the workers start, so a taken port fails the start, not a scrape.
        ringsmtpd::metrics::serve(addr).map_err(|e| format!("metrics listener {addr}: {e}"))?;
    }
    let control = Control::new(snapshot);
    let handles = worker::start(&control, driver, per_worker)?;
    let addrs: Vec<String> = specs
        .iter()
        .map(|s| format!("{}{}", s.addr, if s.proxy { " (proxy)" } else { "" }))
        .collect();
    log!(
        Level::Notice,
        0,
        "core",
        "ringsmtpd {} listening on {} with {} workers, driver {:?}",
        env!("CARGO_PKG_VERSION"),
        addrs.join(", "),
        args.threads,
        driver
    );
    signals(&control, &args.config)?;
    for h in handles {
        let _ = h.join();
    }
    log!(Level::Notice, 0, "core", "stopped");
    Ok(())
}

/// Waits for signals on the main thread: HUP reloads, TERM and INT stop.
fn signals(control: &Arc<Control>, dir: &std::path::Path) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])
        .map_err(|e| format!("signals: {e}"))?;
    for sig in signals.forever() {
        if sig == SIGHUP {
            let loaded = Snapshot::load(dir).and_then(|(snap, _)| {
                // A new store directory is opened before any worker sees the new config.
                ringsmtpd::store::open(&snap.settings.store)
                    .map(|()| snap)
                    .map_err(|reason| ringsmtpd_plugin_api::ConfigError {
                        file: format!("{}/state_store", dir.display()),
                        line: 0,
                        reason,
                    })
            });
            match loaded {
                Ok(snap) => {
                    log::set_level(snap.settings.loglevel);
                    control.replace(snap);
                    log!(
                        Level::Notice,
                        0,
                        "core",
                        "config reloaded from {}",
                        dir.display()
                    );
                }
                Err(e) => log!(
                    Level::Error,
                    0,
                    "core",
                    "reload refused, old config kept: {e}"
                ),
            }
        } else {
            log!(Level::Notice, 0, "core", "shutting down: draining sessions");
            control.shutdown();
            return Ok(());
        }
    }
    Ok(())
}

/// `--stdio`: one session on stdin/stdout, the peer told by tcpserver's environment
/// (TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP, TCPLOCALPORT), as qmail-smtpd runs.
fn stdio(snapshot: Snapshot, chains: ringsmtpd::hooks::Chains, driver: Driver) -> ExitCode {
    let addr = |ip: &str, port: &str| -> SocketAddr {
        let ip = std::env::var(ip).ok().and_then(|v| v.parse().ok());
        let port = std::env::var(port)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        SocketAddr::new(ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()), port)
    };
    let remote = addr("TCPREMOTEIP", "TCPREMOTEPORT");
    let local = addr("TCPLOCALIP", "TCPLOCALPORT");
    let run = runtime::run_on(driver, || async move {
        let metrics = ringsmtpd::metrics::register();
        let env = Rc::new(worker::env_with(&snapshot, chains, Rc::default(), metrics));
        let io = ringsmtpd::transport::Stdio {
            timeout: env.settings.timeout,
        };
        let mut conn = Connection::new(1, remote, local);
        conn.remote_host = std::env::var("TCPREMOTEHOST")
            .ok()
            .filter(|h| !h.is_empty());
        Session::new(env, io, conn, &[]).run().await;
    });
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringsmtpd: {e}");
            ExitCode::from(1)
        }
    }
}

/// `ringsmtpd help [PLUGIN]`: the plugin list, or one plugin's manual page.
fn help() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(2).collect();
    match args.as_slice() {
        [] => print!("{}", ringsmtpd_plugins::docs::index()),
        [name] => match ringsmtpd_plugins::help(name) {
            Some(page) => print!("{page}"),
            None => {
                let near: Vec<&str> = ringsmtpd_plugins::docs()
                    .into_iter()
                    .map(|(known, _)| known)
                    .filter(|known| known.contains(name.as_str()))
                    .collect();
                let hint = match near.as_slice() {
                    [] => "`ringsmtpd help` lists them".to_string(),
                    _ => format!("did you mean {}?", near.join(", ")),
                };
                eprintln!("ringsmtpd help: no plugin '{name}' ({hint})");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("ringsmtpd help: one plugin name at most\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// `ringsmtpd tls-cert`: a self-signed CA and server certificate, like qpsmtpd's `tls_cert`.
fn tls_cert() -> ExitCode {
    let (mut dir, mut host, mut days) = (PathBuf::from("ssl"), None, 365u32);
    let mut it = std::env::args().skip(2);
    while let Some(arg) = it.next() {
        let value = it.next();
        match (arg.as_str(), value) {
            ("--dir", Some(v)) => dir = v.into(),
            ("--host", Some(v)) => host = Some(v),
            ("--days", Some(v)) => match v.parse() {
                Ok(n) if n > 0 => days = n,
                _ => {
                    eprintln!("ringsmtpd tls-cert: --days takes a positive number");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("ringsmtpd tls-cert: unknown or incomplete argument '{arg}'\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let host = host.unwrap_or_else(ringsmtpd::config::system_hostname);
    match ringsmtpd::tls::generate(&dir, &host, days) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringsmtpd tls-cert: {e}");
            ExitCode::from(1)
        }
    }
}
