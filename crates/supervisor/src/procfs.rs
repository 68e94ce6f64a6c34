//! Everything Baton reads from /proc, parsed in one place: CPU and memory
//! of each instance as `pm2 ls` shows them (the sums over the instance's
//! process group: its `sh`, node and node's children), the members of a
//! process group, whether a process still runs, and when it started.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What one process group uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Resident memory, in bytes.
    pub memory_bytes: u64,
    /// CPU time used since the group started, in seconds.
    pub cpu_seconds: f64,
    /// CPU use over the last window of at least a second between two
    /// readings of this group (the first: since it started), in percent of
    /// one core.
    pub cpu_percent: f64,
}

/// CPU ticks and resident pages of one process group.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    ticks: u64,
    pages: u64,
}

/// CPU use is measured over at least this long: CPU time comes in ticks of
/// 10 ms, so over a few ms it reads 0 % or over 100 %.
const CPU_WINDOW: Duration = Duration::from_secs(1);

/// The start of a group's CPU window, and the use over the window before.
#[derive(Debug, Clone, Copy)]
struct Window {
    since: Instant,
    ticks: u64,
    percent: f64,
}

/// Reads the usage of process groups, remembering each group's last CPU
/// reading so that the next one gives the use in between, as pm2 does.
#[derive(Debug, Default)]
pub struct Sampler {
    windows: Mutex<HashMap<i32, Window>>,
}

impl Sampler {
    /// The usage of each of `groups` (process group ids, which are their
    /// leaders' pids) that has a live process; `started` gives when each
    /// began, for a group read the first time. Blocking: it reads /proc.
    pub fn read(&self, groups: &[(i32, Instant)]) -> HashMap<i32, Usage> {
        let totals = group_totals();
        let tick = clock_ticks_per_second();
        let page = page_size();
        let now = Instant::now();
        let mut windows = self.windows.lock().expect("usage lock poisoned");
        windows.retain(|pgid, _| totals.contains_key(pgid));
        let mut out = HashMap::new();
        for &(pgid, started) in groups {
            let Some(t) = totals.get(&pgid) else {
                continue;
            };
            let window = windows.entry(pgid).or_insert(Window {
                since: started,
                ticks: 0,
                percent: 0.0,
            });
            let elapsed = now.saturating_duration_since(window.since);
            if elapsed >= CPU_WINDOW || window.ticks == 0 {
                let used = t.ticks.saturating_sub(window.ticks) as f64 / tick;
                let seconds = elapsed.as_secs_f64().max(CPU_WINDOW.as_secs_f64());
                *window = Window {
                    since: now,
                    ticks: t.ticks,
                    percent: 100.0 * used / seconds,
                };
            }
            out.insert(
                pgid,
                Usage {
                    memory_bytes: t.pages * page,
                    cpu_seconds: t.ticks as f64 / tick,
                    cpu_percent: window.percent,
                },
            );
        }
        out
    }
}

/// The resident memory, in bytes, of each of `groups` that has a live
/// process. Blocking: it reads /proc.
pub fn memory(groups: &[i32]) -> HashMap<i32, u64> {
    let totals = group_totals();
    let page = page_size();
    groups
        .iter()
        .filter_map(|g| Some((*g, totals.get(g)?.pages * page)))
        .collect()
}

/// CPU ticks and resident pages of every process group, from /proc/*/stat.
fn group_totals() -> HashMap<i32, Totals> {
    let mut totals: HashMap<i32, Totals> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return totals;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((pgrp, ticks, pages)) = parse_stat(&stat) {
            let t = totals.entry(pgrp).or_default();
            t.ticks += ticks;
            t.pages += pages;
        }
    }
    totals
}

/// The live processes in group `pgid`. Zombies do not count: an orphan's
/// zombie waits for init to reap it, and has nothing left to shut down.
/// Blocking: it reads /proc.
pub(crate) fn group_members(pgid: i32) -> Vec<i32> {
    group_family(pgid).into_iter().map(|m| m.pid).collect()
}

/// A live process of a group, and its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its process id.
    pub pid: i32,
    /// Its parent's: another member's, or a process outside the group when
    /// its parent exited (or it leads the group).
    pub ppid: i32,
}

impl Member {
    /// Whether its parent is outside the group: the group's leader, or a
    /// process whose parent exited.
    pub(crate) fn is_topmost(&self, family: &[Member]) -> bool {
        !family.iter().any(|m| m.pid == self.ppid)
    }
}

