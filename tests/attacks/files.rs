//! Attacks: files.
