//! In-process mutation fuzzing of run files (issue 10).
//!
//! Real run files are written with the library (plus one hand-made file from
//! "another producer"), then a seeded, deterministic mutator damages them: bit
//! flips, truncations, junk, header-length edits, and structure-aware edits of the
//! parsed JSON header (shapes, offsets, dtypes, names, `__metadata__`), re-written
//! with a correct or a wrong header length. Every case goes through `Run::open`,
//! stats, values, rendering, diff against its seed and (for a subset) a whole
//! gallery. Errors are expected; a panic, a hang, an error message on several lines
//! or one that does not name the run file is a failure.
//!
//! - `CANDLELIGHT_FUZZ_CASES` (default 5000): number of cases.
//! - `CANDLELIGHT_FUZZ_SEED` (default fixed, printed): the mutator's seed.
//! - `CANDLELIGHT_FUZZ_ONLY=N`: run case number N only (to reproduce a failure).
//! - `CANDLELIGHT_FUZZ_VERBOSE`: print why each rejected input did not open.
//!
//! Cases run on a worker thread (panics caught per case, the default panic output
//! silenced); the test thread fails the test when one case makes no progress for
//! 30 s. Failing inputs are written to a kept temp folder whose path is printed,
//! with the case number and the mutations made. Inputs worth keeping go to
//! `tests/fuzz-regressions/`, which `fuzz_regressions_do_not_panic` runs through
//! the same pipeline. The seed corpus is in `fuzz/seeds.rs`, the mutator in
//! `fuzz/mutate.rs`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::{Duration, Instant};

use candlelight::render::{render_layer, RenderOptions, Scale};
use candlelight::{DiffOptions, Error, GalleryOptions, NameMap, Run};

#[path = "fuzz/mutate.rs"]
mod mutate;
#[path = "fuzz/seeds.rs"]
mod seeds;

use mutate::{case_seed, mutate, Rng};
use seeds::seeds;

const DEFAULT_SEED: u64 = 0x00C0_FFEE_CA4D_1E11;
const DEFAULT_CASES: u64 = 5000;
/// A case that makes no progress for this long is a hang.
const HANG: Duration = Duration::from_secs(30);
/// Every this many cases also render a whole gallery (slower: files, HTML).
const GALLERY_EVERY: u64 = 10;
/// Every this many cases also write the diff gallery against the seed.
const DIFF_GALLERY_EVERY: u64 = 20;
/// Every this many cases also re-save the opened run and open it again.
const RESAVE_EVERY: u64 = 5;
/// Layers up to this many bytes are also loaded as candle tensors and f32 vectors.
const SMALL_LAYER: usize = 64 << 10;

// ---------------------------------------------------------------------------
// The pipeline every input goes through.

/// Checks an error from an API that knows the run file: one line, naming the file.
fn check_err(e: &Error, path: Option<&Path>, what: &str, findings: &mut Vec<String>) {
    let s = e.to_string();
    if s.contains('\n') || s.contains('\r') {
        findings.push(format!("{what}: error message is not one line: {s:?}"));
    }
    if let Some(p) = path {
        let shown = p.display().to_string();
        if !s.contains(&shown) {
            findings.push(format!("{what}: error does not name the file: {s:?}"));
        }
        if let Error::Io { path: ep, .. }
        | Error::BadRunFile { path: ep, .. }
        | Error::NoSuchLayer { path: ep, .. } = e
        {
            if ep != p {
                findings.push(format!(
                    "{what}: error names {} instead of the run file",
                    ep.display()
                ));
            }
        }
    }
}

