//! Passwords as secrets: `Password` (any presented password, for login) and `NewPassword`
//! (one that passes the policy below). Every character counts: nothing is truncated.
//!
//! A password is hashed in Unicode NFKC (`Password::normalised`), as NIST SP 800-63B
//! advises: the same password typed with composed or decomposed accents, or with
//! full-width letters, is the same password. The policy is checked on that form too,
//! case-folded.
//!
//! The policy for a new password (registration, reset, admin set-password; never login):
//! - 8 to 256 characters (at least 8 both as typed and in NFKC, at most 256 as typed);
//! - not one of the 10,000 most common passwords;
//! - not built from the service name (`gatehouse`) or the user's own identifiers — the
//!   username, the email (whole or its local part), the phone's digits — nor from any of
//!   those words with its separators (`.`, `_`, `-`, `+`) dropped. "Built from" means: the
//!   whole password is the word, in any case, forwards or reversed, with letters written as
//!   common look-alike digits and symbols (`4`/`@` for a, `3` for e, `1`/`!`/`|` for i or l,
//!   `0` for o, `5`/`$` for s, `7`/`+` for t, `8` for b, `9`/`6` for g, `2` for z), and
//!   with any number of non-letters (digits, symbols, spaces) before and after it:
//!   `alice12345`, `!Alice2024`, `3c1l4`, `Gatehouse!`. A word merely contained in a longer
//!   passphrase (`alice likes long walks`) is fine;
//! - not made of runs of one character: refused when a single run (the same character
//!   repeated back to back) is more than half of the password (`aaaaaaaa`, `aaaaaaab12`),
//!   or when every character is in a run of three or more (`aaaabbbb`, `111222333`).

use std::collections::HashSet;
use std::sync::OnceLock;

use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use super::{caseless, reject_controls, Email, ParseError, Phone, Username};

const MIN_CHARS: usize = 8;
const MAX_CHARS: usize = 256;

/// The service's own name: the first word anyone tries for a password here.
const SERVICE_NAME: &str = "gatehouse";

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

    /// The password exactly as it was typed: what hashes made before passwords were
    /// normalised (bcrypt from the seed, early argon2id) were computed over.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The password in Unicode NFKC: what every new hash is computed over, so that an
    /// NFD (decomposed) or full-width spelling of a password verifies against the NFC one.
    /// Wiped from memory when dropped.
    pub fn normalised(&self) -> Zeroizing<String> {
        Zeroizing::new(self.expose().nfkc().collect())
    }
}

/// A password chosen at registration or reset, checked against the policy.
#[derive(Debug, Clone)]
pub struct NewPassword(Password);

