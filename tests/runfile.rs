//! Run files: round trips (proptest), other producers' files, malformed files.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candlelight::{Error, Run};
use proptest::prelude::*;

mod common;

fn tensor_of(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f32) / 10.0 - 50.0)
        .collect();
    let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
    match dtype {
        DType::U8 | DType::U32 | DType::I64 => t.abs().unwrap().to_dtype(dtype).unwrap(),
        _ => t.to_dtype(dtype).unwrap(),
    }
}

fn dtype_strategy() -> impl Strategy<Value = DType> {
    prop::sample::select(vec![
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::U8,
        DType::U32,
        DType::I64,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn save_open_round_trip(
        layers in prop::collection::vec(
            ("[a-z][a-z0-9_.]{0,12}|<é>/\\.\\.", dtype_strategy(), prop::collection::vec(0usize..5, 0..5), any::<u64>()),
            0..8)
    ) {
        let mut seen = std::collections::HashSet::new();
        let entries: Vec<(String, Tensor)> = layers
            .into_iter()
            .filter(|(n, ..)| seen.insert(n.clone()))
            .map(|(n, dt, shape, seed)| (n, tensor_of(dt, &shape, seed)))
            .collect();
        let mut run = Run::from_named_tensors("prop", entries.clone());
        run.set_metadata("user.key", "kept");
        let dir = tempfile::tempdir().unwrap();
        let path = run.save(dir.path()).unwrap();
        let back = Run::open(&path).unwrap();
        prop_assert_eq!(back.info(), run.info());
        prop_assert_eq!(back.metadata().get("user.key").map(String::as_str), Some("kept"));
        prop_assert_eq!(back.len(), entries.len());
        for ((name, t), l) in entries.iter().zip(back.layers()) {
            prop_assert_eq!(&l.name, name);
            prop_assert_eq!(&l.shape, &t.dims().to_vec());
            let got = back.tensor(name).unwrap();
            prop_assert_eq!(got.dtype(), t.dtype());
            let a = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
            let b = got.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
            prop_assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            let f = back.values(name).unwrap();
            prop_assert_eq!(f.len(), a.len());
        }
    }
}

#[test]
fn order_survives_although_safetensors_sorts() -> Result<(), Error> {
    let entries = ["zeta", "alpha", "mid", "Beta"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.to_string(),
                tensor_of(
                    if i % 2 == 0 { DType::F32 } else { DType::F16 },
                    &[2, 3],
                    i as u64,
                ),
            )
        })
        .collect::<Vec<_>>();
    let dir = tempfile::tempdir().unwrap();
    let path = Run::from_named_tensors("order", entries).save(dir.path())?;
    let back = Run::open(&path)?;
    let names: Vec<_> = back.layers().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "mid", "Beta"]);
    // Saving never replaces an existing file, and leaves no temp file behind.
    let again = Run::open(&path)?;
    assert!(again.save(dir.path()).is_err());
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    Ok(())
}

#[test]
fn files_without_candlelight_metadata_are_runs() -> Result<(), Error> {
    let data: HashMap<String, Tensor> = [
        ("b".to_string(), tensor_of(DType::F32, &[3], 1)),
        ("a".to_string(), tensor_of(DType::F32, &[2, 2], 2)),
    ]
    .into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.safetensors");
    candle_core::safetensors::save(&data, &path)?;
    let run = Run::open(&path)?;
    assert_eq!(run.len(), 2);
    assert_eq!(run.id(), "");
    assert_eq!(run.values("a")?.len(), 4);
    Ok(())
}

