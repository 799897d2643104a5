//! Reading a layer's stored values as f32, whatever its dtype.
//!
//! [`LayerData`] reads a layer of a run file with positioned reads (`pread`) into
//! small buffers, or borrows bytes / owns f32 values of a run in memory, and
//! converts elements on the fly, so a huge layer can be streamed in chunks or
//! sampled at a few positions without being loaded whole.
//!
//! Run files are never memory-mapped: a producer that truncates a file while it is
//! read would make a mapping fault (SIGBUS kills the process). A positioned read of
//! a shrunken file just comes back short; the reader fills the missing values with
//! NaN and remembers the failure, which [`LayerData::check`] reports. Every
//! consumer that returns a result (stats, pictures, diffs, galleries) checks it.
//!
//! Whole layers are read fast by `bulk`: chunks scanned in parallel
//! (`par_chunks`, `par_fold`), `to_vec` and `read_vec` straight into memory that is
//! not zeroed first.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use half::{bf16, f16};
use safetensors::Dtype;

use crate::{Error, Result};

mod bulk;
mod lanes;
pub(crate) mod stats;

pub use stats::Stats;

pub(crate) use bulk::read_vec;
pub(crate) use bulk::SCAN_CHUNK;
pub(crate) use lanes::dispatch;

/// Where the bytes are.
enum Source<'a> {
    /// Bytes in memory.
    Bytes(Cow<'a, [u8]>),
    /// f32 values already converted (runs in memory).
    F32(Vec<f32>),
    /// `len_bytes` bytes at `offset` in a run file, read on demand.
    File {
        file: &'a File,
        offset: u64,
        path: &'a Path,
        layer: &'a str,
    },
}

/// A layer's values, readable as f32 by position.
pub struct LayerData<'a> {
    source: Source<'a>,
    dtype: Dtype,
    len: usize,
    /// The first read that failed (file shrank, I/O error); later reads fill NaN.
    failed: OnceLock<Failure>,
}

/// A failed read, kept to be reported by [`LayerData::check`] (an `io::Error` is
/// not `Clone`: its kind and text are kept).
struct Failure {
    path: PathBuf,
    layer: String,
    kind: std::io::ErrorKind,
    msg: String,
}

impl<'a> LayerData<'a> {
    /// Values stored as `dtype` in little-endian `bytes` ([`Error::BadOption`] for a
    /// dtype that is not numbers or bytes that are not whole elements).
    pub fn from_bytes(bytes: Cow<'a, [u8]>, dtype: Dtype) -> Result<Self> {
        Ok(LayerData {
            len: element_count(bytes.len(), dtype).map_err(Error::option)?,
            source: Source::Bytes(bytes),
            dtype,
            failed: OnceLock::new(),
        })
    }

    /// `len_bytes` bytes stored as `dtype` at `offset` of `file` (the run file at
    /// `path`, layer `layer`: both only name the data in errors).
    pub(crate) fn from_file(
        file: &'a File,
        offset: u64,
        len_bytes: usize,
        dtype: Dtype,
        path: &'a Path,
        layer: &'a str,
    ) -> Result<Self> {
        let len = element_count(len_bytes, dtype)
            .map_err(|m| Error::bad(path, format!("layer {layer:?}: {m}")))?;
        Ok(LayerData {
            len,
            source: Source::File {
                file,
                offset,
                path,
                layer,
            },
            dtype,
            failed: OnceLock::new(),
        })
    }

