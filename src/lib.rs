//! Gatehouse: an authentication server. Accounts, server-side sessions, and password
//! recovery by one-time code over email or SMS — a secure, API-compatible replacement for
//! the seed's Python server.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connections;
pub mod domain;
pub mod error;
pub mod extract;
pub mod import;
pub mod jobs;
pub mod limit;
pub mod metrics;
pub mod notify;
pub mod private_file;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod upgrade;
