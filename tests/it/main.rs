//! Every integration test in one binary, so the crate is linked once rather than once per
//! suite. Each suite is a module; nextest names its tests `suite::test`, and the filters in
//! `scripts/test` pick suites by that prefix (which backends each runs on is decided there).
//!
//! - `in_process`: `app()` driven with `oneshot`, no socket and no server process.
//! - `api`, `accounts`, `attacks`, `errors`, `forward_auth`, `hostile`, `import_seed`,
//!   `mfa`, `operations`, `outages`, `passkeys`, `resilience`, `scale_out`, `openapi`:
//!   black-box, the real binary on port 0 (see `common`; `passkeys` signs with the
//!   software authenticator in `common::authenticator`).
//! - `proxies`: the real binary behind real nginx and Caddy (forward authentication).
//! - `store_contract`: the `Store` trait held to one contract on every database.
//! - `parsers_prop`: property tests of the domain parsers.
//! - `harness_selftest`: the parts of `common` that are ours (the SMTP sink, the waits).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

mod accounts;
mod api;
mod attacks;
mod errors;
mod forward_auth;
mod harness_selftest;
mod hostile;
mod import_seed;
mod in_process;
mod mfa;
mod openapi;
mod operations;
mod outages;
mod parsers_prop;
mod passkeys;
mod proxies;
mod resilience;
mod scale_out;
mod store_contract;
