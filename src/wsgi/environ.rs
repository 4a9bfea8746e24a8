//! Builds the environ dict: a copy of a per-server template plus the request's own keys
//! (PEP 3333 "environ Variables"), with interned key strings and cached `HTTP_*` names.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::config::Settings;
use crate::http::forwarded::{Client, Forwarded};
use crate::http::{percent_decode, RequestHead};
use crate::tls::SessionInfo;
use crate::wsgi::input::Input;
use crate::wsgi::response::KeptStartResponse;

/// A host and port as the environ shows them.
pub(crate) struct HostPort {
    pub host: String,
    pub port: String,
    /// The two as `str`s, made at first use and shared after by every connection of a
    /// listener (only the local side uses this: a connection's remote side goes into its
    /// own environ base once, see `Peer`).
    ///
    /// A std `OnceLock`, not pyo3's `PyOnceLock`: it is only ever filled with the GIL held
    /// by code that cannot let go of it (making two `str`s), so the GIL already keeps a
    /// second thread out, and pyo3's machinery for waiting with the GIL released would be
    /// paid by every connection for a wait that cannot happen.
    strings: OnceLock<[Py<PyString>; 2]>,
}

impl HostPort {
    pub(crate) fn new(host: String, port: String) -> HostPort {
        HostPort {
            host,
            port,
            strings: OnceLock::new(),
        }
    }

    fn strings(&self, py: Python<'_>) -> &[Py<PyString>; 2] {
        self.strings
            .get_or_init(|| [&self.host, &self.port].map(|s| latin1(py, s.as_bytes()).unbind()))
    }
}

/// One connection as the WSGI side sees it: who is on each side (the environ reports
/// it), and the Python objects its requests reuse from one to the next. Those are made
/// at its second request that is not its last (a connection that carries one request
/// keeps nothing), and only ever used with the GIL held, so their locks are never
/// contended.
pub(crate) struct Peer {
    /// REMOTE_ADDR / REMOTE_PORT (empty on a Unix socket).
    pub remote: HostPort,
    /// The listening address, for SERVER_NAME / SERVER_PORT when there is no Host header.
    pub local: Arc<HostPort>,
    /// The connection's TLS session (`None`: plain TCP), for the `HTTPS` and `SSL_*` keys.
    /// (Boxed: most connections have none, and a Peer is moved several times as a
    /// connection is accepted.)
    pub tls: Option<Box<SessionInfo>>,
    /// Whether the peer is a trusted proxy (`--forwarded-allow-ips`), whose forwarding
    /// fields are read: decided once, as the connection is accepted, so that a request
    /// from anyone else pays nothing for them.
    pub trusted: bool,
    /// The connection must begin with a PROXY protocol header (`--proxy-protocol`, and
    /// the peer in `--proxy-allow-from`).
    pub proxy_header: bool,
    /// A PROXY v2 header said the client's connection used TLS: the scheme is https.
    pub https: bool,
    /// This connection's own environ base (see `Template::connection_environ`).
    base: Mutex<Option<ConnectionBase>>,
    /// The connection's own values a trusted proxy's headers replace, made at the first
    /// request that has them (see `Original`); a `OnceLock` filled with the GIL held, as
    /// `HostPort::strings`.
    original: OnceLock<Original>,
    pub start_response: Mutex<Option<KeptStartResponse>>,
}

impl Peer {
    /// The peer as the error log names it: its address, or "unix socket" (which has none).
    pub(crate) fn shown(&self) -> &str {
        if self.remote.host.is_empty() {
            "unix socket"
        } else {
            &self.remote.host
        }
    }

