//! `Email`: a syntactically valid address (RFC 5322 via `email_address`, plus a dotted
//! domain), and the key that decides when two addresses are one mailbox.
//!
//! The key is the local part in Unicode's compatibility caseless form (NFKC and full case
//! folding, so `STRASSE` and `straße`, `ΣΟΦΙΑΣ` and `σοφιας` are one local part), `@`, and
//! the domain through IDNA (UTS 46, non-transitional) in its ASCII form, lower-cased (so
//! `bücher.example` and `xn--bcher-kva.example` are one domain). What is stored and shown
//! is the address as the user typed it, after NFKC; only the key is normalised further.
//!
//! A *new* address (registration, import) must also not have a quoted local part (one
//! mailbox could be spelled with and without quotes), and neither its local part nor any
//! label of its domain may mix scripts the way look-alike addresses do: each must be one
//! script, or Latin with Han and Japanese kana, Han and Bopomofo, or Han and Hangul (UTS 39's
//! "highly restrictive" level; digits and punctuation go with any script). So `pаypal` with
//! a Cyrillic `а` is refused, in the local part, in the domain, and in the domain's
//! punycode spelling alike.
//!
//! Before these rules the key was NFKC and lower case of the whole address (`fold`), and
//! rows stored then keep that key until the upgrade pass (`crate::upgrade`) rewrites it:
//! not a SQL migration, since recomputing keys needs this Rust code. For an address whose
//! old key differs from its new one — only addresses with non-ASCII characters —
//! `legacy_key` holds the old key, lookups try both (`crate::auth::lookup`) and
//! registration treats both as taken. An address looked up
//! (`parse_lookup`: login, recovery, admin commands) is read as leniently as before, so an
//! account whose address the new rules would refuse can still be found by it.

use std::str::FromStr;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use unicode_normalization::UnicodeNormalization;
use unicode_script::Script;
use unicode_security::mixed_script::AugmentedScriptSet;

use super::{caseless, fold, reject_controls, ParseError};

const FIELD: &str = "email";

/// The `email_norm` column holds at most this many characters.
const MAX_KEY_CHARS: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    display: String,
    key: String,
    /// The key earlier versions stored for this address, when it differs from `key`.
    legacy_key: Option<String>,
}

/// What an address is read for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A new account's address: every rule applies.
    New,
    /// An address to find an account by: what earlier versions accepted is accepted.
    Lookup,
}

impl Email {
    /// An address for a new account: registration and import.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        Email::read(raw, Purpose::New)
    }

    /// An address to find an existing account by (login, recovery, admin commands). It
    /// also accepts what only the rules for new addresses refuse — quoted local parts,
    /// mixed scripts, domains IDNA refuses — since accounts stored before those rules may
    /// have such an address; no account made since can.
    pub fn parse_lookup(raw: &str) -> Result<Self, ParseError> {
        Email::read(raw, Purpose::Lookup)
    }

    fn read(raw: &str, purpose: Purpose) -> Result<Self, ParseError> {
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
        let (local, domain) = (parsed.local_part(), parsed.domain());
        let strict = purpose == Purpose::New;
        if strict && local.starts_with('"') {
            return Err(ParseError::new(
                FIELD,
                "must not have a quoted local part (\"...\"@): write the address without quotes",
            ));
        }
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
        let legacy = fold(&display);
        let ascii_domain = match domain_to_ascii(domain) {
            Some(d) => d,
            // No account made under these rules has this address: only the old key can
            // find one.
            None if !strict => {
                return Ok(Email {
                    display,
                    key: legacy,
                    legacy_key: None,
                })
            }
            None => {
                return Err(ParseError::new(
                    FIELD,
                    "has a domain that is not a valid (internationalised) host name",
                ))
            }
        };
        if strict {
            if mixes_scripts(local) {
                return Err(ParseError::new(
                    FIELD,
                    "must not mix alphabets in its local part (such as Latin and Cyrillic \
                     letters that look alike)",
                ));
            }
            if domain_to_unicode(&ascii_domain)
                .split('.')
                .any(mixes_scripts)
            {
                return Err(ParseError::new(
                    FIELD,
                    "must not mix alphabets within a part of its domain (such as Latin and \
                     Cyrillic letters that look alike)",
                ));
            }
        }
        let key = format!("{}@{ascii_domain}", caseless(local));
        if strict && key.chars().count() > MAX_KEY_CHARS {
            return Err(ParseError::new(
                FIELD,
                "must be at most 254 characters long with its domain in ASCII (punycode) form",
            ));
        }
        let legacy_key = (legacy != key).then_some(legacy);
        Ok(Email {
            display,
            key,
            legacy_key,
        })
    }

    /// As the user typed it (after NFKC): what is stored, shown and mailed to.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The normalised form the unique index is on.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The same address keyed the way earlier versions stored it (NFKC and lower case of
    /// the whole address), when that key differs from `key`: what a lookup tries as well,
    /// and what registration must also find free.
    pub fn legacy(&self) -> Option<Email> {
        self.legacy_key.as_ref().map(|key| Email {
            display: self.display.clone(),
            key: key.clone(),
            legacy_key: None,
        })
    }
}

/// The domain through UTS 46 (non-transitional, STD3 host-name rules, DNS lengths) in its
/// ASCII form; `None` when it is not a valid host name.
fn domain_to_ascii(domain: &str) -> Option<String> {
    Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::Allow,
            DnsLength::Verify,
        )
        .ok()
        .map(|d| d.into_owned())
}

