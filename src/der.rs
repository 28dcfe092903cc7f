//! Just enough X.509 DER reading for what rustls does not tell us: the
//! subject common name and DNS names of a client certificate (for
//! `--client-name`), its extended key usage, issuer and subject and a CA's
//! path length (for the client checks webpki leaves out), and a
//! certificate's not-after time (for `/metrics` and logs). Signature and chain checks are rustls' job, never done here; the
//! input has already been verified (client) or is our own (serving).

/// What we read out of a certificate.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CertInfo {
    pub common_names: Vec<String>,
    pub dns_names: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
    /// The issuer and subject names, as encoded (to link a chain).
    pub issuer: Vec<u8>,
    pub subject: Vec<u8>,
    /// `None` without an extendedKeyUsage extension; else whether it
    /// lists clientAuth.
    pub client_auth: Option<bool>,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// basicConstraints pathLenConstraint, if any.
    pub path_len: Option<u64>,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const EXPLICIT_VERSION: u8 = 0xA0;
const EXTENSIONS: u8 = 0xA3;
const DNS_NAME: u8 = 0x82;
/// id-at-commonName, 2.5.4.3.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// id-ce-subjectAltName, 2.5.29.17.
const OID_SAN: &[u8] = &[0x55, 0x1D, 0x11];
/// id-ce-extKeyUsage, 2.5.29.37.
const OID_EKU: &[u8] = &[0x55, 0x1D, 0x25];
/// id-kp-clientAuth, 1.3.6.1.5.5.7.3.2.
const OID_CLIENT_AUTH: &[u8] = &[0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// id-ce-basicConstraints, 2.5.29.19.
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1D, 0x13];
const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;

/// A cursor over DER TLVs.
/// One DER element: (tag, content, the whole element). The crate's one
/// DER reader: the certificate facts below and the verifiers' CMS, TBS
/// and SAN reading (what x509-parser does not expose) use it.
pub type Element<'a> = (u8, &'a [u8], &'a [u8]);

/// One DER element of `b`, and the rest after it.
pub fn tlv(b: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, h) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = len.checked_shl(8)? | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = h.checked_add(len)?;
    if b.len() < end {
        return None;
    }
    Some(((tag, &b[h..end], &b[..end]), &b[end..]))
}

/// The elements of a constructed content, in order.
pub fn items(mut b: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (e, rest) = tlv(b)?;
        out.push(e);
        b = rest;
    }
    Some(out)
}

/// The content of one DER element that fills `der` exactly.
pub fn content(der: &[u8]) -> Option<&[u8]> {
    match tlv(der)? {
        ((_, c, _), []) => Some(c),
        _ => None,
    }
}

struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// Next (tag, contents); `None` at the end or on malformed input.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let ((tag, content, _), rest) = tlv(self.0)?;
        self.0 = rest;
        Some((tag, content))
    }

    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, c) if t == tag => Some(c),
            _ => None,
        }
    }
}

/// Reads subject CN, SAN DNS names and not-after; `None` if the DER is not
/// a certificate we can walk.
pub fn cert_info(der: &[u8]) -> Option<CertInfo> {
    let cert = Der(der).expect(SEQUENCE)?;
    let mut tbs = Der(Der(cert).expect(SEQUENCE)?);
    if tbs.next()?.0 == EXPLICIT_VERSION {
        tbs.next()?; // the serial number follows the version
    }
    tbs.expect(SEQUENCE)?; // signature algorithm
    let issuer = tbs.expect(SEQUENCE)?;
    let mut validity = Der(tbs.expect(SEQUENCE)?);
    validity.next()?; // not before
    let not_after = match validity.next()? {
        (UTC_TIME, t) => parse_time(t, false)?,
        (GENERALIZED_TIME, t) => parse_time(t, true)?,
        _ => return None,
    };
    let subject = tbs.expect(SEQUENCE)?;
    let mut info = CertInfo {
        common_names: common_names(subject),
        not_after,
        issuer: issuer.to_vec(),
        subject: subject.to_vec(),
        ..CertInfo::default()
    };
    tbs.expect(SEQUENCE)?; // subject public key info
    while let Some((tag, content)) = tbs.next() {
        if tag == EXTENSIONS {
            for (oid, value) in extensions(content) {
                match oid {
                    OID_SAN => info.dns_names = san_dns_names(value),
                    OID_EKU => info.client_auth = Some(lists_client_auth(value)),
                    OID_BASIC_CONSTRAINTS => (info.is_ca, info.path_len) = basic_constraints(value),
                    _ => {}
                }
            }
        }
    }
    Some(info)
}

/// Each extension's OID and value (the critical flag skipped).
fn extensions(ext: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let Some(list) = Der(ext).expect(SEQUENCE) else {
        return out;
    };
    let mut exts = Der(list);
    while let Some(ext) = exts.expect(SEQUENCE) {
        let mut parts = Der(ext);
        let Some(oid) = parts.expect(OID) else {
            continue;
        };
        let value = loop {
            match parts.next() {
                Some((OCTET_STRING, v)) => break Some(v),
                Some(_) => continue,
                None => break None,
            }
        };
        if let Some(v) = value {
            out.push((oid, v));
        }
    }
    out
}

