//! The files of the static mounts, opened once and kept open with what their responses
//! need (length, validators, content type, precompressed siblings): a bounded map per
//! event loop, each entry looked at again on disk (a `stat` of the file and of its
//! siblings' names) once it is older than `FRESH`, so a deploy shows within that time.
//! Misses are remembered the same way.
//!
//! A response sends from the descriptor opened here (or, for a small file, the bytes read
//! from it), with the length read from that descriptor (`fstat`): a file replaced on disk (renamed over, as deploys do) keeps
//! serving the old file whole until the entry is refreshed; a file cut short in place
//! makes the send fail, and the connection closes rather than send a short body.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::conditional::{system_time, Validators};
use super::naming;
use super::negotiate::Coding;

/// Files up to this size are also kept in memory: their response is one write of head
/// and body, with no descriptor to duplicate and close per request.
const IN_MEMORY: u64 = 16 * 1024;

/// How long an entry is used without looking at the disk again.
pub(crate) const FRESH: Duration = Duration::from_secs(1);

/// What tells a file on disk apart from another, or from itself changed: device, inode,
/// length, modification time (seconds and nanoseconds).
type Identity = (u64, u64, u64, i64, i64);

/// One regular file, open or read.
pub(crate) struct Opened {
    pub(crate) content: Content,
    /// Its length when opened: what the response announces and sends.
    pub(crate) len: u64,
    pub(crate) validators: Validators,
    /// `Last-Modified`'s value.
    pub(crate) last_modified: String,
    /// What tells the file on disk apart from this one (device, inode, length, mtime).
    identity: Identity,
}

/// Where a file's bytes are sent from.
pub(crate) enum Content {
    /// A small file (`IN_MEMORY`), read whole when opened; its descriptor closed then.
    Memory(Rc<[u8]>),
    /// The file, kept open.
    File(File),
}

/// A file and its precompressed siblings.
pub(crate) struct Asset {
    pub(crate) file: Opened,
    pub(crate) content_type: String,
    /// The name carries a content hash (`naming::is_hashed`).
    pub(crate) hashed: bool,
    /// The siblings that exist (`name.br`, `name.zst`, `name.gz`).
    pub(crate) encoded: Vec<(Coding, Opened)>,
}

/// What a path names.
#[derive(Clone)]
pub(crate) enum Found {
    Asset(Rc<Asset>),
    Directory,
    /// Nothing servable: absent, not a regular file, unreadable, or (without
    /// `follow_symlinks`) reached through a link out of the mount.
    Missing,
    /// The process or the system is out of descriptors: nothing can be said of the path
    /// now (not remembered).
    Exhausted,
}

/// Out of descriptors (EMFILE, ENFILE).
pub(crate) struct Exhausted;

struct Entry {
    found: Found,
    /// What the path and its siblings were when looked at (the path's `None`: missing or
    /// a directory, which are looked at again whole).
    identity: Identities,
    checked: Instant,
}

/// The identity of a file and of its siblings, in `Coding::ALL`'s order.
type Identities = (Option<Identity>, [Option<Identity>; 3]);

/// The map, per event loop (the connections of a worker's loop share it).
pub(crate) struct Cache {
    entries: RefCell<HashMap<PathBuf, Entry>>,
    /// Entries kept at most (each holds up to four descriptors: a file larger than
    /// `IN_MEMORY` and its siblings; a smaller one is held as its bytes).
    capacity: usize,
    follow_symlinks: bool,
}

impl Cache {
    pub(crate) fn new(capacity: usize, follow_symlinks: bool) -> Cache {
        Cache {
            entries: RefCell::default(),
            capacity: capacity.max(1),
            follow_symlinks,
        }
    }

    /// What `root.join(relative)` names, from the map while fresh.
    pub(crate) fn lookup(&self, root: &Path, relative: &Path) -> Found {
        self.lookup_at(root, relative, Instant::now())
    }

