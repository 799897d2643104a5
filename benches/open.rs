//! Opening a big run and reading one small layer (issue 2 (c)): `Run::open` of a
//! ~1 GB run + `run.values("small")`, with the file out of the page cache each
//! time; goal ≤ 10 ms and no read of the other layers.
//!
//! The run: 16 layers of 64 MiB f32 plus `small` (10 f32), written with
//! `Run::save` into a temp dir (`TMPDIR` picks the disk). Before each repeat the
//! file is dropped from the page cache with `posix_fadvise(POSIX_FADV_DONTNEED)`
//! (falling back to `/proc/sys/vm/drop_caches` when that leaves pages cached), and
//! what was read is shown three ways: this process's `read_bytes` from
//! `/proc/self/io` (bytes fetched from the disk), its major page faults
//! (`getrusage`), and how much of the file is in the page cache afterwards
//! (`mincore`).
//!
//! `cargo bench --bench open` (Linux only; without `--bench`, e.g. under
//! `cargo test --benches`, it runs once on a 16 MiB run).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use candlelight::Run;

const REPEATS: usize = 9;

/// How the page cache was emptied.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Evict {
    Fadvise,
    DropCaches,
}

/// Bytes of `path` currently in the page cache.
fn resident_bytes(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path)?;
    // SAFETY: read-only mapping of a file nobody modifies meanwhile; never dereferenced.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let page = page_size();
    let pages = map.len().div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `map.len()` bytes; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut _, map.len(), vec.as_mut_ptr()) };
    ensure!(rc == 0, "mincore: {}", std::io::Error::last_os_error());
    Ok(vec.iter().filter(|&&b| b & 1 == 1).count() as u64 * page as u64)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Drops `path` from the page cache; returns how.
fn evict(path: &Path) -> Result<Evict> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    file.sync_all()?;
    // SAFETY: a valid open descriptor; advice only.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    ensure!(rc == 0, "posix_fadvise: error {rc}");
    if resident_bytes(path)? <= 64 * 1024 {
        return Ok(Evict::Fadvise);
    }
    std::fs::write("/proc/sys/vm/drop_caches", "1\n").context(
        "posix_fadvise left the file cached and /proc/sys/vm/drop_caches is not writable",
    )?;
    if resident_bytes(path)? <= 64 * 1024 {
        return Ok(Evict::DropCaches);
    }
    bail!("cannot drop {} from the page cache", path.display())
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    /// Bytes this process caused to be read from storage (`/proc/self/io`).
    read_bytes: u64,
    major_faults: u64,
    minor_faults: u64,
}

fn counters() -> Result<Counters> {
    let io = std::fs::read_to_string("/proc/self/io").context("reading /proc/self/io")?;
    let read_bytes = io
        .lines()
        .find_map(|l| l.strip_prefix("read_bytes:"))
        .context("no read_bytes in /proc/self/io")?
        .trim()
        .parse()?;
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ensure!(rc == 0, "getrusage: {}", std::io::Error::last_os_error());
    Ok(Counters {
        read_bytes,
        major_faults: ru.ru_majflt as u64,
        minor_faults: ru.ru_minflt as u64,
    })
}

