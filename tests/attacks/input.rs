//! Attacks: input.
