//! `GET /me` and `POST /logout`: what a live session sees and how it ends.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::response::{AppendHeaders, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::MessageBody;
use crate::auth::session::{set_cookie, AuthSession, SESSION_COOKIE};
use crate::error::Result;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/me", get(me))
        .route("/logout", post(logout))
}

#[derive(Serialize)]
struct Me {
    id: i64,
    username: String,
    email: String,
    phone: Option<String>,
    /// RFC 3339, UTC.
    created_at: String,
}

async fn me(session: AuthSession) -> Json<Me> {
    let u = session.user;
    let created_at = chrono::DateTime::from_timestamp(u.created_at, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Json(Me {
        id: u.id,
        username: u.username,
        email: u.email,
        phone: u.phone,
        created_at,
    })
}

async fn logout(State(state): State<AppState>, session: AuthSession) -> Result<impl IntoResponse> {
    state.store.delete_session(&session.token_hash).await?;
    let clear = set_cookie(
        SESSION_COOKIE,
        "",
        "/",
        Duration::ZERO,
        state.settings.cookie_secure,
    );
    Ok((
        AppendHeaders([(SET_COOKIE, clear)]),
        Json(MessageBody {
            message: "Logged out",
        }),
    ))
}
