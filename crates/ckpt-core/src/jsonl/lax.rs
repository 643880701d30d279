//! The coercions pydantic v2 applies, in its default (lax) mode, to the field types of
//! Kura's models: what a JSON value becomes when the field is `int`, `float`, `str` or
//! `datetime`, and when it is refused. The decoder applies them so that ckpt accepts a line
//! exactly when Kura does, with the value Kura gets; `tests/kura_differential.rs` checks
//! these rules against Kura itself.

use super::value::Value;
use crate::datetime::{self, DateTime};

/// An integer as Python holds it: any size. Beyond i128 only the sign matters to us (the
/// value is refused by a range check or by the column's width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int {
    Fits(i128),
    Huge { negative: bool },
}

impl Int {
    /// The value when it fits `T`, else a message naming the column's limit.
    pub fn narrow<T: TryFrom<i128>>(self, what: &str) -> Result<T, String> {
        let v = match self {
            Int::Fits(v) => v,
            Int::Huge { negative } => {
                return Err(format!(
                    "integer {}out of range for {what}",
                    if negative { "(negative) " } else { "" }
                ));
            }
        };
        T::try_from(v).map_err(|_| format!("integer {v} out of range for {what}"))
    }

    /// `ge <= self <= le`, with pydantic's wording when it is not.
    pub fn check_range(self, ge: i64, le: i64) -> Result<(), String> {
        let (below, above) = match self {
            Int::Fits(v) => (v < ge as i128, v > le as i128),
            Int::Huge { negative } => (negative, !negative),
        };
        if below {
            Err(format!("input should be greater than or equal to {ge}"))
        } else if above {
            Err(format!("input should be less than or equal to {le}"))
        } else {
            Ok(())
        }
    }
}

fn describe(v: &Value) -> String {
    let mut s = String::new();
    v.write(&mut s);
    if s.len() > 40 {
        let mut end = 40;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    format!("{} {s}", v.type_name())
}

fn parse_int_digits(s: &str) -> Option<Int> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(match digits.parse::<i128>() {
        Ok(v) => Int::Fits(if negative { -v } else { v }),
        Err(_) => Int::Huge { negative },
    })
}

/// Python's rule for `_` in numbers: only single underscores between two digits. Returns
/// the text without them, or None when an underscore is misplaced.
fn strip_underscores(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !s.contains('_') {
        return Some(s.into());
    }
    let b = s.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if *c == b'_' {
            let before = i.checked_sub(1).and_then(|j| b.get(j));
            let after = b.get(i + 1);
            if !before.is_some_and(u8::is_ascii_digit) || !after.is_some_and(u8::is_ascii_digit) {
                return None;
            }
        }
    }
    Some(s.replace('_', "").into())
}

/// A float that is a whole number, as pydantic takes it for an int.
fn float_to_int(f: f64, shown: &str) -> Result<Int, String> {
    if !f.is_finite() {
        return Err(format!("expected a finite number, found {shown}"));
    }
    if f.fract() != 0.0 {
        return Err(format!(
            "expected an integer, found a number with a fractional part: {shown}"
        ));
    }
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
        return Err(format!("integer too large to convert: {shown}"));
    }
    Ok(Int::Fits(f as i128))
}

/// A value for an `int` field: integers, whole floats, booleans, and strings of a whole
/// number (whitespace around, `+`, `_` between digits, a fraction of zeros).
pub fn to_int(v: &Value) -> Result<Int, String> {
    match v {
        Value::Number { text, float: false } => {
            Ok(parse_int_digits(text).expect("the JSON grammar's integer"))
        }
        Value::Number { text, float: true } => float_to_int(parse_f64(text), text),
        Value::NonFinite(_) => Err(format!("expected a finite number, found {}", describe(v))),
        Value::Bool(b) => Ok(Int::Fits(*b as i128)),
        Value::Str(s) => str_to_int(s).ok_or_else(|| {
            format!(
                "expected an integer, unable to parse string as an integer: {}",
                describe(v)
            )
        }),
        _ => Err(format!("expected an integer, found {}", describe(v))),
    }
}

