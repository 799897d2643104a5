//! Galleries rendered by the real binary, checked in headless Chromium at 700 px
//! (see tests/common/browser.rs): images load, nothing overflows sideways, the layer
//! filter, the zoomed cell, the values under the pointer (against the run file) and
//! the sample selector work, and screenshots are real pictures.
//!
//! Skips with a printed reason without chromium + chromedriver, unless
//! `CANDLELIGHT_REQUIRE_BROWSER=1`. `CANDLELIGHT_SCREENSHOTS=DIR` also copies the
//! README's screenshots (`run-page.png`, `run-zoom.png`) there.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use candlelight::models::mnist_cnn::{
    default_weights_path, image_to_input, sample_digits, MnistCnn,
};
use candlelight::render::{layout, RenderOptions};
use candlelight::{tap, Recorder, Run};
use serde_json::Value;

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/serve.rs"]
mod serve_proc;
use browser::Browser;

/// Samples in the batch runs.
const BATCH: usize = 4;
/// A layer name that would break out of a `<script>` if the page data were not escaped.
const HOSTILE: &str = "</script><script>window.pwned=1</script><!--";

/// The bundled MNIST CNN on `BATCH` sample digits from the `first`, as one run.
fn mnist_batch(runs: &Path, first: usize) -> PathBuf {
    let model = MnistCnn::load(&default_weights_path(), &Device::Cpu).unwrap();
    let xs: Vec<Tensor> = sample_digits().unwrap()[first..first + BATCH]
        .iter()
        .map(|(p, _)| image_to_input(p, &Device::Cpu).unwrap())
        .collect();
    let x = Tensor::cat(&xs, 0).unwrap();
    let (_, run) = Recorder::new("mnist-cnn")
        .input("assets/digits (4 samples)")
        .record(|| model.predict(&x))
        .unwrap();
    run.save(runs).unwrap()
}

/// A small run: an 8-channel grid, token states with tokens, logits, and a layer
/// with a hostile name.
fn token_run(runs: &Path) -> PathBuf {
    let d = Device::Cpu;
    let grid = Tensor::arange(0f32, (BATCH * 8 * 36) as f32, &d)
        .unwrap()
        .affine(0.01, -3.0)
        .unwrap()
        .sin()
        .unwrap()
        .reshape((BATCH, 8, 6, 6))
        .unwrap();
    let states = Tensor::arange(0f32, (BATCH * 5 * 12) as f32, &d)
        .unwrap()
        .cos()
        .unwrap()
        .reshape((BATCH, 5, 12))
        .unwrap();
    let logits = Tensor::arange(0f32, (BATCH * 10) as f32, &d)
        .unwrap()
        .affine(0.7, 0.0)
        .unwrap()
        .sin()
        .unwrap()
        .reshape((BATCH, 10))
        .unwrap();
    let toks: Vec<Vec<String>> = (0..BATCH)
        .map(|s| {
            ["[CLS]", "the", "cat", "</script>", "[SEP]"]
                .iter()
                .map(|t| format!("{t}{s}"))
                .collect()
        })
        .collect();
    let (_, run) = Recorder::new("tokens")
        .tokens(toks)
        .record(|| {
            tap("features.grid", &grid)?;
            tap("encoder.states", &states)?;
            tap(HOSTILE, &states)?;
            tap("head.logits", &logits)
        })
        .unwrap();
    run.save(runs).unwrap()
}

