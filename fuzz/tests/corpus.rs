//! Replays every target's corpus (`fuzz/corpus/<target>/`: the seeds, and each input that once
//! crashed a target) through the target, without the fuzzer: a plain `cargo test`.

use std::path::Path;

#[test]
fn every_target_has_a_corpus_and_replays_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, run) in ringsmtpd_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(files.len() >= 3, "{name}: only {} seeds", files.len());
        for file in files {
            let input = std::fs::read(&file).expect("corpus file");
            eprintln!("{name}: {}", file.display());
            run(&input);
        }
    }
}

#[test]
fn every_corpus_folder_is_a_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for entry in std::fs::read_dir(&root).expect("fuzz/corpus") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            ringsmtpd_fuzz::target(&name).is_some(),
            "corpus/{name} has no target"
        );
    }
}
