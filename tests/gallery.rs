//! `candlelight render` and `demo` through the real binary: gallery layout, hostile
//! names, odd layers, bad files, and the pages in a headless browser.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candlelight::gallery::{read_manifest, Manifest};
use candlelight::{tap, Recorder, Run};

mod common;
use common::{cl, cl_code, files_under, stderr, stdout};

fn small_run(dir: &Path, model: &str) -> PathBuf {
    let x = Tensor::arange(-8f32, 8., &Device::Cpu)
        .unwrap()
        .reshape((1, 4, 2, 2))
        .unwrap();
    let (_, run) = Recorder::new(model)
        .record(|| {
            let y = tap("conv", &x)?.relu()?;
            candlelight::record_as("relu", "relu", &y);
            Ok(y)
        })
        .unwrap();
    run.save(dir).unwrap()
}

fn manifest_of(out: &Path, name: &str) -> Manifest {
    read_manifest(&out.join(name)).unwrap_or_else(|| {
        panic!(
            "no manifest for {name}; files:\n{}",
            common::list_files(out)
        )
    })
}

/// Undoes the HTML escapes minijinja writes.
fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Quoted `src` / `href` values of a page, unescaped.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let end = rest.find('"').expect("closing quote");
            out.push(unescape(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn render_writes_the_documented_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let a = small_run(&runs, "alpha");
    let out = tmp.path().join("out");
    let o = cl_code(
        &[
            "render",
            a.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
        0,
    );
    let index = out.join("index.html");
    assert_eq!(
        stdout(&o).lines().last().map(PathBuf::from),
        Some(std::path::absolute(&index).unwrap()),
        "last line is the index path"
    );
    let name = a.file_stem().unwrap().to_str().unwrap();
    let g = out.join(name);
    for f in [
        "index.html",
        "stats.json",
        "manifest.json",
        "thumb.png",
        "layers/000-conv.png",
        "layers/000-conv.hist.png",
        "layers/001-relu.png",
        "layers/001-relu.hist.png",
    ] {
        assert!(g.join(f).is_file(), "{f}\n{}", common::list_files(&out));
    }
    let m = manifest_of(&out, name);
    assert_eq!(
        (m.status.as_str(), m.layers, m.model.as_str()),
        ("ok", 2, "alpha")
    );
    assert_eq!(m.source_size, std::fs::metadata(&a).unwrap().len());
    assert!(candlelight::gallery::is_up_to_date(&out, &a));
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(g.join("stats.json")).unwrap()).unwrap();
    let relu = &stats["layers"][1];
    assert_eq!(relu["name"], "relu");
    // relu(arange(-8, 8)): 9 of 16 values are zero.
    assert!((relu["zero_fraction"].as_f64().unwrap() - 9.0 / 16.0).abs() < 1e-12);
    let page = std::fs::read_to_string(g.join("index.html")).unwrap();
    let sparsity = format!("{:.1}%", 9.0 / 16.0 * 100.0);
    assert!(
        page.contains("sparsity (zeros)") && page.contains(&sparsity),
        "zero share shown as sparsity"
    );
    // Channels 0 and 1 (values -8..-1) never fire; conv has negative values: no verdict.
    let note = "2 of 4 channels never active across the 1 recorded sample";
    assert_eq!(
        page.matches(note).count(),
        2,
        "on the card and in the alert"
    );
    assert_eq!(relu["activity"]["never_active"], serde_json::json!([0, 1]));
    assert!(stats["layers"][0].get("activity").is_none());
    assert!(!page.contains("dead ReLU"));
    // Capture order on the page.
    assert!(page.find("000-conv.png").unwrap() < page.find("001-relu.png").unwrap());
    // No leftover staging folders; rendering again replaces the gallery.
    cl_code(
        &[
            "render",
            a.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
        0,
    );
    let dots: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.file_name())
        .collect();
    assert!(dots.is_empty(), "{dots:?}");
}

/// The page without candlelight's own scripts: the run page's code (one
/// `<script>` starting with its header comment) and its data blocks (JSON with no
/// `<` at all, so no name can close them). Any other `<script` stays.
fn without_own_scripts(html: &str) -> String {
    const DATA: &str = "<script type=\"application/json\" class=\"cl-data\">";
    const CODE: &str = "<script>\n// candlelight run page:";
    let mut out = String::new();
    let mut rest = html;
    loop {
        let next = [DATA, CODE]
            .iter()
            .filter_map(|m| rest.find(m).map(|i| (i, m.len())))
            .min();
        let Some((i, len)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i]);
        let body = &rest[i + len..];
        let end = body.find("</script>").expect("script closed");
        if len == DATA.len() {
            assert!(!body[..end].contains('<'), "data block with '<'");
        }
        rest = &body[end + "</script>".len()..];
    }
}

