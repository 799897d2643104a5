//! `out/index.html`: every gallery in `out`, newest first, with thumbnails.

use std::path::Path;

use minijinja::context;
use serde::Serialize;

use super::list_galleries;
use crate::pages::{check_page_replaceable, page};
use crate::runfile::now_rfc3339;
use crate::staging::write_atomic;
use crate::{Error, Result};

/// Percent-encodes everything but `[A-Za-z0-9._~-]` (one path segment of a link).
fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._-~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Serialize)]
struct IndexEntry {
    name: String,
    href: String,
    thumb: Option<String>,
    model: String,
    created: String,
    layers: usize,
    rendered_at: String,
    render_ms: u64,
    source: String,
    summary: Option<String>,
    error: Option<String>,
}

/// Rewrites `out/index.html` atomically from all manifests found in
/// `out/*/manifest.json`, newest first (by `created`, then `rendered_at`), with
/// thumbnails; ignores dot folders.
pub fn write_index(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut found = list_galleries(out)?;
    found.sort_by(|a, b| {
        (&b.1.created, &b.1.rendered_at, &a.0).cmp(&(&a.1.created, &a.1.rendered_at, &b.0))
    });
    let entries: Vec<IndexEntry> = found
        .into_iter()
        .map(|(name, m)| {
            let base = url_segment(&name);
            // A thumbnail path from a manifest is used only if it is a plain relative
            // path inside the gallery that exists.
            let thumb = m.thumbnail.as_deref().and_then(|t| {
                let p = Path::new(t);
                let plain = !t.is_empty()
                    && p.components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                (plain && out.join(&name).join(p).is_file()).then(|| {
                    let segs: Vec<String> = p
                        .components()
                        .map(|c| url_segment(&c.as_os_str().to_string_lossy()))
                        .collect();
                    format!("{base}/{}", segs.join("/"))
                })
            });
            IndexEntry {
                href: format!("{base}/index.html"),
                thumb,
                model: m.model,
                created: m.created,
                layers: m.layers,
                rendered_at: m.rendered_at,
                render_ms: m.render_ms,
                source: m
                    .source
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                summary: m.summary,
                error: (m.status != "ok")
                    .then(|| m.error.unwrap_or_else(|| "unknown error".into())),
                name,
            }
        })
        .collect();
    let html = page(
        "index.html",
        context! { entries => entries, updated => now_rfc3339() },
    )?;
    let index = out.join("index.html");
    check_page_replaceable(&index, "index")?;
    write_atomic(&index, html.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_segments_are_encoded() {
        assert_eq!(url_segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(url_segment("run-1.x_y"), "run-1.x_y");
    }
}
