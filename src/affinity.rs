//! Worker CPU placement (config `cpu_affinity`): each worker thread pinned to a CPU of its own,
//! and optionally its listeners steered so the kernel hands a connection to the worker on the
//! CPU that received it (SO_INCOMING_CPU). Read at start only.
//!
//! The CPUs are the ones the process may run on (`sched_getaffinity`, so `taskset` and cgroup
//! cpusets are respected): worker `i` gets the `i`-th of them. With fewer allowed CPUs than
//! workers nothing is pinned or steered (two workers on one CPU would only take turns).

use std::io;

use ringsmtpd_plugin_api::{ConfigError, ConfigSource};

/// The `cpu_affinity` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// The scheduler places the workers (`off`).
    Off,
    /// Worker `i` runs only on the `i`-th allowed CPU (`pin`).
    Pin,
    /// [`Affinity::Pin`], and each worker's listeners carry SO_INCOMING_CPU with its CPU:
    /// among the SO_REUSEPORT sockets of a port the kernel picks one whose CPU is the one the
    /// connection's SYN was processed on (Linux 6.2+; older kernels ignore it for the choice)
    /// (`steer`).
    Steer,
}

/// The default when the file is absent: `steer`, measured cheapest (bench/io_uring_cycles.md,
/// 2026-12-05 07:30): CPU per message under smtp-source 0.95x -> 0.81x smtp-sink's with
/// connection reuse, 1.12x -> 0.83x with one message per connection; `pin` alone was dearer
/// than `off` (a pinned worker cannot move away from a busy core).
pub const DEFAULT: Affinity = Affinity::Steer;

/// Reads `cpu_affinity`: `off`, `pin` or `steer`.
pub fn load(cfg: &dyn ConfigSource) -> Result<Affinity, ConfigError> {
    let Some(line) = crate::config::single(cfg, "cpu_affinity")? else {
        return Ok(DEFAULT);
    };
    NAMES
        .iter()
        .find(|(name, _)| *name == line.text)
        .map(|&(_, affinity)| affinity)
        .ok_or_else(|| {
            line.error(format!(
                "must be 'off', 'pin' or 'steer', not '{}'",
                line.text
            ))
        })
}

/// The config file's words for each value.
const NAMES: [(&str, Affinity); 3] = [
    ("off", Affinity::Off),
    ("pin", Affinity::Pin),
    ("steer", Affinity::Steer),
];

impl std::fmt::Display for Affinity {
    /// The config file's word (`off`, `pin`, `steer`), as the log lines name it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = NAMES
            .iter()
            .find(|(_, a)| a == self)
            .map_or("?", |(n, _)| n);
        f.write_str(name)
    }
}

/// Where each worker goes: one CPU per worker, with whether its listeners are steered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub cpus: Vec<usize>,
    pub steer: bool,
}

impl Placement {
    /// The placement of `workers` workers over `allowed` (the process's CPUs, ascending);
    /// `None` when nothing is to be pinned: `off`, or fewer CPUs than workers.
    pub fn plan(affinity: Affinity, workers: usize, allowed: &[usize]) -> Option<Placement> {
        if affinity == Affinity::Off || allowed.len() < workers {
            return None;
        }
        Some(Placement {
            cpus: allowed[..workers].to_vec(),
            steer: affinity == Affinity::Steer,
        })
    }
}

/// The CPUs this process may run on, ascending.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array for which all zeroes is a valid (empty) value;
    // sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into it, the size passed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads bit `cpu` of the set; every `cpu` here is below its bit count.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Restricts the calling thread to `cpu`. Threads it starts afterwards (its blocking pool,
