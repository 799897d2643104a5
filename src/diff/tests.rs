//! The kernel against a direct loop, NaN/Inf rules, name maps (patterns,
//! exclusions), shapes that differ by leading 1s.

use super::kernel::*;
use super::*;

fn direct(a: &[f32], b: &[f32], tol: Tol) -> (f64, f64, u64, Option<usize>) {
    let mut max = 0f64;
    let mut sum = 0f64;
    let mut mism = 0;
    let mut first = None;
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let d = (x as f64 - y as f64).abs();
        max = max.max((x - y).abs() as f64);
        sum += d;
        if d > tol.atol + tol.rtol * (y as f64).abs() {
            mism += 1;
            first.get_or_insert(i);
        }
    }
    (max, sum / a.len() as f64, mism, first)
}

#[test]
fn chunked_kernel_matches_a_direct_loop() {
    let n = 10_007;
    let a: Vec<f32> = (0..n)
        .map(|i| ((i * 31) % 97) as f32 * 0.01 - 0.4)
        .collect();
    let b: Vec<f32> = a
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if i % 13 == 0 {
                v + 1e-3 * (i % 7) as f32
            } else {
                v
            }
        })
        .collect();
    let tol = Tol {
        atol: 1e-5,
        rtol: 1e-4,
    };
    // Split in uneven pieces and merged in order = one pass.
    let mut acc = Acc::EMPTY;
    for (s, e) in [(0, 5), (5, 4001), (4001, 4003), (4003, n)] {
        acc = acc.merge(Acc::of(&a[s..e], &b[s..e], s, tol));
    }
    let (max, mean, mism, first) = direct(&a, &b, tol);
    assert_eq!(acc.count, n as u64);
    assert_eq!(acc.max_abs, max);
    assert!((acc.sum_abs / n as f64 - mean).abs() <= 1e-6 * mean);
    assert_eq!((acc.mismatches, acc.first_mismatch), (mism, first));
    let w = acc.worst.unwrap();
    assert_eq!((a[w] - b[w]).abs() as f64, max);
    // The lowest index among equal maxima.
    assert!((0..w).all(|i| ((a[i] - b[i]).abs() as f64) < max));
}

/// Pair values that stress the f32 fast path: exact copies, differences at and
/// around the tolerance, subnormals; unless `clean`, also huge values whose
/// squares overflow f32, NaN and ±Inf on either side (rare, so that most groups
/// still take the fast path).
fn pair(clean: bool, tol: Tol) -> impl proptest::strategy::Strategy<Value = (f32, f32)> {
    use proptest::prelude::*;
    let base = prop_oneof![
        40 => -4.0f32..4.0,
        4 => Just(0.0f32),
        4 => (1u32..1000).prop_map(f32::from_bits),
        if clean { 0 } else { 1 } => -1e25f32..1e25,
    ];
    (base, 0u16..400, -3.0f32..3.0).prop_map(move |(y, how, r)| {
        let how = if clean && (390..395).contains(&how) {
            0
        } else {
            how
        };
        match how {
            0..=199 => (y, y),
            200..=259 => (y + r * 1e-5, y),
            260..=319 => (y * (1.0 + r * 1e-4), y),
            320..=369 => (y + r * 1e-3, y),
            370..=379 => (f32::from_bits(y.to_bits().wrapping_add(how as u32 % 3)), y),
            380..=389 => {
                // Within a few 1e-6 of the tolerance, either side of it.
                let t = (tol.atol + tol.rtol * (y as f64).abs()) * (1.0 + r as f64 * 1e-6);
                ((y as f64 + if how % 2 == 0 { t } else { -t }) as f32, y)
            }
            390 => (f32::NAN, y),
            391 => (y, f32::NAN),
            392 => (f32::NAN, f32::NAN),
            393 => (f32::INFINITY, y),
            394 => (f32::NEG_INFINITY, f32::NEG_INFINITY),
            _ => (-y, y),
        }
    })
}

