//! TLS settings made into a rustls server configuration (certificate chain, key, client
//! certificates, versions, cipher suites, ALPN), and the facts of one TLS session the
//! environ reports. Files are read here, once per worker start: a reload's new workers
//! read them again.

use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{RootCertStore, SupportedCipherSuite, SupportedProtocolVersion};

/// The TLS settings as the settings table hands them over.
pub(crate) struct TlsOptions<'a> {
    pub certfile: &'a str,
    pub keyfile: Option<&'a str>,
    /// Decrypts an encrypted PKCS#8 key.
    pub keyfile_password: Option<&'a str>,
    pub ca_certs: Option<&'a str>,
    /// 0: no client certificate asked for; 1: asked for, optional; 2: required.
    pub cert_reqs: u64,
    pub ciphers: Option<&'a str>,
    /// "1.2" or "1.3".
    pub min_version: &'a str,
    /// HTTP/2 is offered by ALPN (ahead of HTTP/1.1).
    pub h2: bool,
}

/// A setting whose value cannot make a TLS configuration, and why (one line).
#[derive(Debug)]
pub(crate) struct TlsError {
    pub setting: &'static str,
    pub reason: String,
}

fn error(setting: &'static str, reason: impl Into<String>) -> TlsError {
    TlsError {
        setting,
        reason: reason.into(),
    }
}

/// The ALPN names of HTTP/1.1 and HTTP/2 (RFC 7301, RFC 9113 §3.2).
const ALPN_HTTP11: &[u8] = b"http/1.1";
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// The server configuration every TLS connection of the worker shares.
pub(crate) fn server_config(opts: &TlsOptions<'_>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut provider = ring::default_provider();
    match opts.ciphers {
        Some(list) => provider.cipher_suites = cipher_suites(list, &provider.cipher_suites)?,
        None => preferred_order(&mut provider.cipher_suites),
    }
    let versions: &[&SupportedProtocolVersion] = match opts.min_version {
        "1.3" => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let provider = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|_| {
            error(
                "ciphers",
                "no cipher suite left for the allowed TLS versions (--tls-min-version)",
            )
        })?;

    let builder = match (opts.cert_reqs, opts.ca_certs) {
        (0, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(error(
                "cert_reqs",
                "client certificates need --ca-certs, the authorities to verify them with",
            ))
        }
        (reqs, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates("ca_certs", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| error("ca_certs", format!("{ca}: {e}")))?;
            }
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            if reqs == 1 {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| error("ca_certs", format!("{ca}: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };

    let chain = read_certificates("certfile", opts.certfile)?;
    let keyfile = opts.keyfile.unwrap_or(opts.certfile);
    let key = read_key(keyfile, opts.keyfile_password)?;
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => error(
            "keyfile",
            format!(
                "{keyfile}: the key does not match the certificate in {}",
                opts.certfile
            ),
        ),
        other => error("keyfile", format!("{keyfile}: {other}")),
    })?;
    // The server's order of the suites decides, not the client's (OpenSSL clients put
    // AES-256 first).
    config.ignore_client_order = true;
    config.alpn_protocols = if opts.h2 {
        vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
    } else {
        vec![ALPN_HTTP11.to_vec()]
    };
    Ok(Arc::new(config))
}

/// The bytes of a PEM file named by `setting`.
fn read_file(setting: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        error(setting, format!("{path}: {reason}"))
    })
}

