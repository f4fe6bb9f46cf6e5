//! Property tests for the domain parsers (the proptest stand-in for a `cargo fuzz` target,
//! so they run in CI on stable): on any input — arbitrary Unicode, control characters,
//! very long strings, and generated inputs that look valid — `Username`, `Email`,
//! `Phone`, `Password`, `NewPassword`, `Identifier` and `OtpCode` never panic, and what
//! they accept round-trips: parsing the canonical form again gives the same value, keys
//! are already lower-case and NFKC, and `Identifier` picks the same kind and key as the
//! dedicated parser.

use gatehouse::domain::{Email, Identifier, NewPassword, OtpCode, Password, Phone, Username};
use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization;

/// Cases per property for short inputs; the whole suite stays well under 20 s in a
/// debug build.
const CASES: u32 = 1000;
/// Cases for the very long inputs.
const LONG_CASES: u32 = 32;

/// `cases` per property; failures are reported with the shrunk input, not saved to a
/// regressions file beside the sources.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn nfkc(s: &str) -> String {
    s.nfkc().collect()
}

/// Characters that stress the parsers: ASCII controls and C1 controls, separators the
/// phone parser drops, '@' and '+' and their full-width and small forms, combining marks,
/// characters whose NFKC or case mapping changes length (ligatures, 'İ', 'ß', Kelvin
/// sign, spacing diacritics that decompose to a space), bidi controls, surrogate-adjacent
/// and non-characters, and the whole full-width block.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        2 => prop::char::range('\0', '\u{7f}'),
        1 => prop::char::range('\u{80}', '\u{9f}'),
        1 => prop::char::range('\u{300}', '\u{36f}'),
        2 => prop::char::range('\u{ff00}', '\u{ffef}'),
        2 => prop::sample::select(vec![
            '@', '+', '.', '-', '_', '(', ')', ' ', '\t', '\r', '\n', '\0', '"', '\'', '\\',
            '[', ']', '<', '>', ',', ';', ':', '%', '\u{a0}', '\u{a8}', '\u{b4}', '\u{130}',
            '\u{131}', '\u{df}', '\u{1e9e}', '\u{212a}', '\u{2126}', '\u{fb01}', '\u{fe6b}',
            '\u{ff20}', '\u{ff0b}', '\u{200b}', '\u{200d}', '\u{202e}', '\u{2028}', '\u{feff}',
            '\u{fffd}', '\u{ffff}', '\u{10ffff}', '\u{1d41a}', '\u{345}', '\u{3c2}', '\u{1fbc}',
        ]),
    ]
}

fn arbitrary_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..max).prop_map(String::from_iter)
}

/// Wraps a strategy's strings in optional whitespace on either side.
fn padded(inner: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["", " ", "  ", "\t", "\u{3000}"]),
        inner,
        prop::sample::select(vec!["", " ", "\n", "\u{a0}"]),
    )
        .prop_map(|(a, s, b)| format!("{a}{s}{b}"))
}