    /// The values of a candle tensor, copied to the CPU and converted to f32.
    pub fn from_tensor(t: &candle_core::Tensor) -> Result<LayerData<'static>> {
        let v = t
            .to_device(&candle_core::Device::Cpu)?
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        Ok(LayerData::from_f32(v))
    }

    /// Owned f32 values.
    pub fn from_f32(values: Vec<f32>) -> LayerData<'static> {
        LayerData {
            len: values.len(),
            source: Source::F32(values),
            dtype: Dtype::F32,
            failed: OnceLock::new(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The stored dtype.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// `Ok` unless a read from the run file failed (the file shrank while it was
    /// read, or an I/O error): then the values read were incomplete (missing ones
    /// read as NaN) and the error names the file and the layer.
    pub fn check(&self) -> Result<()> {
        match self.failed.get() {
            None => Ok(()),
            Some(f) => Err(read_error(
                &f.path,
                Some(&f.layer),
                std::io::Error::new(f.kind, f.msg.clone()),
            )),
        }
    }

    /// Element `i` as f32 (panics when `i >= len`, like slice indexing; NaN when the
    /// read fails, see [`LayerData::check`]).
    pub fn get(&self, i: usize) -> f32 {
        assert!(i < self.len, "index {i} past {} elements", self.len);
        let mut v = [0f32];
        self.read_into(i, &mut v);
        v[0]
    }

    /// Converts elements `start..start + out.len()` into `out` (values that cannot
    /// be read become NaN, see [`LayerData::check`]).
    pub fn read_into(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        assert!(
            end <= self.len,
            "range {start}..{end} past {} elements",
            self.len
        );
        match &self.source {
            Source::F32(v) => out.copy_from_slice(&v[start..end]),
            Source::Bytes(b) => {
                let size = self.elem_size();
                convert(self.dtype, &b[start * size..end * size], out);
            }
            Source::File { .. } => self.read_file(start, out),
        }
    }

    fn elem_size(&self) -> usize {
        element_size(self.dtype).unwrap_or(1)
    }

    /// Reads elements from the file through a small stack of buffers: f32 data is
    /// read straight into `out`, other dtypes through a 64 KiB buffer.
    fn read_file(&self, start: usize, out: &mut [f32]) {
        let Source::File {
            file,
            offset,
            path,
            layer,
        } = &self.source
        else {
            return;
        };
        let size = self.elem_size();
        let at = |elem: usize| offset + (elem * size) as u64;
        if self.dtype == Dtype::F32 && cfg!(target_endian = "little") {
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
            if let Err(e) = read_exact_at(file, bytes, at(start)) {
                self.fail(path, layer, e, out);
            }
            return;
        }
        const BUF: usize = 1 << 16;
        let mut buf = [0u8; BUF];
        let per = BUF / size;
        let mut done = 0;
        while done < out.len() {
            let n = per.min(out.len() - done);
            let bytes = &mut buf[..n * size];
            if let Err(e) = read_exact_at(file, bytes, at(start + done)) {
                self.fail(path, layer, e, &mut out[done..]);
                return;
            }
            convert(self.dtype, bytes, &mut out[done..done + n]);
            done += n;
        }
    }

    fn fail(&self, path: &Path, layer: &str, e: std::io::Error, out: &mut [f32]) {
        out.fill(f32::NAN);
        let _ = self.failed.set(Failure {
            path: path.to_path_buf(),
            layer: layer.to_string(),
            kind: e.kind(),
            msg: e.to_string(),
        });
    }

    /// Elements `start..start + len` borrowed in place as f32, when the layer holds
    /// f32 values in memory already (owned, or bytes stored as F32, 4-byte aligned,
    /// on a little-endian machine); `None` otherwise (use [`LayerData::read_into`]).
    pub fn f32_slice(&self, start: usize, len: usize) -> Option<&[f32]> {
        let end = start.checked_add(len).filter(|&e| e <= self.len)?;
        match &self.source {
            Source::F32(v) => Some(&v[start..end]),
            Source::Bytes(b) if self.dtype == Dtype::F32 && cfg!(target_endian = "little") => {
                bytemuck::try_cast_slice(&b[start * 4..end * 4]).ok()
            }
            _ => None,
        }
    }

    /// Calls `f(offset, values)` on consecutive chunks of at most `chunk` elements.
    pub fn for_each_chunk(&self, chunk: usize, mut f: impl FnMut(usize, &[f32])) {
        let chunk = chunk.max(1);
        let mut buf = vec![0f32; chunk.min(self.len)];
        let mut start = 0;
        while start < self.len {
            let n = chunk.min(self.len - start);
            self.read_into(start, &mut buf[..n]);
            f(start, &buf[..n]);
            start += n;
        }
    }
}

/// Fills `buf` from `file` at `offset`; a file that ends first is `UnexpectedEof`.
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            match std::os::windows::fs::FileExt::seek_read(
                file,
                &mut buf[done..],
                offset + done as u64,
            ) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn element_size(dtype: Dtype) -> Result<usize, String> {
    elem_size(dtype).ok_or_else(|| format!("dtype {dtype} cannot be read as numbers"))
}

/// How many `dtype` elements `len_bytes` bytes hold, if a whole number.
fn element_count(len_bytes: usize, dtype: Dtype) -> Result<usize, String> {
    let size = element_size(dtype)?;
    if len_bytes % size != 0 {
        return Err(format!(
            "{len_bytes} bytes is not a whole number of {dtype} elements"
        ));
    }
    Ok(len_bytes / size)
}

/// The error for a positioned read of the run file `path` that failed: a file that
/// ended early is a [`Error::BadRunFile`] (truncated or rewritten under the reader),
/// anything else an [`Error::Io`]. `layer` names the layer being read, if any.
pub(crate) fn read_error(path: &Path, layer: Option<&str>, e: std::io::Error) -> Error {
    let at = layer.map(|l| format!("layer {l:?}: ")).unwrap_or_default();
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::bad(
            path,
            format!("{at}the file ended early while it was read (truncated or rewritten by its producer?)"),
        )
    } else if layer.is_some() {
        Error::io(path, std::io::Error::new(e.kind(), format!("{at}{e}")))
    } else {
        Error::io(path, e)
    }
}

