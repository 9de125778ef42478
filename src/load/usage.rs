//! CPU and memory of a process (the relay, or the generator itself) and of the whole machine, read
//! from Linux `/proc` (proc(5)).
//!
//! CPU time is `utime + stime` from `/proc/PID/stat` (fields 14 and 15, threads that exited
//! included), in clock ticks of `getconf CLK_TCK` (read once; 100 Hz assumed if that fails).

use std::time::Duration;

use anyhow::{anyhow, Context};

/// Clock ticks per second of `/proc` CPU times (`sysconf(_SC_CLK_TCK)`), via `getconf CLK_TCK`;
/// 100 (the value on every mainstream Linux architecture) when `getconf` is missing.
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// User + system CPU time so far, in clock ticks.
    pub cpu_ticks: u64,
    /// Of which system (kernel) time: syscalls, and on loopback also the receiving side's TCP
    /// processing, which runs in the sender's context. Clock ticks.
    pub system_ticks: u64,
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub hwm_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `pid` may be `"self"`.
///
/// # Errors
/// The process does not exist (or has exited) or the files have an unexpected shape.
pub fn sample_process(pid: &str) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let (user_ticks, system_ticks) = parse_cpu_ticks(&stat)?;
    Ok(ProcSample {
        cpu_ticks: user_ticks + system_ticks,
        system_ticks,
        rss_kib: parse_status_kib(&status, "VmRSS:")?,
        hwm_kib: parse_status_kib(&status, "VmHWM:")?,
    })
}

/// `(utime, stime)` of a `/proc/PID/stat` line. The command name (field 2) is in parentheses and
/// may contain spaces, so fields are counted after the last `)`: state is field 3, utime 14.
fn parse_cpu_ticks(stat: &str) -> anyhow::Result<(u64, u64)> {
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("no command name in /proc stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("field {n} missing from /proc stat"))
    };
    Ok((field(14)?, field(15)?))
}

/// The `kB` value of a `/proc/PID/status` line such as `VmRSS:   1234 kB`.
fn parse_status_kib(status: &str, key: &str) -> anyhow::Result<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| anyhow!("{key} missing from /proc status"))
}

/// Busy and total time of all CPUs, from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MachineSample {
    /// Ticks not idle and not waiting for I/O.
    pub busy_ticks: u64,
    /// All ticks, summed over CPUs.
    pub total_ticks: u64,
}

/// Reads the aggregate `cpu` line of `/proc/stat`.
///
/// # Errors
/// `/proc/stat` is unreadable or malformed.
pub fn sample_machine() -> anyhow::Result<MachineSample> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_machine(&stat)
}

fn parse_machine(stat: &str) -> anyhow::Result<MachineSample> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("no cpu line in /proc/stat"))?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let total: u64 = values.iter().sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Ok(MachineSample {
        busy_ticks: total.saturating_sub(idle),
        total_ticks: total,
    })
}

/// CPU ms spent per call-second between two readings `ticks` apart at `hz` ticks/s.
pub fn cpu_ms_per_call_second(ticks: u64, hz: u64, call_seconds: f64) -> f64 {
    if call_seconds <= 0.0 || hz == 0 {
        return 0.0;
    }
    let cpu = Duration::from_secs_f64(ticks as f64 / hz as f64);
    round3(cpu.as_secs_f64() * 1000.0 / call_seconds)
}

/// Rounds to 3 decimals (µs when the unit is ms) for reports.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (tokio (main) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 6 0";
        assert_eq!(parse_cpu_ticks(stat).unwrap(), (250, 50));
        let status = "Name:\trelay\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:").unwrap(), 10240);
        assert_eq!(parse_status_kib(status, "VmHWM:").unwrap(), 20480);
        let machine = parse_machine("cpu  10 0 5 80 5 0 0 0 0 0\ncpu0 1 1 1 1\n").unwrap();
        assert_eq!(
            machine,
            MachineSample {
                busy_ticks: 15,
                total_ticks: 100
            }
        );
        assert_eq!(cpu_ms_per_call_second(20, 100, 1000.0), 0.2);
        assert!(sample_process("self").unwrap().rss_kib > 0);
    }
}