    /// The client as the access log shows it (gunicorn's `%(h)s`, as `REMOTE_ADDR`): the
    /// one a trusted proxy named, else this peer's address.
    pub(crate) fn client(&self, forwarded: Option<&Forwarded>) -> std::borrow::Cow<'_, str> {
        match forwarded.and_then(|f| f.client.as_ref()) {
            Some(client) => ip_text(client.ip).into(),
            None => self.remote.host.as_str().into(),
        }
    }

    pub(crate) fn new(remote: HostPort, local: Arc<HostPort>) -> Peer {
        Peer {
            remote,
            local,
            tls: None,
            trusted: false,
            proxy_header: false,
            https: false,
            base: Mutex::new(None),
            original: OnceLock::new(),
            start_response: Mutex::new(None),
        }
    }

    /// The same peer, trusted or not as a proxy.
    pub(crate) fn trusted(mut self, trusted: bool) -> Peer {
        self.trusted = trusted;
        self
    }
}

/// The connection's own values that a trusted proxy's headers replace, for
/// `qiao.original`: made once per connection, and shown through a read-only view that
/// every request of the connection shares (one dict store per request, where a dict of its
/// own cost a copy, a store and a free).
struct Original {
    dict: Py<PyDict>,
    /// `types.MappingProxyType(dict)`.
    view: Py<PyAny>,
}

/// A read-only view of `dict` (`types.MappingProxyType`).
fn read_only<'py>(dict: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `dict` is a live dict; PyDictProxy_New returns a new reference or NULL with
    // an exception set, which `from_owned_ptr_or_err` turns into the error.
    unsafe { Bound::from_owned_ptr_or_err(dict.py(), ffi::PyDictProxy_New(dict.as_ptr())) }
}

/// The template with the keys that stay the same from one request of a connection to the
/// next already set, for `host` (the Host header it was made with).
struct ConnectionBase {
    host: Option<Box<[u8]>>,
    dict: Py<PyDict>,
    /// The first forwarding a trusted proxy sent for this host, and `dict` with it applied.
    forwarded: Option<(Box<Forwarded>, Py<PyDict>)>,
}

/// Request headers common enough to keep their environ key as an interned string.
/// (`HOST` is the index of the first.)
const COMMON_HEADERS: [&str; 20] = [
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "connection",
    "cookie",
    "referer",
    "cache-control",
    "origin",
    "upgrade-insecure-requests",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "authorization",
    "if-none-match",
    "if-modified-since",
    "pragma",
    "sec-fetch-mode",
];
const HOST: usize = 0;

/// Interned keys and the dict every environ starts as.
pub(crate) struct Template {
    base: Py<PyDict>,
    k_method: Py<PyString>,
    k_script_name: Py<PyString>,
    k_path_info: Py<PyString>,
    k_query: Py<PyString>,
    k_protocol: Py<PyString>,
    k_remote_addr: Py<PyString>,
    k_remote_port: Py<PyString>,
    k_server_name: Py<PyString>,
    k_server_port: Py<PyString>,
    k_content_type: Py<PyString>,
    k_content_length: Py<PyString>,
    k_input: Py<PyString>,
    k_raw_uri: Py<PyString>,
    k_request_uri: Py<PyString>,
    k_url_scheme: Py<PyString>,
    k_original: Py<PyString>,
    /// `wsgi.url_scheme`'s two values, for what a trusted proxy says.
    http: Py<PyString>,
    https_str: Py<PyString>,
    empty: Py<PyString>,
    common: Vec<Py<PyString>>,
    /// The `wsgi.input` of every request without a body, the template's own. It has
    /// nothing to read and so no state to keep, and one object serves them all: most
    /// requests have no body, and each would otherwise make and free a Python object.
    pub empty_input: Py<Input>,
    /// The method of most requests that are not GETs, kept as a shared str object.
    post: Py<PyString>,
    root_path: Vec<u8>,
    /// `wsgi.url_scheme` is https: a Host without a port means 443.
    https: bool,
}

fn interned(py: Python<'_>, s: &str) -> Py<PyString> {
    PyString::intern(py, s).unbind()
}

