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

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use candle_core::{DType, Device, Storage, Tensor};
use safetensors::{Dtype, SafeTensorError, View};
use serde::{Deserialize, Serialize};

use crate::staging::RunTemp;
use crate::stats::Stats;
use crate::values::{read_exact_at, LayerData};
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

enum Store {
    /// Recorded in this process: candle tensors (shared handles).
    Memory(Vec<Tensor>),
    /// Opened from a file: the open file and each layer's byte range in it.
    File {
        file: std::fs::File,
        ranges: Vec<(u64, u64)>,
    },
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

    /// Opens a run file: reads and checks the header, reads no layer.
    ///
    /// Only regular files (or symlinks to them) are opened, without blocking; the
    /// data section must end exactly at the end of the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Run> {
        let path = path.as_ref();
        let file = open_regular(path)?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Run::from_file(path, file, size)
    }

    fn from_file(path: &Path, file: std::fs::File, size: u64) -> Result<Run> {
        if size < 8 {
            return Err(Error::bad(
                path,
                format!("truncated: {size} bytes, a safetensors file starts with an 8-byte header length"),
            ));
        }
        let mut len = [0u8; 8];
        read_exact_at(&file, &mut len, 0).map_err(|e| read_error(path, e))?;
        let n = u64::from_le_bytes(len);
        if n > MAX_HEADER as u64 {
            return Err(Error::bad(
                path,
                describe_st_error(SafeTensorError::HeaderTooLarge, n, size),
            ));
        }
        if n > size - 8 {
            return Err(Error::bad(
                path,
                describe_st_error(SafeTensorError::InvalidHeaderLength, n, size),
            ));
        }
        let mut header = vec![0u8; n as usize];
        read_exact_at(&file, &mut header, 8).map_err(|e| read_error(path, e))?;
        let meta =
            parse_header(&header).map_err(|e| Error::bad(path, describe_st_error(e, n, size)))?;
        let data_start = 8 + n;
        if data_start + meta.data_len() as u64 != size {
            return Err(Error::bad(
                path,
                describe_st_error(SafeTensorError::MetadataIncompleteBuffer, n, size),
            ));
        }
        let user_meta = meta.metadata().clone().unwrap_or_default();
        let tensors = meta.tensors();
        let file_order = meta.offset_keys();
        if let Some(v) = user_meta.get(KEY_VERSION) {
            if v != FORMAT_VERSION {
                return Err(Error::bad(
                    path,
                    format!("unsupported run format version {v:?} (this build reads version {FORMAT_VERSION})"),
                ));
            }
        }
        let info: RunInfo = match user_meta.get(KEY_RUN) {
            Some(s) => serde_json::from_str(s)
                .map_err(|e| Error::bad(path, format!("{KEY_RUN} is not a JSON object: {e}")))?,
            None => RunInfo::default(),
        };
        let order: Vec<String> = match user_meta.get(KEY_ORDER) {
            Some(s) => {
                let listed: Vec<String> = serde_json::from_str(s).map_err(|e| {
                    Error::bad(
                        path,
                        format!("{KEY_ORDER} is not a JSON array of names: {e}"),
                    )
                })?;
                let mut seen = HashSet::with_capacity(listed.len());
                for name in &listed {
                    if !tensors.contains_key(name) {
                        return Err(Error::bad(
                            path,
                            format!("{KEY_ORDER} names layer {name:?}, which is not in the file"),
                        ));
                    }
                    if !seen.insert(name.as_str()) {
                        return Err(Error::bad(
                            path,
                            format!("{KEY_ORDER} names layer {name:?} twice"),
                        ));
                    }
                }
                // Tensors the order does not mention keep their file order, after it.
                let rest: Vec<String> = file_order
                    .iter()
                    .filter(|n| !seen.contains(n.as_str()))
                    .cloned()
                    .collect();
                listed.into_iter().chain(rest).collect()
            }
            None => file_order,
        };

        let mut layers = Vec::with_capacity(order.len());
        let mut ranges = Vec::with_capacity(order.len());
        for (index, name) in order.into_iter().enumerate() {
            let ti = tensors[&name];
            let (s, e) = ti.data_offsets;
            ranges.push((data_start + s as u64, data_start + e as u64));
            layers.push(LayerInfo {
                index,
                kind: info.kinds.get(&name).cloned(),
                name,
                shape: ti.shape.clone(),
                dtype: ti.dtype,
            });
        }
        let metadata = user_meta
            .into_iter()
            .filter(|(k, _)| k != KEY_VERSION && k != KEY_ORDER && k != KEY_RUN)
            .collect();
        let by_name = index_names(&layers);
        Ok(Run {
            path: Some(path.to_path_buf()),
            info,
            metadata,
            layers,
            by_name,
            store: Store::File { file, ranges },
            file_size: size,
        })
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

    fn index(&self, name: &str) -> Result<usize> {
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
        let info = self
            .layers
            .get(index)
            .ok_or_else(|| Error::Invalid(format!("layer index {index} out of range")))?;
        match &self.store {
            Store::File { file, ranges } => {
                let (s, e) = ranges[index];
                let path = self.path.as_deref().unwrap_or(Path::new(""));
                LayerData::from_file(file, s, (e - s) as usize, info.dtype, path, &info.name)
            }
            Store::Memory(tensors) => {
                let t = &tensors[index];
                let v = t
                    .to_device(&Device::Cpu)?
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?;
                Ok(LayerData::from_f32(v))
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
        let info = &self.layers[index];
        match &self.store {
            Store::Memory(t) => Ok(t[index].clone()),
            Store::File { .. } => {
                use candle_core::safetensors::Load;
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

    /// The stored bytes of layer number `index` of a run opened from a file.
    fn layer_bytes(&self, index: usize) -> Result<Vec<u8>> {
        let Store::File { file, ranges } = &self.store else {
            return Err(Error::Invalid("layer bytes of a run in memory".into()));
        };
        let (s, e) = ranges[index];
        let mut buf = vec![0u8; (e - s) as usize];
        read_exact_at(file, &mut buf, s).map_err(|e| read_error(&self.where_(), e))?;
        Ok(buf)
    }

    /// Layer `name` as f32 values (row-major).
    pub fn values(&self, name: &str) -> Result<Vec<f32>> {
        let data = self.data(name)?;
        let v = data.to_vec();
        data.check()?;
        Ok(v)
    }

    /// Statistics of layer `name`.
    pub fn stats(&self, name: &str) -> Result<Stats> {
        self.stats_at(self.index(name)?)
    }

    /// Statistics of layer number `index`.
    pub fn stats_at(&self, index: usize) -> Result<Stats> {
        let data = self.data_at(index)?;
        let s = Stats::of(&data);
        data.check()?;
        Ok(s)
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

    /// Writes `<dir>/<run-id>.safetensors` atomically (a locked dot temp file in
    /// `dir`, `.<run-id>.safetensors.candlelight-<pid>-<n>.tmp`, synced, then renamed;
    /// `candlelight watch` removes such a temp once its writer is gone) and returns its path. Creates `dir` if needed; never
    /// replaces an existing file. Tensors on a GPU are copied to the CPU first.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<PathBuf> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let target = dir.join(self.file_name());
        if target.exists() {
            return Err(Error::io(
                &target,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "run file already exists"),
            ));
        }
        let mut tmp = RunTemp::new(dir, &self.file_name())?;
        self.write_to(tmp.path())?;
        std::fs::rename(tmp.path(), &target).map_err(|e| Error::io(&target, e))?;
        tmp.keep();
        drop(tmp);
        // Make the new name durable.
        crate::staging::sync_dir(dir);
        Ok(target)
    }

    /// Writes the run to exactly `path` (not atomic; [`Run::save`] is), synced.
    pub fn write_to(&self, path: &Path) -> Result<()> {
        let header = self.header_metadata();
        match &self.store {
            Store::Memory(tensors) => {
                let cpu: Vec<Tensor> = tensors
                    .iter()
                    .map(|t| {
                        let t = t.to_device(&Device::Cpu)?;
                        if t.is_contiguous() {
                            Ok(t)
                        } else {
                            t.contiguous()
                        }
                    })
                    .collect::<candle_core::Result<_>>()?;
                let guards: Vec<_> = cpu.iter().map(|t| t.storage_and_layout()).collect();
                let mut views = Vec::with_capacity(cpu.len());
                for ((t, (storage, layout)), l) in cpu.iter().zip(&guards).zip(&self.layers) {
                    views.push((l.name.as_str(), RawView::of(t, storage, layout)?));
                }
                write_safetensors(path, views, header)
            }
            Store::File { .. } => {
                // One layer in memory at a time: each is read when the writer gets to it.
                let failed = std::cell::OnceCell::new();
                let views = self
                    .layers
                    .iter()
                    .map(|l| {
                        let view = FileView {
                            run: self,
                            layer: l,
                            failed: &failed,
                        };
                        (l.name.as_str(), view)
                    })
                    .collect();
                let res = write_safetensors(path, views, header);
                match failed.into_inner() {
                    Some(e) => Err(e),
                    None => res,
                }
            }
        }
    }
}

/// The safetensors crate's limit on header size.
const MAX_HEADER: usize = 100_000_000;

/// Opens `path` for reading if it is a regular file (following symlinks), without
/// blocking: a FIFO, socket or device is refused before it is opened, and the open
/// itself never waits for a writer.
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File> {
    let md = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !md.is_file() {
        return Err(Error::bad(
            path,
            format!("not a regular file ({})", file_kind(&md)),
        ));
    }
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_NONBLOCK);
    let file = o.open(path).map_err(|e| Error::io(path, e))?;
    let md = file.metadata().map_err(|e| Error::io(path, e))?;
    if !md.is_file() {
        // Replaced between the check and the open.
        return Err(Error::bad(
            path,
            format!("not a regular file ({})", file_kind(&md)),
        ));
    }
    Ok(file)
}

/// "a folder", "a FIFO", ... for messages.
pub(crate) fn file_kind(md: &std::fs::Metadata) -> &'static str {
    let t = md.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a folder"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::bad(
            path,
            "the file ended early while it was read (truncated or rewritten by its producer?)",
        )
    } else {
        Error::io(path, e)
    }
}

