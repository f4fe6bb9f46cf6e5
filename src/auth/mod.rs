//! Authentication mechanics: password hashing, server keys, opaque tokens and codes, and
//! the session extractor.

pub mod keys;
pub mod password;
pub mod secret;
pub mod session;
pub mod token;
