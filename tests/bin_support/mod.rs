//! The iysgate binary as a test runs it: with none of the caller's `IYSGATE_…` settings or
//! `RUST_LOG`, so only what the test sets reaches it.

use std::process::Command;

pub fn iysgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iysgate"));
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("IYSGATE_") || n == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd
}
