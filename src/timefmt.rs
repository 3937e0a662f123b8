//! Timestamps as stored: UTC, fixed width, microseconds. A fixed width makes the text sort in
//! time order, which the queue index and the row guard rely on.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

const STORED: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Formats an instant the way every table stores it.
pub fn format(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(STORED)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000000Z"))
}

/// Reads a provider timestamp: RFC 3339 with an offset, or a naive date-time taken as UTC
/// (some senders drop the offset). Anything else is `None`.
/// Years outside 1..=9999 are refused too: PostgreSQL has no year 0, and the stored text must
/// stay fixed width.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    parse_any(s).filter(|t| (1..=9999).contains(&t.year()))
}

fn parse_any(s: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return t.checked_to_offset(UtcOffset::UTC);
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

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_offsets_to_utc_fixed_width() {
        let t = parse("2024-01-22T12:30:00+02:00").unwrap();
        assert_eq!(format(t), "2024-01-22T10:30:00.000000Z");
        let t = parse("2024-01-22T10:30:00.123Z").unwrap();
        assert_eq!(format(t), "2024-01-22T10:30:00.123000Z");
        let t = parse("2024-01-22T10:30:00").unwrap();
        assert_eq!(format(t), "2024-01-22T10:30:00.000000Z");
        let t = parse("2024-01-22 10:30:00.5").unwrap();
        assert_eq!(format(t), "2024-01-22T10:30:00.500000Z");
        assert!(parse("yesterday").is_none());
        assert!(parse("0000-06-01T00:00:00Z").is_none());
        assert!(parse("0001-01-01T00:30:00+01:00").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn stored_text_sorts_in_time_order() {
        let a = format(parse("2024-01-22T10:30:00Z").unwrap());
        let b = format(parse("2024-01-22T10:30:00.5Z").unwrap());
        let c = format(parse("2024-01-22T10:30:01Z").unwrap());
        assert!(a < b && b < c);
    }
}