fn render_variants(variant: u64, shape: &[usize]) -> Vec<RenderOptions> {
    let base = RenderOptions {
        max_pixels: 20_000,
        ..Default::default()
    };
    let samples = if shape.len() >= 2 { shape[0] } else { 1 };
    let all = [
        base.clone(),
        RenderOptions {
            sample: samples.saturating_sub(1),
            ..base.clone()
        },
        RenderOptions {
            sample: samples,
            ..base.clone()
        },
        RenderOptions {
            scale: Scale::Shared,
            ..base.clone()
        },
        RenderOptions {
            scale: Scale::Percentile(1.0, 99.0),
            ..base.clone()
        },
        RenderOptions {
            separator: 0,
            min_cell: 1,
            min_side: 1,
            ..base.clone()
        },
        RenderOptions {
            max_pixels: 1,
            ..base.clone()
        },
        RenderOptions {
            max_pixels: 300,
            separator: 3,
            ..base.clone()
        },
    ];
    if variant == u64::MAX {
        return all.to_vec();
    }
    vec![base, all[(variant % all.len() as u64) as usize].clone()]
}

/// What the cases reached, to show the mutator gets past validation.
#[derive(Default)]
struct Coverage {
    opened: AtomicU64,
    layers: AtomicU64,
    stats: AtomicU64,
    pictures: AtomicU64,
    tensors: AtomicU64,
    diffs: AtomicU64,
    galleries: AtomicU64,
    resaved: AtomicU64,
    diff_galleries: AtomicU64,
    /// Milliseconds spent in: layers (stats, render, values), diff, gallery, diff gallery.
    ms: [AtomicU64; 4],
}

static COVERAGE: Coverage = Coverage {
    opened: AtomicU64::new(0),
    layers: AtomicU64::new(0),
    stats: AtomicU64::new(0),
    pictures: AtomicU64::new(0),
    tensors: AtomicU64::new(0),
    diffs: AtomicU64::new(0),
    galleries: AtomicU64::new(0),
    resaved: AtomicU64::new(0),
    diff_galleries: AtomicU64::new(0),
    ms: [const { AtomicU64::new(0) }; 4],
};

fn timed<T>(slot: usize, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    COVERAGE.ms[slot].fetch_add(t.elapsed().as_millis() as u64, Ordering::Relaxed);
    out
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Coverage {
    fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} opened, {} layers, {} stats, {} pictures, {} tensors, {} diffs, {} galleries, {} diff galleries, \
             {} re-saved; ms in layers {}, diff {}, \
             gallery {}, diff gallery {}",
            g(&self.opened),
            g(&self.layers),
            g(&self.stats),
            g(&self.pictures),
            g(&self.tensors),
            g(&self.diffs),
            g(&self.galleries),
            g(&self.diff_galleries),
            g(&self.resaved),
            g(&self.ms[0]),
            g(&self.ms[1]),
            g(&self.ms[2]),
            g(&self.ms[3])
        )
    }
}

struct Job<'a> {
    path: &'a Path,
    /// The unmutated run, to diff against.
    seed: Option<&'a Run>,
    /// Render a whole gallery into this (fresh) folder.
    gallery: Option<&'a Path>,
    /// Also write the diff gallery against `seed` (beside `gallery`).
    diff_gallery: bool,
    resave: bool,
    /// Which extra render options (`u64::MAX`: all of them).
    variant: u64,
}

