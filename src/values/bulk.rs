//! Reading a whole layer fast: chunks in parallel (rayon), straight into memory
//! that is never zeroed first, so each page is touched once, by the thread that
//! fills it.

use std::fs::File;
use std::mem::MaybeUninit;

use rayon::prelude::*;
use safetensors::Dtype;

use super::{LayerData, Source};

/// Elements per chunk of a parallel scan ([`LayerData::par_chunks`]): 256 KiB of
/// f32, which stays in a core's L2 cache while every consumer of the chunk runs.
pub(crate) const SCAN_CHUNK: usize = 1 << 16;
/// Bytes per task when a layer is copied whole into fresh memory.
const COPY_CHUNK: usize = 1 << 20;

impl LayerData<'_> {
    /// Calls `f(start, values)` on consecutive chunks of [`SCAN_CHUNK`] elements, in
    /// parallel, each chunk read once into a per-thread buffer (or borrowed in place
    /// when the values are f32 in memory); the results come back in chunk order.
    /// Read failures are latched as for [`LayerData::read_into`].
    pub(crate) fn par_chunks<R: Send>(&self, f: impl Fn(usize, &[f32]) -> R + Sync) -> Vec<R> {
        self.par_chunks_in(0..self.len.div_ceil(SCAN_CHUNK), f)
    }

    /// [`LayerData::par_chunks`] over chunks `ks` only (chunk `k` starts at element
    /// `k * SCAN_CHUNK`), for a scan that merges its results batch by batch.
    pub(crate) fn par_chunks_in<R: Send>(
        &self,
        ks: std::ops::Range<usize>,
        f: impl Fn(usize, &[f32]) -> R + Sync,
    ) -> Vec<R> {
        let ks = ks.start..ks.end.min(self.len.div_ceil(SCAN_CHUNK));
        let items = vec![(); ks.len()];
        self.par_chunks_with(ks.start, items, |start, c, ()| f(start, c))
    }

    /// [`LayerData::par_chunks_in`] with an item of the caller's per chunk: item
    /// `i` goes with chunk `k0 + i` (`f(start, values, item)`), e.g. the part of an
    /// output that only this chunk writes.
    pub(crate) fn par_chunks_with<T: Send, R: Send>(
        &self,
        k0: usize,
        items: Vec<T>,
        f: impl Fn(usize, &[f32], T) -> R + Sync,
    ) -> Vec<R> {
        let n = self.len;
        let one = |(i, item): (usize, T)| self.with_chunk(k0 + i, |start, c| f(start, c, item));
        assert!(
            k0 + items.len() <= n.div_ceil(SCAN_CHUNK),
            "chunks past the layer"
        );
        if items.len() <= 1 {
            return items.into_iter().enumerate().map(one).collect();
        }
        items.into_par_iter().enumerate().map(one).collect()
    }

    /// Folds every chunk of [`SCAN_CHUNK`] elements into per-thread accumulators made
    /// by `init` (`f(acc, start, values)`), in parallel, then merges them: for
    /// results that do not depend on the order (an OR of flags).
    pub(crate) fn par_fold<A: Send>(
        &self,
        init: impl Fn() -> A + Sync + Send,
        f: impl Fn(A, usize, &[f32]) -> A + Sync + Send,
        merge: impl Fn(A, A) -> A + Sync + Send,
    ) -> A {
        let n = self.len;
        (0..n.div_ceil(SCAN_CHUNK))
            .into_par_iter()
            .fold(&init, |acc, k| {
                self.with_chunk(k, |start, c| f(acc, start, c))
            })
            .reduce(&init, &merge)
    }

    /// Calls `f(start, values)` with chunk `k` of [`SCAN_CHUNK`] elements: borrowed in
    /// place when the values are f32 in memory, else read into this thread's buffer.
    fn with_chunk<R>(&self, k: usize, f: impl FnOnce(usize, &[f32]) -> R) -> R {
        let start = k * SCAN_CHUNK;
        let len = SCAN_CHUNK.min(self.len - start);
        if let Some(s) = self.f32_slice(start, len) {
            return f(start, s);
        }
        with_buffer(len, |buf| {
            self.read_into(start, buf);
            f(start, buf)
        })
    }

    /// All values as f32 (see [`LayerData::check`] for read failures), read in
    /// parallel chunks straight into the result.
    pub fn to_vec(&self) -> Vec<f32> {
        let n = self.len;
        if let Source::File {
            file,
            offset,
            path,
            layer,
        } = &self.source
        {
            if self.dtype == Dtype::F32 && cfg!(target_endian = "little") {
                return match read_vec::<f32>(file, *offset, n) {
                    Ok(v) => v,
                    Err(e) => {
                        let mut v = vec![f32::NAN; n];
                        self.fail(path, layer, e, &mut v);
                        v
                    }
                };
            }
        }
        let mut v: Vec<f32> = Vec::with_capacity(n);
        let per = COPY_CHUNK / 4;
        v.spare_capacity_mut()[..n]
            .par_chunks_mut(per)
            .enumerate()
            .for_each(|(k, out)| {
                let mut buf = [0f32; 4096];
                for (i, o) in out.chunks_mut(buf.len()).enumerate() {
                    let b = &mut buf[..o.len()];
                    self.read_into(k * per + i * 4096, b);
                    for (d, &s) in o.iter_mut().zip(b.iter()) {
                        d.write(s);
                    }
                }
            });
        // SAFETY: every chunk of the first `n` elements was written just above.
        unsafe { v.set_len(n) };
        v
    }
}

