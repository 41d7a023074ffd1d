//! The shape of `src/`: layers import one way only, and no two files import each
//! other, directly or around a circle.
//!
//! A file's layer is its folder under `src/` (`engine`, `http`, `api`, `relay`,
//! `store`, `cache`, `obs`, `traffic`), or, for a file at the top, its own name
//! (`config`; `lib` and `main` may use anything). Imports are read as text: every
//! `crate::…` and `super::…` path outside comments and before the file's
//! `#[cfg(test)]` section, with `{…}` groups expanded, is resolved to the deepest
//! file that defines it. A parent module contains its children, so a child that
//! imports from its parent's `mod.rs` closes a circle: children import from their
//! siblings' files instead.
//!
//! The checker is run on a small made-up tree first, to show that it does catch a
//! wrong-way import and a circle.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which layers each layer may import. Anything not listed is refused.
const ALLOWED: &[(&str, &[&str])] = &[
    ("http", &[]),
    ("store", &["obs", "traffic"]),
    ("obs", &[]),
    ("traffic", &[]),
    ("cache", &[]),
    ("relay", &["cache", "obs", "store", "traffic"]),
    ("config", &["http"]),
    (
        "api",
        &["cache", "config", "http", "obs", "relay", "store", "traffic"],
    ),
    ("engine", &["api", "config", "http", "obs", "traffic"]),
];

/// Source files by path relative to `src/` (`api/mod.rs`), with their text.
type Tree = BTreeMap<String, String>;

fn read_tree(dir: &Path, prefix: &str, tree: &mut Tree) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let path = entry.path();
        if path.is_dir() {
            read_tree(&path, &format!("{prefix}{name}/"), tree);
        } else if name.ends_with(".rs") {
            tree.insert(format!("{prefix}{name}"), std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The module path of a file: `api/mod.rs` → [api], `api/auth.rs` → [api, auth],
/// `lib.rs` → [].
fn module_of(file: &str) -> Vec<String> {
    let stem = file.trim_end_matches(".rs");
    let mut segs: Vec<String> = stem.split('/').map(String::from).collect();
    if matches!(segs.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        segs.pop();
    }
    segs
}

/// The file that defines the longest prefix of `path`.
fn resolve(tree: &Tree, path: &[String]) -> String {
    for k in (1..=path.len()).rev() {
        let base = path[..k].join("/");
        for candidate in [format!("{base}.rs"), format!("{base}/mod.rs")] {
            if tree.contains_key(&candidate) {
                return candidate;
            }
        }
    }
    "lib.rs".to_string()
}

/// Production code of a file: comments dropped, the test section cut off.
fn production(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Expands the path (with `{…}` groups) that starts at `s` into its leaf paths.
fn expand(s: &str) -> Vec<Vec<String>> {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            if let Some(group) = rest.strip_prefix('{') {
                // Split the group at its top-level commas; each item continues the path.
                let mut depth = 0;
                let mut start = 0;
                let mut items = Vec::new();
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            items.push(&group[start..i]);
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            items.push(&group[start..i]);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                let mut all = Vec::new();
                for item in items {
                    for tail in expand(item.trim_start()) {
                        let mut p = segs.clone();
                        p.extend(tail);
                        all.push(p);
                    }
                }
                return all;
            }
            return vec![segs];
        }
        rest = &rest[ident.len()..];
        segs.push(ident);
        match rest.strip_prefix("::") {
            Some(r) => rest = r.trim_start(),
            None => return vec![segs],
        }
    }
}

/// Every file each file imports from (itself excluded).
fn imports(tree: &Tree) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for (file, text) in tree {
        let here = module_of(file);
        let code = production(text);
        let mut to = BTreeSet::new();
        for (prefix, base) in [
            ("crate::", Vec::new()),
            ("super::", here[..here.len().saturating_sub(1)].to_vec()),
        ] {
            let mut from = 0;
            while let Some(at) = code[from..].find(prefix) {
                let start = from + at;
                from = start + prefix.len();
                // `crate::` inside a longer name (`mycrate::`) is not ours.
                let before = code[..start].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                for tail in expand(&code[from..]) {
                    let mut path = base.clone();
                    path.extend(tail);
                    let target = resolve(tree, &path);
                    if &target != file {
                        to.insert(target);
                    }
                }
            }
        }
        edges.insert(file.clone(), to);
    }
    // A parent module contains its children.
    for file in tree.keys() {
        let here = module_of(file);
        if !here.is_empty() {
            let parent = resolve(tree, &here[..here.len() - 1]);
            if &parent != file {
                edges.entry(parent).or_default().insert(file.clone());
            }
        }
    }
    edges
}

