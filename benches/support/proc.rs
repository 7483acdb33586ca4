//! A live child process's CPU and memory, from /proc: shared by the benchmarks.

use std::time::Duration;

/// What /proc/PID/stat says of a process.
#[allow(dead_code, reason = "the scale benchmark reads only the CPU")]
pub struct Stat {
    pub parent: u32,
    /// User + system CPU.
    pub cpu: Duration,
    /// User + system CPU of the children it reaped.
    pub reaped: Duration,
}

/// None once the process is gone.
pub fn stat(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let number = |i: usize| {
        fields[i]
            .parse::<u64>()
            .expect("a number in /proc/PID/stat")
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks =
        |a: usize, b: usize| Duration::from_secs_f64((number(a) + number(b)) as f64 / per_second);
    Some(Stat {
        parent: u32::try_from(number(1)).expect("a pid"),
        cpu: ticks(11, 12),
        reaped: ticks(13, 14),
    })
}

/// User + system CPU of a live process.
pub fn proc_cpu(pid: u32) -> Duration {
    stat(pid).expect("the process runs").cpu
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

/// The CPU of the calling thread (`libc::RUSAGE_THREAD`) or of this whole process
/// (`libc::RUSAGE_SELF`).
pub fn cpu_used(who: libc::c_int) -> Duration {
    // SAFETY: rusage is plain data that getrusage fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer, and `who` one of getrusage's own.
    assert_eq!(unsafe { libc::getrusage(who, &mut usage) }, 0);
    cpu_of(&usage)
}

pub fn cpu_of(usage: &libc::rusage) -> Duration {
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}
