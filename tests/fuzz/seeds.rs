//! The seed corpus: small real run files written with the library, and one plain
//! safetensors file from "another producer" built by hand.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candlelight::{tap, tap_as, Recorder, Run};
use serde_json::{json, Map, Value};

pub struct Seed {
    pub name: &'static str,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

fn tensor(dtype: DType, shape: &[usize], f: impl Fn(usize) -> f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(f).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn wave(i: usize) -> f32 {
    ((i * 37 % 23) as f32 - 11.0) / 4.0
}

/// Builds the seed runs in `dir`, returns them with their bytes.
pub fn seeds(dir: &Path) -> Vec<Seed> {
    use DType::*;
    let mut out = Vec::new();
    let mut add = |name: &'static str, run: Run| {
        let sub = dir.join(name);
        let path = run.save(&sub).expect("save seed");
        let bytes = normalize(&path, name);
        out.push(Seed { name, path, bytes });
    };

    // A small CNN-like pass, recorded with taps: kinds, tags, user metadata.
    let rec = Recorder::new("fuzz-cnn")
        .input("an 8x8 test pattern")
        .tag("split", "test")
        .tag("note", "<b>tags are text</b>");
    let (_, mut run) = rec
        .record(|| {
            tap_as(
                "input",
                "input",
                &tensor(F32, &[1, 1, 8, 8], |i| (i % 7) as f32 / 7.0),
            )?;
            let conv = tensor(F32, &[1, 4, 6, 6], wave);
            tap_as("conv1", "conv2d", &conv)?;
            tap_as("relu1", "relu", &conv.relu()?)?;
            tap_as("pool1", "max_pool2d", &tensor(F16, &[1, 4, 3, 3], wave))?;
            tap_as("flatten", "flatten", &tensor(BF16, &[1, 36], wave))?;
            tap_as("fc1", "linear", &tensor(F64, &[1, 10], wave))?;
            tap("pred", &tensor(U32, &[1], |_| 3.0))?;
            tap("onehot", &tensor(U8, &[1, 10], |i| (i == 3) as u8 as f32))?;
            tap("indices", &tensor(I64, &[2, 3], |i| i as f32 * 1000.0))?;
            Ok(())
        })
        .expect("record");
    run.set_metadata("user.note", "kept");
    run.set_metadata("framework", "candle");
    add("cnn", run);

    // Every rank 0..=5, zero-size dims, [N,T,D], odd map shapes.
    let mut run = Run::from_named_tensors(
        "fuzz-shapes",
        [
            ("scalar", tensor(F32, &[], |_| 2.5)),
            ("vec", tensor(F16, &[5], wave)),
            ("mat", tensor(BF16, &[2, 3], wave)),
            ("ntd", tensor(F32, &[2, 6, 8], wave)),
            ("ntd.t1", tensor(F32, &[2, 1, 4], wave)),
            ("nchw.h1", tensor(F32, &[1, 3, 1, 4], wave)),
            ("nchw.1x1", tensor(F32, &[1, 6, 1, 1], wave)),
            ("rank5", tensor(F32, &[1, 2, 3, 2, 5], wave)),
            ("rank5.b", tensor(U8, &[2, 1, 2, 3, 2], |i| i as f32)),
            ("empty.2", tensor(F32, &[0, 3], wave)),
            ("empty.4", tensor(F16, &[2, 0, 4, 4], wave)),
            ("empty.1", tensor(U8, &[0], wave)),
            ("int.scalar", tensor(I64, &[], |_| -7.0)),
        ]
        .map(|(n, t)| (n.to_string(), t)),
    );
    run.set_metadata("shapes", "all ranks");
    add("shapes", run);

    // Awkward values: NaN, ±Inf, extremes, subnormals, constants, all zeros.
    let special = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        1e-45,
        -0.0,
        0.0,
        1.0,
        -1e30,
    ];
    let sp = move |i: usize| special[i % special.len()];
    let run = Run::from_named_tensors(
        "fuzz-values",
        [
            ("special.f32", tensor(F32, &[1, 2, 5, 5], sp)),
            ("special.f16", tensor(F16, &[1, 2, 5, 5], sp)),
            ("special.bf16", tensor(BF16, &[3, 10], sp)),
            ("special.f64", tensor(F64, &[10], sp)),
            ("constant", tensor(F32, &[1, 2, 4, 4], |_| 7.0)),
            ("zeros", tensor(F32, &[1, 3, 4, 4], |_| 0.0)),
            (
                "tiny.range",
                tensor(F32, &[1, 8], |i| 1.0 + i as f32 * 1e-7),
            ),
            ("seq", tensor(F32, &[1, 16, 4], wave)),
        ]
        .map(|(n, t)| (n.to_string(), t)),
    );
    add("values", run);

