//! The seeded, deterministic mutator: byte-level damage and structure-aware edits
//! of the parsed safetensors header.

use serde_json::{json, Map, Value};

use crate::seeds::Seed;

/// Repaired layers are at most this big (keeps huge shapes the mutator's idea only).
const MAX_REPAIR: u64 = 512 << 10;

// ---------------------------------------------------------------------------
// Deterministic PRNG (splitmix64).

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn usize(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, s: &'a [T]) -> &'a T {
        &s[self.usize(s.len())]
    }
}

pub fn case_seed(seed: u64, case: u64) -> u64 {
    Rng::new(seed ^ case.wrapping_mul(0xA24B_AED4_963E_E407)).next()
}

// ---------------------------------------------------------------------------

const HUGE: [u64; 10] = [
    1 << 32,
    1 << 40,
    1 << 62,
    1 << 63,
    u64::MAX,
    u64::MAX - 1,
    (usize::MAX / 2 + 1) as u64,
    100_000_000_001,
    u32::MAX as u64,
    (usize::MAX / 4) as u64,
];
const DTYPES: [&str; 20] = [
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",
    "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64",
];
const BAD_DTYPES: [&str; 8] = ["F128", "", "f32", "Q4_0", "F8", "float32", "F32 ", "U1"];
const INTERESTING: [u8; 12] = [
    0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'}', b',', b'[', b'\\', b'9',
];

fn odd_name(rng: &mut Rng) -> String {
    match rng.below(22) {
        0 => "../x".into(),
        1 => "../../../../etc/passwd".into(),
        2 => "/abs/path".into(),
        3 => "a/b/c".into(),
        4 => "a\0b".into(),
        5 => "<script>fuzz</script>".into(),
        6 => "x".repeat(10_000),
        7 => "é—🙂中文".into(),
        8 => String::new(),
        9 => " ".into(),
        10 => "line\nbreak\r".into(),
        11 => ".".into(),
        12 => "..".into(),
        13 => "__metadata__".into(),
        14 => "a\\b".into(),
        15 => "\u{202e}rtl".into(),
        16 => "\"quoted\"".into(),
        17 => "{{ 7*7 }}{% if %}".into(),
        18 => "CON".into(),
        19 => "\u{ffff}\u{1}".into(),
        20 => ".hidden".into(),
        _ => format!("layer.{}", rng.below(1000)),
    }
}

fn huge(rng: &mut Rng) -> u64 {
    *rng.pick(&HUGE)
}

/// A safetensors file split into its header (parsed) and data.
struct Parsed {
    header: Map<String, Value>,
    data: Vec<u8>,
}

fn parse(bytes: &[u8]) -> Option<Parsed> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let end = n.checked_add(8)?;
    let header: Value = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    Some(Parsed {
        header: header.as_object()?.clone(),
        data: bytes[end..].to_vec(),
    })
}

/// Keys of the tensor entries (objects other than `__metadata__`).
fn tensor_names(h: &Map<String, Value>) -> Vec<String> {
    h.iter()
        .filter(|(k, v)| *k != "__metadata__" && v.is_object())
        .map(|(k, _)| k.clone())
        .collect()
}

fn meta(h: &mut Map<String, Value>) -> &mut Map<String, Value> {
    if !h.get("__metadata__").is_some_and(Value::is_object) {
        h.insert("__metadata__".into(), json!({}));
    }
    h.get_mut("__metadata__").unwrap().as_object_mut().unwrap()
}

fn order(h: &Map<String, Value>) -> Option<Vec<String>> {
    let s = h.get("__metadata__")?.get("candlelight.order")?.as_str()?;
    serde_json::from_str(s).ok()
}

fn set_order(h: &mut Map<String, Value>, names: &[String]) {
    meta(h).insert(
        "candlelight.order".into(),
        Value::String(serde_json::to_string(names).unwrap()),
    );
}

