//! The development fallback: "delivers" a message by printing it, code included, to the log.

use async_trait::async_trait;

use super::{Message, Notifier, NotifyError};

/// Stands in for a channel with no provider configured. It is the one place in the product
/// allowed to log a one-time code, and start-up warns loudly whenever it is in use.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleNotifier;

#[async_trait]
impl Notifier for ConsoleNotifier {
    async fn send(&self, msg: &Message) -> Result<(), NotifyError> {
        tracing::warn!(target: "gatehouse::notify::console", "{}", console_line(msg));
        Ok(())
    }

    fn name(&self) -> &'static str {
        "console"
    }
}

/// The whole message on one line, so a code can be read (or grepped) straight from the log
/// and no line of a message can pose as a separate log entry.
fn console_line(msg: &Message) -> String {
    format!(
        "DEV ONLY, not delivered: {} to {}: {}: {}",
        msg.channel.as_str(),
        one_line(&msg.to),
        one_line(&msg.subject),
        one_line(&msg.body),
    )
}

fn one_line(s: &str) -> String {
    s.replace("\r\n", " ").replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use url::Url;

    use super::*;
    use crate::config::{EmailSettings, SmsSettings};
    use crate::notify::Channel;

    fn message() -> Message {
        Message {
            channel: Channel::Email,
            to: "user@example.com".into(),
            subject: "Your code".into(),
            body: "Your code is 493817.\r\nIt expires in 10 minutes.\nBye".into(),
        }
    }

    #[test]
    fn line_has_the_code_on_one_line() {
        assert_eq!(
            console_line(&message()),
            "DEV ONLY, not delivered: email to user@example.com: Your code: \
             Your code is 493817. It expires in 10 minutes. Bye"
        );
    }

    /// Collects formatted log output for assertions.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn send_logs_a_warning_with_the_code() {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        // The current-thread test runtime polls on this thread, so the default applies.
        let _guard = tracing::subscriber::set_default(subscriber);

        ConsoleNotifier.send(&message()).await.unwrap();

        let out = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("WARN"), "{out}");
        assert!(out.contains("gatehouse::notify::console"), "{out}");
        assert!(
            out.contains("DEV ONLY, not delivered: email to user@example.com: Your code: Your code is 493817."),
            "{out}"
        );
        assert_eq!(out.trim_end().lines().count(), 1, "{out}");
    }

    // `notify::build` lives in mod.rs; its tests live here, next to the fallback they check.

    fn no_email() -> EmailSettings {
        EmailSettings {
            smtp_url: None,
            email_user: None,
            email_pass: None,
            email_from: None,
        }
    }

    fn no_sms() -> SmsSettings {
        SmsSettings {
            twilio_sid: None,
            twilio_token: None,
            twilio_phone: None,
            twilio_api_base: Url::parse("https://api.twilio.com").unwrap(),
        }
    }

    #[test]
    fn build_falls_back_to_console_per_channel() {
        let n = crate::notify::build(&no_email(), &no_sms(), Duration::from_secs(1)).unwrap();
        assert_eq!(n.email.name(), "console");
        assert_eq!(n.sms.name(), "console");

        let mut sms = no_sms();
        sms.twilio_sid = Some("AC1".into());
        sms.twilio_token = Some(secrecy::SecretString::from("t"));
        sms.twilio_phone = Some("+15550001111".into());
        let n = crate::notify::build(&no_email(), &sms, Duration::from_secs(1)).unwrap();
        assert_eq!(n.email.name(), "console");
        assert_eq!(n.for_channel(Channel::Sms).name(), "twilio");
    }

    #[tokio::test]
    async fn build_uses_smtp_when_configured_and_reports_bad_settings() {
        let mut email = no_email();
        email.smtp_url = Some(secrecy::SecretString::from("smtp://127.0.0.1:2525"));
        let n = crate::notify::build(&email, &no_sms(), Duration::from_secs(1)).unwrap();
        assert_eq!(n.email.name(), "smtp");
        assert_eq!(n.sms.name(), "console");

        email.email_from = Some("nonsense".into());
        let err = crate::notify::build(&email, &no_sms(), Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(err.contains("EMAIL_FROM"), "{err}");
    }
}
