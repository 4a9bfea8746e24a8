//! The three fields of a client certificate the environ reports (`SSL_CLIENT_S_DN`,
//! `SSL_CLIENT_I_DN`, `SSL_CLIENT_M_SERIAL`), read from its DER (RFC 5280 §4.1, X.690).
//!
//! rustls has verified the certificate before it gets here, so this walks only the start of
//! `TBSCertificate`, up to the subject, and checks no more than it needs to read it. A
//! general X.509 parser would put an OID registry, a time library and big integers in
//! every worker's memory for these three strings.
//!
//! A name is written as it has been since the first release: its RDNs in the
//! certificate's order joined by ", ", the attributes of a multi-valued RDN by " + ", each
//! `TYPE=value` with the usual abbreviation (`CN`, `O`, ...), else the attribute's short
//! name, else `OID(2.5.4.99)`; a string value as itself, any other value in upper-case hex.

/// What `SessionInfo` keeps of a client's certificate.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fields {
    /// The subject and the issuer, as written above.
    pub subject: String,
    pub issuer: String,
    /// The serial number's content octets in upper-case hex (a leading 00 kept).
    pub serial: String,
}

/// What a name becomes when one of its string values is not text in its encoding.
const INVALID_NAME: &str = "<X509Error: Invalid X.509 name>";

// Universal tags (X.680 §8.6); constructed forms have bit 6 set.
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// `[0] EXPLICIT Version` of TBSCertificate.
const VERSION: u8 = 0xa0;
const BMP_STRING: u8 = 30;

/// The tag numbers whose contents a name shows as text: UTF8String, NumericString,
/// PrintableString, T61String, VideotexString, IA5String, GraphicString, VisibleString,
/// GeneralString and ObjectDescriptor (BMPString is UTF-16 and decoded apart).
const TEXT_TAGS: [u8; 10] = [12, 18, 19, 20, 21, 22, 25, 26, 27, 7];

/// The subject, issuer and serial of a DER certificate; `None` if its start is not a
/// certificate's.
pub(crate) fn fields(der: &[u8]) -> Option<Fields> {
    let certificate = Der(der).expect(SEQUENCE)?;
    let mut tbs = Der(Der(certificate).expect(SEQUENCE)?);
    if tbs.peek() == Some(VERSION) {
        tbs.element()?;
    }
    let serial = tbs.expect(INTEGER)?;
    tbs.expect(SEQUENCE)?; // the signature algorithm
    let issuer = name(tbs.expect(SEQUENCE)?)?;
    tbs.expect(SEQUENCE)?; // validity
    let subject = name(tbs.expect(SEQUENCE)?)?;
    Some(Fields {
        subject,
        issuer,
        serial: hex(serial),
    })
}

/// A reader over DER elements: definite lengths (up to 4 length octets), any tag.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next element's first tag octet and its contents.
    fn element(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, mut rest) = self.0.split_first()?;
        if tag & 0x1f == 0x1f {
            // High tag number form: the number follows in base 128, the last octet < 0x80.
            let end = rest.iter().position(|b| b & 0x80 == 0)?;
            rest = &rest[end + 1..];
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = match first {
            0..=0x7f => first as usize,
            0x81..=0x84 => {
                let n = (first & 0x7f) as usize;
                if rest.len() < n {
                    return None;
                }
                let (octets, after) = rest.split_at(n);
                rest = after;
                octets.iter().fold(0usize, |len, &b| len << 8 | b as usize)
            }
            // 0x80 is BER's indefinite length, which DER forbids; longer lengths than four
            // octets do not fit a certificate.
            _ => return None,
        };
        if rest.len() < len {
            return None;
        }
        let (contents, after) = rest.split_at(len);
        self.0 = after;
        Some((tag, contents))
    }

    /// The contents of the next element, if its tag is `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.element()? {
            (t, contents) if t == tag => Some(contents),
            _ => None,
        }
    }
}

/// `Name ::= SEQUENCE OF RelativeDistinguishedName`, `RDN ::= SET OF
/// AttributeTypeAndValue`, `AttributeTypeAndValue ::= SEQUENCE { type OID, value ANY }`.
fn name(rdns: &[u8]) -> Option<String> {
    let mut text = String::new();
    let mut valid = true;
    let mut rdns = Der(rdns);
    while !rdns.0.is_empty() {
        if !text.is_empty() {
            text.push_str(", ");
        }
        let mut attributes = Der(rdns.expect(SET)?);
        let mut first = true;
        while !attributes.0.is_empty() {
            let mut attribute = Der(attributes.expect(SEQUENCE)?);
            let kind = attribute.expect(OID)?;
            let (tag, value) = attribute.element()?;
            if !first {
                text.push_str(" + ");
            }
            first = false;
            match short_name(kind) {
                Some(short) => text.push_str(short),
                None => {
                    text.push_str("OID(");
                    text.push_str(&dotted(kind)?);
                    text.push(')');
                }
            }
            text.push('=');
            valid &= push_value(&mut text, tag, value);
        }
    }
    Some(if valid { text } else { INVALID_NAME.into() })
}