fn str_to_int(s: &str) -> Option<Int> {
    let s = s.trim();
    let s = strip_underscores(s)?;
    let whole = match s.split_once('.') {
        Some((whole, frac)) if !frac.is_empty() && frac.bytes().all(|c| c == b'0') => whole,
        Some(_) => return None,
        None => &s,
    };
    parse_int_digits(whole)
}

/// The nearest f64 to a JSON number's text (infinite beyond f64's range, as Python reads
/// `1e400`).
pub fn parse_f64(text: &str) -> f64 {
    let v: f64 = fast_float2::parse(text).expect("the JSON grammar's number");
    if v == 0.0 && !text.contains(['.', 'e', 'E']) {
        // `-0` is the integer 0 to Python, which makes the float 0.0, not -0.0.
        return 0.0;
    }
    v
}

/// A value for a `float` field: numbers (and `NaN`/`Infinity`), booleans, and strings
/// Python's `float()` takes.
pub fn to_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number { text, .. } => Ok(parse_f64(text)),
        Value::NonFinite(f) => Ok(*f),
        Value::Bool(b) => Ok(*b as u8 as f64),
        Value::Str(s) => str_to_float(s).ok_or_else(|| {
            format!(
                "expected a number, unable to parse string as a number: {}",
                describe(v)
            )
        }),
        _ => Err(format!("expected a number, found {}", describe(v))),
    }
}

fn str_to_float(s: &str) -> Option<f64> {
    let s = s.trim();
    let s = strip_underscores(s)?;
    let body = s.trim_start_matches(['+', '-']);
    if body.len() + 1 < s.len() {
        return None;
    }
    let lower = body.to_ascii_lowercase();
    let negative = s.starts_with('-');
    let special = match lower.as_str() {
        "nan" => Some(f64::NAN),
        "inf" | "infinity" => Some(f64::INFINITY),
        _ => None,
    };
    if let Some(v) = special {
        return Some(if negative { -v } else { v });
    }
    // Digits with an optional point and exponent; Rust's parser also takes "inf" and
    // "nan" spellings Python refuses, handled above.
    if !body
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == b'.')
    {
        return None;
    }
    s.parse::<f64>().ok()
}

/// A value for a `str` field: only a string (pydantic does not turn numbers into text).
pub fn to_str<'v>(v: &'v Value) -> Result<&'v str, String> {
    match v {
        Value::Str(s) => Ok(s),
        _ => Err(format!("expected a string, found {}", describe(v))),
    }
}

/// A value for a `datetime` field: ISO-8601 text (date only, `T`/`t`/space/`_`
/// separator, fractions truncated to microseconds, `Z` or `±HH:MM`/`±HHMM` offsets), or a
/// Unix timestamp as a number or numeric string (seconds, or milliseconds past 2e10),
/// which is aware (UTC).
pub fn to_datetime(v: &Value) -> Result<DateTime, String> {
    let bad = || format!("expected a datetime, found {}", describe(v));
    match v {
        Value::Number { text, float } => {
            if *float {
                datetime::from_unix_f64(parse_f64(text)).ok_or_else(bad)
            } else {
                match parse_int_digits(text) {
                    Some(Int::Fits(s)) => i64::try_from(s)
                        .ok()
                        .and_then(datetime::from_unix)
                        .ok_or_else(bad),
                    _ => Err(bad()),
                }
            }
        }
        Value::Str(s) => datetime::parse_text(s).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// Kura's `Conversation.metadata`: `dict[str, Union[str, int, float, bool, list[str],
/// list[int], list[float]]]`. Validates `v` and returns it as Kura holds it (a list that
/// only lax mode takes, such as `[1, "2"]`, becomes `[1, 2]`).
pub fn conversation_metadata<'a>(v: &Value<'a>) -> Result<Value<'a>, String> {
    let Value::Object(entries) = v else {
        return Err(format!("expected a JSON object, found {}", describe(v)));
    };
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let value = match v {
            Value::Str(_) | Value::Number { .. } | Value::NonFinite(_) | Value::Bool(_) => {
                v.clone()
            }
            Value::Array(items) => metadata_list(items).ok_or_else(|| {
                format!(
                    "{k}: expected a string, number, boolean or list of strings or numbers, found {}",
                    describe(v)
                )
            })?,
            _ => {
                return Err(format!(
                    "{k}: expected a string, number, boolean or list of strings or numbers, found {}",
                    describe(v)
                ));
            }
        };
        out.push((k.clone(), value));
    }
    Ok(Value::Object(out))
}

