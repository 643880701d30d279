//! One JSON value into its column, by the field's type and rule (Kura's defaults,
//! constraints, pydantic's coercions), and the fast path for lists of numbers.

use super::columns::{Col, ListCol, MsgCol, PrimCol};
use crate::Result;
use crate::jsonl::lax;
use crate::jsonl::number_block;
use crate::jsonl::value::Value;
use crate::kind::{
    DEFAULT_FACTORY, DEFAULT_JSON, JSON_TEXT, METADATA_DICT, RANGE, REQUIRED, is_json_text,
};
use arrow::datatypes::Field;

/// How a field's value is read beyond its Arrow type: Kura's defaults, constraints and
/// required-but-nullable fields, taken from the field's metadata (`crate::kind`).
#[derive(Debug, Clone, Default)]
pub(super) struct FieldRule {
    /// JSON text used when the key is absent.
    pub(super) default_text: Option<String>,
    /// A null reads as the default too (ckpt's leniency for `metadata`).
    pub(super) null_is_default: bool,
    /// Absent: a fresh `uuid4().hex`, as Kura's `Cluster.id` default factory makes.
    pub(super) default_uuid: bool,
    /// The key must be present even though its value may be null.
    pub(super) required: bool,
    /// `ge`, `le` of an integer field.
    pub(super) range: Option<(i64, i64)>,
    /// Kura's `Conversation.metadata` type: values str, int, float, bool or lists of them.
    pub(super) metadata_dict: bool,
}

impl FieldRule {
    pub(super) fn of(f: &Field) -> FieldRule {
        let m = f.metadata();
        let range = m.get(RANGE).and_then(|r| {
            let (ge, le) = r.split_once("..=")?;
            Some((ge.parse().ok()?, le.parse().ok()?))
        });
        FieldRule {
            default_text: m.get(DEFAULT_JSON).cloned(),
            null_is_default: is_json_text(f) && m.contains_key(DEFAULT_JSON),
            default_uuid: m.get(DEFAULT_FACTORY).is_some_and(|v| v == "uuid4_hex"),
            required: m.contains_key(REQUIRED),
            range,
            metadata_dict: m.get(JSON_TEXT).is_some_and(|v| v == METADATA_DICT),
        }
    }
}

/// A random `uuid4().hex` (32 lowercase hex digits, version 4), from the standard
/// library's randomly keyed hasher: an identifier, not a secret.
pub(super) fn uuid4_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn short(s: &str) -> String {
    if s.len() > 40 {
        let mut end = 40;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s.to_owned()
    }
}

pub(super) fn shown(v: &Value) -> String {
    let mut s = String::new();
    v.write(&mut s);
    format!("{} {}", v.type_name(), short(&s))
}

/// Pushes a non-null JSON value into its column with Kura's coercions and constraints;
/// returns the UTC offset when the value was an aware datetime. A column outside the
/// projection (`kept` false) may be left without the value when checking it needs no
/// conversion: its values are dropped with the line's end anyway.
pub(super) fn push_value(
    col: &mut Col,
    rule: &FieldRule,
    v: &Value,
    kept: bool,
) -> Result<Option<i32>, String> {
    match col {
        Col::Str(c) => c.push(lax::to_str(v)?),
        Col::I32(c) => {
            let n = lax::to_int(v)?;
            if let Some((ge, le)) = rule.range {
                n.check_range(ge, le)?;
            }
            c.push(n.narrow("int32")?);
        }
        Col::I64(c) => {
            let n = lax::to_int(v)?;
            if let Some((ge, le)) = rule.range {
                n.check_range(ge, le)?;
            }
            c.push(n.narrow("int64")?);
        }
        Col::F64(c) => c.push(lax::to_float(v)?),
        Col::Bool(c) => match v {
            Value::Bool(b) => c.push(*b),
            _ => return Err(format!("expected a boolean, found {}", shown(v))),
        },
        Col::Ts(c) => {
            let t = lax::to_datetime(v)?;
            c.push(t.micros);
            return Ok(t.offset);
        }
        Col::Json(_) if !kept && !rule.metadata_dict => {
            // Any object is valid: its text is not written.
            if !matches!(v, Value::Object(_)) {
                return Err(format!("expected a JSON object, found {}", shown(v)));
            }
        }
        Col::Json(c) => {
            let mut text = String::new();
            if rule.metadata_dict {
                lax::conversation_metadata(v)?.write(&mut text);
            } else if let Value::Object(_) = v {
                v.write(&mut text);
            } else {
                return Err(format!("expected a JSON object, found {}", shown(v)));
            }
            c.push(&text);
        }
        Col::StrList(l) => {
            let Value::Array(items) = v else {
                return Err(format!("expected a list of strings, found {}", shown(v)));
            };
            for (k, item) in items.iter().enumerate() {
                l.child
                    .push(lax::to_str(item).map_err(|e| format!("item {k}: {e}"))?);
            }
            l.close(true);
        }
        Col::F64List(l) => {
            let Value::Array(items) = v else {
                return Err(format!("expected a list of numbers, found {}", shown(v)));
            };
            for (k, item) in items.iter().enumerate() {
                l.child
                    .push(lax::to_float(item).map_err(|e| format!("item {k}: {e}"))?);
            }
            l.close(true);
        }
        Col::Messages(l) => {
            let Value::Array(items) = v else {
                return Err(format!("expected a list of messages, found {}", shown(v)));
            };
            for (k, item) in items.iter().enumerate() {
                push_message(&mut l.child, item).map_err(|e| format!("message {k}: {e}"))?;
            }
            l.close(true);
        }
    }
    Ok(None)
}

