//! Entry point: parses arguments and hands over to `cli`.

mod cli;

/// mimalloc: the request path allocates many small short-lived buffers; glibc's malloc
/// spent ~8 % of the gateway's CPU on them (free-list consolidation) in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
