//! Authentication mechanics: password hashing, server keys, opaque tokens and codes, the
//! session extractor, and finding a user by identifier.

pub mod device;
pub mod keys;
pub mod lookup;
pub mod ownership;
pub mod password;
pub mod secret;
pub mod session;
pub mod token;
