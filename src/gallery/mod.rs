//! Galleries: a run file rendered into static pages and PNGs on disk.
//!
//! ```text
//! out/
//!   index.html                  every gallery, newest first, with thumbnails
//!   <run-id>/                   gallery_name(run file): its sanitized file stem
//!     index.html                run facts, one card per layer in capture order
//!     layers/NNN-<name>.png     the layer's picture (NNN = capture position)
//!     layers/NNN-<name>.sK.png  the picture of sample K (the first `samples`)
//!     layers/NNN-<name>.hist.png
//!     thumb.png                 small picture for out/index.html
//!     stats.json                per layer: min, max, mean, std, zero fraction, NaN, Inf
//!     manifest.json             source size + mtime, renderer version (written last)
//! ```
//!
//! A gallery is built in a dot folder inside `out` and renamed into place, so no
//! half gallery is ever visible. Pages open from disk: relative links only, no
//! external resource; the run page's inline script (templates/run.js: zoom, values
//! under the pointer, filter, sample selector) only adds to a page that works
//! without it. Every string reaching HTML goes through minijinja's
//! HTML auto-escaping; every name reaching a path is sanitized to `[A-Za-z0-9._-]`.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use candlelight::{gallery, tap, Recorder};
//!
//! let dir = tempfile::tempdir()?;
//! let x = Tensor::arange(-8f32, 8., &Device::Cpu)?.reshape((1, 4, 2, 2))?;
//! let (_, run) = Recorder::new("doc").record(|| tap("x", &x))?;
//! let path = run.save(dir.path().join("runs"))?;
//! let out = dir.path().join("galleries");
//! let m = gallery::render_gallery(&path, &out, &Default::default())?;
//! gallery::write_index(&out)?;
//! assert!(out.join(&m.run_id).join("layers/000-x.png").is_file());
//! assert!(gallery::is_up_to_date(&out, &path));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use minijinja::context;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub(crate) mod bars;
mod card;
mod diffs;
mod index;
mod tile;
mod trend_pics;
mod trends;

pub use index::{write_index, INDEX_PAGE_RUNS};
pub use trends::{trends_page_name, TRENDS_MAX_RUNS};

use crate::pages::page;
use crate::render::RenderOptions;
use crate::runfile::{now_rfc3339, sanitize_id};
use crate::staging::{self, absolute, Kind, Temp};
use crate::{Error, Result, Run};
use card::Card;

/// Version of the gallery layout.
pub const GALLERY_VERSION: u32 = 1;
/// Version of the pictures; bumped when they change, so `watch` renders again.
pub const RENDERER_VERSION: &str = "3";
/// Most samples a gallery shows ([`GalleryOptions::samples`]).
pub const MAX_SAMPLES: usize = 16;

/// Bins of a layer's histogram.
pub const HIST_BINS: usize = 64;
/// Histogram picture size in pixels.
pub const HIST_SIZE: (u32, u32) = (320, 80);
/// Pixel budget of a gallery's thumbnail.
pub const THUMB_PIXELS: usize = 200 * 200;

/// What `watch` reads to know whether a gallery is up to date (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`GALLERY_VERSION`] of the writer.
    pub gallery_version: u32,
    /// [`RENDERER_VERSION`] of the writer.
    pub renderer_version: String,
    /// The run file's path as given (absolute when possible); a path that is not
    /// UTF-8 is stored as `{"lossy": .., "bytes": [..]}`.
    #[serde(with = "crate::runfile::path_json")]
    pub source: PathBuf,
    /// The run file's size in bytes.
    pub source_size: u64,
    /// The run file's mtime, ns since the Unix epoch.
    pub source_mtime_ns: u128,
    /// The run file's inode number (0 where the OS has none; absent in old manifests).
    #[serde(default)]
    pub source_ino: u64,
    /// The run file's ctime (status change), ns since the Unix epoch (0 where the OS
    /// has none; absent in old manifests).
    #[serde(default)]
    pub source_ctime_ns: u128,
    /// Gallery folder name (sanitized file stem).
    pub run_id: String,
    /// The run's `created`, or "" if none.
    pub created: String,
    /// The run's model.
    pub model: String,
    /// Number of layers.
    pub layers: usize,
    /// When the gallery was written, RFC 3339.
    pub rendered_at: String,
    /// Time taken to render, in milliseconds.
    pub render_ms: u64,
    /// `"ok"` or `"error"`.
    pub status: String,
    /// The one-line error when `status == "error"`.
    pub error: Option<String>,
    /// Relative path of the thumbnail inside the gallery folder.
    pub thumbnail: Option<String>,
    /// One line for the index card: the last `[N, classes]` layer's prediction and
    /// the run's `label` tag (`predicted 3 (0.981) ✓ · label 3`). Added later:
    /// absent in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The run's tags (a numeric `step` orders the model's trends page). Added
    /// later: absent in older manifests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// Options of a gallery.
