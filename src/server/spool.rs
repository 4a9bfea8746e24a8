//! Request bodies too large to keep in memory go to an unnamed temporary file (in
//! `$TMPDIR`, else `/tmp`): written by the connection as they arrive, read by the app
//! through `wsgi.input` (this is their `BodySource`), gone with the last descriptor
//! (nothing is left on disk, whatever happens to the process).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use crate::log::ErrorLog;
use crate::wsgi::sink::BodySource;

/// Says, in the error log, that a request body could not be stored (the client is then
/// answered `Canned::BodyNotStored`): the same line over HTTP/1.1 and HTTP/2.
pub(super) fn log_not_stored(log: &ErrorLog, e: &io::Error) {
    log.error(&format!("Cannot store a request body: {e}"));
}

/// A body being written to a spool file.
pub(super) struct Spool {
    file: File,
    len: u64,
}

impl Spool {
    pub(super) fn new() -> io::Result<Spool> {
        Ok(Spool {
            file: tempfile::tempfile()?,
            len: 0,
        })
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// The whole body written: its source, read from the start.
    pub(super) fn into_source(self) -> SpoolSource {
        SpoolSource {
            file: self.file,
            len: self.len,
            read: 0,
        }
    }
}

/// A spooled body as the app reads it.
pub(super) struct SpoolSource {
    file: File,
    len: u64,
    /// Bytes already read.
    read: u64,
}

impl BodySource for SpoolSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.len - self.read) as usize);
        if want == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..want], self.read)?;
        if got == 0 {
            // The file is shorter than what was written to it: end the body there.
            self.read = self.len;
        }
        self.read += got as u64;
        Ok(got)
    }

    fn remaining(&self) -> u64 {
        self.len - self.read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spooled_body_has_no_name_and_reads_back_whole() {
        let mut spool = Spool::new().unwrap();
        spool.write(b"hello ").unwrap();
        spool.write(b"world").unwrap();
        assert_eq!(spool.len(), 11);
        let nlink = std::os::unix::fs::MetadataExt::nlink(&spool.file.metadata().unwrap());
        assert_eq!(nlink, 0, "the file has no name");
        let mut source = spool.into_source();
        let mut buf = [0u8; 4];
        let mut got = Vec::new();
        loop {
            let n = source.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"hello world");
        assert_eq!(source.remaining(), 0);
    }
}