fn run_obj(h: &mut Map<String, Value>) -> Map<String, Value> {
    meta(h)
        .get("candlelight.run")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

fn set_run_obj(h: &mut Map<String, Value>, o: Map<String, Value>) {
    meta(h).insert(
        "candlelight.run".into(),
        Value::String(Value::Object(o).to_string()),
    );
}

fn shape_of(v: &Value) -> Option<Vec<u64>> {
    v.get("shape")?
        .as_array()?
        .iter()
        .map(Value::as_u64)
        .collect()
}

fn elem_count(v: &Value) -> Option<u64> {
    shape_of(v)?.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

fn prime_factors(mut n: u64) -> Vec<u64> {
    let mut f = Vec::new();
    let mut p = 2;
    while p * p <= n {
        while n % p == 0 {
            f.push(p);
            n /= p;
        }
        p += 1;
    }
    if n > 1 {
        f.push(n);
    }
    f
}

/// A random shape of `n` elements (any rank when `n` allows, dims of 1 sprinkled in).
fn reshape(rng: &mut Rng, n: u64) -> Vec<u64> {
    let rank = rng.usize(7);
    if n == 0 {
        let mut s: Vec<u64> = (0..rank.max(1))
            .map(|_| {
                if rng.one_in(3) {
                    huge(rng)
                } else {
                    rng.below(5)
                }
            })
            .collect();
        let k = rng.usize(s.len());
        s[k] = 0;
        return s;
    }
    if rank == 0 {
        return if n == 1 { vec![] } else { vec![n] };
    }
    let mut s = vec![1u64; rank];
    for f in prime_factors(n) {
        let k = rng.usize(rank);
        s[k] *= f;
    }
    s
}

/// One structure-aware edit of the parsed header (and sometimes the data).
/// Edits that keep a file valid once re-serialized with repaired offsets (mostly):
/// they reach stats, rendering, diff and galleries with odd but legal runs.
const DEEP_EDITS: [u64; 19] = [
    3, 4, 5, 6, 13, 14, 15, 17, 19, 20, 24, 28, 33, 35, 36, 38, 39, 40, 1,
];

/// One structure-aware edit of the parsed header (and sometimes the data); `deep`
/// picks from [`DEEP_EDITS`] and keeps the order and kinds consistent.
fn edit_json(rng: &mut Rng, p: &mut Parsed, deep: bool) -> String {
    let names = tensor_names(&p.header);
    let name = (!names.is_empty()).then(|| rng.pick(&names).clone());
    let kind = if deep {
        *rng.pick(&DEEP_EDITS)
    } else {
        rng.below(41)
    };
    // Tensor edits need a tensor; without one, edit the metadata.
    let kind = if name.is_none() && (kind < 20 || (37..=38).contains(&kind)) {
        20 + rng.below(17)
    } else {
        kind
    };
    let h = &mut p.header;
    let tname = name.clone().unwrap_or_default();
    let short = |s: &str| {
        s.chars()
            .take(24)
            .collect::<String>()
            .escape_debug()
            .to_string()
    };
    macro_rules! t {
        () => {
            h.get_mut(&tname).unwrap()
        };
    }
    match kind {
        0 => {
            if let Some(mut s) = shape_of(t!()).filter(|s| !s.is_empty()) {
                let k = rng.usize(s.len());
                s[k] = 0;
                t!()["shape"] = json!(s);
            }
            format!("{}: a dim -> 0", short(&tname))
        }
        1 => {
            let mut s = shape_of(t!()).unwrap_or_default();
            let v = huge(rng);
            if s.is_empty() || rng.one_in(3) {
                s.push(v);
            } else {
                let k = rng.usize(s.len());
                s[k] = v;
            }
            t!()["shape"] = json!(s);
            format!("{}: a dim -> {v}", short(&tname))
        }
        2 => {
            let s = match rng.below(4) {
                0 => json!([1u64 << 32, 1u64 << 32, 2]),
                1 => json!([0, u64::MAX, u64::MAX]),
                2 => json!([u64::MAX, u64::MAX, 0]),
                _ => json!([1u64 << 62, 8, 1u64 << 62]),
            };
            let d = s.to_string();
            t!()["shape"] = s;
            format!("{}: shape {d}", short(&tname))
        }
        3..=6 => {
            // Same element count, another rank: renders differently, stays valid.
            let n = elem_count(t!()).unwrap_or(1);
            let s = reshape(rng, n);
            let d = format!("{s:?}");
            t!()["shape"] = json!(s);
            format!("{}: reshape to {d}", short(&tname))
        }
        7 => {
            let v = match rng.below(6) {
                0 => json!(null),
                1 => json!("[1, 2]"),
                2 => json!([-1, 2]),
                3 => json!([1.5]),
                4 => json!(vec![1; 300]),
                _ => json!({}),
            };
            let d = v.to_string().chars().take(20).collect::<String>();
            t!()["shape"] = v;
            format!("{}: shape -> {d}", short(&tname))
        }
        8 => {
            if let Some(o) = t!()["data_offsets"].as_array_mut() {
                o.reverse();
            }
            format!("{}: data_offsets swapped", short(&tname))
        }
        9 => {
            // Overlap the previous tensor (or start early).
            if let Some(s) = t!()["data_offsets"][0].as_u64() {
                let back = 1 + rng.below(64);
                let e = t!()["data_offsets"][1].as_u64().unwrap_or(s);
                t!()["data_offsets"] = json!([s.saturating_sub(back), e.saturating_sub(back)]);
            }
            format!("{}: data_offsets moved back (overlap)", short(&tname))
        }
        10 => {
            let past = p.data.len() as u64 + 1 + rng.below(1 << 20);
            t!()["data_offsets"] = json!([past, past.saturating_add(4)]);
            format!("{}: data_offsets past EOF", short(&tname))
        }
        11 => {
            if let Some(s) = t!()["data_offsets"][0].as_u64() {
                let gap = 1 + rng.below(16);
                let e = t!()["data_offsets"][1].as_u64().unwrap_or(s);
                t!()["data_offsets"] = json!([s.saturating_add(gap), e.saturating_add(gap)]);
            }
            format!("{}: data_offsets gap", short(&tname))
        }
        12 => {
            let v = match rng.below(4) {
                0 => json!([u64::MAX, u64::MAX]),
                1 => json!([0, u64::MAX]),
                2 => json!([5]),
                _ => json!("0,4"),
            };
            t!()["data_offsets"] = v;
            format!("{}: data_offsets odd", short(&tname))
        }
        13..=15 => {
            let d = *rng.pick(&DTYPES);
            t!()["dtype"] = json!(d);
            format!("{}: dtype -> {d}", short(&tname))
        }
        16 => {
            let d = *rng.pick(&BAD_DTYPES);
            t!()["dtype"] = json!(d);
            format!("{}: dtype -> {d:?}", short(&tname))
        }
        17 | 18 => {
            // Rename; half the time the order and kinds follow.
            let new = odd_name(rng);
            let v = h.remove(&tname).unwrap();
            h.insert(new.clone(), v);
            let follow = deep || rng.one_in(2);
            if follow {
                if let Some(mut o) = order(h) {
                    o.iter_mut()
                        .filter(|n| **n == tname)
                        .for_each(|n| *n = new.clone());
                    set_order(h, &o);
                }
                let mut r = run_obj(h);
                if let Some(k) = r.get_mut("kinds").and_then(Value::as_object_mut) {
                    if let Some(v) = k.remove(&tname) {
                        k.insert(new.clone(), v);
                    }
                    set_run_obj(h, r);
                }
            }
            format!(
                "rename {} -> {}{}",
                short(&tname),
                short(&new),
                if follow { " (order follows)" } else { "" }
            )
        }
        19 => {
            h.remove(&tname);
            let follow = deep || rng.one_in(2);
            if follow {
                if let Some(mut o) = order(h) {
                    o.retain(|n| *n != tname);
                    set_order(h, &o);
                }
            }
            format!(
                "remove {}{}",
                short(&tname),
                if follow { " (order follows)" } else { "" }
            )
        }
        20 => {
            let new = odd_name(rng);
            let d = *rng.pick(&DTYPES);
            let n = rng.below(40);
            let s = reshape(rng, n);
            let at = p.data.len() as u64;
            h.insert(
                new.clone(),
                json!({"dtype": d, "shape": s, "data_offsets": [at, at]}),
            );
            format!("add tensor {} {d} {s:?}", short(&new))
        }
        21 => {
            h.remove("__metadata__");
            "remove __metadata__".into()
        }
        22 => {
            let v = match rng.below(4) {
                0 => json!("str"),
                1 => json!([1, 2]),
                2 => json!(null),
                _ => json!({"k": 1}),
            };
            h.insert("__metadata__".into(), v);
            "__metadata__ not a map of strings".into()
        }
        23..=25 => {
            let mut o = order(h).unwrap_or_else(|| names.clone());
            let d = match rng.below(6) {
                0 => {
                    o.push(odd_name(rng));
                    "lists a missing name"
                }
                1 if !o.is_empty() => {
                    let k = rng.usize(o.len());
                    o.push(o[k].clone());
                    "lists a name twice"
                }
                2 => {
                    o.reverse();
                    "reversed"
                }
                3 => {
                    o.truncate(o.len() / 2);
                    "lists half"
                }
                4 => {
                    o.clear();
                    "empty"
                }
                _ => {
                    let n = o.len();
                    if n > 1 {
                        o.swap(rng.usize(n), rng.usize(n));
                    }
                    "two swapped"
                }
            };
            set_order(h, &o);
            format!("candlelight.order {d}")
        }
        26 => {
            let v = match rng.below(6) {
                0 => "\"x\"",
                1 => "{}",
                2 => "[1, 2]",
                3 => "null",
                4 => "[",
                _ => "[\"a\", null]",
            };
            meta(h).insert("candlelight.order".into(), json!(v));
            format!("candlelight.order = {v}")
        }
        27 => {
            let v = match rng.below(7) {
                0 => "[]".to_string(),
                1 => "1".into(),
                2 => "\"s\"".into(),
                3 => "{".into(),
                4 => "null".into(),
                5 => "[".repeat(1000),
                _ => format!("{}{}", "{\"a\":".repeat(200), "}".repeat(200)),
            };
            let d = v.chars().take(12).collect::<String>();
            meta(h).insert("candlelight.run".into(), json!(v));
            format!("candlelight.run = {d}")
        }
        28 | 29 => {
            let mut r = run_obj(h);
            let d = match rng.below(8) {
                0 => {
                    r.insert("id".into(), json!(5));
                    "id a number"
                }
                1 => {
                    r.insert("kinds".into(), json!({"conv1": 1}));
                    "kinds value a number"
                }
                2 => {
                    r.insert("kinds".into(), json!([]));
                    "kinds an array"
                }
                3 => {
                    let mut k = Map::new();
                    for n in names.iter().take(4) {
                        k.insert(n.clone(), json!(odd_name(rng)));
                    }
                    k.insert(odd_name(rng), json!("<script>fuzz</script>"));
                    r.insert("kinds".into(), Value::Object(k));
                    "kinds odd values"
                }
                4 => {
                    r.insert(
                        "tags".into(),
                        json!({"<script>fuzz</script>": "x".repeat(100_000)}),
                    );
                    "huge tag"
                }
                5 => {
                    r.insert("model".into(), json!(odd_name(rng)));
                    r.insert("id".into(), json!(odd_name(rng)));
                    "odd model and id"
                }
                6 => {
                    r.insert("extra".into(), json!({"nested": [1, {"x": null}]}));
                    "extra key"
                }
                _ => {
                    r.insert("created".into(), json!("not a date <script>fuzz</script>"));
                    "odd created"
                }
            };
            set_run_obj(h, r);
            format!("candlelight.run: {d}")
        }
        30 | 31 => {
            let v = *rng.pick(&["2", "", "1.0", "01", " 1", "0", "1\n"]);
            meta(h).insert("candlelight.version".into(), json!(v));
            format!("candlelight.version = {v:?}")
        }
        32 => {
            meta(h).remove("candlelight.version");
            meta(h).remove(if rng.one_in(2) {
                "candlelight.order"
            } else {
                "candlelight.run"
            });
            "drop candlelight keys".into()
        }
        33 => {
            let k = odd_name(rng);
            let v = if rng.one_in(4) {
                "v".repeat(200_000)
            } else {
                odd_name(rng)
            };
            meta(h).insert(k.clone(), json!(v));
            format!("user metadata {} ({} bytes)", short(&k), v.len())
        }
        34 => {
            h.insert(odd_name(rng), json!(rng.below(3)));
            "a top-level key that is not a tensor".into()
        }
        35 | 36 => {
            // Special values over the data: NaN, Inf, subnormal, -0 patterns.
            let pats: [&[u8]; 8] = [
                &f32::NAN.to_le_bytes(),
                &f32::INFINITY.to_le_bytes(),
                &f32::MIN.to_le_bytes(),
                &1e-45f32.to_le_bytes(),
                &(-0.0f32).to_le_bytes(),
                &[0x00, 0x7c],
                &[0x01, 0x7f],
                &f64::NAN.to_le_bytes(),
            ];
            let n = 1 + rng.below(16);
            for _ in 0..n {
                let pat = *rng.pick(&pats);
                if p.data.len() > pat.len() {
                    let at = rng.usize(p.data.len() - pat.len());
                    let at = at - at % pat.len();
                    p.data[at..at + pat.len()].copy_from_slice(pat);
                }
            }
            format!("{n} special values in the data")
        }
        37 => {
            // Duplicate a tensor entry under another name (same offsets).
            let v = h.get(&tname).cloned().unwrap();
            let new = format!("{tname}.dup");
            h.insert(new, v);
            format!("duplicate entry of {}", short(&tname))
        }
        38 => {
            let s = shape_of(t!()).unwrap_or_default();
            let mut s2 = vec![1u64; 40 + rng.usize(100)];
            s2.extend(s);
            t!()["shape"] = json!(s2);
            format!(
                "{}: rank {}",
                short(&tname),
                shape_of(t!()).map_or(0, |s| s.len())
            )
        }
        39 => {
            let r = reshape(rng, 0);
            t_or_insert(h, &tname, json!(r));
            format!("{}: zero-size shape {r:?}", short(&tname))
        }
        _ => {
            // A big layer (the repair fills its data): downsampling, parallel paths.
            let shapes: [&[u64]; 10] = [
                &[1, 70_000],
                &[1, 3, 1, 30_000],
                &[1, 30_000, 1, 1],
                &[2, 1000, 50],
                &[1, 2, 5000, 7],
                &[100_000],
                &[1, 1, 1, 1, 99_991],
                &[1, 17, 3, 2011],
                &[3, 1, 40_000],
                &[1, 600, 10, 10],
            ];
            let shape = *rng.pick(&shapes);
            let d = *rng.pick(&["U8", "F16", "BF16", "F32", "I8"]);
            t_or_insert(h, &tname, json!(shape));
            if let Some(v) = h.get_mut(&tname).filter(|v| v.is_object()) {
                v["dtype"] = json!(d);
            }
            format!("{}: grow to {d} {shape:?}", short(&tname))
        }
    }
}

fn t_or_insert(h: &mut Map<String, Value>, name: &str, shape: Value) {
    match h.get_mut(name) {
        Some(v) if v.is_object() => v["shape"] = shape,
        _ => {
            h.insert(
                "zero".into(),
                json!({"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}),
            );
        }
    }
}

fn bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "C64" | "F64" | "I64" | "U64" => 64,
        _ => return None,
    })
}

/// Serializes a parsed file. `repair`: lay the tensors out again one after the other
/// (in their old data order) with offsets and data sized for their shape and dtype
/// (where that is computable and small), so a header edit gets past validation.
/// `bad_length`: sometimes write a wrong header length.
fn serialize(
    rng: &mut Rng,
    p: &Parsed,
    repair: bool,
    bad_length: bool,
    desc: &mut Vec<String>,
) -> Vec<u8> {
    let mut header = p.header.clone();
    let mut data = p.data.clone();
    if repair {
        let mut entries: Vec<(u64, String)> = tensor_names(&header)
            .into_iter()
            .map(|n| {
                let s = header[&n]["data_offsets"][0].as_u64().unwrap_or(u64::MAX);
                (s, n)
            })
            .collect();
        entries.sort();
        let mut out = Vec::new();
        for (_, n) in entries {
            let v = &header[&n];
            let Some(size) = elem_count(v)
                .zip(v["dtype"].as_str().and_then(bits))
                .and_then(|(e, b)| e.checked_mul(b))
                .filter(|b| b % 8 == 0)
                .map(|b| b / 8)
                .filter(|&b| b <= MAX_REPAIR)
            else {
                continue;
            };
            let (s, e) = (
                v["data_offsets"][0].as_u64().unwrap_or(0) as usize,
                v["data_offsets"][1].as_u64().unwrap_or(0) as usize,
            );
            let mut bytes = p.data.get(s..e).unwrap_or(&[]).to_vec();
            let fill = rng.next();
            bytes.resize(size as usize, fill as u8);
            let at = out.len();
            out.extend_from_slice(&bytes);
            header.get_mut(&n).unwrap()["data_offsets"] = json!([at, out.len()]);
        }
        data = out;
    }
    let mut text = Value::Object(header).to_string();
    // Writers pad the header with spaces; vary the data's alignment.
    let pad = rng.usize(9);
    text.extend(std::iter::repeat_n(' ', pad));
    let true_len = text.len() as u64;
    let len = match if bad_length { rng.below(20) } else { 19 } {
        0 => {
            desc.push("header length 0".into());
            0
        }
        1 => {
            let v = huge(rng);
            desc.push(format!("header length {v}"));
            v
        }
        2 | 3 => {
            let k = 1 + rng.below(16);
            let v = if rng.one_in(2) {
                true_len + k
            } else {
                true_len.saturating_sub(k)
            };
            desc.push(format!(
                "header length off by {}",
                v as i64 - true_len as i64
            ));
            v
        }
        _ => true_len,
    };
    desc.push(format!(
        "re-serialized{}, {pad} pad",
        if repair { " with repaired offsets" } else { "" }
    ));
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&data);
    out
}

