//! Saving a run into a local file in one pass over its data.
//!
//! Each layer's bytes go by in pieces (one chunk of the statistics' scan, 256 KiB
//! of f32): a piece is hashed and summarised and copied into an aligned buffer
//! while it is in the cache; full buffers (4 MiB) go to a second thread that
//! writes them with direct I/O (`O_DIRECT` on Linux: the disk reads the buffer
//! itself, nothing is copied into the page cache) while the next one fills. Where
//! the file system refuses direct I/O (tmpfs, some network file systems) or
//! `CANDLELIGHT_DIRECT_IO=0`, the same buffers are written through the page cache
//! with write-back started at once.
//!
//! The header is only known after the data (it holds the summaries), so its room
//! is sized first for the widest summaries; the data starts at the next multiple
//! of 4096 bytes, the header (written last, at offset 0) is padded with spaces up
//! to it, as safetensors allows. Then the file is cut to its exact length and
//! synced. Compared with a separate summary pass and buffered writes, this halves
//! the CPU a save costs (benches/README.md, "Background writer").

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use safetensors::tensor::TensorInfo;
use safetensors::View;

use super::summary::SummaryFold;
use super::{LayerSummary, KEY_LAYERS};
use crate::{Error, Result};

/// Alignment of direct I/O buffers, file offsets and lengths: a page, at least
/// any disk's logical block.
pub(crate) const ALIGN: usize = 4096;
/// Bytes per buffer handed to the writing thread.
const BUF: usize = 4 << 20;
/// Alignment of buffers of at least this size (a huge page on x86-64 Linux).
const HUGE_PAGE: usize = 2 << 20;
/// Buffers kept for the next saves, process-wide (allocating and faulting in
/// 8 MiB per save would cost as much as the copy it saves).
const POOL_MAX: usize = 4;

/// Environment variable that turns direct I/O off (`0`).
pub const DIRECT_IO_ENV: &str = "CANDLELIGHT_DIRECT_IO";

/// Writes `views` (in the run's layer order) as a safetensors file at `path`,
/// synced: `header` plus [`KEY_LAYERS`], whose value `layers_json` makes from the
/// layers' summaries (in the same order): `known[i]` when given, else computed
/// from the bytes as they are written.
pub(super) fn write_run_file<V: View>(
    path: &Path,
    views: Vec<(&str, V)>,
    known: Vec<Option<LayerSummary>>,
    header: HashMap<String, String>,
    layers_json: impl Fn(&[LayerSummary]) -> String,
) -> Result<()> {
    write_file(path, views, known, header, layers_json, direct_io_wanted())
}

/// [`write_run_file`], trying direct I/O only when `direct`.
fn write_file<V: View>(
    path: &Path,
    views: Vec<(&str, V)>,
    known: Vec<Option<LayerSummary>>,
    header: HashMap<String, String>,
    layers_json: impl Fn(&[LayerSummary]) -> String,
    direct: bool,
) -> Result<()> {
    let io = |e| Error::io(path, e);
    let order = file_order(&views);
    let head_with = |summaries: &[LayerSummary]| {
        let mut h = header.clone();
        h.insert(KEY_LAYERS.into(), layers_json(summaries));
        head(&views, &order, h).map_err(|e| Error::bad(path, format!("cannot write run file: {e}")))
    };
    let room: Vec<LayerSummary> = known
        .iter()
        .map(|k| k.clone().unwrap_or_else(LayerSummary::widest))
        .collect();
    let data_start = (8 + head_with(&room)?.len()).next_multiple_of(ALIGN);
    let (file, direct) = open(path, direct).map_err(io)?;
    let mut out = Target {
        file: &file,
        direct,
    };
    let (summaries, data_len) =
        write_data(&mut out, data_start as u64, &views, &order, known).map_err(io)?;
    let head = head_with(&summaries)?;
    if 8 + head.len() > data_start {
        // Cannot happen: the room was sized for the widest summaries (tested).
        return Err(Error::internal(format!(
            "{}: header of {} bytes does not fit its room of {data_start}",
            path.display(),
            head.len()
        )));
    }
    let mut first = Aligned::new(data_start);
    let first_bytes = first.as_mut();
    first_bytes[..8].copy_from_slice(&(data_start as u64 - 8).to_le_bytes());
    first_bytes[8..8 + head.len()].copy_from_slice(&head);
    first_bytes[8 + head.len()..].fill(b' ');
    (|| {
        out.write(first.as_ref(), 0)?;
        file.set_len(data_start as u64 + data_len)?;
        file.sync_all()
    })()
    .map_err(io)
}

/// Layer indices in the order safetensors lays tensors out: by descending dtype,
/// then by name.
pub(super) fn file_order<V: View>(views: &[(&str, V)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..views.len()).collect();
    order.sort_by(|&a, &b| {
        let ((an, av), (bn, bv)) = (&views[a], &views[b]);
        bv.dtype().cmp(&av.dtype()).then(an.cmp(bn))
    });
    order
}

