//! Domain values parsed at the edge: a handler turns request strings into these on its
//! first line, and nothing deeper takes a raw `String` for a username, email, phone,
//! password, identifier or code.

mod email;
mod identifier;
mod otp;
mod password;
mod phone;
mod username;

pub use email::Email;
pub use identifier::Identifier;
pub use otp::OtpCode;
pub use password::{NewPassword, Password};
pub use phone::Phone;
pub use username::Username;

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;

/// Why a field was refused: which field, and a reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParseError {
    pub field: &'static str,
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ParseError {
            field,
            reason: reason.into(),
        }
    }

    /// The same refusal, for the request field `field` (a parser names the field it
    /// parses by default: `email`, `phone`).
    pub fn in_field(self, field: &'static str) -> Self {
        ParseError { field, ..self }
    }
}

/// NFKC then lower case: the form in which a username's uniqueness is decided, so that
/// `Admin`, `ADMIN` and the full-width `ａｄｍｉｎ` are one name (usernames are ASCII once
/// in NFKC, so this is full case folding for them). It was also the email key before
/// `Email`'s own normalisation, and still computes the legacy key of old rows.
pub(crate) fn fold(s: &str) -> String {
    s.nfkc().collect::<String>().to_lowercase()
}

/// Unicode's compatibility caseless form (The Unicode Standard, §3.13, D146:
/// NFKD(fold(NFKD(fold(NFD(s)))))), recomposed to NFKC so that most text keeps its
/// usual spelling. Unlike `to_lowercase` it is full case folding: `ß` and `SS`, `ς`, `σ`
/// and `Σ` each come out the same.
pub(crate) fn caseless(s: &str) -> String {
    s.nfd()
        .default_case_fold()
        .nfkd()
        .default_case_fold()
        .nfkc()
        .collect()
}

/// Refuses control characters (NUL, newlines, …) that have no place in any of our fields
/// and are the raw material of header and log injection.
pub(crate) fn reject_controls(field: &'static str, s: &str) -> Result<(), ParseError> {
    if s.chars().any(char::is_control) {
        return Err(ParseError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}
