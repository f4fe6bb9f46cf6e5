//! `Identifier`: what a user logs in or recovers with — email, phone or username, as in
//! the seed. The three shapes cannot be confused: usernames have no '@' and no '+'.

use unicode_normalization::UnicodeNormalization;

use super::{Email, ParseError, Phone, Username};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifier {
    Email(Email),
    Phone(Phone),
    Username(Username),
}

impl Identifier {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let raw = raw.trim();
        let relabel = |e: ParseError| ParseError::new("identifier", e.reason);
        if raw.is_empty() {
            return Err(ParseError::new("identifier", "must not be empty"));
        }
        // The shape is read the way the parsers read the text: after NFKC (a full-width
        // '＠' is an '@', as it is to `Email`), and with the separators `Phone` drops
        // (so "(+44) 20 7946 0958" is a phone here as it is at registration).
        let shape: String = raw.nfkc().collect();
        if shape.contains('@') {
            Email::parse_lookup(raw)
                .map(Identifier::Email)
                .map_err(relabel)
        } else if shape
            .trim_start_matches([' ', '-', '.', '(', ')'])
            .starts_with('+')
        {
            Phone::parse(raw).map(Identifier::Phone).map_err(relabel)
        } else {
            Username::parse(raw).map(Identifier::Username).map_err(|_| {
                ParseError::new(
                    "identifier",
                    "must be an email address, an E.164 phone number or a username",
                )
            })
        }
    }

    /// The normalised form: what lookups use and what per-account rate limits are keyed
    /// on, whether or not such an account exists.
    pub fn key(&self) -> &str {
        match self {
            Identifier::Email(e) => e.key(),
            Identifier::Phone(p) => p.as_str(),
            Identifier::Username(u) => u.key(),
        }
    }

    /// The same identifier keyed as earlier versions stored it, when that differs: an
    /// email with non-ASCII characters (see `Email::legacy`). A lookup tries it too.
    pub fn legacy(&self) -> Option<Identifier> {
        match self {
            Identifier::Email(e) => e.legacy().map(Identifier::Email),
            Identifier::Phone(_) | Identifier::Username(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_kind_by_shape() {
        assert!(matches!(
            Identifier::parse("User@Example.com").unwrap(),
            Identifier::Email(_)
        ));
        assert!(matches!(
            Identifier::parse("+1234567890").unwrap(),
            Identifier::Phone(_)
        ));
        assert!(matches!(
            Identifier::parse("user123").unwrap(),
            Identifier::Username(_)
        ));
        assert_eq!(
            Identifier::parse("USER@example.com").unwrap().key(),
            "user@example.com"
        );
    }

    #[test]
    fn reads_the_shape_as_the_parsers_do() {
        // Whatever `Email` and `Phone` accept at registration, login accepts too.
        let id = Identifier::parse("ａｄｍｉｎ＠ｅｘａｍｐｌｅ．ｃｏｍ").unwrap();
        assert!(matches!(id, Identifier::Email(_)));
        assert_eq!(id.key(), "admin@example.com");
        let id = Identifier::parse("(+44) 20 7946-0958").unwrap();
        assert_eq!(
            id,
            Identifier::Phone(Phone::parse("+442079460958").unwrap())
        );
        // A full-width '+' is no more a phone here than at registration.
        assert!(Identifier::parse("＋442079460958").is_err());
    }

    #[test]
    fn only_non_ascii_emails_have_a_legacy_key() {
        for plain in ["user@example.com", "+1234567890", "user123"] {
            assert_eq!(Identifier::parse(plain).unwrap().legacy(), None, "{plain}");
        }
        let id = Identifier::parse("Straße@Bücher.example").unwrap();
        assert_eq!(id.key(), "strasse@xn--bcher-kva.example");
        assert_eq!(id.legacy().unwrap().key(), "straße@bücher.example");
        // Addresses only new accounts may not have are still looked up.
        assert!(Identifier::parse("\"quoted\"@example.com").is_ok());
    }

    #[test]
    fn errors_name_the_identifier_field() {
        for bad in ["", "x", "not an id", "+12", "a@b"] {
            assert_eq!(
                Identifier::parse(bad).unwrap_err().field,
                "identifier",
                "{bad:?}"
            );
        }
    }
}