/// `candlelight render RUNS... --out OUT` and a diff gallery of the first two.
fn render(dir: &Path, runs: &[PathBuf]) -> PathBuf {
    let out = dir.join("galleries");
    let mut args = vec!["render".to_string()];
    args.extend(runs.iter().map(|p| p.display().to_string()));
    args.extend(["--out".into(), out.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::cl(&args, dir);
    let diff = out.join("diffs").join("a~vs~b");
    let o = Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args(["diff"])
        .arg(&runs[0])
        .arg(&runs[1])
        .arg("--out")
        .arg(&diff)
        .output()
        .unwrap();
    assert!(
        diff.join("index.html").is_file(),
        "no diff gallery: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn page_of(out: &Path, run: &Path) -> PathBuf {
    out.join(candlelight::gallery::gallery_name(run))
        .join("index.html")
}

/// Every image loaded and nothing wider than the 700 px viewport.
fn check_page(b: &Browser, page: &Path) {
    b.goto_file(page);
    check_loaded(b, &page.display().to_string());
    let n = b.eval("return document.images.length").as_u64().unwrap();
    assert!(n > 0, "{}: no image", page.display());
    assert_eq!(b.eval("return window.pwned === undefined"), true);
}

/// A PNG with more than a handful of colours.
fn check_screenshot(path: &Path) {
    let img = image::open(path).unwrap().to_rgb8();
    assert!(img.width() >= 600, "{}: {}", path.display(), img.width());
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() > 16,
        "{}: blank ({} colours)",
        path.display(),
        colours.len()
    );
}

/// The value the page should show at picture pixel (px, py) of layer `name`'s
/// sample `s`, computed from the run file: `(cell, row, col, value)`; with `k > 1`
/// the page stores means of `k × k` values, whose top-left one is (row, col).
fn expected(
    run: &Path,
    name: &str,
    s: usize,
    px: usize,
    py: usize,
    k: usize,
) -> (usize, usize, usize, f64) {
    let run = Run::open(run).unwrap();
    let l = run
        .layers()
        .iter()
        .find(|l| l.name == name)
        .unwrap()
        .clone();
    let opts = RenderOptions {
        sample: s,
        ..RenderOptions::default()
    };
    let lay = layout(&l.shape, &opts).unwrap();
    assert_eq!(
        (lay.y.down, lay.x.down),
        (1, 1),
        "a layer shown at full resolution"
    );
    let spot = lay.locate(px, py).unwrap();
    let (row, col) = (spot.row / k * k, spot.col / k * k);
    let data = run.data_at(l.index).unwrap();
    let mut vals = vec![0f32; lay.tile_len];
    data.read_into(lay.offset + spot.cell * lay.tile_len, &mut vals);
    let mut sum = 0f64;
    let mut n = 0;
    for y in row..(row + k).min(lay.tile_h) {
        for x in col..(col + k).min(lay.tile_w) {
            sum += vals[y * lay.tile_w + x] as f64;
            n += 1;
        }
    }
    (spot.cell, row, col, sum / n as f64)
}

/// Hovers picture pixel (px, py) of the card of layer `index` and returns the
/// readout's cell, row, col and value, and the tolerance of its quantisation.
fn hover(b: &Browser, index: usize, px: usize, py: usize) -> (u64, u64, u64, f64, f64, usize) {
    let img = format!("#l{index} img.layer-pic");
    let scale = b
        .eval(&format!(
            "const i = document.querySelector('{img}'); return i.getBoundingClientRect().width / i.naturalWidth"
        ))
        .as_f64()
        .unwrap();
    b.move_to(&img, (px as f64 + 0.5) * scale, (py as f64 + 0.5) * scale);
    let r = b.eval(&format!(
        "const o = document.querySelector('#l{index} .readout');
         const d = JSON.parse(document.querySelector('#l{index} script.cl-data').textContent);
         const s = Number(document.querySelector('#l{index}').dataset.sample);
         const t = d.samples.find(x => x.s === s).tile;
         return [o.dataset.cell, o.dataset.row, o.dataset.col, o.dataset.value, t.hi - t.lo, t.bits, t.k, o.textContent]"
    ));
    let num = |v: &Value| {
        v.as_str()
            .unwrap_or_else(|| panic!("readout {r}"))
            .parse::<f64>()
            .unwrap()
    };
    let levels = if r[5] == 16 { 65533.0 } else { 253.0 };
    let tol = r[4].as_f64().unwrap() / levels / 2.0 + 1e-6;
    (
        num(&r[0]) as u64,
        num(&r[1]) as u64,
        num(&r[2]) as u64,
        num(&r[3]),
        tol,
        r[6].as_u64().unwrap() as usize,
    )
}

#[test]
fn run_pages_are_interactive_in_chromium() {
    let Some(b) = Browser::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let mnist = mnist_batch(&runs, 0);
    let other = mnist_batch(&runs, 1);
    let toks = token_run(&runs);
    let out = render(dir.path(), &[mnist.clone(), other, toks.clone()]);
    let (mnist_page, tok_page) = (page_of(&out, &mnist), page_of(&out, &toks));

    // Every page: images load, no sideways scrolling at 700 px.
    for page in [
        out.join("index.html"),
        mnist_page.clone(),
        tok_page.clone(),
        out.join("diffs/a~vs~b/index.html"),
    ] {
        check_page(&b, &page);
    }
    // The token run: the hostile name stays text, the TOC lists it.
    check_page(&b, &tok_page);
    b.eval("document.querySelector('.toc').open = true; return 0");
    let sw = b
        .eval("return document.documentElement.scrollWidth")
        .as_u64()
        .unwrap();
    assert!(
        sw <= Browser::WIDTH as u64 + 1,
        "run page with the TOC open: {sw}"
    );
    let names = b.eval(
        "return Array.from(document.querySelectorAll('section.card')).map(c => c.dataset.name)",
    );
    assert!(
        names.as_array().unwrap().iter().any(|n| n == HOSTILE),
        "{names}"
    );
    assert_eq!(
        b.eval("return document.querySelectorAll('script.cl-data').length"),
        4
    );

    // Filter: case-insensitive substring of name or kind; a count of shown cards.
    b.type_into("#cl-filter", "ENCODER");
    let shown = b.eval(
        "return Array.from(document.querySelectorAll('section.card')).filter(c => !c.hidden).map(c => c.dataset.name)",
    );
    assert_eq!(shown, serde_json::json!(["encoder.states"]));
    let count = b.eval("return document.getElementById('cl-count').textContent");
    assert_eq!(count, "1 of 4 layers");
    assert_eq!(
        b.eval("return document.querySelectorAll('.toc li:not([hidden])').length"),
        1
    );
    b.eval("const f = document.getElementById('cl-filter'); f.value = ''; f.dispatchEvent(new Event('input')); return 0");
    assert_eq!(
        b.eval("return document.querySelectorAll('section.card[hidden]').length"),
        0
    );

    // Token states: the readout names the token.
    let text = {
        let scale = b
            .eval("const i = document.querySelector('#l1 img.layer-pic'); return i.getBoundingClientRect().height / i.naturalHeight")
            .as_f64()
            .unwrap();
        let h = b
            .eval("return document.querySelector('#l1 img.layer-pic').naturalHeight")
            .as_f64()
            .unwrap();
        // The first cell's rectangle (right of the token labels' margin).
        let cell = b.eval(
            "return JSON.parse(document.querySelector('#l1 script.cl-data').textContent).cells[0]",
        );
        let (x0, y0) = (cell[1].as_f64().unwrap(), cell[2].as_f64().unwrap());
        let ch = cell[4].as_f64().unwrap();
        assert!(x0 > 0.0, "token rows have a label margin: {cell}");
        assert!(y0 + ch <= h);
        b.move_to(
            "#l1 img.layer-pic",
            (x0 + 3.0) * scale,
            (y0 + ch * 2.5 / 5.0) * scale,
        );
        b.eval("return document.querySelector('#l1 .readout').textContent")
    };
    assert!(
        text.as_str()
            .unwrap()
            .contains("token 2 \u{201c}cat0\u{201d}"),
        "{text}"
    );

    // The MNIST batch: zoom, values, samples.
    check_page(&b, &mnist_page);
    let conv = Run::open(&mnist).unwrap();
    let conv = conv
        .layers()
        .iter()
        .find(|l| l.shape.len() == 4 && l.shape[1] > 8)
        .unwrap()
        .clone();
    let lay = layout(&conv.shape, &RenderOptions::default()).unwrap();
    let cell = lay.cells()[5];
    let (px, py) = (cell.x + cell.w / 3, cell.y + cell.h / 2);

    // Values under the pointer, sample 0, against the run file.
    let (c, row, col, v, tol, k) = hover(&b, conv.index, px, py);
    let (ec, erow, ecol, ev) = expected(&mnist, &conv.name, 0, px, py, k);
    assert_eq!((c, row, col), (ec as u64, erow as u64, ecol as u64));
    assert!((v - ev).abs() <= tol, "value {v} vs {ev} (tolerance {tol})");

    // Click the cell: the zoom shows channel 5; Escape closes it.
    let img = format!("#l{} img.layer-pic", conv.index);
    b.eval(&format!(
        "document.querySelector('{img}').scrollIntoView({{block: 'center'}}); return 0"
    ));
    let scale = b
        .eval(&format!("const i = document.querySelector('{img}'); return i.getBoundingClientRect().width / i.naturalWidth"))
        .as_f64()
        .unwrap();
    b.click_at(&img, (px as f64 + 0.5) * scale, (py as f64 + 0.5) * scale);
    assert_eq!(
        b.eval("return document.getElementById('cl-zoom').dataset.cell"),
        "5"
    );
    let title = b.eval("return document.querySelector('#cl-zoom .zoom-title').textContent");
    assert!(title.as_str().unwrap().starts_with("channel 5 "), "{title}");
    assert_eq!(
        b.eval("return location.hash"),
        "",
        "the click stayed on the page"
    );
    b.move_to("#cl-zoom canvas", 150.0, 150.0);
    let zoom_shot = dir.path().join("run-zoom.png");
    b.screenshot(&zoom_shot);
    check_screenshot(&zoom_shot);
    b.key("\u{E00C}");
    assert_eq!(
        b.eval("return document.getElementById('cl-zoom') === null"),
        true
    );

    // A click on the zoom closes it too.
    b.click_at(&img, (px as f64 + 0.5) * scale, (py as f64 + 0.5) * scale);
    assert_eq!(
        b.eval("return document.getElementById('cl-zoom') !== null"),
        true
    );
    b.click("#cl-zoom");
    assert_eq!(
        b.eval("return document.getElementById('cl-zoom') === null"),
        true
    );

    // Sample selector: every card switches; pictures load; values are sample 2's.
    b.click("#cl-sample option[value='2']");
    b.wait_until(
        "return Array.prototype.every.call(document.images, i => i.complete && i.naturalWidth > 0)",
        30,
    );
    let srcs = b.eval(
        "return Array.from(document.querySelectorAll('img.layer-pic')).map(i => i.getAttribute('src'))",
    );
    for s in srcs.as_array().unwrap() {
        let s = s.as_str().unwrap();
        assert!(s.ends_with(".s2.png") || !s.contains(".s"), "{s}");
    }
    assert!(srcs
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s.as_str().unwrap().ends_with(".s2.png")));
    let bars = b.eval("return Array.from(document.querySelectorAll('table.bars:not([hidden])')).map(t => t.dataset.sample)");
    assert!(
        bars.as_array().unwrap().iter().all(|s| s == "2") && !bars.as_array().unwrap().is_empty(),
        "{bars}"
    );
    let (c, row, col, v, tol, k) = hover(&b, conv.index, px, py);
    let (ec, erow, ecol, ev) = expected(&mnist, &conv.name, 2, px, py, k);
    assert_eq!((c, row, col), (ec as u64, erow as u64, ecol as u64));
    assert!(
        (v - ev).abs() <= tol,
        "sample 2: value {v} vs {ev} (tolerance {tol})"
    );
    // Per card: back to sample 1 on this card only.
    b.click(&format!("#l{} .samples a[data-sample='1']", conv.index));
    assert_eq!(
        b.eval(&format!(
            "return document.querySelector('{img}').getAttribute('src').endsWith('.s1.png')"
        )),
        true
    );

    // Screenshots at 700 px: the run page with a value under the pointer.
    b.set_height(860);
    b.click(&format!("#l{} .samples a[data-sample='0']", conv.index));
    b.move_to(&img, (px as f64 + 0.5) * scale, (py as f64 + 0.5) * scale);
    b.eval(&format!(
        "document.querySelector('#l{}').scrollIntoView(); window.scrollBy(0, -48); return 0",
        conv.index
    ));
    b.move_to(&img, (px as f64 + 0.5) * scale, (py as f64 + 0.5) * scale);
    let shot = dir.path().join("run-page.png");
    b.screenshot(&shot);
    check_screenshot(&shot);
    if let Ok(to) = std::env::var("CANDLELIGHT_SCREENSHOTS") {
        for f in [&shot, &zoom_shot] {
            std::fs::copy(f, Path::new(&to).join(f.file_name().unwrap())).unwrap();
        }
    }
}

/// A running `candlelight serve ROOT --port 0`; killed when dropped.
struct Served {
    child: std::process::Child,
    url: String,
}

impl Served {
    fn start(root: &Path) -> Served {
        let (child, addr) = serve_proc::spawn(env!("CARGO_BIN_EXE_candlelight"), root, &[]);
        Served {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every image of the current page loaded and nothing wider than 700 px.
fn check_loaded(b: &Browser, what: &str) {
    b.wait_until(
        "return document.readyState === 'complete' && Array.prototype.every.call(document.images, i => i.complete)",
        30,
    );
    let broken = b.eval(
        "return Array.prototype.filter.call(document.images, i => !(i.naturalWidth > 0)).map(i => i.getAttribute('src'))",
    );
    assert_eq!(broken, Value::Array(vec![]), "{what}");
    let sw = b
        .eval("return document.documentElement.scrollWidth")
        .as_u64()
        .unwrap();
    assert!(sw <= Browser::WIDTH as u64 + 1, "{what}: {sw} px wide");
}

#[test]
fn served_pages_compare_two_runs_and_draw_any_sample_in_chromium() {
    let Some(b) = Browser::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let first = mnist_batch(&runs, 0);
    let second = mnist_batch(&runs, 2);
    let out = dir.path().join("galleries");
    // Two samples in the pages: samples 2 and 3 only on demand.
    let o = Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .arg("render")
        .args([&first, &second])
        .arg("--out")
        .arg(&out)
        .args(["--samples", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = Served::start(&out);
    let (ga, gb) = (
        candlelight::gallery::gallery_name(&first),
        candlelight::gallery::gallery_name(&second),
    );

    // The index: a picker per run; pick both, compare.
    b.goto(&format!("{}/", s.url));
    b.wait_until(
        "return document.querySelectorAll('input.cl-pick').length === 2",
        30,
    );
    check_loaded(&b, "served index");
    assert_eq!(
        b.eval("return document.getElementById('cl-compare').disabled"),
        true
    );
    b.click(&format!("input.cl-pick[data-run='{ga}']"));
    b.click(&format!("input.cl-pick[data-run='{gb}']"));
    assert_eq!(
        b.eval("return document.getElementById('cl-compare').disabled"),
        false
    );
    b.click("#cl-compare");
    let want = format!("/diffs/{ga}~vs~{gb}/");
    b.wait_until(
        &format!(
            "return location.pathname === {want:?} && !!document.querySelector('section.card')"
        ),
        60,
    );
    check_loaded(&b, "served diff gallery");
    // The diff page names both runs, counts its layers and shows A, B and A − B.
    let text = b.eval("return document.body.textContent");
    let text = text.as_str().unwrap();
    assert!(text.contains(&ga) && text.contains(&gb), "{text}");
    let figures = b
        .eval("return document.querySelectorAll('section.card figure img').length")
        .as_u64()
        .unwrap();
    assert!(figures >= 3, "{figures} pictures on the diff page");
    assert!(root_file(&out, &want).join("index.html").is_file());
    // The screenshot: the first divergent layer's A, B and A − B.
    b.eval("document.querySelector('section.card.first').scrollIntoView(); return 0");
    let shot = dir.path().join("serve-compare.png");
    b.screenshot(&shot);
    check_screenshot(&shot);

    // A run page: a sample the page has keeps the values under the pointer; one it
    // does not have is drawn by the server.
    let run = Run::open(&first).unwrap();
    let conv = run
        .layers()
        .iter()
        .find(|l| l.shape.len() == 4)
        .expect("a conv layer")
        .index;
    b.goto(&format!("{}/{ga}/", s.url));
    b.wait_until(
        &format!("return !!document.querySelector(\"input.cl-sample[data-layer='{conv}']\")"),
        30,
    );
    check_loaded(&b, "served run page");
    let set = |k: usize| {
        b.eval(&format!(
            "const i = document.querySelector(\"input.cl-sample[data-layer='{conv}']\");
             i.value = '{k}'; i.dispatchEvent(new Event('change')); return 0"
        ));
        b.wait_until(
            &format!(
                "const i = document.querySelector('#l{conv} img.layer-pic');
                 return i.dataset.sample === '{k}' && i.complete && i.naturalWidth > 0"
            ),
            30,
        );
    };
    let src = |b: &Browser| {
        b.eval(&format!(
            "return document.querySelector('#l{conv} img.layer-pic').getAttribute('src')"
        ))
        .as_str()
        .unwrap()
        .to_string()
    };
    let size = format!(
        "const i = document.querySelector('#l{conv} img.layer-pic'); return [i.naturalWidth, i.naturalHeight]"
    );
    let static_size = b.eval(&size);
    set(3);
    assert!(src(&b).starts_with("/_/render/"), "{}", src(&b));
    assert_eq!(b.eval(&size), static_size, "served picture, same layout");
    // Hover the first cell: a position, no stored values for a served sample.
    let cell = b.eval(&format!(
        "return JSON.parse(document.querySelector('#l{conv} script.cl-data').textContent).cells[0]"
    ));
    let scale = b
        .eval(&format!(
            "const i = document.querySelector('#l{conv} img.layer-pic'); return i.getBoundingClientRect().width / i.naturalWidth"
        ))
        .as_f64()
        .unwrap();
    let at = |b: &Browser| {
        let (x, y) = (
            cell[1].as_f64().unwrap() + 2.5,
            cell[2].as_f64().unwrap() + 2.5,
        );
        b.move_to(&format!("#l{conv} img.layer-pic"), x * scale, y * scale);
        b.eval(&format!(
            "return document.querySelector('#l{conv} .readout').textContent"
        ))
        .as_str()
        .unwrap()
        .to_string()
    };
    let served = at(&b);
    assert!(served.contains("no value data"), "{served}");
    set(1);
    assert!(src(&b).starts_with("layers/"), "{}", src(&b));
    let stored = at(&b);
    assert!(stored.contains("value "), "{stored}");
    assert!(!stored.contains("no value data"), "{stored}");

    if let Ok(to) = std::env::var("CANDLELIGHT_SCREENSHOTS") {
        std::fs::copy(&shot, Path::new(&to).join("serve-compare.png")).unwrap();
    }
}

/// The folder of a served URL path under the root.
fn root_file(root: &Path, url_path: &str) -> PathBuf {
    root.join(url_path.trim_matches('/'))
}
