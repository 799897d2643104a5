//! Opening a run file: only regular files, without blocking; the header read with
//! two positioned reads and checked as the safetensors crate checks it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::SafeTensorError;
use serde::Deserialize;

use super::{
    index_names, summary, LayerInfo, Run, RunInfo, Store, FORMAT_VERSION, KEY_LAYERS, KEY_ORDER,
    KEY_RUN, KEY_VERSION,
};
use crate::staging::open_regular;
use crate::values::{read_error, read_exact_at};
use crate::{Error, Result};

impl Run {
    /// Opens a run file: reads and checks the header, reads no layer.
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use candlelight::Run;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let x = Tensor::arange(0f32, 6., &Device::Cpu)?.reshape((1, 2, 3))?;
    /// let path = Run::from_named_tensors("m", [("x".to_string(), x)]).save(dir.path())?;
    /// let run = Run::open(&path)?;
    /// assert_eq!(run.layers()[0].shape, vec![1, 2, 3]);
    /// assert_eq!(run.stats("x")?.max, 5.0);
    /// // Not a run file: one error naming it.
    /// std::fs::write(dir.path().join("bad.safetensors"), b"nope")?;
    /// let e = Run::open(dir.path().join("bad.safetensors")).unwrap_err();
    /// assert!(e.to_string().contains("bad.safetensors: truncated"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Only regular files (or symlinks to them) are opened, without blocking; the
    /// data section must end exactly at the end of the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Run> {
        let path = path.as_ref();
        if let Some(url) = path.to_str().filter(|s| crate::location::is_url(s)) {
            return Run::open_url(url);
        }
        let file = open_regular(path)?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Run::from_file(path, file, size)
    }

    /// Opens a run by URL: `file://` (a local file), or with the `remote`
    /// feature `s3://`, `gs://`, `az://`, `https://`. A remote run's header is
    /// read with one range request (two when it is larger than 64 KiB), each layer
    /// with one more when it is asked for; [`Run::transfer`] counts them.
    pub fn open_url(url: &str) -> Result<Run> {
        if let Some(local) = crate::location::file_url_path(url) {
            return Run::open(local);
        }
        #[cfg(feature = "remote")]
        {
            Run::open_remote(crate::remote::Remote::parse(url)?)
        }
        #[cfg(not(feature = "remote"))]
        Err(Error::option(format!(
            "{url}: this build of candlelight reads no object stores (feature `remote`)"
        )))
    }

    #[cfg(feature = "remote")]
    fn open_remote(remote: crate::remote::Remote) -> Result<Run> {
        let path = remote.as_path();
        let transfer = crate::remote::Transfer::default();
        let (head, size, version) = remote.read(0..head_guess(), None, &transfer)?;
        check_size(&path, size)?;
        let object = std::sync::Arc::new(super::RemoteRun {
            remote,
            version,
            transfer,
        });
        let (meta, data_start) = read_header(&path, size, &mut |off, buf| {
            // What the first request brought is not asked for again.
            let (start, end) = (off as usize, off as usize + buf.len());
            let have = head.len().clamp(start, end);
            buf[..have - start].copy_from_slice(&head[start..have]);
            if have < end {
                buf[have - start..].copy_from_slice(&object.read(have as u64, end as u64)?);
            }
            Ok(())
        })?;
        Run::assemble(&path, meta, data_start, size, |ranges| Store::Remote {
            object,
            ranges,
        })
    }

    fn from_file(path: &Path, file: std::fs::File, size: u64) -> Result<Run> {
        check_size(path, size)?;
        let (meta, data_start) = read_header(path, size, &mut |off, buf| {
            read_exact_at(&file, buf, off).map_err(|e| read_error(path, None, e))
        })?;
        Run::assemble(path, meta, data_start, size, |ranges| Store::File {
            file,
            ranges,
        })
    }

    /// The run described by a checked header; `store` gets each layer's byte range.
    fn assemble(
        path: &Path,
        meta: Metadata,
        data_start: u64,
        size: u64,
        store: impl FnOnce(Vec<(u64, u64)>) -> Store,
    ) -> Result<Run> {
        let user_meta = meta.metadata().clone().unwrap_or_default();
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
        let mut stored = match user_meta.get(KEY_LAYERS) {
            Some(s) => summary::from_json(s).map_err(|m| Error::bad(path, m))?,
            None => Default::default(),
        };
        let order = capture_order(path, &meta, user_meta.get(KEY_ORDER))?;
        let tensors = meta.tensors();
        let mut layers = Vec::with_capacity(order.len());
        let mut ranges = Vec::with_capacity(order.len());
        let mut summaries = Vec::with_capacity(order.len());
        for (index, name) in order.into_iter().enumerate() {
            let ti = tensors[&name];
            let (s, e) = ti.data_offsets;
            ranges.push((data_start + s as u64, data_start + e as u64));
            summaries.push(stored.remove(&name));
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
            .filter(|(k, _)| ![KEY_VERSION, KEY_ORDER, KEY_RUN, KEY_LAYERS].contains(&k.as_str()))
            .collect();
        let by_name = index_names(&layers);
        Ok(Run {
            path: Some(path.to_path_buf()),
            info,
            metadata,
            layers,
            by_name,
            store: store(ranges),
            file_size: size,
            summaries,
        })
    }
}

