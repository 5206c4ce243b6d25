//! The shape of the broker package (issue 16), checked on its source text.
//!
//! - The production library does not reach the demo: outside `src/demo*`,
//!   `src/dev.rs` and the CLI's development commands, no file names the demo,
//!   development mode, the hall client or the crates only they use, except
//!   `src/lib.rs` declaring them behind `#[cfg(feature = "demo")]`.
//!   (`scripts/test.sh` also builds the library and the binary with
//!   `--no-default-features`, which fails if anything outside the gate
//!   imports them.)
//! - The demo backend, the opening hall and the load generator call the broker's
//!   relying-party API only through `bzt-rp-client`: no route of it written out,
//!   no API key set by hand.
//! - No import circle among the broker's files: following every `crate::`,
//!   `super::` and `self::` path from file to file never comes back to where it
//!   started. A folder's `mod.rs` and the files below it are exempt from each
//!   other (a parent declares its children and they use its shared types);
//!   siblings are not (that is how `broker.rs` and `conversations.rs` once
//!   imported each other).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Names only the demo side may use.
const DEMO_NAMES: [&str; 8] = [
    "crate::demo",
    "crate::dev::",
    "crate::hall",
    "bzt_rp_client",
    "bzt_devca",
    "bzt_phone::",
    "tower_http",
    "bzt::demo",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Is `path` (relative to `src/`) the demo side: the demo itself, development
/// mode, or the binary's CLI (whose development commands are gated there)?
fn is_demo_side(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    s == "demo.rs"
        || s.starts_with("demo/")
        || s == "dev.rs"
        || s.starts_with("cli/")
        || s == "main.rs"
}

#[test]
fn the_library_outside_the_demo_names_nothing_of_it() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut offending = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(src()).expect("under src/");
        if is_demo_side(rel) {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("read a source file");
        let mut gated = false;
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                continue;
            }
            // `src/lib.rs` declares the demo modules behind the feature.
            let is_gated = gated;
            gated = trimmed.starts_with("#[cfg(feature = \"demo\")]");
            if is_gated && rel == Path::new("lib.rs") {
                continue;
            }
            for name in DEMO_NAMES {
                if line.contains(name) {
                    offending.push(format!("src/{}:{}: {}", rel.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offending.is_empty(),
        "the production library names the demo:\n{}",
        offending.join("\n")
    );
    // The check reads the files it should: the demo's own files do name it.
    let demo = std::fs::read_to_string(src().join("demo/bidfile.rs")).expect("src/demo/bidfile.rs");
    assert!(
        demo.contains("crate::hall"),
        "the check would not see a demo import"
    );
}

/// The relying-party API's routes: the demo, the hall and the load generator call them only
/// through `bzt-rp-client`, never with a URL (and a `json!` body) of their own.
const RP_API_ROUTES: [&str; 2] = ["/v1/sessions", "/v1/conversations"];

/// The lines of `text` that call the relying-party API by hand: a route of it written out, or
/// the API key set on a request. The browser's and phone's WebSocket URLs (`.../ws?t=`) are
/// not the relying-party API.
fn hand_built_rp_calls(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| {
            let names_route =
                RP_API_ROUTES.iter().any(|r| line.contains(r)) && !line.contains("/ws?");
            names_route || line.contains("bearer_auth(")
        })
        .map(|(n, line)| (n + 1, line.trim().to_owned()))
        .collect()
}

#[test]
fn the_demo_the_hall_and_the_load_generator_call_the_broker_through_the_rp_client() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![src().join("demo.rs"), src().join("cli/hall.rs")];
    rust_files(&src().join("demo"), &mut files);
    rust_files(&root.join("loadtest/src"), &mut files);
    let mut offending = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read a source file");
        for (n, line) in hand_built_rp_calls(&text) {
            offending.push(format!("{}:{n}: {line}", path.display()));
        }
    }
    assert!(
        offending.is_empty(),
        "relying-party calls built by hand (use bzt-rp-client):\n{}",
        offending.join("\n")
    );
    // They do call the broker, through the client.
    for (file, client) in [
        ("src/demo.rs", "RpClient"),
        ("src/cli/hall.rs", "HallClient"),
        ("loadtest/src/flows.rs", "RpClient"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect("read a source file");
        assert!(text.contains(client), "{file} does not use {client}");
    }
    // The check sees what the demo used to write.
    let old = r#"            .post(format!("{}/v1/sessions", rp.broker_url))
        let resp = req.bearer_auth(&self.api_key).send().await
        let url = format!("{}/v1/conversations/{}/ws?t={token}", base, id);"#;
    assert_eq!(
        hand_built_rp_calls(old)
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

/// The module path of a file under `src/` (`http/mod.rs` and `http.rs` are both `http`).
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if parts
        .last()
        .is_some_and(|p| ["mod", "lib", "main"].contains(&p.as_str()))
    {
        parts.pop();
    }
    parts
}

/// The file a module path points into: the longest prefix that is a file of `files`.
fn file_of(path: &[String], files: &BTreeMap<String, String>) -> String {
    (1..=path.len())
        .rev()
        .flat_map(|k| {
            let stem = path[..k].join("/");
            [format!("{stem}.rs"), format!("{stem}/mod.rs")]
        })
        .find(|f| files.contains_key(f))
        .unwrap_or_else(|| "lib.rs".to_owned())
}

/// The paths of a use tree starting at `text`: `a::b`, `a::{b, c::d}`, `{a, b}`.
fn use_tree(text: &str) -> Vec<Vec<String>> {
    fn tree(s: &[u8], i: &mut usize) -> Vec<Vec<String>> {
        if s.get(*i) == Some(&b'{') {
            *i += 1;
            let mut all = Vec::new();
            loop {
                while s.get(*i).is_some_and(|c| b" \n\t\r,".contains(c)) {
                    *i += 1;
                }
                match s.get(*i) {
                    Some(b'}') | None => {
                        *i += 1;
                        return all;
                    }
                    _ => all.extend(tree(s, i)),
                }
            }
        }
        let mut segs = Vec::new();
        loop {
            let start = *i;
            while s
                .get(*i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
            {
                *i += 1;
            }
            if *i == start {
                return vec![segs];
            }
            segs.push(String::from_utf8_lossy(&s[start..*i]).into_owned());
            if s.get(*i..*i + 2) != Some(b"::") {
                return vec![segs];
            }
            *i += 2;
            if s.get(*i) == Some(&b'{') {
                return tree(s, i)
                    .into_iter()
                    .map(|rest| segs.iter().cloned().chain(rest).collect())
                    .collect();
            }
        }
    }
    tree(text.as_bytes(), &mut 0)
}

/// File → the files it names, from its `crate::`, `super::` and `self::` paths.
fn imports(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (rel, text) in files {
        let here = module_of(rel);
        let mut named = BTreeSet::new();
        for line in text.lines().map(|l| l.split("//").next().unwrap_or("")) {
            for (at, _) in line.match_indices("::") {
                let before = &line[..at];
                let word_start = before
                    .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map_or(0, |p| p + 1);
                let mut base = match &before[word_start..] {
                    "crate" => Vec::new(),
                    "self" => here.clone(),
                    "super" if !before[..word_start].ends_with("::") => {
                        here[..here.len().saturating_sub(1)].to_vec()
                    }
                    _ => continue,
                };
                let mut rest = &line[at + 2..];
                while let Some(r) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = r;
                }
                for path in use_tree(rest) {
                    let full: Vec<String> = base.iter().cloned().chain(path).collect();
                    named.insert(file_of(&full, files));
                }
            }
        }
        named.remove(rel);
        graph.insert(rel.clone(), named);
    }
    graph
}

/// Is `a` a folder's `mod.rs` and `b` a file below that folder?
fn is_parent_of(a: &str, b: &str) -> bool {
    a.strip_suffix("mod.rs")
        .is_some_and(|dir| b.starts_with(dir))
}

/// The circles of `graph`, each as the path that closes it.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit(
        v: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = path.iter().position(|p| p == v) {
            let mut circle = path[at..].to_vec();
            circle.push(v.to_owned());
            found.push(circle);
            return;
        }
        if !done.insert(v.to_owned()) {
            return;
        }
        path.push(v.to_owned());
        for w in graph.get(v).into_iter().flatten() {
            visit(w, graph, path, done, found);
        }
        path.pop();
    }
    let (mut done, mut found) = (BTreeSet::new(), Vec::new());
    for v in graph.keys() {
        visit(v, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn sibling_imports(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    imports(files)
        .into_iter()
        .map(|(v, named)| {
            let siblings = named
                .into_iter()
                .filter(|w| !is_parent_of(&v, w) && !is_parent_of(w, &v))
                .collect();
            (v, siblings)
        })
        .collect()
}

#[test]
fn no_import_circle_among_the_brokers_files() {
    let mut paths = Vec::new();
    rust_files(&src(), &mut paths);
    let files: BTreeMap<String, String> = paths
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(src()).expect("under src/");
            let text = std::fs::read_to_string(p).expect("read a source file");
            (rel.to_string_lossy().replace('\\', "/"), text)
        })
        .collect();
    let graph = sibling_imports(&files);
    assert!(
        graph.values().map(BTreeSet::len).sum::<usize>() > 50,
        "the import graph is suspiciously small: {graph:?}"
    );
    assert_eq!(circles(&graph), Vec::<Vec<String>>::new());

    // The check sees a circle when there is one: two siblings naming each other,
    // grouped and nested imports included.
    let planted: BTreeMap<String, String> = [
        ("lib.rs", "mod a; mod b; mod c;"),
        ("a.rs", "use crate::{c, b::{Thing, other::Deep}};"),
        ("b.rs", "use super::a::Other;"),
        ("c.rs", "fn f() { crate::b::g() }"),
    ]
    .into_iter()
    .map(|(f, t)| (f.to_owned(), t.to_owned()))
    .collect();
    let found = circles(&sibling_imports(&planted));
    assert_eq!(found, vec![vec!["a.rs", "b.rs", "a.rs"]], "{found:?}");
}
