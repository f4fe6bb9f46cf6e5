//! Email delivery over SMTP (any server via `SMTP_URL`, or Gmail via `EMAIL_USER`/`EMAIL_PASS`).

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use super::{Message, Notifier, NotifyError};
use crate::config::EmailSettings;

/// Sender used when neither EMAIL_FROM nor EMAIL_USER is set.
const DEFAULT_FROM: &str = "gatehouse@localhost";

const GMAIL_HOST: &str = "smtp.gmail.com";
const GMAIL_PORT: u16 = 587;

/// Sends plain-text email through one SMTP server, reusing connections (lettre's pool).
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Scheme, host, port and TLS mode, for logs; never carries credentials.
    endpoint: String,
}

impl SmtpNotifier {
    /// Builds the notifier from configuration, or `None` when email is not configured.
    ///
    /// `timeout` bounds each SMTP command (connect, each reply), not the whole exchange:
    /// cancelling a send part-way could return a connection to the pool mid-transaction,
    /// so the bound is left to lettre, which marks such connections broken.
    ///
    /// Must be called inside a Tokio runtime: lettre's pool spawns its cleanup task here.
    pub fn from_settings(
        s: &EmailSettings,
        timeout: Duration,
    ) -> Result<Option<SmtpNotifier>, String> {
        let (builder, endpoint) = if let Some(url) = &s.smtp_url {
            let url = url.expose_secret();
            // Parsed once more here only to describe the server in logs; lettre's own
            // error and this one are both free of the URL's text, which holds a password.
            let endpoint = describe_smtp_url(url)?;
            let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map_err(|e| format!("SMTP_URL is not usable: {e}"))?;
            (builder, endpoint)
        } else {
            match (&s.email_user, &s.email_pass) {
                (Some(user), Some(pass)) => {
                    let builder = AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(GMAIL_HOST)
                        .map_err(|e| format!("cannot set up TLS for {GMAIL_HOST}: {e}"))?
                        .port(GMAIL_PORT)
                        .credentials(Credentials::new(
                            user.clone(),
                            pass.expose_secret().to_owned(),
                        ));
                    (
                        builder,
                        format!("smtp://{GMAIL_HOST}:{GMAIL_PORT} (STARTTLS required)"),
                    )
                }
                (None, None) => return Ok(None),
                _ => return Err("EMAIL_USER and EMAIL_PASS must be set together".into()),
            }
        };
        let from = from_address(s)?;
        let transport = builder.timeout(Some(timeout)).build();
        Ok(Some(SmtpNotifier {
            transport,
            from,
            endpoint,
        }))
    }

    /// Where mail goes, e.g. `smtp://smtp.gmail.com:587 (STARTTLS required)`; safe to log.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The sender address every message carries.
    pub fn from_mailbox(&self) -> &Mailbox {
        &self.from
    }

    /// Connects (and logs in, when credentials are set) and sends NOOP: proves the
    /// settings work without sending mail.
    pub async fn check(&self) -> Result<(), String> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "{}: connected, but the server did not answer NOOP",
                self.endpoint
            )),
            Err(e) => Err(format!("{}: {e}", self.endpoint)),
        }
    }
}

#[async_trait]
impl Notifier for SmtpNotifier {
    async fn send(&self, msg: &Message) -> Result<(), NotifyError> {
        // The address is left out of errors: they are stored and logged, and the address
        // is personal data. A malformed one will never become deliverable.
        let to: Mailbox = msg
            .to
            .parse()
            .map_err(|_| NotifyError::Permanent("recipient is not a valid email address".into()))?;
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(msg.subject.as_str())
            .header(ContentType::TEXT_PLAIN)
            .body(msg.body.clone())
            .map_err(|e| NotifyError::Permanent(format!("cannot build the email: {e}")))?;

        // lettre's errors carry the server's reply or the I/O cause, never the message,
        // so they can be kept as they are.
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => {
                Err(NotifyError::Permanent(format!("SMTP server refused: {e}")))
            }
            // Transient 4xx replies, refused connections, timeouts, TLS failures: the
            // server or the network may recover, and the outbox retries with back-off.
            Err(e) => Err(NotifyError::Temporary(format!("SMTP delivery failed: {e}"))),
        }
    }

    fn name(&self) -> &'static str {
        "smtp"
    }
}