/// Bytes of a remote run asked for first: the 8-byte header length and
/// `CANDLELIGHT_HEADER_READAHEAD` bytes more (default 64 KiB), which usually hold
/// the whole header: one request. With 0, the header is read exactly, in two
/// requests (8 bytes, then the header).
#[cfg(feature = "remote")]
fn head_guess() -> u64 {
    let readahead = std::env::var("CANDLELIGHT_HEADER_READAHEAD")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(64 << 10);
    8 + readahead.min(100 << 20)
}

fn check_size(path: &Path, size: u64) -> Result<()> {
    if size < 8 {
        return Err(Error::bad(
            path,
            format!(
                "truncated: {size} bytes, a safetensors file starts with an 8-byte header length"
            ),
        ));
    }
    Ok(())
}

/// The safetensors crate's limit on header size.
const MAX_HEADER: usize = 100_000_000;

/// The header JSON parsed and checked as the safetensors crate does (offsets in
/// order, contiguous, lengths matching shapes and dtypes), without the data.
fn parse_header(bytes: &[u8]) -> std::result::Result<Metadata, SafeTensorError> {
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__")]
        metadata: Option<HashMap<String, String>>,
        #[serde(flatten)]
        tensors: HashMap<String, TensorInfo>,
    }
    let text = std::str::from_utf8(bytes).map_err(SafeTensorError::InvalidHeader)?;
    let h: Header =
        serde_json::from_str(text).map_err(SafeTensorError::InvalidHeaderDeserialization)?;
    let mut tensors: Vec<_> = h.tensors.into_iter().collect();
    tensors.sort_by(|a, b| (a.1.data_offsets, &a.0).cmp(&(b.1.data_offsets, &b.0)));
    Metadata::new(h.metadata, tensors)
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

/// Layer names in capture order: `candlelight.order` (checked: every name in the
/// file, none twice), then the tensors it leaves out in file order.
fn capture_order(path: &Path, meta: &Metadata, listed: Option<&String>) -> Result<Vec<String>> {
    let file_order = meta.offset_keys();
    let Some(s) = listed else {
        return Ok(file_order);
    };
    let listed: Vec<String> = serde_json::from_str(s).map_err(|e| {
        Error::bad(
            path,
            format!("{KEY_ORDER} is not a JSON array of names: {e}"),
        )
    })?;
    let mut seen = HashSet::with_capacity(listed.len());
    for name in &listed {
        if meta.info(name).is_none() {
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
    let rest: Vec<String> = file_order
        .iter()
        .filter(|n| !seen.contains(n.as_str()))
        .cloned()
        .collect();
    Ok(listed.into_iter().chain(rest).collect())
}

/// Reads and checks the header (with `read(offset, buf)`, exactly): the metadata
/// and where the data section starts.
fn read_header(
    path: &Path,
    size: u64,
    read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
) -> Result<(Metadata, u64)> {
    let mut len = [0u8; 8];
    read(0, &mut len)?;
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
    read(8, &mut header)?;
    let meta =
        parse_header(&header).map_err(|e| Error::bad(path, describe_st_error(e, n, size)))?;
    let data_start = 8 + n;
    if data_start + meta.data_len() as u64 != size {
        return Err(Error::bad(
            path,
            describe_st_error(SafeTensorError::MetadataIncompleteBuffer, n, size),
        ));
    }
    Ok((meta, data_start))
}
