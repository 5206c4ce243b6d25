//! Subject names, the 统一社会信用代码 (unified social credit code, USCC) and serial text: the
//! one serial format and the one RFC 4514 rendering that the broker, the phone, the envelope and
//! the development CA all use, so a certificate is named the same everywhere.

use der::asn1::{Any, ObjectIdentifier};
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::Certificate;

use crate::Error;

/// `countryName` (2.5.4.6).
pub const OID_COUNTRY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.6");
/// `organizationName` (2.5.4.10).
pub const OID_ORGANIZATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
/// `organizationalUnitName` (2.5.4.11).
pub const OID_ORGANIZATIONAL_UNIT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
/// `commonName` (2.5.4.3).
pub const OID_COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// `organizationIdentifier` (2.5.4.97): where the USCC goes.
pub const OID_ORGANIZATION_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.97");

/// Longest CN / O / OU value accepted (RFC 5280's upper bounds are 64; Chinese names are short).
const MAX_NAME_CHARS: usize = 64;

/// The 31 characters a USCC is written with (GB 32100-2015: digits and capitals without I O Z S V).
const USCC_CHARSET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// Weights of the first 17 USCC characters for the check character.
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// The certificate serial as bzt writes it: lowercase hex of the integer, no leading zeros, no
/// colons (`"0"` for zero).
///
/// DER may carry a leading `00` byte to keep the integer positive; it is not part of the value.
/// (A negative serial, which RFC 5280 forbids, is shown as its raw two's-complement bytes.)
pub fn serial_hex(cert: &Certificate) -> String {
    serial_bytes_hex(cert.tbs_certificate().serial_number().as_bytes())
}

/// Lowercase hex without leading zeros, from any-case hex input (colons
/// allowed, as `openssl x509 -serial` and browsers print them). `None` if it
/// is not hex.
pub fn normalize_serial(s: &str) -> Option<String> {
    let digits: String = s
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.is_empty() || digits.len() > 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    })
}

/// [`serial_hex`] of a big-endian integer's bytes.
pub fn serial_bytes_hex(bytes: &[u8]) -> String {
    let hex = hex::encode(bytes);
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// The check character (18th) for the first 17 characters of a USCC, or `None` when `first17`
/// is not 17 characters of the USCC alphabet.
pub fn uscc_check_char(first17: &str) -> Option<char> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (c, w) in first17.bytes().zip(USCC_WEIGHTS) {
        let value = USCC_CHARSET.iter().position(|&x| x == c)? as u32;
        sum += value * w;
    }
    let check = (31 - sum % 31) % 31;
    Some(USCC_CHARSET[check as usize] as char)
}

/// Checks a 统一社会信用代码: 18 characters of the GB 32100-2015 alphabet whose last one is the
/// check character of the first 17.
pub fn validate_uscc(uscc: &str) -> Result<(), Error> {
    let bad = |why: &str| Error::Invalid(format!("统一社会信用代码 {uscc:?} {why}"));
    if uscc.len() != 18 || !uscc.is_ascii() {
        return Err(bad("must be 18 characters"));
    }
    let (first17, last) = uscc.split_at(17);
    let expected = uscc_check_char(first17)
        .ok_or_else(|| bad("uses characters outside 0-9 A-H J-N P-R T U W-Y"))?;
    if !last.starts_with(expected) {
        return Err(bad(&format!(
            "has a wrong check character (expected {expected})"
        )));
    }
    Ok(())
}

/// Subject and issuer names as RFC 4514 strings.
pub fn subject_string(cert: &Certificate) -> String {
    name_string(cert.tbs_certificate().subject())
}
pub fn issuer_string(cert: &Certificate) -> String {
    name_string(cert.tbs_certificate().issuer())
}

/// RFC 4514 form of a name (last RDN first), as x509-cert writes it, except
/// that organizationIdentifier is written as text rather than as `#<hex DER>`,
/// so a bidder can read the company's credit code.
pub fn name_string(name: &Name) -> String {
    let mut rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    if atv.oid == OID_ORGANIZATION_IDENTIFIER {
                        if let Some(text) = directory_string(&atv.value) {
                            return format!("organizationIdentifier={}", escape_rfc4514(&text));
                        }
                    }
                    atv.to_string()
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.reverse();
    rdns.join(",")
}

