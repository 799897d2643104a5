//! `candlelight diff` through the real binary and `Run::diff` in the library:
//! verdicts, exit codes, numbers against a direct computation, name maps, the
//! diff gallery, and f32 against bf16 recordings of the MNIST CNN.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candlelight::models::mnist_cnn::{
    default_weights_path, image_to_input, sample_digits, MnistCnn,
};
use candlelight::{DiffOptions, Recorder, Run, Status};
use serde_json::Value;

mod common;
use common::{cl, cl_code, stderr, stdout};

/// Saves a run of `layers` (name, shape, values) in capture order.
fn save(dir: &Path, model: &str, layers: &[(&str, Vec<usize>, Vec<f32>)]) -> PathBuf {
    let entries = layers.iter().map(|(n, shape, v)| {
        (
            n.to_string(),
            Tensor::from_vec(v.clone(), shape.clone(), &Device::Cpu).unwrap(),
        )
    });
    Run::from_named_tensors(model, entries).save(dir).unwrap()
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    candlelight::models::seeded_uniform(&[n], seed, &Device::Cpu)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(|v| v * 4.0 - 2.0)
        .collect()
}

/// Capture order deliberately not alphabetical: the verdict must follow it.
fn reference_layers() -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
    vec![
        ("zeta.in", vec![2, 3, 4, 5], values(120, 1)),
        ("mid", vec![1, 500], values(500, 2)),
        ("alpha", vec![3, 7], values(21, 3)),
        ("beta.out", vec![1, 10], values(10, 4)),
    ]
}

fn json(dir: &Path, args: &[&str], code: i32) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = cl_code(&all, dir, code);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

