//! Attacks: telemetry.
