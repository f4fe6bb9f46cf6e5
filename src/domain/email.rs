//! `Email`: a syntactically valid address (RFC 5322 via `email_address`, plus a dotted
//! domain), unique ignoring case.

use std::str::FromStr;

use unicode_normalization::UnicodeNormalization;

use super::{fold, reject_controls, ParseError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    display: String,
    key: String,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        const FIELD: &str = "email";
        let display: String = raw.trim().nfkc().collect();
        reject_controls(FIELD, &display)?;
        if display.is_empty() {
            return Err(ParseError::new(FIELD, "must not be empty"));
        }
        if display.len() > 254 {
            return Err(ParseError::new(FIELD, "must be at most 254 bytes long"));
        }
        let parsed = email_address::EmailAddress::from_str(&display)
            .map_err(|e| ParseError::new(FIELD, format!("is not a valid email address ({e})")))?;
        let domain = parsed.domain();
        // Addresses people can actually receive mail at: a dotted host name, no IP
        // literals, no display-name form ("Bob <bob@x.org>").
        if domain.starts_with('[')
            || !domain.contains('.')
            || domain.ends_with('.')
            || parsed.email() != display
            || display.contains(char::is_whitespace)
        {
            return Err(ParseError::new(FIELD, "is not a valid email address"));
        }
        let key = fold(&display);
        Ok(Email { display, key })
    }

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
    fn accepts_ordinary_addresses() {
        let e = Email::parse(" User.Name+tag@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "User.Name+tag@Example.COM");
        assert_eq!(e.key(), "user.name+tag@example.com");
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "plainaddress",
            "@example.com",
            "user@",
            "user@localhost",
            "user@[127.0.0.1]",
            "Bob <bob@example.com>",
            "a b@example.com",
            "user@example.com\r\nBcc: x@y.z",
            "us\0er@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn full_width_addresses_fold_to_ascii() {
        let a = Email::parse("admin@example.com").unwrap();
        let b = Email::parse("ＡＤＭＩＮ@example.com").unwrap();
        assert_eq!(a.key(), b.key());
    }
}
