// The bindings are generated from `wit/` by a macro that cargo cannot see
// into: rebuild when the WIT package changes.
fn main() {
    println!("cargo:rerun-if-changed=../../wit");
}