#[derive(Debug, Clone)]
pub struct GalleryOptions {
    /// How each layer's picture is drawn (sample, scale, colormap, budget).
    /// `render.sample` is the sample shown first (`layers/NNN-<name>.png`).
    pub render: RenderOptions,
    /// The run page also shows samples `0..samples` (of the layers that have them;
    /// `layers/NNN-<name>.sS.png`) with a selector; 1 ..= [`MAX_SAMPLES`]
    /// (clamped), default 4.
    pub samples: usize,
}

impl Default for GalleryOptions {
    fn default() -> Self {
        GalleryOptions {
            render: RenderOptions::default(),
            samples: 4,
        }
    }
}

/// What tells one version of a run file from the next: size, mtime, inode and
/// ctime (a file replaced by another of the same size and mtime has a new inode or
/// ctime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceFacts {
    /// Bytes.
    pub size: u64,
    /// mtime, ns since the Unix epoch.
    pub mtime_ns: u128,
    /// Inode number (0 where the OS has none).
    pub ino: u64,
    /// ctime, ns since the Unix epoch (0 where the OS has none).
    pub ctime_ns: u128,
}

/// The facts of `run_path` (following symlinks). A path that is not a regular file
/// is an error naming what it is.
pub fn source_facts(run_path: &Path) -> Result<SourceFacts> {
    let md = std::fs::metadata(run_path).map_err(|e| Error::io(run_path, e))?;
    if !md.is_file() {
        return Err(Error::bad(
            run_path,
            format!("not a regular file ({})", crate::staging::file_kind(&md)),
        ));
    }
    let mtime_ns = md
        .modified()
        .map_err(|e| Error::io(run_path, e))?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    #[cfg(unix)]
    let (ino, ctime_ns) = {
        use std::os::unix::fs::MetadataExt;
        let ctime = md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128;
        (md.ino(), ctime.max(0) as u128)
    };
    #[cfg(not(unix))]
    let (ino, ctime_ns) = (0, 0);
    Ok(SourceFacts {
        size: md.len(),
        mtime_ns,
        ino,
        ctime_ns,
    })
}

impl Manifest {
    /// A manifest for the gallery `name` of `run_path` with these facts, rendered
    /// now with status `status`; the run's own facts (model, layers, ...) empty.
    fn new(run_path: &Path, facts: SourceFacts, name: &str, status: &str) -> Manifest {
        Manifest {
            gallery_version: GALLERY_VERSION,
            renderer_version: RENDERER_VERSION.to_string(),
            source: absolute(run_path),
            source_size: facts.size,
            source_mtime_ns: facts.mtime_ns,
            source_ino: facts.ino,
            source_ctime_ns: facts.ctime_ns,
            run_id: name.to_string(),
            created: String::new(),
            model: String::new(),
            layers: 0,
            rendered_at: now_rfc3339(),
            render_ms: 0,
            status: status.to_string(),
            error: None,
            thumbnail: None,
            summary: None,
            tags: BTreeMap::new(),
        }
    }

    /// True when this gallery was made by this renderer from `run_path` as it is
    /// now (`facts`): see [`is_up_to_date`].
    pub fn is_current(&self, run_path: &Path, facts: SourceFacts) -> bool {
        self.gallery_version == GALLERY_VERSION
            && self.renderer_version == RENDERER_VERSION
            && self.source_facts() == facts
            && self.source == absolute(run_path)
    }