/// Converts little-endian elements of `dtype` in `src` into `out` (same count).
fn convert(dtype: Dtype, src: &[u8], out: &mut [f32]) {
    macro_rules! conv {
        ($n:literal, $f:expr) => {{
            for (o, c) in out.iter_mut().zip(src.chunks_exact($n)) {
                *o = $f(c.try_into().expect("element bytes"));
            }
        }};
    }
    match dtype {
        Dtype::F32 => conv!(4, f32::from_le_bytes),
        Dtype::F16 => conv!(2, |a| f16::from_le_bytes(a).to_f32()),
        Dtype::BF16 => conv!(2, |a| bf16::from_le_bytes(a).to_f32()),
        Dtype::F64 => conv!(8, |a| f64::from_le_bytes(a) as f32),
        Dtype::U8 | Dtype::BOOL => conv!(1, |a: [u8; 1]| a[0] as f32),
        Dtype::I8 => conv!(1, |a: [u8; 1]| a[0] as i8 as f32),
        Dtype::U16 => conv!(2, |a| u16::from_le_bytes(a) as f32),
        Dtype::I16 => conv!(2, |a| i16::from_le_bytes(a) as f32),
        Dtype::U32 => conv!(4, |a| u32::from_le_bytes(a) as f32),
        Dtype::I32 => conv!(4, |a| i32::from_le_bytes(a) as f32),
        Dtype::U64 => conv!(8, |a| u64::from_le_bytes(a) as f32),
        Dtype::I64 => conv!(8, |a| i64::from_le_bytes(a) as f32),
        _ => out.fill(f32::NAN),
    }
}

/// Bytes per element of the dtypes candlelight reads as numbers.
pub fn elem_size(dtype: Dtype) -> Option<usize> {
    Some(match dtype {
        Dtype::BOOL | Dtype::U8 | Dtype::I8 => 1,
        Dtype::F16 | Dtype::BF16 | Dtype::U16 | Dtype::I16 => 2,
        Dtype::F32 | Dtype::U32 | Dtype::I32 => 4,
        Dtype::F64 | Dtype::U64 | Dtype::I64 => 8,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_supported_dtype() {
        let f: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let d = LayerData::from_bytes(Cow::Owned(f), Dtype::F32).unwrap();
        assert_eq!(d.to_vec(), vec![1.5, -2.0]);
        let h: Vec<u8> = [bf16::from_f32(3.0), bf16::from_f32(-0.5)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let d = LayerData::from_bytes(Cow::Owned(h), Dtype::BF16).unwrap();
        assert_eq!(d.to_vec(), vec![3.0, -0.5]);
        let i: Vec<u8> = [-7i64, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
        let d = LayerData::from_bytes(Cow::Owned(i), Dtype::I64).unwrap();
        assert_eq!(d.to_vec(), vec![-7.0, 9.0]);
        assert!(LayerData::from_bytes(Cow::Owned(vec![0u8; 3]), Dtype::F32).is_err());
    }

    #[test]
    fn chunks_cover_everything_once() {
        let d = LayerData::from_f32((0..10).map(|v| v as f32).collect());
        let mut seen = vec![];
        d.for_each_chunk(3, |off, c| {
            assert_eq!(c[0], off as f32);
            seen.extend_from_slice(c);
        });
        assert_eq!(seen.len(), 10);
    }
}
