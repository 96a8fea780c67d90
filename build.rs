// The binary embeds embedded_sql/ (include_dir!), which does not make cargo rebuild when a file
// there is added or changed: say so explicitly.
fn main() {
    println!("cargo:rerun-if-changed=embedded_sql");
}
