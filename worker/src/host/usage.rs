//! CPU time and resident memory of a process, read from `/proc` (Linux).

use std::sync::OnceLock;

/// What [`process_usage`] read for a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessUsage {
    /// CPU time used so far, user and system (`utime + stime` of `/proc/<pid>/stat`), in ns
    /// (the kernel counts it in clock ticks, usually 10 ms).
    pub cpu_ns: u64,
    /// Resident set size (`/proc/<pid>/statm`, second field), in bytes. Shared pages the
    /// process touched (shared segments it mapped and read) count in full.
    pub rss_bytes: u64,
}

/// CPU time and RSS of process `pid`; `None` when it does not exist any more (or `/proc` is not
/// there).
pub fn process_usage(pid: i32) -> Option<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let (ticks_per_s, page) = constants();
    // The command name (field 2) is in parentheses and may hold spaces or ')': fields 3.. come
    // after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let resident: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(ProcessUsage {
        cpu_ns: (utime + stime).saturating_mul(1_000_000_000) / ticks_per_s,
        rss_bytes: resident.saturating_mul(page),
    })
}

/// Clock ticks per second and the page size.
fn constants() -> (u64, u64) {
    static C: OnceLock<(u64, u64)> = OnceLock::new();
    *C.get_or_init(|| {
        // SAFETY: sysconf reads a configuration value; it takes no pointers and has no
        // preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        (
            if ticks > 0 { ticks as u64 } else { 100 },
            if page > 0 { page as u64 } else { 4096 },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let u = process_usage(std::process::id() as i32).expect("/proc/self");
        assert!(u.rss_bytes > 0);
        assert!(process_usage(i32::MAX).is_none());
    }
}