#[test]
fn hostile_names_stay_inside_and_are_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    let x = Tensor::arange(0f32, 16., &Device::Cpu)
        .unwrap()
        .reshape((1, 4, 2, 2))
        .unwrap();
    let names = [
        "../../x",
        "/etc/passwd",
        "<script>alert(1)</script>",
        "ünï cødé 日本語 ✓",
        "\" onerror=\"alert(1)",
        "..",
        ".",
        "a\\b",
        "index.html",
    ];
    let (_, run) = Recorder::new("<b>model</b>")
        .id("../../<script>alert(2)</script>")
        .input("<img src=x onerror=alert(3)>")
        .tag("<i>key</i>", "<u>value</u>")
        .record(|| {
            for n in names {
                tap(n, &x)?;
            }
            Ok(())
        })
        .unwrap();
    let saved = run.save(&runs).unwrap();
    // And a file name that is itself markup.
    let odd = runs.join("<script>&ü'.safetensors");
    std::fs::copy(&saved, &odd).unwrap();
    let out = tmp.path().join("work").join("galleries");
    std::fs::create_dir_all(tmp.path().join("work")).unwrap();
    let before: Vec<PathBuf> = files_under(tmp.path());
    cl_code(
        &[
            "render",
            saved.to_str().unwrap(),
            odd.to_str().unwrap(),
            "--out",
            "galleries",
        ],
        &tmp.path().join("work"),
        0,
    );
    let root = std::fs::canonicalize(&out).unwrap();
    for f in files_under(tmp.path()) {
        if before.contains(&f) {
            continue;
        }
        let c = std::fs::canonicalize(&f).unwrap();
        assert!(
            c.starts_with(&root),
            "{} is outside {}",
            c.display(),
            root.display()
        );
        let rel = c
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            rel.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/~".contains(c)),
            "unsanitized file name {rel:?}"
        );
    }
    let mut pages = 0;
    for f in files_under(&out)
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "html"))
    {
        pages += 1;
        let html = without_own_scripts(&std::fs::read_to_string(f).unwrap());
        let lower = html.to_lowercase();
        for bad in [
            "<script",
            "<img src=x",
            "<b>",
            "<i>",
            "<u>",
            "onerror=\"",
            "javascript:",
        ] {
            assert!(!lower.contains(bad), "{} contains {bad:?}", f.display());
        }
        let trends = f.parent().and_then(|p| p.file_name()) == Some("trends".as_ref());
        for l in links(&html) {
            if trends {
                // A trends page links up to the index and to the runs' cards, and
                // holds its histograms as PNG data.
                let segs: Vec<&str> = l.split('/').collect();
                let ok = l.starts_with("data:image/png;base64,") && !l.contains('"')
                    || l.starts_with("../index.html#model-") && segs.len() == 2
                    || segs.len() == 3
                        && segs[0] == ".."
                        && !matches!(segs[1], "" | "." | "..")
                        && (segs[2] == "index.html" || segs[2].starts_with("index.html#l"));
                assert!(ok, "{}: link {l:?}", f.display());
                continue;
            }
            let up = l.split('/').any(|seg| seg == ".." || seg == ".");
            assert!(
                !l.starts_with('/')
                    && !l.contains(':')
                    && (l == "../index.html" || l.starts_with("../index.html#run-") || !up),
                "{}: link {l:?} leaves the gallery",
                f.display()
            );
        }
    }
    assert_eq!(pages, 4, "two run pages, the index and the trends page");
    let page = std::fs::read_to_string(
        out.join(candlelight::gallery::gallery_name(&odd))
            .join("index.html"),
    )
    .unwrap();
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
            || page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "escaped layer name shown"
    );
    assert!(page.contains("ünï cødé 日本語 ✓"), "unicode shown as is");
}

