//! Temporaries candlelight writes beside its outputs, and the proof that a leftover
//! one is its own.
//!
//! Everything candlelight builds aside and renames into place carries a name of its
//! own and a lock that its writer holds while it lives:
//!
//! * **staging folders and temp files** in an output folder:
//!   `.candlelight-<kind>-<pid>-<n>` (`kind` = `stage`, `trash` or `tmp`) with a
//!   sibling lock file `.candlelight-<kind>-<pid>-<n>.lock`, created first and held
//!   with an exclusive `flock` until the temporary is gone;
//! * **run-file temps** ([`crate::Run::save`]): `.<run>.safetensors.candlelight-<pid>-<n>.tmp`,
//!   the writer holding an exclusive `flock` on the temp file itself.
//!
//! A lock file (or run temp) is created under a scratch name, locked, and only then
//! linked to its final name, so a file with the final name is locked from its first
//! moment. [`clean_stale`] removes a leftover only when all of these hold: the name
//! has one of the patterns above, the lock file (or the temp file) is a regular file
//! and its lock is free (the writer is gone: the kernel releases a killed process's
//! locks). Anything else, a user's dot folder included, is never touched.

// Staging folders are for galleries: without `render` only run temps are used.
#![cfg_attr(not(feature = "render"), allow(dead_code))]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Error, Result};

const PREFIX: &str = ".candlelight-";
const LOCK_SUFFIX: &str = ".lock";
const RUN_TEMP_MARK: &str = ".safetensors.candlelight-";

/// What a temporary is for (its name says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A gallery (or diff-gallery part) being built.
    Stage,
    /// An old gallery being removed.
    Trash,
    /// A file being written atomically.
    Tmp,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Stage => "stage",
            Kind::Trash => "trash",
            Kind::Tmp => "tmp",
        }
    }
}

/// A number for a temporary's name: a random start per process plus a counter, so
/// processes with the same pid (pid namespaces sharing a folder) rarely meet.
fn next() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| rand::random::<u32>() >> 1);
    start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Creates `path` as a new, empty file that this process holds an exclusive lock
/// on from the moment the name exists: created under a scratch name, locked, then
/// hard-linked to `path` (fails if `path` exists). Where hard links are not
/// supported it is renamed after a check instead.
fn create_locked(path: &Path) -> std::io::Result<File> {
    let mut scratch = path.as_os_str().to_owned();
    scratch.push(".new");
    let scratch = PathBuf::from(scratch);
    let f = File::options()
        .write(true)
        .create_new(true)
        .open(&scratch)?;
    if !try_lock(&f) {
        let _ = std::fs::remove_file(&scratch);
        return Err(std::io::Error::other("cannot lock a new file"));
    }
    let linked = match std::fs::hard_link(&scratch, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if std::fs::symlink_metadata(path).is_ok() => {
            Err(std::io::ErrorKind::AlreadyExists.into())
        }
        Err(_) => std::fs::rename(&scratch, path),
    };
    let _ = std::fs::remove_file(&scratch);
    linked.map(|()| f)
}

/// Takes an exclusive lock on `f` without waiting; false when another holds it.
fn try_lock(f: &File) -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor owned by `f`; no memory is involved.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    }
    #[cfg(not(unix))]
    {
        let _ = f;
        true
    }
}

/// A temporary path in `parent`, proven ours by a held lock file beside it.
/// Dropping it removes whatever is at the path (unless [`Temp::keep`] was called),
/// then the lock file.
#[derive(Debug)]
pub(crate) struct Temp {
    path: PathBuf,
    lock_path: PathBuf,
    _lock: File,
    keep: bool,
}

impl Temp {
    /// Reserves a fresh temporary name in `parent` (creating `parent` if needed) and
    /// takes its lock; nothing is created at the path itself.
    pub(crate) fn new(parent: &Path, kind: Kind) -> Result<Temp> {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let pid = std::process::id();
        loop {
            let name = format!("{PREFIX}{}-{pid}-{}", kind.word(), next());
            let path = parent.join(&name);
            let lock_path = parent.join(format!("{name}{LOCK_SUFFIX}"));
            let lock = match create_locked(&lock_path) {
                Ok(f) => f,
                // Taken (a leftover, or another process with the same pid): next.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&lock_path, e)),
            };
            // A dead writer's leftover under the very same name is ours too.
            let _ = std::fs::remove_dir_all(&path);
            return Ok(Temp {
                path,
                lock_path,
                _lock: lock,
                keep: false,
            });
        }
    }

    /// A fresh staging folder in `parent`.
    pub(crate) fn dir(parent: &Path, kind: Kind) -> Result<Temp> {
        let t = Temp::new(parent, kind)?;
        std::fs::create_dir(&t.path).map_err(|e| Error::io(&t.path, e))?;
        Ok(t)
    }

