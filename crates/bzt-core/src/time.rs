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
        let secs = self.0.div_euclid(1000);
        let millis = self.0.rem_euclid(1000);
        match OffsetDateTime::from_unix_timestamp(secs) {
            Ok(t) => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                millis
            ),
            // Out of `time`'s range (years beyond ±9999): cannot come from a
            // real clock; print the raw value rather than panic.
            Err(_) => format!("@{}ms", self.0),
        }
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
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
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

    #[test]
    fn parses_offsets_into_utc() {
        let a = Timestamp::parse_rfc3339("2026-11-23T08:00:00.500+08:00").unwrap();
        let b = Timestamp::parse_rfc3339("2026-11-23T00:00:00.500Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }
}
