//! Authentication mechanics: password hashing, server keys, opaque tokens and codes, and
//! the session extractor.

pub mod keys;
pub mod ownership;
pub mod password;
pub mod session;
pub mod token;