/// A `str` whose code points are the bytes (PEP 3333 "Unicode Issues": latin-1 native strings).
pub(crate) fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    if bytes.is_ascii() {
        // An ASCII str is its bytes: allocate it and copy them in, without the UTF-8
        // decoder PyString::new goes through.
        // SAFETY: PyUnicode_New with maxchar 127 gives a compact ASCII str of `len` bytes
        // (plus the NUL it writes itself), which we fill before anyone sees it.
        unsafe {
            let ptr = ffi::PyUnicode_New(bytes.len() as ffi::Py_ssize_t, 127);
            if !ptr.is_null() {
                let data = ffi::PyUnicode_DATA(ptr).cast::<u8>();
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
                return Bound::from_owned_ptr(py, ptr).cast_into_unchecked();
            }
            // Out of memory: fall back to PyString::new below.
            ffi::PyErr_Clear();
        }
        // SAFETY: ASCII is valid UTF-8.
        return PyString::new(py, unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    // SAFETY: the pointer and length describe `bytes`; latin-1 decoding cannot fail, and
    // the returned new reference is owned by the Bound.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(
            bytes.as_ptr().cast(),
            bytes.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Bound::from_owned_ptr(py, ptr).cast_into_unchecked()
    }
}

/// An address as the environ shows it. IPv4 is written by hand: `to_string` goes through
/// the formatting machinery (a `Formatter`, and a call through `fmt::Write` for each
/// piece), and every new connection's peer address (and every client a proxy names) is
/// formatted.
pub(crate) fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let len = ipv4_text(v4, &mut buf);
            // SAFETY: digits and dots are ASCII, so valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(&buf[..len]) }.to_owned()
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

