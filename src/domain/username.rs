//! `Username`: 3–50 of `[A-Za-z0-9_.-]` after NFKC, unique ignoring case.

use unicode_normalization::UnicodeNormalization;

use super::{fold, ParseError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    display: String,
    key: String,
}

impl Username {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        const FIELD: &str = "username";
        let display: String = raw.trim().nfkc().collect();
        let len = display.chars().count();
        if !(3..=50).contains(&len) {
            return Err(ParseError::new(FIELD, "must be 3 to 50 characters long"));
        }
        if !display
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(ParseError::new(
                FIELD,
                "may contain only letters A-Z, digits, '_', '.' and '-'",
            ));
        }
        let key = fold(&display);
        Ok(Username { display, key })
    }

    /// As the user wrote it (after NFKC).
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The case-folded form the unique index is on.
    pub fn key(&self) -> &str {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names_and_folds_case() {
        let u = Username::parse("  Alice_1.x-y ").unwrap();
        assert_eq!(u.as_str(), "Alice_1.x-y");
        assert_eq!(u.key(), "alice_1.x-y");
    }

    #[test]
    fn full_width_letters_collide_with_ascii() {
        let a = Username::parse("Admin").unwrap();
        let b = Username::parse("ａｄｍｉｎ").unwrap();
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn refuses_bad_lengths_and_characters() {
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse(&"a".repeat(51)).is_err());
        assert!(Username::parse(&"a".repeat(50)).is_ok());
        for bad in ["a b c", "al@ce", "bob'--", "é_accent", "a\0bc", "+12345678"] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }
}
