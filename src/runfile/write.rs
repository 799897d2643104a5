//! Saving a run: the safetensors writer fed without copies, into a locked temp file
//! that is synced and renamed into place.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Storage, Tensor};
use safetensors::{Dtype, View};

#[cfg(feature = "remote")]
use super::KEY_LAYERS;
use super::{summary, LayerInfo, LayerSummary, Run, Store};
use crate::staging::RunTemp;
use crate::{Error, Result};

impl Run {
    /// Writes `<dir>/<run-id>.safetensors` atomically (a locked dot temp file in
    /// `dir`, `.<run-id>.safetensors.candlelight-<pid>-<n>.tmp`, synced, then renamed;
    /// `candlelight watch` removes such a temp once its writer is gone) and returns
    /// its path. Creates `dir` if needed; never replaces an existing file. Tensors on
    /// a GPU are copied to the CPU first. The data is written with direct I/O where
    /// the file system allows it (see `local`; `CANDLELIGHT_DIRECT_IO=0` turns it
    /// off), so the new file is not left in the page cache.
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
                let known = vec![None; views.len()];
                self.emit(sink, views, known, header, None)
            }
            _ => {
                // Each layer is read when the writer gets to it: one layer in memory
                // at a time. Summaries the header already has are kept.
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
                let res = self.emit(sink, views, self.summaries.clone(), header, Some(&failed));
                match failed.into_inner() {
                    Some(e) => Err(Error::bad(self.where_(), crate::one_line(&e))),
                    None => res,
                }
            }
        }
    }

    /// Writes `views` (in layer order) with `header` and the layers' summaries
    /// (`known[i]`, or computed from the bytes) to `sink`.
    fn emit<V: View>(
        &self,
        sink: Sink<'_>,
        views: Vec<(&str, V)>,
        known: Vec<Option<LayerSummary>>,
        header: HashMap<String, String>,
        failed: Option<&std::cell::OnceCell<Error>>,
    ) -> Result<()> {
        match sink {
            Sink::File(path) => {
                let _ = failed;
                let json = |s: &[LayerSummary]| self.summaries_json(s);
                super::local::write_run_file(path, views, known, header, json)
            }
            #[cfg(feature = "remote")]
            Sink::Remote(remote) => {
                // The header goes first in an upload, so the summaries are
                // computed before it.
                let computed: Vec<LayerSummary> = views
                    .iter()
                    .zip(known)
                    .map(|((_, v), k)| k.unwrap_or_else(|| LayerSummary::of(&v.data(), v.dtype())))
                    .collect();
                if failed.is_some_and(|f| f.get().is_some()) {
                    return Err(Error::internal("a layer could not be read"));
                }
                let mut header = header;
                header.insert(KEY_LAYERS.into(), self.summaries_json(&computed));
                upload(remote, views, header, failed)
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

/// Uploads `views` with `header` as one object; `failed` is where a view that
/// could not read its data left the error (the upload stops there, before the
/// object is complete).
#[cfg(feature = "remote")]
fn upload<V: View>(
    remote: &crate::remote::Remote,
    views: Vec<(&str, V)>,
    header: HashMap<String, String>,
    failed: Option<&std::cell::OnceCell<Error>>,
) -> Result<()> {
    let bad = |e: safetensors::SafeTensorError| {
        Error::bad(remote.as_path(), format!("cannot write run file: {e}"))
    };
    let (head, views) = prepare(views, header).map_err(bad)?;
    let total = 8 + head.len() as u64 + views.iter().map(|v| v.data_len() as u64).sum::<u64>();
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

/// The header of a safetensors file (JSON padded with spaces to a multiple of 8)
/// and the views in file order, as `safetensors` lays them out: by descending
/// dtype, then by name.
#[cfg(feature = "remote")]
fn prepare<V: View>(
    views: Vec<(&str, V)>,
    header: HashMap<String, String>,
) -> std::result::Result<(Vec<u8>, Vec<V>), safetensors::SafeTensorError> {
    let order = super::local::file_order(&views);
    let mut head = super::local::head(&views, &order, header)?;
    head.resize(head.len().next_multiple_of(8), b' ');
    let mut views: Vec<Option<V>> = views.into_iter().map(|(_, v)| Some(v)).collect();
    let views = order.iter().map(|&i| views[i].take().expect("each once"));
    Ok((head, views.collect()))
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