fn layer<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name_a"] == name || l["name_b"] == name)
        .unwrap_or_else(|| panic!("no layer {name} in {d:#}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn identical_runs_agree_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let a = save(dir.path(), "a", &reference_layers());
    let b = save(dir.path(), "b", &reference_layers());
    let out = cl_code(&["diff", s(&a), s(&b)], dir.path(), 0);
    let text = stdout(&out);
    assert!(text.contains("all layers agree"), "{text}");
    assert!(!text.contains(">>"), "{text}");
    let d = json(dir.path(), &["diff", s(&a), s(&b)], 0);
    assert_eq!(d["agrees"], true);
    assert_eq!(d["first_divergent"], Value::Null);
    assert_eq!(d["counts"]["agree"], 4);
    for l in d["layers"].as_array().unwrap() {
        assert_eq!(l["numbers"]["max_abs"], 0.0);
        assert_eq!(l["numbers"]["cosine"], 1.0);
        assert_eq!(l["numbers"]["mismatches"], 0);
    }
    // The table lists layers in capture order.
    let pos = |n: &str| text.find(n).unwrap();
    assert!(
        pos("zeta.in") < pos("mid") && pos("mid") < pos("alpha") && pos("alpha") < pos("beta.out")
    );
}

#[test]
fn a_perturbed_layer_is_the_first_divergence_with_the_right_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let reference = reference_layers();
    let mut port = reference_layers();
    // `mid`: three elements off by about 1e-3 (the largest at 417); `beta.out`, later
    // in capture order but first alphabetically after `alpha`, off too.
    port[1].2[7] += 1e-3;
    port[1].2[417] -= 2e-3;
    port[1].2[499] += 1e-3;
    port[3].2[0] += 0.5;
    let a = save(dir.path(), "port", &port);
    let b = save(dir.path(), "reference", &reference);

    let out = cl_code(&["diff", s(&a), s(&b)], dir.path(), 1);
    let text = stdout(&out);
    let marked: Vec<&str> = text.lines().filter(|l| l.starts_with(">>")).collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(marked[0].contains(" mid "), "{text}");
    assert!(text.contains("first divergence: mid"), "{text}");

    let d = json(dir.path(), &["diff", s(&a), s(&b)], 1);
    assert_eq!(d["first_divergent"], "mid");
    assert_eq!(layer(&d, "zeta.in")["status"], "agree");
    assert_eq!(layer(&d, "alpha")["status"], "agree");
    assert_eq!(layer(&d, "beta.out")["status"], "differ");
    let m = &layer(&d, "mid")["numbers"];
    assert_eq!(layer(&d, "mid")["status"], "differ");

    // Direct computation from the values as stored (f32), in f64.
    let (va, vb) = (
        Run::open(&a).unwrap().values("mid").unwrap(),
        Run::open(&b).unwrap().values("mid").unwrap(),
    );
    let diffs: Vec<f64> = va
        .iter()
        .zip(&vb)
        .map(|(&x, &y)| x as f64 - y as f64)
        .collect();
    let max = diffs.iter().fold(0f64, |m, d| m.max(d.abs()));
    let mean = diffs.iter().map(|d| d.abs()).sum::<f64>() / 500.0;
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let rel = diffs.iter().map(|d| d * d).sum::<f64>().sqrt() / norm(&vb);
    let dot: f64 = va.iter().zip(&vb).map(|(&x, &y)| x as f64 * y as f64).sum();
    let cos = dot / (norm(&va) * norm(&vb));
    let out_of_tol: Vec<usize> = (0..500)
        .filter(|&i| diffs[i].abs() > 1e-5 + 1e-4 * (vb[i] as f64).abs())
        .collect();
    // The documented precision of the sums: about 1e-6 relative.
    let close = |got: &Value, want: f64, what: &str| {
        let got = got.as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-6 * want.abs(),
            "{what}: got {got}, want {want}"
        );
    };
    close(&m["max_abs"], max, "max_abs");
    close(&m["mean_abs"], mean, "mean_abs");
    close(&m["rel_l2"], rel, "rel_l2");
    close(&m["cosine"], cos, "cosine");
    assert!(
        (max - 2e-3).abs() < 1e-6,
        "perturbation size survives f32: {max}"
    );
    assert_eq!(m["mismatches"], out_of_tol.len());
    assert_eq!(out_of_tol, vec![7, 417, 499]);
    assert_eq!(m["first_mismatch"]["index"], 7);
    assert_eq!(m["first_mismatch"]["position"], serde_json::json!([0, 7]));
    assert_eq!(m["worst"]["index"], 417);
    assert_eq!(m["worst"]["a"].as_f64().unwrap() as f32, va[417]);
    assert_eq!(m["worst"]["b"].as_f64().unwrap() as f32, vb[417]);

    // Loose enough tolerances: only `beta.out` (off by 0.5) remains.
    let d = json(dir.path(), &["diff", s(&a), s(&b), "--atol", "3e-3"], 1);
    assert_eq!(d["first_divergent"], "beta.out");
    let d = json(dir.path(), &["diff", s(&a), s(&b), "--atol", "0.6"], 0);
    assert_eq!(d["agrees"], true);
}

