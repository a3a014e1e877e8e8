// `sqlx::migrate!` embeds the migrations at compile time, but cargo does not
// know it reads them: without this, a new migration file is not picked up
// by a build that already compiled this crate.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
