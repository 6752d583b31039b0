fn main() {
    eprintln!("smtp-loadtest: not built yet; see issue 7");
    std::process::exit(2);
}
