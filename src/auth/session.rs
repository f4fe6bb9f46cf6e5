//! Sessions: opaque bearer tokens whose SHA-256 is stored server-side.
//!
//! Why not JWTs: a session must die the moment the user logs out, is disabled or resets
//! their password. A signed stateless token stays valid until it expires unless every
//! check consults a revocation list — which is a session table with extra steps. A lookup
//! by a unique indexed hash is cheap, and revocation is a DELETE.

use std::time::Duration;

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};
use axum_extra::extract::cookie::Cookie;
use axum_extra::headers::authorization::Bearer;
use axum_extra::headers::{Authorization, HeaderMapExt};

use crate::auth::token::{looks_like_token, token_hash};
use crate::store::{AuditEvent, SessionInfo, Store, StoreResult, User, UserId};

pub const SESSION_COOKIE: &str = "session";
pub const RESET_COOKIE: &str = "reset_token";

/// How stale `last_seen_at` may get before a request refreshes it, at most: a write per
/// session per minute is plenty against a 30-minute idle timeout.
const TOUCH_EVERY_SECS: i64 = 60;

/// How stale `last_seen_at` may get, in whole seconds, before a request refreshes it: a
/// quarter of the idle timeout, at most a minute, at least a second. A fixed minute let
/// sessions under a one-minute idle timeout die while in use (issue 14). A request leaves
/// the clock less than `touch_every` seconds old, so a session used at least once every
/// idle timeout minus `touch_every` seconds never idles out, and a busy one costs at most
/// one write per `touch_every`.
pub fn touch_every(idle_timeout: Duration) -> i64 {
    (idle_timeout.as_secs() / 4).clamp(1, TOUCH_EVERY_SECS as u64) as i64
}

/// A live session: its user, the hash its token is stored under, its assurance level
/// and when its user last proved themselves.
pub struct LiveSession {
    pub user: User,
    pub token_hash: String,
    pub aal: i32,
    pub proved_at: i64,
}

/// The live session `token` names at `now`: not expired, used within `idle_timeout`, its
/// user not disabled. Its idle clock is refreshed once it is `touch_every` seconds old.
pub async fn check(
    store: &dyn Store,
    token: &str,
    idle_timeout: Duration,
    now: i64,
) -> StoreResult<Option<LiveSession>> {
    let hash = token_hash(token);
    let idle = idle_timeout.as_secs() as i64;
    // The store refreshes a clock strictly older than the cut-off it is given.
    let touch_before = now - touch_every(idle_timeout) + 1;
    let row = store
        .session_user(&hash, now, now - idle, touch_before)
        .await?;
    Ok(row.map(|row| LiveSession {
        user: row.user,
        token_hash: hash,
        aal: row.aal,
        proved_at: row.proved_at,
    }))
}

/// Ends the session stored under `token_hash`, with the audit row of its ending (`event`)
/// in the same commit. Ending one that is already gone is not an error.
pub async fn close(store: &dyn Store, token_hash: &str, event: &AuditEvent<'_>) -> StoreResult<()> {
    store
        .delete_session(token_hash, std::slice::from_ref(event))
        .await
}

/// The user's live sessions, newest first, the one stored under `current_hash` marked.
pub async fn list(
    store: &dyn Store,
    user_id: UserId,
    current_hash: &str,
    idle_timeout: Duration,
    now: i64,
) -> StoreResult<Vec<SessionInfo>> {
    let idle_cutoff = now - idle_timeout.as_secs() as i64;
    store
        .list_sessions(user_id, current_hash, now, idle_cutoff)
        .await
}

/// Ends the user's session with this public id; false when they have none such (another
/// user's session is "none such" too).
pub async fn revoke(
    store: &dyn Store,
    user_id: UserId,
    public_id: &str,
    event: &AuditEvent<'_>,
) -> StoreResult<bool> {
    // A public id is 22 base64url characters (32 hex digits for a session from before
    // they existed); anything else names no session, and never reaches the database
    // (PostgreSQL refuses a NUL in text outright).
    let shaped = (1..=64).contains(&public_id.len())
        && public_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !shaped {
        return Ok(false);
    }
    store
        .revoke_session(user_id, public_id, std::slice::from_ref(event))
        .await
}

/// Ends every session of the user but the one stored under `keep_hash`; returns how many.
pub async fn revoke_others(
    store: &dyn Store,
    user_id: UserId,
    keep_hash: &str,
    event: &AuditEvent<'_>,
) -> StoreResult<u64> {
    store
        .revoke_sessions(user_id, Some(keep_hash), std::slice::from_ref(event))
        .await
}

