//! What is read off the machine: histograms, CPU ticks and RSS from /proc, and the report's
//! text.

use super::*;

/// A latency histogram in microseconds, 1 µs to 10 minutes, within 1 %. Every receiving
/// connection has one: with three significant figures and `u64` counts each was 160 KiB,
/// and recording into a thousand of them missed the cache so often that it was the
/// generator's largest cost (10 % of its samples in W2). Two figures and `u32` counts make
/// one 12 KiB.
pub(super) fn new_histogram<T: hdrhistogram::Counter>()
-> Result<Histogram<T>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, 600_000_000, 2)
}

/// The process's CPU time (user + system) in clock ticks, from /proc.
pub(super) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The process's resident memory in bytes, from /proc.
pub(super) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Report {
    /// A human-readable summary.
    pub fn text(&self) -> String {
        let mut out = format!(
            "mode {:?}, {} connections ({} publishing), connected in {:.2} s ({:.0}/s)\n\
             sent {}  delivered {}/{} ({:.2} %)  {:.0} deliveries/s  errors {}\n\
             latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
            self.mode,
            self.connections,
            self.publishers,
            self.connect_secs,
            self.connect_rate,
            self.sent,
            self.delivered,
            self.expected,
            self.delivered_ratio * 100.0,
            self.deliveries_per_sec,
            self.errors,
            self.latency_ms.p50,
            self.latency_ms.p90,
            self.latency_ms.p99,
            self.latency_ms.p999,
            self.latency_ms.max,
        );
        if let Some(e) = &self.first_error {
            out.push_str(&format!("first error: {e}\n"));
            // A switchboard server paces publishers; measuring past its limits measures them.
            if e.contains("too many messages") || e.contains("publishing too fast") {
                out.push_str(
                    "  (the server's publish limits refused messages: for a load test, run it with \
                     --publish-rate 0 --connection-rate 0)\n",
                );
            }
        }
        if let Some(ns) = self.server_cpu_ns_per_delivery {
            out.push_str(&format!("server CPU per delivery {ns:.0} ns\n"));
        }
        if let Some(ns) = self.client_cpu_ns_per_delivery {
            out.push_str(&format!("load generator CPU per delivery {ns:.0} ns\n"));
        }
        if let (Some(b), Some(after)) = (
            self.server_rss_bytes_per_connection,
            self.server_rss_bytes_per_connection_after,
        ) {
            out.push_str(&format!(
                "server RSS per connection {:.1} KiB connected, {:.1} KiB after the run\n",
                b / 1024.0,
                after / 1024.0
            ));
        }
        out
    }
}