/// The header JSON parsed and checked as the safetensors crate does (offsets in
/// order, contiguous, lengths matching shapes and dtypes), without the data.
fn parse_header(
    bytes: &[u8],
) -> std::result::Result<safetensors::tensor::Metadata, SafeTensorError> {
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__")]
        metadata: Option<HashMap<String, String>>,
        #[serde(flatten)]
        tensors: HashMap<String, safetensors::tensor::TensorInfo>,
    }
    let text = std::str::from_utf8(bytes).map_err(SafeTensorError::InvalidHeader)?;
    let h: Header =
        serde_json::from_str(text).map_err(SafeTensorError::InvalidHeaderDeserialization)?;
    let mut tensors: Vec<_> = h.tensors.into_iter().collect();
    tensors.sort_by(|a, b| (a.1.data_offsets, &a.0).cmp(&(b.1.data_offsets, &b.0)));
    safetensors::tensor::Metadata::new(h.metadata, tensors)
}

/// A layer of a run opened from a file, read when the safetensors writer asks for
/// it; a failed read is kept in `failed` (the writer cannot return it).
struct FileView<'a> {
    run: &'a Run,
    layer: &'a LayerInfo,
    failed: &'a std::cell::OnceCell<Error>,
}

impl View for FileView<'_> {
    fn dtype(&self) -> Dtype {
        self.layer.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.layer.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self.run.layer_bytes(self.layer.index) {
            Ok(b) => Cow::Owned(b),
            Err(e) => {
                let _ = self.failed.set(e);
                Cow::Owned(vec![0; self.data_len()])
            }
        }
    }
    fn data_len(&self) -> usize {
        self.layer.nbytes()
    }
}

