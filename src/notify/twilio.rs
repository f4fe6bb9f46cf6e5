//! SMS delivery through Twilio's Messages REST API.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::{Message, Notifier, NotifyError};
use crate::config::SmsSettings;

/// Most bytes of an error response read to find Twilio's explanation.
const MAX_ERROR_BODY: usize = 16 * 1024;
/// Longest provider explanation kept in an error string.
const MAX_DETAIL_CHARS: usize = 300;

/// Sends SMS as one form POST per message to `…/2010-04-01/Accounts/{SID}/Messages.json`.
pub struct TwilioNotifier {
    client: reqwest::Client,
    url: Url,
    sid: String,
    token: SecretString,
    from: String,
}

impl TwilioNotifier {
    /// Builds the notifier from configuration, or `None` when TWILIO_SID is unset.
    /// `timeout` bounds the whole request, connect to last byte.
    pub fn from_settings(s: &SmsSettings, timeout: Duration) -> Result<Option<Self>, String> {
        let Some(sid) = &s.twilio_sid else {
            return Ok(None);
        };
        let (Some(token), Some(from)) = (&s.twilio_token, &s.twilio_phone) else {
            return Err("TWILIO_SID, TWILIO_TOKEN and TWILIO_PHONE must be set together".into());
        };
        let url = messages_url(&s.twilio_api_base, sid)?;

        // Redirects are not followed: reqwest would turn the POST into a GET and drop the
        // form, and a redirect from the API means TWILIO_API_BASE is wrong.
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
        // A loopback base (a local test endpoint) must never be sent through a proxy taken
        // from the environment; real Twilio traffic still honours one.
        if is_loopback(&url) {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot set up the HTTP client for Twilio: {e}"))?;

        Ok(Some(TwilioNotifier {
            client,
            url,
            sid: sid.clone(),
            token: token.clone(),
            from: from.clone(),
        }))
    }

    /// Scheme, host and port of the API, e.g. `https://api.twilio.com`; safe to log.
    pub fn endpoint(&self) -> String {
        self.url.origin().ascii_serialization()
    }
}

#[async_trait]
impl Notifier for TwilioNotifier {
    async fn send(&self, msg: &Message) -> Result<(), NotifyError> {
        let form = [
            ("To", msg.to.as_str()),
            ("From", self.from.as_str()),
            ("Body", msg.body.as_str()),
        ];
        let response = self
            .client
            .post(self.url.clone())
            .basic_auth(&self.sid, Some(self.token.expose_secret()))
            .form(&form)
            .send()
            .await
            // Nothing was accepted (or we cannot tell): connect failures and timeouts are
            // worth retrying. The URL is dropped to keep stored errors short.
            .map_err(|e| NotifyError::Temporary(format!("Twilio unreachable: {}", chain(&e))))?;

        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // Only Twilio's own explanation is kept, never what we sent: the body has the code.
        let detail = explanation(response).await;
        let text = format!("Twilio answered {status}{detail}");
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(NotifyError::Temporary(text))
        } else {
            // 4xx (bad number, unverified sender, bad credentials) and unexpected 3xx:
            // the same request will fail the same way.
            Err(NotifyError::Permanent(text))
        }
    }

    fn name(&self) -> &'static str {
        "twilio"
    }
}

/// `{base}/2010-04-01/Accounts/{sid}/Messages.json`, keeping any path on the base and
/// ignoring a trailing slash; the SID is percent-encoded as one path segment.
fn messages_url(base: &Url, sid: &str) -> Result<Url, String> {
    if !matches!(base.scheme(), "http" | "https") {
        return Err("TWILIO_API_BASE must be an http:// or https:// URL".into());
    }
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    // Credentials go in the Authorization header; any in the base would only leak into
    // logs. Both setters fail only for URLs that cannot have them, excluded above.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.path_segments_mut()
        .map_err(|_| "TWILIO_API_BASE cannot hold a path".to_owned())?
        .pop_if_empty()
        .extend(["2010-04-01", "Accounts", sid, "Messages.json"]);
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Twilio's error document: `{"code": 21211, "message": "...", "more_info": "...", "status": 400}`.
#[derive(Deserialize)]
struct TwilioError {
    code: Option<i64>,
    message: Option<String>,
}

/// `": {message} (Twilio code N)"` from an error response, or "" when there is none.
async fn explanation(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    // Read in chunks so a huge or endless error page cannot exhaust memory.
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    let Ok(err) = serde_json::from_slice::<TwilioError>(&body) else {
        return String::new();
    };
    let mut out = String::new();
    if let Some(message) = err.message.filter(|m| !m.trim().is_empty()) {
        out.push_str(": ");
        out.extend(message.chars().take(MAX_DETAIL_CHARS));
    }
    if let Some(code) = err.code {
        out.push_str(&format!(" (Twilio code {code})"));
    }
    out
}

/// The error and its causes on one line: reqwest's top-level text alone ("error sending
/// request") does not say whether the connection was refused or timed out.
fn chain(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        String::new()
    };
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let text = match err.downcast_ref::<reqwest::Error>() {
            // reqwest's Display appends the URL; the SID in it is noise in stored errors.
            Some(re) if re.url().is_some() => strip_url_suffix(&re.to_string()),
            _ => err.to_string(),
        };
        if !text.is_empty() && !out.ends_with(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        current = err.source();
    }
    out
}

