//! The galleries index through the real binary: runs of several steps rendered
//! into one root, `diff --gallery`, the index groups, the trends page and the
//! links between runs, diffs and trends.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candlelight::gallery::{diff_dir_name, gallery_name, trends_page_name, DIFFS_DIR, TRENDS_DIR};
use candlelight::{tap, Recorder};

mod common;
use common::{cl, cl_code, stderr};

/// A run of `model` at `step` (values grow with the step), saved as `<id>.safetensors`.
fn run_at(dir: &Path, model: &str, id: &str, step: Option<usize>) -> PathBuf {
    let s = step.unwrap_or(0) as f32;
    let x = Tensor::arange(-8f32, 8., &Device::Cpu)
        .unwrap()
        .affine(1.0 + s as f64, s as f64)
        .unwrap()
        .reshape((1, 4, 2, 2))
        .unwrap();
    let mut rec = Recorder::new(model).id(id);
    if let Some(step) = step {
        rec = rec.tag("step", step.to_string());
    }
    let (_, run) = rec
        .record(|| {
            let y = tap("conv", &x)?.relu()?;
            candlelight::record_as("relu", "relu", &y);
            Ok(y)
        })
        .unwrap();
    run.save(dir).unwrap()
}

/// A page with minijinja's `&#x2f;` turned back into `/`.
fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap().replace("&#x2f;", "/")
}

#[test]
fn render_steps_then_diff_into_the_root_links_runs_diffs_and_trends() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let root = tmp.path().join("g");
    let steps: Vec<PathBuf> = [30, 10, 20]
        .iter()
        .map(|&s| run_at(&runs, "net<v2>", &format!("net-step{s}"), Some(s)))
        .collect();
    let other = run_at(&runs, "", "loose", None);
    let mut args: Vec<&str> = vec!["render", "--out", root.to_str().unwrap()];
    args.extend(steps.iter().map(|p| p.to_str().unwrap()));
    args.push(other.to_str().unwrap());
    cl_code(&args, tmp.path(), 0);

    let (a, b) = (&steps[1], &steps[2]);
    let o = cl(
        &[
            "diff",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--gallery",
            root.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(1), "the runs differ: {}", stderr(&o));
    let (ga, gb) = (gallery_name(a), gallery_name(b));
    let diff_dir = root.join(DIFFS_DIR).join(diff_dir_name(&ga, &gb));
    assert!(diff_dir.join("index.html").is_file() && diff_dir.join("diff.json").is_file());

    // The index: one group per model with its count, the no-model group apart.
    let index = read(&root.join("index.html"));
    let group = |anchor: &str| {
        let start = index
            .find(&format!("<section class=\"group\" id=\"{anchor}\""))
            .unwrap();
        let rest = &index[start + 10..];
        let end = rest.find("<section class=\"group\"").unwrap_or(rest.len());
        rest[..end].to_string()
    };
    let trends_file = trends_page_name("net<v2>").unwrap();
    let net = group(&format!("model-{}", trends_file.trim_end_matches(".html")));
    assert!(net.contains("3 runs"), "{net}");
    assert_eq!(net.matches("<section class=\"run\"").count(), 3);
    assert!(net.contains(&format!("href=\"trends/{trends_file}\"")));
    assert!(net.contains("net&lt;v2&gt;") && !index.contains("net<v2>"));
    let loose = group("model-~none");
    assert!(loose.contains("(no model)") && loose.contains("data-run=\"loose\""));
    // Diffs: listed, and linked from both runs' cards.
    let href = format!("href=\"diffs/{ga}~vs~{gb}/index.html\"");
    assert!(index.contains("<section class=\"diffs\" id=\"diffs\">"));
    let card = |g: &str| {
        let start = index.find(&format!("id=\"run-{g}\"")).unwrap();
        let rest = &index[start..];
        rest[..rest.find("</section>").unwrap()].to_string()
    };
    assert!(card(&ga).contains(&href) && card(&ga).contains(&format!("diff vs {gb}")));
    assert!(card(&gb).contains(&href) && card(&gb).contains(&format!("diff vs {ga}")));
    assert!(!card(&gallery_name(&steps[0])).contains("diff vs"));
    assert!(index.contains("diverge"));

    // The run page links to its card on the index.
    let page = read(&root.join(&ga).join("index.html"));
    assert!(page.contains(&format!("href=\"../index.html#run-{ga}\"")));

    // The trends page: steps in numeric order, links to each run's layer cards,
    // histograms over steps.
    let trends = read(&root.join(TRENDS_DIR).join(&trends_file));
    let pos = |s: &str| trends.find(s).unwrap_or_else(|| panic!("{s} missing"));
    let link = |p: &PathBuf, l: usize| format!("../{}/index.html#l{l}", gallery_name(p));
    assert!(pos(&link(&steps[1], 1)) < pos(&link(&steps[2], 1)));
    assert!(pos(&link(&steps[2], 1)) < pos(&link(&steps[0], 1)));
    assert!(trends.contains("data-name=\"conv\"") && trends.contains("data-name=\"relu\""));
    assert_eq!(trends.matches("data:image/png;base64,").count(), 2);
    assert!(trends.contains("<meta name=\"generator\" content=\"candlelight trends\">"));
    assert!(!trends.contains("<script"));
    // stats.json keeps the histogram counts.
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join(&ga).join("stats.json")).unwrap()).unwrap();
    let hist = &stats["layers"][0]["hist"];
    let total: u64 = hist["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 16);
    assert!(hist["lo"].as_f64().unwrap() < hist["hi"].as_f64().unwrap());

    // --out and --gallery do not go together.
    let o = cl(
        &[
            "diff",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--gallery",
            "x",
            "--out",
            "y",
        ],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
