//! Attacks: sms.
