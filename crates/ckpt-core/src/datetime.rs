//! Datetimes as Kura writes and reads them: ISO-8601 text as pydantic parses it (lax
//! mode: date only, `T`/space separators, offsets, Unix timestamps in text), the text
//! pydantic and Python's `str(datetime)` write, and microseconds since the epoch with an
//! optional UTC offset as Arrow holds them. One module for both the JSONL codec and the
//! Parquet layouts, so both read and write a datetime the same way. Hand-written rather
//! than chrono's parsers: pydantic's rules (which separators, how fractions are cut,
//! when a number is milliseconds) are not any of chrono's formats.

/// A datetime as Kura holds it: an aware one is an instant (microseconds since the epoch,
/// UTC) with the offset it was written with; a naive one is a wall-clock time (its
/// microseconds counted as if it were UTC) without an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Microseconds since the epoch: the UTC instant (aware) or the wall clock (naive).
    pub micros: i64,
    /// Seconds east of UTC; None for a naive datetime.
    pub offset: Option<i32>,
}

/// Beyond this many seconds, a Unix timestamp is read as milliseconds (pydantic's rule).
const MS_WATERSHED: i64 = 20_000_000_000;
/// 9999-12-31T23:59:59.999999, the last instant Python's datetime holds.
const MAX_MICROS: i64 = 253_402_300_799_999_999;
/// 0001-01-01T00:00:00.
const MIN_MICROS: i64 = -62_135_596_800_000_000;

/// Pydantic's form of a naive datetime: microseconds only when there are any.
pub fn format_timestamp_micros(us: i64, out: &mut String) {
    use std::fmt::Write;
    let t = chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.naive_utc())
        .unwrap_or_default();
    if us.rem_euclid(1_000_000) == 0 {
        let _ = write!(out, "{}", t.format("%Y-%m-%dT%H:%M:%S"));
    } else {
        let _ = write!(out, "{}", t.format("%Y-%m-%dT%H:%M:%S%.6f"));
    }
}

/// Parses an ISO-8601 datetime as Kura writes it (naive), also accepting an offset or `Z`
/// (converted to UTC) and a space instead of `T`.
pub fn parse_timestamp_micros(s: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let s = s.trim();
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc().timestamp_micros());
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f") {
        return Some(t.and_utc().timestamp_micros());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    None
}

/// A datetime as Kura's models read it (as [`parse_text`]), also in Python's
/// `str(datetime)` form: microseconds (the UTC instant of an aware one, the wall clock of
/// a naive one) and the UTC offset in seconds when it is aware.
pub fn parse_datetime(s: &str) -> Option<(i64, Option<i32>)> {
    parse_text(s).map(|t| (t.micros, t.offset))
}

/// Text for a `datetime` field, as pydantic reads it: ISO-8601 (see `parse_iso`), or a
/// Unix timestamp in a string.
pub fn parse_text(s: &str) -> Option<DateTime> {
    parse_iso(s.as_bytes()).or_else(|| numeric_timestamp(s))
}

/// A Unix timestamp given as a float: seconds, or milliseconds past 2e10 in magnitude, the
/// fraction of the unit rounded to the nearest microsecond (so `.9999999` s is the next
/// second, and `-0.0000005` is the epoch itself).
pub(crate) fn from_unix_f64(f: f64) -> Option<DateTime> {
    if !f.is_finite() || f.abs() > 9.2e18 {
        return None;
    }
    let whole = f.floor();
    let unit = if f.abs() > MS_WATERSHED as f64 {
        1_000.0
    } else {
        1_000_000.0
    };
    let extra = ((f - whole) * unit).round() as i64;
    let micros = (whole as i64)
        .checked_mul(unit as i64)?
        .checked_add(extra)?;
    in_range(micros)
}