/// Runs one input through the library; returns the findings (not panics).
fn exercise(job: &Job) -> Vec<String> {
    let mut f = Vec::new();
    let path = job.path;
    let run = match Run::open(path) {
        Ok(r) => r,
        Err(e) => {
            if std::env::var_os("CANDLELIGHT_FUZZ_VERBOSE").is_some() {
                let s = e.to_string().replace(&path.display().to_string(), "");
                eprintln!("open error: {}", s.chars().take(90).collect::<String>());
            }
            check_err(&e, Some(path), "open", &mut f);
            // A gallery of an unreadable file fails the same way, without panicking.
            if let Some(out) = job.gallery {
                if let Err(e) = candlelight::render_gallery(path, out, &GalleryOptions::default()) {
                    check_err(&e, None, "gallery", &mut f);
                }
            }
            return f;
        }
    };
    bump(&COVERAGE.opened);
    let _ = (
        run.info(),
        run.metadata(),
        run.data_bytes(),
        run.header_metadata(),
    );
    let t0 = Instant::now();
    for (i, l) in run.layers().iter().enumerate() {
        bump(&COVERAGE.layers);
        let _ = (
            l.shape_str(),
            l.elem_count(),
            l.nbytes(),
            run.layer(&l.name),
        );
        match run.stats_at(i) {
            Ok(_) => bump(&COVERAGE.stats),
            Err(e) => check_err(&e, Some(path), "stats_at", &mut f),
        }
        match run.data_at(i) {
            Ok(d) => {
                for o in render_variants(job.variant, &l.shape) {
                    match render_layer(&d, &l.shape, &o) {
                        Ok(img) => {
                            bump(&COVERAGE.pictures);
                            let px = img.width() as usize * img.height() as usize;
                            if px > o.max_pixels.max(16 * 16) {
                                f.push(format!(
                                    "render {:?}: {}x{} picture over the {} pixel budget",
                                    l.name,
                                    img.width(),
                                    img.height(),
                                    o.max_pixels
                                ));
                            }
                        }
                        Err(e) => check_err(&e, None, "render_layer", &mut f),
                    }
                }
            }
            Err(e) => check_err(&e, Some(path), "data_at", &mut f),
        }
        if l.nbytes() <= SMALL_LAYER {
            {
                match run.tensor_at(i) {
                    Ok(_) => bump(&COVERAGE.tensors),
                    Err(e) => check_err(&e, Some(path), "tensor_at", &mut f),
                }
            }
            match run.values(&l.name) {
                Ok(v) if v.len() != l.elem_count() => f.push(format!(
                    "values {:?}: {} values for shape {}",
                    l.name,
                    v.len(),
                    l.shape_str()
                )),
                Ok(_) => {}
                Err(e) => check_err(&e, Some(path), "values", &mut f),
            }
            if let Err(e) = run.stats(&l.name) {
                check_err(&e, Some(path), "stats", &mut f);
            }
        }
    }
    COVERAGE.ms[0].fetch_add(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
    if let Some(seed) = job.seed {
        let paths = [Some(path), seed.path()];
        let diff_check =
            |r: candlelight::Result<candlelight::RunDiff>, what, f: &mut Vec<String>| {
                if r.is_ok() {
                    bump(&COVERAGE.diffs);
                }
                if let Err(e) = r {
                    check_err(&e, None, what, f);
                    let s = e.to_string();
                    if !paths
                        .iter()
                        .flatten()
                        .any(|p| s.contains(&p.display().to_string()))
                    {
                        f.push(format!("{what}: error names neither run file: {s:?}"));
                    }
                }
            };
        let d = timed(1, || run.diff(seed));
        if let (Ok(d), Some(out), true) = (&d, job.gallery, job.diff_gallery) {
            let out = out.with_file_name("diff-out");
            match timed(3, || candlelight::write_diff_gallery(d, &run, seed, &out)) {
                Ok(_) => {
                    bump(&COVERAGE.diff_galleries);
                    no_stray(&out, path, "write_diff_gallery", &mut f);
                    no_markup(&out, &mut f);
                }
                Err(e) => check_err(&e, None, "write_diff_gallery", &mut f),
            }
            let _ = std::fs::remove_dir_all(&out);
        }
        diff_check(d, "diff", &mut f);
        diff_check(seed.diff(&run), "diff (reversed)", &mut f);
        let opts = DiffOptions {
            ignore_missing: true,
            map: NameMap {
                strip_prefix_a: Some("model.".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        diff_check(candlelight::diff(&run, &run, &opts), "diff (self)", &mut f);
    }
    if job.resave {
        resave(&run, path, &mut f);
    }
    if let Some(out) = job.gallery {
        gallery(path, out, &mut f);
    }
    f
}

/// A run that opens saves and opens again with the same layers.
fn resave(run: &Run, path: &Path, f: &mut Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("resaved.safetensors");
    if let Err(e) = run.write_to(&copy) {
        check_err(&e, None, "write_to", f);
        return;
    }
    match Run::open(&copy) {
        Ok(back) => {
            bump(&COVERAGE.resaved);
            let key = |r: &Run| -> Vec<_> {
                r.layers()
                    .iter()
                    .map(|l| (l.name.clone(), l.shape.clone(), l.dtype, l.kind.clone()))
                    .collect()
            };
            if key(&back) != key(run) {
                f.push("re-saved run has other layers".into());
            }
            if back.metadata() != run.metadata() {
                f.push("re-saved run has other user metadata".into());
            }
        }
        Err(e) => f.push(format!(
            "{} opens but does not reopen after write_to: {e}",
            path.display()
        )),
    }
}

fn gallery(path: &Path, out: &Path, f: &mut Vec<String>) {
    match timed(2, || {
        candlelight::render_gallery(path, out, &GalleryOptions::default())
    }) {
        Err(e) => check_err(&e, None, "gallery", f),
        Ok(_) => {
            bump(&COVERAGE.galleries);
            no_stray(out, path, "gallery", f);
            no_markup(out, f);
        }
    }
}

/// Nothing but the run file and `out` is in the folder holding them.
fn no_stray(out: &Path, run: &Path, what: &str, f: &mut Vec<String>) {
    let stray: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != out && p != run)
        .collect();
    if !stray.is_empty() {
        f.push(format!("{what} wrote outside its folder: {stray:?}"));
    }
}

/// Text from the run file never becomes markup in the pages under `dir`.
fn no_markup(dir: &Path, f: &mut Vec<String>) {
    for p in list_files(dir) {
        if p.extension().is_some_and(|e| e == "html") {
            let html = std::fs::read_to_string(&p).unwrap_or_default();
            if html.contains("<script>fuzz") {
                f.push(format!(
                    "{}: unescaped markup from the run file",
                    p.display()
                ));
            }
        }
    }
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Driver: panics caught per case, a watchdog for hangs.

/// While above zero, panics are recorded here instead of printed.
static QUIET: AtomicUsize = AtomicUsize::new(0);
static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

thread_local! {
    /// Set on the threads that watch the workers: their own panics always show.
    static WATCHER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn install_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        let seen: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.load(Ordering::SeqCst) == 0 || WATCHER.with(|w| w.get()) {
                return default(info);
            }
            let loc = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let msg = payload_str(info.payload());
            // Backtraces are slow: one per panic location.
            let bt = if seen.lock().unwrap().insert(loc.clone()) {
                top_frames(&std::backtrace::Backtrace::force_capture().to_string())
            } else {
                String::new()
            };
            PANICS.lock().unwrap().push((msg, format!("at {loc}{bt}")));
        }));
    });
}

