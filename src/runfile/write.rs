//! Saving a run: the safetensors writer fed without copies, into a locked temp file
//! that is synced and renamed into place.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{IoSlice, Write as _};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Storage, Tensor};
use safetensors::{Dtype, View};

use super::{summary, LayerInfo, LayerSummary, Run, Store, KEY_LAYERS};
use crate::staging::RunTemp;
use crate::{Error, Result};

impl Run {
    /// Writes `<dir>/<run-id>.safetensors` atomically (a locked dot temp file in
    /// `dir`, `.<run-id>.safetensors.candlelight-<pid>-<n>.tmp`, synced, then renamed;
    /// `candlelight watch` removes such a temp once its writer is gone) and returns its path. Creates `dir` if needed; never
    /// replaces an existing file. Tensors on a GPU are copied to the CPU first.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<PathBuf> {
        let dir = dir.as_ref();
        if let Some(url) = dir.to_str().filter(|s| crate::location::is_url(s)) {
            if let Some(local) = crate::location::file_url_path(url) {
                return self.save(local);
            }
            return self.save_url(url);
        }
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

    /// [`Run::save`] into an object-store prefix (`s3://bucket/runs`): the run is
    /// uploaded as `<prefix>/<run-id>.safetensors`, in one request or in parts,
    /// and appears under that name only when complete; a failed upload is
    /// aborted. Returns the object's URL as a path.
    #[cfg(feature = "remote")]
    fn save_url(&self, url: &str) -> Result<PathBuf> {
        let target = crate::remote::Remote::parse(url)?.join(&self.file_name());
        let path = target.as_path();
        self.write_with(Sink::Remote(&target))
            .map_err(|e| match e {
                e @ Error::Io { .. } => e,
                e => Error::bad(&path, format!("not saved: {e}")),
            })?;
        Ok(path)
    }

    #[cfg(not(feature = "remote"))]
    fn save_url(&self, url: &str) -> Result<PathBuf> {
        Err(Error::option(format!(
            "{url}: this build of candlelight writes no object stores (feature `remote`)"
        )))
    }

    /// Writes the run to exactly `path` (not atomic; [`Run::save`] is), synced.
    pub fn write_to(&self, path: &Path) -> Result<()> {
        self.write_with(Sink::File(path))
    }

    /// The run's header (with its per-layer summaries) and data, to `sink`.
    fn write_with(&self, sink: Sink<'_>) -> Result<()> {
        let mut header = self.header_metadata();
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
                let computed: Vec<LayerSummary> = views
                    .iter()
                    .map(|(_, v)| LayerSummary::of(&v.data(), v.dtype()))
                    .collect();
                header.insert(KEY_LAYERS.into(), self.summaries_json(&computed));
                sink.write(views, header, None)
            }
            _ => {
                // Each layer is read when the writer gets to it: one big layer, or small ones
                // up to ~1 MiB (one vectored write), in memory at a time.
                let failed = std::cell::OnceCell::new();
                let views: Vec<_> = self
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
                // Summaries the header already has are kept; the others computed.
                let computed: Vec<LayerSummary> = views
                    .iter()
                    .zip(&self.summaries)
                    .map(|((_, v), known)| match known {
                        Some(s) => s.clone(),
                        None => LayerSummary::of(&v.data(), v.dtype()),
                    })
                    .collect();
                if let Some(e) = failed.get() {
                    return Err(Error::bad(self.where_(), crate::one_line(e)));
                }
                header.insert(KEY_LAYERS.into(), self.summaries_json(&computed));
                let res = sink.write(views, header, Some(&failed));
                match failed.into_inner() {
                    Some(e) => Err(e),
                    None => res,
                }
            }
        }
    }

    fn summaries_json(&self, computed: &[LayerSummary]) -> String {
        let by_name = self
            .layers
            .iter()
            .map(|l| l.name.as_str())
            .zip(computed)
            .collect();
        summary::to_json(&by_name)
    }
}