    /// The facts of the run file this gallery was made from.
    pub fn source_facts(&self) -> SourceFacts {
        SourceFacts {
            size: self.source_size,
            mtime_ns: self.source_mtime_ns,
            ino: self.source_ino,
            ctime_ns: self.source_ctime_ns,
        }
    }
}

/// The gallery folder name of a run file: its file stem when that is already made
/// of `[A-Za-z0-9._-]` (at most 96 characters, not starting with '.', not
/// `index.html`); otherwise the stem sanitized and cut to 80 characters plus `~` and
/// 16 hex digits of a hash of the stem's bytes, so two run files never share a
/// gallery and the name is the same on every start. Clean names never contain `~`.
pub fn gallery_name(run_path: &Path) -> String {
    safe_name(run_path.file_stem().unwrap_or_default())
}

/// [`gallery_name`]'s rule for any name (also trends pages' file stems).
fn safe_name(stem: &std::ffi::OsStr) -> String {
    let text = stem.to_string_lossy();
    let clean = sanitize_id(&text);
    let lossless = clean == text && !is_reserved(&clean);
    if lossless {
        return clean;
    }
    let short: String = clean.chars().take(80).collect();
    format!("{short}~{:016x}", fnv1a(stem.as_encoded_bytes()))
}

/// Folder of the diff galleries inside a galleries root: `out/diffs/<A>~vs~<B>/`
/// (see [`diff_dir_name`]). No run's gallery is ever called this.
pub const DIFFS_DIR: &str = "diffs";
/// Folder of the across-runs pages inside a galleries root (`out/trends/`). No
/// run's gallery is ever called this.
pub const TRENDS_DIR: &str = "trends";

/// Names in a galleries root that belong to candlelight's own pages: a run file
/// with such a stem gets a hashed gallery name instead. Also every name ending in
/// `.html` (index pages).
fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [DIFFS_DIR, TRENDS_DIR, "assets", "_"].contains(&lower.as_str()) || lower.ends_with(".html")
}

/// The folder name (inside `out/`[`DIFFS_DIR`]) of the diff gallery of the runs
/// whose galleries are `a` and `b` ([`gallery_name`]s): `<a>~vs~<b>`. Gallery names
/// never contain `~vs~`, so the pair can be read back with [`split_diff_dir_name`].
pub fn diff_dir_name(a: &str, b: &str) -> String {
    format!("{a}~vs~{b}")
}

/// The two gallery names of a [`diff_dir_name`], if it is one.
pub fn split_diff_dir_name(name: &str) -> Option<(&str, &str)> {
    let (a, b) = name.split_once("~vs~")?;
    (!a.is_empty() && !b.is_empty() && !b.contains("~vs~")).then_some((a, b))
}

/// FNV-1a, 64 bits: a hash that never changes between builds or platforms.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `out.join(gallery_name(run_path))`.
pub fn gallery_dir(out: &Path, run_path: &Path) -> PathBuf {
    out.join(gallery_name(run_path))
}

/// The manifest of the gallery in `gallery_dir`, if there is a readable one.
pub fn read_manifest(gallery_dir: &Path) -> Option<Manifest> {
    // Never blocks on a FIFO planted as a manifest; manifests are small.
    let bytes = crate::staging::read_regular(&gallery_dir.join("manifest.json"), 16 << 20).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The galleries in `out`: `(folder name, manifest)` of every folder that is not a
/// dot folder and holds a readable manifest, in no particular order.
pub fn list_galleries(out: &Path) -> Result<Vec<(String, Manifest)>> {
    let rd = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    let dirs: Vec<std::fs::DirEntry> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .collect();
    Ok(dirs
        .into_par_iter()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let m = (!name.starts_with('.')).then(|| read_manifest(&e.path()))??;
            Some((name, m))
        })
        .collect())
}

/// Up to date = manifest present, made from this very file (same path, size, mtime,
/// inode and ctime), same renderer version. An error manifest for the same facts
/// counts as up to date (error pages are only written for bad run files).
pub fn is_up_to_date(out: &Path, run_path: &Path) -> bool {
    let (Some(m), Ok(f)) = (
        read_manifest(&gallery_dir(out, run_path)),
        source_facts(run_path),
    ) else {
        return false;
    };
    m.is_current(run_path, f)
}