/// One of Kura's `Message`s: `created_at: datetime`, `role: Literal["user", "assistant"]`,
/// `content: str`; other keys are ignored.
pub(super) fn push_message(col: &mut MsgCol, v: &Value) -> Result<(), String> {
    let Value::Object(entries) = v else {
        return Err(format!("expected an object, found {}", shown(v)));
    };
    let get = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("{name}: required field is missing"))
    };
    let at = lax::to_datetime(get("created_at")?).map_err(|e| format!("created_at: {e}"))?;
    let role = lax::to_str(get("role")?).map_err(|e| format!("role: {e}"))?;
    if role != "user" && role != "assistant" {
        return Err(format!(
            "role: expected \"user\" or \"assistant\", found {:?}",
            short(role)
        ));
    }
    let content = lax::to_str(get("content")?).map_err(|e| format!("content: {e}"))?;
    col.created_at.push(at.micros);
    match at.offset {
        Some(o) => col.offset.push(o),
        None => col.offset.push_null(),
    }
    col.role.push(role);
    col.content.push(content);
    Ok(())
}

/// Reads `null` or a list of plain JSON numbers (no nested list, no `NaN`) from the start
/// of `b` into `out`, or only checks it when `out` is None, and returns where it ends (just
/// past the `null` or the `]`). None for anything else: the general path then decodes the
/// line and words the error. The list's end is found by reading it, so its bytes, most of
/// a summary line, are scanned once.
pub(super) fn number_list_end(b: &[u8], out: Option<&mut ListCol<PrimCol<f64>>>) -> Option<usize> {
    scan_number_list(b, out, true)
}

/// [`number_list_end`], with or without the 64-byte windows (without: the byte-by-byte
/// scanner alone, the reference the windows are tested against).
pub(super) fn scan_number_list(
    b: &[u8],
    mut out: Option<&mut ListCol<PrimCol<f64>>>,
    windows: bool,
) -> Option<usize> {
    if b.starts_with(b"null") {
        if let Some(l) = out {
            l.close(false);
        }
        return Some(4);
    }
    if b.first() != Some(&b'[') {
        return None;
    }
    let mut i = 1;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && is_json_whitespace(b[*i]) {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if b.get(i) == Some(&b']') {
        if let Some(l) = out {
            l.close(true);
        }
        return Some(i + 1);
    }
    loop {
        // Whole windows of numbers in the common shape first, checked 64 bytes at a time;
        // the scanner below reads what they leave (the two meet at a number's start).
        while let Some(w) = b.get(i..i + number_block::WINDOW).filter(|_| windows) {
            let Some((n, commas)) = number_block::checked_numbers(w.try_into().expect("a window"))
            else {
                break;
            };
            if let Some(l) = out.as_deref_mut() {
                let mut start = 0;
                let mut rest = commas;
                while rest != 0 {
                    let end = rest.trailing_zeros() as usize;
                    push_number(l, &w[start..end])?;
                    start = end + 1;
                    rest &= rest - 1;
                }
            }
            i += n;
        }
        skip_ws(&mut i);
        let start = i;
        i = json_number_end(b, i)?;
        if let Some(l) = out.as_deref_mut() {
            push_number(l, &b[start..i])?;
        }
        // The usual separator is a bare comma: test it before skipping whitespace.
        if b.get(i) == Some(&b',') {
            i += 1;
            continue;
        }
        skip_ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b']') => break,
            _ => return None,
        }
    }
    if let Some(l) = out {
        l.close(true);
    }
    Some(i + 1)
}

