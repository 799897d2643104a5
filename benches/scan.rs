//! Issue 14: reading layers fast. In one process, on a ~1 GB run in `TMPDIR`
//! (16 × 64 MiB f32, page cache warm):
//! - a plain multi-threaded pass over the mapped bytes (max of the f32 values in
//!   16 lanes, rayon), the ceiling of any reader;
//! - statistics + a 64-bin histogram of every layer: the implementation before
//!   issue 14 (re-implemented here: chunks of 2^14 read and converted, two f64
//!   passes, a scalar binning pass) against `Stats::of` + `Histogram::of`;
//! - `candlelight show` of the run (the binary) and its library work (`stats_at` of
//!   every layer); a layer's picture (`render::render`, a `[1, n]` layer is read whole);
//! - `values()` / `tensor()` of one 64 MiB layer against a parallel memcpy from the
//!   mapping into fresh memory (and the old `values()`: zeroed vector + one read).
//!
//! `cargo bench --bench scan` (~1 min; `SCAN_BENCH_LAYERS`, default 16). Without
//! `--bench` (`cargo test --benches`) it runs once on 4 layers of 1 MiB.

mod common;

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use candlelight::render::{self, Histogram, RenderOptions};
use candlelight::{LayerData, Run, Stats};
use common::{ms, Figure};
use rayon::prelude::*;

/// Writes a version-1 run of `layers` F32 layers `[1, n]` of pseudo-random values
/// in [-1, 1) with a few zeros, streaming.
fn write_run(path: &Path, layers: usize, n: usize) {
    let names: Vec<String> = (0..layers).map(|l| format!("blocks.{l:02}.out")).collect();
    let mut header = serde_json::Map::new();
    let meta = serde_json::json!({
        "candlelight.version": "1",
        "candlelight.order": serde_json::to_string(&names).unwrap(),
        "candlelight.run": serde_json::json!({
            "id": "scan-bench", "created": "2026-12-03T00:00:00Z", "model": "bench", "input": "x"
        }).to_string(),
    });
    header.insert("__metadata__".into(), meta);
    let bytes = n * 4;
    for (l, name) in names.iter().enumerate() {
        let range = [l * bytes, (l + 1) * bytes];
        let entry = serde_json::json!({"dtype": "F32", "shape": [1, n], "data_offsets": range});
        header.insert(name.clone(), entry);
    }
    let mut head = serde_json::to_vec(&header).unwrap();
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    w.write_all(&(head.len() as u64).to_le_bytes()).unwrap();
    w.write_all(&head).unwrap();
    let mut z = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..layers * n {
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        let v = if z % 64 == 0 {
            0.0
        } else {
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        w.write_all(&v.to_le_bytes()).unwrap();
    }
    w.into_inner().unwrap().sync_all().unwrap();
}

/// The statistics and histogram of a layer as computed before issue 14.
/// Mean, std and histogram counts of a layer.
type Summary = (f64, f64, Vec<u64>);

fn old_stats_hist(data: &LayerData<'_>, bins: usize) -> Summary {
    const CHUNK: usize = 1 << 14;
    let n = data.len();
    let parts: Vec<(u64, f64, f64, f32, f32)> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map_init(
            || vec![0f32; CHUNK],
            |buf, k| {
                let len = CHUNK.min(n - k * CHUNK);
                data.read_into(k * CHUNK, &mut buf[..len]);
                let c = &buf[..len];
                let (mut fin, mut sum, mut lo, mut hi) =
                    (0u64, 0f64, f32::INFINITY, f32::NEG_INFINITY);
                for &v in c {
                    if v.is_finite() {
                        fin += 1;
                        sum += v as f64;
                        lo = lo.min(v);
                        hi = hi.max(v);
                    }
                }
                let mean = sum / fin.max(1) as f64;
                let m2: f64 = c
                    .iter()
                    .filter(|v| v.is_finite())
                    .map(|&v| (v as f64 - mean).powi(2))
                    .sum();
                (fin, mean, m2, lo, hi)
            },
        )
        .collect();
    let (mut fin, mut mean, mut m2, mut lo, mut hi) =
        (0u64, 0f64, 0f64, f32::INFINITY, f32::NEG_INFINITY);
    for (f, m, q, l, h) in parts {
        let t = fin + f;
        let d = m - mean;
        mean += d * f as f64 / t.max(1) as f64;
        m2 += q + d * d * fin as f64 * f as f64 / t.max(1) as f64;
        (fin, lo, hi) = (t, lo.min(l), hi.max(h));
    }
    let (lo, hi) = (lo as f64, hi as f64);
    let scale = bins as f64 / (hi - lo);
    let counts = (0..n.div_ceil(CHUNK * 2))
        .into_par_iter()
        .fold(
            || (vec![0f32; CHUNK * 2], vec![0u64; bins]),
            |(mut buf, mut counts), k| {
                let len = (CHUNK * 2).min(n - k * CHUNK * 2);
                data.read_into(k * CHUNK * 2, &mut buf[..len]);
                for &v in buf[..len].iter().filter(|v| v.is_finite()) {
                    counts[(((v as f64 - lo) * scale) as usize).min(bins - 1)] += 1;
                }
                (buf, counts)
            },
        )
        .map(|(_, c)| c)
        .reduce(
            || vec![0u64; bins],
            |a, b| a.iter().zip(b).map(|(x, y)| x + y).collect(),
        );
    (mean, (m2 / fin as f64).sqrt(), counts)
}

fn new_stats_hist(data: &LayerData<'_>, bins: usize) -> Summary {
    let s = Stats::of(data);
    let h = Histogram::of(data, &s, bins);
    (s.mean, s.std, h.counts)
}

/// The plain read: the largest value of `bytes` as f32, on every core.
fn max_of(bytes: &[u8]) -> f32 {
    let floats: &[f32] = bytemuck::cast_slice(&bytes[..bytes.len() / 64 * 64]);
    floats
        .par_chunks(1 << 16)
        .map(|c| {
            let mut m = [0f32; 16];
            for k in c.chunks_exact(16) {
                for j in 0..16 {
                    m[j] = if k[j] > m[j] { k[j] } else { m[j] };
                }
            }
            m.iter().fold(0f32, |a, &b| a.max(b))
        })
        .reduce(|| 0f32, f32::max)
}

/// Time of `f`, run `rounds` times; with the result of the last run.
fn time<R>(rounds: usize, mut f: impl FnMut() -> R) -> (Figure, R) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..rounds {
        let t = Instant::now();
        last = Some(std::hint::black_box(f()));
        times.push(t.elapsed());
    }
    (Figure(times), last.expect("at least one round"))
}

