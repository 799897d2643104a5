//! Where a run or a folder is: a local path, or a URL (`file://`, and with the
//! `remote` feature `s3://`, `gs://`, `az://`, `https://`). Every command and
//! `Run::open` / `Run::save` take either; a path that only looks like a URL can
//! be written `./s3:/...`.

/// True when `s` is written as a URL (`scheme://...`), which candlelight opens
/// through `file://` or an object store rather than as a relative path.
pub fn is_url(s: &str) -> bool {
    match s.split_once("://") {
        Some((scheme, _)) => {
            scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// `s` as a URL of the local file system (`file:///x` → `/x`), if it is one.
pub fn file_url_path(s: &str) -> Option<&str> {
    s.strip_prefix("file://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("s3://b/k.safetensors"));
        assert!(is_url("file:///tmp/x"));
        assert!(!is_url("runs/a.safetensors"));
        assert!(!is_url("/tmp/s3:/x"));
        assert!(!is_url("./s3://x"));
        assert!(!is_url("://x"));
        assert_eq!(file_url_path("file:///tmp/x"), Some("/tmp/x"));
    }
}
