//! The `clue` binary: everything is in the library; see `clue --help`.

fn main() -> std::process::ExitCode {
    clue::cli::main()
}
