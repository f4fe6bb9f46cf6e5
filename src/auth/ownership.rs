//! Who controls an account: the rule that decides which of a user's addresses a recovery
//! code may go to.
//!
//! Anyone can type any address at registration, so an address is only a claim until a
//! code sent to it has been used: a password reset through an emailed code proves the
//! email, one through a texted code proves the phone (`proven_channels`, bound to the
//! address as it was then). The rule:
//!
//! - a channel that was never proven is never a way into an account whose other channel
//!   has been proven: codes go only to proven channels once there is one;
//! - while nothing is proven (new and imported accounts), either channel may recover, and
//!   the first reset proves the one it used;
//! - proving the email drops a phone number nobody proved (in the same transaction as
//!   the reset, see `Store::reset_password`), so whoever controls the email takes sole
//!   control. The email cannot be dropped (an account always has one); once the phone is
//!   proven an unproven email simply stops being a way in.
//!
//! The attack this closes: an attacker registers the victim's email with the attacker's
//! phone; the victim recovers the account by email and uses it; the attacker would
//! otherwise reset it again by SMS whenever they liked.

use crate::notify::Channel;

/// What the store knows of a user's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Proofs {
    pub email: bool,
    pub sms: bool,
}

impl Proofs {
    /// From `Store::proven_channels`.
    pub fn from_names(names: &[String]) -> Proofs {
        Proofs {
            email: names.iter().any(|n| n == Channel::Email.as_str()),
            sms: names.iter().any(|n| n == Channel::Sms.as_str()),
        }
    }

    fn proven(self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.email,
            Channel::Sms => self.sms,
        }
    }

    /// Whether a recovery code may go out on `channel` (the account has a phone when it
    /// is `Sms`): proven, or nothing else is.
    pub fn may_recover_through(self, channel: Channel) -> bool {
        let other = match channel {
            Channel::Email => Channel::Sms,
            Channel::Sms => Channel::Email,
        };
        self.proven(channel) || !self.proven(other)
    }
}

/// The channels a recovery code may go out on, best first: `wanted` when allowed, then
/// the other one. `has_phone` says whether SMS exists at all for this account.
pub fn recovery_channels(wanted: Channel, has_phone: bool, proofs: Proofs) -> Vec<Channel> {
    let order = match wanted {
        Channel::Sms => [Channel::Sms, Channel::Email],
        Channel::Email => [Channel::Email, Channel::Sms],
    };
    order
        .into_iter()
        .filter(|c| *c == Channel::Email || has_phone)
        .filter(|c| proofs.may_recover_through(*c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Proofs = Proofs {
        email: false,
        sms: false,
    };
    const EMAIL: Proofs = Proofs {
        email: true,
        sms: false,
    };
    const SMS: Proofs = Proofs {
        email: false,
        sms: true,
    };

    #[test]
    fn with_nothing_proven_either_channel_recovers() {
        assert_eq!(
            recovery_channels(Channel::Sms, true, NONE),
            [Channel::Sms, Channel::Email]
        );
        assert_eq!(
            recovery_channels(Channel::Email, true, NONE),
            [Channel::Email, Channel::Sms]
        );
        assert_eq!(
            recovery_channels(Channel::Sms, false, NONE),
            [Channel::Email]
        );
    }

    #[test]
    fn an_unproven_channel_is_no_way_in_once_the_other_is_proven() {
        assert_eq!(
            recovery_channels(Channel::Sms, true, EMAIL),
            [Channel::Email]
        );
        assert_eq!(recovery_channels(Channel::Email, true, SMS), [Channel::Sms]);
        let both = Proofs {
            email: true,
            sms: true,
        };
        assert_eq!(
            recovery_channels(Channel::Sms, true, both),
            [Channel::Sms, Channel::Email]
        );
    }
}
