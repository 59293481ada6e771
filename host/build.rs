//! Links the host binary as a non-PIE executable.
//!
//! Every task runs under a supervisor that is this binary re-executed. A
//! position-independent executable gets ~45,000 relative relocations applied
//! at every exec, which dirties its whole read-only-after-relocation segment
//! (~680 kB) in each process: that was most of a supervisor's private
//! memory. Linked at a fixed address there is nothing to relocate, and a
//! supervisor costs ~170 kB (BENCHMARKS.md). The trade-off is that the
//! host's own code and data are not address-randomised (libraries, heap and
//! stack still are), the same as Go's default for Nomad and its drivers.
//! Only the binary is affected: the library, tests and benches are not.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
