//! The config parser never panics, whatever the text: it returns a config or errors, and
//! every error has a position inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = switchyard_config::parse(text, "fuzz.yaml") {
        assert!(!errors.0.is_empty(), "an error result must carry errors");
        // YAML breaks lines at `\n`, `\r\n` and a lone `\r`.
        let lines = text.bytes().filter(|&b| b == b'\n' || b == b'\r').count() + 1;
        // An error at the end of input may sit on the line after the last one.
        let lines = lines + 1;
        for e in &errors.0 {
            assert!(
                e.line <= lines,
                "error line {} past the end ({lines}): {e}",
                e.line
            );
        }
    }
});
