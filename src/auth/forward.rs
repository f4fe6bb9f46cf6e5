//! Forward authentication: a reverse proxy (nginx `auth_request`, Caddy `forward_auth`,
//! Traefik `forwardAuth`) asks, for every request a protected app serves, whether its
//! browser has a live session here and who it belongs to. This module judges a session
//! against what the protected location requires, and builds the login redirect with the
//! URL first asked for; `routes::forward_auth` speaks HTTP.

use url::Url;

use crate::error::{ApiError, Result};
use crate::extract::AuthSession;

/// What a protected location asks of a session, from `/auth/verify`'s query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requirements {
    /// `aal=2`: signed in with a second factor.
    pub second_factor: bool,
    /// `verified=1`: the email proven.
    pub verified_email: bool,
}

impl Requirements {
    /// Reads `aal` (1 or 2) and `verified` (0 or 1, also true/false); anything else names
    /// the parameter that is wrong: the proxy's configuration is at fault, and says so.
    pub fn parse(aal: Option<&str>, verified: Option<&str>) -> Result<Self> {
        let second_factor = match aal.map(str::trim) {
            None | Some("" | "1" | "aal1") => false,
            Some("2" | "aal2") => true,
            Some(_) => return Err(ApiError::invalid("aal", "must be 1 or 2")),
        };
        let verified_email = flag("verified", verified)?;
        Ok(Requirements {
            second_factor,
            verified_email,
        })
    }

    /// The first requirement `session` does not meet.
    pub fn unmet(&self, session: &AuthSession) -> Option<ApiError> {
        if self.second_factor && session.aal < 2 {
            return Some(ApiError::SecondFactorRequired);
        }
        if self.verified_email && !session.user.email_verified {
            return Some(ApiError::EmailNotVerified);
        }
        None
    }
}

/// A yes/no query parameter: `1`/`true`/`yes` or `0`/`false`/`no` (absent or empty: no).
pub fn flag(name: &'static str, value: Option<&str>) -> Result<bool> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(_) => Err(ApiError::invalid(name, "must be 1 or 0")),
    }
}

/// What the proxy tells of the request it is asking about.
#[derive(Debug, Default, Clone, Copy)]
pub struct Forwarded<'a> {
    /// `X-Original-URL` (nginx, set by the operator): the whole URL.
    pub original_url: Option<&'a str>,
    /// `X-Forwarded-Proto` (Caddy, Traefik).
    pub proto: Option<&'a str>,
    /// `X-Forwarded-Host`.
    pub host: Option<&'a str>,
    /// `X-Forwarded-Uri`: path and query.
    pub uri: Option<&'a str>,
}

impl Forwarded<'_> {
    /// The URL the browser first asked for, when the proxy told it whole and well-formed:
    /// an absolute `http`/`https` URL with a host and no credentials in it.
    pub fn original(&self) -> Option<Url> {
        let url = match self.original_url {
            Some(whole) => Url::parse(whole.trim()).ok()?,
            None => {
                let proto = self.proto?.split(',').next()?.trim();
                let host = self.host?.split(',').next()?.trim();
                let uri = self.uri.unwrap_or("/").trim();
                if !uri.starts_with('/') || uri.starts_with("//") || host.is_empty() {
                    return None;
                }
                // The host must be a host (and port), nothing that would move the
                // authority: no path, userinfo, or query smuggled in.
                if host.contains(['/', '\\', '@', '?', '#']) {
                    return None;
                }
                Url::parse(&format!("{proto}://{host}{uri}")).ok()?
            }
        };
        let web = matches!(url.scheme(), "http" | "https");
        let plain = url.username().is_empty() && url.password().is_none();
        (web && plain && url.host().is_some()).then_some(url)
    }
}

