//! The SMS provider the server under test talks to: Twilio's Messages API, mocked with
//! `wiremock`. Every `POST /2010-04-01/Accounts/{sid}/Messages.json` is answered 201
//! whatever the credentials (a test checks `Sms::auth_ok`), and recorded as an `Sms`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::{lock, poll_until};

/// Credentials the harness gives the server; `Sms::auth_ok` compares against them.
pub const TWILIO_SID: &str = "ACtest";
pub const TWILIO_TOKEN: &str = "test-token";
pub const TWILIO_PHONE: &str = "+15550000000";

/// One message posted to the Twilio mock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sms {
    /// The account SID from the URL path.
    pub sid: String,
    /// Whether HTTP basic auth was exactly `ACtest:test-token`.
    pub auth_ok: bool,
    pub to: String,
    pub from: String,
    pub body: String,
}

impl Sms {
    /// A verification code (registration's, or `/send-verification`'s).
    pub fn is_verification(&self) -> bool {
        self.body.contains("confirm that this phone number belongs")
    }

    fn from_request(request: &Request) -> Sms {
        let sid = request
            .url
            .path_segments()
            .and_then(|mut segments| segments.nth(2))
            .unwrap_or_default()
            .to_string();
        let auth_ok = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .is_some_and(|raw| raw == format!("{TWILIO_SID}:{TWILIO_TOKEN}").as_bytes());
        let field = |name: &str| {
            url::form_urlencoded::parse(&request.body)
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        Sms {
            sid,
            auth_ok,
            to: field("To"),
            from: field("From"),
            body: field("Body"),
        }
    }
}

/// A stand-in for Twilio on 127.0.0.1 (wiremock serves it from a thread of its own, so it
/// answers whatever the test's runtime is doing). Cheap to clone.
#[derive(Clone)]
pub struct TwilioMock {
    server: Arc<MockServer>,
    messages: Arc<Mutex<Vec<Sms>>>,
}

impl TwilioMock {
    pub async fn start() -> TwilioMock {
        let server = MockServer::start().await;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let record = messages.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/2010-04-01/Accounts/[^/]+/Messages\.json$"))
            .respond_with(move |request: &Request| {
                let sms = Sms::from_request(request);
                let mut messages = lock(&record);
                messages.push(sms.clone());
                // The server reads only the status; the body is the gist of Twilio's.
                ResponseTemplate::new(201).set_body_json(json!({
                    "sid": format!("SM{:032x}", messages.len()),
                    "account_sid": sms.sid,
                    "to": sms.to,
                    "from": sms.from,
                    "body": sms.body,
                    "status": "queued",
                }))
            })
            .mount(&server)
            .await;
        TwilioMock {
            server: Arc::new(server),
            messages,
        }
    }

    /// `http://127.0.0.1:PORT`, the value for TWILIO_API_BASE.
    pub fn base_url(&self) -> String {
        self.server.uri()
    }

    /// Every message received so far, in arrival order, but the verification codes every
    /// registration with a phone sends (see `SmtpSink::messages`).
    pub fn messages(&self) -> Vec<Sms> {
        self.all_messages()
            .into_iter()
            .filter(|m| !m.is_verification())
            .collect()
    }

    /// Every message received so far, verification codes included.
    pub fn all_messages(&self) -> Vec<Sms> {
        lock(&self.messages).clone()
    }

    /// The messages received so far whose `To` is exactly `to`, verification codes aside.
    pub fn messages_to(&self, to: &str) -> Vec<Sms> {
        self.all_messages_to(to)
            .into_iter()
            .filter(|m| !m.is_verification())
            .collect()
    }

    /// The messages received so far to `to`, verification codes included.
    pub fn all_messages_to(&self, to: &str) -> Vec<Sms> {
        lock(&self.messages)
            .iter()
            .filter(|m| m.to == to)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` messages to `to` have arrived and returns all of them;
    /// panics, listing what did arrive, after `timeout`.
    pub async fn wait_for(&self, to: &str, n: usize, timeout: Duration) -> Vec<Sms> {
        let found = poll_until(timeout, || {
            let messages = self.messages_to(to);
            (messages.len() >= n).then_some(messages)
        })
        .await;
        found.unwrap_or_else(|| {
            let got: Vec<_> = self.messages().into_iter().map(|m| m.to).collect();
            panic!(
                "Twilio mock: expected {n} message(s) to {to} within {timeout:?}, got {}; \
                 recipients of everything received: {got:?}",
                self.messages_to(to).len()
            )
        })
    }
}
