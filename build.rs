//! Rebuilds the binary when a migration is added or changed: `sqlx::migrate!` embeds the
//! files of `migrations/` at compile time, and without this cargo would not notice a new
//! file there and keep a binary that lacks it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
