//! Black-box tests of the attacks found by the adversarial review of 80c9e2e (issue 14):
//! each test reproduces one attack against the real binary and shows it no longer gets
//! through. One module per family of attack. `self_service` holds those on the accounts
//! people manage themselves (issue 16).
mod clients;
mod cookies;
mod files;
mod input;
mod lockout;
mod ownership;
mod self_service;
mod sms;
mod telemetry;
mod timing;
mod upgrade;