/// Writes the big run: `layers` layers of `layer_mib` MiB f32 (one shared tensor)
/// and `small` (0..10).
fn write_run(dir: &Path, layers: usize, layer_mib: usize) -> Result<std::path::PathBuf> {
    let n = layer_mib * 1024 * 1024 / 4;
    let big = Tensor::arange(0u32, n as u32, &Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .reshape((layer_mib, 1024, 256))?;
    let small = Tensor::arange(0f32, 10., &Device::Cpu)?;
    let entries = (0..layers)
        .map(|i| (format!("layer.{i:02}"), big.clone()))
        .chain([("small".to_string(), small)]);
    let run = Run::from_named_tensors("open-bench", entries);
    Ok(run.save(dir)?)
}

fn open_and_read_small(path: &Path) -> Result<Vec<f32>> {
    let run = Run::open(path)?;
    Ok(run.values("small")?)
}

fn kib(b: u64) -> f64 {
    b as f64 / 1024.0
}

fn main() -> Result<()> {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let (layers, layer_mib, repeats) = if bench_mode {
        (16, 64, REPEATS)
    } else {
        (4, 4, 1)
    };
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    let path = write_run(dir.path(), layers, layer_mib)?;
    let size = std::fs::metadata(&path)?.len();
    println!(
        "wrote {:.3} GB run ({layers} x {layer_mib} MiB f32 + `small`) in {:.1} s: {}",
        size as f64 / 1e9,
        t.elapsed().as_secs_f64(),
        path.display()
    );
    let expected: Vec<f32> = (0..10).map(|v| v as f32).collect();

    let mut cold = Vec::new();
    let mut reads = Vec::new();
    let mut method = None;
    for _ in 0..repeats {
        let how = evict(&path)?;
        method.get_or_insert(how);
        let before = counters()?;
        let t = Instant::now();
        let values = open_and_read_small(&path)?;
        let took = t.elapsed();
        let after = counters()?;
        ensure!(values == expected, "read back {values:?}");
        let cached = resident_bytes(&path)?;
        cold.push(took);
        reads.push((
            took,
            after.read_bytes - before.read_bytes,
            after.major_faults - before.major_faults,
            after.minor_faults - before.minor_faults,
            cached,
        ));
    }
    let mut warm: Vec<Duration> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            let v = open_and_read_small(&path).expect("warm open");
            std::hint::black_box(v);
            t.elapsed()
        })
        .collect();
    // For information: streaming one whole big layer, cold.
    let mut big = Vec::new();
    for _ in 0..repeats.min(3) {
        evict(&path)?;
        let before = counters()?;
        let t = Instant::now();
        let run = Run::open(&path)?;
        let mut sum = 0f64;
        run.data(&format!("layer.{:02}", layers / 2))?
            .for_each_chunk(1 << 16, |_, c| {
                sum += c.iter().map(|&v| v as f64).sum::<f64>();
            });
        let took = t.elapsed();
        let after = counters()?;
        std::hint::black_box(sum);
        big.push((took, after.read_bytes - before.read_bytes));
    }
    big.sort();
    let (big_t, big_read) = big[big.len() / 2];
    let layer_bytes = (layer_mib * 1024 * 1024) as f64;

    cold.sort();
    warm.sort();
    let median = |v: &[Duration]| v[v.len() / 2].as_secs_f64() * 1e3;
    let max_read = reads.iter().map(|r| r.1).max().unwrap_or(0);
    let max_cached = reads.iter().map(|r| r.4).max().unwrap_or(0);

    println!(
        "page cache dropped with: {}",
        match method {
            Some(Evict::Fadvise) => "posix_fadvise(POSIX_FADV_DONTNEED) after fsync",
            Some(Evict::DropCaches) => "echo 1 > /proc/sys/vm/drop_caches",
            None => "-",
        }
    );
    for (i, (took, r, maj, min, c)) in reads.iter().enumerate() {
        println!(
            "  cold #{i}: {:>7.3} ms, read from disk {:>7.1} KiB, {maj} major / {min} minor faults, file in page cache after: {:>7.1} KiB",
            took.as_secs_f64() * 1e3,
            kib(*r),
            kib(*c)
        );
    }
    println!(
        "(c) Run::open + values(\"small\") on a {:.2} GB run, cold cache: median {:.3} ms, max {:.3} ms over {repeats} (goal <= 10 ms); warm cache: median {:.3} ms",
        size as f64 / 1e9,
        median(&cold),
        cold.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        median(&warm)
    );
    println!(
        "(c) bytes read from disk per open+read: at most {:.1} KiB = {:.4}% of the file; file pages cached afterwards: at most {:.1} KiB",
        kib(max_read),
        100.0 * max_read as f64 / size as f64,
        kib(max_cached)
    );
    println!(
        "(info) cold Run::open + streaming one {layer_mib} MiB layer: median {:.1} ms = {:.0} MB/s, read from disk {:.1} MiB",
        big_t.as_secs_f64() * 1e3,
        layer_bytes / big_t.as_secs_f64() / 1e6,
        big_read as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
