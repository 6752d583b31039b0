//! Dropping root: the config files `user` and `group` (or `--user`/`--group`), the decision
//! ([`decide`]: drop, stay root on purpose, refuse, or keep the current user) and the drop
//! itself ([`drop_to`]): `setgroups`, `setgid`, `setuid`, then checked on every thread.
//!
//! The drop goes through the C library's wrappers, which apply a credential change to every
//! thread of the process (glibc's "setxid" broadcast, musl's `__synccall`); the raw system
//! calls would change the calling thread only. The server drops on the main thread after
//! binding and before the workers (and their blocking pools and DNS clients) exist, so they
//! inherit the new ids; the threads that do exist by then (logging sinks, the metrics
//! listener) are changed by the broadcast, and [`check_threads`] reads every
//! `/proc/self/task/*/status` to prove it, before and after the workers start.
//!
//! docs/deploy.md ("Privileges") is the operator's side of this.

use std::ffi::{CStr, CString};
use std::io;
use std::path::Path;

use ringsmtpd_plugin_api::owner::Access;
use ringsmtpd_plugin_api::{ConfigError, ConfigSource};

/// What the command line and the config files `user` and `group` ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// The account to run as; `root` runs as root on purpose.
    pub user: Option<String>,
    /// Its group; default: the user's primary group.
    pub group: Option<String>,
}

impl Wanted {
    /// The config files `user` and `group`, each replaced by its flag when given.
    pub fn load(
        cfg: &dyn ConfigSource,
        user_flag: Option<String>,
        group_flag: Option<String>,
    ) -> Result<Wanted, ConfigError> {
        let file = |name: &str| -> Result<Option<String>, ConfigError> {
            let Some(l) = crate::config::single(cfg, name)? else {
                return Ok(None);
            };
            if !is_account_name(&l.text) {
                return Err(l.error(format!(
                    "not a {name} name (letters, digits, '.', '_', '-', at most 32): {:?}",
                    l.text
                )));
            }
            Ok(Some(l.text))
        };
        let user = match user_flag {
            Some(u) => Some(u),
            None => file("user")?,
        };
        let group = match group_flag {
            Some(g) => Some(g),
            None => file("group")?,
        };
        Ok(Wanted { user, group })
    }
}

/// A name as `useradd` and `groupadd` accept them (POSIX portable characters, a `$` at the
/// end for Samba machine accounts), so it passes to `getpwnam` without surprises.
pub fn is_account_name(s: &str) -> bool {
    let body = s.strip_suffix('$').unwrap_or(s);
    !body.is_empty()
        && s.len() <= 32
        && !body.starts_with('-')
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The account the server drops to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub group: String,
    pub uid: u32,
    pub gid: u32,
    /// The supplementary groups: the user's, from the group database (as `login` and
    /// qpsmtpd-forkserver set them), so a membership such as Debian's `ssl-cert` still
    /// opens what it opens for that user anywhere else.
    pub groups: Vec<u32>,
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} (uid {}, gid {})",
            self.user, self.group, self.uid, self.gid
        )
    }
}

/// What to do about privileges at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Started as root, `user` names another account: drop to it.
    Drop(Account),
    /// Started as root and `user` is `root` (or another name for uid 0): stay root on purpose.
    StayRoot,
    /// Not started as root: run as the current user, with a warning when `user` names
    /// another account (only root can switch; Postfix does the same for a non-root start).
    Keep { warning: Option<String> },
}

impl Plan {
    /// The line `--check` prints about the account the server will run as.
    pub fn describe(&self) -> String {
        match self {
            Plan::Drop(a) => format!("runs as {a} once its ports are bound"),
            Plan::StayRoot => "runs as root (the config file `user` says so)".to_string(),
            Plan::Keep { warning: None } => "runs as the user that starts it".to_string(),
            Plan::Keep { warning: Some(w) } => format!("runs as the user that starts it: {w}"),
        }
    }
}

/// The account database: the system's ([`System`]) or a test's.
pub trait Accounts {
    /// The uid and primary gid of user `name`.
    fn user(&self, name: &str) -> io::Result<Option<(u32, u32)>>;
    /// The gid of group `name`.
    fn group(&self, name: &str) -> io::Result<Option<u32>>;
    /// The groups user `name` belongs to, `gid` among them.
    fn groups_of(&self, name: &str, gid: u32) -> io::Result<Vec<u32>>;
}

