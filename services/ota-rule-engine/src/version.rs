//! `version_cmp(a, b)`: the ordering of dotted version strings that
//! targeting expressions use to pick vehicles below a software release.

use std::cmp::Ordering;

/// Compares two versions: the release part segment by segment, then the
/// pre-release, as semantic versioning orders them.
///
/// Two numeric segments compare as numbers ("10" > "9"), anything else as
/// text. A version with fewer segments is padded with "0", so "2.3" equals
/// "2.3.0". A `-` starts a pre-release, which comes before its release:
/// "2.3.1-rc.1" < "2.3.1", so a vehicle on a release candidate is still
/// "below 2.3.1" when a campaign targets those. Pre-releases of the same
/// release compare by their dot-separated identifiers (numbers as numbers
/// and before words, then the longer list is greater). Build metadata after
/// `+` is ignored.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let (a_release, a_pre) = split(a);
    let (b_release, b_pre) = split(b);
    release_cmp(a_release, b_release).then_with(|| match (a_pre, b_pre) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => pre_release_cmp(x, y),
    })
}

/// The release part and the pre-release, without build metadata.
fn split(version: &str) -> (&str, Option<&str>) {
    let version = version.split_once('+').map_or(version, |(v, _)| v);
    match version.split_once('-') {
        Some((release, pre)) => (release, Some(pre)),
        None => (version, None),
    }
}

fn release_cmp(a: &str, b: &str) -> Ordering {
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

fn pre_release_cmp(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        let order = match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(l), Some(r)) => match (is_number(l), is_number(r)) {
                (true, true) => cmp_numbers(l, r),
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                (false, false) => l.cmp(r),
            },
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
        check("1.a", "1.b", -1);
        check("2.x", "2.10", 1);
        check("", "0", -1);
    }

    #[test]
    fn a_pre_release_comes_before_its_release() {
        check("1.0.0-rc1", "1.0.0", -1);
        check("2.3.1-rc.1", "2.3.1", -1);
        check("2.3.1-rc.1", "2.3.0", 1);
        check("2.3-beta", "2.3.0", -1);
        check("1.0.0-rc1", "1.0.0-rc2", -1);
    }

    #[test]
    fn pre_releases_compare_identifier_by_identifier() {
        // The order semver.org gives as its example.
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
        ];
        for pair in ordered.windows(2) {
            check(pair[0], pair[1], -1);
        }
        check("1.0.0-rc.01", "1.0.0-rc.1", 0);
    }

    #[test]
    fn build_metadata_is_ignored() {
        check("1.0.0+20261123", "1.0.0", 0);
        check("1.0.0-rc.1+build.5", "1.0.0-rc.1", 0);
        check("1.0.0+exp.sha.5114f85", "1.0.1", -1);
    }
}