/// The certificates of a PEM file, in order (a chain: the server's first).
fn read_certificates(
    setting: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(CertificateDer::into_owned))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(setting, path, e))?;
    if certs.is_empty() {
        return Err(error(
            setting,
            format!("{path}: no PEM certificate (BEGIN CERTIFICATE) in the file"),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC); an encrypted PKCS#8
/// key (PBES2, what `openssl genpkey -aes256` and `openssl pkcs8 -topk8` write) with
/// `password`.
fn read_key(path: &str, password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file("keyfile", path)?;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&pem) {
        let (kind, der) = section.map_err(|e| pem_error("keyfile", path, e))?;
        if let Some(key) = PrivateKeyDer::from_pem(kind, der) {
            return Ok(key);
        }
    }
    let text = String::from_utf8_lossy(&pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return decrypt_key(path, &text, password);
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(error(
            "keyfile",
            format!("{path}: the key is encrypted in OpenSSL's legacy form; `openssl pkcs8 -topk8 -in KEY -out NEW` writes it as encrypted PKCS#8, which --keyfile-password opens"),
        ));
    }
    Err(error(
        "keyfile",
        format!("{path}: no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in the file"),
    ))
}

/// An encrypted PKCS#8 key (RFC 5958 §3, PBES2 of RFC 8018), decrypted with `password`.
fn decrypt_key(
    path: &str,
    text: &str,
    password: Option<&str>,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    use pkcs8::der::Decode;

    let Some(password) = password else {
        return Err(error(
            "keyfile",
            format!("{path}: the key is encrypted; give its password with --keyfile-password (or QIAO_KEYFILE_PASSWORD)"),
        ));
    };
    let begin = text
        .find("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        .unwrap_or(0);
    let (_, der) = pkcs8::der::pem::decode_vec(&text.as_bytes()[begin..])
        .map_err(|e| error("keyfile", format!("{path}: not a valid PEM file ({e})")))?;
    let info = pkcs8::EncryptedPrivateKeyInfoRef::from_der(&der).map_err(|e| {
        error(
            "keyfile",
            format!("{path}: not an encrypted PKCS#8 key ({e})"),
        )
    })?;
    let plain = info.decrypt(password).map_err(|_| {
        error(
            "keyfile_password",
            format!("the password does not decrypt {path} (or its cipher is not PBES2)"),
        )
    })?;
    Ok(PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into()))
}

fn pem_error(setting: &'static str, path: &str, e: pem::Error) -> TlsError {
    error(setting, format!("{path}: not a valid PEM file ({e})"))
}

/// The suites of a cipher list (`:` or `,` separated), by their IANA names (what rustls
/// calls them, e.g. `TLS13_AES_128_GCM_SHA256`) or OpenSSL's (`ECDHE-RSA-AES128-GCM-SHA256`,
/// `TLS_AES_128_GCM_SHA256`), in the order given: the server's preference.
fn cipher_suites(
    list: &str,
    available: &[SupportedCipherSuite],
) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let mut chosen = Vec::new();
    for name in list
        .split([':', ','])
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let iana = openssl_name(name).unwrap_or(name);
        let found = available
            .iter()
            .find(|s| suite_name(s).eq_ignore_ascii_case(iana))
            .ok_or_else(|| {
                let known: Vec<&str> = available.iter().map(suite_name).collect();
                error(
                    "ciphers",
                    format!("unknown cipher suite {name:?}; known: {}", known.join(", ")),
                )
            })?;
        if !chosen.contains(found) {
            chosen.push(*found);
        }
    }
    if chosen.is_empty() {
        return Err(error("ciphers", "the list names no cipher suite"));
    }
    Ok(chosen)
}

/// The default order of the suites: TLS 1.3 first, and AES-128-GCM first within each
/// version: its handshake hashes with SHA-256, which CPUs compute in hardware, where
/// AES-256-GCM's SHA-384 runs in software (bench/README.md, the TLS cells); both are in
/// every current recommendation.
fn preferred_order(suites: &mut [SupportedCipherSuite]) {
    suites.sort_by_key(|s| {
        let name = suite_name(s);
        (!name.starts_with("TLS13_"), !name.contains("AES_128"))
    });
}

/// A suite's IANA name, as rustls spells it.
pub(crate) fn suite_name(suite: &SupportedCipherSuite) -> &'static str {
    suite.suite().as_str().unwrap_or("unknown")
}

/// The IANA name of a suite OpenSSL names otherwise.
fn openssl_name(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_uppercase().as_str() {
        "TLS_AES_128_GCM_SHA256" => "TLS13_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384" => "TLS13_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256" => "TLS13_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256" => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384" => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256" => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384" => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        _ => return None,
    })
}

