use super::*;
use crate::gallery::{SourceFacts, TRENDS_DIR};

/// A gallery folder `out/<name>/` holding only a manifest (and a stats.json if given).
pub(crate) fn put(
    out: &Path,
    name: &str,
    model: &str,
    created: &str,
    tags: &[(&str, &str)],
    stats: Option<&str>,
) -> Manifest {
    let facts = SourceFacts {
        size: 1,
        mtime_ns: 1,
        ino: 1,
        ctime_ns: 1,
    };
    let src = format!("/runs/{name}.safetensors");
    let mut m = Manifest::new(Path::new(&src), facts, name, "ok");
    m.model = model.into();
    m.created = created.into();
    m.layers = 1;
    m.tags = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let dir = out.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    if let Some(s) = stats {
        std::fs::write(dir.join("stats.json"), s).unwrap();
    }
    m
}

/// A page with minijinja's `&#x2f;` turned back into `/`.
pub(crate) fn read_page(p: impl AsRef<Path>) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(p)?.replace("&#x2f;", "/"))
}

fn names(g: &Group) -> Vec<&str> {
    g.runs.iter().map(|r| r.0.as_str()).collect()
}

#[test]
fn runs_of_one_second_order_like_ls_newest_first_never_by_render_time() {
    let tmp = tempfile::tempdir().unwrap();
    let t = "2026-01-01T00:00:00Z";
    let mut found = Vec::new();
    for (i, n) in [
        "20260101-000000-m-00aa",
        "20260101-000000-m-00ac",
        "20260101-000000-m-00ab",
    ]
    .iter()
    .enumerate()
    {
        let mut m = put(tmp.path(), n, "m", t, &[], None);
        // Rendered in the opposite order: must not matter.
        m.rendered_at = format!("2026-01-0{}T00:00:00Z", 9 - i);
        found.push((n.to_string(), m));
    }
    let older = put(tmp.path(), "zzz", "m", "2025-01-01T00:00:00Z", &[], None);
    found.push(("zzz".into(), older));
    let groups = group(found);
    assert_eq!(
        names(&groups[0]),
        [
            "20260101-000000-m-00ac",
            "20260101-000000-m-00ab",
            "20260101-000000-m-00aa",
            "zzz"
        ]
    );
}

#[test]
fn groups_by_model_newest_group_first_and_no_model_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path();
    let found = vec![
        (
            "a1".into(),
            put(o, "a1", "a", "2026-01-01T00:00:01Z", &[], None),
        ),
        (
            "b1".into(),
            put(o, "b1", "b", "2026-01-01T00:00:05Z", &[], None),
        ),
        (
            "a2".into(),
            put(o, "a2", "a", "2026-01-01T00:00:03Z", &[], None),
        ),
        (
            "x".into(),
            put(o, "x", "", "2026-01-01T00:00:04Z", &[], None),
        ),
    ];
    let groups = group(found);
    let models: Vec<&str> = groups.iter().map(|g| g.model.as_str()).collect();
    assert_eq!(models, ["b", "", "a"]);
    assert_eq!(names(&groups[2]), ["a2", "a1"]);
    assert_eq!(model_label(""), "(no model)");
    assert_eq!(model_anchor(""), "model-~none");
    assert_eq!(model_anchor("a"), "model-a");
    assert!(model_anchor("a b").starts_with("model-a-b~"));
}

#[test]
fn pages_of_100_runs_lazy_thumbnails_and_only_our_stale_pages_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    for i in 0..250 {
        let name = format!("r{i:03}");
        put(
            out,
            &name,
            "m",
            &format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60),
            &[],
            None,
        );
    }
    // One real PNG thumbnail (40 x 20): width and height from its header.
    let img = image::RgbImage::new(40, 20);
    std::fs::write(
        out.join("r249/thumb.png"),
        crate::render::encode_png(&img).unwrap(),
    )
    .unwrap();
    let mut m = crate::gallery::read_manifest(&out.join("r249")).unwrap();
    m.thumbnail = Some("thumb.png".into());
    std::fs::write(
        out.join("r249/manifest.json"),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
    write_index(out).unwrap();
    let p1 = read_page(out.join("index.html")).unwrap();
    let p3 = read_page(out.join("index-3.html")).unwrap();
    assert!(!out.join("index-4.html").exists());
    assert_eq!(p1.matches("<section class=\"run").count(), 100);
    assert_eq!(p3.matches("<section class=\"run").count(), 50);
    assert!(p1.contains(r#"<img src="r249/thumb.png" width="40" height="20" loading="lazy""#));
    assert!(p1.contains(r#"id="run-r249""#) && p3.contains(r#"id="run-r000""#));
    // Page 1 leads to a run on page 3 (the run page links to index.html#run-<name>).
    assert!(p1.contains(r#"<a id="run-r000" href="index-3.html#run-r000">"#));
    assert!(p3.contains("(continued)") && p3.contains("href=\"index-2.html\""));
    // Fewer runs: page 3 (ours) goes, a user's index-7.html stays.
    std::fs::write(out.join("index-7.html"), "<h1>mine</h1>").unwrap();
    for i in 0..200 {
        std::fs::remove_dir_all(out.join(format!("r{i:03}"))).unwrap();
    }
    write_index(out).unwrap();
    assert!(out.join("index.html").is_file());
    assert!(!out.join("index-2.html").exists() && !out.join("index-3.html").exists());
    assert_eq!(
        read_page(out.join("index-7.html")).unwrap(),
        "<h1>mine</h1>"
    );
}

#[test]
fn hostile_models_and_tags_are_escaped_on_the_index_and_trends_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let model = "<script>alert(1)</script>/../../x";
    let tag = "\"><img src=x onerror=alert(1)>";
    let stats = r#"{"layers":[{"index":0,"name":"<b>x</b>","mean":1.0,"std":0.5,"min":0,"max":2,"zero_fraction":0.1}]}"#;
    put(
        out,
        "a",
        model,
        "2026-01-01T00:00:01Z",
        &[(tag, tag)],
        Some(stats),
    );
    put(
        out,
        "b",
        model,
        "2026-01-01T00:00:02Z",
        &[("step", tag)],
        Some(stats),
    );
    write_index(out).unwrap();
    let trends = out.join(TRENDS_DIR);
    let files: Vec<String> = std::fs::read_dir(&trends)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("-script-alert-1-") && files[0].ends_with(".html"));
    for page in [out.join("index.html"), trends.join(&files[0])] {
        let html = read_page(&page).unwrap();
        for bad in ["<script>alert", "<img src=x", "<b>x"] {
            assert!(!html.contains(bad), "{}: {bad}", page.display());
        }
    }
    let index = read_page(out.join("index.html")).unwrap();
    assert!(index.contains("&lt;script&gt;alert(1)&lt;"));
    assert!(index.contains(&format!("href=\"trends/{}\"", files[0])));
}