/// [`group_members`] with their parents. Blocking: it reads /proc.
pub(crate) fn group_family(pgid: i32) -> Vec<Member> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (pgrp, _, _) = parse_stat(&stat)?;
            let zombie = matches!(state_of(&stat), Some("Z" | "X"));
            let ppid = after_name(&stat)?
                .split_whitespace()
                .nth(4 - 3)?
                .parse()
                .ok()?;
            (pgrp == pgid && !zombie).then_some(Member { pid, ppid })
        })
        .collect()
}

/// Whether `pid` is a live process: not gone, and not a zombie waiting for
/// its parent to reap it. Blocking: it reads /proc.
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    !matches!(state_of(&stat), Some("Z" | "X"))
}

/// The state letter of a stat line (`R`, `S`, `Z`, ...).
fn state_of(stat: &str) -> Option<&str> {
    after_name(stat).and_then(|rest| rest.split_whitespace().next())
}

/// When process `pid` started, in clock ticks since boot (field 22 of its
/// /proc/<pid>/stat). Blocking: it reads /proc.
pub(crate) fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    after_name(&stat)?
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

/// A /proc/<pid>/stat line from field 3 (the state) on. The command name
/// before it can hold spaces and parentheses, so it ends at the last `)`.
fn after_name(stat: &str) -> Option<&str> {
    Some(&stat[stat.rfind(')')? + 1..])
}

/// Process group, utime + stime (ticks) and rss (pages) from a
/// /proc/<pid>/stat line.
fn parse_stat(stat: &str) -> Option<(i32, u64, u64)> {
    // After the name: state(3) ppid(4) pgrp(5) ... utime(14) stime(15) ... rss(24).
    let fields: Vec<&str> = after_name(stat)?.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    let pgrp = field(5)?.parse().ok()?;
    let utime: u64 = field(14)?.parse().ok()?;
    let stime: u64 = field(15)?.parse().ok()?;
    let rss: i64 = field(24)?.parse().ok()?;
    Some((pgrp, utime + stime, rss.max(0) as u64))
}

fn clock_ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child in a group of its own is that group's one member.
    #[test]
    fn group_members_finds_a_group() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert_eq!(group_members(pid), vec![pid]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(group_members(pid).is_empty());
    }

    /// A shell and the child it waits for: the shell is the topmost, the
    /// child's parent is the shell.
    #[test]
    fn group_family_knows_parents() {
        use std::os::unix::process::CommandExt;
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = shell.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let family = loop {
            let family = group_family(pid);
            if family.len() == 2 || std::time::Instant::now() > deadline {
                break family;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(family.len(), 2, "{family:?}");
        let top: Vec<i32> = (family.iter())
            .filter(|m| m.is_topmost(&family))
            .map(|m| m.pid)
            .collect();
        assert_eq!(top, vec![pid]);
        let child = family.iter().find(|m| m.pid != pid).unwrap();
        assert_eq!(child.ppid, pid);
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        shell.wait().unwrap();
    }

    /// A child started after this process, and a process that does not
    /// exist has no start time.
    #[test]
    fn start_ticks_order_processes() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = start_ticks(std::process::id() as i32).unwrap();
        let it = start_ticks(child.id() as i32).unwrap();
        assert!(it >= me, "{it} < {me}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(start_ticks(child.id() as i32), None);
    }

    /// Fields are counted after the name, which may hold spaces and `)`.
    #[test]
    fn parses_a_stat_line_whose_name_has_spaces() {
        let line = "4242 (node ) x) S 1 4240 4240 0 -1 4194560 100 0 0 0 \
                    150 25 0 0 20 0 11 0 123456 987654321 9000 18446744073709551615";
        assert_eq!(parse_stat(line), Some((4240, 175, 9000)));
    }

    /// A child that exited but is not reaped yet (a zombie) no longer runs.
    #[test]
    fn a_zombie_is_not_running() {
        assert!(is_running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_running(child.id()) {
            assert!(Instant::now() < deadline, "an exited child still runs");
            std::thread::yield_now();
        }
        assert!(std::path::Path::new(&format!("/proc/{}", child.id())).exists());
        child.wait().unwrap();
    }

    /// This test's own process group is found, with memory and CPU time.
    #[test]
    fn reads_this_process_group() {
        let pgid = nix::unistd::getpgrp().as_raw();
        let sampler = Sampler::default();
        let started = Instant::now() - std::time::Duration::from_secs(1);
        let usage = sampler.read(&[(pgid, started)])[&pgid];
        assert!(usage.memory_bytes > 1 << 20, "{usage:?}");
        assert!(
            usage.cpu_seconds >= 0.0 && usage.cpu_percent >= 0.0,
            "{usage:?}"
        );
    }
}
