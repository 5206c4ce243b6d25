//! `GeneralizedTime` as seals carry it: to the second, or with a fraction of a second.
//!
//! The `der` crate's `GeneralizedTime` is RFC 5280's (`YYYYMMDDHHMMSSZ`, no fraction), but
//! GB/T 38540 takes ASN.1's GeneralizedTime, and BouncyCastle-based signers (ofdrw) write
//! `YYYYMMDDHHMMSS.fffZ` when the milliseconds are not zero. Written by hand because no crate
//! reads that form; the value's exact text is kept so that re-encoding a structure gives back the
//! bytes that were signed.

use der::{DecodeValue, EncodeValue, ErrorKind, FixedTag, Header, Length, Reader, Tag, Writer};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// Longest value read: 14 digits, a dot, nine digits of fraction, `Z`.
const MAX_LEN: usize = 14 + 1 + 9 + 1;

/// A GeneralizedTime in DER form: UTC (`Z`), seconds present, an optional fraction of one to
/// nine digits without trailing zeros (X.690 11.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SesTime {
    text: String,
    at: OffsetDateTime,
}

impl SesTime {
    /// `t` to the second (a fraction of zero is not written in DER; ours are all whole seconds).
    pub fn from_offset(t: OffsetDateTime) -> Option<Self> {
        let t = t
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .ok()?;
        if !(0..=9999).contains(&t.year()) {
            return None;
        }
        let text = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        Some(Self { text, at: t })
    }

    /// Reads the text of a value (`20261205123000Z`, `20261205123000.25Z`).
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() < 15 || b.len() > MAX_LEN || b.last() != Some(&b'Z') {
            return None;
        }
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let s = b.get(r)?;
            s.iter()
                .all(u8::is_ascii_digit)
                .then(|| s.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
        };
        let year = i32::try_from(digits(0..4)?).ok()?;
        let month = Month::try_from(u8::try_from(digits(4..6)?).ok()?).ok()?;
        let day = u8::try_from(digits(6..8)?).ok()?;
        let (hour, minute, second) = (digits(8..10)?, digits(10..12)?, digits(12..14)?);
        let nanos = match &b[14..b.len() - 1] {
            [] => 0,
            [b'.', fraction @ ..] => {
                // DER: at least one digit, none trailing zero.
                if fraction.is_empty() || fraction.last() == Some(&b'0') {
                    return None;
                }
                let value = digits(15..15 + fraction.len())?;
                value * 10u32.pow(9 - u32::try_from(fraction.len()).ok()?)
            }
            _ => return None,
        };
        let date = Date::from_calendar_date(year, month, day).ok()?;
        let time = Time::from_hms_nano(
            u8::try_from(hour).ok()?,
            u8::try_from(minute).ok()?,
            u8::try_from(second).ok()?,
            nanos,
        )
        .ok()?;
        Some(Self {
            text: text.to_owned(),
            at: PrimitiveDateTime::new(date, time).assume_utc(),
        })
    }

    /// The instant, with its fraction of a second.
    pub fn to_offset(&self) -> OffsetDateTime {
        self.at
    }

    /// The value's text as it travels.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FixedTag for SesTime {
    const TAG: Tag = Tag::GeneralizedTime;
}

impl<'a> DecodeValue<'a> for SesTime {
    type Error = der::Error;

    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let len = usize::try_from(header.length())?;
        if !(15..=MAX_LEN).contains(&len) {
            return Err(reader.error(Self::TAG.length_error()));
        }
        let mut bytes = vec![0u8; len];
        reader.read_into(&mut bytes)?;
        std::str::from_utf8(&bytes)
            .ok()
            .and_then(Self::parse)
            .ok_or_else(|| reader.error(ErrorKind::Value { tag: Self::TAG }))
    }
}

impl EncodeValue for SesTime {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.text.len())
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(self.text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::{Decode, Encode};

    #[test]
    fn whole_seconds_and_fractions_read_and_encode_back_to_the_same_bytes() {
        for text in [
            "20261205123000Z",
            "20261205123000.5Z",
            "20261205123000.123456789Z",
        ] {
            let t = SesTime::parse(text).unwrap();
            let der = t.to_der().unwrap();
            assert_eq!(&der[2..], text.as_bytes());
            assert_eq!(SesTime::from_der(&der).unwrap(), t);
        }
        let t = SesTime::parse("20261205123000.25Z").unwrap().to_offset();
        assert_eq!(t.unix_timestamp(), 1_796_473_800);
        assert_eq!(t.millisecond(), 250);
    }

    #[test]
    fn forms_der_forbids_are_refused() {
        for text in [
            "20261205123000.50Z", // trailing zero
            "20261205123000.Z",   // empty fraction
            "20261205123000,5Z",  // comma
            "20261205123000",     // local time
            "20261205123000+0800",
            "202612051230Z", // no seconds
            "20261305123000Z",
            "20261205123000.1234567891Z",
        ] {
            assert!(SesTime::parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn from_offset_writes_whole_seconds() {
        let t = OffsetDateTime::from_unix_timestamp(1_796_473_800).unwrap()
            + time::Duration::milliseconds(999);
        assert_eq!(SesTime::from_offset(t).unwrap().as_str(), "20261205123000Z");
    }
}