/// Decides what a process with effective uid `euid` does about `wanted`. `dir` is the
/// config directory, for the messages.
pub fn decide(wanted: &Wanted, euid: u32, db: &dyn Accounts, dir: &Path) -> Result<Plan, String> {
    let dir = dir.display();
    let lookup = |what: &str, e: io::Error| format!("cannot look up {what}: {e}");
    if euid != 0 {
        let warning = match &wanted.user {
            None => None,
            Some(name) => match db.user(name).map_err(|e| lookup(name, e))? {
                Some((uid, _)) if uid == euid => None,
                Some((uid, _)) => Some(format!(
                    "{dir}/user names {name} (uid {uid}), but only root can change user: \
                     running as uid {euid}"
                )),
                None => Some(format!(
                    "{dir}/user names {name}, who does not exist here; not root, so running \
                     as uid {euid} anyway"
                )),
            },
        };
        return Ok(Plan::Keep { warning });
    }
    let Some(name) = &wanted.user else {
        return Err(format!(
            "refusing to run as root: name the unprivileged account to run as in {dir}/user \
             and its group in {dir}/group (e.g. `echo nobody > {dir}/user; echo nogroup > \
             {dir}/group`, or a dedicated account), or pass --user NAME; the server binds its \
             ports first and drops to that account before it serves. To run as root anyway, \
             write `root` into {dir}/user"
        ));
    };
    let Some((uid, primary)) = db.user(name).map_err(|e| lookup(name, e))? else {
        return Err(format!(
            "{dir}/user (or --user): no user '{name}' on this system (create it, e.g. \
             `useradd --system --no-create-home --shell /usr/sbin/nologin {name}`)"
        ));
    };
    if uid == 0 {
        return Ok(Plan::StayRoot);
    }
    let (group, gid) = match &wanted.group {
        None => (group_name(primary), primary),
        Some(g) => match db.group(g).map_err(|e| lookup(g, e))? {
            Some(gid) => (g.clone(), gid),
            None => {
                return Err(format!(
                    "{dir}/group (or --group): no group '{g}' on this system"
                ))
            }
        },
    };
    if gid == 0 {
        return Err(format!(
            "{dir}/group: group {group} is gid 0 (root's group); name an unprivileged group"
        ));
    }
    let mut groups = db.groups_of(name, gid).map_err(|e| lookup(name, e))?;
    // The primary group first; root's group never (a member of it would keep root's files).
    groups.retain(|&g| g != gid && g != 0);
    groups.sort_unstable();
    groups.dedup();
    groups.insert(0, gid);
    Ok(Plan::Drop(Account {
        user: name.clone(),
        group,
        uid,
        gid,
        groups,
    }))
}

/// The group's name for messages (the number when it has none).
fn group_name(gid: u32) -> String {
    // SAFETY: getgrgid_r writes only into `grp` and `buf`, whose sizes we pass; the result
    // pointer is checked before use and points into them.
    with_buf(|buf| unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut out = std::ptr::null_mut();
        let rc = libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut out);
        (rc, (!out.is_null()).then(|| cstr(grp.gr_name)))
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| gid.to_string())
}

/// The system's account database (passwd and group through NSS).
pub struct System;