fn payload_str(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// The frames of a backtrace that are candlelight's own.
fn top_frames(bt: &str) -> String {
    let lines: Vec<&str> = bt.lines().collect();
    let mut out = String::new();
    let mut n = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.contains("candlelight::") && !l.contains("fuzz::") && n < 8 {
            out += "\n    ";
            out += l.trim();
            if let Some(at) = lines
                .get(i + 1)
                .filter(|a| a.trim_start().starts_with("at "))
            {
                out += " ";
                out += at.trim();
            }
            n += 1;
        }
    }
    out
}

struct Case {
    no: u64,
    desc: String,
    bytes: Vec<u8>,
    /// Index of the seed it came from.
    seed: Option<usize>,
    gallery: bool,
    diff_gallery: bool,
    resave: bool,
    variant: u64,
}

struct Failure {
    no: u64,
    desc: String,
    bytes: Vec<u8>,
    what: String,
}

#[derive(Default)]
struct Progress {
    ticks: AtomicU64,
    current: Mutex<Option<(u64, String, Vec<u8>)>>,
    stop: AtomicBool,
}

/// Runs `cases` on a worker thread; returns the failures and the number of cases run.
/// Panics (after saving the input) when one case makes no progress for [`HANG`].
fn drive(
    label: &str,
    seeds_dir: PathBuf,
    cases: Box<dyn Iterator<Item = Case> + Send>,
) -> (Vec<Failure>, u64) {
    install_hook();
    WATCHER.with(|w| w.set(true));
    let progress = Arc::new(Progress::default());
    let (tx, rx) = mpsc::channel();
    let p = progress.clone();
    let worker = std::thread::Builder::new()
        .name(format!("fuzz-{label}"))
        .spawn(move || {
            let seeds: Vec<Run> = candlelight_seed_runs(&seeds_dir);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("case.safetensors");
            let mut failures = Vec::new();
            let mut count = 0;
            for case in cases {
                if p.stop.load(Ordering::SeqCst) {
                    break;
                }
                *p.current.lock().unwrap() = Some((case.no, case.desc.clone(), case.bytes.clone()));
                p.ticks.fetch_add(1, Ordering::SeqCst);
                std::fs::write(&path, &case.bytes).unwrap();
                let out = dir.path().join("out");
                PANICS.lock().unwrap().clear();
                QUIET.fetch_add(1, Ordering::SeqCst);
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    exercise(&Job {
                        path: &path,
                        seed: case.seed.map(|s| &seeds[s]),
                        gallery: case.gallery.then_some(out.as_path()),
                        diff_gallery: case.diff_gallery,
                        resave: case.resave,
                        variant: case.variant,
                    })
                }));
                QUIET.fetch_sub(1, Ordering::SeqCst);
                let what = match result {
                    Ok(findings) => findings,
                    Err(payload) => {
                        let msg = payload_str(&*payload);
                        let recorded = PANICS.lock().unwrap();
                        let place = recorded
                            .iter()
                            .find(|(m, _)| *m == msg)
                            .map(|(_, w)| w.clone())
                            .unwrap_or_default();
                        vec![format!("PANIC: {msg} {place}")]
                    }
                };
                for w in what {
                    failures.push(Failure {
                        no: case.no,
                        desc: case.desc.clone(),
                        bytes: case.bytes.clone(),
                        what: w,
                    });
                }
                let _ = std::fs::remove_dir_all(&out);
                count += 1;
            }
            let _ = tx.send((failures, count));
        })
        .unwrap();

    let mut last = u64::MAX;
    let mut since = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(done) => {
                worker.join().unwrap();
                return done;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = worker.join();
                panic!("the fuzz worker died outside a case");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let t = progress.ticks.load(Ordering::SeqCst);
        if t != last {
            last = t;
            since = Instant::now();
        } else if since.elapsed() > HANG {
            progress.stop.store(true, Ordering::SeqCst);
            let cur = progress.current.lock().unwrap().clone();
            let (no, desc, bytes) = cur.unwrap_or_default();
            let kept = keep_dir();
            let file = kept.join(format!("hang-case-{no}.safetensors"));
            std::fs::write(&file, &bytes).unwrap();
            panic!(
                "HANG: case {no} ({desc}) made no progress for {HANG:?}; input saved to {}",
                file.display()
            );
        }
    }
}