    fn lookup_at(&self, root: &Path, relative: &Path, now: Instant) -> Found {
        let path = root.join(relative);
        {
            let mut entries = self.entries.borrow_mut();
            if let Some(entry) = entries.get_mut(&path) {
                if now.duration_since(entry.checked) < FRESH {
                    return entry.found.clone();
                }
                // Unchanged on disk, siblings too: the entry stands for another while.
                if entry.identity.0.is_some() && identities_of(&path) == entry.identity {
                    entry.checked = now;
                    return entry.found.clone();
                }
            }
        }
        let Ok((found, identity)) = self.open(root, &path) else {
            return Found::Exhausted;
        };
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.capacity && !entries.contains_key(&path) {
            // Full: drop what is stale, and everything if that frees nothing.
            entries.retain(|_, e| now.duration_since(e.checked) < FRESH);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            path,
            Entry {
                found: found.clone(),
                identity,
                checked: now,
            },
        );
        found
    }

    fn open(&self, root: &Path, path: &Path) -> Result<(Found, Identities), Exhausted> {
        Ok(match open_within(root, path, self.follow_symlinks)? {
            Some(Opening::Directory) => (Found::Directory, (None, [None; 3])),
            Some(Opening::File(file)) => {
                let main = Some(file.identity);
                let mut encoded = Vec::new();
                for coding in Coding::ALL {
                    let opened = open_within(root, &sibling(path, coding), self.follow_symlinks)?;
                    if let Some(Opening::File(mut f)) = opened {
                        // Each representation its own tag (RFC 9110 §8.8.3), even where
                        // two siblings share a length and a time.
                        f.validators.etag.insert_str(
                            f.validators.etag.len() - 1,
                            &format!("-{}", coding.name()),
                        );
                        encoded.push((coding, f));
                    }
                }
                let siblings = Coding::ALL.map(|c| {
                    encoded
                        .iter()
                        .find(|(e, _)| *e == c)
                        .map(|(_, f)| f.identity)
                });
                let asset = Asset {
                    file,
                    content_type: naming::content_type(path),
                    hashed: naming::is_hashed(path),
                    encoded,
                };
                (Found::Asset(Rc::new(asset)), (main, siblings))
            }
            None => (Found::Missing, (None, [None; 3])),
        })
    }
}

enum Opening {
    File(Opened),
    Directory,
}

/// Opens `path` for reading if it is a regular file or a directory inside `root` (the
/// descriptor's real path, read back from `/proc`, so a link swapped in meanwhile cannot
/// slip by); with `follow_symlinks`, anywhere a link leads. `Err` when out of
/// descriptors, which says nothing of the file.
fn open_within(
    root: &Path,
    path: &Path,
    follow_symlinks: bool,
) -> Result<Option<Opening>, Exhausted> {
    // O_NONBLOCK: opening a FIFO does not wait for a writer (it is then refused below).
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
            return Err(Exhausted)
        }
        Err(_) => return Ok(None),
    };
    Ok(check(file, root, path, follow_symlinks))
}

/// `file` (opened at `path`) as something to serve, if it is.
fn check(file: File, root: &Path, path: &Path, follow_symlinks: bool) -> Option<Opening> {
    if !follow_symlinks {
        // Without /proc (a chroot), the path's real path, read just after the open.
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .or_else(|_| path.canonicalize())
            .ok()?;
        if real != root && !real.starts_with(root) {
            return None;
        }
    }
    let meta = file.metadata().ok()?;
    if meta.is_dir() {
        return Some(Opening::Directory);
    }
    if !meta.is_file() {
        return None;
    }
    let modified = meta.mtime().max(0) as u64;
    let content = if meta.len() <= IN_MEMORY {
        let mut buf = vec![0; meta.len() as usize];
        file.read_exact_at(&mut buf, 0).ok()?;
        Content::Memory(Rc::from(buf))
    } else {
        Content::File(file)
    };
    Some(Opening::File(Opened {
        content,
        len: meta.len(),
        validators: Validators::new(modified, meta.len()),
        last_modified: httpdate::fmt_http_date(system_time(modified)),
        identity: identity(&meta),
    }))
}