fn case() -> impl proptest::strategy::Strategy<Value = (Vec<(f32, f32)>, Tol)> {
    use proptest::prelude::*;
    (
        any::<bool>(),
        proptest::sample::select(vec![0.0, 1e-45, 1e-40, 1e-5, 1e-3, 0.5]),
        proptest::sample::select(vec![0.0, 1e-4, 1.0 / 256.0, 1.0]),
    )
        .prop_flat_map(|(clean, atol, rtol)| {
            let tol = Tol { atol, rtol };
            (
                proptest::collection::vec(pair(clean, tol), 0..1200),
                Just(tol),
            )
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn fast_path_verdicts_are_exact(
        (pairs, tol) in case(),
    ) {
        let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
        let acc = Acc::of(&a, &b, 0, tol);
        // Reference: every pair on its own, in f64.
        let mut want = Acc::EMPTY;
        want.count = a.len() as u64;
        for i in 0..a.len() {
            want.one(i, a[i], b[i], tol);
        }
        proptest::prop_assert_eq!(acc.mismatches, want.mismatches);
        proptest::prop_assert_eq!(acc.first_mismatch, want.first_mismatch);
        proptest::prop_assert_eq!(acc.finite, want.finite);
        proptest::prop_assert_eq!(acc.max_abs, want.max_abs);
        proptest::prop_assert_eq!(acc.worst, want.worst);
        proptest::prop_assert_eq!(
            (acc.nan_a, acc.nan_b, acc.inf_a, acc.inf_b, acc.nan_mismatches, acc.inf_mismatches),
            (want.nan_a, want.nan_b, want.inf_a, want.inf_b, want.nan_mismatches, want.inf_mismatches)
        );
        for (got, exp) in [
            (acc.sum_abs, want.sum_abs),
            (acc.sum_d2, want.sum_d2),
            (acc.sum_a2, want.sum_a2),
            (acc.sum_b2, want.sum_b2),
            (acc.sum_ab, want.sum_ab),
        ] {
            // f32 sums within a group: about 1e-6 relative to the sum of magnitudes.
            let scale = want.sum_a2 + want.sum_b2 + want.sum_abs + 1e-30;
            proptest::prop_assert!((got - exp).abs() <= 1e-6 * scale, "{} vs {}", got, exp);
        }
    }
}

#[test]
fn fast_path_handles_identical_and_one_ulp_apart() {
    let a: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
    let exact = Tol {
        atol: 0.0,
        rtol: 0.0,
    };
    let acc = Acc::of(&a, &a, 0, exact);
    assert_eq!((acc.mismatches, acc.max_abs, acc.finite), (0, 0.0, 1000));
    assert_eq!(acc.worst, Some(0));
    let mut b = a.clone();
    b[700] = f32::from_bits(b[700].to_bits() + 1);
    let acc = Acc::of(&a, &b, 0, exact);
    assert_eq!(
        (acc.mismatches, acc.first_mismatch, acc.worst),
        (1, Some(700), Some(700))
    );
    // NaN inside a fast group, same place on both sides: agrees.
    let mut c = a.clone();
    c[300] = f32::NAN;
    let acc = Acc::of(&c, &c, 0, exact);
    assert_eq!((acc.mismatches, acc.nan_a, acc.finite), (0, 1, 999));
}

#[test]
fn nan_and_inf_follow_the_documented_rules() {
    let tol = Tol {
        atol: 0.0,
        rtol: 0.0,
    };
    let inf = f32::INFINITY;
    let nan = f32::NAN;
    let a = [nan, nan, inf, inf, -inf, 1.0, 2.0, 3.0, 4.0];
    let b = [nan, 1.0, inf, -inf, 5.0, nan, 2.0, inf, 4.0];
    let acc = Acc::of(&a, &b, 0, tol);
    assert_eq!((acc.nan_a, acc.nan_b, acc.inf_a, acc.inf_b), (2, 2, 3, 3));
    assert_eq!(acc.nan_mismatches, 2); // positions 1 and 5
    assert_eq!(acc.inf_mismatches, 3); // inf/-inf, -inf/5, 3/inf
    assert_eq!(acc.mismatches, 5);
    assert_eq!(acc.first_mismatch, Some(1));
    assert_eq!(acc.finite, 2);
    assert_eq!(acc.max_abs, 0.0);
}

#[test]
fn name_maps_parse_from_text_and_json() {
    let m = NameMap::parse(
        "# port of torchvision names\nfeatures.0 = conv1\n relu#2 = act.2 \nstrip_prefix_a: model.\n",
    )
    .unwrap();
    assert_eq!(m.rename["features.0"], "conv1");
    assert_eq!(m.rename["relu#2"], "act.2");
    assert_eq!(m.strip_prefix_a.as_deref(), Some("model."));
    let c = m.compile().unwrap();
    assert_eq!(c.key_a("model.fc").0, "fc");
    assert_eq!(c.key_a("features.0"), ("conv1".into(), Some("features.0")));
    let j = NameMap::parse(r#"{"rename": {"a": "b"}, "strip_prefix_b": "net."}"#).unwrap();
    let c = j.compile().unwrap();
    assert_eq!(c.key_a("a").0, "b");
    assert_eq!(c.key_b("net.b"), "b");
    assert!(NameMap::parse("x = \n")
        .unwrap_err()
        .to_string()
        .contains("line 1"));
    assert!(NameMap::parse("a = b\nnonsense\n")
        .unwrap_err()
        .to_string()
        .contains("line 2"));
    assert!(NameMap::parse("a = b\na = c\n")
        .unwrap_err()
        .to_string()
        .contains("twice"));
    assert!(NameMap::parse(r#"{"renames": {}}"#).is_err());
}

#[test]
fn unravel_is_row_major() {
    assert_eq!(unravel(0, &[2, 3, 4]), vec![0, 0, 0]);
    assert_eq!(unravel(23, &[2, 3, 4]), vec![1, 2, 3]);
    assert_eq!(unravel(5, &[2, 3, 4]), vec![0, 1, 1]);
    assert_eq!(unravel(0, &[]), vec![0]);
}

#[test]
fn patterns_capture_and_substitute_and_exact_entries_win() {
    let m = NameMap::parse(
        "blocks.*.attn = encoder.layer.*.attention.self\n\
         blocks.0.attn = embeddings.first\n\
         blocks.*.mlp.fc* = encoder.layer.*.mlp.*\n\
         head.** = net.cls.**\n\
         strip_prefix_b: net.\n",
    )
    .unwrap();
    let c = m.compile().unwrap();
    let key = |n| c.key_a(n);
    assert_eq!(
        key("blocks.11.attn"),
        (
            "encoder.layer.11.attention.self".into(),
            Some("blocks.*.attn")
        )
    );
    assert_eq!(
        key("blocks.0.attn"),
        ("embeddings.first".into(), Some("blocks.0.attn")),
        "the exact entry wins over the pattern"
    );
    assert_eq!(key("blocks.2.mlp.fc1").0, "encoder.layer.2.mlp.1");
    assert_eq!(
        key("head.dense.out").0,
        "cls.dense.out",
        "** spans segments; B's prefix stripped from the result"
    );
    // `*` stays within a segment: not a match, so the name is kept.
    assert_eq!(key("blocks.1.2.attn"), ("blocks.1.2.attn".into(), None));
}

#[test]
fn the_most_specific_pattern_is_tried_first_whatever_the_order() {
    let texts = [
        "blocks.* = x.*\nblocks.*.attn = y.*\nblocks.*.attn.* = z.*.*\n",
        "blocks.*.attn.* = z.*.*\nblocks.*.attn = y.*\nblocks.* = x.*\n",
    ];
    for t in texts {
        let m = NameMap::parse(t).unwrap();
        let c = m.compile().unwrap();
        assert_eq!(c.key_a("blocks.1.attn").0, "y.1", "{t}");
        assert_eq!(c.key_a("blocks.1.attn.q").0, "z.1.q", "{t}");
        assert_eq!(c.key_a("blocks.1").0, "x.1", "{t}");
    }
    // As many literal characters: fewer wildcards first (`x**` before `*.*`, though
    // `*.*` sorts first as text), then by the A side's text (`**.b` before `a.**`).
    let key = |text: &str, name: &str| {
        let m = NameMap::parse(text).unwrap();
        let c = m.compile().unwrap();
        c.key_a(name).0.into_owned()
    };
    assert_eq!(key("*.* = p.*.*\nx** = q.*\n", "x.y"), "q..y");
    assert_eq!(key("a.** = p.*\n**.b = r.*\n", "a.x.b"), "r.a.x");
    assert_eq!(
        key("a.** = p.*\n**.b = r.*\na.*.* = q.*.*\n", "a.x.b"),
        "q.x.b"
    );
}

#[test]
fn wildcard_counts_must_agree_and_errors_name_the_line() {
    let e = NameMap::parse("x = y\n# note\nblocks.*.attn = encoder.attention\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 3") && e.contains("1 wildcard(s) on the left but 0"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1);
    let e = NameMap::parse("fc = net.*\n").unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("0 wildcard(s)"), "{e}");
    let e = NameMap::parse("a.*** = b.*.*\n").unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("side by side"), "{e}");
    let e = NameMap::parse(r#"{"rename": {"ok": "fine", "h.*.mlp": "m"}}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"h.*.mlp\"") && e.contains("wildcard"), "{e}");
    // Built in code: checked when the diff starts.
    let mut map = NameMap::default();
    map.rename.insert("h.*".into(), "m.*.*".into());
    let x = candle_core::Tensor::new(&[1f32], &candle_core::Device::Cpu).unwrap();
    let r = Run::from_named_tensors("r", [("h.0".to_string(), x)]);
    let opts = DiffOptions {
        map,
        ..DiffOptions::default()
    };
    let e = r.diff_with(&r, &opts).unwrap_err().to_string();
    assert!(e.contains("\"h.*\"") && e.contains("2 on the right"), "{e}");
}

fn run(name: &str, layers: &[(&str, &[usize], &[f32])]) -> Run {
    let dev = candle_core::Device::Cpu;
    Run::from_named_tensors(
        name,
        layers.iter().map(|(n, shape, v)| {
            (
                n.to_string(),
                candle_core::Tensor::from_vec(v.to_vec(), shape.to_vec(), &dev).unwrap(),
            )
        }),
    )
}

#[test]
fn leading_ones_are_compared_like_equal_shapes() {
    let v: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let mut w = v.clone();
    w[4] += 1.0;
    let a = run(
        "a",
        &[
            ("same", &[2, 3], &v),
            ("off", &[2, 3], &v),
            ("flat", &[2, 3], &v),
            ("order", &[2, 3], &v),
        ],
    );
    let b = run(
        "b",
        &[
            ("same", &[1, 1, 2, 3], &v),
            ("off", &[1, 2, 3], &w),
            ("flat", &[1, 6], &v),
            ("order", &[3, 2], &v),
        ],
    );
    let d = a.diff(&b).unwrap();
    let l = |n: &str| d.layers.iter().find(|l| l.name() == n).unwrap();
    assert_eq!(
        (l("same").status, l("same").reshaped, l("same").diverges),
        (Status::Agree, true, false)
    );
    assert_eq!(l("same").status_label(), "ok (reshaped)");
    let off = l("off");
    assert_eq!(
        (off.status, off.reshaped, off.diverges),
        (Status::Differ, true, true)
    );
    let n = off.numbers.as_ref().unwrap();
    assert_eq!(
        n.first_mismatch.as_ref().unwrap().position,
        vec![1, 1],
        "in A's shape"
    );
    assert_eq!(n.worst.as_ref().unwrap().position, vec![1, 1]);
    for name in ["flat", "order"] {
        assert_eq!(
            (l(name).status, l(name).reshaped),
            (Status::ShapeMismatch, false)
        );
    }
    assert_eq!(d.reshaped(), 2);
    assert!(
        d.summary_line().contains("; 2 reshaped"),
        "{}",
        d.summary_line()
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["counts"]["reshaped"], 2);
    assert_eq!(json["layers"][0]["reshaped"], true);
}

#[test]
fn leading_ones_with_other_element_counts_stay_a_shape_mismatch() {
    let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let a = run("a", &[("x", &[12], &v), ("y", &[1, 1, 4], &v[..4])]);
    let b = run(
        "b",
        &[
            ("x", &[1, 2, 12], &[v.clone(), v.clone()].concat()),
            ("y", &[1, 4, 1], &v[..4]),
        ],
    );
    let d = a.diff(&b).unwrap();
    for l in &d.layers {
        assert_eq!(
            (l.status, l.reshaped, l.diverges),
            (Status::ShapeMismatch, false, true),
            "{}",
            l.name()
        );
    }
    assert!(d.layers[0].numbers.is_none());
    assert!(!same_but_leading_ones(&[1, 4], &[4, 1]));
    assert!(same_but_leading_ones(&[12, 384], &[1, 12, 384]));
}

#[test]
fn excluded_layers_are_left_out_on_both_sides() {
    let v = [1f32, 2.0];
    let a = run(
        "a",
        &[
            ("embed", &[2], &v),
            ("dropout.0", &[2], &v),
            ("blocks.0.attn", &[2], &v),
            ("head", &[2], &v),
        ],
    );
    let b = run(
        "b",
        &[
            ("embed", &[2], &v),
            ("blocks.0.attn", &[2], &[9.0, 9.0]),
            ("pooler", &[2], &v),
            ("head", &[2], &v),
        ],
    );
    let opts = DiffOptions {
        exclude: vec!["dropout*".into(), "*.attn".into(), "pooler".into()],
        ..DiffOptions::default()
    };
    let d = a.diff_with(&b, &opts).unwrap();
    assert!(d.agrees(), "{:?}", d.first_divergent());
    let names: Vec<&str> = d.layers.iter().map(LayerDiff::name).collect();
    assert_eq!(names, ["embed", "head"]);
    assert_eq!((d.excluded_a, d.excluded_b), (2, 2));
    assert_eq!(
        d.layers[1].index_a,
        Some(3),
        "capture positions of the whole run"
    );
    assert!(
        d.summary_line().ends_with("; excluded: 2 in A, 2 in B"),
        "{}",
        d.summary_line()
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(
        (json["excluded_a"].clone(), json["excluded_b"].clone()),
        (2.into(), 2.into())
    );
    assert_eq!(json["exclude"][0], "dropout*");
    // Without the exclusions the same runs diverge.
    assert!(!a.diff(&b).unwrap().agrees());
    // A bad glob is an option error.
    let bad = DiffOptions {
        exclude: vec!["a[".into()],
        ..DiffOptions::default()
    };
    let e = a.diff_with(&b, &bad).unwrap_err().to_string();
    assert!(e.contains("bad exclude glob \"a[\""), "{e}");
}

#[test]
fn unused_patterns_are_reported_and_excluded_layers_use_renames() {
    let v = [1f32];
    let a = run(
        "a",
        &[
            ("blocks.0.attn", &[1], &v),
            ("blocks.1.attn", &[1], &v),
            ("tmp", &[1], &v),
        ],
    );
    let b = run(
        "b",
        &[
            ("layer.0.attention", &[1], &v),
            ("layer.1.attention", &[1], &v),
        ],
    );
    let m = NameMap::parse(
        "blocks.*.attn = layer.*.attention\nblocks.1.attn = layer.1.attention\n\
         blokcs.*.attn = layer.*.x\nblocks.** = shadowed.**\ntmp = gone\n",
    )
    .unwrap();
    let opts = DiffOptions {
        map: m,
        exclude: vec!["tmp".into()],
        ..DiffOptions::default()
    };
    let d = a.diff_with(&b, &opts).unwrap();
    assert!(d.agrees(), "{:?}", d.first_divergent());
    // `blocks.**` matches A's layers, but the more specific pattern takes them;
    // `tmp` is excluded yet a layer of A: its rename is not a typo.
    assert_eq!(d.unused_renames, ["blocks.**", "blokcs.*.attn"]);
}
