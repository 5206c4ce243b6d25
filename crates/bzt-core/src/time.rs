//! Wall-clock instants with millisecond precision, as the protocol writes them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// Milliseconds since the Unix epoch, UTC.
///
/// The protocol's time format (`YYYY-MM-DDTHH:MM:SS.sssZ`) has millisecond
/// precision, so keeping milliseconds makes "format, then parse" lossless and
/// keeps the challenge's `expires:` line identical to the session's
/// `expires_at` everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// The current system time. Code that needs testable time takes a
    /// `Timestamp` argument instead of calling this.
    pub fn now_utc() -> Self {
        let now = OffsetDateTime::now_utc();
        Self((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    pub fn plus_secs(self, s: i64) -> Self {
        self.plus_millis(s.saturating_mul(1000))
    }

    /// Milliseconds from `self` until `later` (negative if `later` is earlier).
    pub fn millis_until(self, later: Timestamp) -> i64 {
        later.0.saturating_sub(self.0)
    }

    /// `YYYY-MM-DDTHH:MM:SS.sssZ`.
    pub fn to_rfc3339(self) -> String {
        self.with_rfc3339(str::to_owned)
    }

    /// Calls `f` with [`Self::to_rfc3339`]'s text, formatted on the stack.
    ///
    /// Every record write and every answer carries several times, and
    /// `format!` with padded fields made them 2.7% of a cluster node's CPU
    /// (loadtest/RESULTS.md, session 6); writing the digits directly is
    /// what no crate offers for this one fixed layout. `time` still does
    /// the calendar, and a test checks the text against its formatter.
    pub fn with_rfc3339<T>(self, f: impl FnOnce(&str) -> T) -> T {
        let secs = self.0.div_euclid(1000);
        let millis = self.0.rem_euclid(1000) as u32;
        let t = match OffsetDateTime::from_unix_timestamp(secs) {
            Ok(t) if (0..=9999).contains(&t.year()) => t,
            // Out of the four-digit years (or of `time`'s range): cannot
            // come from a real clock; print the raw value rather than panic.
            _ => return f(&format!("@{}ms", self.0)),
        };
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, digits: usize, mut value: u32| {
            for i in (at..at + digits).rev() {
                buf[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, t.year() as u32);
        put(5, 2, u8::from(t.month()).into());
        put(8, 2, t.day().into());
        put(11, 2, t.hour().into());
        put(14, 2, t.minute().into());
        put(17, 2, t.second().into());
        put(20, 3, millis);
        // Only ASCII digits were written into an ASCII template.
        f(std::str::from_utf8(&buf).unwrap_or_default())
    }

    /// Parses any RFC 3339 timestamp (sub-millisecond digits are truncated).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        Some(Self((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Self(d.as_millis() as i64),
            Err(e) => Self(-(e.duration().as_millis() as i64)),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_rfc3339(|s| f.write_str(s))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_rfc3339(|text| s.serialize_str(text))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_z() {
        let t = Timestamp::from_unix_millis(1_795_000_000_123);
        let s = t.to_rfc3339();
        assert_eq!(s.len(), "YYYY-MM-DDTHH:MM:SS.sssZ".len());
        assert!(s.ends_with(".123Z"), "{s}");
        assert_eq!(Timestamp::parse_rfc3339(&s), Some(t));
    }

    #[test]
    fn epoch_is_formatted_exactly() {
        assert_eq!(
            Timestamp::from_unix_millis(0).to_rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_700_000_000_007).to_rfc3339(),
            "2023-11-14T22:13:20.007Z"
        );
    }

    /// The digits written by hand against `time`'s own formatter, on
    /// instants spread over years 0000–9999 and on calendar edges.
    #[test]
    fn formats_as_the_time_crate_does() {
        let layout = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let reference = |ms: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
                .unwrap()
                .format(&layout)
                .unwrap()
        };
        let first = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
        let last = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        let mut edges = vec![first, last, 0, -1, 1, 951_782_400_000, 951_868_799_999];
        // A deterministic spread (an LCG): no dependency for randomness.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            edges.push(first + (x >> 11) as i64 % (last - first + 1));
        }
        for ms in edges {
            let t = Timestamp::from_unix_millis(ms);
            assert_eq!(t.to_rfc3339(), reference(ms), "{ms}");
            assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t), "{ms}");
        }
        assert_eq!(
            Timestamp::from_unix_millis(last + 1).to_rfc3339(),
            format!("@{}ms", last + 1)
        );
        assert_eq!(
            Timestamp::from_unix_millis(first - 1).to_rfc3339(),
            format!("@{}ms", first - 1)
        );
    }

    #[test]
    fn parses_offsets_into_utc() {
        let a = Timestamp::parse_rfc3339("2026-11-23T08:00:00.500+08:00").unwrap();
        let b = Timestamp::parse_rfc3339("2026-11-23T00:00:00.500Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }
}