#[test]
fn odd_layers_render_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let ramp = |n: usize| Tensor::arange(0f32, n as f32, &dev).unwrap();
    let entries: Vec<(String, Tensor)> = vec![
        (
            "empty".into(),
            Tensor::zeros((1, 0, 3, 3), DType::F32, &dev).unwrap(),
        ),
        ("scalar".into(), Tensor::new(2.5f32, &dev).unwrap()),
        ("five_d".into(), ramp(720).reshape((2, 3, 4, 5, 6)).unwrap()),
        (
            "many_1x1".into(),
            ramp(20000).reshape((1, 20000, 1, 1)).unwrap(),
        ),
        ("wide".into(), ramp(20000).reshape((1, 20000)).unwrap()),
        (
            "f16".into(),
            ramp(16)
                .reshape((1, 4, 2, 2))
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap(),
        ),
        (
            "bf16".into(),
            ramp(16)
                .reshape((1, 4, 2, 2))
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap(),
        ),
        (
            "u8".into(),
            Tensor::arange(0u8, 16, &dev)
                .unwrap()
                .reshape((1, 16))
                .unwrap(),
        ),
        (
            "i64".into(),
            Tensor::arange(-8i64, 8, &dev)
                .unwrap()
                .reshape((2, 8))
                .unwrap(),
        ),
        (
            "nan".into(),
            Tensor::full(f32::NAN, (1, 2, 3, 3), &dev).unwrap(),
        ),
        (
            "inf".into(),
            (ramp(9).reshape((1, 1, 3, 3)).unwrap() / 0.0).unwrap(),
        ),
        (
            "constant".into(),
            Tensor::full(1.5f32, (1, 2, 3, 3), &dev).unwrap(),
        ),
    ];
    let n = entries.len();
    let path = Run::from_named_tensors("odd", entries)
        .save(tmp.path())
        .unwrap();
    let out = tmp.path().join("g");
    cl_code(
        &[
            "render",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
        0,
    );
    let g = out.join(path.file_stem().unwrap());
    let all: Vec<PathBuf> = files_under(&g.join("layers"));
    // Other samples' pictures: NNN-<name>.sK.png.
    let is_other = |p: &PathBuf| {
        let f = p.file_name().unwrap().to_string_lossy().into_owned();
        f.strip_suffix(".png")
            .and_then(|f| f.rsplit_once(".s"))
            .is_some_and(|(_, k)| k.parse::<usize>().is_ok())
    };
    let pngs: Vec<PathBuf> = all.iter().filter(|p| !is_other(p)).cloned().collect();
    assert_eq!(pngs.len(), 2 * n, "a picture and a histogram per layer");
    for p in pngs {
        let img = image::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(img.width() > 0 && img.height() > 0);
        assert!((img.width() * img.height()) as usize <= 4_000_000);
    }
    let page = std::fs::read_to_string(g.join("index.html")).unwrap();
    assert!(
        !page.contains("cannot show this layer"),
        "every layer shown"
    );
    assert!(page.contains("NaN / Inf"), "non-finite layers flagged");
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(g.join("stats.json")).unwrap()).unwrap();
    let by_name = |name: &str| {
        stats["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("nan")["nan"], 18);
    assert!(
        by_name("nan")["mean"].is_null(),
        "no finite value: null, not NaN"
    );
    assert_eq!(by_name("inf")["inf"], 8);
    assert_eq!(by_name("inf")["nan"], 1, "0 / 0");
}

#[test]
fn a_bad_run_file_is_one_line_and_the_others_still_render() {
    let tmp = tempfile::tempdir().unwrap();
    let good = small_run(tmp.path(), "good");
    let bad = tmp.path().join("broken.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}").unwrap();
    let missing = tmp.path().join("missing.safetensors");
    let out = tmp.path().join("g");
    let o = cl(
        &[
            "render",
            bad.to_str().unwrap(),
            good.to_str().unwrap(),
            missing.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("broken.safetensors"), "{err}");
    assert!(lines[1].contains("missing.safetensors"), "{err}");
    let name = good.file_stem().unwrap().to_str().unwrap();
    assert_eq!(manifest_of(&out, name).status, "ok");
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(index.contains(name));
}

#[test]
fn error_galleries_are_listed_and_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g");
    let good = small_run(tmp.path(), "fine");
    candlelight::render_gallery(&good, &out, &Default::default()).unwrap();
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, b"xx").unwrap();
    let m = candlelight::gallery::write_error_gallery(&bad, &out, "bad <thing>\nhere").unwrap();
    assert_eq!(
        (m.status.as_str(), m.error.as_deref()),
        ("error", Some("bad <thing> here"))
    );
    assert!(candlelight::gallery::is_up_to_date(&out, &bad));
    candlelight::write_index(&out).unwrap();
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(index.contains("bad &lt;thing&gt; here") && !index.contains("<thing>"));
    assert!(links(&index).contains(&"bad/index.html".to_string()));
    let page = std::fs::read_to_string(out.join("bad").join("index.html")).unwrap();
    assert!(page.contains("bad &lt;thing&gt; here"));
    // A changed run file is no longer up to date.
    std::fs::write(&bad, b"xxx").unwrap();
    assert!(!candlelight::gallery::is_up_to_date(&out, &bad));
}

