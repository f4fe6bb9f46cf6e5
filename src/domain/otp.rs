//! `OtpCode`: six ASCII digits, as typed by the user; a secret, never printed.

use std::fmt;

use super::ParseError;

#[derive(Clone)]
pub struct OtpCode(String);

impl OtpCode {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let code = raw.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::new("otp", "must be exactly 6 digits"));
        }
        Ok(OtpCode(code.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_digits_only() {
        assert_eq!(OtpCode::parse(" 012345 ").unwrap().expose(), "012345");
        for bad in ["12345", "1234567", "12a456", "１２３４５６", ""] {
            assert!(OtpCode::parse(bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{:?}", OtpCode::parse("123456").unwrap()).contains("123456"));
    }
}