impl NewPassword {
    /// Checks `raw` against the policy (see the module header) for the account with
    /// these identifiers; errors name `field` and say why, never echoing the password.
    pub fn parse(
        field: &'static str,
        raw: String,
        username: Option<&Username>,
        email: Option<&Email>,
        phone: Option<&Phone>,
    ) -> Result<Self, ParseError> {
        let length = || {
            ParseError::new(
                field,
                format!("must be {MIN_CHARS} to {MAX_CHARS} characters long"),
            )
        };
        if !(MIN_CHARS..=MAX_CHARS).contains(&raw.chars().count()) {
            return Err(length());
        }
        let password = Password::parse(field, raw)?;
        let normalised = password.normalised();
        if normalised.chars().count() < MIN_CHARS {
            return Err(length());
        }
        let folded = Zeroizing::new(caseless(&normalised));
        let chars: Zeroizing<Vec<char>> = Zeroizing::new(folded.chars().collect());
        if is_mostly_runs(&chars) {
            return Err(ParseError::new(
                field,
                "is mostly one character repeated; choose something less regular",
            ));
        }
        if is_common(&folded) || is_common(&normalised.to_lowercase()) {
            return Err(ParseError::new(
                field,
                "is one of the most common passwords; choose another",
            ));
        }
        if let Some(what) = context_word(&chars, username, email, phone) {
            return Err(ParseError::new(
                field,
                format!(
                    "is built from {what} (changing case, reversing it, swapping letters for \
                     look-alike digits or adding digits and symbols around it does not make \
                     a new password); choose another"
                ),
            ));
        }
        Ok(NewPassword(password))
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

/// Runs of one character: one run longer than half the password, or nothing but runs of
/// three or more.
fn is_mostly_runs(chars: &[char]) -> bool {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=chars.len() {
        if i == chars.len() || chars[i] != chars[start] {
            runs.push(i - start);
            start = i;
        }
    }
    let longest = runs.iter().copied().max().unwrap_or(0);
    longest * 2 > chars.len() || runs.iter().all(|&run| run >= 3)
}

/// Which of the words a new password must not be built from it is built from, if any: the
/// service name, then the user's identifiers (each also without its separators).
fn context_word(
    password: &[char],
    username: Option<&Username>,
    email: Option<&Email>,
    phone: Option<&Phone>,
) -> Option<&'static str> {
    let mut words: Vec<(&'static str, String)> = vec![("the service's name", SERVICE_NAME.into())];
    if let Some(u) = username {
        words.push(("the username", caseless(u.as_str())));
    }
    if let Some(e) = email {
        words.push(("the email address", e.key().to_owned()));
        words.push(("the email address", caseless(e.as_str())));
        if let Some((local, _)) = e.key().rsplit_once('@') {
            words.push(("the email address", local.to_owned()));
        }
    }
    if let Some(p) = phone {
        words.push((
            "the phone number",
            p.as_str().trim_start_matches('+').to_owned(),
        ));
    }
    let bare: Vec<(&'static str, String)> = words
        .iter()
        .map(|(what, w)| (*what, w.replace(['.', '_', '-', '+'], "")))
        .filter(|(_, w)| !w.is_empty())
        .collect();
    words
        .into_iter()
        .chain(bare)
        .find(|(_, word)| {
            let word: Vec<char> = word.chars().collect();
            let reversed: Vec<char> = word.iter().rev().copied().collect();
            built_from(password, &word) || built_from(password, &reversed)
        })
        .map(|(what, _)| what)
}

/// Whether `password` is `word` (both case-folded) spelled with look-alikes and wrapped in
/// non-letters: some stretch of it matches `word` character by character, and everything
/// before and after that stretch is digits, symbols or spaces.
fn built_from(password: &[char], word: &[char]) -> bool {
    let m = word.len();
    if m == 0 || m > password.len() {
        return false;
    }
    // Where the stretch may start: no letter before it; where it may end: none after it.
    let first_letter = password
        .iter()
        .position(|c| c.is_alphabetic())
        .unwrap_or(password.len());
    let last_letter_end = password
        .iter()
        .rposition(|c| c.is_alphabetic())
        .map_or(0, |i| i + 1);
    let lowest = last_letter_end.saturating_sub(m);
    let highest = first_letter.min(password.len() - m);
    (lowest..=highest).any(|start| {
        password[start..start + m]
            .iter()
            .zip(word)
            .all(|(&p, &w)| p == w || looks_like(p, w))
    })
}

/// Common "leet" spellings: `typed` written for the letter `letter`.
fn looks_like(typed: char, letter: char) -> bool {
    let letters: &[char] = match typed {
        '4' | '@' => &['a'],
        '8' => &['b'],
        '3' => &['e'],
        '9' | '6' => &['g', 'b'],
        '1' | '!' | '|' => &['i', 'l'],
        '0' => &['o'],
        '5' | '$' => &['s'],
        '7' | '+' => &['t'],
        '2' => &['z'],
        _ => &[],
    };
    letters.contains(&letter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(p: &str) -> Result<NewPassword, ParseError> {
        let u = Username::parse("alice").unwrap();
        let e = Email::parse("alice.smith@example.com").unwrap();
        let ph = Phone::parse("+14155550101").unwrap();
        NewPassword::parse("password", p.to_owned(), Some(&u), Some(&e), Some(&ph))
    }

    fn refused_because(p: &str, why: &str) {
        let err = new(p).map(|_| ()).unwrap_err();
        assert_eq!(err.field, "password", "{p:?}");
        assert!(err.reason.contains(why), "{p:?}: {err}");
        assert!(!err.reason.contains(p), "the reason echoes {p:?}");
    }

    #[test]
    fn policy_lengths() {
        assert!(new("Tr0ub4dor&3x").is_ok());
        assert!(new("Sh0rt!").is_err());
        assert!(new(&"x7Q".repeat(86)).is_err()); // 258 characters
        assert!(new(&"üö".repeat(128)).is_ok()); // characters, not bytes
                                                 // Eight typed characters that NFKC composes into four are four characters.
        assert!(new("e\u{301}a\u{301}o\u{301}u\u{301}").is_err());
    }

    #[test]
    fn refuses_common_passwords_in_any_case() {
        assert!(new("password").is_err());
        assert!(new("PASSWORD").is_err());
        assert!(new("12345678").is_err());
        assert!(new("qwertyuiop").is_err());
        // Full-width letters are their ASCII letters.
        refused_because(
            "\u{ff50}\u{ff41}\u{ff53}\u{ff53}\u{ff57}\u{ff4f}\u{ff52}\u{ff44}",
            "common",
        );
    }

    #[test]
    fn refuses_the_service_name_and_its_derivatives() {
        for p in [
            "gatehouse",
            "GateHouse",
            "gatehouse2024!",
            "#1 Gatehouse",
            "g4t3h0us3",
            "esuohetag99",
        ] {
            refused_because(p, "the service's name");
        }
        // Without an account too (as at an admin's set-password with nothing known).
        let err = NewPassword::parse("new_password", "Gatehouse123".into(), None, None, None)
            .unwrap_err();
        assert_eq!(err.field, "new_password");
    }

    #[test]
    fn refuses_the_users_identifiers_and_their_derivatives() {
        for p in [
            "alice12345",
            "!Alice2024",
            "ALICE!!!!!",
            "3c1l4_2024",
            "4l1c3-1990",
            "  alice  99",
        ] {
            refused_because(p, "the username");
        }
        for p in [
            "alice.smith@example.com",
            "Alice.Smith@Example.COM!",
            "alice.smith",
            "alicesmith99",
            "htims.ecila1",
            "@l1ce.sm1th#",
        ] {
            refused_because(p, "the email address");
        }
        for p in ["+14155550101", "14155550101!", "10105555141"] {
            refused_because(p, "the phone number");
        }
        let u = Username::parse("alice.smith").unwrap();
        assert!(
            NewPassword::parse("password", "ALICE.SMITH".into(), Some(&u), None, None).is_err()
        );
    }

    #[test]
    fn a_word_inside_a_longer_passphrase_is_fine() {
        for p in [
            "alice likes long walks",
            "gatehouse keeper of the north",
            "my number is 14155550101 ok",
            "correct horse battery",
            "Tr0ub4dor&3x",
        ] {
            assert!(new(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn refuses_single_character_runs() {
        for p in [
            "aaaaaaaa",
            "11111111",
            "AAAAaaaa",
            "aaaaaaab12",
            "xyyyyyyyyyyz",
            "aaaabbbb",
            "111222333",
        ] {
            refused_because(p, "repeated");
        }
        for p in ["aaab cdef gh", "Passwooord 2024!", "zzz top speed"] {
            assert!(new(p).is_ok(), "{p}");
        }
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
    fn the_normalised_form_is_nfkc() {
        let nfd = Password::parse("password", "cafe\u{301} \u{ff41}".into()).unwrap();
        assert_eq!(nfd.expose(), "cafe\u{301} \u{ff41}");
        assert_eq!(nfd.normalised().as_str(), "caf\u{e9} a");
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
