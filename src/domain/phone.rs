//! `Phone`: an E.164 number, `+` and 8–15 digits. Spaces, dashes, dots and brackets that
//! people type are dropped first; what is stored is the bare `+digits` form.

use super::ParseError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        const FIELD: &str = "phone";
        let compact: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let digits = compact.strip_prefix('+').ok_or_else(|| {
            ParseError::new(FIELD, "must be in E.164 form: '+' then 8 to 15 digits")
        })?;
        if !(8..=15).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(ParseError::new(
                FIELD,
                "must be in E.164 form: '+' then 8 to 15 digits, not starting with 0",
            ));
        }
        Ok(Phone(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_e164_and_strips_formatting() {
        assert_eq!(Phone::parse("+1234567890").unwrap().as_str(), "+1234567890");
        assert_eq!(
            Phone::parse(" +44 (20) 7946-0958 ").unwrap().as_str(),
            "+442079460958"
        );
    }

    #[test]
    fn refuses_non_e164() {
        for bad in [
            "1234567890",
            "+1234567",
            "+1234567890123456",
            "+12345abc90",
            "+0123456789",
            "+１２３４５６７８９",
            "",
        ] {
            assert!(Phone::parse(bad).is_err(), "{bad:?}");
        }
    }
}
