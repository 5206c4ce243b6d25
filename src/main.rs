//! The `bzt` command: the broker, its development CA, and a reference phone.

mod cli;

// mimalloc rather than glibc's allocator: malloc/free were 13% of the broker's CPU per login
// flow, and A/B runs lowered CPU per flow in all twelve pairs (loadtest/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