/// Where a browser without a session is sent: the login page under `public_url`, with the
/// URL it asked for as `return_to` (the page checks it against ALLOWED_RETURN_URLS).
pub fn login_redirect(public_url: &Url, return_to: Option<&Url>) -> String {
    let mut login = public_url.clone();
    let base = public_url.path().trim_end_matches('/');
    login.set_path(&format!("{base}/ui/login"));
    login.set_query(None);
    login.set_fragment(None);
    if let Some(url) = return_to {
        login
            .query_pairs_mut()
            .append_pair("return_to", url.as_str());
    }
    login.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded<'a>(proto: &'a str, host: &'a str, uri: &'a str) -> Forwarded<'a> {
        Forwarded {
            original_url: None,
            proto: Some(proto),
            host: Some(host),
            uri: Some(uri),
        }
    }

    #[test]
    fn the_original_url_is_rebuilt_from_the_forwarded_headers() {
        let url = forwarded("https", "app.example.com", "/docs/a?b=c").original();
        assert_eq!(
            url.map(String::from).as_deref(),
            Some("https://app.example.com/docs/a?b=c")
        );
        let url = forwarded("http", "app.example.com:8081", "/").original();
        assert_eq!(
            url.map(String::from).as_deref(),
            Some("http://app.example.com:8081/")
        );
        // A list (several proxies): the first, the one nearest the browser.
        let url = forwarded("https, http", "a.example, b.example", "/x").original();
        assert_eq!(
            url.map(String::from).as_deref(),
            Some("https://a.example/x")
        );
        let whole = Forwarded {
            original_url: Some("https://app.example.com/p?q=1"),
            ..Forwarded::default()
        };
        assert_eq!(
            whole.original().map(String::from).as_deref(),
            Some("https://app.example.com/p?q=1")
        );
    }

    #[test]
    fn a_forwarded_url_that_is_not_a_plain_web_url_is_dropped() {
        for (proto, host, uri) in [
            ("javascript", "app.example.com", "/"),
            ("https", "evil.example/path", "/"),
            ("https", "user@evil.example", "/"),
            ("https", "app.example.com", "//evil.example/"),
            ("https", "app.example.com", "no-slash"),
            ("https", "", "/"),
            ("https", "app.example.com\\@evil.example", "/"),
        ] {
            assert_eq!(
                forwarded(proto, host, uri).original(),
                None,
                "{proto} {host} {uri}"
            );
        }
        for whole in [
            "javascript:alert(1)",
            "https://user:pw@app.example.com/",
            "/relative",
            "data:text/html,hi",
        ] {
            let f = Forwarded {
                original_url: Some(whole),
                ..Forwarded::default()
            };
            assert_eq!(f.original(), None, "{whole}");
        }
        assert_eq!(Forwarded::default().original(), None);
    }

    #[test]
    fn the_login_redirect_carries_the_url_first_asked_for() {
        let public = Url::parse("https://auth.example.com").unwrap();
        let back = Url::parse("https://app.example.com/a?b=c&d=e").unwrap();
        assert_eq!(
            login_redirect(&public, Some(&back)),
            "https://auth.example.com/ui/login?return_to=https%3A%2F%2Fapp.example.com%2Fa%3Fb%3Dc%26d%3De"
        );
        assert_eq!(
            login_redirect(&public, None),
            "https://auth.example.com/ui/login"
        );
        // Under a path prefix.
        let prefixed = Url::parse("https://example.com/auth/").unwrap();
        assert_eq!(
            login_redirect(&prefixed, None),
            "https://example.com/auth/ui/login"
        );
    }

    #[test]
    fn requirements_read_from_the_query() {
        assert_eq!(
            Requirements::parse(None, None).unwrap(),
            Requirements::default()
        );
        let strict = Requirements::parse(Some("2"), Some("1")).unwrap();
        assert!(strict.second_factor && strict.verified_email);
        assert!(Requirements::parse(Some("3"), None).is_err());
        assert!(Requirements::parse(None, Some("maybe")).is_err());
        assert!(flag("redirect", Some("true")).unwrap());
        assert!(!flag("redirect", Some("0")).unwrap());
    }
}