/// Pushes a valid JSON number (its grammar checked by the caller) as the nearest f64:
/// fast-float's reading, which is serde_json's with `float_roundtrip`.
#[inline]
pub(super) fn push_number(l: &mut ListCol<PrimCol<f64>>, text: &[u8]) -> Option<()> {
    let v: f64 = fast_float2::parse(text).ok()?;
    // `-0` is the integer 0 to Python: 0.0, as `lax::parse_f64` reads it.
    let v = if v == 0.0 && !text.iter().any(|c| matches!(c, b'.' | b'e' | b'E')) {
        0.0
    } else {
        v
    };
    l.child.push(v);
    Some(())
}

/// The end of the JSON number starting at `i` (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`),
/// or None when there is none.
pub(super) fn json_number_end(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += 1 + digit_run(&b[i + 1..]),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let n = digit_run(&b[i..]);
        if n == 0 {
            return None;
        }
        i += n;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digit_run(&b[i..]);
        if n == 0 {
            return None;
        }
        i += n;
    }
    Some(i)
}

/// The length of the run of ASCII digits that `b` starts with, eight bytes at a time: the
/// digits of an embedding's numbers are most of the bytes a summary line holds.
#[inline]
pub(super) fn digit_run(b: &[u8]) -> usize {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const THREES: u64 = 0x3030_3030_3030_3030;
    let mut n = 0;
    while let Some(chunk) = b.get(n..n + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // Per byte, zero exactly for '0'..='9': the high nibble is 3, and still 3 after
        // adding 6. A carry out of a byte >= 0xFA only disturbs the bytes above it, and
        // that byte is itself flagged, so the lowest flagged byte is the first non-digit.
        let flags =
            ((x & HIGH) ^ THREES) | ((x.wrapping_add(0x0606_0606_0606_0606) & HIGH) ^ THREES);
        if flags != 0 {
            return n + (flags.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + b[n..].iter().take_while(|c| c.is_ascii_digit()).count()
}

/// JSON's whitespace: space, tab, line feed, carriage return. Not the form feed or
/// vertical tab that `u8::is_ascii_whitespace` also takes, which serde_json refuses: a
/// fast path must refuse them too.
pub(super) fn is_json_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// Where the value of the one top-level `needle` key (`"embedding":`) starts in a line.
/// None sends the line down the general path (absent, or not a key of the line's own
/// object).
pub(super) fn float_list_start(line: &[u8], needle: &[u8]) -> Option<usize> {
    let pos = memchr::memmem::find(line, needle)?;
    // A key of the line's own object, not of a nested one (`"metadata": {"embedding":
    // [..]}` is the user's data) nor text inside a string.
    if !is_top_level_key(line, pos) {
        return None;
    }
    let mut start = pos + needle.len();
    while start < line.len() && is_json_whitespace(line[start]) {
        start += 1;
    }
    Some(start)
}

/// Whether the quote at `pos` opens a key of the outermost object: outside every string,
/// at nesting depth 1, right after `{` or `,`. Strings are skipped with memchr, so the
/// scan costs little next to parsing the line.
pub(super) fn is_top_level_key(line: &[u8], pos: usize) -> bool {
    let prefix = &line[..pos];
    let mut depth = 0usize;
    let mut last = 0u8; // the last structural byte outside strings
    let mut i = 0;
    while i < prefix.len() {
        match prefix[i] {
            b'"' => {
                // Skip the string, escapes included; a prefix ending inside it means `pos`
                // is inside a string.
                i += 1;
                loop {
                    // An escape at the very end leaves `i` past the prefix: `pos` is then
                    // inside the string.
                    let rest = prefix.get(i..).unwrap_or_default();
                    match memchr::memchr2(b'"', b'\\', rest) {
                        None => return false,
                        Some(k) if prefix[i + k] == b'\\' => i += k + 2,
                        Some(k) => {
                            i += k;
                            break;
                        }
                    }
                }
                last = b'"';
            }
            b'{' | b'[' => {
                depth += 1;
                last = prefix[i];
            }
            b'}' | b']' => {
                let Some(d) = depth.checked_sub(1) else {
                    return false;
                };
                depth = d;
                last = prefix[i];
            }
            c if is_json_whitespace(c) => {}
            c => last = c,
        }
        i += 1;
    }
    depth == 1 && matches!(last, b'{' | b',')
}