#[test]
fn shape_mismatch_missing_layers_and_nan_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let v6: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let mut with_nan = v6.clone();
    with_nan[4] = f32::NAN;
    let a = save(
        dir.path(),
        "a",
        &[
            ("same", vec![2, 3], v6.clone()),
            ("transposed", vec![2, 3], v6.clone()),
            ("resized", vec![2, 3], v6.clone()),
            ("debug_tap", vec![6], v6.clone()),
            ("nan_here", vec![6], with_nan.clone()),
            ("nan_both", vec![6], with_nan.clone()),
        ],
    );
    let b = save(
        dir.path(),
        "b",
        &[
            ("same", vec![2, 3], v6.clone()),
            ("transposed", vec![3, 2], v6.clone()),
            ("resized", vec![4], vec![0.0; 4]),
            ("nan_here", vec![6], v6.clone()),
            ("only_b", vec![1], vec![1.0]),
            ("nan_both", vec![6], with_nan.clone()),
        ],
    );
    let d = json(dir.path(), &["diff", s(&a), s(&b)], 1);
    assert_eq!(d["first_divergent"], "transposed");
    assert_eq!(layer(&d, "same")["status"], "agree");
    let t = layer(&d, "transposed");
    assert_eq!(t["status"], "shape_mismatch");
    assert_eq!(t["shape_a"], serde_json::json!([2, 3]));
    assert_eq!(t["shape_b"], serde_json::json!([3, 2]));
    assert_eq!(t["numbers"]["max_abs"], 0.0, "same count: compared flat");
    let r = layer(&d, "resized");
    assert_eq!(r["status"], "shape_mismatch");
    assert_eq!(r["numbers"], Value::Null);
    assert_eq!(layer(&d, "debug_tap")["status"], "only_in_a");
    assert_eq!(layer(&d, "debug_tap")["name_b"], Value::Null);
    assert_eq!(layer(&d, "only_b")["status"], "only_in_b");
    let n = &layer(&d, "nan_here")["numbers"];
    assert_eq!(layer(&d, "nan_here")["status"], "differ");
    assert_eq!(
        (n["nan_a"].clone(), n["nan_b"].clone()),
        (1.into(), 0.into())
    );
    assert_eq!(n["nan_mismatches"], 1);
    assert_eq!(n["mismatches"], 1);
    assert_eq!(n["first_mismatch"]["index"], 4);
    assert_eq!(n["first_mismatch"]["a"], Value::Null, "NaN is null in JSON");
    assert_eq!(n["max_abs"], 0.0, "finite pairs only");
    let nb = layer(&d, "nan_both");
    assert_eq!(
        nb["status"], "agree",
        "NaN agrees with NaN at the same place"
    );
    assert_eq!(nb["numbers"]["nan_a"], 1);
    // `only_b` follows `nan_here`, its predecessor in B.
    let names: Vec<String> = d["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["name_a"]
                .as_str()
                .or(l["name_b"].as_str())
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "same",
            "transposed",
            "resized",
            "debug_tap",
            "nan_here",
            "only_b",
            "nan_both"
        ]
    );
    let counts = &d["counts"];
    assert_eq!(
        (
            &counts["agree"],
            &counts["differ"],
            &counts["shape_mismatch"],
            &counts["only_in_a"],
            &counts["only_in_b"]
        ),
        (&2.into(), &1.into(), &2.into(), &1.into(), &1.into())
    );
    let text = stdout(&cl_code(&["diff", s(&a), s(&b)], dir.path(), 1));
    assert!(
        text.contains("[2, 3] vs [3, 2]") && text.contains("only A"),
        "{text}"
    );
}

#[test]
fn missing_layers_diverge_unless_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut more = reference_layers();
    more.push(("extra", vec![2], vec![1.0, 2.0]));
    let a = save(dir.path(), "a", &more);
    let b = save(dir.path(), "b", &reference_layers());
    let d = json(dir.path(), &["diff", s(&a), s(&b)], 1);
    assert_eq!(d["first_divergent"], "extra");
    let d = json(dir.path(), &["diff", s(&a), s(&b), "--ignore-missing"], 0);
    assert_eq!(d["agrees"], true);
    assert_eq!(layer(&d, "extra")["status"], "only_in_a");
    assert_eq!(layer(&d, "extra")["diverges"], false);
    let text = stdout(&cl_code(&["diff", s(&b), s(&a)], dir.path(), 1));
    assert!(
        text.contains("first divergence: extra: only in B"),
        "{text}"
    );
}