fn layer_of(file: &str) -> &str {
    match file.split_once('/') {
        Some((dir, _)) => dir,
        None => file.trim_end_matches(".rs"),
    }
}

/// Every import that crosses layers the wrong way, as readable lines.
fn wrong_way(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for (file, targets) in edges {
        let from = layer_of(file);
        if matches!(from, "lib" | "main") {
            continue;
        }
        let allowed = ALLOWED
            .iter()
            .find(|(l, _)| *l == from)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("{file}: layer {from} is not in the ALLOWED table"));
        for target in targets {
            let to = layer_of(target);
            if to != from && to != "lib" && !allowed.contains(&to) {
                found.push(format!(
                    "src/{file} (layer {from}) imports src/{target} (layer {to}); {from} may import only {allowed:?}"
                ));
            }
        }
    }
    found
}

/// Every circle of imports among files, each as the files around it.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Depth-first search with a stack of the path: a back edge is a circle.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let at = path.iter().position(|p| p == next).unwrap();
                    found.push(path[at..].to_vec());
                }
                Some(_) => {}
                None => visit(next, edges, state, path, found),
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    let mut found = Vec::new();
    for node in edges.keys() {
        if !state.contains_key(node) {
            visit(node, edges, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[test]
fn the_checker_catches_a_wrong_way_import_and_a_circle() {
    let tree: Tree = [
        ("lib.rs", "mod http; mod api;"),
        ("http/mod.rs", "pub mod parse;"),
        // The bottom layer reaching up.
        ("http/parse.rs", "use crate::api::route::Route;"),
        ("api/mod.rs", "mod route; pub use route::Route; pub struct State;"),
        // A child importing its parent's own item: a circle with the parent.
        (
            "api/route.rs",
            "use super::{State, other::X};\n#[cfg(test)]\nuse crate::http::parse;",
        ),
        ("api/other.rs", "pub struct X;"),
    ]
    .into_iter()
    .map(|(f, t)| (f.to_string(), t.to_string()))
    .collect();
    let edges = imports(&tree);
    assert!(edges["api/route.rs"].contains("api/other.rs"), "{edges:?}");
    assert!(
        !edges["api/route.rs"].contains("http/parse.rs"),
        "test code does not count"
    );
    let wrong = wrong_way(&edges);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(wrong[0].starts_with("src/http/parse.rs (layer http) imports src/api/route.rs"));
    let found = circles(&edges);
    assert!(
        found
            .iter()
            .any(|c| c.contains(&"api/mod.rs".to_string()) && c.contains(&"api/route.rs".to_string())),
        "{found:?}"
    );
}

#[test]
fn layers_import_one_way_and_no_files_import_in_a_circle() {
    let mut tree = Tree::new();
    read_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), "", &mut tree);
    assert!(tree.len() > 30, "src/ was not read");
    let edges = imports(&tree);
    let wrong = wrong_way(&edges);
    assert!(wrong.is_empty(), "imports the wrong way:\n{}", wrong.join("\n"));
    let found = circles(&edges);
    assert!(
        found.is_empty(),
        "circles of imports:\n{}",
        found
            .iter()
            .map(|c| c.join(" -> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
