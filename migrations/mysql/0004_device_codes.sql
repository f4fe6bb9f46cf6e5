-- A code sent to a request that carried a device cookie of its user (see
-- src/auth/device.rs) is bound to that device: `device` names it, and guesses from it
-- take `device_attempts`, not the `attempts` everyone else shares, so an attacker's
-- wrong guesses cannot kill the owner's recovery. NULL: no device.
ALTER TABLE otp_codes ADD COLUMN device VARCHAR(64);
ALTER TABLE otp_codes ADD COLUMN device_attempts INT NOT NULL DEFAULT 0;
