// Rebuild when a file is added to or removed from assets/ (include_bytes! alone tracks only the
// files that existed at the last build).
fn main() {
    println!("cargo:rerun-if-changed=assets");
}
