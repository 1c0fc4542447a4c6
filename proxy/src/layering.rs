//! A check that the data path's modules import each other in one direction only.
//!
//! Why: a module that imports one that imports it back cannot be read, tested or replaced on
//! its own; the fast HTTP/1.1 transport, the listener and the phases once did exactly that.
//! This test reads `proxy/src` as text, finds every `crate::…` and `super::…` path outside
//! `#[cfg(test)]` code, resolves it to the module (file) it names, and fails on any cycle in
//! that graph, printing it. `lib.rs` (the crate's index of modules and re-exports) is not a
//! node: everything may name what it re-exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`upstream::h2`) → source text, for every file under `src`.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let name = parts.join("::");
            if name == "lib" || name == "layering" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            out.insert(name, text);
        }
    }
    out
}

/// The text without comments and without the trailing `#[cfg(test)]` part.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that follows `prefix` (`crate::` or `super::`), with `{a, b::c}` groups
/// expanded one level.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        out.extend(read_path(rest));
    }
    out
}

fn read_path(s: &str) -> Vec<Vec<String>> {
    let mut segments = Vec::new();
    let mut s = s;
    loop {
        let ident: String = s
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            if let Some(group) = s.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                return inner
                    .split(',')
                    .flat_map(|item| read_path(item.trim()))
                    .map(|tail| segments.iter().cloned().chain(tail).collect())
                    .collect();
            }
            break;
        }
        s = &s[ident.len()..];
        segments.push(ident);
        match s.strip_prefix("::") {
            Some(next) => s = next,
            None => break,
        }
    }
    vec![segments]
}

/// The longest known module that `path` starts with.
fn resolve(path: &[String], known: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| known.contains(m))
}

/// `h2` for a line `mod h2;` or `pub(crate) mod h2;`.
fn declared_child(line: &str) -> Option<String> {
    let line = line.trim();
    let rest = line.strip_suffix(';')?;
    let name = rest.rsplit_once("mod ")?.1;
    let is_ident = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    (is_ident && !rest.contains('{')).then(|| name.to_string())
}

fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (name, text) in mods {
        let code = code(text);
        let parent: Vec<String> = {
            let mut p: Vec<String> = name.split("::").map(str::to_string).collect();
            p.pop();
            p
        };
        let mut targets: Vec<Vec<String>> = paths_after(&code, "crate::");
        for tail in paths_after(&code, "super::") {
            targets.push(parent.iter().cloned().chain(tail).collect());
        }
        // Children declared here (`mod h2;`) are named without a prefix (`h2::send`).
        let own: Vec<String> = name.split("::").map(str::to_string).collect();
        for child in code.lines().filter_map(declared_child) {
            for tail in paths_after(&code, &format!("{child}::")) {
                let path = own.iter().cloned().chain([child.clone()]).chain(tail);
                targets.push(path.collect());
            }
        }
        let to: BTreeSet<String> = targets
            .iter()
            .filter_map(|p| resolve(p, &known))
            .filter(|t| t != name)
            .collect();
        graph.insert(name.clone(), to);
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = edges(&modules(&src));
    assert!(graph.len() > 5, "found too few modules: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle in proxy/src: {}", cycle.join(" → "));
    }
}

#[test]
fn the_checker_sees_paths_and_groups() {
    let code = "use crate::a::{b, c::D};\nlet x = super::e::f();\n";
    assert_eq!(
        paths_after(code, "crate::"),
        [vec!["a", "b"], vec!["a", "c", "D"]]
    );
    assert_eq!(paths_after(code, "super::"), [vec!["e", "f"]]);
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}
