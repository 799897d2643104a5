//! The run file: a plain safetensors file holding one forward pass (format version 1).
//!
//! Tensor name = layer name. `__metadata__` carries `candlelight.version` (`"1"`),
//! `candlelight.order` (a JSON array of the names in capture order) and
//! `candlelight.run` (a JSON object: `id`, `created`, `model`, `input`, optional
//! `kinds` and `tags`). Other metadata keys belong to the user and are kept.
//! Files from other producers (no candlelight metadata) open as runs too; their
//! order is the file's own (by data offset).
//!
//! [`Run::open`] reads the header only (two positioned reads); a layer is read when
//! asked for, with positioned reads of its own bytes. Files are not memory-mapped, so
//! a producer truncating a file while it is read makes that read fail cleanly
//! instead of killing the reader with SIGBUS. Only regular files are opened, and
//! without blocking (a FIFO named `*.safetensors` is an error, not a hang).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use candle_core::{Device, Tensor};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

mod local;
mod open;
pub(crate) mod path_json;
mod summary;
mod write;

pub use summary::{LayerSummary, HASH_ALGORITHM, KEY_LAYERS};

use crate::values::{read_error, read_exact_at, read_vec, LayerData};
use crate::{Error, Result};

/// Format version written into `candlelight.version`.
pub const FORMAT_VERSION: &str = "1";
/// Metadata key of the format version.
pub const KEY_VERSION: &str = "candlelight.version";
/// Metadata key of the capture order.
pub const KEY_ORDER: &str = "candlelight.order";
/// Metadata key of the run facts.
pub const KEY_RUN: &str = "candlelight.run";
/// File extension of run files.
pub const EXTENSION: &str = "safetensors";

/// The run facts stored in `candlelight.run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Run id: `YYYYMMDD-HHMMSS-<model>-<4 hex>`.
    #[serde(default)]
    pub id: String,
    /// Creation time, RFC 3339, UTC.
    #[serde(default)]
    pub created: String,
    /// Model name.
    #[serde(default)]
    pub model: String,
    /// A description of the input.
    #[serde(default)]
    pub input: String,
    /// Layer name -> layer kind (`conv2d`, `linear`, `relu`, `tap`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<String, String>,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Other keys of the object, kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl RunInfo {
    /// The input's token strings, one list per sample (`tokens` in the run facts),
    /// if the run has them in the documented form (a list of lists of strings).
    pub fn tokens(&self) -> Option<Vec<Vec<String>>> {
        serde_json::from_value(self.extra.get("tokens")?.clone()).ok()
    }
}

/// One layer of a run: its name, kind, shape and dtype.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerInfo {
    /// Capture position (0-based).
    pub index: usize,
    /// Layer name (tensor name in the file).
    pub name: String,
    /// Layer kind, when the producer recorded one.
    pub kind: Option<String>,
    /// Shape.
    pub shape: Vec<usize>,
    /// Stored dtype, as safetensors names it (`F32`, `BF16`, ...).
    #[serde(serialize_with = "ser_dtype")]
    pub dtype: Dtype,
}

fn ser_dtype<S: serde::Serializer>(d: &Dtype, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(d)
}

impl LayerInfo {
    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the stored data in bytes.
    pub fn nbytes(&self) -> usize {
        self.elem_count() * self.dtype.bitsize() / 8
    }

    /// The shape written as `[1, 32, 26, 26]`.
    pub fn shape_str(&self) -> String {
        shape_str(&self.shape)
    }
}

