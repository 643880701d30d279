//! Python's text of JSON values, as Kura's metadata encoding makes it
//! (`_serialize_metadata`: `json.dumps` of lists, `str` of the rest): `str`, `repr` and
//! `json.dumps` with their defaults, over values as `json.loads` gives them (integers of
//! any size exact). Hand-written because these are Python's formats, not JSON's: quotes,
//! `True`/`None`, float reprs and escapes differ.

use crate::{Error, Result};

/// A JSON value as Python's `json.loads` makes it: integers of any size stay exact
/// (serde_json's `Value` would round those beyond 64 bits to a float).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PyValue {
    None,
    Bool(bool),
    /// The integer's digits, as written.
    Int(String),
    Float(f64),
    Str(String),
    List(Vec<PyValue>),
    Dict(Vec<(String, PyValue)>),
}

impl PyValue {
    pub(super) fn parse(text: &str) -> Result<PyValue> {
        use serde_json::value::RawValue;
        let bad = |e: serde_json::Error| Error::config(format!("metadata is not JSON: {e}"));
        let raw = text.trim();
        Ok(match raw.as_bytes().first() {
            Some(b'n') => PyValue::None,
            Some(b't') => PyValue::Bool(true),
            Some(b'f') => PyValue::Bool(false),
            Some(b'"') => PyValue::Str(serde_json::from_str(raw).map_err(bad)?),
            Some(b'[') => PyValue::List(
                serde_json::from_str::<Vec<&RawValue>>(raw)
                    .map_err(bad)?
                    .into_iter()
                    .map(|v| PyValue::parse(v.get()))
                    .collect::<Result<_>>()?,
            ),
            Some(b'{') => PyValue::Dict(
                serde_json::from_str::<object_members::Members>(raw)
                    .map_err(bad)?
                    .0
                    .into_iter()
                    .map(|(k, v)| Ok((k, PyValue::parse(v.get())?)))
                    .collect::<Result<_>>()?,
            ),
            _ if raw.contains(['.', 'e', 'E']) => PyValue::Float(
                raw.parse()
                    .map_err(|_| Error::config(format!("metadata: {raw:?} is not a number")))?,
            ),
            _ => PyValue::Int(match raw {
                "-0" => "0".to_owned(),
                _ => raw.to_owned(),
            }),
        })
    }

    /// Python's `str(v)`.
    pub(super) fn str(&self) -> String {
        match self {
            PyValue::Str(s) => s.clone(),
            other => other.repr(),
        }
    }

    /// Python's `repr(v)`.
    fn repr(&self) -> String {
        match self {
            PyValue::None => "None".into(),
            PyValue::Bool(b) => if *b { "True" } else { "False" }.into(),
            PyValue::Int(digits) => digits.clone(),
            PyValue::Float(x) => py_float_repr(*x),
            PyValue::Str(s) => py_str_repr(s),
            PyValue::List(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(PyValue::repr)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            PyValue::Dict(pairs) => format!(
                "{{{}}}",
                pairs
                    .iter()
                    .map(|(k, v)| format!("{}: {}", py_str_repr(k), v.repr()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Python's `json.dumps(v)` with its defaults (`", "`, `": "`, ASCII only).
    pub(super) fn json_dumps(&self) -> String {
        match self {
            PyValue::None => "null".into(),
            PyValue::Bool(b) => b.to_string(),
            PyValue::Int(digits) => digits.clone(),
            PyValue::Float(x) if x.is_nan() => "NaN".into(),
            PyValue::Float(x) if x.is_infinite() => {
                if *x > 0.0 { "Infinity" } else { "-Infinity" }.into()
            }
            PyValue::Float(x) => py_float_repr(*x),
            PyValue::Str(s) => py_json_string(s),
            PyValue::List(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(PyValue::json_dumps)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            PyValue::Dict(pairs) => format!(
                "{{{}}}",
                pairs
                    .iter()
                    .map(|(k, v)| format!("{}: {}", py_json_string(k), v.json_dumps()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The members of a JSON object in order, each value as its raw text.
mod object_members {
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;

    pub struct Members<'a>(pub Vec<(String, &'a RawValue)>);

    impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Members<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                    let mut out: Vec<(String, &'de RawValue)> = Vec::new();
                    while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                        // A key given twice: the last value, in the first one's place,
                        // as a Python dict keeps it.
                        match out.iter_mut().find(|(seen, _)| *seen == k) {
                            Some(slot) => slot.1 = v,
                            None => out.push((k, v)),
                        }
                    }
                    Ok(Members(out))
                }
            }
            d.deserialize_map(V)
        }
    }
}

/// Python's `repr(float)`: the shortest digits, fixed notation for exponents -4..16.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{x:e}"); // shortest round-trip digits: "-1.2345e-5"
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("a number");
    if (-4..16).contains(&exp) {
        let s = format!("{x}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// Whether Python's `str.isprintable()` holds for `c` (so `repr` keeps it as it is):
/// not a control, format, surrogate, private-use or separator character other than the
/// space. The common ones are listed; rarer unassigned code points print as themselves.
fn py_printable(c: char) -> bool {
    let u = c as u32;
    !(u < 0x20
        || (0x7f..=0xa0).contains(&u)
        || u == 0xad
        || (0x600..=0x605).contains(&u)
        || u == 0x61c
        || u == 0x6dd
        || u == 0x70f
        || u == 0x1680
        || u == 0x180e
        || (0x2000..=0x200f).contains(&u)
        || (0x2028..=0x202f).contains(&u)
        || (0x205f..=0x2064).contains(&u)
        || (0x2066..=0x206f).contains(&u)
        || u == 0x3000
        || (0xd800..=0xf8ff).contains(&u)
        || u == 0xfeff
        || (0xfff9..=0xfffb).contains(&u)
        || (0xe0000..=0xe0fff).contains(&u)
        || (0xf0000..).contains(&u))
}

/// Python's `repr(str)`: single quotes unless the text has one and no double quote.
fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c == ' ' || py_printable(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
    out
}

/// Python's `json.dumps(s)` of a string (ASCII only).
fn py_json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_ascii() && (c as u32) >= 0x20 && c != '\u{7f}' => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_reprs() {
        for (x, want) in [
            (1.5, "1.5"),
            (1.0, "1.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (-2.5e-7, "-2.5e-07"),
            (0.1, "0.1"),
            (123456789.125, "123456789.125"),
        ] {
            assert_eq!(py_float_repr(x), want, "{x}");
        }
        let v = PyValue::parse(
            r#"{"a": [1, 2.5, "é\"x", null, true, 100000000000000000000000000000], "b": "it's", "a": -0}"#,
        )
        .unwrap();
        assert_eq!(v.repr(), r#"{'a': 0, 'b': "it's"}"#);
        let PyValue::Dict(pairs) = PyValue::parse(
            r#"{"a": [1, 2.5, "é\"x\u2028", null, true, 100000000000000000000000000000]}"#,
        )
        .unwrap() else {
            panic!("a dict")
        };
        assert_eq!(
            pairs[0].1.repr(),
            r#"[1, 2.5, 'é"x\u2028', None, True, 100000000000000000000000000000]"#
        );
        assert_eq!(
            pairs[0].1.json_dumps(),
            r#"[1, 2.5, "\u00e9\"x\u2028", null, true, 100000000000000000000000000000]"#
        );
    }
}