/// A string that pydantic reads as a Unix timestamp when it is not ISO-8601 text: an
/// integer (an optional sign and ASCII digits, within i64), or a number whose first
/// character past the sign and the leading digits is a `.` (`1.5`, `.5`, `1.`, `2.0e1`),
/// read as a float. Without a point an exponent is refused (`1e5`), as are whitespace,
/// underscores, `inf` and `nan`.
fn numeric_timestamp(s: &str) -> Option<DateTime> {
    let b = s.as_bytes();
    let body = match b {
        [b'+' | b'-', _, ..] => &b[1..],
        _ => b,
    };
    let digits = body.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == body.len() {
        // Empty, or only a sign, is refused here.
        let n: i64 = s.strip_prefix('+').unwrap_or(s).parse().ok()?;
        return from_unix(n);
    }
    if body[digits] != b'.' {
        return None;
    }
    // Rust's float syntax past this point is the one pydantic's parser uses: digits, an
    // optional exponent with sign; `1.` and `.5` but not `.` alone.
    from_unix_f64(s.parse::<f64>().ok()?)
}

/// A Unix timestamp given as an integer: seconds, or milliseconds past 2e10 in magnitude.
pub(crate) fn from_unix(n: i64) -> Option<DateTime> {
    let unit = if (-MS_WATERSHED..=MS_WATERSHED).contains(&n) {
        1_000_000
    } else {
        1_000
    };
    in_range(n.checked_mul(unit)?)
}

/// An aware UTC datetime at `micros`, if Python's datetime holds it.
fn in_range(micros: i64) -> Option<DateTime> {
    (MIN_MICROS..=MAX_MICROS)
        .contains(&micros)
        .then_some(DateTime {
            micros,
            offset: Some(0),
        })
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let d = b.get(at..at + n)?;
    d.iter()
        .all(u8::is_ascii_digit)
        .then(|| d.iter().fold(0u32, |v, c| v * 10 + (c - b'0') as u32))
}

fn parse_iso(b: &[u8]) -> Option<DateTime> {
    let year = digits(b, 0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (month, day) = (digits(b, 5, 2)?, digits(b, 8, 2)?);
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day).filter(|_| year > 0)?;
    if b.len() == 10 {
        let t = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros();
        return Some(DateTime {
            micros: t,
            offset: None,
        });
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ' | b'_')) {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    if b.get(13) != Some(&b':') {
        return None;
    }
    let minute = digits(b, 14, 2)?;
    let mut i = 16;
    let mut second = 0;
    let mut micro = 0u32;
    if b.get(i) == Some(&b':') {
        second = digits(b, i + 1, 2)?;
        i += 3;
        if matches!(b.get(i), Some(b'.' | b',')) {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                if i - start < 6 {
                    micro = micro * 10 + (b[i] - b'0') as u32;
                }
                i += 1;
            }
            let n = i - start;
            if n == 0 {
                return None;
            }
            for _ in n..6 {
                micro *= 10;
            }
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let offset = match b.get(i) {
        None => None,
        Some(b'Z' | b'z') => {
            i += 1;
            Some(0)
        }
        Some(sign @ (b'+' | b'-')) => {
            let sign = if *sign == b'-' { -1 } else { 1 };
            let h = digits(b, i + 1, 2)?;
            let m = if b.get(i + 3) == Some(&b':') {
                i += 6;
                digits(b, i - 2, 2)?
            } else {
                i += 5;
                digits(b, i - 2, 2)?
            };
            if h > 23 || m > 59 {
                return None;
            }
            Some(sign * (h * 3600 + m * 60) as i32)
        }
        Some(_) => return None,
    };
    if i != b.len() {
        return None;
    }
    let wall = date
        .and_hms_micro_opt(hour, minute, second, micro)?
        .and_utc()
        .timestamp_micros();
    Some(DateTime {
        micros: wall - offset.unwrap_or(0) as i64 * 1_000_000,
        offset,
    })
}

/// Pydantic's text for a datetime (`model_dump_json`): `2024-05-01T10:00:00`, microseconds
/// only when there are any, then `Z` for UTC or `+02:00`, nothing for a naive one.
pub fn format_datetime(t: DateTime, out: &mut String) {
    let wall = t.micros + t.offset.unwrap_or(0) as i64 * 1_000_000;
    format_timestamp_micros(wall, out);
    match t.offset {
        None => {}
        Some(0) => out.push('Z'),
        Some(o) => {
            let (sign, o) = if o < 0 { ('-', -o) } else { ('+', o) };
            out.push_str(&format!("{sign}{:02}:{:02}", o / 3600, o / 60 % 60));
        }
    }
}