/// One timed plain pass after an untimed one: the first pass after other work (or
/// idle) ran at half speed here (2026-12-04, a KVM guest: 20-27 GB/s, then 40-46
/// back to back), which flattered every ratio over it.
fn warm_time(plain: &(dyn Fn() -> f32 + Sync)) -> Duration {
    plain();
    time(1, plain).0 .0[0]
}

fn gbs(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let layers: usize = std::env::var("SCAN_BENCH_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 16 } else { 4 });
    let n = if full { 16 << 20 } else { 1 << 18 };
    let rounds = if full { 5 } else { 1 };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("scan-bench.safetensors");
    write_run(&path, layers, n);
    let run = Run::open(&path)?;
    let bytes = run.data_bytes();
    println!("load before: {}", uptime());
    let file = std::fs::File::open(&path)?;
    // SAFETY: the bench's own file, not modified while mapped.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let plain = || max_of(&map);
    plain();
    // A mapped read as a program does it: map the file, read it, unmap.
    let fresh = || {
        let file = std::fs::File::open(&path).expect("bench file");
        // SAFETY: as above.
        let map = unsafe { memmap2::Mmap::map(&file).expect("map") };
        max_of(&map)
    };
    let each = |f: &dyn Fn(&LayerData<'_>) -> Summary| {
        run.layers()
            .iter()
            .map(|l| f(&run.data_at(l.index).unwrap()))
            .collect::<Vec<_>>()
    };
    let (mut t_plain, mut t_old, mut t_new) = (Vec::new(), Vec::new(), Vec::new());
    let (mut r_old, mut r_new, mut t_fresh) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        t_plain.push(warm_time(&plain));
        t_fresh.push(warm_time(&fresh));
        let (t, r) = time(1, || each(&|d| old_stats_hist(d, 64)));
        t_old.push(t.0[0]);
        r_old = r;
        let (t, r) = time(1, || each(&|d| new_stats_hist(d, 64)));
        t_new.push(t.0[0]);
        r_new = r;
    }
    for (a, b) in r_old.iter().zip(&r_new) {
        assert_eq!(a.2, b.2, "histograms differ");
        assert!(
            (a.0 - b.0).abs() <= 1e-5 * a.1 && (a.1 - b.1).abs() <= 1e-5 * a.1,
            "{a:?} vs {b:?}"
        );
    }
    let (t_plain, t_old, t_new) = (Figure(t_plain), Figure(t_old), Figure(t_new));
    let t_fresh = Figure(t_fresh);
    let g = |f: &Figure| (gbs(bytes, f.min()), gbs(bytes, f.median()));
    println!(
        "run: {layers} layers of {} MiB f32 ({:.2} GB)",
        (n * 4) >> 20,
        bytes as f64 / 1e9
    );
    println!(
        "plain mapped pass (max, rayon):  {:.2} GB/s best, {:.2} median",
        g(&t_plain).0,
        g(&t_plain).1
    );
    println!(
        "fresh mapping each pass:         {:.2} GB/s best, {:.2} median",
        g(&t_fresh).0,
        g(&t_fresh).1
    );
    println!(
        "stats + histogram, before:       {:.2} GB/s best, {:.2} median",
        g(&t_old).0,
        g(&t_old).1
    );
    println!(
        "stats + histogram, now:          {:.2} GB/s best, {:.2} median (goal >= 5)",
        g(&t_new).0,
        g(&t_new).1
    );
    println!(
        "  now / before: {:.2}x (median of per-round ratios)",
        1.0 / t_new.ratio(&t_old)[2]
    );
    println!(
        "  now / plain mapped pass: {:.2}, over a fresh mapping {:.2} (per round; goal >= 0.3)",
        1.0 / t_new.ratio(&t_plain)[2],
        1.0 / t_new.ratio(&t_fresh)[2]
    );
    cards(&run, dir.path(), &plain, &fresh, rounds)?;
    let (t_stats, _) = time(rounds, || {
        run.layers()
            .iter()
            .map(|l| run.stats_at(l.index).unwrap().mean)
            .sum::<f64>()
    });
    println!(
        "stats of every layer (show's work): {:.2} GB/s best, {:.2} median",
        g(&t_stats).0,
        g(&t_stats).1
    );
    if let Some(t_show) = time_show(&path, rounds)? {
        println!(
            "candlelight show (binary): {:.1} ms best = {:.2} GB/s",
            ms(t_show.min()),
            gbs(bytes, t_show.min())
        );
    }
    let l0 = &run.layers()[0];
    let opts = RenderOptions {
        labels: true,
        ..RenderOptions::default()
    };
    let (t_pic, _) = time(rounds, || {
        render::render(&run.data_at(0).unwrap(), &l0.shape, &opts)
            .unwrap()
            .layout
            .tiles
    });
    let (t_one, _) = time(rounds, || new_stats_hist(&run.data_at(0).unwrap(), 64).0);
    println!(
        "one layer ({} MiB): picture {:.1} ms, stats + histogram {:.1} ms (best)",
        l0.nbytes() >> 20,
        ms(t_pic.min()),
        ms(t_one.min())
    );
    copies(&run, &map, rounds.max(3) * 2)?;
    println!("load after: {}", uptime());
    Ok(())
}