/// Writes `v4` in dotted decimal into `buf`, returning its length: no allocation, for the
/// client address of each request a trusted proxy forwards.
fn ipv4_text(v4: std::net::Ipv4Addr, buf: &mut [u8; 15]) -> usize {
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        // Up to three digits, no leading zeros.
        if octet >= 100 {
            buf[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            buf[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        buf[len] = b'0' + octet % 10;
        len += 1;
    }
    len
}

/// `Host` split into name and port (`[v6]:port` keeps its brackets off the port).
fn split_host(host: &[u8]) -> (&[u8], Option<&[u8]>) {
    let colon = if host.first() == Some(&b'[') {
        host.iter()
            .position(|&b| b == b']')
            .and_then(|end| (host.get(end + 1) == Some(&b':')).then_some(end + 1))
    } else {
        host.iter().rposition(|&b| b == b':')
    };
    match colon {
        Some(i) => (&host[..i], Some(&host[i + 1..])),
        None => (host, None),
    }
}

impl Template {
    pub(crate) fn new(
        py: Python<'_>,
        settings: &Settings,
        errors: Py<PyAny>,
        file_wrapper: Py<PyAny>,
    ) -> PyResult<Template> {
        let base = PyDict::new(py);
        base.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
        base.set_item("wsgi.url_scheme", &settings.url_scheme)?;
        base.set_item("wsgi.errors", errors)?;
        base.set_item("wsgi.multithread", settings.threads > 1)?;
        base.set_item("wsgi.multiprocess", settings.workers > 1)?;
        base.set_item("wsgi.run_once", false)?;
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item("wsgi.file_wrapper", file_wrapper)?;
        base.set_item("SCRIPT_NAME", &settings.root_path)?;
        base.set_item(
            "SERVER_SOFTWARE",
            concat!("qiao/", env!("CARGO_PKG_VERSION")),
        )?;
        base.set_item("GATEWAY_INTERFACE", "CGI/1.1")?;
        let common = COMMON_HEADERS
            .iter()
            .map(|name| interned(py, &header_key(name.as_bytes()).unwrap_or_default()))
            .collect();
        let template = Template {
            base: base.unbind(),
            k_method: interned(py, "REQUEST_METHOD"),
            k_script_name: interned(py, "SCRIPT_NAME"),
            k_path_info: interned(py, "PATH_INFO"),
            k_query: interned(py, "QUERY_STRING"),
            k_protocol: interned(py, "SERVER_PROTOCOL"),
            k_remote_addr: interned(py, "REMOTE_ADDR"),
            k_remote_port: interned(py, "REMOTE_PORT"),
            k_server_name: interned(py, "SERVER_NAME"),
            k_server_port: interned(py, "SERVER_PORT"),
            k_content_type: interned(py, "CONTENT_TYPE"),
            k_content_length: interned(py, "CONTENT_LENGTH"),
            k_input: interned(py, "wsgi.input"),
            k_raw_uri: interned(py, "RAW_URI"),
            k_request_uri: interned(py, "REQUEST_URI"),
            k_url_scheme: interned(py, "wsgi.url_scheme"),
            k_original: interned(py, "qiao.original"),
            http: interned(py, "http"),
            https_str: interned(py, "https"),
            empty: interned(py, ""),
            common,
            empty_input: Py::new(py, Input::buffered(bytes::Bytes::new()))?,
            post: interned(py, "POST"),
            root_path: settings.root_path.as_bytes().to_vec(),
            https: settings.url_scheme == "https",
        };
        // The keys `build` sets on every request are in the template already (as None,
        // replaced each time), so its copy is sized for them: setting them replaces values
        // instead of growing the dict. Without this, most environs would be resized once
        // (a new table, every entry inserted again) on their way to the app.
        let base = template.base.bind(py);
        for key in [
            &template.k_path_info,
            &template.k_raw_uri,
            &template.k_request_uri,
            &template.k_remote_addr,
            &template.k_remote_port,
            &template.k_server_name,
            &template.k_server_port,
        ] {
            base.set_item(key, py.None())?;
        }
        // The values of nearly every request are the template's own, left as they are when
        // the request has them: a dict store (a hash lookup and a reference swapped)
        // fewer for each.
        base.set_item(&template.k_method, interned(py, "GET"))?;
        base.set_item(&template.k_protocol, interned(py, "HTTP/1.1"))?;
        base.set_item(&template.k_query, PyString::new(py, ""))?;
        base.set_item(&template.k_input, &template.empty_input)?;
        Ok(template)
    }

    /// The environ of one request. `input` is its `wsgi.input` (`empty_input` when it has
    /// no body); `keep`: the connection keeps what it can reuse (see `Peer`).
    pub(crate) fn build<'py>(
        &self,
        py: Python<'py>,
        head: &RequestHead,
        forwarded: Option<&Forwarded>,
        peer: &Peer,
        input: &Bound<'py, Input>,
        keep: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let env = self.connection_environ(py, head, forwarded, peer, keep)?;
        let method = head.method();
        match method {
            b"GET" => {} // the template's
            b"POST" => env.set_item(&self.k_method, &self.post)?,
            _ => env.set_item(&self.k_method, latin1(py, method))?,
        }
        // PEP 3333: PATH_INFO is the percent-decoded path, its bytes read as latin-1;
        // SCRIPT_NAME (the root path) is taken off its front when the path is under it.
        let decoded = percent_decode(head.path());
        let mut path: &[u8] = &decoded;
        if !self.root_path.is_empty() && path.starts_with(&self.root_path) {
            let rest = &path[self.root_path.len()..];
            if rest.is_empty() || rest[0] == b'/' {
                path = rest;
            }
        } else if !self.root_path.is_empty() {
            // Not under the mount point: the app sees the whole path and an empty SCRIPT_NAME
            // (or only the prefix a trusted proxy mounts the app at).
            let prefix = forwarded.and_then(|f| f.prefix.as_deref()).unwrap_or(b"");
            env.set_item(&self.k_script_name, latin1(py, prefix))?;
        }
        env.set_item(&self.k_path_info, latin1(py, path))?;
        let query = head.query();
        if !query.is_empty() {
            env.set_item(&self.k_query, latin1(py, query))?;
        }
        let target = latin1(py, head.target());
        env.set_item(&self.k_raw_uri, &target)?;
        env.set_item(&self.k_request_uri, target)?;
        let version = head.version_raw();
        if version != b"HTTP/1.1" {
            env.set_item(&self.k_protocol, latin1(py, version))?;
        }
        if !input.is(&self.empty_input) {
            env.set_item(&self.k_input, input)?;
        }

        // Which of the common headers and Content-Type were set already: only a repeat needs
        // the dict looked up to join onto (saves a lookup per header).
        let mut seen: u32 = 0;
        const CONTENT_TYPE_SEEN: u32 = 1 << COMMON_HEADERS.len();
        const _: () = assert!(COMMON_HEADERS.len() < 32, "`seen` has a bit per header");
        const _: () = assert!(
            matches!(COMMON_HEADERS[HOST].as_bytes(), b"host"),
            "HOST is the index of the Host header"
        );
        for i in 0..head.headers.len() {
            let name = head.header_name(i);
            let value = head.header_value(i);
            if name.eq_ignore_ascii_case(b"content-type") {
                let again = seen & CONTENT_TYPE_SEEN != 0;
                seen |= CONTENT_TYPE_SEEN;
                self.set_joined(&env, self.k_content_type.bind(py), value, again)?;
                continue;
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                env.set_item(&self.k_content_length, latin1(py, value))?;
                continue;
            }
            let common = COMMON_HEADERS
                .iter()
                .position(|c| c.len() == name.len() && c.as_bytes().eq_ignore_ascii_case(name));
            match common {
                // Set with the connection's keys (the parser let only one through).
                Some(HOST) => {}
                Some(idx) => {
                    let again = seen & (1 << idx) != 0;
                    seen |= 1 << idx;
                    self.set_joined(&env, self.common[idx].bind(py), value, again)?
                }
                None => {
                    // Names with '_' could pose as a '-' name once mapped (HTTP_X_A from
                    // "X_A" or "X-A"): drop them, as gunicorn does by default.
                    let Some(key) = header_key(name) else {
                        continue;
                    };
                    self.set_joined(&env, &PyString::new(py, &key), value, true)?;
                }
            }
        }
        // A uwsgi packet's variables, as nginx (or uWSGI's router) gave them: last, so
        // that SERVER_PROTOCOL, PATH_INFO and the like are the packet's.
        for (key, value) in forwarded.map_or(&[][..], |f| &f.environ) {
            env.set_item(latin1(py, key), latin1(py, value))?;
        }
        Ok(env)
    }

    /// Puts what a trusted proxy said in place of what the connection shows:
    /// - the scheme: `wsgi.url_scheme`;
    /// - the client: `REMOTE_ADDR`, and `REMOTE_PORT` (empty when the proxy gave no port);
    /// - `X-Forwarded-Host`: `HTTP_HOST`, `SERVER_NAME`, and `SERVER_PORT` when it has a
    ///   port (as Werkzeug's ProxyFix maps it);
    /// - `X-Forwarded-Port`: `SERVER_PORT`, and the port of `HTTP_HOST` (left out when it
    ///   is the scheme's default, so that URLs built from it do not spell it);
    /// - `X-Forwarded-Prefix`: put in front of `SCRIPT_NAME`.
    ///
    /// `qiao.original`, a read-only mapping, keeps what the connection showed: its own
    /// `REMOTE_ADDR`, `REMOTE_PORT` and `wsgi.url_scheme` (shared by the connection's
    /// requests, see `Original`), and the values the host, port and prefix replaced.
    fn apply_forwarded(
        &self,
        env: &Bound<'_, PyDict>,
        head: &RequestHead,
        f: &Forwarded,
        peer: &Peer,
    ) -> PyResult<()> {
        let py = env.py();
        let shared = peer
            .original
            .get_or_init(|| self.connection_original(py, peer));
        // Values that vary by request (the host, port and prefix) need a mapping of this
        // request's own, made at the first one kept.
        let own: std::cell::OnceCell<Bound<'_, PyDict>> = std::cell::OnceCell::new();
        // Keeps `key`'s value before it is replaced.
        let keep = |key: &Py<PyString>| -> PyResult<()> {
            let original = match own.get() {
                Some(dict) => dict,
                None => {
                    let _ = own.set(shared.dict.bind(py).copy()?);
                    own.get().expect("just set")
                }
            };
            let key = key.bind(py);
            if !original.contains(key)? {
                if let Some(old) = env.get_item(key)? {
                    original.set_item(key, old)?;
                }
            }
            Ok(())
        };
        if let Some(client) = &f.client {
            self.set_client(env, client)?;
        }
        let conn_https = self.https || peer.https;
        let https = f.https.unwrap_or(conn_https);
        if https != conn_https {
            let scheme = if https { &self.https_str } else { &self.http };
            env.set_item(&self.k_url_scheme, scheme)?;
            // On a Unix socket SERVER_PORT is the Host's port or the scheme's default.
            let host_port = head.host().and_then(|h| split_host(h).1);
            if peer.local.port.is_empty() && host_port.is_none() {
                keep(&self.k_server_port)?;
                let port = if https { "443" } else { "80" };
                env.set_item(&self.k_server_port, port)?;
            }
        }
        if let Some(host) = &f.host {
            keep(&self.common[HOST])?;
            keep(&self.k_server_name)?;
            env.set_item(&self.common[HOST], latin1(py, host))?;
            let (name, port) = split_host(host);
            env.set_item(&self.k_server_name, latin1(py, name))?;
            if let Some(port) = port {
                keep(&self.k_server_port)?;
                env.set_item(&self.k_server_port, latin1(py, port))?;
            }
        }
        if let Some(port) = f.port {
            let mut digits = itoa::Buffer::new();
            let port = digits.format(port);
            let host = f.host.as_deref().or(head.host());
            if let Some(host) = host {
                let mut with_port = split_host(host).0.to_vec();
                if port != if https { "443" } else { "80" } {
                    with_port.push(b':');
                    with_port.extend_from_slice(port.as_bytes());
                }
                keep(&self.common[HOST])?;
                env.set_item(&self.common[HOST], latin1(py, &with_port))?;
            }
            keep(&self.k_server_port)?;
            env.set_item(&self.k_server_port, latin1(py, port.as_bytes()))?;
        }
        if let Some(prefix) = &f.prefix {
            keep(&self.k_script_name)?;
            let mut script_name = prefix.to_vec();
            if let Some(mount) = env.get_item(&self.k_script_name)? {
                let mount: String = mount.extract()?;
                script_name.extend(mount.chars().map(|c| c as u32 as u8));
            }
            env.set_item(&self.k_script_name, latin1(py, &script_name))?;
        }
        match own.get() {
            Some(dict) => env.set_item(&self.k_original, read_only(dict)?),
            None => env.set_item(&self.k_original, &shared.view),
        }
    }

    /// REMOTE_ADDR and REMOTE_PORT of the client a trusted proxy named (the port empty when
    /// it gave none).
    fn set_client(&self, env: &Bound<'_, PyDict>, client: &Client) -> PyResult<()> {
        let py = env.py();
        match client.ip {
            IpAddr::V4(v4) => {
                let mut buf = [0u8; 15];
                let len = ipv4_text(v4, &mut buf);
                env.set_item(&self.k_remote_addr, latin1(py, &buf[..len]))?;
            }
            ip => env.set_item(&self.k_remote_addr, latin1(py, ip.to_string().as_bytes()))?,
        }
        match client.port {
            Some(port) => env.set_item(
                &self.k_remote_port,
                latin1(py, itoa::Buffer::new().format(port).as_bytes()),
            ),
            None => env.set_item(&self.k_remote_port, &self.empty),
        }
    }

    /// The connection's own REMOTE_ADDR, REMOTE_PORT and wsgi.url_scheme, for
    /// `qiao.original`.
    fn connection_original(&self, py: Python<'_>, peer: &Peer) -> Original {
        let dict = PyDict::new(py);
        let scheme = if self.https || peer.https {
            &self.https_str
        } else {
            &self.http
        };
        let items = [
            (&self.k_remote_addr, latin1(py, peer.remote.host.as_bytes())),
            (&self.k_remote_port, latin1(py, peer.remote.port.as_bytes())),
            (&self.k_url_scheme, scheme.bind(py).clone()),
        ];
        for (key, value) in items {
            // Setting a str into a new dict fails only when out of memory; the entry is
            // then missing, nothing worse.
            let _ = dict.set_item(key, value);
        }
        let view = read_only(&dict).map_or_else(|_| py.None(), Bound::unbind);
        Original {
            dict: dict.unbind(),
            view,
        }
    }

    /// A new environ with the keys a connection's requests share set: the peer's address,
    /// SERVER_NAME and SERVER_PORT, and HTTP_HOST, with what a trusted proxy said of the
    /// request (`forwarded`) applied.
    ///
    /// When `keep`, the connection makes these once, into its own copy of the template,
    /// and its later requests with the same Host copy that: five dict stores and three
    /// `str`s fewer on each later request of a keep-alive connection. Behind a proxy, the
    /// base with the first client's forwarding applied is kept too, and the requests of
    /// that same client copy it (the stores of `apply_forwarded` saved while the proxy
    /// sends one client's requests on the connection); another client's start from the
    /// plain base.
    fn connection_environ<'py>(
        &self,
        py: Python<'py>,
        head: &RequestHead,
        forwarded: Option<&Forwarded>,
        peer: &Peer,
        keep: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let host = head.host();
        let base = keep.then(|| peer.base.lock().ok()).flatten();
        let Some(mut base) = base else {
            return self.fresh_environ(py, head, forwarded, peer);
        };
        let made = match &mut *base {
            Some(made) if made.host.as_deref() == host => made,
            // The Host changed: the base stays for the one it was made for.
            Some(_) => return self.fresh_environ(py, head, forwarded, peer),
            None => base.insert(ConnectionBase {
                host: host.map(Box::from),
                dict: self.fresh_environ(py, head, None, peer)?.unbind(),
                forwarded: None,
            }),
        };
        let Some(f) = forwarded else {
            return made.dict.bind(py).copy();
        };
        match &made.forwarded {
            Some((first, dict)) if **first == *f => dict.bind(py).copy(),
            // Another client, the rest the same (the common case behind a proxy that
            // multiplexes its clients over this connection): only the client differs.
            Some((first, dict)) if first.differs_only_in_client(f) => {
                let env = dict.bind(py).copy()?;
                if let Some(client) = &f.client {
                    self.set_client(&env, client)?;
                }
                Ok(env)
            }
            Some(_) => {
                let env = made.dict.bind(py).copy()?;
                self.apply_forwarded(&env, head, f, peer)?;
                Ok(env)
            }
            None => {
                let dict = made.dict.bind(py).copy()?;
                self.apply_forwarded(&dict, head, f, peer)?;
                let env = dict.copy()?;
                made.forwarded = Some((Box::new(f.clone()), dict.unbind()));
                Ok(env)
            }
        }
    }

    /// A copy of the template with the connection's keys set for the request's host, and
    /// what a trusted proxy said applied.
    fn fresh_environ<'py>(
        &self,
        py: Python<'py>,
        head: &RequestHead,
        forwarded: Option<&Forwarded>,
        peer: &Peer,
    ) -> PyResult<Bound<'py, PyDict>> {
        let env = self.base.bind(py).copy()?;
        self.set_connection_keys(&env, head.host(), peer)?;
        if let Some(forwarded) = forwarded {
            self.apply_forwarded(&env, head, forwarded, peer)?;
        }
        Ok(env)
    }

    fn set_connection_keys(
        &self,
        env: &Bound<'_, PyDict>,
        host: Option<&[u8]>,
        peer: &Peer,
    ) -> PyResult<()> {
        let py = env.py();
        if let Some(tls) = &peer.tls {
            set_tls_keys(env, tls)?;
        }
        env.set_item(&self.k_remote_addr, latin1(py, peer.remote.host.as_bytes()))?;
        env.set_item(&self.k_remote_port, latin1(py, peer.remote.port.as_bytes()))?;
        if peer.https {
            env.set_item(&self.k_url_scheme, &self.https_str)?;
        }
        let [local_host, local_port] = peer.local.strings(py);
        let Some(host) = host else {
            env.set_item(&self.k_server_name, local_host)?;
            return env.set_item(&self.k_server_port, local_port);
        };
        env.set_item(&self.common[HOST], latin1(py, host))?;
        // RFC 3875 §4.1.14-15: SERVER_NAME is the host the client addressed; SERVER_PORT
        // the port the request came in on (the Host's port on a Unix socket, which has
        // none).
        let (name, port) = split_host(host);
        env.set_item(&self.k_server_name, latin1(py, name))?;
        if peer.local.port.is_empty() {
            let default_port: &[u8] = if self.https || peer.https {
                b"443"
            } else {
                b"80"
            };
            env.set_item(
                &self.k_server_port,
                latin1(py, port.unwrap_or(default_port)),
            )
        } else {
            env.set_item(&self.k_server_port, local_port)
        }
    }

    /// Sets `key`, joining with "," onto a value a repeated header already set
    /// (RFC 9110 §5.3: a repeated field is the comma-joined list). `maybe_set`: the key
    /// may be set already (false when the caller knows it is not).
    fn set_joined(
        &self,
        env: &Bound<'_, PyDict>,
        key: &Bound<'_, PyString>,
        value: &[u8],
        maybe_set: bool,
    ) -> PyResult<()> {
        let py = env.py();
        if !maybe_set {
            return env.set_item(key, latin1(py, value));
        }
        match env.get_item(key)? {
            Some(old) => {
                let old: String = old.extract()?;
                let mut joined: Vec<u8> = old.chars().map(|c| c as u32 as u8).collect();
                joined.push(b',');
                joined.extend_from_slice(value);
                env.set_item(key, latin1(py, &joined))
            }
            None => env.set_item(key, latin1(py, value)),
        }
    }
}

