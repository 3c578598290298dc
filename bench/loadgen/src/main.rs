//! Load generator for `bench/run` (work in progress).

fn main() {
    eprintln!("estuary-loadgen: not built yet; see bench/README.md");
    std::process::exit(2);
}