/// Calls `f` with `len` elements of this thread's chunk buffer. The buffer outlives
/// the scan (at most [`SCAN_CHUNK`] f32 per thread that scanned), so a chunk does
/// not pay for a fresh buffer: rayon makes a scan's per-task state once per task,
/// and a new 256 KiB `Vec` is zeroed (and, when malloc maps it, faulted in) before
/// the read overwrites it. A nested scan on the same thread gets a buffer of its
/// own (the thread's is taken out while `f` runs).
fn with_buffer<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static BUFFER: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buf = BUFFER.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    if buf.len() <= SCAN_CHUNK {
        BUFFER.set(buf);
    }
    r
}

/// `count` values of `T` stored at `offset` of `file` (native byte order), read
/// in parallel chunks of about 1 MiB into memory that is not zeroed first.
pub(crate) fn read_vec<T: bytemuck::Pod + Send>(
    file: &File,
    offset: u64,
    count: usize,
) -> std::io::Result<Vec<T>> {
    let size = std::mem::size_of::<T>().max(1);
    let mut v: Vec<T> = Vec::with_capacity(count);
    let per = (COPY_CHUNK / size).max(1);
    v.spare_capacity_mut()[..count]
        .par_chunks_mut(per)
        .enumerate()
        .try_for_each(|(k, out)| {
            let len = std::mem::size_of_val(out);
            // SAFETY: the same memory seen as bytes; `MaybeUninit<u8>` has no
            // validity requirement, so any byte (or none) may be there.
            let bytes: &mut [MaybeUninit<u8>] =
                unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast(), len) };
            read_uninit_at(file, bytes, offset + (k * per * size) as u64)
        })?;
    // SAFETY: every byte of the first `count` values was written (a failed read
    // returned above) and `T` is `Pod`: any bytes are a valid `T`.
    unsafe { v.set_len(count) };
    Ok(v)
}

/// Fills `buf` from `file` at `offset` without initialising it first; a file that
/// ends first is `UnexpectedEof`.
#[cfg(unix)]
fn read_uninit_at(
    file: &File,
    buf: &mut [MaybeUninit<u8>],
    mut offset: u64,
) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let at = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: pread writes at most `rest.len()` bytes into the buffer it is given,
        // which is valid for writes of that many bytes.
        let r = unsafe { libc::pread(file.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
        match r {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            r if r > 0 => {
                done += r as usize;
                offset += r as u64;
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn read_uninit_at(file: &File, buf: &mut [MaybeUninit<u8>], offset: u64) -> std::io::Result<()> {
    for b in buf.iter_mut() {
        b.write(0);
    }
    // SAFETY: every byte was initialised just above.
    let bytes: &mut [u8] =
        unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast(), buf.len()) };
    super::read_exact_at(file, bytes, offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn parallel_reads_match_the_plain_ones() {
        let n = 3 * SCAN_CHUNK + 17;
        let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 7.0).collect();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &[0u8; 12]).unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        let p = std::path::Path::new("x");
        let d = LayerData::from_file(&f, 12, bytes.len(), Dtype::F32, p, "l").unwrap();
        assert_eq!(d.to_vec(), v);
        let starts: Vec<usize> = d.par_chunks(|s, c| {
            assert_eq!(c[0], v[s]);
            s
        });
        assert_eq!(starts.len(), 4);
        let back: Vec<f32> = read_vec(&f, 12, n).unwrap();
        assert_eq!(back, v);
        assert!(read_vec::<f32>(&f, 16, n).is_err(), "past the end");
        let d = LayerData::from_file(&f, 16, bytes.len(), Dtype::F32, p, "l").unwrap();
        assert!(d.to_vec()[n - 1].is_nan() && d.check().is_err());
        let h: Vec<u8> = v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect();
        let d = LayerData::from_bytes(Cow::Owned(h), Dtype::F16).unwrap();
        let want: Vec<f32> = v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect();
        assert_eq!(d.to_vec(), want);
    }
}