#[test]
fn demo_records_and_renders_from_any_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let o = cl_code(&["demo", "--runs", "r", "--out", "g"], &cwd, 0);
    let s = stdout(&o);
    assert!(
        s.contains("MNIST CNN") && s.contains("10/10"),
        "says which model: {s}"
    );
    let index = PathBuf::from(s.lines().last().unwrap());
    assert_eq!(
        index,
        std::path::absolute(cwd.join("g/index.html")).unwrap()
    );
    assert!(index.is_file());
    let runs = files_under(&cwd.join("r"));
    assert_eq!(runs.len(), 10, "one run per sample digit: {runs:?}");
    for r in &runs {
        let m = manifest_of(&cwd.join("g"), r.file_stem().unwrap().to_str().unwrap());
        assert_eq!((m.status.as_str(), m.layers), ("ok", 11));
    }
    // Defaults: ./runs and ./galleries.
    let cwd2 = tmp.path().join("cwd2");
    std::fs::create_dir(&cwd2).unwrap();
    cl_code(&["demo"], &cwd2, 0);
    assert!(cwd2.join("galleries/index.html").is_file());
    assert_eq!(files_under(&cwd2.join("runs")).len(), 10);
}

#[test]
fn pages_load_every_image_in_chromium() {
    let chromium = match common::chromium() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    cl_code(&["demo", "--runs", "r", "--out", "g"], tmp.path(), 0);
    let out = tmp.path().join("g");
    let index = common::check_images_in_chromium(&chromium, &out.join("index.html"));
    assert_eq!(index.images, 10, "one thumbnail per run: {index:?}");
    assert!(index.broken.is_empty(), "{index:?}");
    let run = files_under(&out)
        .into_iter()
        .find(|p| p.ends_with("index.html") && p.parent() != Some(out.as_path()))
        .expect("a run page");
    let page = common::check_images_in_chromium(&chromium, &run);
    assert_eq!(
        page.images, 20,
        "a histogram for each of 11 layers, a picture for each but fc2 and softmax \
         (labelled bars instead): {page:?}"
    );
    assert!(page.broken.is_empty(), "{page:?}");
    // The check itself can fail: a page with a missing picture is caught.
    let html = std::fs::read_to_string(&run).unwrap();
    let broken = run.with_file_name("broken.html");
    std::fs::write(&broken, html.replace("000-conv1.png", "nope.png")).unwrap();
    let b = common::check_images_in_chromium(&chromium, &broken);
    assert_eq!(b.broken, vec!["layers/nope.png".to_string()], "{b:?}");
}

