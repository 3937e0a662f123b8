//! Instants as hooksync handles them: [`Stamp`], a UTC instant in years 1 to 9999.
//!
//! A `Stamp` is made by parsing a provider's text or reading a stored column, and is bound to
//! SQL as itself; text exists only at the two edges. Stored, it is UTC, fixed width, to the
//! microsecond (`2024-01-22T10:30:00.000000Z` on SQLite, `timestamptz` on PostgreSQL): a fixed
//! width makes the text sort in time order, which the queue index and the row guard rely on.
//! The year range is what both backends hold (PostgreSQL has no year 0) and what keeps the text
//! fixed width, so printing a `Stamp` cannot fail.

use std::fmt;

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use diesel::sqlite::Sqlite;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, PrimitiveDateTime, UtcOffset};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct Stamp(OffsetDateTime);

/// Text that is not an instant hooksync can hold.
#[derive(Debug, thiserror::Error)]
#[error("not a time between years 1 and 9999: {0:?}")]
pub struct BadStamp(pub String);

impl Stamp {
    pub fn now() -> Stamp {
        Stamp::clamp(OffsetDateTime::now_utc())
    }

    /// Reads a provider timestamp: RFC 3339 with an offset, or a naive date-time taken as UTC
    /// (some senders drop the offset). Anything else, or a year outside 1..=9999, is `None`.
    pub fn parse(s: &str) -> Option<Stamp> {
        parse_any(s).and_then(Stamp::new)
    }

    /// Reads a stored instant; text that is not one is an error, never some default.
    pub fn from_stored(s: &str) -> Result<Stamp, BadStamp> {
        Stamp::parse(s).ok_or_else(|| BadStamp(s.chars().take(64).collect()))
    }

    /// `t` if hooksync can hold it.
    pub fn new(t: OffsetDateTime) -> Option<Stamp> {
        let t = t.checked_to_offset(UtcOffset::UTC)?;
        (1..=9999).contains(&t.year()).then_some(Stamp(t))
    }

    /// The instant `d` later (or earlier), held to the representable years.
    pub fn plus(self, d: Duration) -> Stamp {
        Stamp::clamp(self.0.saturating_add(d))
    }

    pub fn unix_timestamp(self) -> i64 {
        self.0.unix_timestamp()
    }

    /// The time from `self` to `later`, zero when `later` is not later.
    pub fn until(self, later: Stamp) -> std::time::Duration {
        (later.0 - self.0).try_into().unwrap_or_default()
    }

    fn clamp(t: OffsetDateTime) -> Stamp {
        const MIN: OffsetDateTime = time::macros::datetime!(0001-01-01 00:00:00 UTC);
        const MAX: OffsetDateTime = time::macros::datetime!(9999-12-31 23:59:59.999999 UTC);
        Stamp(t.to_offset(UtcOffset::UTC).clamp(MIN, MAX))
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }
}

impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl From<Stamp> for OffsetDateTime {
    fn from(s: Stamp) -> OffsetDateTime {
        s.0
    }
}

impl ToSql<Text, Sqlite> for Stamp {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.to_string());
        Ok(serialize::IsNull::No)
    }
}

impl ToSql<Text, Pg> for Stamp {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        use std::io::Write;
        write!(out, "{self}")?;
        Ok(serialize::IsNull::No)
    }
}

/// Reads the stored text on either backend (PostgreSQL's `timestamptz` is selected through
/// `Backend::time_text`, so both hand over the same text).
impl<DB: Backend> FromSql<Text, DB> for Stamp
where
    String: FromSql<Text, DB>,
{
    fn from_sql(value: DB::RawValue<'_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, DB>>::from_sql(value)?;
        Ok(Stamp::from_stored(&text)?)
    }
}

fn parse_any(s: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    const NAIVE: &[time::format_description::BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    const NAIVE_FRAC: &[time::format_description::BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]");
    const SPACED: &[time::format_description::BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    const SPACED_FRAC: &[time::format_description::BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]");
    PrimitiveDateTime::parse(s, NAIVE)
        .or_else(|_| PrimitiveDateTime::parse(s, NAIVE_FRAC))
        .or_else(|_| PrimitiveDateTime::parse(s, SPACED))
        .or_else(|_| PrimitiveDateTime::parse(s, SPACED_FRAC))
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> String {
        Stamp::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_offsets_to_utc_fixed_width() {
        assert_eq!(
            text("2024-01-22T12:30:00+02:00"),
            "2024-01-22T10:30:00.000000Z"
        );
        assert_eq!(
            text("2024-01-22T10:30:00.123Z"),
            "2024-01-22T10:30:00.123000Z"
        );
        assert_eq!(text("2024-01-22T10:30:00"), "2024-01-22T10:30:00.000000Z");
        assert_eq!(text("2024-01-22 10:30:00.5"), "2024-01-22T10:30:00.500000Z");
        assert_eq!(text("0001-01-01T00:00:00Z"), "0001-01-01T00:00:00.000000Z");
        assert!(Stamp::parse("yesterday").is_none());
        assert!(Stamp::parse("0000-06-01T00:00:00Z").is_none());
        assert!(Stamp::parse("0001-01-01T00:30:00+01:00").is_none());
        assert!(Stamp::parse("").is_none());
    }

    #[test]
    fn stored_text_reads_back_and_sorts_in_time_order() {
        let a = Stamp::parse("2024-01-22T10:30:00Z").unwrap();
        let b = Stamp::parse("2024-01-22T10:30:00.5Z").unwrap();
        let c = Stamp::parse("2024-01-22T10:30:01Z").unwrap();
        assert!(a.to_string() < b.to_string() && b.to_string() < c.to_string());
        assert_eq!(Stamp::from_stored(&b.to_string()).unwrap(), b);
        assert!(Stamp::from_stored("1970-01-01 garbage").is_err());
    }

    #[test]
    fn arithmetic_stays_in_the_representable_years() {
        let end = Stamp::parse("9999-12-31T23:00:00Z").unwrap();
        assert_eq!(
            end.plus(Duration::days(30)).to_string(),
            "9999-12-31T23:59:59.999999Z"
        );
        let start = Stamp::parse("0001-01-01T01:00:00Z").unwrap();
        assert_eq!(
            start.plus(Duration::days(-30)).to_string(),
            "0001-01-01T00:00:00.000000Z"
        );
        assert_eq!(end.until(start), std::time::Duration::ZERO);
    }
}