/// A gallery card's work on every layer (statistics, 64-bin histogram, picture):
/// the separate reads of before against `scan_cells` + painting, with the summaries a saved
/// run stores (one read) and without (the run as written, two reads), beside the
/// plain mapped pass, all in each round.
fn cards(
    run: &Run,
    dir: &Path,
    plain: &(dyn Fn() -> f32 + Sync),
    fresh: &(dyn Fn() -> f32 + Sync),
    rounds: usize,
) -> anyhow::Result<()> {
    // The same run saved by candlelight: its header has every layer's statistics.
    let saved = Run::open(run.save(dir.join("saved"))?)?;
    read_all(saved.path().expect("a file"))?;
    let opts = RenderOptions {
        labels: true,
        ..RenderOptions::default()
    };
    let separate = |r: &Run| -> Vec<(Stats, Vec<u64>, usize)> {
        let each = |l: &candlelight::LayerInfo| {
            let d = r.data_at(l.index).unwrap();
            let s = Stats::of(&d);
            let p = render::render(&d, &l.shape, &opts).unwrap();
            let h = Histogram::of(&d, &s, 64);
            (s, h.counts, p.values.len())
        };
        r.layers().iter().map(each).collect()
    };
    let small = RenderOptions {
        max_pixels: 1 << 16,
        ..opts.clone()
    };
    let scan_with = |r: &Run, opts: &RenderOptions| -> Vec<(Stats, Vec<u64>, usize)> {
        let each = |l: &candlelight::LayerInfo| {
            let c = scan_cells(r, l, opts).paint();
            (c.stats, c.histogram.counts, c.picture.unwrap().values.len())
        };
        r.layers().iter().map(each).collect()
    };
    let scan = |r: &Run| scan_with(r, &opts);
    // The read alone: statistics, histogram and the picture's cells, unpainted.
    let cells_with = |r: &Run, opts: &RenderOptions| -> usize {
        let each = |l: &candlelight::LayerInfo| {
            let c = scan_cells(r, l, opts);
            assert_eq!(c.reads, 1, "one read with the stored summaries");
            c.cells.map_or(0, |(_, t)| t.iter().map(Vec::len).sum())
        };
        r.layers().iter().map(each).sum()
    };
    let (mut tp, mut ts, mut t1, mut t2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut t3, mut t4, mut t5, mut tf) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        tp.push(warm_time(plain));
        tf.push(warm_time(fresh));
        let (t, r) = time(1, || separate(run));
        ts.push(t.0[0]);
        a = r;
        let (t, r) = time(1, || scan(&saved));
        t1.push(t.0[0]);
        b = r;
        let (t, r) = time(1, || scan(run));
        t2.push(t.0[0]);
        c = r;
        t3.push(time(1, || scan_with(&saved, &small)).0 .0[0]);
        t4.push(time(1, || cells_with(&saved, &opts)).0 .0[0]);
        t5.push(time(1, || cells_with(&saved, &small)).0 .0[0]);
    }
    for ((x, y), z) in a.iter().zip(&b).zip(&c) {
        anyhow::ensure!(x.0 == y.0 && x.0 == z.0, "statistics differ");
        anyhow::ensure!(x.1 == y.1 && x.1 == z.1, "histograms differ");
        anyhow::ensure!(x.2 == y.2 && x.2 == z.2, "pictures differ");
    }
    let (tp, ts, t1, t2, t3) = (Figure(tp), Figure(ts), Figure(t1), Figure(t2), Figure(t3));
    let (t4, t5, tf) = (Figure(t4), Figure(t5), Figure(tf));
    let bytes = run.data_bytes();
    let g = |f: &Figure| (gbs(bytes, f.min()), gbs(bytes, f.median()));
    println!("gallery card work (stats + histogram + picture of every layer):");
    println!(
        "  separate reads (before):        {:.2} GB/s best, {:.2} median",
        g(&ts).0,
        g(&ts).1
    );
    println!(
        "  one read (scan_cells + paint, stored summaries): {:.2} GB/s best, {:.2} median (goal >= 5); \
         {:.2} of the plain mapped pass (per round; goal >= 0.3); {:.2}x before",
        g(&t1).0,
        g(&t1).1,
        1.0 / t1.ratio(&tp)[2],
        1.0 / t1.ratio(&ts)[2]
    );
    println!(
        "  scan_cells + paint without summaries (two reads): {:.2} GB/s best, {:.2} median; {:.2}x before",
        g(&t2).0,
        g(&t2).1,
        1.0 / t2.ratio(&ts)[2]
    );
    println!(
        "  one read, pictures of <= 65,536 pixels (painting out of the way): {:.2} GB/s best, \
         {:.2} median; {:.2} of the plain mapped pass (per round)",
        g(&t3).0,
        g(&t3).1,
        1.0 / t3.ratio(&tp)[2]
    );
    for (what, t) in [
        ("4-megapixel pictures", &t4),
        ("<= 65,536-pixel pictures", &t5),
    ] {
        println!(
            "  the one read alone (scan_cells: stats + histogram + picture cells, unpainted), \
             {what}: {:.2} GB/s best, {:.2} median (goal >= 5); {:.2} of the plain mapped \
             pass, {:.2} of a fresh mapping (per round; goal >= 0.3)",
            g(t).0,
            g(t).1,
            1.0 / t.ratio(&tp)[2],
            1.0 / t.ratio(&tf)[2]
        );
    }
    // The same pass repeated back to back: the steadiest figure of the plain pass.
    let (tb, _) = time(rounds.max(3) * 2, plain);
    println!(
        "  plain mapped pass back to back: {:.2} GB/s best, {:.2} median; the one read alone \
         (best) over its median: {:.2} (4 Mpx), {:.2} (<= 65,536 px)",
        g(&tb).0,
        g(&tb).1,
        g(&t4).0 / g(&tb).1,
        g(&t5).0 / g(&tb).1
    );
    if let Some(t_show) = time_show(saved.path().expect("a file"), rounds)? {
        println!(
            "candlelight show of the saved run (header summaries): {:.1} ms best",
            ms(t_show.min())
        );
    }
    Ok(())
}