fn directory_string(value: &Any) -> Option<String> {
    use der::asn1::{PrintableStringRef, Utf8StringRef};
    match value.tag() {
        Tag::Utf8String => Utf8StringRef::try_from(value)
            .ok()
            .map(|s| s.as_str().to_owned()),
        Tag::PrintableString => PrintableStringRef::try_from(value)
            .ok()
            .map(|s| s.as_str().to_owned()),
        _ => None,
    }
}

fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Builds a subject: `C=CN, O=<org>, [OU=<ou>,] [organizationIdentifier=<uscc>,] CN=<cn>`.
pub fn subject(cn: &str, org: &str, ou: Option<&str>, uscc: Option<&str>) -> Result<Name, Error> {
    let mut rdns = RdnSequence::default();
    let mut push = |oid, tag, value: &str| -> Result<(), Error> {
        let atv = AttributeTypeAndValue {
            oid,
            value: Any::new(tag, value.as_bytes()).map_err(name_err)?,
        };
        rdns.push(RelativeDistinguishedName::try_from(vec![atv]).map_err(name_err)?);
        Ok(())
    };
    push(OID_COUNTRY, Tag::PrintableString, "CN")?;
    push(OID_ORGANIZATION, Tag::Utf8String, checked_text("O", org)?)?;
    if let Some(ou) = ou {
        push(
            OID_ORGANIZATIONAL_UNIT,
            Tag::Utf8String,
            checked_text("OU", ou)?,
        )?;
    }
    if let Some(uscc) = uscc {
        validate_uscc(uscc)?;
        push(OID_ORGANIZATION_IDENTIFIER, Tag::PrintableString, uscc)?;
    }
    push(OID_COMMON_NAME, Tag::Utf8String, checked_text("CN", cn)?)?;
    // `Name` has no public constructor from an `RdnSequence` without the `hazmat` feature; a
    // DER round trip also runs its validation.
    Name::from_der(&rdns.to_der().map_err(name_err)?).map_err(name_err)
}

/// The first value of attribute `oid` in `name`, as text (UTF8String or PrintableString).
pub fn name_attr(name: &Name, oid: ObjectIdentifier) -> Option<String> {
    let atv = name.iter().find(|atv| atv.oid == oid)?;
    match atv.value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
            std::str::from_utf8(atv.value.value())
                .ok()
                .map(str::to_string)
        }
        _ => None,
    }
}

fn checked_text<'a>(what: &str, value: &'a str) -> Result<&'a str, Error> {
    let n = value.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(Error::Invalid(format!(
            "{what} must have 1..={MAX_NAME_CHARS} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{what} must not hold control characters"
        )));
    }
    Ok(value)
}

fn name_err(e: der::Error) -> Error {
    Error::Invalid(format!("cannot encode the name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_text_has_no_leading_zeros() {
        assert_eq!(serial_bytes_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_bytes_hex(&[0x0a, 0xbc]), "abc");
        assert_eq!(serial_bytes_hex(&[0x00]), "0");
        assert_eq!(serial_bytes_hex(&[]), "0");
    }

    #[test]
    fn uscc_check_character() {
        // Published example codes.
        validate_uscc("91350100M000100Y43").unwrap();
        validate_uscc("91110108551385082Q").unwrap();
        assert_eq!(uscc_check_char("91350100M000100Y4"), Some('3'));
        assert!(validate_uscc("91350100M000100Y44").is_err());
        assert!(validate_uscc("91350100M000100Y4").is_err());
        assert!(validate_uscc("91350100I000100Y43").is_err());
        assert!(validate_uscc("9135010０M000100Y4").is_err());
    }

    #[test]
    fn subject_layout() {
        let name = subject(
            "张三",
            "示例公司",
            Some("platform"),
            Some("91350100M000100Y43"),
        )
        .unwrap();
        // RFC 4514 writes attributes it has no short name for as OID=#<DER hex>.
        assert_eq!(
            name.to_string(),
            "CN=张三,2.5.4.97=#131239313335303130304d303030313030593433,OU=platform,O=示例公司,C=CN"
        );
        assert_eq!(
            name_attr(&name, OID_ORGANIZATION_IDENTIFIER).as_deref(),
            Some("91350100M000100Y43")
        );
        assert_eq!(name_attr(&name, OID_COMMON_NAME).as_deref(), Some("张三"));
        assert!(subject("", "o", None, None).is_err());
        assert!(subject("a\nb", "o", None, None).is_err());
    }
}