/// Writes an attribute's value: false if a string value is not text in its encoding.
fn push_value(text: &mut String, tag: u8, value: &[u8]) -> bool {
    let number = tag & 0x1f;
    if TEXT_TAGS.contains(&number) {
        match std::str::from_utf8(value) {
            Ok(s) => text.push_str(s),
            Err(_) => return false,
        }
    } else if number == BMP_STRING {
        // Big-endian UTF-16; an odd last octet counts as a unit of its own.
        let units: Vec<u16> = value
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => u16::from(*a) << 8 | u16::from(*b),
                [a] => u16::from(*a),
                _ => unreachable!("chunks of two"),
            })
            .collect();
        match String::from_utf16(&units) {
            Ok(s) => text.push_str(&s),
            Err(_) => return false,
        }
    } else {
        text.push_str(&hex(value));
    }
    true
}

/// The abbreviation of an attribute type, else its short name (X.520 §6, RFC 4519,
/// PKCS #9, and the EV jurisdiction attributes); `None` for a type not listed.
fn short_name(oid: &[u8]) -> Option<&'static str> {
    // X.520's attribute types are 2.5.4.n: 0x55 0x04 n.
    if let [0x55, 0x04, n] = oid {
        return Some(match n {
            3 => "CN",
            6 => "C",
            7 => "L",
            8 => "ST",
            10 => "O",
            11 => "OU",
            0 => "objectClass",
            1 => "aliasedEntryName",
            2 => "knowledgeInformation",
            4 => "surname",
            5 => "serialNumber",
            9 => "streetAddress",
            12 => "title",
            13 => "description",
            14 => "searchGuide",
            15 => "businessCategory",
            16 => "postalAddress",
            17 => "postalCode",
            41 => "name",
            42 => "givenName",
            43 => "initials",
            44 => "generationQualifier",
            45 => "uniqueIdentifier",
            46 => "dnQualifier",
            _ => return None,
        });
    }
    // PKCS #9 (1.2.840.113549.1.9.n).
    const PKCS9: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09];
    if let Some([n]) = oid.strip_prefix(PKCS9) {
        return Some(match n {
            1 => "Email",
            2 => "unstructuredName",
            3 => "contentType",
            4 => "id-messageDigest",
            5 => "signing-time",
            7 => "challengePassword",
            14 => "extensionRequest",
            15 => "smimeCapabilities",
            20 => "friendlyName",
            _ => return None,
        });
    }
    // RFC 4519's uid (0.9.2342.19200300.100.1.1) and domainComponent (.25).
    const PILOT: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01];
    if let Some([n]) = oid.strip_prefix(PILOT) {
        return match n {
            1 => Some("uid"),
            25 => Some("DC"),
            _ => None,
        };
    }
    // The EV guidelines' jurisdiction of incorporation (1.3.6.1.4.1.311.60.2.1.n).
    const JURISDICTION: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x3c, 0x02, 0x01];
    if let Some([n]) = oid.strip_prefix(JURISDICTION) {
        return match n {
            1 => Some("msJurisdictionLocality"),
            2 => Some("msJurisdictionStateOrProvince"),
            3 => Some("msJurisdictionCountry"),
            _ => None,
        };
    }
    None
}