/// EMAIL_FROM, else EMAIL_USER (the seed sent as the Gmail account), else a local default.
fn from_address(s: &EmailSettings) -> Result<Mailbox, String> {
    if let Some(from) = &s.email_from {
        return from
            .trim()
            .parse()
            .map_err(|e| format!("EMAIL_FROM `{from}` is not a valid address: {e}"));
    }
    if let Some(user) = &s.email_user {
        return user.trim().parse().map_err(|e| {
            format!("EMAIL_USER `{user}` is not an email address ({e}); set EMAIL_FROM")
        });
    }
    DEFAULT_FROM
        .parse()
        .map_err(|e| format!("default sender {DEFAULT_FROM} is invalid: {e}"))
}

/// `scheme://host:port (tls mode)` with the port lettre will actually use; no userinfo.
fn describe_smtp_url(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("SMTP_URL is not a valid URL: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| "SMTP_URL has no host".to_owned())?;
    let tls = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    // Mirrors lettre's defaults in `from_url`, so the log shows where it really connects.
    let (default_port, mode) = match (parsed.scheme(), tls.as_deref()) {
        ("smtps", _) => (465, "TLS"),
        ("smtp", Some("required")) => (587, "STARTTLS required"),
        ("smtp", Some("opportunistic")) => (587, "STARTTLS if offered"),
        _ => (25, "no TLS"),
    };
    let port = parsed.port().unwrap_or(default_port);
    Ok(format!("{}://{host}:{port} ({mode})", parsed.scheme()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Channel;
    use secrecy::SecretString;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    fn settings() -> EmailSettings {
        EmailSettings {
            smtp_url: None,
            email_user: None,
            email_pass: None,
            email_from: None,
        }
    }

    fn message(to: &str) -> Message {
        Message {
            channel: Channel::Email,
            to: to.into(),
            subject: "Your code".into(),
            body: "Your code is 493817.\nIt expires in 10 minutes.".into(),
        }
    }

    #[test]
    fn unconfigured_email_is_none() {
        let got = SmtpNotifier::from_settings(&settings(), Duration::from_secs(1)).unwrap();
        assert!(got.is_none());
    }

    #[test]
    fn half_of_gmail_settings_is_an_error() {
        let mut s = settings();
        s.email_user = Some("me@gmail.com".into());
        assert!(SmtpNotifier::from_settings(&s, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn from_prefers_email_from_then_email_user_then_default() {
        let mut s = settings();
        assert_eq!(from_address(&s).unwrap().email.to_string(), DEFAULT_FROM);

        s.email_user = Some("me@gmail.com".into());
        assert_eq!(from_address(&s).unwrap().email.to_string(), "me@gmail.com");

        s.email_from = Some("Gatehouse <noreply@example.com>".into());
        let from = from_address(&s).unwrap();
        assert_eq!(from.email.to_string(), "noreply@example.com");
        assert_eq!(from.name.as_deref(), Some("Gatehouse"));
    }

    #[test]
    fn bad_from_names_email_from() {
        let mut s = settings();
        s.email_from = Some("not an address".into());
        assert!(from_address(&s).unwrap_err().contains("EMAIL_FROM"));

        let mut s = settings();
        s.email_user = Some("apikey".into());
        assert!(from_address(&s).unwrap_err().contains("EMAIL_FROM"));
    }

    #[test]
    fn endpoint_description_hides_credentials() {
        let d = describe_smtp_url("smtp://user:hunter2@mail.example.com?tls=required").unwrap();
        assert_eq!(d, "smtp://mail.example.com:587 (STARTTLS required)");
        let d = describe_smtp_url("smtps://u:p@mail.example.com").unwrap();
        assert_eq!(d, "smtps://mail.example.com:465 (TLS)");
        let d = describe_smtp_url("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(d, "smtp://127.0.0.1:2525 (no TLS)");
    }

    #[tokio::test]
    async fn bad_smtp_url_error_does_not_echo_the_url() {
        let mut s = settings();
        s.smtp_url = Some(SecretString::from("ftp://user:hunter2@host"));
        let err = SmtpNotifier::from_settings(&s, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(err.contains("SMTP_URL"));
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn smtp_url_and_gmail_settings_build() {
        let mut s = settings();
        s.smtp_url = Some(SecretString::from("smtp://127.0.0.1:2525"));
        let n = SmtpNotifier::from_settings(&s, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(n.endpoint(), "smtp://127.0.0.1:2525 (no TLS)");
        assert_eq!(n.from_mailbox().email.to_string(), DEFAULT_FROM);
        assert_eq!(n.name(), "smtp");

        let mut s = settings();
        s.email_user = Some("me@gmail.com".into());
        s.email_pass = Some(SecretString::from("app-password"));
        let n = SmtpNotifier::from_settings(&s, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert!(n.endpoint().starts_with("smtp://smtp.gmail.com:587"));
        assert_eq!(n.from_mailbox().email.to_string(), "me@gmail.com");
    }

    async fn notifier_for(port: u16) -> SmtpNotifier {
        let mut s = settings();
        s.smtp_url = Some(SecretString::from(format!("smtp://127.0.0.1:{port}")));
        SmtpNotifier::from_settings(&s, Duration::from_secs(5))
            .unwrap()
            .unwrap()
    }

    /// A one-connection SMTP server that accepts everything except RCPT, which gets
    /// `rcpt_reply`. Returns whether it saw DATA.
    async fn fake_smtp(rcpt_reply: &'static str) -> (u16, tokio::task::JoinHandle<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let mut saw_data = false;
            write.write_all(b"220 localhost ESMTP\r\n").await.unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                let upper = line.to_ascii_uppercase();
                let reply: &str = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                    "250 localhost\r\n"
                } else if upper.starts_with("RCPT") {
                    rcpt_reply
                } else if upper.starts_with("DATA") {
                    saw_data = true;
                    write.write_all(b"354 go ahead\r\n").await.unwrap();
                    while let Ok(Some(l)) = lines.next_line().await {
                        if l == "." {
                            break;
                        }
                    }
                    "250 queued\r\n"
                } else if upper.starts_with("QUIT") {
                    let _ = write.write_all(b"221 bye\r\n").await;
                    break;
                } else {
                    "250 ok\r\n"
                };
                if write.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
            saw_data
        });
        (port, handle)
    }

    #[tokio::test]
    async fn accepted_mail_is_ok() {
        let (port, server) = fake_smtp("250 ok\r\n").await;
        let n = notifier_for(port).await;
        n.send(&message("user@example.com")).await.unwrap();
        drop(n);
        assert!(server.await.unwrap());
    }

    #[tokio::test]
    async fn permanent_reply_is_permanent_and_hides_the_body() {
        let (port, _server) = fake_smtp("550 5.1.1 no such user\r\n").await;
        let n = notifier_for(port).await;
        match n.send(&message("nobody@example.com")).await {
            Err(NotifyError::Permanent(e)) => {
                assert!(e.contains("550"), "{e}");
                assert!(!e.contains("493817"), "{e}");
            }
            other => panic!("expected Permanent, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn transient_reply_is_temporary() {
        let (port, _server) = fake_smtp("451 4.3.0 try later\r\n").await;
        let n = notifier_for(port).await;
        match n.send(&message("user@example.com")).await {
            Err(NotifyError::Temporary(e)) => assert!(!e.contains("493817"), "{e}"),
            other => panic!("expected Temporary, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn refused_connection_is_temporary() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let n = notifier_for(port).await;
        assert!(matches!(
            n.send(&message("user@example.com")).await,
            Err(NotifyError::Temporary(_))
        ));
        assert!(n.check().await.is_err());
    }

    #[tokio::test]
    async fn invalid_recipient_is_permanent_without_the_address() {
        let n = notifier_for(9).await;
        match n.send(&message("not-an-address")).await {
            Err(NotifyError::Permanent(e)) => assert!(!e.contains("not-an-address")),
            other => panic!("expected Permanent, got {other:?}"),
        }
    }
}
