//! Files tests write: YAML indented with the code (dedented), PEM as it is.

use std::path::{Path, PathBuf};

/// Strips the common leading indentation so tests can indent YAML with the code.
pub fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: String = text
        .lines()
        .map(|l| if l.len() >= indent { &l[indent..] } else { "" })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out.trim_start_matches('\n').to_string()
}

/// Convenience for tests that only need a path on disk.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, dedent(text)).expect("write file");
    path
}

/// Writes a file into a directory (no dedent: PEM text).
pub fn write_raw(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}