/// A shape written as `[1, 32, 26, 26]`.
pub fn shape_str(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// True when shapes `a` and `b` differ only by leading 1s (`[12, 384]` and
/// `[1, 12, 384]`): same elements in the same order. Diff compares such layers
/// element by element; patching reshapes one into the other. (Here, in the
/// run-file layer, so both can use it; public as `candlelight::diff::same_but_leading_ones`.)
pub fn same_but_leading_ones(a: &[usize], b: &[usize]) -> bool {
    let trim = |s: &[usize]| -> usize { s.iter().take_while(|&&d| d == 1).count() };
    a[trim(a)..] == b[trim(b)..]
}

enum Store {
    /// Recorded in this process: candle tensors (shared handles).
    Memory(Vec<Tensor>),
    /// Opened from a file: the open file and each layer's byte range in it.
    File {
        file: std::fs::File,
        ranges: Vec<(u64, u64)>,
    },
    /// Opened from an object store: each layer read with a range request.
    #[cfg(feature = "remote")]
    Remote {
        object: std::sync::Arc<RemoteRun>,
        ranges: Vec<(u64, u64)>,
    },
}

/// A run object in a store: where it is, the version read (a replaced object fails
/// later reads instead of mixing two runs) and what was transferred.
#[cfg(feature = "remote")]
pub(crate) struct RemoteRun {
    pub(crate) remote: crate::remote::Remote,
    pub(crate) version: Option<String>,
    pub(crate) transfer: crate::remote::Transfer,
}

#[cfg(feature = "remote")]
impl RemoteRun {
    /// Bytes `s..e` of the object, exactly.
    pub(crate) fn read(&self, s: u64, e: u64) -> Result<Vec<u8>> {
        if s == e {
            return Ok(Vec::new());
        }
        let (bytes, size, _) = self
            .remote
            .read(s..e, self.version.as_deref(), &self.transfer)?;
        if bytes.len() as u64 != e - s {
            return Err(Error::bad(
                self.remote.as_path(),
                format!("truncated: {size} bytes, a read of bytes {s}..{e} came back short"),
            ));
        }
        Ok(bytes)
    }
}

/// One forward pass: layers in capture order plus the run facts.
///
/// A run comes from [`crate::Recorder::record`] (in memory) or [`Run::open`] (a file).
pub struct Run {
    path: Option<PathBuf>,
    info: RunInfo,
    metadata: BTreeMap<String, String>,
    layers: Vec<LayerInfo>,
    by_name: HashMap<String, usize>,
    store: Store,
    file_size: u64,
    /// Per-layer summaries stored in the header (`candlelight.layers`), by index.
    summaries: Vec<Option<LayerSummary>>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("id", &self.info.id)
            .field("path", &self.path)
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl Run {
    /// A run in memory from named tensors in capture order (kinds may be empty).
    pub(crate) fn from_tensors(
        info: RunInfo,
        entries: Vec<(String, Tensor)>,
        metadata: BTreeMap<String, String>,
    ) -> Self {
        let mut layers = Vec::with_capacity(entries.len());
        let mut tensors = Vec::with_capacity(entries.len());
        for (index, (name, t)) in entries.into_iter().enumerate() {
            layers.push(LayerInfo {
                index,
                kind: info.kinds.get(&name).cloned(),
                name,
                shape: t.dims().to_vec(),
                dtype: t.dtype().into(),
            });
            tensors.push(t);
        }
        let by_name = index_names(&layers);
        Run {
            path: None,
            info,
            metadata,
            summaries: vec![None; layers.len()],
            layers,
            by_name,
            store: Store::Memory(tensors),
            file_size: 0,
        }
    }

    /// Builds a run from named tensors (e.g. to compare against a hand-made reference).
    pub fn from_named_tensors(
        model: &str,
        entries: impl IntoIterator<Item = (String, Tensor)>,
    ) -> Self {
        let info = RunInfo {
            id: new_run_id(model),
            created: now_rfc3339(),
            model: model.to_string(),
            ..RunInfo::default()
        };
        Run::from_tensors(info, entries.into_iter().collect(), BTreeMap::new())
    }

    /// The run facts (`candlelight.run`).
    pub fn info(&self) -> &RunInfo {
        &self.info
    }

    /// The run id (may be empty for files from other producers).
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// The file this run was opened from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Size of the file in bytes (0 for a run in memory).
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The user's metadata keys (everything but `candlelight.*`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Sets a user metadata key, kept when the run is saved.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    /// The summary (content hash and statistics) the header stores for layer
    /// `name`, if the run was saved with one (`candlelight.layers`).
    pub fn summary(&self, name: &str) -> Option<&LayerSummary> {
        self.summary_at(*self.by_name.get(name)?)
    }

    /// The stored summary of layer number `index`.
    pub fn summary_at(&self, index: usize) -> Option<&LayerSummary> {
        self.summaries.get(index)?.as_ref()
    }

    /// For a run opened from an object store: the requests made and bytes
    /// received so far (header and layers); `None` for other runs.
    pub fn transfer(&self) -> Option<(u64, u64)> {
        match &self.store {
            #[cfg(feature = "remote")]
            Store::Remote { object, .. } => {
                Some((object.transfer.requests(), object.transfer.bytes()))
            }
            _ => None,
        }
    }

    /// Layers in capture order.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when the run holds no layer.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layer called `name`.
    pub fn layer(&self, name: &str) -> Option<&LayerInfo> {
        self.by_name.get(name).map(|&i| &self.layers[i])
    }

    /// Total bytes of layer data.
    pub fn data_bytes(&self) -> usize {
        self.layers.iter().map(LayerInfo::nbytes).sum()
    }

    fn where_(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("<run {}>", self.info.id)))
    }

    pub(crate) fn index(&self, name: &str) -> Result<usize> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| Error::NoSuchLayer {
                path: self.where_(),
                name: name.to_string(),
            })
    }

    /// The data of layer number `index`, to read as f32 without converting it all.
    pub fn data_at(&self, index: usize) -> Result<LayerData<'_>> {
        let info = self.layers.get(index).ok_or_else(|| Error::NoSuchLayer {
            path: self.where_(),
            name: format!("#{index}"),
        })?;
        match &self.store {
            Store::File { file, ranges } => {
                let (s, e) = ranges[index];
                let path = self.path.as_deref().unwrap_or(Path::new(""));
                LayerData::from_file(file, s, (e - s) as usize, info.dtype, path, &info.name)
            }
            Store::Memory(tensors) => LayerData::from_tensor(&tensors[index]),
            #[cfg(feature = "remote")]
            Store::Remote { object, ranges } => {
                let (s, e) = ranges[index];
                let bytes = object.read(s, e)?;
                LayerData::from_bytes(std::borrow::Cow::Owned(bytes), info.dtype)
                    .map_err(|m| Error::bad(self.where_(), format!("layer {:?}: {m}", info.name)))
            }
        }
    }

    /// The data of layer `name`.
    pub fn data(&self, name: &str) -> Result<LayerData<'_>> {
        self.data_at(self.index(name)?)
    }

    /// Layer `name` as a candle tensor on the CPU (copied out of the file).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        self.tensor_at(self.index(name)?)
    }

    /// Layer number `index` as a candle tensor.
    pub fn tensor_at(&self, index: usize) -> Result<Tensor> {
        let info = self.layers.get(index).ok_or_else(|| Error::NoSuchLayer {
            path: self.where_(),
            name: format!("#{index}"),
        })?;
        match &self.store {
            Store::Memory(t) => Ok(t[index].clone()),
            _ => {
                use candle_core::safetensors::Load;
                // candle multiplies the dims from the last to the first for its
                // strides: a zero-size shape such as [0, 2^63, 4] is valid
                // safetensors but overflows there (found by tests/fuzz.rs).
                let strides_fit = info
                    .shape
                    .iter()
                    .rev()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .is_some();
                if !strides_fit {
                    return Err(Error::bad(
                        self.where_(),
                        format!(
                            "layer {:?}: shape {} cannot be a candle tensor (its strides overflow)",
                            info.name,
                            info.shape_str()
                        ),
                    ));
                }
                if let Some(t) = self.tensor_direct(index)? {
                    return Ok(t);
                }
                let bytes = self.layer_bytes(index)?;
                let view =
                    safetensors::tensor::TensorView::new(info.dtype, info.shape.clone(), &bytes)
                        .map_err(|e| {
                            Error::bad(self.where_(), format!("layer {:?}: {e}", info.name))
                        })?;
                view.load(&Device::Cpu)
                    .map_err(|e| Error::bad(self.where_(), format!("layer {:?}: {e}", info.name)))
            }
        }
    }

    /// Layer `index` of a run opened from a file read straight into the tensor's own
    /// memory (parallel reads, nothing zeroed first, no second copy), for the dtypes
    /// candle stores as they are on a little-endian machine; `None` for the others.
    fn tensor_direct(&self, index: usize) -> Result<Option<Tensor>> {
        let Store::File { file, ranges } = &self.store else {
            return Ok(None);
        };
        if cfg!(target_endian = "big") {
            return Ok(None);
        }
        let info = &self.layers[index];
        let (start, n) = (ranges[index].0, info.elem_count());
        let shape = info.shape.clone();
        let failed = |e| read_error(&self.where_(), Some(info.name.as_str()), e);
        macro_rules! direct {
            ($t:ty) => {
                Tensor::from_vec(
                    read_vec::<$t>(file, start, n).map_err(failed)?,
                    shape,
                    &Device::Cpu,
                )?
            };
        }
        Ok(Some(match info.dtype {
            Dtype::F32 => direct!(f32),
            Dtype::F16 => direct!(half::f16),
            Dtype::BF16 => direct!(half::bf16),
            Dtype::F64 => direct!(f64),
            Dtype::U8 => direct!(u8),
            Dtype::U32 => direct!(u32),
            Dtype::I64 => direct!(i64),
            _ => return Ok(None),
        }))
    }

    /// The stored bytes of layer number `index` of a run opened from a file.
    fn layer_bytes(&self, index: usize) -> Result<Vec<u8>> {
        let (file, ranges) = match &self.store {
            Store::File { file, ranges } => (file, ranges),
            #[cfg(feature = "remote")]
            Store::Remote { object, ranges } => {
                let (s, e) = ranges[index];
                return object.read(s, e);
            }
            Store::Memory(_) => return Err(Error::internal("layer bytes of a run in memory")),
        };
        let (s, e) = ranges[index];
        let mut buf = vec![0u8; (e - s) as usize];
        read_exact_at(file, &mut buf, s).map_err(|e| read_error(&self.where_(), None, e))?;
        Ok(buf)
    }

    /// Layer `name` as f32 values (row-major).
    pub fn values(&self, name: &str) -> Result<Vec<f32>> {
        let data = self.data(name)?;
        let v = data.to_vec();
        data.check()?;
        Ok(v)
    }

    /// The header metadata this run is saved with.
    pub fn header_metadata(&self) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        m.insert(KEY_VERSION.into(), FORMAT_VERSION.into());
        let order: Vec<&str> = self.layers.iter().map(|l| l.name.as_str()).collect();
        m.insert(
            KEY_ORDER.into(),
            serde_json::to_string(&order).expect("names serialize"),
        );
        let mut info = self.info.clone();
        info.kinds = self
            .layers
            .iter()
            .filter_map(|l| l.kind.clone().map(|k| (l.name.clone(), k)))
            .collect();
        m.insert(
            KEY_RUN.into(),
            serde_json::to_string(&info).expect("run info serializes"),
        );
        m
    }

    /// The file name this run is saved under: `<run-id>.safetensors`.
    pub fn file_name(&self) -> String {
        let id = if self.info.id.is_empty() {
            "run".to_string()
        } else {
            sanitize_id(&self.info.id)
        };
        format!("{id}.{EXTENSION}")
    }
}