/// What the environ tells of a TLS connection, under mod_ssl's names (which apps written
/// for Apache or nginx read): `HTTPS`, the protocol and cipher, and the client's
/// certificate when it sent one.
fn set_tls_keys(env: &Bound<'_, PyDict>, tls: &SessionInfo) -> PyResult<()> {
    env.set_item("HTTPS", "on")?;
    env.set_item("SSL_PROTOCOL", tls.protocol)?;
    env.set_item("SSL_CIPHER", tls.cipher)?;
    let Some(client) = &tls.client else {
        return env.set_item("SSL_CLIENT_VERIFY", "NONE");
    };
    // rustls accepted the certificate only if it verified against --ca-certs.
    env.set_item("SSL_CLIENT_VERIFY", "SUCCESS")?;
    env.set_item("SSL_CLIENT_S_DN", &client.subject)?;
    env.set_item("SSL_CLIENT_I_DN", &client.issuer)?;
    env.set_item("SSL_CLIENT_M_SERIAL", &client.serial)?;
    env.set_item("SSL_CLIENT_CERT", &client.pem)
}

/// `HTTP_` + the name upper-cased with '-' as '_'; `None` for names holding '_'.
fn header_key(name: &[u8]) -> Option<String> {
    if name.contains(&b'_') {
        return None;
    }
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    key.extend(name.iter().map(|&b| match b {
        b'-' => '_',
        _ => b.to_ascii_uppercase() as char,
    }));
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys_follow_cgi() {
        assert_eq!(
            header_key(b"User-Agent").as_deref(),
            Some("HTTP_USER_AGENT")
        );
        assert_eq!(header_key(b"x_forwarded_for"), None);
    }

    #[test]
    fn ip_text_is_canonical() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "192.168.100.255",
            "203.0.113.7",
            "2001:db8::1",
        ] {
            assert_eq!(ip_text(ip.parse().unwrap()), ip);
        }
    }

    #[test]
    fn host_splits() {
        assert_eq!(
            split_host(b"example.com:8080"),
            (&b"example.com"[..], Some(&b"8080"[..]))
        );
        assert_eq!(split_host(b"example.com"), (&b"example.com"[..], None));
        assert_eq!(split_host(b"[::1]:9"), (&b"[::1]"[..], Some(&b"9"[..])));
        assert_eq!(split_host(b"[::1]"), (&b"[::1]"[..], None));
    }
}
