//! Pages: the one template environment of the crate (every template under
//! `src/templates/`, full pages extending `base.html`), number formatting, and the
//! generator mark that proves a page is candlelight's.
//!
//! Every value reaching a page is HTML-escaped whatever the template's name, and
//! control characters (NUL included) are shown as U+FFFD. Undefined values are
//! errors, so a template typo fails the tests instead of rendering blank.

use std::path::Path;
use std::sync::OnceLock;

use minijinja::Environment;

use crate::runfile::sanitize_id;
use crate::{Error, Result};

/// The mark every page candlelight writes carries in its `<head>`; `what` tells the
/// kind of page (`index`, `run`, `error`, `diff`, `trends`).
pub fn generator_mark(what: &str) -> String {
    format!("<meta name=\"generator\" content=\"candlelight {what}\">")
}

/// Whether `page` may be replaced: missing, or a regular file (of at most a few MB)
/// carrying our generator mark for `what` (or, for the top index, the title of
/// earlier candlelight versions).
pub fn check_page_replaceable(page: &Path, what: &str) -> Result<()> {
    let md = match std::fs::symlink_metadata(page) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(page, e)),
        Ok(m) => m,
    };
    // The mark is in the page's head: read its first 4 KiB only.
    let head = || -> Option<Vec<u8>> {
        use std::io::Read;
        let mut b = Vec::with_capacity(4096);
        let f = crate::staging::open_regular(page).ok()?;
        f.take(4096).read_to_end(&mut b).ok()?;
        Some(b)
    };
    let ours = md.is_file()
        && head().is_some_and(|b| {
            let text = String::from_utf8_lossy(&b);
            text.contains(&generator_mark(what))
                // Pages of candlelight versions before the mark.
                || (what == "index" && text.contains("<title>candlelight galleries</title>"))
                || (what == "diff"
                    && text.contains("<title>diff: ")
                    && page.with_file_name("diff.json").is_file())
        });
    if ours {
        Ok(())
    } else {
        Err(Error::NotOurs {
            path: page.to_path_buf(),
            msg: format!(
                "exists and was not written by candlelight (not its {what} page); not replacing it"
            ),
        })
    }
}

/// A number in at most 10 characters, fixed or scientific as fits ("-" for NaN).
pub fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

/// Bytes as `12.3 MB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The one template environment of the crate (gallery, diff gallery and notebook
/// pages): HTML auto-escaping whatever the name, undefined values are errors.
fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Every page is HTML: escape whatever the template name.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        // Control characters (NUL included) never reach a page: shown as U+FFFD.
        env.set_formatter(|out, state, value| match value.as_str() {
            Some(s) if s.chars().any(is_unprintable) => {
                let clean: String = s
                    .chars()
                    .map(|c| if is_unprintable(c) { '\u{fffd}' } else { c })
                    .collect();
                minijinja::escape_formatter(out, state, &minijinja::Value::from(clean))
            }
            _ => minijinja::escape_formatter(out, state, value),
        });
        for (name, src) in [
            ("base.html", include_str!("templates/base.html")),
            ("style.css", include_str!("templates/style.css")),
            ("run.html", include_str!("templates/run.html")),
            ("run.js", include_str!("templates/run.js")),
            ("run.css", include_str!("templates/run.css")),
            ("error.html", include_str!("templates/error.html")),
            ("index.html", include_str!("templates/index.html")),
            ("trends.html", include_str!("templates/trends.html")),
            ("diff.html", include_str!("templates/diff.html")),
            ("nb_run.html", include_str!("templates/nb_run.html")),
            ("nb_layer.html", include_str!("templates/nb_layer.html")),
            ("nb_diff.html", include_str!("templates/nb_diff.html")),
            ("nb_gallery.html", include_str!("templates/nb_gallery.html")),
        ] {
            env.add_template(name, src)
                .expect("bundled template parses");
        }
        env
    })
}

/// Control characters other than tab, newline and carriage return.
fn is_unprintable(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// Renders a bundled template.
pub(crate) fn page(template: &str, ctx: minijinja::Value) -> Result<String> {
    env()
        .get_template(template)
        .and_then(|t| t.render(ctx))
        .map_err(|e| Error::internal(format!("template {template}: {e:#}")))
}

/// The file stem of layer `index` named `name` inside `layers/`: `NNN-<sanitized name>`.
pub fn layer_file_stem(index: usize, name: &str) -> String {
    let clean: String = sanitize_id(name).chars().take(80).collect();
    format!("{index:03}-{clean}")
}