#[test]
fn name_maps_match_differently_named_runs() {
    let dir = tempfile::tempdir().unwrap();
    let v = values(12, 9);
    let a = save(
        dir.path(),
        "candle",
        &[
            ("model.features.0", vec![12], v.clone()),
            ("model.head", vec![3, 4], v.clone()),
            ("relu#2", vec![12], v.clone()),
        ],
    );
    let b = save(
        dir.path(),
        "torch",
        &[
            ("net.conv1", vec![12], v.clone()),
            ("net.head", vec![3, 4], v.clone()),
            ("net.act2", vec![12], v.clone()),
        ],
    );
    // Without a map nothing matches.
    let d = json(dir.path(), &["diff", s(&a), s(&b)], 1);
    assert_eq!(d["counts"]["only_in_a"], 3);
    let text_map = dir.path().join("names.txt");
    std::fs::write(
        &text_map,
        "# candle -> torch\nmodel.features.0 = conv1\nrelu#2 = net.act2\nstrip_prefix_a: model.\nstrip_prefix_b: net.\nmodel.typo = x\n",
    )
    .unwrap();
    let out = cl_code(
        &["diff", s(&a), s(&b), "--map", s(&text_map), "--json"],
        dir.path(),
        0,
    );
    assert!(
        stderr(&out).contains("\"model.typo\""),
        "unused rename noted"
    );
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["counts"]["agree"], 3, "{d:#}");
    assert_eq!(layer(&d, "relu#2")["name_b"], "net.act2");
    assert_eq!(d["unused_renames"], serde_json::json!(["model.typo"]));
    let table = stdout(&cl_code(
        &["diff", s(&a), s(&b), "--map", s(&text_map)],
        dir.path(),
        0,
    ));
    assert!(table.contains("model.features.0 -> net.conv1"), "{table}");
    // The JSON form, and flags overriding the file's prefixes.
    let json_map = dir.path().join("names.json");
    std::fs::write(
        &json_map,
        r#"{"rename": {"model.features.0": "net.conv1", "relu#2": "net.act2"}, "strip_prefix_a": "wrong."}"#,
    )
    .unwrap();
    let d = json(
        dir.path(),
        &[
            "diff",
            s(&a),
            s(&b),
            "--map",
            s(&json_map),
            "--strip-prefix-a",
            "model.",
            "--strip-prefix-b",
            "net.",
        ],
        0,
    );
    assert_eq!(d["counts"]["agree"], 3, "{d:#}");
}