#[test]
fn render_and_demo_have_help() {
    let tmp = tempfile::tempdir().unwrap();
    for sub in ["render", "demo"] {
        let o = cl_code(&[sub, "--help"], tmp.path(), 0);
        assert!(stdout(&o).contains("--out"), "{sub}");
    }
}

#[test]
fn the_index_lists_newest_first_and_ignores_dot_folders_and_bad_thumbnails() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let manifest = |run_id: &str, created: &str, thumb: Option<&str>| Manifest {
        gallery_version: candlelight::gallery::GALLERY_VERSION,
        renderer_version: candlelight::gallery::RENDERER_VERSION.into(),
        source: format!("/runs/{run_id}.safetensors").into(),
        source_size: 1,
        source_mtime_ns: 1,
        source_ino: 1,
        source_ctime_ns: 1,
        run_id: run_id.into(),
        created: created.into(),
        model: "m".into(),
        layers: 1,
        rendered_at: "2026-01-01T00:00:00Z".into(),
        render_ms: 1,
        status: "ok".into(),
        error: None,
        thumbnail: thumb.map(String::from),
        summary: None,
        tags: Default::default(),
    };
    for (dir, m) in [
        (
            "old",
            manifest("old", "2024-01-01T00:00:00Z", Some("thumb.png")),
        ),
        (
            "new",
            manifest("new", "2026-05-01T00:00:00Z", Some("../../../etc/passwd")),
        ),
        (
            "mid",
            manifest("mid", "2025-01-01T00:00:00Z", Some("/etc/passwd")),
        ),
        (
            ".tmp-hidden",
            manifest("hidden", "2027-01-01T00:00:00Z", None),
        ),
    ] {
        std::fs::create_dir(out.join(dir)).unwrap();
        std::fs::write(
            out.join(dir).join("manifest.json"),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(out.join("old").join("thumb.png"), b"png").unwrap();
    candlelight::write_index(out).unwrap();
    let html = unescape(&std::fs::read_to_string(out.join("index.html")).unwrap());
    let pos = |s: &str| html.find(s).unwrap_or_else(|| panic!("{s} missing"));
    assert!(pos("new/index.html") < pos("mid/index.html"));
    assert!(pos("mid/index.html") < pos("old/index.html"));
    assert!(!html.contains("hidden"));
    let srcs: Vec<String> = links(&html)
        .into_iter()
        .filter(|l| l.ends_with(".png") || l.contains("passwd"))
        .collect();
    assert_eq!(srcs, vec!["old/thumb.png".to_string()]);
}

#[test]
fn class_layers_are_labelled_bars_and_the_index_card_shows_the_prediction() {
    let tmp = tempfile::tempdir().unwrap();
    let logits = Tensor::new(
        &[[0.5f32, -2.0, 3.0, 1.0], [4.0, 0.0, 0.0, 0.0]],
        &Device::Cpu,
    )
    .unwrap();
    let (_, run) = Recorder::new("cls")
        .tag("label", "2")
        .id("cls")
        .record(|| tap("fc<out>", &logits))
        .unwrap();
    let path = run.save(tmp.path()).unwrap();
    let out = tmp.path().join("g");
    cl_code(
        &[
            "render",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
        0,
    );
    let page = std::fs::read_to_string(out.join("cls/index.html")).unwrap();
    assert!(page.contains("sample 0: top class 2 (3.0000)"), "{page}");
    // One table per sample (the second hidden until the page's sample selector shows it).
    assert_eq!(page.matches("<tr class=\"top\">").count(), 2);
    assert!(page.contains(
        "<table class=\"bars\" data-sample=\"1\" aria-label=\"sample 1 by class\" hidden>"
    ));
    assert!(
        page.contains("class=\"neg\" style=\"width:66.7%\""),
        "-2 of 3 as a red bar"
    );
    assert!(
        !page.contains("<a class=\"pic\""),
        "bars replace the folded picture"
    );
    let m = manifest_of(&out, "cls");
    assert_eq!(
        m.summary.as_deref(),
        Some("predicted 2 (3.0000) ✓ · label 2")
    );
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(index.contains("predicted 2 (3.0000) ✓ · label 2"));
}
