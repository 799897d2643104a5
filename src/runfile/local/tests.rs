use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use safetensors::{Dtype, SafeTensors, View};

use super::*;
use crate::runfile::summary;

/// A view over owned bytes.
struct Bytes(Dtype, Vec<usize>, Vec<u8>);

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.0
    }
    fn shape(&self) -> &[usize] {
        &self.1
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.2)
    }
    fn data_len(&self) -> usize {
        self.2.len()
    }
}

fn bytes(k: usize, seed: u8) -> Vec<u8> {
    (0..k).map(|i| (i as u8).wrapping_mul(seed)).collect()
}

/// Many small layers, one spanning several buffers (and ending mid-buffer),
/// mixed dtypes, an empty one.
fn layers() -> Vec<(String, Bytes)> {
    let mut layers: Vec<(String, Bytes)> = (0..700)
        .map(|i| {
            let b = Bytes(Dtype::F32, vec![3], bytes(12, i as u8));
            (format!("small.{i}"), b)
        })
        .collect();
    let big = 2 * BUF + 12;
    layers.push((
        "big".into(),
        Bytes(Dtype::F32, vec![big / 4], bytes(big, 7)),
    ));
    layers.push(("ids".into(), Bytes(Dtype::U8, vec![5], bytes(5, 3))));
    layers.push(("half".into(), Bytes(Dtype::F16, vec![2], bytes(4, 5))));
    layers.push(("empty".into(), Bytes(Dtype::F32, vec![0, 3], vec![])));
    layers
}

fn views(layers: &[(String, Bytes)]) -> Vec<(&str, &Bytes)> {
    layers.iter().map(|(k, v)| (k.as_str(), v)).collect()
}

/// The summaries JSON keyed by layer name, as `Run` makes it.
fn json_of(layers: &[(String, Bytes)]) -> impl Fn(&[LayerSummary]) -> String + '_ {
    |s: &[LayerSummary]| {
        let by_name: BTreeMap<&str, &LayerSummary> =
            layers.iter().map(|(k, _)| k.as_str()).zip(s).collect();
        summary::to_json(&by_name)
    }
}

/// Writes `layers` with `direct` and returns the file's bytes.
fn write(dir: &Path, layers: &[(String, Bytes)], direct: bool) -> Vec<u8> {
    let path = dir.join(format!("x-{direct}.safetensors"));
    let header: HashMap<String, String> = [("k".to_string(), "v".to_string())].into();
    let known = vec![None; layers.len()];
    write_file(&path, views(layers), known, header, json_of(layers), direct).unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn writes_what_safetensors_writes_with_the_data_page_aligned() {
    let layers = layers();
    let dir = tempfile::tempdir().unwrap();
    let got = write(dir.path(), &layers, true);
    let n = u64::from_le_bytes(got[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + n) % ALIGN, 0, "data starts at a multiple of {ALIGN}");
    let head = std::str::from_utf8(&got[8..8 + n]).unwrap();
    assert!(head.starts_with('{') && head.trim_end().ends_with('}'));

    // The summaries are the layers' own.
    let (_, meta) = SafeTensors::read_metadata(&got).unwrap();
    let user = meta.metadata().as_ref().unwrap();
    let computed: Vec<LayerSummary> = layers
        .iter()
        .map(|(_, b)| LayerSummary::of(&b.2, b.0))
        .collect();
    assert_eq!(user[KEY_LAYERS], json_of(&layers)(&computed));
    // Same tensors and metadata as safetensors writes them, the data section
    // byte for byte.
    let mut header = user.clone();
    assert_eq!(header.remove("k").as_deref(), Some("v"));
    header.insert("k".into(), "v".into());
    let want = safetensors::serialize(views(&layers), Some(header)).unwrap();
    let (wn, want_meta) = SafeTensors::read_metadata(&want).unwrap();
    assert_eq!(got[8 + n..], want[8 + wn..], "data section");
    assert_eq!(meta.metadata(), want_meta.metadata());
    let parsed = SafeTensors::deserialize(&got).unwrap();
    for (name, b) in &layers {
        let t = parsed.tensor(name).unwrap();
        assert_eq!((t.dtype(), t.shape(), t.data()), (b.0, &b.1[..], &b.2[..]));
    }
}

#[test]
fn direct_and_buffered_writes_give_the_same_file() {
    let layers = layers();
    let dir = tempfile::tempdir().unwrap();
    assert!(write(dir.path(), &layers, true) == write(dir.path(), &layers, false));
}

#[test]
fn a_file_system_without_direct_io_gets_buffered_writes() {
    // tmpfs refuses O_DIRECT at open on most kernels: the fallback must serve.
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    let layers = layers();
    let other = tempfile::tempdir().unwrap();
    assert!(write(dir.path(), &layers, true) == write(other.path(), &layers, false));
}

#[test]
fn known_summaries_are_kept_and_a_short_view_is_an_error() {
    let layers = vec![("a".to_string(), Bytes(Dtype::F32, vec![2], bytes(8, 3)))];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.safetensors");
    // A summary from elsewhere (e.g. an older file) is written as it is.
    let given = LayerSummary {
        hash: "xxh3-128:given".into(),
        stats: None,
    };
    let known = vec![Some(given.clone())];
    let json = json_of(&layers);
    write_file(&path, views(&layers), known, HashMap::new(), &json, true).unwrap();
    let got = std::fs::read(&path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&got).unwrap();
    let stored = summary::from_json(&meta.metadata().as_ref().unwrap()[KEY_LAYERS]).unwrap();
    assert_eq!(stored["a"], given);

    // A view whose bytes do not match its declared length.
    struct Short;
    impl View for Short {
        fn dtype(&self) -> Dtype {
            Dtype::F32
        }
        fn shape(&self) -> &[usize] {
            &[4]
        }
        fn data(&self) -> Cow<'_, [u8]> {
            Cow::Owned(vec![0; 8])
        }
        fn data_len(&self) -> usize {
            16
        }
    }
    let json = |_: &[LayerSummary]| "{}".to_string();
    let err = write_file(
        &path,
        vec![("s", Short)],
        vec![None],
        HashMap::new(),
        json,
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("k.safetensors") && err.contains("gave 8 bytes"),
        "{err}"
    );
}
