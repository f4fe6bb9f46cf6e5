//! Delivering one-time codes and notices: the `Notifier` trait, the message it carries,
//! and the choice of implementation per channel from configuration.
//!
//! Handlers never call a notifier directly: they write a [`Message`] to the outbox in the
//! same transaction as the code it carries, and `outbox.rs` delivers it. That keeps the
//! response fast and identical whether or not the account exists, and loses nothing when
//! the provider is down.

pub mod console;
pub mod outbox;
pub mod sms_policy;
pub mod smtp;
pub mod twilio;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// One message to one recipient. It may contain a one-time code, so it is never logged
/// (except by the console notifier, whose purpose is to print it) and is stored encrypted.
#[derive(Clone, Serialize, Deserialize)]
pub struct Message {
    pub channel: Channel,
    /// An email address or an E.164 phone number, by channel.
    pub to: String,
    /// Used by email; ignored by SMS.
    pub subject: String,
    pub body: String,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("channel", &self.channel)
            .field("to", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Worth trying again later: the provider was unreachable, slow, or answered 5xx/429.
    #[error("temporary delivery failure: {0}")]
    Temporary(String),
    /// Trying again will not help: bad recipient, rejected credentials, 4xx.
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}

#[async_trait]
pub trait Notifier: Send + Sync {
    /// Deliver one message; return once the provider has accepted it.
    async fn send(&self, msg: &Message) -> Result<(), NotifyError>;
    /// A short name for logs and metrics ("smtp", "twilio", "console").
    fn name(&self) -> &'static str;
}

/// One notifier per channel. A channel with no provider configured falls back to the
/// console notifier, which start-up announces loudly.
#[derive(Clone)]
pub struct Notifiers {
    pub email: Arc<dyn Notifier>,
    pub sms: Arc<dyn Notifier>,
}

impl Notifiers {
    pub fn for_channel(&self, channel: Channel) -> &Arc<dyn Notifier> {
        match channel {
            Channel::Email => &self.email,
            Channel::Sms => &self.sms,
        }
    }
}

/// Chooses the notifier for each channel from configuration: SMTP for email and Twilio for
/// SMS when configured, otherwise the console notifier, announced with a loud warning.
///
/// `timeout` bounds one delivery attempt (see each notifier for exactly what it covers).
/// Must be called inside a Tokio runtime: the SMTP transport's pool spawns a task.
pub fn build(
    email: &crate::config::EmailSettings,
    sms: &crate::config::SmsSettings,
    timeout: std::time::Duration,
) -> Result<Notifiers, String> {
    let email: Arc<dyn Notifier> = match smtp::SmtpNotifier::from_settings(email, timeout)? {
        Some(n) => {
            tracing::info!(
                channel = "email",
                provider = n.name(),
                server = %n.endpoint(),
                from = %n.from_mailbox().email,
                "email delivered through SMTP"
            );
            Arc::new(n)
        }
        None => {
            tracing::warn!(
                channel = "email",
                provider = "console",
                "no SMTP configured: one-time codes for email will be PRINTED TO THIS LOG, \
                 not delivered — set SMTP_URL or EMAIL_USER/EMAIL_PASS"
            );
            Arc::new(console::ConsoleNotifier)
        }
    };
    let sms: Arc<dyn Notifier> = match twilio::TwilioNotifier::from_settings(sms, timeout)? {
        Some(n) => {
            tracing::info!(
                channel = "sms",
                provider = n.name(),
                server = %n.endpoint(),
                "SMS delivered through Twilio"
            );
            Arc::new(n)
        }
        None => {
            tracing::warn!(
                channel = "sms",
                provider = "console",
                "no Twilio configured: one-time codes for SMS will be PRINTED TO THIS LOG, \
                 not delivered — set TWILIO_SID, TWILIO_TOKEN and TWILIO_PHONE"
            );
            Arc::new(console::ConsoleNotifier)
        }
    };
    Ok(Notifiers { email, sms })
}