/// Writes a raw safetensors file: 8-byte header length, header, data.
fn raw(path: &Path, header: &str, data: &[u8], n_override: Option<u64>) {
    let mut b = n_override
        .unwrap_or(header.len() as u64)
        .to_le_bytes()
        .to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

#[test]
fn malformed_files_give_one_line_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good_meta = r#""__metadata__":{"candlelight.version":"1","candlelight.order":"[\"x\"]"}"#;
    type Case<'a> = (&'a str, Box<dyn Fn(&Path)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "empty",
            Box::new(|p: &Path| std::fs::write(p, b"").unwrap()),
            "truncated",
        ),
        (
            "short",
            Box::new(|p: &Path| std::fs::write(p, b"\x05\x00").unwrap()),
            "truncated",
        ),
        (
            "past_end",
            Box::new(|p: &Path| raw(p, "{}", b"", Some(1 << 20))),
            "past the end",
        ),
        (
            "huge_len",
            Box::new(|p: &Path| raw(p, "{}", b"", Some(u64::MAX))),
            "header length",
        ),
        (
            "not_object",
            Box::new(|p: &Path| raw(p, "[1, 2, 3]", b"", None)),
            "JSON object",
        ),
        (
            "bad_utf8",
            Box::new(|p: &Path| {
                let mut b = 4u64.to_le_bytes().to_vec();
                b.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
                std::fs::write(p, b).unwrap();
            }),
            "UTF-8",
        ),
        (
            "offset_out_of_range",
            Box::new(|p: &Path| {
                raw(
                    p,
                    r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                    &[0u8; 4],
                    None,
                )
            }),
            "file size",
        ),
        (
            "overlap",
            Box::new(|p: &Path| {
                raw(
                    p,
                    r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    &[0u8; 12],
                    None,
                )
            }),
            "offsets",
        ),
        (
            "unknown_dtype",
            Box::new(|p: &Path| {
                raw(
                    p,
                    r#"{"x":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#,
                    &[0u8; 8],
                    None,
                )
            }),
            "unknown variant",
        ),
        (
            "shape_disagrees",
            Box::new(|p: &Path| {
                raw(
                    p,
                    r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                    &[0u8; 8],
                    None,
                )
            }),
            "disagrees",
        ),
        (
            "shape_overflow",
            Box::new(|p: &Path| {
                raw(
                    p,
                    r#"{"x":{"dtype":"F32","shape":[18446744073709551615,4],"data_offsets":[0,8]}}"#,
                    &[0u8; 8],
                    None,
                )
            }),
            "overflow",
        ),
        (
            "order_names_missing",
            Box::new(move |p: &Path| {
                raw(
                    p,
                    &format!(
                        r#"{{{good_meta},"y":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}}}"#
                    ),
                    &[0u8; 8],
                    None,
                )
            }),
            "not in the file",
        ),
        (
            "order_not_array",
            Box::new(|p: &Path| {
                raw(
                    p,
                    r#"{"__metadata__":{"candlelight.order":"{}"},"y":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                    &[0u8; 8],
                    None,
                )
            }),
            "JSON array",
        ),
        (
            "run_not_object",
            Box::new(|p: &Path| {
                raw(
                    p,
                    r#"{"__metadata__":{"candlelight.run":"7"},"y":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                    &[0u8; 8],
                    None,
                )
            }),
            "JSON object",
        ),
        (
            "future_version",
            Box::new(|p: &Path| {
                raw(
                    p,
                    r#"{"__metadata__":{"candlelight.version":"9"}}"#,
                    b"",
                    None,
                )
            }),
            "version",
        ),
    ];
    for (name, make, expect) in cases {
        let path = dir.path().join(format!("{name}.safetensors"));
        make(&path);
        let err = Run::open(&path).expect_err(name).to_string();
        assert!(err.contains(&path.display().to_string()), "{name}: {err}");
        assert!(
            err.contains(expect),
            "{name}: expected {expect:?} in {err:?}"
        );
        assert!(!err.contains('\n'), "{name}: not one line: {err:?}");
        // The CLI: exit 2, one line on stderr, no panic.
        #[cfg(feature = "cli")]
        {
            let out = common::cl_code(&["show", path.to_str().unwrap()], dir.path(), 2);
            let e = common::stderr(&out);
            assert!(
                e.starts_with("error: ")
                    && e.trim_end().lines().count() == 1
                    && !e.contains("panicked"),
                "{name}: {e}"
            );
        }
    }
    #[cfg(feature = "cli")]
    {
        let missing = dir.path().join("missing.safetensors");
        let out = common::cl_code(&["show", missing.to_str().unwrap()], dir.path(), 2);
        assert!(common::stderr(&out).contains("missing.safetensors"));
    }
}