#[test]
fn bad_input_is_a_one_line_error_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let a = save(dir.path(), "a", &reference_layers());
    let missing = dir.path().join("nope.safetensors");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["diff".into(), s(&a).into(), s(&missing).into()],
            "nope.safetensors",
        ),
        (
            vec![
                "diff".into(),
                s(&a).into(),
                s(&a).into(),
                "--atol=-1".into(),
            ],
            "atol",
        ),
        (
            vec![
                "diff".into(),
                s(&a).into(),
                s(&a).into(),
                "--map".into(),
                s(&dir.path().join("names.txt")).into(),
            ],
            "line 2",
        ),
        (
            vec![
                "diff".into(),
                s(&a).into(),
                s(&a).into(),
                "--strip-prefix-a".into(),
                "zeta.".into(),
                "--map".into(),
                s(&dir.path().join("clash.txt")).into(),
            ],
            "both map",
        ),
    ];
    std::fs::write(dir.path().join("names.txt"), "a = b\nnot a rule\n").unwrap();
    std::fs::write(dir.path().join("clash.txt"), "mid = in\n").unwrap();
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cl(&args, dir.path());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn the_diff_gallery_shows_every_layer_and_marks_the_first_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let reference = reference_layers();
    let mut port = reference_layers();
    port[2].2[3] += 0.1; // alpha
    port.push((
        "<script>alert(1)</script>/../../evil",
        vec![4],
        vec![1.0; 4],
    ));
    let a = save(dir.path(), "port", &port);
    let b = save(dir.path(), "reference", &reference);
    let out_dir = dir.path().join("gallery");
    let out = cl_code(&["diff", s(&a), s(&b), "--out", s(&out_dir)], dir.path(), 1);
    assert!(stdout(&out).contains("index.html"));
    let page = std::fs::read_to_string(out_dir.join("index.html")).unwrap();
    assert!(!page.contains("<script>alert"), "names are escaped");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
            || page.contains("&lt;script&gt;alert(1)&lt;/script&gt;")
    );
    // The first divergent layer's card is the highlighted one.
    let first_card = page
        .split("<section")
        .find(|c| c.starts_with(" class=\"card first\""))
        .expect("a highlighted card");
    assert!(first_card.contains("2. alpha"), "{first_card}");
    assert_eq!(page.matches("class=\"card first\"").count(), 1);
    // A, B and A - B for the four shared layers; A alone for the extra one.
    let pngs: Vec<String> = std::fs::read_dir(out_dir.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(pngs.len(), 4 * 3 + 1, "{pngs:?}");
    for p in &pngs {
        assert!(page.contains(p.as_str()), "{p} linked");
        let img = image::open(out_dir.join("layers").join(p)).unwrap();
        assert!(img.width() > 0 && img.height() > 0);
    }
    assert!(pngs
        .iter()
        .any(|p| p.starts_with("004-") && p.ends_with(".a.png")));
    // Nothing outside the out folder but the two runs.
    let mut top: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top.len(), 3, "{top:?}");
    let diff_json: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("diff.json")).unwrap()).unwrap();
    assert_eq!(diff_json["first_divergent"], "alpha");
    // The ranking table lists the divergent layers first.
    let ranking = page.split("<h2>Layers</h2>").next().unwrap();
    let alpha = ranking.find(">alpha<").unwrap();
    let zeta = ranking.find(">zeta.in<").unwrap();
    assert!(alpha < zeta);

    // Again into the same folder: replaced, no stale pictures; an unrelated
    // folder with its own `layers/` is refused.
    cl_code(&["diff", s(&b), s(&b), "--out", s(&out_dir)], dir.path(), 0);
    assert_eq!(
        std::fs::read_dir(out_dir.join("layers")).unwrap().count(),
        12
    );
    let page = std::fs::read_to_string(out_dir.join("index.html")).unwrap();
    assert!(!page.contains("class=\"card first\""));
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("layers")).unwrap();
    let out = cl_code(&["diff", s(&a), s(&b), "--out", s(&other)], dir.path(), 2);
    assert!(
        stderr(&out).contains("not replacing it"),
        "{}",
        stderr(&out)
    );
    assert!(other.join("layers").is_dir());
}

