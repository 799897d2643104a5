use super::*;
use crate::gallery::index::tests::{put, read_page};
use crate::gallery::write_index;

fn stats(mean: f64, hist: &str) -> String {
    format!(
        r#"{{"run_id":"x","layers":[{{"index":0,"name":"conv","mean":{mean},"std":1,"min":-1,"max":{mean},"zero_fraction":0.25{hist}}},{{"index":1,"name":"fc","mean":null,"std":null,"min":null,"max":null,"zero_fraction":0}}]}}"#
    )
}

fn trends_page(out: &Path, model: &str) -> std::path::PathBuf {
    out.join(TRENDS_DIR).join(trends_page_name(model).unwrap())
}

#[test]
fn numeric_steps_order_the_runs_else_creation_time() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let h = r#","hist":{"lo":-1,"hi":3,"counts":[1,2,3,4]}"#;
    put(
        out,
        "s10",
        "m",
        "2026-01-01T00:00:01Z",
        &[("step", "10")],
        Some(&stats(10.0, h)),
    );
    put(
        out,
        "s2",
        "m",
        "2026-01-01T00:00:02Z",
        &[("step", "2")],
        Some(&stats(2.0, h)),
    );
    put(
        out,
        "s1",
        "m",
        "2026-01-01T00:00:03Z",
        &[("step", " 1 ")],
        Some(&stats(1.0, "")),
    );
    write_index(out).unwrap();
    let html = read_page(trends_page(out, "m")).unwrap();
    let pos = |s: &str| html.find(s).unwrap_or_else(|| panic!("{s} missing"));
    assert!(pos("../s1/index.html#l0") < pos("../s2/index.html#l0"));
    assert!(pos("../s2/index.html#l0") < pos("../s10/index.html#l0"));
    assert!(html.contains("ordered by their <code>step</code> tag"));
    assert!(
        html.contains("data:image/png;base64,"),
        "histograms over steps"
    );
    assert!(html.contains("href=\"../index.html#model-m\""));
    // One run without a numeric step: creation order.
    put(
        out,
        "late",
        "m",
        "2026-01-01T00:00:00Z",
        &[("step", "n/a")],
        Some(&stats(0.0, "")),
    );
    write_index(out).unwrap();
    let html = read_page(trends_page(out, "m")).unwrap();
    let pos = |s: &str| html.find(s).unwrap_or_else(|| panic!("{s} missing"));
    assert!(html.contains("creation time"));
    assert!(pos("../late/index.html#l0") < pos("../s10/index.html#l0"));
    assert!(pos("../s2/index.html#l0") < pos("../s1/index.html#l0"));
}

#[test]
fn hostile_stats_json_leaves_the_run_out_never_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let t = "2026-01-01T00:00:0";
    put(
        out,
        "good",
        "m",
        &format!("{t}1Z"),
        &[],
        Some(&stats(1.0, "")),
    );
    put(
        out,
        "good2",
        "m",
        &format!("{t}2Z"),
        &[],
        Some(&stats(2.0, "")),
    );
    put(
        out,
        "notjson",
        "m",
        &format!("{t}3Z"),
        &[],
        Some("{\"layers\": [1, 2"),
    );
    put(
        out,
        "types",
        "m",
        &format!("{t}4Z"),
        &[],
        Some(r#"{"layers":[{"index":-1,"name":7}]}"#),
    );
    put(out, "nostats", "m", &format!("{t}5Z"), &[], None);
    let bad_hist = r#","hist":{"lo":5,"hi":-5,"counts":[1]}"#;
    put(
        out,
        "badhist",
        "m",
        &format!("{t}6Z"),
        &[],
        Some(&stats(3.0, bad_hist)),
    );
    put(out, "huge", "m", &format!("{t}7Z"), &[], Some("{}"));
    // Bigger than the cap: refused before it is read.
    let f = std::fs::File::options()
        .write(true)
        .open(out.join("huge/stats.json"))
        .unwrap();
    f.set_len(STATS_CAP + 1).unwrap();
    write_index(out).unwrap();
    let html = read_page(trends_page(out, "m")).unwrap();
    let left_out = &html[html.find("Left out").expect("skipped runs named")..];
    for name in ["notjson", "types", "nostats", "huge"] {
        assert!(left_out.contains(name), "{name}");
    }
    assert!(
        html.contains("../badhist/index.html#l0"),
        "kept, without its histogram"
    );
    assert!(!html.contains("data:image/png"), "no sane histogram at all");
    assert!(
        html.contains("data-name=\"fc\""),
        "a layer of only nulls still listed"
    );
}

#[test]
fn pages_are_rewritten_only_when_their_runs_change_and_stale_ones_of_ours_go() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    put(
        out,
        "a1",
        "a",
        "2026-01-01T00:00:01Z",
        &[],
        Some(&stats(1.0, "")),
    );
    put(
        out,
        "a2",
        "a",
        "2026-01-01T00:00:02Z",
        &[],
        Some(&stats(2.0, "")),
    );
    put(
        out,
        "b1",
        "b",
        "2026-01-01T00:00:03Z",
        &[],
        Some(&stats(1.0, "")),
    );
    put(
        out,
        "b2",
        "b",
        "2026-01-01T00:00:04Z",
        &[],
        Some(&stats(1.0, "")),
    );
    put(
        out,
        "c1",
        "c",
        "2026-01-01T00:00:05Z",
        &[],
        Some(&stats(1.0, "")),
    );
    write_index(out).unwrap();
    assert!(!trends_page(out, "c").exists(), "one run: no trends");
    let ino = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    };
    let (pa, pb) = (trends_page(out, "a"), trends_page(out, "b"));
    let (ia, ib) = (ino(&pa), ino(&pb));
    write_index(out).unwrap();
    assert_eq!(
        (ino(&pa), ino(&pb)),
        (ia, ib),
        "nothing changed: not rewritten"
    );
    put(
        out,
        "b3",
        "b",
        "2026-01-01T00:00:06Z",
        &[],
        Some(&stats(5.0, "")),
    );
    std::fs::write(out.join(TRENDS_DIR).join("mine.html"), "<h1>mine</h1>").unwrap();
    write_index(out).unwrap();
    assert_eq!(ino(&pa), ia);
    assert_ne!(ino(&pb), ib, "b changed: rewritten");
    assert!(read_page(&pb).unwrap().contains("../b3/index.html#l0"));
    std::fs::remove_dir_all(out.join("a2")).unwrap();
    write_index(out).unwrap();
    assert!(!pa.exists(), "a has one run left: its page (ours) removed");
    assert!(
        out.join(TRENDS_DIR).join("mine.html").exists(),
        "not ours: kept"
    );
    let index = read_page(out.join("index.html")).unwrap();
    assert!(index.contains("href=\"trends/b.html\"") && !index.contains("trends/a.html"));
}

#[test]
fn trends_page_names_are_safe() {
    assert_eq!(
        trends_page_name("mnist-cnn").as_deref(),
        Some("mnist-cnn.html")
    );
    assert_eq!(trends_page_name(""), None);
    for m in ["a/b", "../x", "index.html", "trends", "日本"] {
        let n = trends_page_name(m).unwrap();
        assert!(n.contains('~') && n.ends_with(".html"), "{n}");
        assert!(!n.contains('/') && !n.starts_with('.'));
    }
}
