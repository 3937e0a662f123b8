//! The `hooksync` binary: everything lives in the library so tests can run it in-process.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    hooksync::cli::main()
}