/// `render::scan_cells` of layer `l` of `r` (64 bins, units), with the
/// statistics the run's header stores as the hint.
fn scan_cells(r: &Run, l: &candlelight::LayerInfo, opts: &RenderOptions) -> render::CellScan {
    let d = r.data_at(l.index).unwrap();
    let hint = r.summary_at(l.index).and_then(|s| s.stats);
    render::scan_cells(&d, &l.shape, opts, 64, hint.as_ref(), true).unwrap()
}

/// Times `candlelight show RUN` (the binary), when the bench was built with it.
fn time_show(run: &Path, rounds: usize) -> anyhow::Result<Option<Figure>> {
    let Some(bin) = option_env!("CARGO_BIN_EXE_candlelight") else {
        return Ok(None);
    };
    let (t, ok) = time(rounds, || {
        std::process::Command::new(bin)
            .arg("show")
            .arg(run)
            .stdout(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
    });
    anyhow::ensure!(ok?, "candlelight show failed");
    Ok(Some(t))
}

/// Reads a file once (into the page cache: a save with direct I/O leaves it out).
fn read_all(path: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// `values()` / `tensor()` of layer 0 against a parallel copy out of the mapping.
fn copies(run: &Run, map: &memmap2::Mmap, rounds: usize) -> anyhow::Result<()> {
    let l = &run.layers()[0];
    let name = l.name.clone();
    let data = run.data_at(0)?;
    let start = map.len() - run.data_bytes();
    let src = &map[start..start + l.nbytes()];
    let memcpy = || {
        let mut v: Vec<u8> = Vec::with_capacity(src.len());
        v.spare_capacity_mut()
            .par_chunks_mut(1 << 20)
            .zip(src.par_chunks(1 << 20))
            .for_each(|(d, s)| {
                for (d, &s) in d.iter_mut().zip(s) {
                    d.write(s);
                }
            });
        // SAFETY: every byte was written just above.
        unsafe { v.set_len(src.len()) };
        v
    };
    let old_values = || {
        let mut v = vec![0f32; data.len()];
        data.read_into(0, &mut v);
        v
    };
    let (mut tm, mut tv, mut tt, mut to) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        tm.push(time(1, memcpy).0 .0[0]);
        tv.push(time(1, || run.values(&name).unwrap()).0 .0[0]);
        tt.push(time(1, || run.tensor(&name).unwrap()).0 .0[0]);
        to.push(time(1, old_values).0 .0[0]);
    }
    let (tm, tv, tt, to) = (Figure(tm), Figure(tv), Figure(tt), Figure(to));
    anyhow::ensure!(run.values(&name)? == old_values(), "values differ");
    println!("64 MiB layer ({} MiB), median ms (min):", l.nbytes() >> 20);
    println!(
        "  parallel memcpy from the mapping: {:.1} ({:.1})",
        ms(tm.median()),
        ms(tm.min())
    );
    println!(
        "  values(): {:.1} ({:.1}), {:.2}x the memcpy (per round; goal <= 1.2)",
        ms(tv.median()),
        ms(tv.min()),
        tv.ratio(&tm)[2]
    );
    println!(
        "  tensor(): {:.1} ({:.1}), {:.2}x the memcpy (per round; goal <= 1.2)",
        ms(tt.median()),
        ms(tt.min()),
        tt.ratio(&tm)[2]
    );
    println!(
        "  values() before (zeroed vector + one read): {:.1} ({:.1}), {:.2}x",
        ms(to.median()),
        ms(to.min()),
        to.ratio(&tm)[2]
    );
    Ok(())
}