/// An OID's arcs in dotted decimal (X.690 §8.19: base-128 subidentifiers, the first
/// holding the first two arcs); `None` if its last subidentifier is cut short or an arc
/// does not fit 128 bits.
fn dotted(oid: &[u8]) -> Option<String> {
    let mut arcs = Vec::new();
    let mut arc: u128 = 0;
    for &b in oid {
        if arc > u128::MAX >> 7 {
            return None;
        }
        arc = arc << 7 | u128::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (arc / 40).min(2);
                arcs.push(first);
                arcs.push(arc - 40 * first);
            } else {
                arcs.push(arc);
            }
            arc = 0;
        }
    }
    if oid.last().is_none_or(|b| b & 0x80 != 0) {
        return None;
    }
    Some(
        arcs.iter()
            .map(u128::to_string)
            .collect::<Vec<_>>()
            .join("."),
    )
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair};

    /// What x509-parser, which qiao used before, makes of the same certificate.
    fn x509_parser_fields(der: &[u8]) -> Option<Fields> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(Fields {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: hex(cert.raw_serial()),
        })
    }

    /// A certificate for `subject` signed by a CA named `issuer`, with `serial`.
    fn issued(subject: DistinguishedName, issuer: DistinguishedName, serial: &[u8]) -> Vec<u8> {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name = issuer;
        let issuer = rcgen::Issuer::new(ca, KeyPair::generate().unwrap());
        let mut params = CertificateParams::new(vec!["client.test".to_string()]).unwrap();
        params.distinguished_name = subject;
        params.serial_number = Some(serial.to_vec().into());
        params
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap()
            .der()
            .to_vec()
    }

    fn dn(entries: &[(DnType, DnValue)]) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        for (kind, value) in entries {
            dn.push(kind.clone(), value.clone());
        }
        dn
    }

    #[test]
    fn common_names_and_serial_of_an_issued_certificate() {
        let der = issued(
            dn(&[
                (
                    DnType::CountryName,
                    DnValue::PrintableString("FR".try_into().unwrap()),
                ),
                (
                    DnType::OrganizationName,
                    DnValue::Utf8String("Qiao Tests".into()),
                ),
                (
                    DnType::CommonName,
                    DnValue::Utf8String("test client".into()),
                ),
            ]),
            dn(&[(DnType::CommonName, DnValue::Utf8String("test CA".into()))]),
            &[0x00, 0xc3, 0x01],
        );
        let fields = fields(&der).unwrap();
        assert_eq!(fields.subject, "C=FR, O=Qiao Tests, CN=test client");
        assert_eq!(fields.issuer, "CN=test CA");
        assert_eq!(fields.serial, "00C301");
        assert_eq!(Some(fields), x509_parser_fields(&der));
    }

    #[test]
    fn every_kind_of_attribute_and_value_reads_as_before() {
        let oid = |arcs: &[u64]| DnType::CustomDnType(arcs.to_vec());
        let subject = dn(&[
            (
                DnType::StateOrProvinceName,
                DnValue::Utf8String("Île-de-France".into()),
            ),
            (DnType::LocalityName, DnValue::Utf8String("Paris".into())),
            (
                DnType::OrganizationalUnitName,
                DnValue::Utf8String("Ops".into()),
            ),
            (
                oid(&[2, 5, 4, 5]),
                DnValue::PrintableString("42".try_into().unwrap()),
            ),
            (
                oid(&[2, 5, 4, 12]),
                DnValue::TeletexString("Dr".try_into().unwrap()),
            ),
            (
                oid(&[1, 2, 840, 113549, 1, 9, 1]),
                DnValue::Ia5String("a@b.test".try_into().unwrap()),
            ),
            (
                oid(&[0, 9, 2342, 19200300, 100, 1, 25]),
                DnValue::Ia5String("test".try_into().unwrap()),
            ),
            (
                oid(&[0, 9, 2342, 19200300, 100, 1, 1]),
                DnValue::Utf8String("jdoe".into()),
            ),
            (
                oid(&[1, 3, 6, 1, 4, 1, 311, 60, 2, 1, 3]),
                DnValue::PrintableString("DE".try_into().unwrap()),
            ),
            (
                oid(&[1, 2, 3, 4, 99999999999]),
                DnValue::Utf8String("private".into()),
            ),
            (
                oid(&[2, 5, 4, 65]),
                DnValue::BmpString("漢字".try_into().unwrap()),
            ),
            (
                oid(&[2, 5, 4, 99]),
                DnValue::UniversalString("x".try_into().unwrap()),
            ),
            (
                DnType::CommonName,
                DnValue::Utf8String("with, comma = and + plus".into()),
            ),
        ]);
        let der = issued(
            subject,
            dn(&[(DnType::CommonName, DnValue::Utf8String("ca".into()))]),
            &[7],
        );
        let ours = fields(&der).unwrap();
        assert_eq!(
            ours.subject,
            "ST=Île-de-France, L=Paris, OU=Ops, serialNumber=42, title=Dr, Email=a@b.test, \
             DC=test, uid=jdoe, msJurisdictionCountry=DE, OID(1.2.3.4.99999999999)=private, \
             OID(2.5.4.65)=漢字, OID(2.5.4.99)=00000078, CN=with, comma = and + plus"
        );
        assert_eq!(ours.serial, "07");
        assert_eq!(Some(ours), x509_parser_fields(&der));
    }

    /// A multi-valued RDN, a value that is not a string, and a string that is not text:
    /// certificates rcgen does not write, made by hand.
    #[test]
    fn multi_valued_rdns_and_undecodable_values() {
        let attribute = |oid: &[u8], tag: u8, value: &[u8]| {
            let mut a = vec![OID, oid.len() as u8];
            a.extend_from_slice(oid);
            a.extend_from_slice(&[tag, value.len() as u8]);
            a.extend_from_slice(value);
            tlv(SEQUENCE, &a)
        };
        let cn = attribute(&[0x55, 4, 3], 12, b"a");
        let ou = attribute(&[0x55, 4, 11], 19, b"b");
        let number = attribute(&[0x55, 4, 13], INTEGER, &[1, 0xff]);
        let rdn1 = tlv(SET, &[cn.clone(), ou].concat());
        let rdn2 = tlv(SET, &number);
        let subject = tlv(SEQUENCE, &[rdn1, rdn2].concat());
        let bad = tlv(
            SEQUENCE,
            &tlv(SET, &attribute(&[0x55, 4, 3], 12, &[0xff, 0xfe])),
        );
        let der = certificate(&bad, &subject);
        let ours = fields(&der).unwrap();
        assert_eq!(ours.subject, "CN=a + OU=b, description=01FF");
        assert_eq!(ours.issuer, INVALID_NAME);
        assert_eq!(Some(ours), x509_parser_fields(&der));
    }

    /// Certificates OpenSSL writes (the usual source of client certificates), a
    /// multi-valued RDN among them; skipped without the `openssl` command.
    #[test]
    fn certificates_made_by_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cert.der");
        for (subject, expected) in [
            (
                "/C=DE/ST=Berlin/O=Example GmbH/OU=IT+CN=client one/emailAddress=it@example.test",
                "C=DE, ST=Berlin, O=Example GmbH, OU=IT + CN=client one, Email=it@example.test",
            ),
            (
                "/CN=Ünïcödé/serialNumber=1234/title=Dr",
                "CN=Ünïcödé, serialNumber=1234, title=Dr",
            ),
        ] {
            let made = std::process::Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ])
                .args([
                    "-nodes",
                    "-keyout",
                    "/dev/null",
                    "-days",
                    "1",
                    "-outform",
                    "DER",
                ])
                .args(["-utf8", "-subj", subject, "-set_serial", "0x00f00d", "-out"])
                .arg(&out)
                .output();
            match made {
                Err(e) => {
                    eprintln!("skipped: no openssl command ({e})");
                    return;
                }
                Ok(run) => assert!(run.status.success(), "{run:?}"),
            }
            let der = std::fs::read(&out).unwrap();
            let ours = fields(&der).unwrap();
            assert_eq!(ours.subject, expected);
            assert_eq!(ours.issuer, expected);
            assert_eq!(ours.serial, "00F00D");
            assert_eq!(Some(ours), x509_parser_fields(&der));
        }
    }

    #[test]
    fn a_truncated_or_foreign_input_is_not_a_certificate() {
        let der = issued(dn(&[]), dn(&[]), &[1]);
        assert_eq!(fields(&der).unwrap().subject, "");
        for cut in [0, 1, 4, 40, 120] {
            assert_eq!(fields(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(fields(b"\x30\x80\x00\x00"), None); // indefinite length
        assert_eq!(fields(b"\x02\x01\x01"), None);
    }

    #[test]
    fn dotted_oids() {
        assert_eq!(dotted(&[0x55, 4, 3]).unwrap(), "2.5.4.3");
        assert_eq!(dotted(&[0x2a, 0x86, 0x48]).unwrap(), "1.2.840");
        // Arc 2 takes any second arc, 40 and above too (X.690 §8.19.4).
        assert_eq!(dotted(&[0x88, 0x37, 1]).unwrap(), "2.999.1");
        assert_eq!(dotted(&[0x55, 0x84]), None);
        assert_eq!(dotted(&[]), None);
    }

    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            n @ 0..=0x7f => out.push(n as u8),
            n => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    /// A structurally complete certificate around `issuer` and `subject` (its key and
    /// signature are placeholders: nothing here verifies them).
    fn certificate(issuer: &[u8], subject: &[u8]) -> Vec<u8> {
        let algorithm = tlv(
            SEQUENCE,
            &tlv(OID, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 3, 2]),
        );
        let time = |t: &[u8]| tlv(0x17, t);
        let validity = tlv(
            SEQUENCE,
            &[time(b"250101000000Z"), time(b"350101000000Z")].concat(),
        );
        let key = tlv(
            SEQUENCE,
            &[
                tlv(SEQUENCE, &tlv(OID, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 2, 1])),
                tlv(0x03, &[0, 4, 1, 2]),
            ]
            .concat(),
        );
        let tbs = tlv(
            SEQUENCE,
            &[
                tlv(VERSION, &tlv(INTEGER, &[2])),
                tlv(INTEGER, &[5]),
                algorithm.clone(),
                issuer.to_vec(),
                validity,
                subject.to_vec(),
                key,
            ]
            .concat(),
        );
        tlv(SEQUENCE, &[tbs, algorithm, tlv(0x03, &[0, 0])].concat())
    }
}
