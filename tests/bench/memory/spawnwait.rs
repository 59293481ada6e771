//! The "small Rust process that spawns and waits" memory baseline for
//! host/benches/tasks.rs: std only, runs its arguments as a child and
//! exits with its status. The benchmark compiles it with plain `rustc -O`.
//!
//! Usage: spawnwait PROGRAM [ARGS...]

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: spawnwait PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    match Command::new(program).args(args).status() {
        Ok(status) => ExitCode::from(status.code().unwrap_or(1) as u8),
        Err(e) => {
            eprintln!("spawnwait: {e}");
            ExitCode::from(127)
        }
    }
}