/// What the environ reports of a connection's TLS session (mod_ssl's variable names, which
/// Django and Flask extensions read): set once per connection, after the handshake.
#[derive(Debug, Default)]
pub(crate) struct SessionInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub protocol: &'static str,
    pub cipher: &'static str,
    /// The client's certificate, if it sent one (verified against `--ca-certs`).
    pub client: Option<ClientCertificate>,
    /// ALPN chose HTTP/2.
    pub h2: bool,
}

#[derive(Debug)]
pub(crate) struct ClientCertificate {
    /// Distinguished names as RFC 4514 strings.
    pub subject: String,
    pub issuer: String,
    /// The serial number in upper-case hex.
    pub serial: String,
    pub pem: String,
}

impl SessionInfo {
    pub(crate) fn of(conn: &rustls::ServerConnection) -> SessionInfo {
        let protocol = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .as_ref()
            .map(suite_name)
            .unwrap_or("");
        let client = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|der| ClientCertificate::parse(der));
        SessionInfo {
            protocol,
            cipher,
            client,
            h2: conn.alpn_protocol() == Some(ALPN_H2),
        }
    }
}

impl ClientCertificate {
    fn parse(der: &CertificateDer<'_>) -> Option<ClientCertificate> {
        let fields = crate::x509::fields(der.as_ref())?;
        Some(ClientCertificate {
            subject: fields.subject,
            issuer: fields.issuer,
            serial: fields.serial,
            pem: to_pem(der.as_ref()),
        })
    }
}

/// A certificate in PEM: base64 in lines of 64 characters between the markers.
fn to_pem(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// `check_tls(certfile, keyfile, keyfile_password, ca_certs, cert_reqs, ciphers, min_version)`: the settings
/// check builds the configuration once, so that a bad file or a key that does not match
/// stops the start with one line, before any worker exists. Raises
/// `ValueError(setting, reason)`.
#[pyo3::pyfunction]
#[pyo3(signature = (certfile, keyfile, keyfile_password, ca_certs, cert_reqs, ciphers, min_version))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_tls(
    certfile: &str,
    keyfile: Option<&str>,
    keyfile_password: Option<&str>,
    ca_certs: Option<&str>,
    cert_reqs: u64,
    ciphers: Option<&str>,
    min_version: &str,
) -> pyo3::PyResult<()> {
    let opts = TlsOptions {
        certfile,
        keyfile,
        keyfile_password,
        ca_certs,
        cert_reqs,
        ciphers,
        min_version,
        h2: false,
    };
    server_config(&opts)
        .map(drop)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err((e.setting, e.reason)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_encoding_matches_base64_with_padding() {
        let pem = to_pem(b"Man Ma M");
        assert_eq!(
            pem,
            "-----BEGIN CERTIFICATE-----\nTWFuIE1hIE0=\n-----END CERTIFICATE-----\n"
        );
        let long = to_pem(&[0u8; 60]);
        assert_eq!(long.lines().nth(1).unwrap().len(), 64);
    }

    #[test]
    fn the_default_order_puts_aes_128_first_within_each_version() {
        let mut suites = ring::default_provider().cipher_suites;
        preferred_order(&mut suites);
        let names: Vec<&str> = suites.iter().map(suite_name).collect();
        assert_eq!(names[0], "TLS13_AES_128_GCM_SHA256");
        let first12 = names.iter().position(|n| !n.starts_with("TLS13_")).unwrap();
        assert!(names[first12].contains("AES_128"), "{names:?}");
        assert!(names[..first12].iter().all(|n| n.starts_with("TLS13_")));
        assert_eq!(names.len(), ring::default_provider().cipher_suites.len());
    }

    #[test]
    fn cipher_lists_take_iana_and_openssl_names_in_order() {
        let all = ring::default_provider().cipher_suites;
        let chosen =
            cipher_suites("ECDHE-RSA-AES256-GCM-SHA384:TLS13_AES_128_GCM_SHA256", &all).unwrap();
        let names: Vec<&str> = chosen.iter().map(suite_name).collect();
        assert_eq!(
            names,
            [
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256"
            ]
        );
        let err = cipher_suites("RC4-MD5", &all).unwrap_err();
        assert_eq!(err.setting, "ciphers");
        assert!(err.reason.contains("RC4-MD5"), "{}", err.reason);
    }
}