/// Drops reqwest's ` for url (…)` suffix.
fn strip_url_suffix(text: &str) -> String {
    match text.find(" for url (") {
        Some(i) => text[..i].to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Channel;
    use tokio::net::TcpListener;
    use wiremock::matchers::any;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn settings(base: &str) -> SmsSettings {
        SmsSettings {
            twilio_sid: Some("AC0123456789abcdef".into()),
            twilio_token: Some(SecretString::from("s3cret-token")),
            twilio_phone: Some("+15550001111".into()),
            twilio_api_base: Url::parse(base).unwrap(),
        }
    }

    fn message() -> Message {
        Message {
            channel: Channel::Sms,
            to: "+15552223333".into(),
            subject: "ignored".into(),
            body: "Your Gatehouse code is 493817.\nValid 10 minutes & single use.".into(),
        }
    }

    #[test]
    fn url_is_built_from_the_default_base() {
        let url = messages_url(&Url::parse("https://api.twilio.com").unwrap(), "AC1").unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
        );
        let url = messages_url(&Url::parse("https://api.twilio.com/").unwrap(), "AC1").unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
        );
    }

    #[test]
    fn url_keeps_a_path_on_the_base() {
        for base in ["http://127.0.0.1:9/twilio", "http://127.0.0.1:9/twilio/"] {
            let url = messages_url(&Url::parse(base).unwrap(), "AC1").unwrap();
            assert_eq!(
                url.as_str(),
                "http://127.0.0.1:9/twilio/2010-04-01/Accounts/AC1/Messages.json"
            );
        }
    }

    #[test]
    fn url_drops_query_credentials_and_encodes_the_sid() {
        let base = Url::parse("https://u:p@api.example.com/v?x=1#f").unwrap();
        let url = messages_url(&base, "AC/1 2").unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.example.com/v/2010-04-01/Accounts/AC%2F1%202/Messages.json"
        );
        assert!(messages_url(&Url::parse("ftp://example.com").unwrap(), "AC1").is_err());
    }

    #[test]
    fn unconfigured_sms_is_none_and_partial_is_an_error() {
        let mut s = settings("https://api.twilio.com");
        s.twilio_sid = None;
        assert!(TwilioNotifier::from_settings(&s, Duration::from_secs(1))
            .unwrap()
            .is_none());

        let mut s = settings("https://api.twilio.com");
        s.twilio_token = None;
        assert!(TwilioNotifier::from_settings(&s, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn endpoint_is_origin_only() {
        let n = TwilioNotifier::from_settings(
            &settings("https://user:pw@api.twilio.com/base/"),
            Duration::from_secs(1),
        )
        .unwrap()
        .unwrap();
        assert_eq!(n.endpoint(), "https://api.twilio.com");
        assert_eq!(n.name(), "twilio");
    }

    /// A Twilio stand-in on 127.0.0.1 that answers every request with `status` and the
    /// JSON `body`.
    async fn twilio(status: u16, body: &'static str) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
            .mount(&server)
            .await;
        server
    }

    fn notifier(server: &MockServer, timeout: Duration) -> TwilioNotifier {
        TwilioNotifier::from_settings(&settings(&server.uri()), timeout)
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn created_is_ok_and_the_request_is_what_twilio_expects() {
        let server = twilio(201, r#"{"sid":"SM1","status":"queued"}"#).await;
        notifier(&server, Duration::from_secs(5))
            .send(&message())
            .await
            .unwrap();

        let requests = server.received_requests().await.unwrap();
        let [request] = requests.as_slice() else {
            panic!("expected one request, got {}", requests.len());
        };
        assert_eq!(request.method.as_str(), "POST");
        assert_eq!(
            request.url.path(),
            "/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
        );
        let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
        // base64("AC0123456789abcdef:s3cret-token")
        assert_eq!(
            header("authorization"),
            Some("Basic QUMwMTIzNDU2Nzg5YWJjZGVmOnMzY3JldC10b2tlbg==")
        );
        assert_eq!(
            header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        let fields: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        let field = |k: &str| {
            fields
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(field("To"), Some("+15552223333"));
        assert_eq!(field("From"), Some("+15550001111"));
        assert_eq!(field("Body"), Some(message().body.as_str()));
        assert_eq!(fields.len(), 3);
    }

    #[tokio::test]
    async fn client_error_is_permanent_with_twilios_message() {
        let server = twilio(400, r#"{"code":21211,"message":"bad To"}"#).await;
        match notifier(&server, Duration::from_secs(5))
            .send(&message())
            .await
        {
            Err(NotifyError::Permanent(e)) => {
                assert!(e.contains("400"), "{e}");
                assert!(e.contains("bad To"), "{e}");
                assert!(!e.contains("493817"), "{e}");
            }
            other => panic!("expected Permanent, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unavailable_and_rate_limited_are_temporary() {
        for status in [503, 429] {
            let server = twilio(status, r#"{"message":"slow down"}"#).await;
            match notifier(&server, Duration::from_secs(5))
                .send(&message())
                .await
            {
                Err(NotifyError::Temporary(e)) => assert!(!e.contains("493817"), "{e}"),
                other => panic!("{status}: expected Temporary, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn refused_connection_is_temporary() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let n = TwilioNotifier::from_settings(&settings(&base), Duration::from_secs(5))
            .unwrap()
            .unwrap();
        match n.send(&message()).await {
            Err(NotifyError::Temporary(e)) => {
                assert!(!e.contains("AC0123456789abcdef"), "{e}");
                assert!(!e.contains("493817"), "{e}");
            }
            other => panic!("expected Temporary, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn silence_past_the_timeout_is_temporary() {
        // Answers, but only after the notifier has given up.
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(5)))
            .mount(&server)
            .await;
        match notifier(&server, Duration::from_millis(200))
            .send(&message())
            .await
        {
            Err(NotifyError::Temporary(e)) => assert!(e.contains("timed out"), "{e}"),
            other => panic!("expected Temporary, got {other:?}"),
        }
    }
}
