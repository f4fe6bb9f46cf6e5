//! Passwords as secrets: `Password` (any presented password, for login) and `NewPassword`
//! (one that passes the policy: 8–256 characters, not among the 10,000 most common, not
//! the username or email). Every byte counts: nothing is truncated.

use std::collections::HashSet;
use std::sync::OnceLock;

use secrecy::{ExposeSecret, SecretString};

use super::{reject_controls, Email, ParseError, Username};

const MIN_CHARS: usize = 8;
const MAX_CHARS: usize = 256;

/// A password as presented at login; its `Debug` prints nothing.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

impl Password {
    pub fn parse(field: &'static str, raw: String) -> Result<Self, ParseError> {
        if raw.is_empty() {
            return Err(ParseError::new(field, "must not be empty"));
        }
        if raw.chars().count() > MAX_CHARS {
            return Err(ParseError::new(
                field,
                format!("must be at most {MAX_CHARS} characters"),
            ));
        }
        // NUL, line breaks and other control characters cannot be typed into a password
        // box; refusing them keeps them away from every hash (bcrypt stops at NUL).
        reject_controls(field, &raw)?;
        Ok(Password(SecretString::from(raw)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A password chosen at registration or reset, checked against the policy.
#[derive(Debug, Clone)]
pub struct NewPassword(Password);

impl NewPassword {
    pub fn parse(
        field: &'static str,
        raw: String,
        username: Option<&Username>,
        email: Option<&Email>,
    ) -> Result<Self, ParseError> {
        let len = raw.chars().count();
        if !(MIN_CHARS..=MAX_CHARS).contains(&len) {
            return Err(ParseError::new(
                field,
                format!("must be {MIN_CHARS} to {MAX_CHARS} characters long"),
            ));
        }
        let lower = raw.to_lowercase();
        if is_common(&lower) {
            return Err(ParseError::new(
                field,
                "is one of the most common passwords; choose another",
            ));
        }
        if username.is_some_and(|u| u.key() == lower) || email.is_some_and(|e| e.key() == lower) {
            return Err(ParseError::new(
                field,
                "must not be the same as the username or email",
            ));
        }
        Ok(NewPassword(Password::parse(field, raw)?))
    }

    pub fn into_password(self) -> Password {
        self.0
    }
}

/// The shipped list of the 10,000 most common passwords (see data/README.md).
fn is_common(lower: &str) -> bool {
    static LIST: OnceLock<HashSet<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| {
        include_str!("../../data/common-passwords.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    })
    .contains(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(p: &str) -> Result<NewPassword, ParseError> {
        let u = Username::parse("alice").unwrap();
        let e = Email::parse("alice@example.com").unwrap();
        NewPassword::parse("password", p.to_owned(), Some(&u), Some(&e))
    }

    #[test]
    fn policy_lengths() {
        assert!(new("Tr0ub4dor&3x").is_ok());
        assert!(new("Sh0rt!").is_err());
        assert!(new(&"x7Q".repeat(86)).is_err()); // 258 characters
        assert!(new(&"ü".repeat(256)).is_ok()); // characters, not bytes
    }

    #[test]
    fn refuses_common_passwords_in_any_case() {
        assert!(new("password").is_err());
        assert!(new("PASSWORD").is_err());
        assert!(new("12345678").is_err());
        assert!(new("qwertyuiop").is_err());
    }

    #[test]
    fn refuses_username_and_email() {
        let u = Username::parse("alice.smith").unwrap();
        assert!(NewPassword::parse("password", "ALICE.SMITH".into(), Some(&u), None).is_err());
        assert!(new("Alice@Example.com").is_err());
    }

    #[test]
    fn refuses_control_characters() {
        for bad in [
            "pass\0word-long",
            "line\r\nbreak-long",
            "tab\there-long",
            "c1\u{85}x-long",
        ] {
            assert!(new(bad).is_err(), "{bad:?}");
            assert!(Password::parse("password", bad.into()).is_err(), "{bad:?}");
        }
        // Other Unicode, spaces and separators are fine.
        assert!(new("pass word\u{2028}ünïcødé").is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let p = Password::parse("password", "hunter2-secret".into()).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn the_list_has_ten_thousand_entries() {
        let n = include_str!("../../data/common-passwords.txt")
            .lines()
            .count();
        assert_eq!(n, 10_000);
    }
}
