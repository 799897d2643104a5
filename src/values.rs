//! Reading a layer's stored values as f32, in place, whatever its dtype.
//!
//! [`LayerData`] borrows the bytes of a memory-mapped run file (or owns f32 values
//! of a run in memory) and converts elements on the fly, so a huge layer can be
//! streamed in chunks or sampled at a few positions without being loaded whole.

use std::borrow::Cow;

use half::{bf16, f16};
use safetensors::Dtype;

/// A layer's values, readable as f32 by position.
pub struct LayerData<'a> {
    bytes: Cow<'a, [u8]>,
    /// Set for runs in memory: the values already converted.
    owned: Option<Vec<f32>>,
    /// The bytes are a read-only file mapping: pages read can be dropped again.
    mapped: bool,
    dtype: Dtype,
    len: usize,
}

impl<'a> LayerData<'a> {
    /// Values stored as `dtype` in little-endian `bytes`.
    pub fn from_bytes(bytes: Cow<'a, [u8]>, dtype: Dtype) -> Result<Self, String> {
        let size =
            elem_size(dtype).ok_or_else(|| format!("dtype {dtype} cannot be read as numbers"))?;
        if bytes.len() % size != 0 {
            return Err(format!(
                "{} bytes is not a whole number of {dtype} elements",
                bytes.len()
            ));
        }
        Ok(LayerData {
            len: bytes.len() / size,
            bytes,
            owned: None,
            mapped: false,
            dtype,
        })
    }

    /// Values in a read-only, file-backed memory mapping (a run file). Big reads
    /// and [`LayerData::release`] drop the pages read from this process, so
    /// streaming a huge layer does not leave it all resident.
    pub(crate) fn from_mapped(bytes: &'a [u8], dtype: Dtype) -> Result<Self, String> {
        let mut d = LayerData::from_bytes(Cow::Borrowed(bytes), dtype)?;
        d.mapped = true;
        Ok(d)
    }

    /// Drops the memory pages holding elements `elements` from this process when
    /// the data is a file mapping (reading them again maps the same bytes back
    /// in, from the page cache); does nothing otherwise.
    pub fn release(&self, elements: std::ops::Range<usize>) {
        #[cfg(unix)]
        if self.mapped {
            let size = self.bytes.len() / self.len.max(1);
            let end = elements.end.min(self.len);
            if elements.start >= end {
                return;
            }
            let page = 4096usize;
            let base = self.bytes.as_ptr() as usize;
            let lo = (base + elements.start * size).next_multiple_of(page);
            let hi = (base + end * size) / page * page;
            if lo < hi {
                // SAFETY: [lo, hi) lies inside a read-only shared file mapping owned by
                // the run (`mapped` is set only for those). MADV_DONTNEED drops this
                // process's page-table entries; the next access maps the same file
                // bytes back in, so no value seen through `bytes` ever changes.
                unsafe {
                    libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_DONTNEED);
                }
            }
        }
        #[cfg(not(unix))]
        let _ = elements;
    }

    /// Owned f32 values.
    pub fn from_f32(values: Vec<f32>) -> LayerData<'static> {
        LayerData {
            len: values.len(),
            bytes: Cow::Borrowed(&[]),
            owned: Some(values),
            mapped: false,
            dtype: Dtype::F32,
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

    /// Element `i` as f32 (panics when `i >= len`, like slice indexing).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        if let Some(v) = &self.owned {
            return v[i];
        }
        let b = &self.bytes;
        macro_rules! at {
            ($n:literal) => {{
                let s = i * $n;
                let a: [u8; $n] = b[s..s + $n].try_into().expect("element bytes");
                a
            }};
        }
        match self.dtype {
            Dtype::F32 => f32::from_le_bytes(at!(4)),
            Dtype::F16 => f16::from_le_bytes(at!(2)).to_f32(),
            Dtype::BF16 => bf16::from_le_bytes(at!(2)).to_f32(),
            Dtype::F64 => f64::from_le_bytes(at!(8)) as f32,
            Dtype::U8 | Dtype::BOOL => b[i] as f32,
            Dtype::I8 => b[i] as i8 as f32,
            Dtype::U16 => u16::from_le_bytes(at!(2)) as f32,
            Dtype::I16 => i16::from_le_bytes(at!(2)) as f32,
            Dtype::U32 => u32::from_le_bytes(at!(4)) as f32,
            Dtype::I32 => i32::from_le_bytes(at!(4)) as f32,
            Dtype::U64 => u64::from_le_bytes(at!(8)) as f32,
            Dtype::I64 => i64::from_le_bytes(at!(8)) as f32,
            _ => f32::NAN,
        }
    }

    /// Converts elements `start..start + out.len()` into `out`.
    pub fn read_into(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        assert!(
            end <= self.len,
            "range {start}..{end} past {} elements",
            self.len
        );
        if let Some(v) = &self.owned {
            out.copy_from_slice(&v[start..end]);
            return;
        }
        macro_rules! conv {
            ($n:literal, $f:expr) => {{
                let src = &self.bytes[start * $n..end * $n];
                for (o, c) in out.iter_mut().zip(src.chunks_exact($n)) {
                    *o = $f(c.try_into().expect("element bytes"));
                }
            }};
        }
        match self.dtype {
            Dtype::F32 => conv!(4, f32::from_le_bytes),
            Dtype::F16 => conv!(2, |a| f16::from_le_bytes(a).to_f32()),
            Dtype::BF16 => conv!(2, |a| bf16::from_le_bytes(a).to_f32()),
            Dtype::F64 => conv!(8, |a| f64::from_le_bytes(a) as f32),
            _ => {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = self.get(start + k);
                }
            }
        }
        // Streaming a mapped layer in big chunks: do not keep what was read resident.
        if self.mapped && (end - start) * (self.bytes.len() / self.len.max(1)) >= 1 << 16 {
            self.release(start..end);
        }
    }

    /// Elements `start..start + len` borrowed in place as f32, when the layer holds
    /// f32 values already (owned, or stored as F32, 4-byte aligned, on a
    /// little-endian machine); `None` otherwise (use [`LayerData::read_into`]).
    pub fn f32_slice(&self, start: usize, len: usize) -> Option<&[f32]> {
        let end = start.checked_add(len).filter(|&e| e <= self.len)?;
        if let Some(v) = &self.owned {
            return Some(&v[start..end]);
        }
        if self.dtype != Dtype::F32 || cfg!(target_endian = "big") {
            return None;
        }
        let bytes = &self.bytes[start * 4..end * 4];
        // SAFETY: any 4 bytes are a valid f32; `align_to` only yields the aligned middle.
        let (head, mid, tail) = unsafe { bytes.align_to::<f32>() };
        (head.is_empty() && tail.is_empty()).then_some(mid)
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

    /// All values as f32.
    pub fn to_vec(&self) -> Vec<f32> {
        let mut v = vec![0f32; self.len];
        self.read_into(0, &mut v);
        v
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