/// Whether `target` may be replaced or removed by candlelight: it does not exist,
/// or it is a gallery folder of ours (a readable `manifest.json` written by
/// candlelight). Anything else is an error naming it.
pub fn check_replaceable(target: &Path) -> Result<()> {
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(target, e)),
        Ok(m) if m.is_dir() && read_manifest(target).is_some() => Ok(()),
        Ok(_) => Err(Error::NotOurs {
            path: target.to_path_buf(),
            msg: "exists and is not a gallery written by candlelight (no manifest.json); not replacing it".into(),
        }),
    }
}

/// Removes the gallery of `run_path` from `out` when it is ours and was made from
/// that very path (its manifest's `source`); returns whether it did. A folder that
/// is not such a gallery is left alone. The folder is first renamed into a locked
/// trash folder, so no half-removed gallery is ever visible under its name.
pub fn remove_gallery(out: &Path, run_path: &Path) -> Result<bool> {
    let target = gallery_dir(out, run_path);
    match read_manifest(&target) {
        Some(m) if m.source == absolute(run_path) => {}
        _ => return Ok(false),
    }
    check_replaceable(&target)?;
    let trash = Temp::dir(out, Kind::Trash)?;
    let old = trash.path().join("old");
    std::fs::rename(&target, &old).map_err(|e| Error::io(&target, e))?;
    staging::sync_dir(out);
    drop(trash);
    Ok(true)
}

pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// One layer's card on the run page (also one entry of stats.json).
/// Renders one run file into `out/<gallery_name>/`: built in a staging folder
/// inside `out`, then swapped into place (no half gallery is ever visible); writes
/// manifest.json last inside the staging folder. Refuses to replace a folder that is
/// not a gallery of ours ([`check_replaceable`]). Does NOT rewrite `out/index.html`
/// (call [`write_index`]).
pub fn render_gallery(run_path: &Path, out: &Path, opts: &GalleryOptions) -> Result<Manifest> {
    #[cfg(feature = "remote")]
    if let Some(url) = run_path.to_str().filter(|s| crate::location::is_url(s)) {
        if let Some(local) = crate::location::file_url_path(url) {
            return render_gallery(Path::new(local), out, opts);
        }
        // Fetched whole (one streamed GET) into a staging folder of `out`, rendered
        // from there; the manifest names the URL.
        let remote = crate::remote::Remote::parse(url)?;
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let fetched = Temp::dir(out, Kind::Stage)?;
        let local = fetched.path().join(remote.file_name());
        remote.download(&local)?;
        return render_downloaded(&local, url, out, opts);
    }
    render_from(run_path, run_path, source_facts(run_path)?, out, opts)
}

/// [`render_gallery`] of a run fetched from `source` (a URL) into the local file
/// `local`: the gallery and its manifest name `source`, and so do errors.
pub fn render_downloaded(
    local: &Path,
    source: &str,
    out: &Path,
    opts: &GalleryOptions,
) -> Result<Manifest> {
    let facts = SourceFacts {
        size: std::fs::metadata(local)
            .map_err(|e| Error::io(local, e))?
            .len(),
        mtime_ns: 0,
        ino: 0,
        ctime_ns: 0,
    };
    let source = Path::new(source);
    render_from(local, source, facts, out, opts).map_err(|e| e.renamed(local, source))
}