impl Accounts for System {
    fn user(&self, name: &str) -> io::Result<Option<(u32, u32)>> {
        let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: getpwnam_r writes only into `pw` and `buf`, whose sizes we pass; `out` is
        // null or `&pw`, and we read plain integers from it.
        with_buf(|buf| unsafe {
            let mut pw: libc::passwd = std::mem::zeroed();
            let mut out = std::ptr::null_mut();
            let rc = libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out);
            (rc, (!out.is_null()).then_some((pw.pw_uid, pw.pw_gid)))
        })
    }

    fn group(&self, name: &str) -> io::Result<Option<u32>> {
        let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: as in `user`, for getgrnam_r and a `group`.
        with_buf(|buf| unsafe {
            let mut grp: libc::group = std::mem::zeroed();
            let mut out = std::ptr::null_mut();
            let rc = libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out);
            (rc, (!out.is_null()).then_some(grp.gr_gid))
        })
    }

    fn groups_of(&self, name: &str, gid: u32) -> io::Result<Vec<u32>> {
        let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut n: libc::c_int = 32;
        loop {
            let mut groups = vec![0 as libc::gid_t; n as usize];
            let asked = n;
            // SAFETY: `groups` has room for `n` entries, and getgrouplist writes at most `n`
            // (it sets `n` to the number needed when that is more, and returns -1).
            let rc = unsafe { libc::getgrouplist(c.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
            if rc >= 0 {
                groups.truncate(n.max(0) as usize);
                return Ok(groups);
            }
            if n <= asked {
                n = asked * 2; // some versions do not say how many they need
            }
            if n > 65_536 {
                return Err(io::Error::other("more than 65536 groups"));
            }
        }
    }
}

/// Runs a `get*_r` call with a growing buffer (it answers ERANGE when the buffer is small).
fn with_buf<T>(
    mut f: impl FnMut(&mut [libc::c_char]) -> (libc::c_int, Option<T>),
) -> io::Result<Option<T>> {
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        match f(&mut buf) {
            (0, found) => return Ok(found),
            (libc::ERANGE, _) if size < 1 << 20 => size *= 2,
            // "Not found" comes back as 0 with a null result, or as one of these.
            (libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM, _) => return Ok(None),
            (rc, _) => return Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

/// # Safety
/// `p` is a valid NUL-terminated string.
unsafe fn cstr(p: *const libc::c_char) -> String {
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The decision for this process: the config files (or flags) and the system's accounts.
pub fn plan(
    cfg: &dyn ConfigSource,
    dir: &Path,
    user_flag: Option<String>,
    group_flag: Option<String>,
) -> Result<Plan, String> {
    let wanted = Wanted::load(cfg, user_flag, group_flag).map_err(|e| e.to_string())?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    decide(&wanted, euid, &System, dir)
}

/// Drops every thread of the process to `a` (supplementary groups, group, user, in that
/// order: each later step needs root for the earlier ones), then checks it took everywhere
/// and cannot be undone.
pub fn drop_to(a: &Account) -> Result<(), String> {
    let fail = |what: &str| {
        format!(
            "cannot drop privileges to {a}: {what}: {}",
            io::Error::last_os_error()
        )
    };
    // SAFETY: `groups` holds `len` gids; setgroups, setgid and setuid have no other
    // preconditions. glibc and musl apply each to every thread of the process.
    unsafe {
        if libc::setgroups(a.groups.len(), a.groups.as_ptr()) != 0 {
            return Err(fail("setgroups"));
        }
        if libc::setgid(a.gid) != 0 {
            return Err(fail("setgid"));
        }
        if libc::setuid(a.uid) != 0 {
            return Err(fail("setuid"));
        }
    }
    check_ids(a)?;
    check_threads(a).map(|_| ())
}

/// This thread's real, effective and saved ids are `a`'s, and root's cannot come back.
fn check_ids(a: &Account) -> Result<(), String> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    let (mut rg, mut eg, mut sg) = (0, 0, 0);
    // SAFETY: getresuid/getresgid write three integers through valid pointers.
    unsafe {
        libc::getresuid(&mut r, &mut e, &mut s);
        libc::getresgid(&mut rg, &mut eg, &mut sg);
    }
    if [r, e, s] != [a.uid; 3] || [rg, eg, sg] != [a.gid; 3] {
        return Err(format!(
            "privileges not dropped to {a}: uids {r}/{e}/{s}, gids {rg}/{eg}/{sg}"
        ));
    }
    // SAFETY: as above; each call fails with EPERM when the drop is complete.
    let (uid0, gid0) = unsafe { (libc::setuid(0), libc::setgid(0)) };
    if uid0 == 0 || gid0 == 0 {
        return Err(format!(
            "privileges not dropped to {a}: setuid(0) or setgid(0) still works"
        ));
    }
    Ok(())
}

/// Reads `/proc/self/task/*/status` and checks that every thread runs as `a` (all four
/// uid and gid fields: real, effective, saved, filesystem; and the supplementary groups).
/// Returns how many threads it checked.
pub fn check_threads(a: &Account) -> Result<usize, String> {
    let tasks =
        std::fs::read_dir("/proc/self/task").map_err(|e| format!("/proc/self/task: {e}"))?;
    let mut want_groups = a.groups.clone();
    want_groups.sort_unstable();
    let mut n = 0;
    for task in tasks {
        let task = task.map_err(|e| format!("/proc/self/task: {e}"))?;
        let path = task.path().join("status");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // The thread ended between the listing and the read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let ids = ThreadIds::parse(&text)
            .ok_or_else(|| format!("{}: no Uid/Gid lines", path.display()))?;
        let mut groups = ids.groups.clone();
        groups.sort_unstable();
        if ids.uid != [a.uid; 4] || ids.gid != [a.gid; 4] || groups != want_groups {
            return Err(format!(
                "thread {} still runs with uids {:?}, gids {:?}, groups {:?} after the drop to {a}",
                task.file_name().to_string_lossy(),
                ids.uid,
                ids.gid,
                ids.groups
            ));
        }
        n += 1;
    }
    Ok(n)
}

/// The credentials of one thread, from its `/proc/.../status`.
#[derive(Debug, PartialEq, Eq)]
pub struct ThreadIds {
    /// Real, effective, saved, filesystem.
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
}

impl ThreadIds {
    pub fn parse(status: &str) -> Option<ThreadIds> {
        let four = |key: &str| -> Option<[u32; 4]> {
            let line = status.lines().find_map(|l| l.strip_prefix(key))?;
            let v: Vec<u32> = line
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            v.try_into().ok()
        };
        let groups = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))?
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<Vec<u32>>>()?;
        Some(ThreadIds {
            uid: four("Uid:")?,
            gid: four("Gid:")?,
            groups,
        })
    }
}

/// After the drop: every path a plugin (or the core) [`require`]d is usable by the account,
/// else an error naming the path, its owner and the fix.
///
/// [`require`]: ringsmtpd_plugin_api::owner::require
pub fn check_required(
    a: &Account,
    required: &[(std::path::PathBuf, Access)],
) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    for (path, access) in required {
        let mode = match access {
            Access::Read => libc::R_OK,
            Access::Write => libc::W_OK | libc::X_OK,
        };
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("{}: a path with a NUL byte", path.display()))?;
        // SAFETY: `c` is a valid NUL-terminated path; access reads it and nothing else.
        if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
            continue;
        }
        let err = io::Error::last_os_error();
        let verb = if *access == Access::Read {
            "read"
        } else {
            "write"
        };
        let owned = std::fs::metadata(path)
            .map(|m| {
                format!(
                    ", owned by uid {} gid {} mode {:o}",
                    m.uid(),
                    m.gid(),
                    m.mode() & 0o7777
                )
            })
            .unwrap_or_default();
        return Err(format!(
            "{} cannot {verb} {} ({err}{owned}) after dropping privileges: give it to that \
             account (`chown -R {}:{} {}`) and make sure every directory above it is \
             searchable by it, or name its owner in the config file `user`",
            a.user,
            path.display(),
            a.user,
            a.group,
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        users: HashMap<&'static str, (u32, u32)>,
        groups: HashMap<&'static str, u32>,
        member: Vec<u32>,
    }

    impl Accounts for Fake {
        fn user(&self, name: &str) -> io::Result<Option<(u32, u32)>> {
            Ok(self.users.get(name).copied())
        }
        fn group(&self, name: &str) -> io::Result<Option<u32>> {
            Ok(self.groups.get(name).copied())
        }
        fn groups_of(&self, _: &str, gid: u32) -> io::Result<Vec<u32>> {
            let mut g = vec![gid];
            g.extend(&self.member);
            Ok(g)
        }
    }

    fn db() -> Fake {
        Fake {
            users: HashMap::from([
                ("root", (0, 0)),
                ("toor", (0, 0)),
                ("nobody", (65534, 65534)),
                ("smtpd", (110, 120)),
                ("me", (1000, 1000)),
            ]),
            groups: HashMap::from([("nogroup", 65534), ("root", 0), ("mail", 8)]),
            member: vec![115, 0, 8, 115],
        }
    }

    fn wanted(user: Option<&str>, group: Option<&str>) -> Wanted {
        Wanted {
            user: user.map(str::to_string),
            group: group.map(str::to_string),
        }
    }

    fn decide_as(euid: u32, user: Option<&str>, group: Option<&str>) -> Result<Plan, String> {
        decide(&wanted(user, group), euid, &db(), Path::new("cfg"))
    }

    #[test]
    fn root_without_user_is_refused_with_the_fix() {
        let e = decide_as(0, None, None).unwrap_err();
        assert!(e.starts_with("refusing to run as root"), "{e}");
        assert!(
            e.contains("cfg/user") && e.contains("cfg/group") && e.contains("--user"),
            "{e}"
        );
        assert!(e.contains("write `root` into cfg/user"), "{e}");
    }

    #[test]
    fn root_drops_to_the_user_with_its_groups_never_root_s() {
        let Plan::Drop(a) = decide_as(0, Some("smtpd"), None).unwrap() else {
            panic!()
        };
        assert_eq!((a.uid, a.gid), (110, 120));
        // The primary group first, the memberships after (sorted, once each), gid 0 left out.
        assert_eq!(a.groups, vec![120, 8, 115]);
        let Plan::Drop(a) = decide_as(0, Some("nobody"), Some("nogroup")).unwrap() else {
            panic!()
        };
        assert_eq!((a.uid, a.gid, a.group.as_str()), (65534, 65534, "nogroup"));
    }

    #[test]
    fn root_stays_root_only_when_told() {
        assert_eq!(decide_as(0, Some("root"), None).unwrap(), Plan::StayRoot);
        assert_eq!(
            decide_as(0, Some("toor"), Some("nogroup")).unwrap(),
            Plan::StayRoot
        );
        let e = decide_as(0, Some("nobody"), Some("root")).unwrap_err();
        assert!(e.contains("gid 0"), "{e}");
    }

    #[test]
    fn unknown_names_are_errors_as_root() {
        let e = decide_as(0, Some("nosuch"), None).unwrap_err();
        assert!(
            e.contains("no user 'nosuch'") && e.contains("useradd"),
            "{e}"
        );
        let e = decide_as(0, Some("nobody"), Some("nosuch")).unwrap_err();
        assert!(e.contains("no group 'nosuch'"), "{e}");
    }

    #[test]
    fn an_ordinary_user_keeps_its_ids_and_is_warned_when_user_names_another() {
        assert_eq!(
            decide_as(1000, None, None).unwrap(),
            Plan::Keep { warning: None }
        );
        assert_eq!(
            decide_as(1000, Some("me"), Some("nogroup")).unwrap(),
            Plan::Keep { warning: None }
        );
        for user in ["nobody", "root", "nosuch"] {
            let Plan::Keep { warning: Some(w) } = decide_as(1000, Some(user), None).unwrap() else {
                panic!("{user}")
            };
            assert!(w.contains(user) && w.contains("running as uid 1000"), "{w}");
        }
    }

    #[test]
    fn flags_override_the_files_and_names_are_checked() {
        let d = ringsmtpd_plugin_api::testing::TempDir::new("privileges");
        std::fs::write(d.path().join("user"), "# who\nnobody\n").unwrap();
        std::fs::write(d.path().join("group"), "nogroup\n").unwrap();
        let cfg = crate::config::ConfigDir::with_fallback(d.path(), None);
        assert_eq!(
            Wanted::load(&cfg, None, None).unwrap(),
            wanted(Some("nobody"), Some("nogroup"))
        );
        assert_eq!(
            Wanted::load(&cfg, Some("smtpd".into()), None).unwrap(),
            wanted(Some("smtpd"), Some("nogroup"))
        );
        assert_eq!(
            Wanted::load(&cfg, None, Some("mail".into())).unwrap(),
            wanted(Some("nobody"), Some("mail"))
        );
        let empty = ringsmtpd_plugin_api::testing::TempDir::new("privileges-none");
        let none = crate::config::ConfigDir::with_fallback(empty.path(), None);
        assert_eq!(Wanted::load(&none, None, None).unwrap(), Wanted::default());
        for bad in ["no body", "-x", "a/b", "x\u{7}", "nobody\nroot"] {
            std::fs::write(d.path().join("user"), format!("{bad}\n")).unwrap();
            let cfg = crate::config::ConfigDir::with_fallback(d.path(), None);
            let e = Wanted::load(&cfg, None, None).unwrap_err().to_string();
            assert!(e.contains("/user:"), "{bad:?}: {e}");
        }
        assert!(
            is_account_name("Debian-exim") && is_account_name("host$") && is_account_name("_x")
        );
    }

    #[test]
    fn thread_status_gives_all_four_ids_and_the_groups() {
        let status = "Name:\tringsmtpd-w0\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t0\nGroups:\t65534 8 \n";
        let ids = ThreadIds::parse(status).unwrap();
        assert_eq!(ids.uid, [65534; 4]);
        assert_eq!(ids.gid, [65534, 65534, 65534, 0]);
        assert_eq!(ids.groups, vec![65534, 8]);
        assert!(ThreadIds::parse("Uid:\t1\t2\t3\nGid:\t1\t1\t1\t1\nGroups:\n").is_none());
        assert_eq!(
            ThreadIds::parse("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n")
                .unwrap()
                .groups,
            Vec::<u32>::new()
        );
    }

    #[test]
    fn the_system_database_knows_root() {
        assert_eq!(System.user("root").unwrap(), Some((0, 0)));
        assert_eq!(System.group("root").unwrap(), Some(0));
        assert_eq!(System.user("no-such-user-here").unwrap(), None);
        assert!(System.groups_of("root", 0).unwrap().contains(&0));
        assert_eq!(group_name(0), "root");
    }
}