/// The shipped MNIST CNN on a sample digit, recorded in f32, stored as bf16, and
/// computed in f16 (candle's CPU matmul has no bf16).
#[test]
fn f32_against_bf16_recordings_differ_by_the_expected_amount() {
    let dir = tempfile::tempdir().unwrap();
    let weights = default_weights_path();
    let dev = Device::Cpu;
    let x = image_to_input(&sample_digits().unwrap()[3].0, &dev).unwrap();
    let model = MnistCnn::load(&weights, &dev).unwrap();
    let predict = |m: &MnistCnn, x: &Tensor| m.predict(x);
    let (_, f32_run) = Recorder::new("mnist-cnn")
        .record(|| predict(&model, &x))
        .unwrap();
    let (_, stored_bf16) = Recorder::new("mnist-cnn")
        .store_as(DType::BF16)
        .record(|| predict(&model, &x))
        .unwrap();
    // SAFETY: the shipped weights file is not modified while the model is built.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F16, &dev) }.unwrap();
    let f16_model = MnistCnn::new(vb).unwrap();
    let xh = x.to_dtype(DType::F16).unwrap();
    let (_, computed_f16) = Recorder::new("mnist-cnn")
        .record(|| predict(&f16_model, &xh))
        .unwrap();
    // Through files, as a user would.
    let f32_path = f32_run.save(dir.path()).unwrap();
    let stored_path = stored_bf16.save(dir.path()).unwrap();
    let (f, st) = (
        Run::open(&f32_path).unwrap(),
        Run::open(&stored_path).unwrap(),
    );

    // Rounding to bf16 (8 significant bits, round to nearest) moves a value by at
    // most u = 2^-8 of itself: exactly within rtol = u, atol = 0, and beyond 1e-4.
    let u = 2f64.powi(-8);
    let exact = DiffOptions {
        atol: 0.0,
        rtol: u,
        ..Default::default()
    };
    let d = st.diff_with(&f, &exact).unwrap();
    assert!(d.agrees(), "{:#?}", d.first_divergent());
    assert_eq!(d.layers.len(), 11);
    let d = st.diff(&f).unwrap();
    assert_eq!(d.first_divergent().unwrap().name(), "conv1");
    for l in &d.layers {
        assert!(l.dtype_differs(), "{}: F32 vs BF16 reported", l.name());
        let n = l.numbers.as_ref().unwrap();
        let max_b = f
            .values(l.name())
            .unwrap()
            .iter()
            .fold(0f64, |m, v| m.max(v.abs() as f64));
        assert!(
            n.max_abs <= u * max_b,
            "{}: {} > 2^-8 * {max_b}",
            l.name(),
            n.max_abs
        );
        assert!(
            n.rel_l2 <= u && n.rel_l2 > 0.0,
            "{}: rel L2 {}",
            l.name(),
            n.rel_l2
        );
        assert!(n.cosine > 1.0 - u, "{}: cosine {}", l.name(), n.cosine);
    }

    // Computed in f16 (11 significant bits, u = 2^-11): every op rounds, so errors
    // build up through the layers, but stay of the order of u (measured: 0.6u to 1.7u).
    let uh = 2f64.powi(-11);
    let d = computed_f16.diff(&f).unwrap();
    assert!(!d.agrees());
    for l in &d.layers {
        let n = l.numbers.as_ref().unwrap();
        println!(
            "f16 {:<8} rel L2 {:.3e} max {:.3e} cos {:.8}",
            l.name(),
            n.rel_l2,
            n.max_abs,
            n.cosine
        );
        assert_eq!(
            l.status,
            if n.mismatches > 0 {
                Status::Differ
            } else {
                Status::Agree
            }
        );
        assert!(n.rel_l2 < 4.0 * uh, "{}: rel L2 {}", l.name(), n.rel_l2);
        assert!(
            n.cosine > 1.0 - 4.0 * uh,
            "{}: cosine {}",
            l.name(),
            n.cosine
        );
    }
    let fc2 = d.layers.iter().find(|l| l.name() == "fc2").unwrap();
    assert!(
        fc2.numbers.as_ref().unwrap().rel_l2 > uh / 8.0,
        "f16 compute is visible"
    );
}

