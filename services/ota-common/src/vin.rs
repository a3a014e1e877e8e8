//! Vehicle identification numbers: 17 characters of the ISO 3779 alphabet
//! (digits and capital letters without I, O and Q).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vin(String);

/// The most characters of a rejected VIN a message echoes: enough to tell
/// which one it was, while a megabyte of junk stays out of errors and logs.
pub const SHOWN_CHARS: usize = 24;

/// A possibly bad VIN as messages show it: at most [`SHOWN_CHARS`]
/// characters, with `...` when it was cut.
pub fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_owned(),
    }
}

/// `vin` holds the input as [`shown`] cuts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VinError {
    #[error("invalid vin {vin:?}: must be 17 characters, got {len}")]
    Length { vin: String, len: usize },
    #[error("invalid vin {vin:?}: character {ch:?} at position {pos} is not in the ISO 3779 alphabet (0-9, A-Z without I, O, Q)")]
    Character { vin: String, ch: char, pos: usize },
}

impl Vin {
    pub fn parse(s: &str) -> Result<Self, VinError> {
        let len = s.chars().count();
        if len != 17 {
            return Err(VinError::Length { vin: shown(s), len });
        }
        if let Some((i, ch)) = s.chars().enumerate().find(|(_, c)| !is_vin_char(*c)) {
            return Err(VinError::Character {
                vin: shown(s),
                ch,
                pos: i + 1,
            });
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

fn is_vin_char(c: char) -> bool {
    c.is_ascii_digit() || (c.is_ascii_uppercase() && !matches!(c, 'I' | 'O' | 'Q'))
}

impl fmt::Display for Vin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Vin {
    type Err = VinError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_real_vin() {
        assert_eq!(
            Vin::parse("WVWZZZE1ZMP000001").unwrap().as_str(),
            "WVWZZZE1ZMP000001"
        );
    }

    #[test]
    fn rejects_wrong_length_naming_the_length() {
        let err = Vin::parse("WVWZZZ").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid vin \"WVWZZZ\": must be 17 characters, got 6"
        );
    }

    #[test]
    fn rejects_i_o_q_and_lowercase_naming_the_position() {
        for (vin, ch, pos) in [
            ("WVWZZZE1ZMP00000I", 'I', 17),
            ("OVWZZZE1ZMP000001", 'O', 1),
            ("WVWZZQE1ZMP000001", 'Q', 6),
            ("wVWZZZE1ZMP000001", 'w', 1),
        ] {
            assert_eq!(
                Vin::parse(vin).unwrap_err(),
                VinError::Character {
                    vin: vin.into(),
                    ch,
                    pos
                }
            );
        }
    }

    #[test]
    fn errors_echo_a_bounded_prefix() {
        let long = format!("WVWZZZE1ZMP000001{}", "X".repeat(1_000_000));
        let err = Vin::parse(&long).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid vin \"WVWZZZE1ZMP000001XXXXXXX...\": must be 17 characters, got 1000017"
        );
        let bad_char = format!("É{}", "é".repeat(100));
        let err = Vin::parse(&bad_char).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
        assert_eq!(shown("WVWZZZ"), "WVWZZZ");
        assert_eq!(shown(&"É".repeat(25)), format!("{}...", "É".repeat(24)));
    }

    #[test]
    fn counts_characters_not_bytes() {
        let err = Vin::parse("WVWZZZE1ZMP00000É").unwrap_err();
        assert!(matches!(
            err,
            VinError::Character {
                ch: 'É',
                pos: 17,
                ..
            }
        ));
    }
}