fn index_names(layers: &[LayerInfo]) -> HashMap<String, usize> {
    layers.iter().map(|l| (l.name.clone(), l.index)).collect()
}

fn write_safetensors<V: View>(
    path: &Path,
    views: Vec<(&str, V)>,
    header: HashMap<String, String>,
) -> Result<()> {
    safetensors::serialize_to_file(views, Some(header), path)
        .map_err(|e| Error::bad(path, format!("cannot write run file: {e}")))?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// Bytes of one tensor for the safetensors writer, borrowed when possible.
struct RawView<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Cow<'a, [u8]>,
}

impl<'a> RawView<'a> {
    fn of(
        t: &Tensor,
        storage: &'a Storage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<RawView<'a>> {
        let shape = t.dims().to_vec();
        let dtype: Dtype = t.dtype().into();
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("tensor is not contiguous".into()))?;
        let Storage::Cpu(cpu) = storage else {
            candle_core::bail!("tensor is not on the CPU");
        };
        macro_rules! bytes_of {
            ($t:ty) => {{
                let s: &[$t] = cpu.as_slice::<$t>()?;
                let s = &s[start..end];
                // SAFETY: plain numeric data reinterpreted as bytes, same length in bytes.
                unsafe {
                    std::slice::from_raw_parts(s.as_ptr() as *const u8, std::mem::size_of_val(s))
                }
            }};
        }
        let data: &[u8] = match t.dtype() {
            DType::U8 => bytes_of!(u8),
            DType::U32 => bytes_of!(u32),
            DType::I16 => bytes_of!(i16),
            DType::I32 => bytes_of!(i32),
            DType::I64 => bytes_of!(i64),
            DType::BF16 => bytes_of!(half::bf16),
            DType::F16 => bytes_of!(half::f16),
            DType::F32 => bytes_of!(f32),
            DType::F64 => bytes_of!(f64),
            other => candle_core::bail!("dtype {other:?} cannot be saved in a run file"),
        };
        Ok(RawView {
            dtype,
            shape,
            data: Cow::Borrowed(data),
        })
    }
}