/// The Unicode form of an ASCII domain `domain_to_ascii` produced: what its labels look
/// like to a reader, punycode decoded.
fn domain_to_unicode(ascii: &str) -> String {
    let (unicode, _) =
        Uts46::new().to_unicode(ascii.as_bytes(), AsciiDenyList::STD3, Hyphens::Allow);
    unicode.into_owned()
}

/// Whether `s` mixes scripts beyond UTS 39's "highly restrictive" level: not a single
/// script (characters common to all scripts, such as digits and punctuation, go with any),
/// and not Latin with one of the East Asian combinations (Han + Hiragana + Katakana, Han +
/// Bopomofo, Han + Hangul). The crate's own `detect_restriction_level` also refuses
/// anything outside identifier characters (`+`, `.` …), which addresses are full of.
fn mixes_scripts(s: &str) -> bool {
    let mut all = AugmentedScriptSet::default();
    let mut without_latin = AugmentedScriptSet::default();
    for c in s.chars() {
        let set = AugmentedScriptSet::for_char(c);
        all.intersect_with(set);
        if !set.base.contains_script(Script::Latin) {
            without_latin.intersect_with(set);
        }
    }
    let single_script = !all.is_empty();
    let latin_with_east_asian = without_latin.jpan || without_latin.hanb || without_latin.kore;
    !(single_script || latin_with_east_asian)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> String {
        Email::parse(s).unwrap().key().to_owned()
    }

    #[test]
    fn accepts_ordinary_addresses() {
        let e = Email::parse(" User.Name+tag@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "User.Name+tag@Example.COM");
        assert_eq!(e.key(), "user.name+tag@example.com");
        assert_eq!(e.legacy(), None, "an ASCII address has one key");
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
            "user@under_score.example",
            "user@-leading.example",
            "user@xn--broken-.example",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn full_width_addresses_fold_to_ascii() {
        assert_eq!(key("admin@example.com"), key("ＡＤＭＩＮ@example.com"));
    }

    #[test]
    fn unicode_and_punycode_domains_are_one_domain() {
        let e = Email::parse("User@Bücher.Example").unwrap();
        assert_eq!(
            e.as_str(),
            "User@Bücher.Example",
            "the display keeps what was typed"
        );
        assert_eq!(e.key(), "user@xn--bcher-kva.example");
        assert_eq!(key("user@XN--BCHER-KVA.example"), e.key());
        // Stored before, it was keyed on the Unicode form.
        assert_eq!(e.legacy().unwrap().key(), "user@bücher.example");
    }

    #[test]
    fn local_parts_are_case_folded_in_full() {
        assert_eq!(key("STRASSE@example.com"), key("straße@example.com"));
        assert_eq!(key("straße@example.com"), "strasse@example.com");
        assert_eq!(key("ΣΟΦΙΑΣ@example.com"), key("σοφιας@example.com"));
        assert_eq!(key("σοφιας@example.com"), key("σοφιασ@example.com"));
        // Composed and decomposed accents are one address.
        assert_eq!(key("mu\u{308}ller@example.com"), key("müller@example.com"));
        // Where the new key equals the old one there is no second key.
        assert_eq!(Email::parse("müller@example.com").unwrap().legacy(), None);
        let sharp = Email::parse("straße@example.com").unwrap();
        assert_eq!(sharp.legacy().unwrap().key(), "straße@example.com");
    }

    #[test]
    fn quoted_local_parts_are_refused_for_new_addresses_only() {
        for quoted in [
            "\"ab\"@example.com",
            "\"a@b\"@example.com",
            "\"a.b\"@example.com",
        ] {
            let err = Email::parse(quoted).unwrap_err();
            assert_eq!(err.field, "email");
            assert!(err.reason.contains("quoted"), "{quoted}: {err}");
            assert!(Email::parse_lookup(quoted).is_ok(), "{quoted}");
        }
    }

    #[test]
    fn mixed_script_look_alikes_are_refused_for_new_addresses_only() {
        for bad in [
            "p\u{430}ypal@example.com", // Cyrillic а in a Latin local part
            "user@p\u{430}ypal.com",    // … in a domain label
            "user@xn--pypal-4ve.com",   // … the same label in punycode
            "\u{3c1}aypal@example.com", // Greek ρ with Latin
        ] {
            let err = Email::parse(bad).unwrap_err();
            assert!(err.reason.contains("mix alphabets"), "{bad}: {err}");
            assert!(Email::parse_lookup(bad).is_ok(), "{bad}");
        }
        for good in [
            "иван@пример.рф",
            "ivan@пример.com",
            "σοφια@example.gr",
            "tanaka東京@example.jp",
            "山田たろう@example.jp",
            "user123+tag@bücher.example",
        ] {
            assert!(Email::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn lookups_keep_old_addresses_findable() {
        // A domain IDNA refuses can only match a row stored under the old key.
        let e = Email::parse_lookup("user@under_score.example").unwrap();
        assert_eq!(e.key(), "user@under_score.example");
        assert_eq!(e.legacy(), None);
        // Otherwise a lookup keys an address as registration does.
        let a = Email::parse_lookup("STRASSE@Bücher.example").unwrap();
        assert_eq!(a, Email::parse("STRASSE@Bücher.example").unwrap());
    }
}