    /// The temporary's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps what is at the path (it was renamed away; only the lock file goes).
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.keep {
            match std::fs::symlink_metadata(&self.path) {
                Ok(m) if m.is_dir() => {
                    let _ = std::fs::remove_dir_all(&self.path);
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(&self.path);
                }
                Err(_) => {}
            }
        }
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Writes bytes to `path` atomically: a locked temp file beside it, synced, renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = Temp::new(dir, Kind::Tmp)?;
    let res = (|| {
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .open(tmp.path())?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(tmp.path(), path)
    })();
    if res.is_ok() {
        tmp.keep();
    }
    res.map_err(|e| Error::io(path, e))
}

/// Renames folder `from` (ours) to `to`; when `to` exists it is replaced (the
/// caller has checked that it is ours): on Linux in one atomic exchange, elsewhere
/// by moving it into a trash folder first. The old folder is removed afterwards.
pub(crate) fn replace_dir(from: &mut Temp, to: &Path) -> Result<()> {
    let parent = to.parent().unwrap_or(Path::new("."));
    match std::fs::rename(from.path(), to) {
        Ok(()) => {
            from.keep();
            sync_dir(parent);
            return Ok(());
        }
        Err(e) if std::fs::symlink_metadata(to).is_err() => return Err(Error::io(to, e)),
        Err(_) => {}
    }
    #[cfg(target_os = "linux")]
    if exchange(from.path(), to).is_ok() {
        // `from` now holds the old folder; dropping `from` removes it.
        sync_dir(parent);
        return Ok(());
    }
    let trash = Temp::dir(parent, Kind::Trash)?;
    let old = trash.path().join("old");
    std::fs::rename(to, &old).map_err(|e| Error::io(to, e))?;
    if let Err(e) = std::fs::rename(from.path(), to) {
        // Put the old one back: never leave the target missing.
        let _ = std::fs::rename(&old, to);
        return Err(Error::io(to, e));
    }
    from.keep();
    sync_dir(parent);
    drop(trash);
    Ok(())
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; renameat2 reads them and touches no
    // other memory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The absolute form of `p` (as given when that fails): the one way candlelight
/// names files in manifests, logs and pages.
/// A URL (`s3://...`) is kept as it is.
pub fn absolute(p: &Path) -> PathBuf {
    if p.to_str().is_some_and(crate::location::is_url) {
        return p.to_path_buf();
    }
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Opens `path` for reading if it is a regular file (following symlinks), without
/// blocking: a FIFO, socket or device is refused before it is opened, and the open
/// itself never waits for a writer.
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File> {
    let md = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !md.is_file() {
        return Err(not_regular(path, &md));
    }
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_NONBLOCK);
    let file = o.open(path).map_err(|e| Error::io(path, e))?;
    let md = file.metadata().map_err(|e| Error::io(path, e))?;
    if !md.is_file() {
        // Replaced between the check and the open.
        return Err(not_regular(path, &md));
    }
    Ok(file)
}

fn not_regular(path: &Path, md: &std::fs::Metadata) -> Error {
    Error::BadInput {
        path: path.to_path_buf(),
        msg: format!("not a regular file ({})", file_kind(md)),
    }
}

/// The bytes of the regular file `path` (see [`open_regular`]), refusing files
/// larger than `limit` bytes.
pub(crate) fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = open_regular(path)?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if size > limit {
        return Err(Error::BadInput {
            path: path.to_path_buf(),
            msg: format!("{size} bytes is more than the {limit} bytes expected here"),
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    f.read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
    Ok(buf)
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

/// Makes renames in `dir` durable (best effort).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A locked temp file for [`crate::Run::save`]: `.<file_name>.candlelight-<pid>-<n>.tmp`
/// in `dir`, created new, locked by its writer until dropped (then removed unless kept).
#[derive(Debug)]
pub(crate) struct RunTemp {
    path: PathBuf,
    _lock: File,
    keep: bool,
}

impl RunTemp {
    pub(crate) fn new(dir: &Path, file_name: &str) -> Result<RunTemp> {
        let pid = std::process::id();
        loop {
            let path = dir.join(format!(
                ".{file_name}{}{pid}-{}.tmp",
                &RUN_TEMP_MARK[".safetensors".len()..],
                next()
            ));
            let f = match create_locked(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            return Ok(RunTemp {
                path,
                _lock: f,
                keep: false,
            });
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for RunTemp {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `(stem, pid)` when `name` is `.candlelight-<kind>-<pid>-<n>.lock`.
fn parse_lock_name(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(LOCK_SUFFIX)?;
    let rest = stem.strip_prefix(PREFIX)?;
    let (kind, nums) = rest.split_once('-')?;
    let (pid, n) = nums.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (["stage", "trash", "tmp"].contains(&kind) && digits(pid) && digits(n)).then_some(stem)
}

/// True when `name` is a run-file temp of [`RunTemp`]'s pattern.
pub(crate) fn is_run_temp_name(name: &str) -> bool {
    let Some(body) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    let Some(i) = body.rfind(RUN_TEMP_MARK) else {
        return false;
    };
    let nums = &body[i + RUN_TEMP_MARK.len()..];
    i > 0
        && nums.split_once('-').is_some_and(|(p, n)| {
            [p, n]
                .iter()
                .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// A regular file (not following symlinks), opened without blocking, whose lock is
/// free: `Some(file)` holding the lock.
fn abandoned(path: &Path) -> Option<File> {
    let md = std::fs::symlink_metadata(path).ok()?;
    if !md.is_file() {
        return None;
    }
    let mut o = File::options();
    o.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_NONBLOCK | libc::O_NOFOLLOW);
    let f = o.open(path).ok()?;
    try_lock(&f).then_some(f)
}

/// Removes the leftovers of dead candlelight writers directly in `dir` (see the
/// module docs for what proves a leftover ours); returns the paths removed.
pub fn clean_stale(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut removed = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = parse_lock_name(name) {
            let lock_path = dir.join(name);
            let Some(_held) = abandoned(&lock_path) else {
                continue;
            };
            let target = dir.join(stem);
            let gone = match std::fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&target).is_ok(),
                Ok(_) => std::fs::remove_file(&target).is_ok(),
                Err(_) => true,
            };
            if gone && std::fs::remove_file(&lock_path).is_ok() {
                removed.push(target);
            }
        } else if is_run_temp_name(name) {
            let path = dir.join(name);
            if let Some(_held) = abandoned(&path) {
                if std::fs::remove_file(&path).is_ok() {
                    removed.push(path);
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            parse_lock_name(".candlelight-stage-12-3.lock"),
            Some(".candlelight-stage-12-3")
        );
        for bad in [
            ".candlelight-stage-12-3",
            ".candlelight-other-12-3.lock",
            ".candlelight-stage-x-3.lock",
            ".candlelight-stage-12-.lock",
            ".git",
        ] {
            assert_eq!(parse_lock_name(bad), None, "{bad}");
        }
        assert!(is_run_temp_name(".a.safetensors.candlelight-12-0.tmp"));
        for bad in [
            ".a.safetensors.tmp",
            "a.safetensors.candlelight-12-0.tmp",
            "..safetensors.candlelight-12-0.tmp",
            ".a.safetensors.candlelight-12.tmp",
            ".a.safetensors.candlelight-1x-0.tmp",
        ] {
            assert!(!is_run_temp_name(bad), "{bad}");
        }
    }

    #[test]
    fn only_abandoned_leftovers_of_ours_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        // A live staging folder of this process: locked, never removed.
        let live = Temp::dir(p, Kind::Stage).unwrap();
        // A dead one (lock file present, lock free, old).
        let dead = p.join(".candlelight-stage-999999-1");
        std::fs::create_dir_all(dead.join("layers")).unwrap();
        std::fs::write(p.join(".candlelight-stage-999999-1.lock"), b"").unwrap();
        // A dead temp file.
        let dead_file = p.join(".candlelight-tmp-999999-2");
        std::fs::write(&dead_file, b"half a page").unwrap();
        std::fs::write(p.join(".candlelight-tmp-999999-2.lock"), b"").unwrap();
        // A lock file that is a folder, or a symlink: not ours.
        std::fs::create_dir(p.join(".candlelight-stage-999999-4")).unwrap();
        std::fs::create_dir(p.join(".candlelight-stage-999999-4.lock")).unwrap();
        // Our name, no lock file: not provably ours.
        let unproven = p.join(".candlelight-stage-999999-3");
        std::fs::create_dir(&unproven).unwrap();
        // Someone else's dot folder and temp file.
        std::fs::create_dir(p.join(".git")).unwrap();
        std::fs::write(p.join(".x.safetensors.tmp"), b"").unwrap();
        // An abandoned run temp, and one whose writer still holds it.
        let run_dead = p.join(".r.safetensors.candlelight-999999-0.tmp");
        std::fs::write(&run_dead, b"half").unwrap();
        let run_live = RunTemp::new(p, "q.safetensors").unwrap();

        let removed = clean_stale(p);
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(!dead.exists() && !run_dead.exists() && !dead_file.exists());
        let odd = p.join(".candlelight-stage-999999-4");
        for kept in [
            live.path(),
            &odd,
            &unproven,
            &p.join(".git"),
            run_live.path(),
        ] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
        assert!(p.join(".x.safetensors.tmp").exists());
        drop(live);
        drop(run_live);
    }

    #[test]
    fn replace_dir_swaps_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("g");
        for round in 0..3 {
            let mut t = Temp::dir(d.path(), Kind::Stage).unwrap();
            std::fs::write(t.path().join("n"), format!("{round}")).unwrap();
            replace_dir(&mut t, &target).unwrap();
            drop(t);
            assert_eq!(
                std::fs::read_to_string(target.join("n")).unwrap(),
                format!("{round}")
            );
        }
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("g")]);
    }

    #[test]
    fn write_atomic_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("index.html");
        write_atomic(&f, b"a").unwrap();
        write_atomic(&f, b"b").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"b");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