fn candlelight_seed_runs(dir: &Path) -> Vec<Run> {
    let mut paths: Vec<PathBuf> = list_files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| Run::open(p).expect("seed opens"))
        .collect()
}

fn keep_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("candlelight-fuzz-failures-")
        .tempdir()
        .unwrap()
        .keep()
}

/// Saves the failing inputs, prints them, and fails.
fn report(label: &str, failures: Vec<Failure>, reproduce: &str) {
    if failures.is_empty() {
        return;
    }
    let kept = keep_dir();
    let mut by_what: Vec<(String, Vec<u64>)> = Vec::new();
    let mut saved = HashSet::new();
    for f in &failures {
        let file = kept.join(format!("case-{}.safetensors", f.no));
        if saved.insert(f.no) {
            std::fs::write(&file, &f.bytes).unwrap();
            eprintln!(
                "case {} [{}]: {}\n  input: {}",
                f.no,
                f.desc,
                f.what,
                file.display()
            );
        } else {
            eprintln!("case {}: {}", f.no, f.what);
        }
        let key: String = f
            .what
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(160)
            .collect();
        match by_what.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(f.no),
            None => by_what.push((key, vec![f.no])),
        }
    }
    let summary: Vec<String> = by_what
        .iter()
        .map(|(k, v)| format!("{} case(s), first {}: {k}", v.len(), v[0]))
        .collect();
    panic!(
        "{label}: {} failure(s) in {} case(s); inputs in {}\n{}\n{reproduce}",
        failures.len(),
        saved.len(),
        kept.display(),
        summary.join("\n")
    );
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

