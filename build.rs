//! `embed_migrations!` reads `migrations/` at compile time, but cargo only knows to rebuild
//! when Rust sources change: without this, a new migration folder would be missing from the
//! binary until something else forced a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
