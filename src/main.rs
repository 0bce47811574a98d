//! Entry point: parses arguments and hands over to `cli`.

// Outside input never reaches an unwrap: the request path, the CLI and the loaders
// return errors instead (tests may unwrap; CI runs clippy on the non-test build).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod cli;

/// mimalloc: the request path allocates many small short-lived buffers; glibc's malloc
/// spent ~8 % of the gateway's CPU on them (free-list consolidation) in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
