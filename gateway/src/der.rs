//! Just enough DER to read what Herald needs out of keys and certificates
//! (a public key's algorithm and bits, a certificate subject's common
//! name). Never panics on any input.

/// Splits the first DER element off `der`: its tag, its content and what
/// follows it. Lengths of up to four octets.
pub(crate) fn any(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, der) = der.split_first()?;
    let (&length, mut der) = der.split_first()?;
    let length = if length < 0x80 {
        usize::from(length)
    } else {
        let octets = usize::from(length & 0x7f);
        if octets == 0 || octets > 4 || der.len() < octets {
            return None;
        }
        let (size, rest) = der.split_at(octets);
        der = rest;
        size.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    (der.len() >= length).then(|| {
        let (content, rest) = der.split_at(length);
        (tag, content, rest)
    })
}

/// Splits a DER element with tag `tag` off the front of `der`: its content
/// and what follows it.
pub(crate) fn element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    any(der).and_then(|(found, content, rest)| (found == tag).then_some((content, rest)))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// `id-at-commonName` (2.5.4.3).
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The subject common name of a DER X.509 certificate.
pub(crate) fn subject_common_name(certificate: &[u8]) -> Option<String> {
    let (certificate, _) = element(certificate, SEQUENCE)?;
    let (tbs, _) = element(certificate, SEQUENCE)?;
    // [0] version (optional), serial, signature, issuer, validity, subject.
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = any(rest)?.2;
    }
    for _ in 0..4 {
        rest = any(rest)?.2;
    }
    let (mut names, _) = element(rest, SEQUENCE)?;
    while !names.is_empty() {
        let (set, after) = element(names, SET)?;
        names = after;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (attribute, after) = element(attributes, SEQUENCE)?;
            attributes = after;
            let (oid, value) = element(attribute, OID)?;
            if oid == COMMON_NAME {
                // UTF8String, PrintableString, IA5String.
                let (tag, text, _) = any(value)?;
                return [0x0c, 0x13, 0x16].contains(&tag).then(|| String::from_utf8(text.to_vec()).ok())?;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_truncation_are_handled() {
        assert_eq!(any(&[0x04, 0x02, 1, 2, 9]), Some((0x04, &[1u8, 2][..], &[9u8][..])));
        assert_eq!(any(&[0x04, 0x81, 0x01, 7]), Some((0x04, &[7u8][..], &[][..])));
        assert_eq!(any(&[0x04, 0x03, 1]), None, "shorter than its length");
        assert_eq!(any(&[0x04, 0x85, 1, 1, 1, 1, 1]), None, "a five-octet length");
        assert_eq!(any(&[0x04]), None);
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| [0x30, 0x82, 0xff, 0xa0, 0x31, 0x06][i % 6]).collect();
            assert_eq!(subject_common_name(&junk), None);
        }
    }
}
