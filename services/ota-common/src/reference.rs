//! Links to this server's own resources are stored as references (a path
//! such as `/artifacts/{sha256}/fw.bin`) and made absolute with the public
//! URL where they leave the server: a record written under one public URL
//! stays valid under the next.

use std::borrow::Cow;

/// True for a path on this server (`/...`, but not a scheme-relative
/// `//host/...`, which names another server).
pub fn is_reference(url: &str) -> bool {
    url.starts_with('/') && !url.starts_with("//")
}

/// `url` as a vehicle must fetch it: references get `base` (this server's
/// public URL) in front; absolute URLs are returned as they are.
pub fn absolute<'a>(base: &str, url: &'a str) -> Cow<'a, str> {
    if is_reference(url) {
        Cow::Owned(format!("{}{url}", base.trim_end_matches('/')))
    } else {
        Cow::Borrowed(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_the_base_and_absolute_urls_stay() {
        assert_eq!(
            absolute("https://ota.example/", "/artifacts/ab/fw.bin"),
            "https://ota.example/artifacts/ab/fw.bin"
        );
        assert_eq!(
            absolute("https://ota.example", "https://cdn.example/fw.bin"),
            "https://cdn.example/fw.bin"
        );
        assert_eq!(absolute("https://ota.example", "//cdn/fw"), "//cdn/fw");
        assert!(!is_reference("fw.bin"));
    }
}
