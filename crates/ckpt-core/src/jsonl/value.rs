//! A JSON reader with the grammar of the parser Kura's models use (pydantic's `jiter`), so
//! that a line is valid JSON to ckpt exactly when it is to Kura.
//!
//! Why not serde_json: Kura takes what serde_json refuses (`NaN`, `Infinity`, `-Infinity`,
//! numbers beyond f64 such as `1e400`, integers beyond 64 bits) and resolves duplicate keys
//! the way Python's `dict` does (the last value wins, at the first key's position), where
//! serde_json either fails or needs a typed target. A value here keeps each number's text,
//! so the coercions in `lax` see what the line said, not a rounded copy.

use std::borrow::Cow;
use std::collections::HashMap;

/// The nesting depth Kura's parser allows (its recursion limit): the line's own object
/// counts, so a line may hold 200 containers inside it.
const MAX_DEPTH: usize = 201;

const RECURSION_LIMIT: &str =
    "recursion limit exceeded: more than 200 nested lists or objects inside the line";

/// A parsed JSON value; strings and numbers borrow from the line when they can.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number as written. `float` says whether it has a fraction or an exponent (then
    /// Python reads it as a float, else as an int).
    Number {
        /// The number's text, as JSON writes it.
        text: Cow<'a, str>,
        /// Whether it has a fraction or an exponent.
        float: bool,
    },
    /// `NaN`, `Infinity` or `-Infinity`.
    NonFinite(f64),
    /// A string, unescaped.
    Str(Cow<'a, str>),
    /// A list.
    Array(Vec<Value<'a>>),
    /// Keys unique, in the order of their first occurrence, each with its last value.
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

impl Value<'_> {
    /// The JSON type's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number { float: false, .. } => "integer",
            Value::Number { float: true, .. } | Value::NonFinite(_) => "number",
            Value::Str(_) => "string",
            Value::Array(_) => "list",
            Value::Object(_) => "object",
        }
    }

    /// The value with every string and number owned: it outlives the text it was parsed
    /// from.
    pub fn into_owned(self) -> Value<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Number { text, float } => Value::Number {
                text: own(text),
                float,
            },
            Value::NonFinite(v) => Value::NonFinite(v),
            Value::Str(s) => Value::Str(own(s)),
            Value::Array(items) => Value::Array(items.into_iter().map(Value::into_owned).collect()),
            Value::Object(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (own(k), v.into_owned()))
                    .collect(),
            ),
        }
    }

    /// Writes the value as JSON text. Non-finite numbers are written as the literals Kura
    /// reads back (`NaN`, `Infinity`, `-Infinity`).
    pub fn write(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number { text, .. } => out.push_str(text),
            Value::NonFinite(v) => push_non_finite(*v, out),
            Value::Str(s) => push_json_string(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Value::Object(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_json_string(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// `NaN`, `Infinity` or `-Infinity`: JSON has no literal for them, Kura (and Python's json
/// module) read these.
pub fn push_non_finite(v: f64, out: &mut String) {
    out.push_str(if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    });
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(s: &str, out: &mut String) {
    // serde_json's escaping: the shortest valid JSON string for any text. It escapes only
    // quotes, backslashes and control characters, so text without them (most keys and
    // values) is written as it is, without serde_json's allocation.
    if !s.bytes().any(|c| c < 0x20 || c == b'"' || c == b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    out.push_str(&serde_json::to_string(s).expect("a string serialises"));
}

/// A syntax error: what is wrong, the 1-based byte column where it was found, and the
/// key of the line's own object whose value was being read then (None between keys, in a
/// key, or when the line is not an object), so that an error can name its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What is wrong.
    pub message: String,
    /// The 1-based byte column.
    pub column: usize,
    /// The line's key being read, if any.
    pub field: Option<String>,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid JSON: {} (column {})", self.message, self.column)
    }
}

/// Parses one whole line: a JSON value with only whitespace around it.
pub fn parse(text: &str) -> Result<Value<'_>, SyntaxError> {
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
        field: None,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i < p.b.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    /// The top-level key whose value is being read.
    field: Option<Cow<'a, str>>,
}

impl<'a> Parser<'a> {
    fn err(&self, message: &str) -> SyntaxError {
        SyntaxError {
            message: message.to_owned(),
            column: self.i + 1,
            field: self.field.as_deref().map(str::to_owned),
        }
    }

    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &str, v: Value<'a>) -> Result<Value<'a>, SyntaxError> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("expected value"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, SyntaxError> {
        match self.b.get(self.i) {
            None => Err(self.err("EOF while parsing a value")),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'N') => self.literal("NaN", Value::NonFinite(f64::NAN)),
            Some(b'I') => self.literal("Infinity", Value::NonFinite(f64::INFINITY)),
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => {
                if depth + 1 > MAX_DEPTH {
                    return Err(self.err(RECURSION_LIMIT));
                }
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::Array(items));
                        }
                        None => return Err(self.err("EOF while parsing a list")),
                        _ => return Err(self.err("expected ',' or ']' after a list element")),
                    }
                }
            }
            Some(b'{') => {
                if depth + 1 > MAX_DEPTH {
                    return Err(self.err(RECURSION_LIMIT));
                }
                self.i += 1;
                // The line's own object has a dozen keys or so: room for them at once.
                let mut entries: Vec<(Cow<'a, str>, Value<'a>)> =
                    Vec::with_capacity(if depth == 0 { 16 } else { 0 });
                // Beyond a few keys, a duplicate is found by hashing rather than scanning.
                let mut index: Option<HashMap<Cow<'a, str>, usize>> = None;
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Value::Object(entries));
                }
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return Err(self.err(if self.i >= self.b.len() {
                            "EOF while parsing an object"
                        } else {
                            "key must be a string"
                        }));
                    }
                    let key = self.string()?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return Err(self.err("expected ':' after a key"));
                    }
                    self.i += 1;
                    self.ws();
                    if depth == 0 {
                        self.field = Some(key.clone());
                    }
                    let v = self.value(depth + 1)?;
                    if depth == 0 {
                        self.field = None;
                    }
                    let at = match &index {
                        Some(ix) => ix.get(&key).copied(),
                        None => entries.iter().position(|(k, _)| *k == key),
                    };
                    match at {
                        // Python's dict: the last value, at the first key's position.
                        Some(j) => entries[j].1 = v,
                        None => {
                            if let Some(ix) = &mut index {
                                ix.insert(key.clone(), entries.len());
                            } else if entries.len() == 16 {
                                let mut ix: HashMap<Cow<'a, str>, usize> = entries
                                    .iter()
                                    .enumerate()
                                    .map(|(j, (k, _))| (k.clone(), j))
                                    .collect();
                                ix.insert(key.clone(), entries.len());
                                index = Some(ix);
                            }
                            entries.push((key, v));
                        }
                    }
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Value::Object(entries));
                        }
                        None => return Err(self.err("EOF while parsing an object")),
                        _ => return Err(self.err("expected ',' or '}' after an object value")),
                    }
                }
            }
            Some(_) => Err(self.err("expected value")),
        }
    }

    fn number(&mut self) -> Result<Value<'a>, SyntaxError> {
        let start = self.i;
        if self.b[self.i] == b'-' {
            self.i += 1;
            if self.b[self.i..].starts_with(b"Infinity") {
                self.i += "Infinity".len();
                return Ok(Value::NonFinite(f64::NEG_INFINITY));
            }
        }
        let digits = |p: &mut Self| {
            let from = p.i;
            while p.b.get(p.i).is_some_and(u8::is_ascii_digit) {
                p.i += 1;
            }
            p.i - from
        };
        match self.b.get(self.i) {
            Some(b'0') => {
                self.i += 1;
                if self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                    return Err(self.err("invalid number"));
                }
            }
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.err("invalid number")),
        }
        let mut float = false;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            float = true;
            if digits(self) == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            float = true;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(self.err("invalid number"));
            }
        }
        Ok(Value::Number {
            text: Cow::Borrowed(&self.s[start..self.i]),
            float,
        })
    }

    /// A string starting at the opening quote; borrowed when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, SyntaxError> {
        self.i += 1;
        let start = self.i;
        // The run up to the first quote or backslash, found with memchr: most strings have
        // no escape, and end there.
        let rest = &self.b[start..];
        let run = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
        // A branch-free test over the run first (it vectorises); the position only for an
        // error.
        if rest[..run].iter().fold(false, |any, c| any | (*c < 0x20)) {
            self.i += rest.iter().position(|c| *c < 0x20).expect("one is there");
            return Err(
                self.err("control character (\\u0000-\\u001F) found while parsing a string")
            );
        }
        self.i += run;
        match self.b.get(self.i) {
            None => return Err(self.err("EOF while parsing a string")),
            Some(b'"') => {
                let s = &self.s[start..self.i];
                self.i += 1;
                return Ok(Cow::Borrowed(s));
            }
            // A backslash: the string is unescaped into a copy below.
            Some(_) => {}
        }
        let mut out = String::from(&self.s[start..self.i]);
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("EOF while parsing a string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = match self.b.get(self.i) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            let hi = self.hex4()?;
                            match hi {
                                0xD800..=0xDBFF => {
                                    if !self.b[self.i..].starts_with(b"\\u") {
                                        return Err(self.err("unexpected end of hex escape"));
                                    }
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&lo) {
                                        return Err(
                                            self.err("lone leading surrogate in hex escape")
                                        );
                                    }
                                    let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                    out.push(char::from_u32(c).expect("a surrogate pair"));
                                }
                                0xDC00..=0xDFFF => {
                                    return Err(self.err("lone leading surrogate in hex escape"));
                                }
                                _ => out.push(char::from_u32(hi).expect("not a surrogate")),
                            }
                            continue;
                        }
                        _ => return Err(self.err("invalid escape")),
                    };
                    out.push(c);
                    self.i += 1;
                }
                Some(c) if *c < 0x20 => {
                    return Err(self
                        .err("control character (\\u0000-\\u001F) found while parsing a string"));
                }
                Some(_) => {
                    // Copy the run up to the next quote, escape or control character.
                    let from = self.i;
                    while self
                        .b
                        .get(self.i)
                        .is_some_and(|c| *c != b'"' && *c != b'\\' && *c >= 0x20)
                    {
                        self.i += 1;
                    }
                    out.push_str(&self.s[from..self.i]);
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.b.get(self.i) {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.err("invalid escape")),
            };
            v = v * 16 + d as u32;
            self.i += 1;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &Value) -> String {
        let mut s = String::new();
        v.write(&mut s);
        s
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_at_the_first_position() {
        let v = parse(r#"{"a":1,"b":2,"a":{"x":1,"x":[3]}}"#).unwrap();
        assert_eq!(text(&v), r#"{"a":{"x":[3]},"b":2}"#);
        // Past the size where an index is used.
        let keys: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let line = format!("{{{},\"k3\":\"last\"}}", keys.join(","));
        let Value::Object(e) = parse(&line).unwrap() else {
            panic!()
        };
        assert_eq!(e.len(), 40);
        assert_eq!(e[3].1, Value::Str("last".into()));
    }

    #[test]
    fn the_grammar_of_kuras_parser() {
        for ok in [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            "18446744073709551616",
            "-0",
            "-0.0",
            " [1, 2 ] ",
            r#""\ud83d\ude00""#,
            r#""\u0000\/""#,
            "\"a\u{7f}b\"",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "01",
            "+1",
            ".5",
            "1.",
            "-",
            "-NaN",
            "infinity",
            "[1,]",
            "{\"a\":1,}",
            "1 2",
            r#""\ud800""#,
            r#""\udc00x""#,
            r#""\x""#,
            "\"a\u{1}b\"",
            "\u{feff}1",
            "{1:2}",
            "[1",
            "\"ab",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
        let deep = |n: usize| format!("{{\"x\":{}{}}}", "[".repeat(n), "]".repeat(n));
        assert!(parse(&deep(200)).is_ok());
        assert!(parse(&deep(201)).is_err());
    }

    #[test]
    fn written_back_as_read() {
        for t in [
            r#"{"a":[1,-0.0,1e400,NaN,-Infinity],"b":"\"é\n","c":{"d":null,"e":true}}"#,
            "[]",
            "{}",
        ] {
            assert_eq!(text(&parse(t).unwrap()), t);
        }
    }
}
