//! Uploading a run: one conditional PUT for a small run, a multipart upload in
//! [`PART_SIZE`] parts otherwise. Either way the object appears under its name
//! only when complete (S3 shows a multipart upload only once it is completed); a
//! failed upload is aborted, so its parts do not linger either.

use std::borrow::Cow;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

use super::{block_on, Remote};
use crate::{Error, Result};

/// Part size of multipart uploads (S3 wants ≥ 5 MiB but the last); runs up to
/// this size go up in one request.
pub const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once.
const CONCURRENCY: usize = 4;

impl Remote {
    /// Uploads `total` bytes given as `pieces` as this object, which must not
    /// exist yet; nothing is visible under the name unless all of them arrive.
    /// `pieces` is read on the calling thread (its items may borrow).
    pub(crate) fn upload<'a>(
        &self,
        total: u64,
        pieces: impl Iterator<Item = Result<Cow<'a, [u8]>>>,
    ) -> Result<()> {
        self.writable()?;
        if self.exists()? {
            return Err(Error::io(
                self.as_path(),
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "run already exists"),
            ));
        }
        if total <= PART_SIZE as u64 {
            let mut all = Vec::with_capacity(total as usize);
            for p in pieces {
                all.extend_from_slice(&p?);
            }
            return self.put_new(Bytes::from(all));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(CONCURRENCY);
        let store = self.store.clone();
        let key = self.key.clone();
        let task = async move { multipart(store, key, rx, total).await };
        let (sent, done) = std::thread::scope(|s| {
            let done = s.spawn(|| block_on(task));
            let sent = feed(tx, pieces);
            (sent, done.join().expect("upload thread panicked"))
        });
        // A failure to produce the bytes comes first (the upload was aborted for it).
        sent?;
        done.map_err(|e| self.fail("upload", e))
    }

    fn put_new(&self, bytes: Bytes) -> Result<()> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        super::count(1);
        block_on(async {
            match self
                .store
                .put_opts(&self.key, PutPayload::from(bytes.clone()), opts)
                .await
            {
                Ok(_) => Ok(()),
                // A store without conditional writes: a plain PUT (still whole or nothing).
                Err(object_store::Error::NotImplemented { .. }) => self
                    .store
                    .put(&self.key, PutPayload::from(bytes))
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            }
        })
        .map_err(|e| self.fail("upload", e))
    }
}

/// Sends the pieces in parts-sized chunks; stops at the first failure to produce
/// one (or when the upload side has given up).
fn feed<'a>(
    tx: tokio::sync::mpsc::Sender<Bytes>,
    pieces: impl Iterator<Item = Result<Cow<'a, [u8]>>>,
) -> Result<()> {
    for piece in pieces {
        let piece = piece?;
        for chunk in piece.chunks(PART_SIZE) {
            if futures::executor::block_on(tx.send(Bytes::copy_from_slice(chunk))).is_err() {
                return Ok(()); // the upload failed: its error is reported
            }
        }
    }
    Ok(())
}

async fn multipart(
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    key: object_store::path::Path,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    total: u64,
) -> object_store::Result<()> {
    super::count(1);
    let upload = store.put_multipart(&key).await?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let mut got = 0u64;
    while let Some(b) = rx.recv().await {
        if let Err(e) = w.wait_for_capacity(CONCURRENCY).await {
            let _ = w.abort().await;
            return Err(e);
        }
        got += b.len() as u64;
        super::count(1);
        w.put(b);
    }
    if got != total {
        let _ = w.abort().await;
        return Err(object_store::Error::Generic {
            store: "candlelight",
            source: format!("upload stopped after {got} of {total} bytes").into(),
        });
    }
    super::count(1);
    w.finish().await.map(|_| ())
}