/// The session token from `Authorization: Bearer …`, else from the session cookie;
/// anything not shaped like one of our tokens is ignored. An Authorization header of
/// another scheme, or malformed, counts as absent: the cookie is looked at.
pub fn presented_token(headers: &HeaderMap, session_cookie: &SessionCookie) -> Option<String> {
    let bearer = headers
        .typed_get::<Authorization<Bearer>>()
        .map(|auth| auth.token().trim().to_owned());
    bearer
        .or_else(|| cookie_named(headers, &session_cookie.name()))
        .filter(|t| looks_like_token(t))
}

/// The session cookie: of this host alone (`__Host-session`), or with COOKIE_DOMAIN of
/// that domain and every host under it, so one login covers its subdomains
/// (`__Secure-session`: a `__Host-` cookie may not name a domain).
#[derive(Debug, Clone, Copy)]
pub struct SessionCookie<'a> {
    pub secure: bool,
    pub domain: Option<&'a str>,
}

impl<'a> SessionCookie<'a> {
    pub fn of(settings: &'a crate::config::Settings) -> Self {
        SessionCookie {
            secure: settings.cookie_secure,
            domain: settings.cookie_domain.as_deref(),
        }
    }

    pub fn name(&self) -> String {
        match (self.secure, self.domain) {
            (true, Some(_)) => format!("__Secure-{SESSION_COOKIE}"),
            _ => cookie_name(SESSION_COOKIE, "/", self.secure),
        }
    }

    /// The `Set-Cookie` value carrying `token` (an empty one with a zero `max_age`
    /// clears it).
    pub fn set(&self, token: &str, max_age: Duration) -> HeaderValue {
        let Some(domain) = self.domain else {
            return set_cookie(SESSION_COOKIE, token, "/", max_age, self.secure);
        };
        let secure = if self.secure { "; Secure" } else { "" };
        let cookie = format!(
            "{}={token}; Domain={domain}; Path=/{secure}; HttpOnly; SameSite=Strict; Max-Age={}",
            self.name(),
            max_age.as_secs()
        );
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The name cookie `name` goes by. With `Secure` it carries a prefix the browser
/// enforces, so that no sibling subdomain and no plain-HTTP page can set one of ours:
/// `__Host-` for a cookie of the whole site (Secure, `Path=/`, no `Domain`), `__Secure-`
/// for one scoped to a path. Without `Secure` (local HTTP testing) no prefix is allowed.
pub fn cookie_name(name: &str, path: &str, secure: bool) -> String {
    match (secure, path) {
        (false, _) => name.to_owned(),
        (true, "/") => format!("__Host-{name}"),
        (true, _) => format!("__Secure-{name}"),
    }
}

/// The value of our cookie `name` (set for `path`) in the request's Cookie headers.
/// Several pairs of that name with different values — one of them tossed in by someone
/// else — are ambiguous, and count as none.
///
/// Each pair is parsed by axum-extra's cookie parser, but not gathered in its
/// `CookieJar`: a jar keeps one cookie per name (the last one parsed), so a tossed-in
/// second cookie of our name would quietly win or lose instead of making the pair
/// ambiguous. The rule is kept here, by hand.
pub fn cookie(headers: &HeaderMap, name: &str, path: &str, secure: bool) -> Option<String> {
    cookie_named(headers, &cookie_name(name, path, secure))
}

/// The value of the cookie called exactly `name`, by `cookie`'s rule.
fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == name);
    let first = values.next()?;
    let first = first.value_trimmed();
    values
        .all(|c| c.value_trimmed() == first)
        .then(|| first.to_owned())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, and Secure (with its name prefixed,
/// see `cookie_name`) unless turned off for local HTTP. A zero `max_age` clears it.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: Duration,
    secure: bool,
) -> HeaderValue {
    // Written out rather than with `cookie::Cookie`'s builder, which orders the attributes
    // its own way: these are the attributes, in the order, that the OpenAPI document and
    // the README show.
    let name = cookie_name(name, path, secure);
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{name}={value}; Path={path}{secure}; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    const PLAIN: SessionCookie = SessionCookie {
        secure: false,
        domain: None,
    };
    const SECURE: SessionCookie = SessionCookie {
        secure: true,
        domain: None,
    };

    fn parts(headers: &[(&str, &str)]) -> HeaderMap {
        let mut b = Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0.headers
    }

    #[test]
    fn bearer_wins_over_cookie_and_junk_is_ignored() {
        let t1 = crate::auth::token::new_token();
        let t2 = crate::auth::token::new_token();
        let p = parts(&[
            ("authorization", &format!("Bearer {t1}")),
            ("cookie", &format!("a=b; session={t2}")),
        ]);
        assert_eq!(presented_token(&p, &PLAIN), Some(t1));
        let p = parts(&[("cookie", &format!("a=b; session={t2}"))]);
        assert_eq!(presented_token(&p, &PLAIN), Some(t2.clone()));
        let p = parts(&[("cookie", "session=' OR 1=1 --")]);
        assert_eq!(presented_token(&p, &PLAIN), None);
        // Secure: only the prefixed name counts.
        let p = parts(&[("cookie", &format!("session={t2}"))]);
        assert_eq!(presented_token(&p, &SECURE), None);
        let p = parts(&[("cookie", &format!("__Host-session={t2}"))]);
        assert_eq!(presented_token(&p, &SECURE), Some(t2));
    }

    #[test]
    fn an_authorization_header_of_another_scheme_leaves_the_cookie_to_speak() {
        let t1 = crate::auth::token::new_token();
        let t2 = crate::auth::token::new_token();
        let cookie = format!("session={t2}");
        for other in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer\tx",
            "Bearerx y",
            "Token abc",
        ] {
            let p = parts(&[("authorization", other), ("cookie", &cookie)]);
            assert_eq!(presented_token(&p, &PLAIN), Some(t2.clone()), "{other:?}");
        }
        // The scheme is case-insensitive; a bearer of the wrong shape is no token, and
        // does not fall back to the cookie.
        let p = parts(&[("authorization", &format!("bEaReR {t1}"))]);
        assert_eq!(presented_token(&p, &PLAIN), Some(t1));
        let p = parts(&[("authorization", "Bearer nonsense"), ("cookie", &cookie)]);
        assert_eq!(presented_token(&p, &PLAIN), None);
    }

