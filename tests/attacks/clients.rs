//! Attacks on how the client address and request id are read: forwarded headers,
//! IPv6 prefixes, connection caps, forged request ids.
