//! Static files of the root, refused outside it; scripts injected into the index
//! and run pages; the index stamp.

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{blocking, fail, fail_now, AppState, Fail};

/// Largest file served (pictures are a few MB; anything this big is not a page).
const MAX_FILE: u64 = 512 << 20;

const INDEX_JS: &str = include_str!("index.js");
const RUN_JS: &str = include_str!("run.js");

/// The path segments of a request path, percent-decoded; `Err` with a status for a
/// path that tries to leave the root or names a dot file. A trailing `/` gives a
/// last empty segment.
pub(super) fn segments(raw: &str) -> Result<Vec<String>, StatusCode> {
    let rest = raw.strip_prefix('/').ok_or(StatusCode::BAD_REQUEST)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let last = parts.len() - 1;
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let bytes = percent_decode(p).ok_or(StatusCode::BAD_REQUEST)?;
        let s = String::from_utf8(bytes).map_err(|_| StatusCode::NOT_FOUND)?;
        if s.is_empty() && i != last {
            return Err(StatusCode::FORBIDDEN); // `//`: an absolute path
        }
        if s == "." || s == ".." || s.contains(['/', '\\', '\0']) {
            return Err(StatusCode::FORBIDDEN);
        }
        if s.starts_with('.') {
            return Err(StatusCode::NOT_FOUND); // dot files, staging temporaries
        }
        out.push(s);
    }
    Ok(out)
}

/// `%XX` decoded; `None` for a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The content type of a file name.
pub(super) fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// What a request resolved to.
enum Found {
    /// A regular file inside the root, and what to inject into it.
    File(PathBuf, Inject),
    /// A folder asked for without its trailing `/`.
    Folder,
}

/// Which script a served page gets.
#[derive(Clone, PartialEq)]
enum Inject {
    None,
    Index,
    Run(String),
}

/// Resolves `segs` inside `root` (canonical): refuses what leads outside it
/// (symlinks included) and anything but a regular file or a folder's `index.html`.
fn resolve(root: &Path, segs: &[String]) -> Result<Found, StatusCode> {
    let mut segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let dir_request = segs.last().is_some_and(|s| s.is_empty());
    if dir_request {
        segs.pop();
    }
    let path = segs.iter().fold(root.to_path_buf(), |p, s| p.join(s));
    let real = std::fs::canonicalize(&path).map_err(|_| StatusCode::NOT_FOUND)?;
    if !real.starts_with(root) {
        return Err(StatusCode::FORBIDDEN);
    }
    let md = std::fs::metadata(&real).map_err(|_| StatusCode::NOT_FOUND)?;
    let (file, segs) = if md.is_dir() {
        if !dir_request && !segs.is_empty() {
            return Ok(Found::Folder);
        }
        let page = real.join("index.html");
        let mut s = segs.clone();
        s.push("index.html");
        (page, s)
    } else if dir_request {
        return Err(StatusCode::NOT_FOUND);
    } else {
        (real, segs.clone())
    };
    let inject = match segs.as_slice() {
        ["index.html"] => Inject::Index,
        [g, "index.html"] if root.join(g).join("manifest.json").is_file() => {
            Inject::Run(g.to_string())
        }
        _ => Inject::None,
    };
    Ok(Found::File(file, inject))
}

/// Any path of the root.
pub(super) async fn static_file(State(s): State<AppState>, method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return fail_now(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
    }
    let raw = uri.path().to_string();
    let segs = match segments(&raw) {
        Ok(s) => s,
        Err(code) => return fail_now(code, format!("{raw}: refused")),
    };
    let root = s.root.clone();
    let found = blocking(move || {
        let found = resolve(&root, &segs).map_err(|c| fail(c, format!("{raw}: not found")))?;
        match found {
            Found::Folder => Ok(Err(format!("{raw}/"))),
            Found::File(path, inject) => read(&path, inject).map(Ok),
        }
    })
    .await;
    match found {
        Ok(Ok(resp)) => resp,
        Ok(Err(location)) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(f) => f.into_response(),
    }
}

/// The file's bytes as a response (a page with its script).
fn read(path: &Path, inject: Inject) -> Result<Response, Fail> {
    let bytes = crate::staging::read_regular(path, MAX_FILE).map_err(|e| match e {
        crate::Error::Io { .. } => fail(StatusCode::NOT_FOUND, "not found"),
        _ => fail(StatusCode::NOT_FOUND, "not a regular file"),
    })?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let body = match inject {
        Inject::None => bytes,
        Inject::Index => with_script(bytes, &script_tag(INDEX_JS, None)),
        Inject::Run(g) => with_script(bytes, &script_tag(RUN_JS, Some(&g))),
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&name)),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response())
}

/// `<script>` holding `js`, with the gallery name (HTML-escaped) as `data-gallery`.
fn script_tag(js: &str, gallery: Option<&str>) -> String {
    let attr = gallery
        .map(|g| format!(" data-gallery=\"{}\"", html_escape(g)))
        .unwrap_or_default();
    format!("<script id=\"cl-serve\"{attr}>\n{js}</script>\n")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
}

/// `page` with `tag` before its last `</body>` (or at the end).
pub(super) fn with_script(mut page: Vec<u8>, tag: &str) -> Vec<u8> {
    let at = page
        .windows(7)
        .rposition(|w| w.eq_ignore_ascii_case(b"</body>"))
        .unwrap_or(page.len());
    page.splice(at..at, tag.bytes());
    page
}

/// `GET /_/stamp`: mtime, size and inode of `ROOT/index.html` ("none" without one).
pub(super) async fn stamp(State(s): State<AppState>) -> Response {
    let index = s.root.join("index.html");
    let token = match std::fs::metadata(&index) {
        Ok(md) => {
            let mtime = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            #[cfg(unix)]
            let ino = std::os::unix::fs::MetadataExt::ino(&md);
            #[cfg(not(unix))]
            let ino = 0;
            format!("{mtime}-{}-{ino}", md.len())
        }
        Err(_) => "none".to_string(),
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        token,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_refuse_leaving_the_root_and_dot_files() {
        assert_eq!(segments("/").unwrap(), vec![""]);
        assert_eq!(segments("/a/b.png").unwrap(), vec!["a", "b.png"]);
        assert_eq!(segments("/a%20b/").unwrap(), vec!["a b", ""]);
        for bad in [
            "/../x",
            "/a/..",
            "/%2e%2e/x",
            "/%2E%2E",
            "/a%2fb",
            "/a%5cb",
            "//etc",
            "/a/./b",
        ] {
            assert_eq!(segments(bad), Err(StatusCode::FORBIDDEN), "{bad}");
        }
        assert_eq!(segments("/.git/config"), Err(StatusCode::NOT_FOUND));
        assert_eq!(
            segments("/a/.candlelight-stage-1"),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(segments("/%zz"), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn scripts_go_before_the_last_body_end() {
        let page = b"<html><body>x</body></html>".to_vec();
        let out = with_script(page, "<script></script>");
        assert_eq!(out, b"<html><body>x<script></script></body></html>");
        assert_eq!(with_script(b"x".to_vec(), "s"), b"xs");
        assert_eq!(content_type("a.PNG"), "image/png");
        assert_eq!(html_escape("a\"<"), "a&quot;&lt;");
    }
}