/// Issue 12: a candle port's `[12, 384]` against PyTorch's `[1, 12, 384]`.
#[test]
fn shapes_that_differ_by_leading_ones_are_compared_and_noted() {
    let dir = tempfile::tempdir().unwrap();
    let v = values(12 * 384, 21);
    let mut off = v.clone();
    off[384 + 5] += 0.5;
    let a = save(
        dir.path(),
        "candle",
        &[
            ("hidden", vec![12, 384], v.clone()),
            ("pooled", vec![384], v[..384].to_vec()),
        ],
    );
    let b = save(
        dir.path(),
        "torch",
        &[
            ("hidden", vec![1, 12, 384], v.clone()),
            ("pooled", vec![1, 384], v[..384].to_vec()),
        ],
    );
    let out_dir = dir.path().join("gallery");
    let out = cl_code(&["diff", s(&a), s(&b), "--out", s(&out_dir)], dir.path(), 0);
    let text = stdout(&out);
    let row = text.lines().find(|l| l.contains("hidden")).unwrap();
    assert!(
        row.contains("[12, 384] vs [1, 12, 384]") && row.ends_with("ok (reshaped)"),
        "{text}"
    );
    assert!(
        text.contains("2 layers: 2 agree; 2 reshaped (shapes differ only by leading 1s)"),
        "{text}"
    );
    assert!(text.contains("all layers agree"), "{text}");
    let page = std::fs::read_to_string(out_dir.join("index.html")).unwrap();
    assert!(page.contains("only leading 1s differ"), "gallery notes it");
    assert!(page.contains("ok (reshaped)"));
    let d = json(dir.path(), &["diff", s(&a), s(&b)], 0);
    assert_eq!(layer(&d, "hidden")["reshaped"], true);
    assert_eq!(layer(&d, "hidden")["status"], "agree");
    assert_eq!(layer(&d, "hidden")["numbers"]["max_abs"], 0.0);
    assert_eq!(d["counts"]["reshaped"], 2);

    // Values that differ still diverge; positions are in A's shape.
    let c = save(
        dir.path(),
        "torch-off",
        &[("hidden", vec![1, 12, 384], off)],
    );
    let d = json(dir.path(), &["diff", s(&a), s(&c), "--ignore-missing"], 1);
    let h = layer(&d, "hidden");
    assert_eq!(
        (h["status"].clone(), h["reshaped"].clone()),
        ("differ".into(), true.into())
    );
    assert_eq!(
        h["numbers"]["first_mismatch"]["position"],
        serde_json::json!([1, 5])
    );
    let text = stdout(&cl_code(
        &["diff", s(&a), s(&c), "--ignore-missing"],
        dir.path(),
        1,
    ));
    assert!(
        text.contains("first divergence: hidden: 1 of 4608 elements out of tolerance (shape [12, 384] vs [1, 12, 384], positions in A's), first at [1, 5]"),
        "{text}"
    );
    // Leading 1s but another element count: a shape mismatch, as before.
    let e = save(
        dir.path(),
        "torch-two",
        &[(
            "pooled",
            vec![1, 2, 384],
            [v[..384].to_vec(), v[..384].to_vec()].concat(),
        )],
    );
    let d = json(dir.path(), &["diff", s(&a), s(&e), "--ignore-missing"], 1);
    assert_eq!(layer(&d, "pooled")["status"], "shape_mismatch");
    assert_eq!(layer(&d, "pooled")["reshaped"], false);
}

#[test]
fn exclude_leaves_layers_out_of_the_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let v = values(8, 5);
    let a = save(
        dir.path(),
        "a",
        &[
            ("embed", vec![8], v.clone()),
            ("dropout.0", vec![8], v.clone()),
            ("blocks.0.attn", vec![8], v.clone()),
            ("dropout.1", vec![8], v.clone()),
            ("head", vec![8], v.clone()),
        ],
    );
    let b = save(
        dir.path(),
        "b",
        &[
            ("embed", vec![8], v.clone()),
            ("blocks.0.attn", vec![8], vec![0.0; 8]),
            ("pooler", vec![8], v.clone()),
            ("head", vec![8], v.clone()),
        ],
    );
    let d = json(dir.path(), &["diff", s(&a), s(&b)], 1);
    assert_eq!(d["counts"]["only_in_a"], 2);
    let args = [
        "diff",
        s(&a),
        s(&b),
        "--exclude",
        "dropout.*",
        "--exclude",
        "*.attn",
        "--exclude=pooler",
    ];
    let text = stdout(&cl_code(&args, dir.path(), 0));
    assert!(
        text.contains("2 layers: 2 agree; excluded: 3 in A, 2 in B"),
        "{text}"
    );
    assert!(
        !text.contains("dropout") && !text.contains("pooler"),
        "{text}"
    );
    let d = json(dir.path(), &args, 0);
    assert_eq!(
        (d["excluded_a"].clone(), d["excluded_b"].clone()),
        (3.into(), 2.into())
    );
    assert_eq!(
        d["exclude"],
        serde_json::json!(["dropout.*", "*.attn", "pooler"])
    );
    assert_eq!(d["layers"].as_array().unwrap().len(), 2);
    assert_eq!(d["counts"]["only_in_a"], 0);
    // A bad glob: exit 2, one line.
    let out = cl_code(
        &["diff", s(&a), s(&b), "--exclude", "blocks.[0"],
        dir.path(),
        2,
    );
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("bad exclude glob \"blocks.[0\""), "{err}");
}

