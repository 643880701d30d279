//! The `ckpt` binary: everything is in the library's `cli` module.
fn main() {
    std::process::exit(ckpt::cli::main());
}