/// [`render_gallery`] of the run file at `local`, named `source` in the gallery.
fn render_from(
    local: &Path,
    run_path: &Path,
    facts: SourceFacts,
    out: &Path,
    opts: &GalleryOptions,
) -> Result<Manifest> {
    let t0 = Instant::now();
    let run = Run::open(local)?;
    let name = gallery_name(run_path);
    let target = out.join(&name);
    check_replaceable(&target)?;
    let mut staging = Temp::dir(out, Kind::Stage)?;
    let dir = staging.path().to_path_buf();
    let layers_dir = dir.join("layers");
    std::fs::create_dir(&layers_dir).map_err(|e| Error::io(&layers_dir, e))?;

    let most = run
        .layers()
        .iter()
        .map(|l| card::shown_samples(opts, &l.shape).len())
        .max()
        .unwrap_or(1);
    let budget = tile::layer_budget(run.len(), most);
    let cards: Vec<Card> = run
        .layers()
        .par_iter()
        .map(|l| card::render_card(&run, l, &dir, opts, budget))
        .collect::<Result<_>>()?;
    let thumbnail = card::thumbnail(&run, &cards, &dir, opts)?;
    write(
        &dir.join("stats.json"),
        &card::stats_json(&run, &cards, &name)?,
    )?;
    let mut manifest = Manifest::new(run_path, facts, &name, "ok");
    let info = run.info();
    manifest.created = info.created.clone();
    manifest.model = info.model.clone();
    manifest.layers = run.len();
    manifest.thumbnail = thumbnail;
    let last_bars = cards.iter().rev().find_map(|c| c.bars.as_ref());
    manifest.summary = bars::summary(last_bars, &info.tags);
    manifest.tags = info.tags.clone();
    let html = card::run_page(&run, &cards, &manifest, opts)?;
    write(&dir.join("index.html"), html.as_bytes())?;
    manifest.render_ms = t0.elapsed().as_millis() as u64;
    write_manifest(&dir, &manifest)?;
    check_replaceable(&target)?;
    staging::replace_dir(&mut staging, &target)?;
    Ok(manifest)
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let path = dir.join("manifest.json");
    let bytes = serde_json::to_vec_pretty(m)
        .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    // Inside the staging folder nothing is visible until the folder is swapped in:
    // a plain write, synced so the manifest is on disk before the swap.
    let res = std::fs::File::create(&path).and_then(|mut f| {
        std::io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()
    });
    res.map_err(|e| Error::io(&path, e))
}

/// Same swap-into-place as [`render_gallery`], but the gallery is an error page
/// (index.html with the escaped message) + a manifest with status "error".
pub fn write_error_gallery(run_path: &Path, out: &Path, message: &str) -> Result<Manifest> {
    let facts = source_facts(run_path).unwrap_or(SourceFacts {
        size: 0,
        mtime_ns: 0,
        ino: 0,
        ctime_ns: 0,
    });
    let name = gallery_name(run_path);
    let message = message.replace(['\n', '\r'], " ");
    let target = out.join(&name);
    check_replaceable(&target)?;
    let mut staging = Temp::dir(out, Kind::Stage)?;
    let rendered_at = now_rfc3339();
    let html = page(
        "error.html",
        context! {
            name => &name,
            source => absolute(run_path).display().to_string(),
            message => &message,
            rendered_at => &rendered_at,
        },
    )?;
    write(&staging.path().join("index.html"), html.as_bytes())?;
    let mut manifest = Manifest::new(run_path, facts, &name, "error");
    manifest.rendered_at = rendered_at;
    manifest.error = Some(message);
    write_manifest(staging.path(), &manifest)?;
    check_replaceable(&target)?;
    staging::replace_dir(&mut staging, &target)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any file name: a gallery name that stays in the folder, is not hidden,
        /// is the same every time, and differs for different file names.
        #[test]
        fn gallery_names_are_safe_stable_and_distinct(a in "\\PC{0,120}", b in "\\PC{0,120}") {
            let pa = Path::new("runs").join(format!("{}.safetensors", a.replace('/', "_")));
            let pb = Path::new("runs").join(format!("{}.safetensors", b.replace('/', "_")));
            let (ga, gb) = (gallery_name(&pa), gallery_name(&pb));
            prop_assert!(!ga.is_empty() && !ga.starts_with('.') && ga.len() <= 97, "{ga}");
            prop_assert!(ga.chars().all(|c| c.is_ascii_alphanumeric() || "._-~".contains(c)), "{ga}");
            prop_assert!(!ga.eq_ignore_ascii_case("index.html"));
            prop_assert_eq!(&ga, &gallery_name(&pa));
            if pa.file_stem() != pb.file_stem() {
                prop_assert_ne!(ga, gb);
            }
        }
    }
}