fn index_names(layers: &[LayerInfo]) -> HashMap<String, usize> {
    layers.iter().map(|l| (l.name.clone(), l.index)).collect()
}

/// Keeps `[A-Za-z0-9._-]`, replaces the rest with `-`, at most 96 characters, never
/// empty and never starting with a dot.
pub fn sanitize_id(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(96)
        .collect();
    while out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Current time, RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A fresh run id `YYYYMMDD-HHMMSS-<model>-<4 hex>`, distinct within this process
/// (the 4 hex digits are a random start plus a counter).
pub fn new_run_id(model: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let start = *START.get_or_init(rand::random::<u32>);
    let suffix = (start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))) & 0xffff;
    let model = if model.is_empty() { "run" } else { model };
    let model: String = sanitize_id(model).chars().take(48).collect();
    format!(
        "{}-{model}-{suffix:04x}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape() {
        let a = new_run_id("le net/<x>");
        let b = new_run_id("le net/<x>");
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts[0].len(), 8);
        assert_eq!(parts[1].len(), 6);
        assert_eq!(parts.last().unwrap().len(), 4);
    }

    #[test]
    fn sanitize_never_leaves_the_folder() {
        assert_eq!(sanitize_id("../../x"), "_.-..-x");
        assert_eq!(sanitize_id(""), "_");
        assert_eq!(sanitize_id("/etc/passwd"), "-etc-passwd");
    }
}
