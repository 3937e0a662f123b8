//! JSON as a hostile sender may write it: the scans that run on an authentic body before it
//! is stored (nesting depth, the character U+0000, what numbers grow into, repeated keys), and
//! numbers read the way PostgreSQL's `jsonb` prints them.

/// Whether the JSON nesting stays within `max`, counted on the bytes before any parser
/// recurses into them.
pub fn json_depth_ok(body: &[u8], max: usize) -> bool {
    let (mut depth, mut i) = (0usize, 0);
    while let Some(&c) = body.get(i) {
        i += 1;
        match c {
            b'"' => i = string_end(body, i).0,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Where the JSON string opened just before `i` ends (the index past its closing quote, or the
/// end of the text if it has none), and whether it holds an escaped `\u0000`. Most of a
/// webhook's bytes are inside strings, so this jumps from one quote or backslash to the next
/// instead of looking at every byte.
fn string_end(b: &[u8], mut i: usize) -> (usize, bool) {
    let mut nul = false;
    while let Some(at) = b
        .get(i..)
        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
    {
        let at = i + at;
        if b.get(at) == Some(&b'"') {
            return (at + 1, nul);
        }
        nul |= b.get(at + 1..at + 6) == Some(b"u0000".as_slice());
        i = at + 2;
    }
    (b.len(), nul)
}

/// How many characters the numbers of one event may add, all told, when a database prints
/// them back as plain decimals (PostgreSQL's `jsonb` prints `1e9999` as ten thousand digits).
/// Generous for any real payload, and small enough that no stored event reads back much larger
/// than it arrived.
pub const NUMBER_GROWTH_MAX: usize = 4096;

/// Whether every database can store this JSON text as it is and read it back at about its
/// size: PostgreSQL's `jsonb` refuses the character U+0000 and numbers beyond NUMERIC's range,
/// and prints every number as a plain decimal. A batch with a row it refuses would fail for
/// every sender in it, and a payload that reads back a thousand times larger stops the
/// projector. Such an event is kept as `invalid`, raw bytes and all, on every backend alike.
pub fn json_storable(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut growth = 0usize;
    while let Some(&c) = b.get(i) {
        i += 1;
        match c {
            b'"' => {
                let (end, nul) = string_end(b, i);
                if nul {
                    return Err("JSON contains the character U+0000, which cannot be stored".into());
                }
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let start = i - 1;
                i += b[i..]
                    .iter()
                    .take_while(|c| matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
                    .count();
                growth = number_growth(&b[start..i])
                    .filter(|_| i - start <= 1000)
                    .map(|g| growth.saturating_add(g))
                    .filter(|&g| g <= NUMBER_GROWTH_MAX)
                    .ok_or("JSON contains a number too large to store")?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// How much longer than `lit` a JSON number is once printed as a plain decimal (`1e3` is
/// `1000`, `1.5e-3` is `0.0015`); `None` when its exponent alone is a million or more. Text
/// that is not a well-formed number grows by nothing: it is not JSON, and never stored as such.
pub fn number_growth(lit: &[u8]) -> Option<usize> {
    let unsigned = lit.strip_prefix(b"-").unwrap_or(lit);
    let Some(at) = unsigned.iter().position(|c| matches!(c, b'e' | b'E')) else {
        return Some(0);
    };
    let (mantissa, exp) = (&unsigned[..at], &unsigned[at + 1..]);
    let (negative, exp) = match exp.first() {
        Some(b'-') => (true, &exp[1..]),
        Some(b'+') => (false, &exp[1..]),
        _ => (false, exp),
    };
    let significant = &exp[exp.iter().take_while(|&&c| c == b'0').count()..];
    if !exp.iter().all(u8::is_ascii_digit) {
        return Some(0);
    }
    if significant.len() > 6 {
        return None;
    }
    let e = significant
        .iter()
        .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    let e = if negative { -e } else { e };
    let (int, frac) = match mantissa.iter().position(|&c| c == b'.') {
        Some(p) => (&mantissa[..p], &mantissa[p + 1..]),
        None => (mantissa, &mantissa[mantissa.len()..]),
    };
    let (int, frac) = (int.len() as i64, frac.len() as i64);
    // The point moves `e` places: a whole number when that passes every fraction digit, else
    // at least "0." and the fraction's digits, leading zeros included.
    let printed = if e >= frac {
        int + e
    } else {
        (int + e).max(1) + 1 + (frac - e)
    };
    let printed = usize::try_from(printed).unwrap_or(0);
    Some(printed.saturating_sub(unsigned.len()))
}

/// A JSON number as PostgreSQL's `jsonb` prints it: a plain decimal, the exponent worked in
/// (`1.5e3` is `1500`, `1.50e1` is `15.0`), no sign on zero. The projector reads payloads back
/// from the database, and SQLite keeps the number as it arrived: reading every number this way
/// makes both backends see the same text, so the same keys and columns. `lit` is a number the
/// storability check let through, so its growth is bounded.
pub fn canonical_number(lit: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let has_exp = lit.bytes().any(|b| matches!(b, b'e' | b'E'));
    if !has_exp && !lit.starts_with("-0") {
        return Cow::Borrowed(lit);
    }
    let (negative, unsigned) = match lit.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, lit),
    };
    let (mantissa, exp) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], &unsigned[i + 1..]),
        None => (unsigned, "0"),
    };
    let Ok(e) = exp.trim_start_matches('+').parse::<i64>() else {
        return Cow::Borrowed(lit);
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let point = int.len() as i64 + e;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || point.abs() > 100_000 {
        return Cow::Borrowed(lit);
    }
    let (whole, fraction) = if point <= 0 {
        (
            String::from("0"),
            format!("{}{digits}", "0".repeat((-point) as usize)),
        )
    } else if point as usize >= digits.len() {
        (
            format!("{digits}{}", "0".repeat(point as usize - digits.len())),
            String::new(),
        )
    } else {
        let (w, f) = digits.split_at(point as usize);
        (w.to_owned(), f.to_owned())
    };
    let whole = match whole.trim_start_matches('0') {
        "" => "0",
        w => w,
    };
    let zero = whole == "0" && fraction.bytes().all(|b| b == b'0');
    let mut out = String::with_capacity(whole.len() + fraction.len() + 2);
    if negative && !zero {
        out.push('-');
    }
    out.push_str(whole);
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(&fraction);
    }
    Cow::Owned(out)
}

/// Whether no object in the JSON text names a key twice. Parsers disagree on which of two
/// equal keys wins (serde keeps the last, SQLite's `json_extract` the first), so the columns
/// and a reader of the stored `data` could see different values.
pub fn json_keys_unique(text: &str) -> Result<(), String> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(text);
    unique::Unique
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| e.to_string())
}

mod unique {
    use std::borrow::Cow;
    use std::collections::HashSet;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    /// Walks any JSON value and fails on the first object that repeats a key.
    pub struct Unique;

    impl<'de> DeserializeSeed<'de> for Unique {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    struct Key;

    impl<'de> DeserializeSeed<'de> for Key {
        type Value = Cow<'de, str>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for Key {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
    }

    impl<'de> Visitor<'de> for Unique {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key_seed(Key)? {
                if seen.contains(&key) {
                    let shown: String = key.chars().take(64).collect();
                    return Err(de::Error::custom(format!(
                        "an object names the key {shown:?} twice"
                    )));
                }
                seen.insert(key);
                map.next_value_seed(Unique)?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Unique)?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The byte-at-a-time scans these replaced, kept to check the faster ones against.
    fn reference_depth_ok(body: &[u8], max: usize) -> bool {
        let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
        for &b in body {
            if in_str {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_str = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return false;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        true
    }

    fn reference_storable(text: &str) -> Result<(), String> {
        let b = text.as_bytes();
        let (mut i, mut in_str) = (0, false);
        let mut number: Option<usize> = None;
        let mut growth = 0usize;
        let mut end_number = |start: usize, end: usize| -> Result<(), String> {
            let g = number_growth(&b[start..end]).filter(|_| end - start <= 1000);
            growth = g
                .map(|g| growth.saturating_add(g))
                .filter(|&g| g <= NUMBER_GROWTH_MAX)
                .ok_or("JSON contains a number too large to store")?;
            Ok(())
        };
        while i < b.len() {
            let c = b[i];
            if in_str {
                match c {
                    b'\\' => {
                        if b.get(i + 1) == Some(&b'u')
                            && b.get(i + 2..i + 6) == Some(b"0000".as_slice())
                        {
                            return Err(
                                "JSON contains the character U+0000, which cannot be stored".into(),
                            );
                        }
                        i += 1;
                    }
                    b'"' => in_str = false,
                    _ => {}
                }
            } else if let Some(start) = number {
                if !matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    number = None;
                    end_number(start, i)?;
                    continue;
                }
            } else {
                match c {
                    b'"' => in_str = true,
                    b'-' | b'0'..=b'9' => number = Some(i),
                    _ => {}
                }
            }
            i += 1;
        }
        if let Some(start) = number {
            end_number(start, b.len())?;
        }
        Ok(())
    }

    #[test]
    fn storable_json_refuses_nul_and_numbers_that_grow() {
        assert!(
            json_storable(r#"{"a": "x\\u0000", "n": -12.5e-3, "b": true, "big": 1e99}"#).is_ok()
        );
        assert!(json_storable(r#"{"big": 1e9999}"#).is_err());
        assert!(json_storable(r#"{"small": 1e-9999}"#).is_err());
        assert!(json_storable(r#"{"big": 1e00000000000000000000000000001}"#).is_ok());
        // Many numbers that each grow a little add up.
        let many = format!("[{}]", vec!["1e40"; 200].join(","));
        assert!(json_storable(&many).is_err());
        let some = format!("[{}]", vec!["1e40"; 100].join(","));
        assert!(json_storable(&some).is_ok());
        assert!(json_storable(r#"{"a": "x\u0000y"}"#).is_err());
        assert!(json_storable(r#"{"x\u0000": 1}"#).is_err());
        assert!(json_storable(r#"{"n": 1e99999}"#).is_err());
        assert!(json_storable(&format!("[{}]", "9".repeat(1001))).is_err());
        assert!(json_storable(&format!("[{}]", "9".repeat(1000))).is_ok());
    }

    #[test]
    fn numbers_grow_as_printed_in_full() {
        for (lit, printed) in [
            ("1e3", "1000"),
            ("1.5e-3", "0.0015"),
            ("12.5e1", "125"),
            ("-1E+2", "-100"),
            ("2.50", "2.50"),
            ("1e-1", "0.1"),
            ("123e-1", "12.3"),
        ] {
            let growth = number_growth(lit.as_bytes());
            assert_eq!(
                growth,
                Some(printed.len().saturating_sub(lit.len())),
                "{lit}"
            );
        }
        assert_eq!(number_growth(b"1e1000000"), None);
        assert_eq!(number_growth(b"1e999999"), Some(999_992));
    }

    #[test]
    fn numbers_read_as_jsonb_prints_them() {
        for (lit, printed) in [
            ("12", "12"),
            ("12.50", "12.50"),
            ("1.5e3", "1500"),
            ("1.50e1", "15.0"),
            ("1.5e-3", "0.0015"),
            ("-0", "0"),
            ("-0.00", "0.00"),
            ("-0e5", "0"),
            ("-1.25E+2", "-125"),
            ("0.5e1", "5"),
            ("123e-5", "0.00123"),
        ] {
            assert_eq!(canonical_number(lit), printed, "{lit}");
        }
    }

    #[test]
    fn repeated_keys_are_found_at_any_depth() {
        assert!(json_keys_unique(r#"{"a":1,"b":{"a":2},"c":[{"a":3}]}"#).is_ok());
        for dup in [
            r#"{"amount":1,"amount":2}"#,
            r#"{"data":{"amount":1,"x":0,"amount":2}}"#,
            r#"[{"k":1},{"k":1,"k":1}]"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            let e = json_keys_unique(dup).unwrap_err();
            assert!(e.contains("twice"), "{dup}: {e}");
        }
        assert!(json_keys_unique(r#"{"n": 1e5, "m": 12345678901234567890123}"#).is_ok());
    }

    /// The scans give the reference's answer on every input, valid JSON or not: fixtures, and
    /// 200,000 strings drawn from the bytes that steer them.
    #[test]
    fn scans_agree_with_the_byte_at_a_time_reference() {
        let mut inputs: Vec<String> = [
            r#"{"a": "x\\u0000", "n": -12.5e-3, "b": true, "big": 1e9999}"#,
            r#"[1e4000, 1e100, 1e-5000]"#,
            r#"{"a": "x\u0000y"}"#,
            r#"{"a":"\"[[[["}"#,
            "\"unterminated \\u0000",
            "\"ends in a backslash\\",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let alphabet = b"\"\\u0[]{}9e.-+ a1";
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 48) as usize;
            let s: String = (0..len)
                .map(|k| {
                    let r = x.rotate_left(k as u32 * 5) ^ (k as u64).wrapping_mul(0x2545_F491);
                    alphabet[(r % alphabet.len() as u64) as usize] as char
                })
                .collect();
            inputs.push(s);
        }
        inputs.push(format!("[{}]", "9".repeat(1001)));
        for s in &inputs {
            assert_eq!(json_storable(s), reference_storable(s), "storable: {s:?}");
            for max in 0..4 {
                assert_eq!(
                    json_depth_ok(s.as_bytes(), max),
                    reference_depth_ok(s.as_bytes(), max),
                    "depth {max}: {s:?}"
                );
            }
        }
    }

    #[test]
    fn depth_guard_ignores_brackets_in_strings() {
        assert!(json_depth_ok(br#"{"a":"[[[[[[[[[[[[["}"#, 2));
        assert!(!json_depth_ok(b"[[[1]]]", 2));
        assert!(json_depth_ok(b"[[1]]", 2));
        assert!(json_depth_ok(br#"{"a":"\"[[[["}"#, 1));
    }
}