#[test]
fn glob_name_maps_match_a_port_without_a_hand_written_list() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a_layers, mut b_layers) = (Vec::new(), Vec::new());
    let names: Vec<(String, String)> = (0..3)
        .flat_map(|i| {
            [
                (
                    format!("blocks.{i}.attn"),
                    format!("encoder.layer.{i}.attention.self"),
                ),
                (
                    format!("blocks.{i}.mlp.fc1"),
                    format!("encoder.layer.{i}.intermediate.dense"),
                ),
            ]
        })
        .chain([("embed".to_string(), "embeddings".to_string())])
        .collect();
    for (k, (na, nb)) in names.iter().enumerate() {
        let v = values(6, 100 + k as u64);
        a_layers.push((na.as_str(), vec![6], v.clone()));
        b_layers.push((nb.as_str(), vec![1, 6], v));
    }
    let a = save(dir.path(), "candle", &a_layers);
    let b = save(dir.path(), "torch", &b_layers);
    let map = dir.path().join("names.txt");
    std::fs::write(
        &map,
        "# patterns\nblocks.*.attn = encoder.layer.*.attention.self\nblocks.*.mlp.fc1 = encoder.layer.*.intermediate.dense\nembed = embeddings\nblock.*.ln = encoder.layer.*.output.LayerNorm\n",
    )
    .unwrap();
    let out = cl_code(&["diff", s(&a), s(&b), "--map", s(&map)], dir.path(), 0);
    let text = stdout(&out);
    assert!(text.contains("7 layers: 7 agree; 7 reshaped"), "{text}");
    assert!(
        text.contains("blocks.2.mlp.fc1 -> encoder.layer.2.intermediate.dense"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("pattern \"block.*.ln\" renames no layer of A"),
        "{}",
        stderr(&out)
    );
    // The JSON form, the catch-all pattern first: patterns are tried most specific
    // first whatever their order, and an exact entry beats them all (here, wrongly).
    let json_map = dir.path().join("names.json");
    std::fs::write(
        &json_map,
        r#"{"rename": {"blocks.**": "encoder.layer.**", "blocks.*.attn": "encoder.layer.*.attention.self", "blocks.*.mlp.fc1": "encoder.layer.*.intermediate.dense", "embed": "embeddings", "blocks.2.attn": "encoder.layer.2.attention"}}"#,
    )
    .unwrap();
    let d = json(
        dir.path(),
        &["diff", s(&a), s(&b), "--map", s(&json_map)],
        1,
    );
    // B's layer comes first: it follows its predecessor in B, `blocks.1.mlp.fc1`'s match.
    assert_eq!(d["first_divergent"], "encoder.layer.2.attention.self");
    assert_eq!(layer(&d, "blocks.2.attn")["status"], "only_in_a");
    assert_eq!(
        layer(&d, "blocks.1.attn")["name_b"],
        "encoder.layer.1.attention.self"
    );
    assert_eq!(d["counts"]["agree"], 6);
    assert_eq!(d["unused_renames"], serde_json::json!(["blocks.**"]));
    // Wildcard counts that differ: exit 2, one line naming the line.
    std::fs::write(
        &map,
        "embed = embeddings\nblocks.*.attn = encoder.attention\n",
    )
    .unwrap();
    let out = cl_code(&["diff", s(&a), s(&b), "--map", s(&map)], dir.path(), 2);
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("names.txt") && err.contains("line 2"), "{err}");
}
