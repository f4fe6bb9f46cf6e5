//! `POST /register`: create an account.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::{audit, limit, MessageBody};
use crate::domain::{Email, NewPassword, Phone, Username};
use crate::error::Result;
use crate::extract::{ApiJson, RequestMeta};
use crate::state::{now, AppState};
use crate::store::NewUser;

pub fn router() -> Router<AppState> {
    Router::new().route("/register", post(register))
}

#[derive(Deserialize)]
struct RegisterRequest {
    username: String,
    email: String,
    /// Optional: the seed required it, we do not.
    phone: Option<String>,
    password: String,
}

async fn register(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<MessageBody>)> {
    let username = Username::parse(&req.username)?;
    let email = Email::parse(&req.email)?;
    let phone = match req.phone.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(Phone::parse(p)?),
    };
    let password = NewPassword::parse("password", req.password, Some(&username), Some(&email))?
        .into_password();
    limit(
        &state,
        &state.settings.limits.register_per_ip,
        "register:ip",
        &meta.ip.to_string(),
    )
    .await?;

    let hash = state
        .hasher
        .hash(&password)
        .await
        .map_err(crate::error::ApiError::internal)?;
    let user_id = state
        .store
        .create_user(&NewUser {
            username: &username,
            email: &email,
            phone: phone.as_ref(),
            password_hash: &hash,
            now: now(),
        })
        .await?;
    tracing::info!(user_id, "user registered");
    audit(&state, "registered", Some(user_id), &meta).await;
    Ok((
        StatusCode::CREATED,
        Json(MessageBody {
            message: "User registered successfully",
        }),
    ))
}
