//! The engine's settings: the dict the Python settings table hands over, checked once, typed.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::http::forwarded::{Rules, TrustedNets};
use crate::http::Limits;

/// A value the settings dict holds for one key, as the Python table made it.
trait FromSetting: Sized {
    fn from_setting(value: &Bound<'_, PyAny>) -> PyResult<Self>;
}

macro_rules! extracted {
    ($($t:ty),*) => {
        $(impl FromSetting for $t {
            fn from_setting(value: &Bound<'_, PyAny>) -> PyResult<Self> {
                value.extract()
            }
        })*
    };
}

extracted!(
    usize,
    u64,
    u32,
    i32,
    bool,
    String,
    Option<String>,
    Vec<String>,
    Vec<(String, String)>
);

/// Durations arrive as seconds (a float).
impl FromSetting for Duration {
    fn from_setting(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        let s: f64 = value.extract()?;
        Duration::try_from_secs_f64(s)
            .map_err(|_| PyValueError::new_err(format!("bad duration {s}")))
    }
}

/// Declares the engine's settings once: each field is read from the dict key of the same
/// name, and `KEYS` lists them, so the Python table and the engine cannot drift apart
/// (the engine refuses a dict with a key missing or one it does not know).
macro_rules! settings {
    ($( $(#[$doc:meta])* $name:ident : $ty:ty, )*) => {
        /// The settings the engine reads, validated by Python's settings table first.
        #[derive(Debug, Clone)]
        pub(crate) struct Settings {
            $( $(#[$doc])* pub(crate) $name: $ty, )*
            /// The request-head limits, gathered from the `limit_*` settings.
            pub(crate) limits: Limits,
            /// The TLS configuration made from `certfile` and its companions; `None`:
            /// plain TCP.
            pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
            /// The peers whose forwarding fields are read (`forwarded_allow_ips`).
            pub(crate) trusted: TrustedNets,
            /// Which forwarding fields are read from them, and how.
            pub(crate) forwarding: Rules,
            /// The peers that must begin with a PROXY header (`proxy_allow_ips`).
            pub(crate) proxy_allowed: TrustedNets,
            /// The static mounts and their settings, made from the `static_*` settings;
            /// `None`: no `--static`.
            pub(crate) statics: Option<Arc<crate::static_files::Config>>,
        }

        /// Every key of the settings dict, by name.
        pub(crate) const KEYS: &[&str] = &[$(stringify!($name)),*];

        impl Settings {
            fn read(d: &Bound<'_, PyDict>) -> PyResult<Settings> {
                Ok(Settings {
                    $( $name: setting(d, stringify!($name))?, )*
                    limits: Limits::default(),
                    tls: None,
                    trusted: TrustedNets::default(),
                    forwarding: Rules::default(),
                    proxy_allowed: TrustedNets::default(),
                    statics: None,
                })
            }
        }
    };
}

settings! {
    /// Python threads calling the app; 1 means the I/O thread calls it itself.
    threads: usize,
    /// Worker processes (reported in `wsgi.multiprocess`).
    workers: usize,
    /// SCRIPT_NAME: the mount point stripped from the front of PATH_INFO.
    root_path: String,
    access_logfile: Option<String>,
    access_logformat: String,
    /// `text` (gunicorn's lines) or `json` (one object per line) for both logs.
    log_format: String,
    error_logfile: String,
    log_level: String,
    /// Idle time allowed between keep-alive requests.
    keep_alive: Duration,
    /// Time allowed to receive a whole request head (slowloris bound).
    header_timeout: Duration,
    /// Time allowed between two reads of a request body (slow POST bound).
    body_timeout: Duration,
    /// Time a client that stopped reading the response may keep us waiting.
    write_timeout: Duration,
    /// Connections one worker holds open at most; more wait in the listen backlog.
    worker_connections: usize,
    /// Bodies up to this size are kept in memory; larger ones are spooled to a temporary
    /// file. Either way the body is read whole before the app runs, so a slow client
    /// never holds a Python thread.
    body_buffer_size: usize,
    /// Response bytes the worker may hold for slow clients across its connections.
    output_budget: usize,
    /// Bound on one chunk extension of a chunked body.
    limit_chunk_ext_size: usize,
    /// Bound on the trailer section of a chunked body.
    limit_trailer_size: usize,
    /// Bound on the request line (414 past it).
    limit_request_line: usize,
    /// Bound on the number of header fields (431 past it).
    limit_request_fields: usize,
    /// Bound on one header field line (431 past it).
    limit_request_field_size: usize,
    /// Bound on the whole head (431 past it).
    limit_request_head_size: usize,
    /// Bound on a request body (413 past it).
    max_request_body_size: u64,
    url_scheme: String,
    /// How long a graceful stop waits for requests in flight.
    graceful_timeout: Duration,
    /// Requests after which this worker stops gracefully to be replaced (0: never).
    max_requests: u64,
    /// The master's pid: when the parent is no longer it, the worker stops (0: no master).
    parent_pid: i32,
    /// TLS: the certificate chain (PEM); unset serves plain HTTP.
    certfile: Option<String>,
    /// TLS: the private key (PEM); unset: in `certfile`.
    keyfile: Option<String>,
    /// TLS: the password of an encrypted `keyfile`.
    keyfile_password: Option<String>,
    /// TLS: the authorities client certificates are verified with.
    ca_certs: Option<String>,
    /// TLS: 0 asks no client certificate, 1 asks for an optional one, 2 requires one.
    cert_reqs: u64,
    /// TLS: the cipher suites allowed, in preference order (unset: rustls's).
    ciphers: Option<String>,
    /// TLS: the oldest version allowed ("1.2" or "1.3").
    tls_min_version: String,
    /// Time allowed for a TLS handshake (a client that never completes one holds a
    /// connection slot until then).
    tls_handshake_timeout: Duration,
    /// The protocols offered, by preference: "h2,h1", "h1" (HTTP/2 over TLS by ALPN).
    http_protocols: String,
    /// Cleartext HTTP/2: "off", or "prior-knowledge" (a connection that opens with the
    /// HTTP/2 preface is served as HTTP/2).
    http2_cleartext: String,
    /// Streams one HTTP/2 connection may have open at once.
    http2_max_concurrent_streams: u32,
    /// The flow-control window each HTTP/2 stream starts with: what a client may send of
    /// a body before the server reads it.
    http2_initial_window_size: u32,
    /// The largest HTTP/2 frame payload the server accepts.
    http2_max_frame_size: u32,
    /// The largest header list (decoded, RFC 9113 §6.5.2) a request may carry.
    http2_max_header_list_size: u32,
    /// Peers (addresses, CIDR networks, or `*`) whose forwarding fields are believed.
    forwarded_allow_ips: Vec<String>,
    /// (field name, value meaning https) pairs, gunicorn's `secure_scheme_headers`.
    secure_scheme_headers: Vec<(String, String)>,
    /// How many proxies set `X-Forwarded-Host` (0: not read).
    forwarded_host: usize,
    /// How many proxies set `X-Forwarded-Port` (0: not read).
    forwarded_port: usize,
    /// How many proxies set `X-Forwarded-Prefix` (0: not read).
    forwarded_prefix: usize,
    /// Connections from `proxy_allow_ips` begin with a PROXY protocol header.
    proxy_protocol: bool,
    /// Peers (addresses, CIDR networks, or `*`) allowed to send a PROXY header.
    proxy_allow_ips: Vec<String>,
    /// What the listeners speak: `http`, or `uwsgi` (nginx's `uwsgi_pass`).
    protocol: String,
    /// `--log-syslog`: where the log lines also go (`None`: not to syslog).
    log_syslog_to: Option<String>,
    /// The syslog facility, by name.
    log_syslog_facility: String,
    /// The middle of the syslog program names, `qiao.<prefix>.error` / `.access`.
    log_syslog_prefix: String,
    /// Whether a `wsgi.file_wrapper` over a real file is handed to the sink as a file range
    /// (sent with sendfile(2) over plain TCP); false: iterated as blocks read in Python.
    sendfile: bool,
    /// `--static`: (URL prefix, directory) pairs served by the engine.
    static_mounts: Vec<(String, String)>,
    /// `Cache-Control: max-age` of static files without a content hash in their name.
    static_max_age: u64,
    /// A directory under a static prefix is answered with its `index.html`.
    static_index: bool,
    /// A request under a static prefix that names no file goes to the application.
    static_fallthrough: bool,
    /// Symbolic links may lead out of a static directory.
    static_follow_symlinks: bool,
    /// Static files (with their compressed siblings) kept open per worker, at most.
    static_cache_size: usize,
}

/// The value of `key`, or an error naming it.
fn setting<T: FromSetting>(d: &Bound<'_, PyDict>, key: &str) -> PyResult<T> {
    match d.get_item(key)? {
        Some(v) => T::from_setting(&v)
            .map_err(|e| PyValueError::new_err(format!("setting {key}: {}", e.value(d.py())))),
        None => Err(PyValueError::new_err(format!("missing setting {key}"))),
    }
}

impl Settings {
    pub(crate) fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<Settings> {
        for key in d.keys() {
            let key: String = key.extract()?;
            if !KEYS.contains(&key.as_str()) {
                return Err(PyValueError::new_err(format!(
                    "setting {key}: not an engine setting"
                )));
            }
        }
        let mut s = Settings::read(d)?;
        if s.threads == 0 {
            return Err(PyValueError::new_err("setting threads: must be at least 1"));
        }
        s.root_path = s.root_path.trim_end_matches('/').to_string();
        s.worker_connections = s.worker_connections.max(1);
        s.limits = Limits {
            max_request_line: s.limit_request_line,
            max_headers: s.limit_request_fields,
            max_header_field_size: s.limit_request_field_size,
            max_body: s.max_request_body_size,
            max_header_block: s.limit_request_head_size,
        };
        if let Some(certfile) = &s.certfile {
            let h2 = s.http_protocols.split(',').any(|p| p.trim() == "h2");
            let opts = crate::tls::TlsOptions {
                certfile,
                keyfile: s.keyfile.as_deref(),
                keyfile_password: s.keyfile_password.as_deref(),
                ca_certs: s.ca_certs.as_deref(),
                cert_reqs: s.cert_reqs,
                ciphers: s.ciphers.as_deref(),
                min_version: &s.tls_min_version,
                h2,
            };
            let config = crate::tls::server_config(&opts).map_err(|e| {
                PyValueError::new_err(format!("setting {}: {}", e.setting, e.reason))
            })?;
            s.tls = Some(config);
        }
        s.trusted = TrustedNets::parse(&s.forwarded_allow_ips)
            .map_err(|e| PyValueError::new_err(format!("setting forwarded_allow_ips: {e}")))?;
        if s.secure_scheme_headers.len() > crate::http::forwarded::MAX_SCHEME_HEADERS {
            return Err(PyValueError::new_err(
                "setting secure_scheme_headers: at most 8 headers",
            ));
        }
        s.proxy_allowed = TrustedNets::parse(&s.proxy_allow_ips)
            .map_err(|e| PyValueError::new_err(format!("setting proxy_allow_ips: {e}")))?;
        s.statics = crate::static_files::Config::new(
            &s.static_mounts,
            s.static_max_age,
            s.static_index,
            s.static_fallthrough,
            s.static_follow_symlinks,
            s.static_cache_size,
        )
        .map_err(|e| PyValueError::new_err(format!("setting static: {e}")))?;
        s.forwarding = Rules {
            secure_scheme_headers: s
                .secure_scheme_headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.to_ascii_lowercase().into_bytes().into(),
                        value.as_bytes().into(),
                    )
                })
                .collect(),
            x_host: s.forwarded_host,
            x_port: s.forwarded_port,
            x_prefix: s.forwarded_prefix,
        };
        Ok(s)
    }
}
