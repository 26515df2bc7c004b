#![forbid(unsafe_code)]

fn main() {
    std::process::exit(lanyard::cli::main());
}