/// The header JSON (not padded) of `views` laid out in `order`, the metadata
/// keys sorted (so the same run always gives the same bytes).
pub(super) fn head<V: View>(
    views: &[(&str, V)],
    order: &[usize],
    header: HashMap<String, String>,
) -> std::result::Result<Vec<u8>, safetensors::SafeTensorError> {
    let mut offset = 0;
    let tensors: Vec<(String, TensorInfo)> = order
        .iter()
        .map(|&i| {
            let (name, v) = &views[i];
            let n = v.data_len();
            offset += n;
            let info = TensorInfo {
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
                data_offsets: (offset - n, offset),
            };
            (name.to_string(), info)
        })
        .collect();
    let metadata: BTreeMap<String, String> = header.into_iter().collect();
    let head = Head { metadata, tensors };
    let json = serde_json::to_vec(&head)?;
    // What safetensors would say of it (offsets, duplicate names, sizes).
    safetensors::tensor::Metadata::new(None, head.tensors)?;
    Ok(json)
}

/// A safetensors header: `__metadata__` first, then the tensors in file order.
struct Head {
    metadata: BTreeMap<String, String>,
    tensors: Vec<(String, TensorInfo)>,
}

impl serde::Serialize for Head {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1 + self.tensors.len()))?;
        map.serialize_entry("__metadata__", &self.metadata)?;
        for (name, info) in &self.tensors {
            map.serialize_entry(name, info)?;
        }
        map.end()
    }
}

/// Writes the layers' bytes from `start` on, in `order`, and returns their
/// summaries (in the views' order) and the number of bytes.
fn write_data<V: View>(
    out: &mut Target<'_>,
    start: u64,
    views: &[(&str, V)],
    order: &[usize],
    mut known: Vec<Option<LayerSummary>>,
) -> std::io::Result<(Vec<LayerSummary>, u64)> {
    let (full_tx, full_rx) = sync_channel::<Full>(1);
    let (empty_tx, empty_rx) = channel::<Aligned>();
    for _ in 0..2 {
        let _ = empty_tx.send(take_buffer());
    }
    std::thread::scope(|s| {
        let writer = std::thread::Builder::new()
            .name("candlelight-run-io".into())
            .spawn_scoped(s, || write_buffers(out, full_rx, empty_tx))?;
        let mut fill = Filler {
            buf: empty_rx.recv().ok(),
            fill: 0,
            offset: start,
            full_tx,
            empty_rx: &empty_rx,
        };
        let mut summaries = vec![None; views.len()];
        let mut produce = || -> std::io::Result<()> {
            for &i in order {
                let (name, v) = &views[i];
                let data = v.data();
                if data.len() != v.data_len() {
                    return Err(std::io::Error::other(format!(
                        "layer {name:?} gave {} bytes, not {}",
                        data.len(),
                        v.data_len()
                    )));
                }
                let mut fold = known[i].is_none().then(|| SummaryFold::new(v.dtype()));
                for piece in data.chunks(SummaryFold::piece_len(v.dtype()).max(1)) {
                    if let Some(f) = &mut fold {
                        f.push(piece);
                    }
                    fill.put(piece)?;
                }
                summaries[i] = known[i].take().or_else(|| fold.map(SummaryFold::finish));
            }
            fill.flush()
        };
        let produced = produce();
        let total = fill.offset - start;
        drop(fill);
        let written = writer.join().unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the run file's writing thread panicked",
            ))
        });
        while let Ok(b) = empty_rx.try_recv() {
            give_buffer(b);
        }
        // The writing thread's own error explains a stopped producer.
        written?;
        produced?;
        let summaries = summaries
            .into_iter()
            .map(|s| s.expect("every layer summarised"));
        Ok((summaries.collect(), total))
    })
}

/// A full buffer: its bytes `..len` (zero-padded to [`ALIGN`]) go at `offset`.
struct Full {
    buf: Aligned,
    offset: u64,
    len: usize,
}

/// The writing thread: writes each full buffer and hands it back.
fn write_buffers(
    out: &mut Target<'_>,
    full: Receiver<Full>,
    empty: std::sync::mpsc::Sender<Aligned>,
) -> std::io::Result<()> {
    for Full { buf, offset, len } in full {
        out.write(&buf.as_ref()[..len.next_multiple_of(ALIGN)], offset)?;
        if empty.send(buf).is_err() {
            break;
        }
    }
    Ok(())
}

/// The producer's side: copies pieces into the buffer being filled and sends it
/// when full; the writing thread gone (its error is what the caller reports)
/// shows as a `BrokenPipe`.
struct Filler<'r> {
    buf: Option<Aligned>,
    fill: usize,
    offset: u64,
    full_tx: SyncSender<Full>,
    empty_rx: &'r Receiver<Aligned>,
}

