//! The `process_*` metrics every Prometheus exporter gives (the names of
//! the Prometheus client libraries' process collectors), read from the
//! kernel at each scrape: CPU time, resident and virtual memory, open and
//! most descriptors, start time. On systems without `/proc` the ones that
//! need it are left out.

use std::fs;

use nix::sys::resource::{getrlimit, getrusage, Resource, UsageWho};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads the process's figures on every scrape; holds nothing.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) {
            let secs =
                |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1_000_000.0;
            let cpu = ConstCounter::new(secs(usage.user_time()) + secs(usage.system_time()));
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time the process used",
                None,
                cpu.metric_type(),
            )?)?;
        }
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        for (field, name, help) in [
            (
                "VmRSS:",
                "process_resident_memory_bytes",
                "Resident memory of the process",
            ),
            (
                "VmSize:",
                "process_virtual_memory_bytes",
                "Virtual memory of the process",
            ),
        ] {
            if let Some(bytes) = kib_field(&status, field) {
                gauge(&mut encoder, name, help, bytes as f64)?;
            }
        }
        if let Ok(dir) = fs::read_dir("/proc/self/fd") {
            // The count includes the descriptor reading the folder.
            let open = dir.count().saturating_sub(1);
            gauge(
                &mut encoder,
                "process_open_fds",
                "Descriptors the process has open",
                open as f64,
            )?;
        }
        if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Most descriptors the process may open (its soft limit)",
                soft as f64,
            )?;
        }
        if let Some(start) = start_time() {
            gauge(
                &mut encoder,
                "process_start_time_seconds",
                "When the process started, in seconds since the Unix epoch",
                start,
            )?;
        }
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// `FIELD   123 kB` of /proc/self/status, in bytes.
fn kib_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The boot time (/proc/stat `btime`) plus the process's start in clock
/// ticks after boot (field 22 of /proc/self/stat).
fn start_time() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from the last `)`. Field 3 is then the first one after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = after.split_whitespace().nth(22 - 3)?.parse().ok()?;
    let boot: f64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(boot + ticks / hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_field_reads_in_bytes() {
        let status = "Name:\targon\nVmSize:\t  20480 kB\nVmRSS:\t    512 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(512 * 1024));
        assert_eq!(kib_field(status, "VmSize:"), Some(20480 * 1024));
        assert_eq!(kib_field(status, "VmSwap:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_started_in_the_past_and_after_boot() {
        let start = start_time().expect("a start time on Linux");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start} vs {now}"
        );
    }
}