    // A run with no layer at all.
    add(
        "empty-run",
        Run::from_named_tensors("fuzz-empty", Vec::<(String, Tensor)>::new()),
    );

    // Another producer: plain safetensors, no candlelight metadata, file order
    // unlike name order, dtypes candle does not load.
    let path = dir.join("foreign").join("foreign.safetensors");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes = foreign_file();
    std::fs::write(&path, &bytes).unwrap();
    out.push(Seed {
        name: "foreign",
        path,
        bytes,
    });
    out
}

fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// Builds safetensors bytes by hand: tensors in the given (file) order.
fn safetensors_bytes(
    tensors: &[(&str, &str, Vec<usize>, Vec<u8>)],
    meta: Option<Value>,
) -> Vec<u8> {
    let mut header = Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let s = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [s, data.len()]}),
        );
    }
    if let Some(m) = meta {
        header.insert("__metadata__".into(), m);
    }
    with_header(&header, &data)
}

/// Header length, the header padded with spaces to 8 bytes (as safetensors does), data.
fn with_header(header: &Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let mut text = serde_json::to_string(header).unwrap();
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Rewrites a saved run with a fixed id and creation time, and its header keys in a
/// fixed order (the library writes fresh ids, and metadata in `HashMap` order), so
/// the seeds, and therefore every case, are the same bytes in every process.
fn normalize(path: &Path, name: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    if let Some(Value::String(run)) = header
        .get_mut("__metadata__")
        .and_then(|m| m.get_mut("candlelight.run"))
    {
        let mut info: Map<String, Value> = serde_json::from_str(run).unwrap();
        info.insert("id".into(), json!(format!("fuzz-{name}")));
        info.insert("created".into(), json!("2025-01-01T00:00:00Z"));
        *run = Value::Object(info).to_string();
    }
    let out = with_header(&header, &bytes[8 + n..]);
    std::fs::write(path, &out).unwrap();
    out
}

fn foreign_file() -> Vec<u8> {
    let tensors = [
        (
            "model.layers.0.weight",
            "F32",
            vec![2, 3],
            le(&[0.5f32, -1.0, 2.0, 3.5, -0.25, 8.0], f32::to_le_bytes),
        ),
        ("bias", "I32", vec![3], le(&[-3i32, 0, 7], i32::to_le_bytes)),
        ("mask", "BOOL", vec![4], vec![1, 0, 1, 1]),
        (
            "tokens",
            "U16",
            vec![2, 2],
            le(&[1u16, 500, 65535, 0], u16::to_le_bytes),
        ),
        ("q", "I8", vec![5], vec![0x80, 0xff, 0, 1, 0x7f]),
        ("big", "U64", vec![2], le(&[u64::MAX, 1], u64::to_le_bytes)),
        (
            "s",
            "I16",
            vec![3],
            le(&[i16::MIN, 0, i16::MAX], i16::to_le_bytes),
        ),
        (
            "h",
            "F16",
            vec![1, 2, 2, 2],
            le(
                &[0x3c00u16, 0x7c00, 0x7e00, 0x0001, 0xfbff, 0, 0x8000, 0x4000],
                u16::to_le_bytes,
            ),
        ),
    ];
    safetensors_bytes(&tensors, Some(json!({"format": "pt"})))
}
