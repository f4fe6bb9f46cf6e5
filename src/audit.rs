//! The audit trail: which security events are recorded, and with what of the request.
//!
//! An event that records a change to an account is written by the store in the change's
//! own transaction (the store methods take it beside the change). An event that records
//! only an attempt — a failed login, a wrong code — has no change to ride with and is
//! written on its own, best effort: a failed write is logged, never turned into a failed
//! request for something that already happened.

use crate::extract::RequestMeta;
use crate::state::{now, AppState};
use crate::store::{AuditEvent, UserId};

/// The request's side of an audit row: the client's address (as text) and user agent.
pub struct Origin {
    ip: String,
    user_agent: Option<String>,
}

impl Origin {
    pub fn of(meta: &RequestMeta) -> Self {
        Origin {
            ip: meta.ip.to_string(),
            user_agent: meta.user_agent.clone(),
        }
    }

    /// The audit row for `event` on `user_id`, made now from this request.
    pub fn event<'a>(&'a self, event: &'a str, user_id: Option<UserId>) -> AuditEvent<'a> {
        AuditEvent {
            user_id,
            event,
            ip: Some(&self.ip),
            user_agent: self.user_agent.as_deref(),
            at: now(),
        }
    }
}

/// Records an attempt on its own, best effort (see the module header).
pub async fn attempt(state: &AppState, event: &str, user_id: Option<UserId>, origin: &Origin) {
    if let Err(e) = state
        .store
        .record_audit(&origin.event(event, user_id))
        .await
    {
        tracing::warn!(error = %e, event, "audit event not recorded");
    }
}