impl View for RawView<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// One line for a safetensors error; `n` is the header length field, `size` the
/// file's size.
fn describe_st_error(e: SafeTensorError, n: u64, size: u64) -> String {
    match e {
        SafeTensorError::HeaderTooLarge => format!(
            "header length {n} is larger than the 100 MB safetensors limit or the file ({size} bytes)"
        ),
        SafeTensorError::HeaderTooSmall => "truncated: no 8-byte header length".to_string(),
        SafeTensorError::InvalidHeaderLength => format!(
            "header length {n} runs past the end of the file ({size} bytes): truncated or not a safetensors file"
        ),
        SafeTensorError::InvalidHeader(e) => format!("header is not valid UTF-8: {e}"),
        SafeTensorError::InvalidHeaderDeserialization(e) => {
            format!("header is not a safetensors JSON object: {e}")
        }
        SafeTensorError::InvalidOffset(name) => format!(
            "tensor {name:?}: data offsets are out of range, overlapping or leave a gap"
        ),
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte length disagrees with its shape and dtype".to_string()
        }
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "data section does not match the file size ({size} bytes): truncated or trailing bytes"
        ),
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows".to_string(),
        SafeTensorError::MisalignedSlice => "a tensor's bit size is not whole bytes".to_string(),
        other => format!("invalid safetensors file: {other}"),
    }
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

/// Paths in JSON files candlelight writes. A UTF-8 path is a plain string; a path
/// that is not UTF-8 (Unix allows any bytes but `/` and NUL) is an object
/// `{"lossy": "<with U+FFFD>", "bytes": [..]}` so that it reads back exactly.
pub(crate) mod path_json {
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Bytes { lossy: String, bytes: Vec<u8> },
    }

    /// Serializes `p` as above.
    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        match p.to_str() {
            Some(t) => s.serialize_str(t),
            None => Repr::Bytes {
                lossy: p.to_string_lossy().into_owned(),
                bytes: p.as_os_str().as_encoded_bytes().to_vec(),
            }
            .serialize(s),
        }
    }

    /// Reads either form back.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Text(t) => PathBuf::from(t),
            Repr::Bytes { lossy, bytes } => from_bytes(bytes).unwrap_or_else(|| lossy.into()),
        })
    }

    #[cfg(unix)]
    fn from_bytes(bytes: Vec<u8>) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        Some(std::ffi::OsString::from_vec(bytes).into())
    }

    #[cfg(not(unix))]
    fn from_bytes(bytes: Vec<u8>) -> Option<PathBuf> {
        String::from_utf8(bytes).ok().map(PathBuf::from)
    }

    /// Serializes an optional path as a string, lossily (for reports people read).
    pub fn lossy_opt<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => s.serialize_str(&p.to_string_lossy()),
            None => s.serialize_none(),
        }
    }
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