/// A list for the union's list members: strictly `list[str]`, `list[int]` or
/// `list[float]` as written; else lax `list[int]`, then lax `list[float]`, converted.
fn metadata_list<'a>(items: &[Value<'a>]) -> Option<Value<'a>> {
    let all = |f: fn(&Value) -> bool| items.iter().all(f);
    if all(|v| matches!(v, Value::Str(_)))
        || all(|v| matches!(v, Value::Number { float: false, .. }))
    {
        return Some(Value::Array(items.to_vec()));
    }
    if all(|v| matches!(v, Value::Number { .. } | Value::NonFinite(_))) {
        return Some(Value::Array(items.iter().map(as_float_value).collect()));
    }
    if let Ok(ints) = items.iter().map(to_int).collect::<Result<Vec<_>, _>>() {
        return Some(Value::Array(
            items
                .iter()
                .zip(ints)
                .map(|(v, i)| Value::Number {
                    text: match (i, v) {
                        (Int::Fits(i), _) => i.to_string().into(),
                        // Beyond i128 only a string gets here: its digits, as Python's int.
                        (Int::Huge { negative }, Value::Str(s)) => {
                            huge_int_text(s, negative).into()
                        }
                        (Int::Huge { .. }, other) => other_text(other).into(),
                    },
                    float: false,
                })
                .collect(),
        ));
    }
    let floats = items
        .iter()
        .map(to_float)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some(Value::Array(floats.into_iter().map(float_value).collect()))
}

/// The digits of an integer string beyond i128, without sign, zeros or underscores.
fn huge_int_text(s: &str, negative: bool) -> String {
    let digits: String = s
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let digits = digits.trim_start_matches('0');
    format!("{}{digits}", if negative { "-" } else { "" })
}

fn other_text(v: &Value) -> String {
    let mut s = String::new();
    v.write(&mut s);
    s
}

fn as_float_value<'a>(v: &Value<'a>) -> Value<'a> {
    match v {
        Value::Number { float: false, text } => float_value(parse_f64(text)),
        other => other.clone(),
    }
}

/// A float as a value whose text Python reads back as the same float.
fn float_value(f: f64) -> Value<'static> {
    if !f.is_finite() {
        return Value::NonFinite(f);
    }
    let mut buf = ryu::Buffer::new();
    Value::Number {
        text: buf.format_finite(f).to_owned().into(),
        float: true,
    }
}

#[cfg(test)]
mod tests {
    //! Each coercion and each refusal, with the values pydantic 2 gives for them (checked
    //! against Kura's models by `tests/kura_differential.rs`).
    use super::*;
    use crate::datetime::format_datetime;
    use crate::jsonl::value::parse;

    fn int(json: &str) -> Result<Int, String> {
        to_int(&parse(json).unwrap())
    }
    fn float(json: &str) -> Result<f64, String> {
        to_float(&parse(json).unwrap())
    }
    fn datetime(json: &str) -> Result<DateTime, String> {
        to_datetime(&parse(json).unwrap())
    }
    fn text(t: DateTime) -> String {
        let mut s = String::new();
        format_datetime(t, &mut s);
        s
    }

