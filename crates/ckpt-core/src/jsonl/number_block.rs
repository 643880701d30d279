//! The numbers of a JSON list checked 64 bytes at a time: an embedding's numbers are most
//! of the bytes a summary line holds, and a query that does not read the embedding must
//! still check every one of them (errors and `count(*)` stay those of a full read).
//!
//! Why by hand: the JSON crates with SIMD scanners (simd-json, sonic-rs) check or build a
//! whole document, not one list inside a line whose other fields our own decoder reads;
//! what is needed here is narrow — one class of bytes, one grammar — and small enough to
//! prove equal to the byte-by-byte scanner it shortcuts (`number_list_end`'s, in
//! `decode.rs`). The bytes are classified with SSE2, the baseline of every x86-64 CPU,
//! through `safe_arch`'s safe wrappers (this crate forbids `unsafe`); elsewhere a portable
//! loop does the same. The grammar is then checked on the masks, one bit per byte, as
//! simdjson does for its structure.
//!
//! Only the common shape is taken: `-?(0|[1-9][0-9]*)(\.[0-9]+)?` numbers separated by bare
//! commas. A window with anything else where a number should be (an exponent, whitespace,
//! the list's end, a stray byte) gives back the numbers before it, and the byte-by-byte
//! scanner reads the rest: the two meet at a number's start.

/// The bytes of a window, one bit each (bit `i` for byte `i`), by class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Classes {
    digit: u64,
    zero: u64,
    dot: u64,
    minus: u64,
    comma: u64,
}

/// Bytes at a time: what one pass of the checks covers.
pub(super) const WINDOW: usize = 64;

/// Checks the numbers that `w` starts with, up to the last comma before anything outside
/// the common shape. Returns how many bytes they take (through that comma) and the
/// commas' bits, or None when no whole number and comma can be taken, or when one of them
/// breaks the grammar: the byte-by-byte scanner then reads the next number and says what
/// is wrong, if anything. `w` must start where a number starts.
#[inline]
pub(super) fn checked_numbers(w: &[u8; WINDOW]) -> Option<(usize, u64)> {
    let Classes {
        digit,
        zero,
        dot,
        minus,
        comma,
    } = classify(w);
    // The region: every byte before the first one outside the common shape, cut after
    // its last comma.
    let shape = digit | dot | minus | comma;
    let first_other = (!shape).trailing_zeros();
    let before_other = if first_other >= 64 {
        u64::MAX
    } else {
        (1u64 << first_other) - 1
    };
    let commas = comma & before_other;
    if commas == 0 {
        return None;
    }
    let last = 63 - commas.leading_zeros();
    let region = if last == 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    // `after(x)` has bit i set when byte i - 1 is of class x, `before(x)` when byte i + 1
    // is. Byte `last` is a comma, so no check needs a byte past the region.
    let after = |m: u64| m << 1;
    let before = |m: u64| m >> 1;
    let starts = (after(commas) | 1) & region;
    let minus = minus & region;
    let dot = dot & region;
    let int_starts = (starts & !minus) | after(minus);
    // In the region every byte is a digit, '.', '-' or ',', so these few checks are the
    // whole grammar: a number that starts with '.' or ',' fails the check of that byte, as
    // does whatever follows a '-' or a '.' when it is not a digit.
    let mut bad = 0;
    bad |= minus & !starts; // '-' only where a number starts
    bad |= int_starts & zero & before(digit); // no leading zero: `01`
    bad |= dot & !after(digit); // a digit before '.'
    bad |= commas & !after(digit); // a number ends with a digit: no `,,` `1.,` `-,`
    // The digits after a '.' run up to a comma: no second '.' (`1.2.3`), no '-'. Adding
    // the run's first bit to the digits carries through the run onto the byte after it.
    let fraction_starts = after(dot) & digit;
    let fraction_ends = digit.wrapping_add(fraction_starts) & !digit;
    bad |= fraction_ends & !commas;
    if bad != 0 {
        return None;
    }
    Some((last as usize + 1, commas))
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn classify(w: &[u8; WINDOW]) -> Classes {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, m128i, min_u8_m128i, move_mask_i8_m128i, set_splat_i8_m128i,
        sub_i8_m128i,
    };
    let mut c = Classes::default();
    let eq = |v: m128i, byte: u8| {
        u64::from(
            move_mask_i8_m128i(cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(byte as i8))) as u16,
        )
    };
    for (k, chunk) in w.chunks_exact(16).enumerate() {
        let v = m128i::from(<[u8; 16]>::try_from(chunk).expect("16 bytes"));
        let shift = 16 * k;
        // A digit when (byte - '0') wraps to 0..=9: then min(it, 9) is itself.
        let t = sub_i8_m128i(v, set_splat_i8_m128i(b'0' as i8));
        let digit = cmp_eq_mask_i8_m128i(min_u8_m128i(t, set_splat_i8_m128i(9)), t);
        c.digit |= u64::from(move_mask_i8_m128i(digit) as u16) << shift;
        c.zero |= eq(v, b'0') << shift;
        c.dot |= eq(v, b'.') << shift;
        c.minus |= eq(v, b'-') << shift;
        c.comma |= eq(v, b',') << shift;
    }
    c
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn classify(w: &[u8; WINDOW]) -> Classes {
    classify_bytewise(w)
}

/// The classes byte by byte: the portable path, and the reference the SSE2 one is
/// tested against.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn classify_bytewise(w: &[u8; WINDOW]) -> Classes {
    let mut c = Classes::default();
    for (i, &b) in w.iter().enumerate() {
        let bit = 1u64 << i;
        match b {
            b'0' => {
                c.zero |= bit;
                c.digit |= bit;
            }
            b'1'..=b'9' => c.digit |= bit,
            b'.' => c.dot |= bit,
            b'-' => c.minus |= bit,
            b',' => c.comma |= bit,
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn window(text: &str) -> [u8; WINDOW] {
        let mut w = [b' '; WINDOW];
        w[..text.len()].copy_from_slice(text.as_bytes());
        w
    }

    #[test]
    fn the_common_shape_is_taken_up_to_the_last_comma() {
        let (n, commas) = checked_numbers(&window("0.5,-12,0,-0.25,7")).unwrap();
        assert_eq!(n, "0.5,-12,0,-0.25,".len());
        assert_eq!(commas.count_ones(), 4);
        // Up to the first byte outside the shape: here an exponent.
        let (n, _) = checked_numbers(&window("1.5,2.5,3e4,5,")).unwrap();
        assert_eq!(n, "1.5,2.5,".len());
        // A window of digits, commas at its very end.
        let full = format!("{},", "1".repeat(WINDOW - 1));
        assert_eq!(checked_numbers(&window(&full)), Some((WINDOW, 1 << 63)));
    }

    #[test]
    fn anything_off_the_grammar_is_left_to_the_scanner() {
        for text in [
            "1e5,",
            "01,",
            "-01,",
            "1.,",
            ".5,",
            "-.5,",
            "-,",
            ",1,",
            "1,,",
            "1.2.3,",
            "1-2,",
            "--1,",
            "1..2,",
            " 1,",
            "1 ,",
            "+1,",
            "0.5,1.2.3,",
        ] {
            assert_eq!(checked_numbers(&window(text)), None, "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn sse2_classes_equal_the_bytewise_ones(bytes in proptest::collection::vec(any::<u8>(), WINDOW)) {
            let w: [u8; WINDOW] = bytes.try_into().unwrap();
            prop_assert_eq!(classify(&w), classify_bytewise(&w));
        }
    }
}
