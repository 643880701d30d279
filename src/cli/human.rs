//! Sizes and durations as people read them: `329.3 KiB`, `1.23 s`, `2 min 3 s`.

use std::time::Duration;

/// `512 B`, `329.3 KiB`, `1.2 GiB` (powers of 1024, one decimal).
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// A size as `--bytes` asks (the exact number) or for people.
pub fn size_or_bytes(bytes: u64, exact: bool) -> String {
    if exact {
        bytes.to_string()
    } else {
        size(bytes)
    }
}

/// `0.4 ms`, `12 ms`, `1.23 s`, `2 min 3 s`, `1 h 2 min`: three significant digits below a
/// minute, whole units above.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 0.01 {
        format!("{:.1} ms", secs * 1e3)
    } else if secs < 1.0 {
        format!("{:.0} ms", secs * 1e3)
    } else if secs < 60.0 {
        // 59.996 would round to "60.00 s": shown in the next unit instead.
        let shown = format!("{secs:.2}");
        if shown != "60.00" {
            return format!("{shown} s");
        }
        "1 min 0 s".to_owned()
    } else {
        let whole = d.as_secs();
        if whole < 3600 {
            format!("{} min {} s", whole / 60, whole % 60)
        } else {
            format!("{} h {} min", whole / 3600, whole % 3600 / 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(337_203), "329.3 KiB");
        assert_eq!(size(1_288_490_189), "1.2 GiB");
        assert_eq!(size_or_bytes(337_203, true), "337203");
        assert_eq!(duration(Duration::from_micros(400)), "0.4 ms");
        assert_eq!(duration(Duration::from_millis(12)), "12 ms");
        assert_eq!(duration(Duration::from_millis(1234)), "1.23 s");
        assert_eq!(duration(Duration::from_millis(59_999)), "1 min 0 s");
        assert_eq!(duration(Duration::from_secs(123)), "2 min 3 s");
        assert_eq!(duration(Duration::from_secs(3720)), "1 h 2 min");
    }
}