/// Turns some ASCII characters into their full-width forms, which NFKC maps back.
fn widen(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 && ('!'..='~').contains(&c) {
                char::from_u32(c as u32 - 0x21 + 0xff01).unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

fn username_like() -> impl Strategy<Value = String> {
    (
        "[A-Za-z0-9_.-]{1,55}",
        any::<u64>(),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(s, mask, wide)| if wide { widen(&s, mask) } else { s })
}

fn email_like() -> impl Strategy<Value = String> {
    (
        "[A-Za-z0-9._%+'!#$&*=?^`{|}~-]{1,24}",
        "[A-Za-z0-9-]{1,12}(\\.[A-Za-z0-9-]{1,8}){0,3}",
        any::<u64>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(local, domain, mask, wide)| {
            let s = format!("{local}@{domain}");
            if wide {
                widen(&s, mask)
            } else {
                s
            }
        })
}

fn phone_like() -> impl Strategy<Value = String> {
    (
        "\\+?[0-9]{6,17}",
        prop::collection::vec(
            (
                0usize..20,
                prop::sample::select(vec![' ', '-', '.', '(', ')']),
            ),
            0..4,
        ),
    )
        .prop_map(|(digits, seps)| {
            let mut s: Vec<char> = digits.chars().collect();
            for (at, c) in seps {
                s.insert(at.min(s.len()), c);
            }
            s.into_iter().collect()
        })
}

fn otp_like() -> impl Strategy<Value = String> {
    prop_oneof![
        padded("[0-9]{6}".prop_map(String::from)),
        "[0-9０-９]{5,7}".prop_map(String::from),
    ]
}

/// The checks every accepted `Username` must pass; returns it for further checks.
fn check_username(raw: &str) -> Option<Username> {
    let u = Username::parse(raw).ok()?;
    let again = Username::parse(u.as_str()).expect("an accepted username re-parses");
    assert_eq!(again, u, "Username round-trip of {raw:?}");
    let n = u.as_str().chars().count();
    assert!((3..=50).contains(&n), "{u:?}");
    assert!(
        u.as_str()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')),
        "{u:?}"
    );
    assert_eq!(u.key(), u.as_str().to_ascii_lowercase(), "{u:?}");
    assert_eq!(nfkc(u.key()), u.key());
    // The key itself is a valid username with the same key.
    assert_eq!(
        Username::parse(u.key()).expect("key re-parses").key(),
        u.key()
    );
    // Identifier picks the same kind and key, from the display form and from the input.
    for s in [u.as_str(), raw] {
        match Identifier::parse(s) {
            Ok(Identifier::Username(v)) => assert_eq!(v.key(), u.key(), "{s:?}"),
            other => panic!("Identifier::parse({s:?}) = {other:?}, expected a username"),
        }
    }
    Some(u)
}

fn check_email(raw: &str) -> Option<Email> {
    let e = Email::parse(raw).ok()?;
    let again = Email::parse(e.as_str()).expect("an accepted email re-parses");
    assert_eq!(again, e, "Email round-trip of {raw:?}");
    assert!(e.as_str().len() <= 254, "{e:?}");
    assert!(!e.as_str().chars().any(char::is_control), "{e:?}");
    assert!(!e.as_str().chars().any(char::is_whitespace), "{e:?}");
    assert_eq!(nfkc(e.as_str()), e.as_str(), "display is NFKC: {e:?}");
    assert_eq!(nfkc(e.key()), e.key(), "key is NFKC: {e:?}");
    let (local, domain) = e.key().rsplit_once('@').expect("the key has an '@'");
    assert!(
        domain.is_ascii() && domain.to_lowercase() == domain,
        "the key's domain is lower-case ASCII (IDNA): {e:?}"
    );
    assert!(!local.starts_with('"'), "no quoted local part: {e:?}");
    // The legacy key (of rows stored before the current normalisation) is the folded
    // display, and is given only when it differs.
    match e.legacy() {
        Some(old) => {
            assert_eq!(old.key(), nfkc(e.as_str()).to_lowercase(), "{e:?}");
            assert_ne!(old.key(), e.key(), "{e:?}");
            assert_eq!(old.as_str(), e.as_str());
        }
        None => assert_eq!(e.key(), nfkc(e.as_str()).to_lowercase(), "{e:?}"),
    }
    // An accepted address is also found by lookups, under the same keys.
    assert_eq!(Email::parse_lookup(raw).as_ref(), Ok(&e), "{raw:?}");
    for s in [e.as_str(), raw] {
        match Identifier::parse(s) {
            Ok(Identifier::Email(v)) => assert_eq!(v.key(), e.key(), "{s:?}"),
            other => panic!("Identifier::parse({s:?}) = {other:?}, expected an email"),
        }
    }
    Some(e)
}

fn check_phone(raw: &str) -> Option<Phone> {
    let p = Phone::parse(raw).ok()?;
    let again = Phone::parse(p.as_str()).expect("an accepted phone re-parses");
    assert_eq!(again, p, "Phone round-trip of {raw:?}");
    let digits = p.as_str().strip_prefix('+').expect("E.164 starts with +");
    assert!((8..=15).contains(&digits.len()), "{p:?}");
    assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{p:?}");
    assert!(!digits.starts_with('0'), "{p:?}");
    for s in [p.as_str(), raw] {
        match Identifier::parse(s) {
            Ok(Identifier::Phone(v)) => assert_eq!(v, p, "{s:?}"),
            other => panic!("Identifier::parse({s:?}) = {other:?}, expected a phone"),
        }
    }
    Some(p)
}

fn check_identifier(raw: &str) {
    let Ok(id) = Identifier::parse(raw) else {
        return;
    };
    // Each kind agrees with its own parser.
    match &id {
        Identifier::Username(u) => assert_eq!(Username::parse(raw).as_ref(), Ok(u)),
        Identifier::Email(e) => {
            assert_eq!(Email::parse_lookup(raw).as_ref(), Ok(e));
            // What registration accepts, lookups key the same way.
            if let Ok(new) = Email::parse(raw) {
                assert_eq!(&new, e, "{raw:?}");
            }
        }
        Identifier::Phone(p) => assert_eq!(Phone::parse(raw).as_ref(), Ok(p)),
    }
    // The key is canonical: parsing it again gives the same kind and key. (Lower-casing
    // may turn an accepted address into one `email_address` refuses — 'İ' becomes 'i'
    // and a combining dot — so for an email that much is only checked when it parses.)
    match Identifier::parse(id.key()) {
        Ok(again) => {
            assert_eq!(
                std::mem::discriminant(&again),
                std::mem::discriminant(&id),
                "{raw:?}"
            );
            assert_eq!(again.key(), id.key(), "{raw:?}");
        }
        Err(e) => assert!(
            matches!(id, Identifier::Email(_)),
            "key {:?} of {raw:?} does not re-parse: {e}",
            id.key()
        ),
    }
}

fn check_passwords(raw: &str) {
    if let Ok(p) = Password::parse("password", raw.to_owned()) {
        assert_eq!(p.expose(), raw, "nothing is trimmed or truncated");
        let again = Password::parse("password", p.expose().to_owned()).expect("re-parses");
        assert_eq!(again.expose(), p.expose());
    }
    let user = Username::parse("alice").expect("a username");
    let email = Email::parse("alice@example.com").expect("an email");
    let phone = Phone::parse("+14155550101").expect("a phone");
    for (u, e, ph) in [
        (None, None, None),
        (Some(&user), Some(&email), Some(&phone)),
    ] {
        if let Ok(p) = NewPassword::parse("new_password", raw.to_owned(), u, e, ph) {
            let p = p.into_password();
            assert_eq!(p.expose(), raw, "nothing is trimmed or truncated");
            assert!((8..=256).contains(&raw.chars().count()));
            let again = NewPassword::parse("new_password", p.expose().to_owned(), u, e, ph)
                .expect("an accepted new password re-parses");
            assert_eq!(again.into_password().expose(), raw);
            // Any acceptable new password is also acceptable at login.
            assert!(Password::parse("password", raw.to_owned()).is_ok());
        }
    }
}

fn check_otp(raw: &str) {
    if let Ok(code) = OtpCode::parse(raw) {
        assert_eq!(code.expose().len(), 6);
        assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(
            OtpCode::parse(code.expose()).expect("re-parses").expose(),
            code.expose()
        );
        assert!(!format!("{code:?}").contains(code.expose()));
    }
}

/// Every parser on one input; none may panic.
fn check_all(raw: &str) {
    check_username(raw);
    check_email(raw);
    check_phone(raw);
    check_identifier(raw);
    check_passwords(raw);
    check_otp(raw);
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn arbitrary_strings_never_panic_and_round_trip(raw in arbitrary_string(80)) {
        check_all(&raw);
    }

    #[test]
    fn arbitrary_padded_strings_never_panic_and_round_trip(raw in padded(arbitrary_string(40))) {
        check_all(&raw);
    }

    #[test]
    fn username_like_inputs_round_trip(raw in padded(username_like())) {
        check_all(&raw);
        // Plain ASCII names of a valid length and alphabet are always accepted.
        let trimmed = raw.trim();
        if trimmed.is_ascii() && (3..=50).contains(&trimmed.len()) {
            prop_assert!(check_username(&raw).is_some(), "{raw:?}");
        }
    }

    #[test]
    fn email_like_inputs_round_trip(raw in padded(email_like())) {
        check_all(&raw);
    }

    #[test]
    fn phone_like_inputs_round_trip(raw in padded(phone_like())) {
        check_all(&raw);
    }

    #[test]
    fn otp_like_inputs_round_trip(raw in otp_like()) {
        check_all(&raw);
        let t = raw.trim();
        let six_ascii_digits = t.len() == 6 && t.bytes().all(|b| b.is_ascii_digit());
        prop_assert_eq!(OtpCode::parse(&raw).is_ok(), six_ascii_digits, "{:?}", raw);
    }

    #[test]
    fn password_like_inputs_never_panic(raw in prop_oneof![
        arbitrary_string(300),
        "[ -~]{0,300}".prop_map(String::from),
    ]) {
        check_passwords(&raw);
    }
}

proptest! {
    #![proptest_config(config(LONG_CASES))]

    #[test]
    fn very_long_strings_never_panic(
        raw in arbitrary_string(20_000),
        repeat in prop::sample::select(vec!["a", "ａ", "1", "@", "+", " ", "\u{301}", "\0", "ﷺ"]),
        n in 0usize..70_000,
    ) {
        check_all(&raw);
        let long = repeat.repeat(n);
        check_all(&long);
        check_all(&format!("{long}@example.com"));
        check_all(&format!("+{long}"));
    }
}

/// Every code point that has a case mapping or a compatibility decomposition — planes 0
/// and 1, the CJK compatibility ideographs of plane 2 — and the tags and variation
/// selectors of plane 14, once, inside an otherwise valid username and email: a direct
/// sweep for the rare characters random search would miss, such as a case mapping that
/// leaves a key that is not its own fold. (The other planes hold none; random search
/// still visits them.)
#[test]
fn every_code_point_in_a_username_and_an_email() {
    let ranges = (0..=0x1ffff_u32)
        .chain(0x2f800..=0x2fa1f)
        .chain(0xe0000..=0xe01ef);
    for c in ranges.filter_map(char::from_u32) {
        check_username(&format!("ab{c}"));
        check_email(&format!("a{c}b@example.com"));
        check_identifier(&format!("x{c}y@example.org"));
    }
}

#[test]
fn known_look_alikes_share_a_key() {
    let key = |s: &str| Username::parse(s).map(|u| u.key().to_owned());
    for s in [
        "Admin",
        "ADMIN",
        "ａｄｍｉｎ",
        "ＡＤＭＩＮ",
        "\u{1d41a}\u{1d41d}\u{1d426}\u{1d422}\u{1d427}",
    ] {
        assert_eq!(key(s).as_deref(), Ok("admin"), "{s:?}");
    }
    // Kelvin sign and the fi ligature fold to ASCII too.
    assert_eq!(key("\u{212a}elvin").as_deref(), Ok("kelvin"));
    assert_eq!(key("\u{fb01}sh").as_deref(), Ok("fish"));
    // Cyrillic 'а' is not a look-alike NFKC removes: it is simply refused.
    assert!(Username::parse("\u{430}dmin").is_err());
    let ekey = |s: &str| Email::parse(s).map(|e| e.key().to_owned());
    assert_eq!(
        ekey("ａｄｍｉｎ＠ｅｘａｍｐｌｅ．ｃｏｍ").as_deref(),
        Ok("admin@example.com")
    );
    // The same full-width address is found the same way at login.
    assert_eq!(
        Identifier::parse("ａｄｍｉｎ＠ｅｘａｍｐｌｅ．ｃｏｍ")
            .map(|i| i.key().to_owned())
            .as_deref(),
        Ok("admin@example.com")
    );
    // One mailbox, however it is spelled: full case folding of the local part, IDNA for
    // the domain.
    for (a, b) in [
        ("STRASSE@example.com", "straße@example.com"),
        ("ΣΟΦΙΑΣ@example.com", "σοφιας@example.com"),
        ("user@bücher.example", "user@xn--bcher-kva.example"),
        ("USER@BÜCHER.EXAMPLE", "user@xn--bcher-kva.example"),
    ] {
        assert_eq!(ekey(a), ekey(b), "{a} {b}");
        assert!(ekey(a).is_ok(), "{a}");
    }
}
