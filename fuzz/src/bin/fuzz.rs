//! The libFuzzer binary: `RINGSMTPD_FUZZ_TARGET=<name>` picks the target (see `fuzz/run` and
//! docs/fuzzing.md); the arguments are libFuzzer's.
#![no_main]

use std::sync::OnceLock;

static TARGET: OnceLock<ringsmtpd_fuzz::Target> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let run = TARGET.get_or_init(|| {
        let name = std::env::var("RINGSMTPD_FUZZ_TARGET").unwrap_or_default();
        ringsmtpd_fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<&str> = ringsmtpd_fuzz::TARGETS.iter().map(|t| t.0).collect();
            panic!(
                "RINGSMTPD_FUZZ_TARGET={name:?}: not one of {}",
                names.join(" ")
            )
        })
    });
    run(data);
});
