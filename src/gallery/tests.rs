//! Unit tests of the gallery module (names, manifests, ownership checks).

use super::*;
use crate::pages::layer_file_stem;

#[test]
fn names_stay_inside_the_folder() {
    for (input, expect) in [
        ("runs/a.safetensors", "a"),
        ("runs/../../x.safetensors", "x"),
        (
            "runs/20260101-000000-m-00ab.safetensors",
            "20260101-000000-m-00ab",
        ),
    ] {
        assert_eq!(gallery_name(Path::new(input)), expect);
    }
    // Names that need cleaning keep a readable part plus a hash of the original.
    for (input, start) in [
        ("runs/.hidden.safetensors", "_hidden~"),
        ("runs/index.html.safetensors", "index.html~"),
        ("runs/Diffs.safetensors", "Diffs~"),
        ("runs/trends.safetensors", "trends~"),
        ("runs/page-2.html.safetensors", "page-2.html~"),
        ("runs/<script>.safetensors", "-script-~"),
    ] {
        let g = gallery_name(Path::new(input));
        assert!(g.starts_with(start), "{g}");
        assert_eq!(g.len(), start.len() + 16);
    }
    for name in ["../../x", "/etc/passwd", "", "..", "a\0b", "日本"] {
        let s = layer_file_stem(7, name);
        assert!(s.starts_with("007-"));
        assert!(s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
        assert!(!s.contains('/'));
    }
}

#[test]
fn every_run_file_gets_its_own_gallery_folder() {
    let long = "x".repeat(120);
    let names = [
        "a<b".to_string(),
        "a>b".to_string(),
        "a-b".to_string(),
        "a b".to_string(),
        ".a-b".to_string(),
        "_a-b".to_string(),
        format!("{long}1"),
        format!("{long}2"),
        "x".repeat(96),
        "INDEX.HTML".to_string(),
    ];
    let galleries: std::collections::HashSet<String> = names
        .iter()
        .map(|n| gallery_name(Path::new(&format!("runs/{n}.safetensors"))))
        .collect();
    assert_eq!(galleries.len(), names.len(), "{galleries:?}");
    for g in &galleries {
        assert!(!g.starts_with('.') && g.len() <= 97, "{g}");
        assert!(g
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-~".contains(c)));
    }
    // Stable: the same name every time (a restart finds its galleries again).
    assert_eq!(
        gallery_name(Path::new("runs/a<b.safetensors")),
        "a-b~e64db119048f9eb6"
    );
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    let d = diff_dir_name("a-1", "b~0123456789abcdef");
    assert_eq!(split_diff_dir_name(&d), Some(("a-1", "b~0123456789abcdef")));
    assert_eq!(split_diff_dir_name("a-1"), None);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[cfg(unix)]
#[test]
fn non_utf8_names_get_distinct_galleries() {
    use std::os::unix::ffi::OsStrExt;
    let a = Path::new(std::ffi::OsStr::from_bytes(b"runs/a\xff.safetensors"));
    let b = Path::new(std::ffi::OsStr::from_bytes(b"runs/a\xfe.safetensors"));
    assert_ne!(gallery_name(a), gallery_name(b));
}

#[test]
fn nul_and_control_characters_never_reach_a_page() {
    let html = page(
        "error.html",
        context! { name => "n\0x", source => "a\u{1b}[31m", message => "m\u{7}", rendered_at => "" },
    )
    .unwrap();
    assert!(
        !html
            .chars()
            .any(|c| c.is_control() && !"\t\n\r".contains(c)),
        "{html:?}"
    );
    assert!(html.contains("n\u{fffd}x"));
}

#[test]
fn templates_escape_everything() {
    let html = page(
        "error.html",
        context! { name => "n", source => "<b>", message => "\"><script>", rendered_at => "" },
    )
    .unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("<b>"),
        "{html}"
    );
    assert!(html.contains("&lt;script&gt;"));
}
