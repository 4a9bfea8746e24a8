//! Request bodies too large to keep in memory go to an unnamed temporary file: written
//! by the connection as they arrive, read by the app through `wsgi.input`, gone with the
//! last descriptor (nothing is left on disk, whatever happens to the process).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;

/// Where spool files go: `$TMPDIR`, else `/tmp`.
fn spool_dir() -> PathBuf {
    std::env::temp_dir()
}

/// A new empty file with no name (already unlinked), open for reading and writing.
pub fn create() -> io::Result<File> {
    let template = spool_dir().join("qiao-body-XXXXXX");
    let template = CString::new(template.into_os_string().into_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "temp dir path has a NUL"))?;
    let mut bytes = template.into_bytes_with_nul();
    // SAFETY: `bytes` is a writable NUL-terminated template; mkstemp fills in the Xs.
    let fd = unsafe { libc::mkstemp(bytes.as_mut_ptr().cast()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: mkstemp returned a new descriptor that we own; `bytes` holds its path.
    let file = unsafe { File::from_raw_fd(fd) };
    unsafe { libc::unlink(bytes.as_ptr().cast()) };
    Ok(file)
}

/// A body being written to a spool file.
pub struct Spool {
    pub file: File,
    pub len: u64,
}

impl Spool {
    pub fn new() -> io::Result<Spool> {
        Ok(Spool {
            file: create()?,
            len: 0,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn spool_file_has_no_name_and_keeps_data() {
        let mut spool = Spool::new().unwrap();
        spool.write(b"hello ").unwrap();
        spool.write(b"world").unwrap();
        assert_eq!(spool.len, 11);
        let mut file = spool.file;
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello world");
        // SAFETY-free check: the descriptor's link count is 0 (the name is gone).
        let meta = file.metadata().unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::nlink(&meta), 0);
    }
}
