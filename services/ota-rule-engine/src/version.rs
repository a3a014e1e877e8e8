//! `version_cmp(a, b)`: the ordering of dotted version strings that
//! targeting expressions use to pick vehicles below a software release.

use std::cmp::Ordering;

/// Compares two dotted versions segment by segment.
///
/// Two numeric segments compare as numbers ("10" > "9"), anything else as
/// text. A version with fewer segments is padded with "0", so "2.3" equals
/// "2.3.0". Pre-release suffixes get no special treatment: "1.0.0-rc1" is
/// compared to "1.0.0" as the text segments "0-rc1" and "0", and is greater.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        let (l, r) = match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (l, r) => (l.unwrap_or("0"), r.unwrap_or("0")),
        };
        let order = if is_number(l) && is_number(r) {
            cmp_numbers(l, r)
        } else {
            l.cmp(r)
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

/// [`version_cmp`] as CEL returns it: -1, 0 or 1.
pub fn version_cmp_int(a: &str, b: &str) -> i64 {
    match version_cmp(a, b) {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Compares digit strings of any length without parsing them, so a segment
/// longer than u64 can hold still orders correctly.
fn cmp_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(a: &str, b: &str, expected: i64) {
        assert_eq!(version_cmp_int(a, b), expected, "version_cmp({a:?}, {b:?})");
        assert_eq!(
            version_cmp_int(b, a),
            -expected,
            "version_cmp({b:?}, {a:?})"
        );
    }

    #[test]
    fn numeric_segments_compare_as_numbers() {
        check("2.10.0", "2.9.1", 1);
        check("2.3.1", "2.3.1", 0);
        check("2.2.0", "2.3.1", -1);
        check("10", "9", 1);
        check("01.2", "1.2", 0);
        check("1.99999999999999999999999", "1.99999999999999999999998", 1);
    }

    #[test]
    fn missing_trailing_segments_count_as_zero() {
        check("1.0", "1.0.0", 0);
        check("2.3", "2.3.0.0", 0);
        check("2.3", "2.3.1", -1);
        check("", "", 0);
    }

    #[test]
    fn text_segments_compare_as_text() {
        // "0-rc1" vs "0": not both numeric, so by text, and the longer wins.
        check("1.0.0-rc1", "1.0.0", 1);
        check("1.0.0-rc1", "1.0.0-rc2", -1);
        check("1.a", "1.b", -1);
        check("2.x", "2.10", 1);
        check("", "0", -1);
    }
}