/// Where a run's bytes go.
enum Sink<'a> {
    /// A local file, written and synced.
    File(&'a Path),
    /// An object that must not exist yet, uploaded.
    #[cfg(feature = "remote")]
    Remote(&'a crate::remote::Remote),
}

impl Sink<'_> {
    /// Writes `views`; `failed` is where a view that could not read its data left
    /// the error (an upload stops there, before the object is complete).
    fn write<V: View>(
        self,
        views: Vec<(&str, V)>,
        header: HashMap<String, String>,
        failed: Option<&std::cell::OnceCell<Error>>,
    ) -> Result<()> {
        match self {
            Sink::File(path) => {
                let _ = failed;
                write_safetensors(path, views, header)
            }
            #[cfg(feature = "remote")]
            Sink::Remote(remote) => {
                let bad = |e: safetensors::SafeTensorError| {
                    Error::bad(remote.as_path(), format!("cannot write run file: {e}"))
                };
                let (head, views) = prepare(views, header).map_err(bad)?;
                let total =
                    8 + head.len() as u64 + views.iter().map(|v| v.data_len() as u64).sum::<u64>();
                let len = (head.len() as u64).to_le_bytes().to_vec();
                let pieces = [Cow::Owned(len), Cow::Owned(head)]
                    .into_iter()
                    .chain(views.iter().map(|v| v.data()))
                    .map(|piece| match failed.and_then(|f| f.get()) {
                        // The caller reports the error kept in `failed`.
                        Some(_) => Err(Error::internal("a layer could not be read")),
                        None => Ok(piece),
                    });
                remote.upload(total, pieces)
            }
        }
    }
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

/// Bytes handed to the kernel between two starts of write-back (see [`Chunked`]).
const CHUNK: usize = 1 << 20;

/// Writes `views` as a safetensors file at `path` (the same bytes as
/// `safetensors::serialize_to_file`), synced. Write-back of each [`CHUNK`] starts as
/// soon as it is written, so the disk works while the rest is copied in and the
/// final `fsync` waits only for the tail: 101.5 MB in 46 ms instead of 75 ms for
/// write + `fsync` of the same bytes (benches/README.md, "MiniLM").
fn write_safetensors<V: View>(
    path: &Path,
    views: Vec<(&str, V)>,
    header: HashMap<String, String>,
) -> Result<()> {
    let bad =
        |e: safetensors::SafeTensorError| Error::bad(path, format!("cannot write run file: {e}"));
    let (head, views) = prepare(views, header).map_err(bad)?;
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = Chunked::new(&file);
    let res = (|| {
        w.push(Cow::Owned((head.len() as u64).to_le_bytes().to_vec()))?;
        w.push(Cow::Owned(head))?;
        for v in &views {
            w.push(v.data())?;
        }
        w.flush()?;
        file.sync_all()
    })();
    res.map_err(|e| Error::io(path, e))
}

/// The header of a safetensors file (JSON padded with spaces to a multiple of 8)
/// and the views in file order, as `safetensors` lays them out: by descending
/// dtype, then by name.
fn prepare<V: View>(
    mut views: Vec<(&str, V)>,
    header: HashMap<String, String>,
) -> std::result::Result<(Vec<u8>, Vec<V>), safetensors::SafeTensorError> {
    views.sort_by(|(ln, l), (rn, r)| r.dtype().cmp(&l.dtype()).then(ln.cmp(rn)));
    let mut infos = Vec::with_capacity(views.len());
    let mut offset = 0;
    for (name, v) in &views {
        let n = v.data_len();
        infos.push((
            name.to_string(),
            safetensors::tensor::TensorInfo {
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
                data_offsets: (offset, offset + n),
            },
        ));
        offset += n;
    }
    let meta = safetensors::tensor::Metadata::new(Some(header), infos)?;
    let mut head = serde_json::to_vec(&meta)?;
    head.resize(head.len().next_multiple_of(8), b' ');
    Ok((head, views.into_iter().map(|(_, v)| v).collect()))
}

/// Writes pieces in vectored batches of about [`CHUNK`] bytes and starts the
/// write-back of each batch right away (`sync_file_range(SYNC_FILE_RANGE_WRITE)`
/// on Linux: a hint that does not wait; the caller's `fsync` is what makes the
/// file durable).
struct Chunked<'f, 'a> {
    file: &'f std::fs::File,
    pending: Vec<Cow<'a, [u8]>>,
    pending_len: usize,
    written: u64,
}

impl<'f, 'a> Chunked<'f, 'a> {
    fn new(file: &'f std::fs::File) -> Self {
        Chunked {
            file,
            pending: Vec::new(),
            pending_len: 0,
            written: 0,
        }
    }

    fn push(&mut self, data: Cow<'a, [u8]>) -> std::io::Result<()> {
        if data.len() < CHUNK {
            self.pending_len += data.len();
            self.pending.push(data);
            if self.pending_len >= CHUNK || self.pending.len() >= 512 {
                self.flush()?;
            }
            return Ok(());
        }
        self.flush()?;
        for piece in data.chunks(CHUNK) {
            self.write(&mut [IoSlice::new(piece)])?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let mut slices: Vec<IoSlice> = pending.iter().map(|d| IoSlice::new(d)).collect();
        self.write(&mut slices)?;
        self.pending_len = 0;
        Ok(())
    }

    /// Writes all of `slices`, then starts the write-back of what they held.
    fn write(&mut self, mut slices: &mut [IoSlice]) -> std::io::Result<()> {
        let start = self.written;
        while !slices.is_empty() {
            match (&mut &*self.file).write_vectored(slices) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n as u64;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        start_writeback(self.file, start, self.written - start);
        Ok(())
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to disk,
/// without waiting (errors ignored: the final `fsync` reports them).
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return;
    }
    // SAFETY: sync_file_range only reads its integer arguments; the fd is open for
    // as long as `file` is borrowed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}

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
                bytemuck::cast_slice::<$t, u8>(&s[start..end])
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn writes_the_bytes_safetensors_writes() {
        let n = |k: usize, seed: u8| (0..k).map(|i| (i as u8).wrapping_mul(seed)).collect();
        // Many small layers (batched), one spanning several chunks, mixed dtypes.
        let mut layers: Vec<(String, Bytes)> = (0..700)
            .map(|i| {
                (
                    format!("small.{i}"),
                    Bytes(Dtype::F32, vec![3], n(12, i as u8)),
                )
            })
            .collect();
        layers.push((
            "big".into(),
            Bytes(Dtype::F32, vec![CHUNK / 2 + 3], n(2 * CHUNK + 12, 7)),
        ));
        layers.push(("ids".into(), Bytes(Dtype::U8, vec![5], n(5, 3))));
        layers.push(("half".into(), Bytes(Dtype::F16, vec![2], n(4, 5))));
        let header: HashMap<String, String> = [("k".to_string(), "v".to_string())].into();
        let views = || {
            layers
                .iter()
                .map(|(k, v)| (k.as_str(), v))
                .collect::<Vec<_>>()
        };
        let want = safetensors::serialize(views(), Some(header.clone())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        write_safetensors(&path, views(), header).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes differ from safetensors::serialize");
    }
}
