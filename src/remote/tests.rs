//! Unit tests of `remote` (no server: URLs, keys, local folders).
use super::*;

#[test]
fn credentials_are_redacted() {
    assert_eq!(
        redact("https://user:secret@example.com/a"),
        "https://example.com/a"
    );
    let r = redact("https://acct.blob.core.windows.net/c/r.safetensors?sv=1&sig=SeCrEt");
    assert!(
        !r.contains("SeCrEt") && r.ends_with("r.safetensors?redacted"),
        "{r}"
    );
}

#[test]
fn bad_urls_are_one_line_errors() {
    let e = Remote::parse("ftp://host/x").unwrap_err().to_string();
    assert!(e.contains("unsupported scheme \"ftp\""), "{e}");
    let e = Remote::parse("s3:///x").unwrap_err().to_string();
    assert!(e.contains("no bucket"), "{e}");
}

#[test]
fn keys_join_and_name() {
    let r = Remote::parse("s3://bucket/runs/").unwrap();
    let j = r.join("a/b.safetensors");
    assert_eq!(j.key(), "runs/a/b.safetensors");
    assert_eq!(j.url(), "s3://bucket/runs/a/b.safetensors");
    assert_eq!(j.file_name(), "b.safetensors");
    let root = Remote::parse("s3://bucket").unwrap();
    assert_eq!(root.join("x").url(), "s3://bucket/x");
    // Names are keys as they are (object_store would encode `~` and `%`).
    let odd = r.join("lease/~index.0").join("a%b");
    assert_eq!(odd.key(), "runs/lease/~index.0/a%b");
    assert_eq!(odd.file_name(), "a%b");
    assert_eq!(
        Remote::parse("s3://bucket/runs/a%7E1.safetensors")
            .unwrap()
            .key(),
        "runs/a~1.safetensors"
    );
}

#[test]
fn listed_names_are_the_names_written() {
    let dir = tempfile::tempdir().unwrap();
    let r = Remote::local(dir.path()).unwrap();
    for name in ["x~y.safetensors", "sub/a#b", "plain"] {
        r.join(name).put(b"1".to_vec()).unwrap();
    }
    let names: Vec<String> = r.list().unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["plain", "sub/a#b", "x~y.safetensors"]);
    assert_eq!(
        r.join("x~y.safetensors").get().unwrap(),
        Some(b"1".to_vec())
    );
}