    #[test]
    fn ints_from_integers_whole_floats_booleans_and_numeric_strings() {
        for (json, want) in [
            ("3", 3),
            ("-0", 0),
            ("3.0", 3),
            ("5e0", 5),
            ("true", 1),
            ("false", 0),
            (r#""3""#, 3),
            (r#"" 3 ""#, 3),
            (r#""+3""#, 3),
            (r#""1_0""#, 10),
            (r#""3.00""#, 3),
            (r#""-0""#, 0),
        ] {
            assert_eq!(int(json), Ok(Int::Fits(want)), "{json}");
        }
        assert_eq!(
            int("18446744073709551616").unwrap().narrow::<i64>("int64"),
            Err("integer 18446744073709551616 out of range for int64".into())
        );
        assert_eq!(int(&"9".repeat(60)), Ok(Int::Huge { negative: false }));
    }

    #[test]
    fn ints_refused() {
        for (json, words) in [
            ("3.5", "fractional part"),
            ("NaN", "finite number"),
            ("-Infinity", "finite number"),
            ("1e400", "finite number"),
            ("1e19", "too large"),
            (r#""3.5""#, "unable to parse string"),
            (r#""1__0""#, "unable to parse string"),
            (r#""_1""#, "unable to parse string"),
            (r#""1e0""#, "unable to parse string"),
            (r#""0x3""#, "unable to parse string"),
            (r#""""#, "unable to parse string"),
            ("null", "expected an integer"),
            ("[1]", "expected an integer"),
            ("{}", "expected an integer"),
        ] {
            let e = int(json).unwrap_err();
            assert!(e.contains(words), "{json}: {e}");
        }
    }

    #[test]
    fn ranges_say_which_bound() {
        assert_eq!(Int::Fits(1).check_range(1, 5), Ok(()));
        assert_eq!(Int::Fits(5).check_range(1, 5), Ok(()));
        assert!(
            Int::Fits(0)
                .check_range(1, 5)
                .unwrap_err()
                .contains("greater than or equal to 1")
        );
        assert!(
            Int::Fits(6)
                .check_range(1, 5)
                .unwrap_err()
                .contains("less than or equal to 5")
        );
        assert!(Int::Huge { negative: true }.check_range(1, 5).is_err());
        assert!(Int::Huge { negative: false }.check_range(1, 5).is_err());
    }

    #[test]
    fn floats_from_numbers_booleans_and_strings() {
        for (json, want) in [
            ("1", 1.0),
            ("-0", 0.0),
            ("1e400", f64::INFINITY),
            ("Infinity", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
            ("true", 1.0),
            (r#""2.5""#, 2.5),
            (r#"" 1e3 ""#, 1000.0),
            (r#""1_000.5""#, 1000.5),
            (r#""1.5_0""#, 1.5),
            (r#""inf""#, f64::INFINITY),
            (r#""-Infinity""#, f64::NEG_INFINITY),
            (r#""5.""#, 5.0),
            (r#"".5""#, 0.5),
        ] {
            assert_eq!(float(json), Ok(want), "{json}");
        }
        assert_eq!(float("-0.0").unwrap().to_bits(), (-0.0f64).to_bits());
        assert_eq!(float("-0").unwrap().to_bits(), 0.0f64.to_bits());
        assert!(float("NaN").unwrap().is_nan());
        assert!(float(r#""nan""#).unwrap().is_nan());
        for json in [
            r#""abc""#,
            r#""1__5""#,
            r#""+""#,
            r#""infinit""#,
            "null",
            "[]",
            "{}",
        ] {
            assert!(float(json).is_err(), "{json}");
        }
    }

    #[test]
    fn strings_only_from_strings() {
        assert_eq!(to_str(&parse(r#""a\nb""#).unwrap()), Ok("a\nb"));
        for json in ["1", "true", "null", "[]", "{}", "1.5"] {
            let e = to_str(&parse(json).unwrap()).unwrap_err();
            assert!(e.starts_with("expected a string"), "{json}: {e}");
        }
    }

    #[test]
    fn datetimes_from_iso_text() {
        for (json, want) in [
            (r#""2024-05-01T10:00:00""#, "2024-05-01T10:00:00"),
            (r#""2024-05-01 10:00:00""#, "2024-05-01T10:00:00"),
            (r#""2024-05-01t10:00""#, "2024-05-01T10:00:00"),
            (r#""2024-05-01""#, "2024-05-01T00:00:00"),
            (r#""2024-05-01T10:00:00Z""#, "2024-05-01T10:00:00Z"),
            (r#""2024-05-01T10:00:00+0200""#, "2024-05-01T10:00:00+02:00"),
            (
                r#""2024-05-01T10:00:00-05:30""#,
                "2024-05-01T10:00:00-05:30",
            ),
            (
                r#""2024-05-01T10:00:00.123456789""#,
                "2024-05-01T10:00:00.123456",
            ),
            (r#""2024-05-01T10:00:00,5""#, "2024-05-01T10:00:00.500000"),
        ] {
            assert_eq!(datetime(json).map(text), Ok(want.to_owned()), "{json}");
        }
        // An aware one is held as its UTC instant.
        let t = datetime(r#""2024-05-01T10:00:00+02:00""#).unwrap();
        assert_eq!(t.offset, Some(7200));
        assert_eq!(
            t.micros,
            datetime(r#""2024-05-01T08:00:00Z""#).unwrap().micros
        );
    }

    #[test]
    fn datetimes_from_unix_timestamps() {
        for (json, want) in [
            ("1714557600", "2024-05-01T10:00:00Z"),
            (r#""1714557600""#, "2024-05-01T10:00:00Z"),
            ("1714557600.5", "2024-05-01T10:00:00.500000Z"),
            // Rounded to the microsecond, not truncated.
            (r#""1714557600.9999999""#, "2024-05-01T10:00:01Z"),
            ("-0.0000005", "1970-01-01T00:00:00Z"),
            ("-1.0000005", "1969-12-31T23:59:58.999999Z"),
            // Past 2e10 in magnitude, milliseconds.
            ("20000000000", "2603-10-11T11:33:20Z"),
            ("20000000001", "1970-08-20T11:33:20.001000Z"),
            ("1714557600123.4567", "2024-05-01T10:00:00.123457Z"),
            ("25000000000000.5", "2762-03-21T20:26:40.000500Z"),
            // A float string needs its point first: then an exponent is fine.
            (r#""2.0e1""#, "1970-01-01T00:00:20Z"),
            (r#""1.e5""#, "1970-01-02T03:46:40Z"),
            (r#""+.5""#, "1970-01-01T00:00:00.500000Z"),
            (r#""-.5""#, "1969-12-31T23:59:59.500000Z"),
            (r#""+1714557600""#, "2024-05-01T10:00:00Z"),
        ] {
            assert_eq!(datetime(json).map(text), Ok(want.to_owned()), "{json}");
        }
    }

    #[test]
    fn datetimes_refused() {
        for json in [
            r#""1e5""#,
            r#""2e10""#,
            r#""1_000""#,
            r#"" 1""#,
            r#""1.5e400""#,
            r#""""#,
            r#"".""#,
            r#""+-1""#,
            r#""99999999999999999999""#,
            r#""2024-13-01""#,
            r#""2023-02-29""#,
            r#""2024-05-01T24:00:00""#,
            r#""2024-05-01T10:00:00+24:00""#,
            r#""2024-05-01T10""#,
            r#""2024-05-01T10:00:00.""#,
            r#""2024-05-01Z""#,
            r#""0000-01-01""#,
            "253402300800000",
            "1e16",
            "NaN",
            "true",
            "null",
            "[]",
        ] {
            let e = datetime(json).unwrap_err();
            assert!(e.starts_with("expected a datetime"), "{json}: {e}");
        }
    }

    #[test]
    fn conversation_metadata_values() {
        let ok = |json: &str| {
            let mut s = String::new();
            conversation_metadata(&parse(json).unwrap())
                .unwrap()
                .write(&mut s);
            s
        };
        assert_eq!(
            ok(r#"{"s":"x","i":1,"f":0.5,"b":true,"n":NaN,"l":["a"],"e":[]}"#),
            r#"{"s":"x","i":1,"f":0.5,"b":true,"n":NaN,"l":["a"],"e":[]}"#
        );
        // Lists only lax mode takes are converted as Kura holds them.
        assert_eq!(ok(r#"{"a":[1,"2"]}"#), r#"{"a":[1,2]}"#);
        assert_eq!(ok(r#"{"a":[1,1.5]}"#), r#"{"a":[1.0,1.5]}"#);
        assert_eq!(ok(r#"{"a":[true,1.5]}"#), r#"{"a":[1.0,1.5]}"#);
        for (json, words) in [
            (r#"{"a":null}"#, "a: expected a string, number"),
            (r#"{"a":{"b":1}}"#, "a: expected a string, number"),
            (r#"{"a":[[1]]}"#, "a: expected a string, number"),
            (r#"{"a":["x",1]}"#, "a: expected a string, number"),
            (r#"{"a":[null]}"#, "a: expected a string, number"),
            ("[]", "expected a JSON object"),
        ] {
            let e = conversation_metadata(&parse(json).unwrap()).unwrap_err();
            assert!(e.contains(words), "{json}: {e}");
        }
    }
}
