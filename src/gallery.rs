//! STAND-IN for the gallery writer (branch `render` owns the real one).
//!
//! This file exists only on branch `watch` so the watch daemon can be built and
//! tested end to end before the real `src/gallery.rs` lands. It implements exactly
//! the signatures of the gallery contract in the simplest way: a gallery is an
//! `index.html` listing the layers plus `manifest.json`, built in a dot-temp folder
//! and swapped into place. No pictures. Replace it with main's version on merge.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::runfile::{now_rfc3339, sanitize_id, write_atomic, Run};
use crate::{Error, Result};

/// Gallery layout version.
pub const GALLERY_VERSION: u32 = 1;
/// Bumped when pictures change.
pub const RENDERER_VERSION: &str = "1";

/// What a gallery was made from; `watch` reads it to skip finished runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub gallery_version: u32,
    pub renderer_version: String,
    pub source: PathBuf,
    pub source_size: u64,
    pub source_mtime_ns: u128,
    pub run_id: String,
    pub created: String,
    pub model: String,
    pub layers: usize,
    pub rendered_at: String,
    pub render_ms: u64,
    pub status: String,
    pub error: Option<String>,
    pub thumbnail: Option<String>,
}

/// Size and modification time of a run file.
pub struct SourceFacts {
    pub size: u64,
    pub mtime_ns: u128,
}

/// Options of [`render_gallery`] (the real one carries `render: RenderOptions`).
#[derive(Debug, Clone, Default)]
pub struct GalleryOptions {}

/// Size and mtime of `run_path`.
pub fn source_facts(run_path: &Path) -> Result<SourceFacts> {
    let md = std::fs::metadata(run_path).map_err(|e| Error::io(run_path, e))?;
    if !md.is_file() {
        return Err(Error::bad(run_path, "not a regular file"));
    }
    let mtime_ns = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(SourceFacts {
        size: md.len(),
        mtime_ns,
    })
}

/// The gallery folder name of a run file: its sanitized stem.
pub fn gallery_name(run_path: &Path) -> String {
    let stem = run_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    sanitize_id(&stem)
}

/// `out/<gallery_name>`.
pub fn gallery_dir(out: &Path, run_path: &Path) -> PathBuf {
    out.join(gallery_name(run_path))
}

/// The manifest of a gallery folder, if it has a readable one.
pub fn read_manifest(gallery_dir: &Path) -> Option<Manifest> {
    let bytes = std::fs::read(gallery_dir.join("manifest.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Manifest present, same source size + mtime, same renderer version.
pub fn is_up_to_date(out: &Path, run_path: &Path) -> bool {
    let (Ok(f), Some(m)) = (
        source_facts(run_path),
        read_manifest(&gallery_dir(out, run_path)),
    ) else {
        return false;
    };
    m.source_size == f.size
        && m.source_mtime_ns == f.mtime_ns
        && m.renderer_version == RENDERER_VERSION
        && m.gallery_version == GALLERY_VERSION
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn base_manifest(run_path: &Path, facts: &SourceFacts) -> Manifest {
    Manifest {
        gallery_version: GALLERY_VERSION,
        renderer_version: RENDERER_VERSION.into(),
        source: abs(run_path),
        source_size: facts.size,
        source_mtime_ns: facts.mtime_ns,
        run_id: gallery_name(run_path),
        created: String::new(),
        model: String::new(),
        layers: 0,
        rendered_at: now_rfc3339(),
        render_ms: 0,
        status: "ok".into(),
        error: None,
        thumbnail: None,
    }
}

/// Builds a gallery in a dot-temp folder in `out` with `fill`, writes the manifest
/// last, then swaps the folder into place.
fn build(
    out: &Path,
    run_path: &Path,
    fill: impl FnOnce(&Path) -> Result<Manifest>,
) -> Result<Manifest> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let name = gallery_name(run_path);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let tmp = out.join(format!(".tmp-{name}-{pid}-{n}"));
    let old = out.join(format!(".old-{name}-{pid}-{n}"));
    let fin = out.join(&name);
    let res = (|| {
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let m = fill(&tmp)?;
        let json = serde_json::to_vec_pretty(&m).expect("manifest serializes");
        write_atomic(&tmp.join("manifest.json"), &json)?;
        if fin.exists() {
            std::fs::rename(&fin, &old).map_err(|e| Error::io(&fin, e))?;
        }
        std::fs::rename(&tmp, &fin).map_err(|e| Error::io(&fin, e))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(m)
    })();
    if res.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    res
}

/// Renders one run file into `out/<gallery_name>/` (stand-in: a layer list, no pictures).
pub fn render_gallery(run_path: &Path, out: &Path, _opts: &GalleryOptions) -> Result<Manifest> {
    let t0 = Instant::now();
    let facts = source_facts(run_path)?;
    let run = Run::open(run_path)?;
    build(out, run_path, |tmp| {
        let mut html = format!(
            "<!doctype html><meta charset=\"utf-8\"><title>{0}</title><h1>{0}</h1><ol>\n",
            esc(&gallery_name(run_path))
        );
        for l in run.layers() {
            html.push_str(&format!(
                "<li>{} {} {}</li>\n",
                esc(&l.name),
                esc(&l.shape_str()),
                esc(&l.dtype.to_string())
            ));
        }
        html.push_str("</ol>\n");
        write_atomic(&tmp.join("index.html"), html.as_bytes())?;
        let mut m = base_manifest(run_path, &facts);
        m.created = run.info().created.clone();
        m.model = run.info().model.clone();
        m.layers = run.len();
        m.render_ms = t0.elapsed().as_millis() as u64;
        Ok(m)
    })
}

/// An error page gallery for `run_path` (status "error").
pub fn write_error_gallery(run_path: &Path, out: &Path, message: &str) -> Result<Manifest> {
    let facts = source_facts(run_path)?;
    build(out, run_path, |tmp| {
        let html = format!(
            "<!doctype html><meta charset=\"utf-8\"><title>{0}</title><h1>{0}</h1><p class=\"error\">{1}</p>\n",
            esc(&gallery_name(run_path)),
            esc(message)
        );
        write_atomic(&tmp.join("index.html"), html.as_bytes())?;
        let mut m = base_manifest(run_path, &facts);
        m.status = "error".into();
        m.error = Some(message.to_string());
        Ok(m)
    })
}

/// Rewrites `out/index.html` atomically from all manifests, newest first.
pub fn write_index(out: &Path) -> Result<()> {
    let rd = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    let mut ms: Vec<Manifest> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| read_manifest(&e.path()))
        .collect();
    ms.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| b.rendered_at.cmp(&a.rendered_at))
    });
    let mut html = String::from(
        "<!doctype html><meta charset=\"utf-8\"><title>candlelight</title><h1>Runs</h1><ul>\n",
    );
    for m in &ms {
        html.push_str(&format!(
            "<li><a href=\"{0}/index.html\">{0}</a> {1}</li>\n",
            esc(&m.run_id),
            esc(&m.status)
        ));
    }
    html.push_str("</ul>\n");
    write_atomic(&out.join("index.html"), html.as_bytes())
}
