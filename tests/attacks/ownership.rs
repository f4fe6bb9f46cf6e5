//! Attacks: ownership.
