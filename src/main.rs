//! The `ringsmtpd` binary: parse the command line, load and check the config directory, bind,
//! drop root (`privileges`), start the workers, then wait for signals (HUP reloads, TERM/INT
//! drain and stop).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;

use ringsmtpd::config::ListenSpec;
use ringsmtpd::control::Control;
use ringsmtpd::log;
use ringsmtpd::privileges::{self, Plan};
use ringsmtpd::runtime::{self, Driver};
use ringsmtpd::session::Session;
use ringsmtpd::snapshot::Snapshot;
use ringsmtpd::{listener, worker};
use ringsmtpd_plugin_api::owner;
use ringsmtpd_plugin_api::{Connection, Level};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`; kept across fork
/// and exec, so the helper programs it starts inherit it). mimalloc asks for huge pages on its
/// arenas (`MADV_HUGEPAGE`), and with THP in `madvise` mode (this machine, and many
/// distributions) every 2 MiB region of the heap it touches becomes resident as a whole, and
/// khugepaged later folds sparse regions into whole huge pages too. The idle sessions' small
/// allocations spread over those regions then cost more RSS than their bytes, by an
/// amount that varies with the kernel's supply of free huge pages: measured, 6 to 13 MiB more
/// RSS per process before any connection, and 300 to 600 bytes more per idle connection at
/// 5,000 to 100,000 (bench/idle_100k.md). Returns whether the kernel took it.
fn no_transparent_huge_pages() -> bool {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and reads or writes no memory of ours;
    // it only sets a flag on this process's address space.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

const USAGE: &str = "\
usage: ringsmtpd [options]
  --config DIR        config directory (default: $QPSMTPD_CONFIG, else ./config)
  --listen ADDR:PORT  listen here instead of the `listen` file (repeatable; add ' proxy')
  --threads N         worker threads (default: available cores)
  --driver D          auto | uring | epoll (default auto: io_uring if the kernel allows)
  --join              share ports another ringsmtpd already listens on (SO_REUSEPORT)
  --user NAME         started as root, drop to this user after binding (default: the
                      config file `user`; `root` stays root on purpose)
  --group NAME        and to this group (default: the config file `group`, else the
                      user's primary group)
  --check             check the config for mistakes (errors exit 1), print the chain per hook
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
  (defaults: --dir ssl, --host this host's name, --days 365)

usage: ringsmtpd dkim-keygen DOMAIN SELECTOR [--ed25519] [--bits N] [--force] [--config DIR]
  writes a DKIM signing key for the dkim plugin (qpsmtpd's dkim_key_gen.sh):
  DIR/dkim/DOMAIN/private (mode 0600), selector and dns, and prints the TXT record to
  publish at SELECTOR._domainkey.DOMAIN (defaults: RSA, --bits 2048, --config as above);
  an existing key is replaced only with --force

usage: ringsmtpd karma [--config DIR] list | show IP | capture IP [DAYS] | release IP
  the karma plugin's history in the configured state store (qpsmtpd's karma_tool): list
  every IP (embedded store), show one, capture puts an IP in the penalty box (for DAYS,
  default the karma line's penalty_days) and counts a naughty connection, release takes it
  out and forgets its naughty connections. With the embedded store the server must be
  stopped (the command refuses while one runs); with Redis it works live";

struct Args {
    config: PathBuf,
    listen: Vec<ListenSpec>,
    threads: usize,
    driver: Driver,
    join: bool,
    check: bool,
    stdio: bool,
    user: Option<String>,
    group: Option<String>,
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
        user: None,
        group: None,
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
            "--user" | "-u" => args.user = Some(value("--user")?),
            "--group" | "-g" => args.group = Some(value("--group")?),
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
    no_transparent_huge_pages();
    match std::env::args().nth(1).as_deref() {
        Some("tls-cert") => return tls_cert(),
        Some("dkim-keygen") => return dkim_keygen(),
        Some("karma") => return karma(),
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
    // Decided before the plugins are built: what they create as root goes to that account.
    // `--stdio` runs as whoever started it (tcpserver -u/-g, inetd's user field).
    let plan = if args.stdio {
        Ok(Plan::Keep { warning: None })
    } else {
        let cfg = ringsmtpd::config::ConfigDir::new(&args.config);
        privileges::plan(&cfg, &args.config, args.user.clone(), args.group.clone())
    };
    if let Ok(Plan::Drop(a)) = &plan {
        owner::set_run_as(Some((a.uid, a.gid)));
    }
    if args.check {
        // --check does not drop; a plan a start would refuse is one of its errors.
        let runs_as = plan.as_ref().map(Plan::describe).map_err(|e| e.to_string());
        return ringsmtpd::check::run(&args.config, args.stdio, runs_as);
    }
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("ringsmtpd: {e}");
            return ExitCode::from(1);
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
    // The state store is read now, so a damaged file stops the start (`--check` reports it).
    if let Err(e) = ringsmtpd::store::open(&snapshot.settings.store) {
        eprintln!("ringsmtpd: {e}");
        return ExitCode::from(1);
    }
    // Spool files are unlinked off the workers; what a crashed process left is removed now.
    ringsmtpd::spool::install_reaper();
    match ringsmtpd::spool::clean(&snapshot.settings.spool_dir) {
        Ok(0) => {}
        Ok(n) => log!(
            Level::Notice,
            0,
            "core",
            "removed {n} spool files left by a stopped process"
        ),
        Err(e) => log!(
            Level::Warn,
            0,
            "core",
            "cannot clean {}: {e}",
            snapshot.settings.spool_dir.display()
        ),
    }
    let code = if args.stdio {
        stdio(snapshot, chains, args.driver)
    } else {
        drop(chains); // each worker builds its own
        match serve(args, snapshot, plan) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringsmtpd: {e}");
                ExitCode::from(1)
            }
        }
    };
    ringsmtpd::store::close();
    // Spool files and log lines are removed and written by background threads: let them
    // finish.
    ringsmtpd::spool::flush(std::time::Duration::from_secs(2));
    ringsmtpd_plugins::logging::flush_all(std::time::Duration::from_secs(2));
    code
}

fn serve(args: Args, snapshot: Snapshot, plan: Plan) -> Result<(), String> {
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
            let sock = listener::bind(spec, snapshot.settings.listen_backlog)
                .map_err(|e| format!("cannot listen on {}: {e}", spec.addr))?;
            socks.push((sock, spec.clone()));
        }
        per_worker.push(socks);
    }
    let driver = args.driver.resolve();
    let snapshot_affinity = snapshot.affinity;
    if let Some(addr) = snapshot.metrics {
        // Bound before the workers start, so a taken port fails the start, not a scrape.
        ringsmtpd::metrics::serve(addr, args.join)
            .map_err(|e| format!("metrics listener {addr}: {e}"))?;
    }
    // Everything that needs root is open: drop before any thread that serves exists.
    let dropped = drop_privileges(&plan)?;
    let control = Control::new(snapshot);
    let placement = placement(snapshot_affinity, args.threads);
    let handles = worker::start(&control, driver, per_worker, placement)?;
    if let Some(a) = &dropped {
        // The workers and their pools started after the drop; prove it before serving on.
        let threads = privileges::check_threads(a).inspect_err(|_| control.shutdown())?;
        log!(
            Level::Notice,
            0,
            "core",
            "running as {a}: {threads} threads checked"
        );
    }
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

/// Where the workers run (config `cpu_affinity`), logged; `None`: wherever the scheduler
/// puts them.
fn placement(
    affinity: ringsmtpd::affinity::Affinity,
    workers: usize,
) -> Option<ringsmtpd::affinity::Placement> {
    use ringsmtpd::affinity::{allowed_cpus, Affinity, Placement};
    if affinity == Affinity::Off {
        return None;
    }
    let allowed = match allowed_cpus() {
        Ok(cpus) => cpus,
        Err(e) => {
            log!(
                Level::Warn,
                0,
                "core",
                "cpu_affinity: cannot read the allowed CPUs: {e}; workers not pinned"
            );
            return None;
        }
    };
    let placement = Placement::plan(affinity, workers, &allowed);
    match &placement {
        Some(p) => log!(
            Level::Info,
            0,
            "core",
            "cpu_affinity {affinity}: workers on CPUs {:?}",
            p.cpus
        ),
        None => log!(
            Level::Notice,
            0,
            "core",
            "cpu_affinity {affinity}: {workers} workers but {} CPUs allowed; workers not pinned",
            allowed.len()
        ),
    }
    placement
}

/// Carries out `plan` (the ports are bound and the plugins built); returns the account when
/// the process dropped to one.
fn drop_privileges(plan: &Plan) -> Result<Option<privileges::Account>, String> {
    match plan {
        Plan::Drop(a) => {
            privileges::drop_to(a)?;
            owner::set_run_as(None);
            privileges::check_required(a, &owner::take_required())?;
            Ok(Some(a.clone()))
        }
        Plan::StayRoot => {
            log!(
                Level::Warn,
                0,
                "core",
                "running as root: the config file `user` says root"
            );
            Ok(None)
        }
        Plan::Keep { warning } => {
            if let Some(w) = warning {
                log!(Level::Warn, 0, "core", "{w}");
            }
            Ok(None)
        }
    }
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

/// `ringsmtpd dkim-keygen`: a DKIM key in the dkim plugin's layout and its DNS record.
fn dkim_keygen() -> ExitCode {
    use ringsmtpd_plugins::dkim::keygen;
    let args: Vec<String> = std::env::args().skip(2).collect();
    let config = std::env::var_os("QPSMTPD_CONFIG").map_or_else(|| "config".into(), PathBuf::from);
    let request = match keygen::parse_args(&args, config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringsmtpd dkim-keygen: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match keygen::generate(&request) {
        Ok(generated) => {
            for f in generated.files {
                println!("wrote {}", f.display());
            }
            println!("publish this record in DNS:\n{}", generated.record);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringsmtpd dkim-keygen: {e}");
            ExitCode::from(1)
        }
    }
}

/// `ringsmtpd karma`: qpsmtpd's karma_tool on the state store (`src/karma_tool.rs`).
fn karma() -> ExitCode {
    use ringsmtpd::karma_tool;
    let args: Vec<String> = std::env::args().skip(2).collect();
    let (cmd, config) = match karma_tool::parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("ringsmtpd karma: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match karma_tool::run(&cmd, &config) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringsmtpd karma: {e}");
            ExitCode::from(1)
        }
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn transparent_huge_pages_are_off_after_the_call() {
        assert!(super::no_transparent_huge_pages());
        // SAFETY: PR_GET_THP_DISABLE takes plain integers and returns the flag.
        let off = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(off, 1, "PR_GET_THP_DISABLE after the call");
    }
}