fn lists_client_auth(value: &[u8]) -> bool {
    let Some(seq) = Der(value).expect(SEQUENCE) else {
        return false;
    };
    let mut oids = Der(seq);
    std::iter::from_fn(|| oids.expect(OID)).any(|o| o == OID_CLIENT_AUTH)
}

/// (cA, pathLenConstraint) of a basicConstraints value. A constraint
/// that cannot be read (not a SEQUENCE, an empty, negative, oversized or
/// cut-off INTEGER, something else in its place) is read as the strictest
/// one, 0: the client CA's path length check must not fail open.
fn basic_constraints(value: &[u8]) -> (bool, Option<u64>) {
    let Some(seq) = Der(value).expect(SEQUENCE) else {
        return (false, Some(0));
    };
    let mut parts = Der(seq);
    let mut item = parts.next();
    let mut is_ca = false;
    if let Some((BOOLEAN, v)) = item {
        is_ca = v.first().is_some_and(|b| *b != 0);
        item = parts.next();
    }
    let path_len = match item {
        None if parts.0.is_empty() => None,
        Some((INTEGER, n)) if !n.is_empty() && n.len() <= 8 && n[0] & 0x80 == 0 => {
            Some(n.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
        }
        _ => Some(0),
    };
    (is_ca, path_len)
}

fn common_names(name: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rdns = Der(name);
    while let Some(set) = rdns.expect(SET) {
        let mut atvs = Der(set);
        while let Some(atv) = atvs.expect(SEQUENCE) {
            let mut parts = Der(atv);
            if parts.expect(OID) == Some(OID_CN) {
                // UTF8String, PrintableString, IA5String, T61String.
                if let Some((0x0C | 0x13 | 0x16 | 0x14, v)) = parts.next() {
                    out.push(String::from_utf8_lossy(v).into_owned());
                }
            }
        }
    }
    out
}

fn san_dns_names(value: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(names) = Der(value).expect(SEQUENCE) else {
        return out;
    };
    let mut names = Der(names);
    while let Some((tag, v)) = names.next() {
        if tag == DNS_NAME {
            out.push(String::from_utf8_lossy(v).into_owned());
        }
    }
    out
}

/// `YYMMDDHHMMSSZ` (UTCTime) or `YYYYMMDDHHMMSSZ` (GeneralizedTime) to Unix
/// seconds.
fn parse_time(t: &[u8], four_digit_year: bool) -> Option<i64> {
    let s = std::str::from_utf8(t).ok()?.strip_suffix('Z')?;
    let (year, rest) = if four_digit_year {
        (s.get(..4)?.parse::<i64>().ok()?, s.get(4..)?)
    } else {
        let yy = s.get(..2)?.parse::<i64>().ok()?;
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(crate::time::days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_expiry_from_a_generated_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["webhook.example".into(), "localhost".into()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        params.not_after = rcgen::date_time_ymd(2031, 3, 4);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = cert_info(cert.der()).unwrap();
        assert_eq!(info.common_names, ["kube-apiserver"]);
        assert_eq!(info.dns_names, ["webhook.example", "localhost"]);
        assert_eq!(
            info.not_after,
            crate::time::days_from_civil(2031, 3, 4) * 86_400
        );
    }

    #[test]
    fn times() {
        assert_eq!(crate::time::days_from_civil(1970, 1, 1), 0);
        assert_eq!(parse_time(b"700101000000Z", false), Some(0));
        assert_eq!(parse_time(b"20380119031408Z", true), Some(2_147_483_648));
        assert_eq!(parse_time(b"491231235959Z", false), Some(2_524_607_999));
        assert_eq!(parse_time(b"20381301000000Z", true), None);
        assert_eq!(parse_time(b"2038", true), None);
    }

    /// A path length that cannot be read is the strictest, never none
    /// (found by the `der_certificate` fuzz target: `02 81 00`, an INTEGER
    /// with a long-form length of 0, was read as no constraint at all).
    #[test]
    fn unreadable_path_lengths_are_zero() {
        /// A basicConstraints value and what is read from it.
        type Case = (&'static [u8], (bool, Option<u64>));
        const CASES: &[Case] = &[
            (b"\x30\x06\x01\x01\xff\x02\x01\x03", (true, Some(3))),
            (b"\x30\x03\x01\x01\xff", (true, None)), // no constraint
            (b"\x30\x00", (false, None)),
            (b"\x30\x03\x02\x01\x00", (false, Some(0))),
            (b"\x30\x06\x01\x01\xff\x02\x81\x00", (true, Some(0))), // empty
            (b"\x30\x06\x01\x01\xff\x02\x0b\x01", (true, Some(0))), // cut off
            (b"\x30\x06\x01\x01\xff\x02\x01\xff", (true, Some(0))), // negative
            (b"\x30\x06\x01\x01\xff\x04\x01\x05", (true, Some(0))), // not an INTEGER
            (b"\x04\x00", (false, Some(0))),                        // not a SEQUENCE
        ];
        for (value, want) in CASES {
            assert_eq!(basic_constraints(value), *want, "{value:02x?}");
        }
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x03\x30\x01",
            b"\x30\x80",
        ] {
            assert_eq!(cert_info(bad), None);
        }
    }
}
