//! `docs/CONFIG.md` against the decoder: every accepted field documented, every documented
//! field accepted, and the reference's complete example a valid config that writes every
//! field. When this fails, its message says what to add where — it is meant to be read by
//! whoever just added a field.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

const DOC: &str = "docs/CONFIG.md";
/// The heading whose ```yaml block is the complete example.
const EXAMPLE_HEADING: &str = "## Complete example";
/// Field | Type | Default | What it does | Example | When wrong.
const COLUMNS: usize = 6;

fn doc_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CONFIG.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// One documented field: a table row whose first cell is a backticked path.
struct Row {
    path: String,
    section: String,
    line: usize,
    cells: Vec<String>,
}

/// Splits a Markdown table row on `|` that are not escaped as `\|`.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                out.last_mut().unwrap().push('|');
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.iter().map(|c| c.trim().to_string()).collect()
}

fn rows(doc: &str) -> Vec<Row> {
    let mut section = String::from("(top of the file)");
    let mut rows = Vec::new();
    for (i, line) in doc.lines().enumerate() {
        if line.starts_with("## ") {
            section = line.to_string();
        }
        if !line.starts_with("| `") {
            continue;
        }
        let cells = cells(line);
        let path = cells[0].trim_matches('`').to_string();
        rows.push(Row {
            path,
            section: section.clone(),
            line: i + 1,
            cells,
        });
    }
    rows
}

/// The first ```yaml block under [`EXAMPLE_HEADING`], and the line it starts on.
fn complete_example(doc: &str) -> Option<(String, usize)> {
    let lines: Vec<&str> = doc.lines().collect();
    let heading = lines.iter().position(|l| l.starts_with(EXAMPLE_HEADING))?;
    let open = heading
        + lines[heading..]
            .iter()
            .position(|l| l.trim() == "```yaml")?;
    let close = open + 1 + lines[open + 1..].iter().position(|l| l.trim() == "```")?;
    Some((lines[open + 1..close].join("\n"), open + 2))
}

/// How many leading segments two field paths share.
fn shared(a: &str, b: &str) -> usize {
    a.split('.')
        .zip(b.split('.'))
        .take_while(|(x, y)| x == y)
        .count()
}

#[test]
fn the_config_reference_documents_exactly_the_fields_the_decoder_accepts() {
    let doc = doc_text();
    let Some((example, example_line)) = complete_example(&doc) else {
        panic!("{DOC} needs a section `{EXAMPLE_HEADING}` with one ```yaml block");
    };
    let paths = fields(&example, "complete example").unwrap_or_else(|errors| {
        panic!(
            "the complete example in {DOC} (its yaml block starts on line {example_line}) \
             is not a valid config; fix it (line numbers count from the block's first line):\n{errors}"
        )
    });
    let rows = rows(&doc);
    let documented: BTreeMap<&str, &Row> = rows.iter().map(|r| (r.path.as_str(), r)).collect();
    let mut problems = Vec::new();

    let mut seen = BTreeSet::new();
    for r in &rows {
        if !seen.insert(r.path.as_str()) {
            problems.push(format!(
                "line {}: `{}` has a second row; keep one",
                r.line, r.path
            ));
        }
        if r.cells.len() != COLUMNS || r.cells.iter().any(String::is_empty) {
            problems.push(format!(
                "line {}: the row for `{}` needs {COLUMNS} non-empty cells (Field | Type | \
                 Default | What it does | Example | When wrong; write — for none), found {}",
                r.line,
                r.path,
                r.cells.len()
            ));
        }
    }
    for path in paths.accepted.difference(&paths.written) {
        problems.push(format!(
            "`{path}` is accepted by the decoder but the complete example does not write it: \
             add it to the yaml block under `{EXAMPLE_HEADING}` (a block's sub-fields are only \
             checked once the example uses it)"
        ));
    }
    for path in &paths.accepted {
        if documented.contains_key(path.as_str()) {
            continue;
        }
        // Next to its closest documented relative; a new top-level field next to the others.
        let nearest = rows
            .iter()
            .max_by_key(|r| (shared(&r.path, path), r.line))
            .filter(|r| shared(&r.path, path) > 0)
            .or_else(|| rows.iter().rev().find(|r| !r.path.contains(['.', '['])));
        let place = match nearest {
            Some(r) => format!(
                "in section `{}`, after the row for `{}` (line {})",
                r.section, r.path, r.line
            ),
            None => "in a new `## ` section for it".to_string(),
        };
        problems.push(format!(
            "`{path}` is accepted by the decoder but not documented: add a row {place}:\n    \
             | `{path}` | TYPE | DEFAULT | WHAT IT DOES | `EXAMPLE` | WHAT `switchyard check` SAYS WHEN IT IS WRONG |"
        ));
    }
    let accepted: BTreeSet<&str> = paths.accepted.iter().map(String::as_str).collect();
    for r in rows.iter().filter(|r| !accepted.contains(r.path.as_str())) {
        problems.push(format!(
            "line {}: `{}` is documented (section `{}`) but the decoder accepts no such field: \
             rename or remove the row (paths use <name> for names you choose and [] for list \
             items, e.g. services.<name>.versions.<name>.weight)",
            r.line, r.path, r.section
        ));
    }
    assert!(
        problems.is_empty(),
        "{DOC} is out of step with the config decoder (config/src/{{file,service,rollout}}.rs):\n\n- {}\n\n\
         ({} fields accepted, {} documented; this check: config/src/fields/tests.rs, \
         `cargo test -p switchyard-config reference`)",
        problems.join("\n- "),
        paths.accepted.len(),
        rows.len()
    );
}

#[test]
fn field_paths_use_patterns_for_names_and_list_items() {
    let paths = fields(
        r#"
listeners: [{ name: public, address: "127.0.0.1:8080", tls: { certificates: [{ cert: a.pem, key: b.pem }] } }]
services:
  api.v2:
    versions:
      blue.1: { release: v1, backends: ["127.0.0.1:9001"] }
"#,
        "test.yaml",
    )
    .expect("valid");
    for path in [
        "listeners",
        "listeners[].tls.certificates[].cert",
        "services.<name>.versions.<name>.backends",
        "services.<name>.rollout",
    ] {
        assert!(
            paths.accepted.contains(path),
            "{path} in {:?}",
            paths.accepted
        );
    }
    assert!(paths
        .written
        .contains("services.<name>.versions.<name>.release"));
    assert!(!paths.written.contains("services.<name>.rollout"));
    // A mapping the document never reaches is not seen.
    assert!(!paths.accepted.contains("services.<name>.rollout.steps"));
}

#[test]
fn a_document_with_errors_gives_the_errors() {
    let errors = fields("listeners: 3\n", "bad.yaml").unwrap_err();
    assert!(errors.to_string().contains("bad.yaml:1:"), "{errors}");
}