fn identity(meta: &std::fs::Metadata) -> Identity {
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

/// The identity of what `path` names now (following links, as `open` does).
fn identity_of(path: &Path) -> Option<Identity> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| identity(&meta))
}

/// The identities of `path` and its siblings now.
fn identities_of(path: &Path) -> Identities {
    let siblings = Coding::ALL.map(|c| identity_of(&sibling(path, c)));
    (identity_of(path), siblings)
}

/// The path of `path`'s sibling in `coding`.
fn sibling(path: &Path, coding: Coding) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(coding.suffix());
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn asset(found: Found) -> Rc<Asset> {
        match found {
            Found::Asset(a) => a,
            _ => panic!("not an asset"),
        }
    }

    #[test]
    fn files_siblings_directories_and_misses() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a.css"), b"body{}").unwrap();
        std::fs::write(root.join("a.css.gz"), b"gz").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        let cache = Cache::new(8, false);
        let a = asset(cache.lookup(&root, Path::new("a.css")));
        assert_eq!(a.file.len, 6);
        assert!(matches!(&a.file.content, Content::Memory(b) if &b[..] == b"body{}"));
        assert_eq!(a.content_type, "text/css; charset=utf-8");
        assert_eq!(a.encoded.len(), 1);
        assert_eq!(a.encoded[0].0, Coding::Gzip);
        assert!(matches!(
            cache.lookup(&root, Path::new("sub")),
            Found::Directory
        ));
        assert!(matches!(
            cache.lookup(&root, Path::new("none")),
            Found::Missing
        ));
        // Fresh: the same entry.
        let again = asset(cache.lookup(&root, Path::new("a.css")));
        assert!(Rc::ptr_eq(&a, &again));
    }

    /// An entry is used while fresh, then kept while the file and its siblings are
    /// unchanged on disk, and made again when one of them changed (a sibling added).
    #[test]
    fn entries_are_looked_at_again_once_stale() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a.js"), b"x").unwrap();
        let cache = Cache::new(8, false);
        let t0 = Instant::now();
        let first = asset(cache.lookup_at(&root, Path::new("a.js"), t0));
        assert!(first.encoded.is_empty());
        std::fs::write(root.join("a.js.br"), b"b").unwrap();
        let fresh = asset(cache.lookup_at(&root, Path::new("a.js"), t0));
        assert!(Rc::ptr_eq(&first, &fresh), "fresh: not looked at");
        let later = t0 + FRESH * 2;
        let again = asset(cache.lookup_at(&root, Path::new("a.js"), later));
        assert_eq!(again.encoded.len(), 1, "the new sibling is seen");
        let same = asset(cache.lookup_at(&root, Path::new("a.js"), later + FRESH * 2));
        assert!(Rc::ptr_eq(&again, &same), "unchanged: the entry stands");
    }

    /// A symlink leading out of the mount is not followed unless allowed.
    #[test]
    fn links_out_of_the_root_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let mut secret = File::create(outside.path().join("secret")).unwrap();
        secret.write_all(b"s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("link")).unwrap();
        std::fs::write(root.join("in"), b"i").unwrap();
        std::os::unix::fs::symlink(root.join("in"), root.join("inner-link")).unwrap();
        let strict = Cache::new(8, false);
        assert!(matches!(
            strict.lookup(&root, Path::new("link")),
            Found::Missing
        ));
        assert!(matches!(
            strict.lookup(&root, Path::new("inner-link")),
            Found::Asset(_)
        ));
        let lenient = Cache::new(8, true);
        assert!(matches!(
            lenient.lookup(&root, Path::new("link")),
            Found::Asset(_)
        ));
    }

    #[test]
    fn the_map_stays_within_its_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let cache = Cache::new(4, false);
        for i in 0..10 {
            std::fs::write(root.join(i.to_string()), b"x").unwrap();
            cache.lookup(&root, Path::new(&i.to_string()));
            assert!(cache.entries.borrow().len() <= 4);
        }
    }
}
