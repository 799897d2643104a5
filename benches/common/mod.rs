//! Timing helpers shared by the benches that run both sides in rounds.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

/// One side's times, in round order.
pub struct Figure(pub Vec<Duration>);

impl Figure {
    pub fn sorted(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort();
        v
    }

    pub fn median(&self) -> Duration {
        self.sorted()[self.0.len() / 2]
    }

    pub fn min(&self) -> Duration {
        self.sorted()[0]
    }

    /// `self / other`: median/median, min/min, and the median of the per-round
    /// ratios (the two sides ran next to each other, so slow spells cancel out).
    pub fn ratio(&self, other: &Figure) -> [f64; 3] {
        let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        let mut paired: Vec<f64> = self
            .0
            .iter()
            .zip(&other.0)
            .map(|(&a, &b)| r(a, b))
            .collect();
        paired.sort_by(f64::total_cmp);
        [
            r(self.median(), other.median()),
            r(self.min(), other.min()),
            paired[paired.len() / 2],
        ]
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Writes `bytes` to `dir/plain.bin` as `Run::save` does (dot temp file,
/// `sync_all`, rename, sync of the folder): the baseline of the save benches.
pub fn atomic_write(dir: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    let (tmp, path) = (dir.join(".plain.bin.tmp"), dir.join("plain.bin"));
    let mut f = std::fs::File::create(&tmp).expect("create");
    f.write_all(bytes).expect("write");
    f.sync_all().expect("sync");
    std::fs::rename(&tmp, &path).expect("rename");
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("sync dir");
}

/// `getrusage(RUSAGE_SELF)`: this process, every thread, so far.
pub fn rusage() -> libc::rusage {
    // SAFETY: getrusage only writes the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    }
}

/// Minor page faults of this process (every thread) so far.
pub fn minor_faults() -> i64 {
    rusage().ru_minflt
}

/// CPU time of this process so far (every thread), user and system.
pub fn cpu_times() -> (Duration, Duration) {
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let u = rusage();
    (tv(u.ru_utime), tv(u.ru_stime))
}

/// The load average over 1, 5 and 15 minutes.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