    #[test]
    fn a_second_cookie_of_the_same_name_makes_it_ambiguous() {
        let t1 = crate::auth::token::new_token();
        let t2 = crate::auth::token::new_token();
        let p = parts(&[
            ("cookie", &format!("session={t1}")),
            ("cookie", &format!("session={t2}")),
        ]);
        assert_eq!(presented_token(&p, &PLAIN), None);
        let p = parts(&[("cookie", &format!("session={t1}; session={t1}"))]);
        assert_eq!(presented_token(&p, &PLAIN), Some(t1));
    }

    #[test]
    fn the_idle_clock_steps_by_a_quarter_of_the_idle_timeout_within_a_second_and_a_minute() {
        assert_eq!(touch_every(Duration::from_secs(30 * 60)), 60);
        assert_eq!(touch_every(Duration::from_secs(4 * 60)), 60);
        assert_eq!(touch_every(Duration::from_secs(40)), 10);
        assert_eq!(touch_every(Duration::from_secs(3)), 1);
        assert_eq!(touch_every(Duration::from_millis(500)), 1);
    }

    #[test]
    fn a_session_cookie_for_a_domain_is_secure_prefixed_and_names_the_domain() {
        let shared = SessionCookie {
            secure: true,
            domain: Some("example.com"),
        };
        assert_eq!(
            shared.set("abc", Duration::from_secs(60)).to_str().unwrap(),
            "__Secure-session=abc; Domain=example.com; Path=/; Secure; HttpOnly; \
             SameSite=Strict; Max-Age=60"
        );
        let t = crate::auth::token::new_token();
        let p = parts(&[("cookie", &format!("__Secure-session={t}"))]);
        assert_eq!(presented_token(&p, &shared), Some(t.clone()));
        // The host-only name is another cookie.
        let p = parts(&[("cookie", &format!("__Host-session={t}"))]);
        assert_eq!(presented_token(&p, &shared), None);
        assert_eq!(presented_token(&p, &SECURE), Some(t));
        let local = SessionCookie {
            secure: false,
            domain: Some("example.test"),
        };
        assert_eq!(
            local.set("", Duration::ZERO).to_str().unwrap(),
            "session=; Domain=example.test; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        );
    }

    #[test]
    fn cookies_carry_the_flags() {
        let c = set_cookie("session", "abc", "/", Duration::from_secs(60), true);
        assert_eq!(
            c.to_str().unwrap(),
            "__Host-session=abc; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        let c = set_cookie(
            "reset_token",
            "abc",
            "/reset-password",
            Duration::ZERO,
            true,
        );
        assert!(c.to_str().unwrap().starts_with("__Secure-reset_token=abc;"));
        let c = set_cookie("session", "", "/", Duration::ZERO, false);
        assert_eq!(
            c.to_str().unwrap(),
            "session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        );
    }
}
