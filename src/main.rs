//! The `bzt` command: the broker, its development CA, and a reference phone.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