fn header_end(b: &[u8]) -> usize {
    b.get(..8)
        .map(|l| u64::from_le_bytes(l.try_into().unwrap()))
        .map_or(b.len(), |n| {
            (n.min(b.len() as u64) as usize).saturating_add(8)
        })
        .min(b.len())
}

/// One byte-level edit.
fn edit_bytes(rng: &mut Rng, b: &mut Vec<u8>) -> String {
    if b.is_empty() {
        b.push(rng.next() as u8);
        return "one byte".into();
    }
    // Half the edits land in the header, where the structure is.
    let pos = |rng: &mut Rng, b: &Vec<u8>| {
        let end = header_end(b).max(1);
        if rng.one_in(2) {
            rng.usize(end)
        } else {
            rng.usize(b.len())
        }
    };
    match rng.below(11) {
        0 | 1 => {
            let i = pos(rng, b);
            let bit = rng.below(8);
            b[i] ^= 1 << bit;
            format!("flip bit {bit} of byte {i}")
        }
        2 => {
            let i = pos(rng, b);
            b[i] = *rng.pick(&INTERESTING);
            format!("byte {i} -> {:#04x}", b[i])
        }
        3 => {
            let at = rng.usize(b.len() + 1);
            b.truncate(at);
            format!("truncate at {at}")
        }
        4 => {
            let n = 1 + rng.usize(64);
            for _ in 0..n {
                b.push(rng.next() as u8);
            }
            format!("append {n} junk bytes")
        }
        5 => {
            let v = match rng.below(4) {
                0 => 0,
                1 => huge(rng),
                2 => b.len() as u64,
                _ => {
                    let n = u64::from_le_bytes(
                        b.get(..8).and_then(|s| s.try_into().ok()).unwrap_or([0; 8]),
                    );
                    n.wrapping_add(rng.below(33)).wrapping_sub(16)
                }
            };
            if b.len() < 8 {
                b.resize(8, 0);
            }
            b[..8].copy_from_slice(&v.to_le_bytes());
            format!("header length field = {v}")
        }
        6 => {
            let at = pos(rng, b);
            let n = 1 + rng.usize(16);
            let ins: Vec<u8> = (0..n).map(|_| *rng.pick(&INTERESTING)).collect();
            b.splice(at..at, ins);
            format!("insert {n} bytes at {at}")
        }
        7 => {
            let at = pos(rng, b);
            let n = (1 + rng.usize(32)).min(b.len() - at);
            b.drain(at..at + n);
            format!("delete {n} bytes at {at}")
        }
        8 => {
            let from = rng.usize(b.len());
            let to = rng.usize(b.len());
            let n = (1 + rng.usize(64)).min(b.len() - from).min(b.len() - to);
            let chunk = b[from..from + n].to_vec();
            b[to..to + n].copy_from_slice(&chunk);
            format!("copy {n} bytes {from} -> {to}")
        }
        _ => {
            // Change a digit of the JSON header: shapes and offsets drift by a little.
            let end = header_end(b);
            let digits: Vec<usize> = (8..end).filter(|&i| b[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                return "no digit to change".into();
            }
            let i = *rng.pick(&digits);
            b[i] = b'0' + rng.below(10) as u8;
            format!("header digit at {i} -> {}", b[i] as char)
        }
    }
}

/// A mutated copy of a seed, and what was done to it.
pub fn mutate(rng: &mut Rng, seeds: &[Seed], seed: usize) -> (Vec<u8>, Vec<String>) {
    let mut desc = Vec::new();
    let src = &seeds[seed].bytes;
    let branch = rng.below(20);
    let mut bytes = match branch {
        0..=5 => match parse(src) {
            // Odd but (mostly) valid runs, to reach everything past `Run::open`.
            Some(mut p) => {
                for _ in 0..1 + rng.below(3) {
                    desc.push(edit_json(rng, &mut p, true));
                }
                serialize(rng, &p, true, false, &mut desc)
            }
            None => src.clone(),
        },
        6..=13 => match parse(src) {
            Some(mut p) => {
                for _ in 0..1 + rng.below(3) {
                    desc.push(edit_json(rng, &mut p, false));
                }
                let repair = !rng.one_in(3);
                serialize(rng, &p, repair, true, &mut desc)
            }
            None => src.clone(),
        },
        14 => {
            // Splice: one seed's header with another's data.
            let other = rng.usize(seeds.len());
            let (a, b) = (src, &seeds[other].bytes);
            desc.push(format!(
                "header of {} + data of {}",
                seeds[seed].name, seeds[other].name
            ));
            let mut out = a[..header_end(a)].to_vec();
            out.extend_from_slice(&b[header_end(b)..]);
            out
        }
        _ => src.clone(),
    };
    let byte_edits = if desc.is_empty() {
        1 + rng.below(4)
    } else if branch <= 5 {
        0
    } else if rng.one_in(4) {
        1 + rng.below(2)
    } else {
        0
    };
    for _ in 0..byte_edits {
        desc.push(edit_bytes(rng, &mut bytes));
    }
    (bytes, desc)
}