impl Filler<'_> {
    fn put(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let buf = self.buf.as_mut().ok_or_else(gone)?;
            let k = (BUF - self.fill).min(bytes.len());
            buf.as_mut()[self.fill..self.fill + k].copy_from_slice(&bytes[..k]);
            self.fill += k;
            bytes = &bytes[k..];
            if self.fill == BUF {
                self.send()?;
                self.buf = Some(self.empty_rx.recv().map_err(|_| gone())?);
            }
        }
        Ok(())
    }

    /// Sends what is left (zero-padded to [`ALIGN`]).
    fn flush(&mut self) -> std::io::Result<()> {
        if self.fill > 0 {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> std::io::Result<()> {
        let mut buf = self.buf.take().ok_or_else(gone)?;
        buf.as_mut()[self.fill..self.fill.next_multiple_of(ALIGN)].fill(0);
        let (offset, len) = (self.offset, self.fill);
        self.full_tx
            .send(Full { buf, offset, len })
            .map_err(|_| gone())?;
        self.offset += len as u64;
        self.fill = 0;
        Ok(())
    }
}

impl Drop for Filler<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            give_buffer(b);
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the run file's writing thread stopped",
    )
}

/// The file being written and whether it is still in direct I/O.
struct Target<'f> {
    file: &'f File,
    direct: bool,
}

impl Target<'_> {
    /// Writes `buf` (a multiple of [`ALIGN`] from an aligned address) at `offset`,
    /// an [`ALIGN`] multiple. A file system that refuses a direct write (`EINVAL`)
    /// gets it, and the rest, through the page cache.
    fn write(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        match write_all_at(self.file, buf, offset) {
            Err(e) if self.direct && e.raw_os_error() == Some(EINVAL) => {
                set_direct(self.file, false)?;
                self.direct = false;
                write_all_at(self.file, buf, offset)?;
            }
            r => r?,
        }
        if !self.direct {
            start_writeback(self.file, offset, buf.len() as u64);
        }
        Ok(())
    }
}

#[cfg(unix)]
const EINVAL: i32 = libc::EINVAL;
#[cfg(not(unix))]
const EINVAL: i32 = 22;

/// False when [`DIRECT_IO_ENV`] is `0` (or `false`, `no`, `off`).
fn direct_io_wanted() -> bool {
    let off = std::env::var(DIRECT_IO_ENV)
        .is_ok_and(|v| ["0", "false", "no", "off"].contains(&v.trim().to_lowercase().as_str()));
    !off
}

/// Creates (or truncates) `path` for writing, with direct I/O when `direct` and
/// the file system allows it; returns the file and whether it is direct.
fn open(path: &Path, direct: bool) -> std::io::Result<(File, bool)> {
    #[cfg(target_os = "linux")]
    if direct {
        use std::os::unix::fs::OpenOptionsExt;
        let f = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        match f {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.raw_os_error() == Some(EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let _ = direct;
    Ok((File::create(path)?, false))
}

/// Turns direct I/O on or off for an open file.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl with F_GETFL/F_SETFL reads and sets integer flags of an fd that
    // stays open while `file` is borrowed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, _on: bool) -> std::io::Result<()> {
    Ok(())
}

fn write_all_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            match std::os::windows::fs::FileExt::seek_write(
                file,
                &buf[done..],
                offset + done as u64,
            ) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to disk,
/// without waiting (errors ignored: the final `fsync` reports them).
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
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
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Zeroed memory aligned to [`ALIGN`], as direct I/O needs (to [`HUGE_PAGE`] from
/// that size on).
struct Aligned {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Aligned` owns its allocation alone, like a `Box<[u8]>`.
unsafe impl Send for Aligned {}

impl Aligned {
    fn layout(len: usize) -> std::alloc::Layout {
        let align = if len >= HUGE_PAGE { HUGE_PAGE } else { ALIGN };
        std::alloc::Layout::from_size_align(len.max(ALIGN), align).expect("buffer layout")
    }

    fn new(len: usize) -> Aligned {
        let layout = Aligned::layout(len);
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        // Huge pages where the kernel allows them (transparent huge pages on request):
        // a direct write pins its buffer's pages, 2 for 4 MiB instead of 1,024 (half
        // the system time of a save, measured). Advice only: no effect on the contents.
        #[cfg(target_os = "linux")]
        if len >= HUGE_PAGE {
            // SAFETY: advice on memory this buffer owns, before its first touch.
            unsafe {
                libc::madvise(ptr.as_ptr().cast(), layout.size(), libc::MADV_HUGEPAGE);
            }
        }
        // SAFETY: `layout.size()` bytes were just allocated at `ptr`.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, layout.size()) };
        Aligned { ptr, len }
    }
}

impl AsRef<[u8]> for Aligned {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes (zeroed at allocation) owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl AsMut<[u8]> for Aligned {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_ref`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `Aligned::new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Aligned::layout(self.len)) }
    }
}

static POOL: Mutex<Vec<Aligned>> = Mutex::new(Vec::new());

fn take_buffer() -> Aligned {
    let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    pooled.unwrap_or_else(|| Aligned::new(BUF))
}

fn give_buffer(b: Aligned) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOL_MAX {
        pool.push(b);
    }
}

#[cfg(test)]
mod tests;
