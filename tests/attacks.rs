//! Black-box tests of the attacks found by the adversarial review of 80c9e2e (issue 14):
//! each test reproduces one attack against the real binary and shows it no longer gets
//! through. One module per family of attack.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "attacks/clients.rs"]
mod clients;
#[path = "attacks/cookies.rs"]
mod cookies;
#[path = "attacks/files.rs"]
mod files;
#[path = "attacks/input.rs"]
mod input;
#[path = "attacks/lockout.rs"]
mod lockout;
#[path = "attacks/ownership.rs"]
mod ownership;
#[path = "attacks/sms.rs"]
mod sms;
#[path = "attacks/telemetry.rs"]
mod telemetry;
#[path = "attacks/timing.rs"]
mod timing;
#[path = "attacks/upgrade.rs"]
mod upgrade;