#[test]
fn mutated_run_files_never_panic_or_hang() {
    let seed = env_u64("CANDLELIGHT_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("CANDLELIGHT_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let only = env_u64("CANDLELIGHT_FUZZ_ONLY");
    println!("fuzz: seed {seed:#x}, {cases} cases (CANDLELIGHT_FUZZ_SEED / _CASES / _ONLY)");
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let seeds = seeds(dir.path());
    for s in &seeds {
        assert!(
            s.bytes.len() < 8 << 10,
            "seed {} is {} bytes",
            s.name,
            s.bytes.len()
        );
    }
    let seeds = Arc::new(seeds);
    // The worker opens the seed runs sorted by path: map seed index -> that order.
    let mut sorted: Vec<usize> = (0..seeds.len()).collect();
    sorted.sort_by_key(|&i| seeds[i].path.clone());
    let run_index: Vec<usize> = (0..seeds.len())
        .map(|i| sorted.iter().position(|&j| j == i).unwrap())
        .collect();

    let s2 = seeds.clone();
    let numbers: Box<dyn Iterator<Item = u64> + Send> = match only {
        Some(n) => Box::new(std::iter::once(n)),
        None => Box::new(0..cases),
    };
    let iter = numbers.map(move |no| {
        let mut rng = Rng::new(case_seed(seed, no));
        let k = rng.usize(s2.len());
        let (bytes, desc) = mutate(&mut rng, &s2, k);
        Case {
            no,
            desc: format!("seed {}: {}", s2[k].name, desc.join("; ")),
            bytes,
            seed: Some(run_index[k]),
            gallery: no % GALLERY_EVERY == 0,
            diff_gallery: no % DIFF_GALLERY_EVERY == 0,
            resave: no % RESAVE_EVERY == 1,
            variant: rng.next(),
        }
    });
    let (failures, ran) = drive("mutations", dir.path().to_path_buf(), Box::new(iter));
    println!(
        "fuzz: {ran} cases in {:.1} s, {} failure(s); reached: {}",
        t0.elapsed().as_secs_f64(),
        failures.len(),
        COVERAGE.summary()
    );
    report(
        "fuzz",
        failures,
        &format!(
            "reproduce one case with CANDLELIGHT_FUZZ_SEED={seed:#x} CANDLELIGHT_FUZZ_ONLY=<case>"
        ),
    );
}

/// Runs every file of `folder` (README aside) through the whole pipeline.
fn run_folder(folder: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("README")
        })
        .collect();
    files.sort();
    let dir = tempfile::tempdir().unwrap();
    let seeds = seeds(dir.path());
    // Diff each file against the recorded CNN seed (worker order: sorted by path).
    let mut paths: Vec<&PathBuf> = seeds.iter().map(|s| &s.path).collect();
    paths.sort();
    let cnn = paths.iter().position(|p| **p == seeds[0].path).unwrap();
    let n = files.len();
    let iter = files.into_iter().enumerate().map(move |(i, f)| Case {
        no: i as u64,
        desc: f.display().to_string(),
        bytes: std::fs::read(&f).unwrap(),
        seed: Some(cnn),
        gallery: true,
        diff_gallery: true,
        resave: true,
        variant: u64::MAX,
    });
    let (failures, ran) = drive("regressions", dir.path().to_path_buf(), Box::new(iter));
    assert_eq!(ran as usize, n);
    report(&format!("{}", folder.display()), failures, "");
}

fn regressions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions")
}

#[test]
fn fuzz_regressions_do_not_panic() {
    run_folder(&regressions());
}
