//! `--log-syslog`: log lines sent to syslog as well, as gunicorn sends them (Python's
//! `SysLogHandler`): `<PRI>IDENT: LINE`, one datagram per line over UDP or a Unix datagram
//! socket, one newline-ended line over TCP or a Unix stream socket.

use std::io::{self, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::Mutex;

use crate::log::Level;

/// The facilities of syslog(3), by name, with their numbers (<syslog.h>).
const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Where the lines go.
enum Conn {
    Udp(UdpSocket),
    UnixDatagram(UnixDatagram),
    /// A stream socket (TCP, Unix): written under a lock so that lines stay whole.
    Stream(Mutex<Box<dyn Write + Send>>),
}

/// One syslog destination and how its lines are labelled.
pub(crate) struct Syslog {
    conn: Conn,
    facility: u8,
    /// The program name each line carries (`qiao.<prefix>.error`, as gunicorn's
    /// `gunicorn.<prefix>.error`).
    ident: String,
}

impl Syslog {
    /// Connects to `address` (`udp://HOST:PORT`, `tcp://HOST:PORT`,
    /// `unix://PATH[#dgram|#stream]`; a Unix path without a type tries a datagram socket,
    /// then a stream one, as Python's handler does).
    pub(crate) fn connect(address: &str, facility: &str, ident: String) -> io::Result<Syslog> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
        let facility = FACILITIES
            .iter()
            .find(|(name, _)| *name == facility)
            .map(|&(_, n)| n)
            .ok_or_else(|| bad("unknown syslog facility"))?;
        let (scheme, rest) = address
            .split_once("://")
            .ok_or_else(|| bad("expected udp://, tcp:// or unix://"))?;
        let conn = match scheme {
            "udp" => {
                let socket = UdpSocket::bind(if rest.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })?;
                socket.connect(rest)?;
                Conn::Udp(socket)
            }
            "tcp" => Conn::Stream(Mutex::new(Box::new(TcpStream::connect(rest)?))),
            "unix" => {
                let (path, kind) = rest.split_once('#').unwrap_or((rest, ""));
                let datagram = || -> io::Result<Conn> {
                    let socket = UnixDatagram::unbound()?;
                    socket.connect(path)?;
                    Ok(Conn::UnixDatagram(socket))
                };
                let stream = || -> io::Result<Conn> {
                    Ok(Conn::Stream(Mutex::new(Box::new(UnixStream::connect(
                        path,
                    )?))))
                };
                match kind {
                    "dgram" => datagram()?,
                    "stream" => stream()?,
                    _ => datagram().or_else(|_| stream())?,
                }
            }
            _ => return Err(bad("expected udp://, tcp:// or unix://")),
        };
        Ok(Syslog {
            conn,
            facility,
            ident,
        })
    }

    /// Sends one line at `level`; a line that cannot be sent is dropped (a log must not
    /// take the server down).
    pub(crate) fn send(&self, level: Level, line: &str) {
        let severity = match level {
            Level::Debug => 7,
            Level::Info => 6,
            Level::Warning => 4,
            Level::Error => 3,
            Level::Critical => 2,
        };
        let pri = u16::from(self.facility) * 8 + severity;
        let message = format!("<{pri}>{}: {}", self.ident, line.trim_end_matches('\n'));
        let _ = match &self.conn {
            Conn::Udp(socket) => socket.send(message.as_bytes()).map(drop),
            Conn::UnixDatagram(socket) => socket.send(message.as_bytes()).map(drop),
            Conn::Stream(stream) => match stream.lock() {
                Ok(mut stream) => stream.write_all(format!("{message}\n").as_bytes()),
                Err(_) => Ok(()),
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3164 §4.1.1: PRI is facility * 8 + severity; gunicorn's ident and line follow.
    #[test]
    fn a_line_is_one_datagram_with_its_priority() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = format!("udp://{}", receiver.local_addr().unwrap());
        let log = Syslog::connect(&address, "local3", "qiao.app.error".into()).unwrap();
        log.send(Level::Warning, "[7] [WARNING] disk full\n");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"<156>qiao.app.error: [7] [WARNING] disk full".as_slice()
        );
    }

    #[test]
    fn bad_addresses_and_facilities_are_errors() {
        assert!(Syslog::connect("udp://127.0.0.1:514", "nope", "x".into()).is_err());
        assert!(Syslog::connect("http://x", "user", "x".into()).is_err());
    }
}
