//! Saving a run: the safetensors writer fed without copies, into a locked temp file
//! that is synced and renamed into place.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Storage, Tensor};
use safetensors::{Dtype, View};

use super::{LayerInfo, Run, Store};
use crate::staging::RunTemp;
use crate::{Error, Result};

impl Run {
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