/// the kernel's io_uring workers) inherit that.
pub fn pin_current(cpu: usize) -> io::Result<()> {
    // SAFETY: as in `allowed_cpus`; CPU_SET writes bit `cpu`, checked to be within the set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks a listening socket as the one for connections received on `cpu` (SO_INCOMING_CPU).
pub fn steer(listener: &std::net::TcpListener, cpu: usize) -> io::Result<()> {
    socket2::SockRef::from(listener).set_cpu_affinity(cpu)
}

/// Connections a [`BalanceWatch`] window spans: enough that an even split cannot look lopsided
/// by chance.
const WATCH_CONNECTIONS: u64 = 1_000;

/// The share of a window's connections one worker may take before steering is reported as
/// funnelling them: 90%, where the port's hash would give each of two workers about half.
const WATCH_SHARE: f64 = 0.9;

/// With `steer`, watches how the connections fall on the workers. The kernel steers a
/// connection to the worker on the CPU that processed its SYN, so when one CPU receives them
/// all (a network card with one receive queue and no RPS, or local clients running on one
/// core) one worker serves everything while the others idle. The server keeps serving, on
/// fewer cores: the watch tells the administrator, who can set `cpu_affinity off`.
#[derive(Default)]
pub struct BalanceWatch {
    /// Each worker's accepted connections when the current window began.
    start: Vec<u64>,
    /// Set once reported: one line per process life, not one per window.
    reported: bool,
}

impl BalanceWatch {
    /// Takes every worker's connections accepted so far (in any order) and returns the share of
    /// the last window that went to one worker, with the window's size, when a window of
    /// [`WATCH_CONNECTIONS`] closes with one worker above [`WATCH_SHARE`]; once only.
    pub fn observe(&mut self, accepted: &[u64]) -> Option<(f64, u64)> {
        if self.reported || accepted.len() < 2 {
            return None;
        }
        if self.start.len() != accepted.len() {
            self.start = vec![0; accepted.len()]; // the first window: since the workers started
        }
        let deltas: Vec<u64> = accepted
            .iter()
            .zip(&self.start)
            .map(|(now, then)| now.saturating_sub(*then))
            .collect();
        let total: u64 = deltas.iter().sum();
        if total < WATCH_CONNECTIONS {
            return None;
        }
        self.start = accepted.to_vec();
        let top = deltas.iter().copied().max().unwrap_or(0) as f64 / total as f64;
        if top < WATCH_SHARE {
            return None;
        }
        self.reported = true;
        Some((top, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_per_allowed_cpu_in_order() {
        assert_eq!(
            Placement::plan(Affinity::Pin, 2, &[2, 5, 7]),
            Some(Placement {
                cpus: vec![2, 5],
                steer: false
            })
        );
        assert_eq!(
            Placement::plan(Affinity::Steer, 1, &[3]),
            Some(Placement {
                cpus: vec![3],
                steer: true
            })
        );
    }

    #[test]
    fn nothing_pinned_when_off_or_short_of_cpus() {
        assert_eq!(Placement::plan(Affinity::Off, 2, &[0, 1]), None);
        assert_eq!(Placement::plan(Affinity::Pin, 3, &[0, 1]), None);
        assert_eq!(Placement::plan(Affinity::Steer, 2, &[4]), None);
    }

    #[test]
    fn the_setting_is_off_pin_or_steer() {
        let d = ringsmtpd_plugin_api::testing::TempDir::new("affinity");
        let cfg = crate::config::ConfigDir::with_fallback(d.path(), None);
        assert_eq!(load(&cfg).unwrap(), DEFAULT);
        for (text, want) in [
            ("off", Affinity::Off),
            ("pin", Affinity::Pin),
            ("steer", Affinity::Steer),
        ] {
            std::fs::write(
                d.path().join("cpu_affinity"),
                format!("# placement\n{text}\n"),
            )
            .unwrap();
            let cfg = crate::config::ConfigDir::with_fallback(d.path(), None);
            assert_eq!(load(&cfg).unwrap(), want, "{text}");
            assert_eq!(
                want.to_string(),
                text,
                "the log names it as the config does"
            );
        }
        std::fs::write(d.path().join("cpu_affinity"), "pinned\n").unwrap();
        let cfg = crate::config::ConfigDir::with_fallback(d.path(), None);
        let e = load(&cfg).unwrap_err();
        assert!(e.reason.contains("'pinned'") && e.line == 1, "{e:?}");
    }

    /// The calling thread's own CPU set is what `allowed_cpus` reports after pinning.
    #[test]
    fn pinning_restricts_the_thread_to_its_cpu() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let last = *allowed.last().unwrap();
        let seen = std::thread::spawn(move || {
            pin_current(last).unwrap();
            allowed_cpus().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![last]);
    }

    #[test]
    fn a_steered_listener_carries_its_cpu() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        steer(&l, 1).unwrap();
        assert_eq!(socket2::SockRef::from(&l).cpu_affinity().unwrap(), 1);
    }

    /// The kernel's choice among a port's SO_REUSEPORT listeners follows SO_INCOMING_CPU: every
    /// connection made from a thread pinned to one CPU (on loopback its SYN is processed on
    /// that CPU) reaches the listener steered to it, none the other (without steering the
    /// port's hash would give the other about half).
    #[test]
    fn connections_reach_the_listener_steered_to_their_cpu() {
        let cpu = allowed_cpus().unwrap()[0];
        let mine = crate::listener::bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = mine.local_addr().unwrap();
        let other = crate::listener::bind_shared(addr).unwrap();
        steer(&mine, cpu).unwrap();
        steer(&other, cpu + 1).unwrap();
        const CONNECTIONS: usize = 20;
        let clients = std::thread::spawn(move || {
            pin_current(cpu).unwrap();
            (0..CONNECTIONS)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        for l in [&mine, &other] {
            l.set_nonblocking(true).unwrap();
        }
        let count = |l: &std::net::TcpListener| std::iter::from_fn(|| l.accept().ok()).count();
        assert_eq!((count(&mine), count(&other)), (CONNECTIONS, 0));
        drop(clients);
    }

    #[test]
    fn a_lopsided_window_is_reported_once() {
        let mut w = BalanceWatch::default();
        assert_eq!(w.observe(&[0, 0]), None, "nothing yet");
        assert_eq!(w.observe(&[400, 0]), None, "too few connections to judge");
        assert_eq!(w.observe(&[550, 450]), None, "an even split");
        let (share, total) = w.observe(&[1_500, 500]).expect("95% on one worker");
        assert!(
            (share - 0.95).abs() < 1e-9 && total == 1_000,
            "{share} {total}"
        );
        assert_eq!(w.observe(&[3_000, 500]), None, "reported once");
    }

    #[test]
    fn an_even_window_after_a_lopsided_start_is_not_reported() {
        let mut w = BalanceWatch::default();
        assert_eq!(w.observe(&[350, 350, 300]), None);
        assert_eq!(w.observe(&[450, 1_200, 350]), None, "85% stays under 90%");
        assert!(
            w.observe(&[450, 1_200, 1_350]).is_some(),
            "the third worker took all"
        );
        assert_eq!(
            BalanceWatch::default().observe(&[5_000]),
            None,
            "one worker"
        );
    }
}
