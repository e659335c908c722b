//! The direction of use between the folders of `src/`: each layer may use
//! only the layers below it (and itself). A `use crate::…` or `crate::…`
//! path to a higher layer fails this test, naming the file and line.

use std::path::{Path, PathBuf};

/// Layers from the bottom up; modules on one line share a rank.
const LAYERS: &[&[&str]] = &[
    &["error", "settings"],
    &["domain"],
    &["sql"],
    &["plan"],
    &["pg"],
    &["store"],
    &["write"],
    &["ingest"],
    &["serve"],
    &["app", "demo"],
    &["api"],
    &["cli"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level module a file of `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::module` named on a line (in `use` trees and paths alike).
fn crate_refs(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() && after.starts_with('{') {
            // `use crate::{a, b::c}`
            let group: String = after[1..].chars().take_while(|c| *c != '}').collect();
            out.extend(
                group
                    .split(',')
                    .map(|p| p.trim().split("::").next().unwrap_or("").to_owned()),
            );
        } else {
            out.push(name);
        }
        rest = after;
    }
    out
}

/// Lines of `file` that use a layer above `module`'s.
fn violations(src: &Path, file: &Path) -> Vec<String> {
    let Some(module) = module_of(src, file) else {
        return Vec::new();
    };
    if matches!(module.as_str(), "lib" | "main") {
        return Vec::new();
    }
    let own = rank(&module).unwrap_or_else(|| {
        panic!("src/{module} is in no layer: add it to LAYERS in tests/integration/layers.rs")
    });
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for used in crate_refs(line) {
            if let Some(r) = rank(&used)
                && r > own
            {
                out.push(format!(
                    "{}:{}: {module} uses {used}, a layer above it",
                    file.display(),
                    n + 1
                ));
            }
        }
    }
    out
}

#[test]
fn layers_only_use_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let found: Vec<String> = files.iter().flat_map(|f| violations(&src, f)).collect();
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_check_sees_uses_in_every_form() {
    assert_eq!(crate_refs("use crate::serve::cache::Cache;"), ["serve"]);
    assert_eq!(
        crate_refs("use crate::{api, domain::time::Grain};"),
        ["api", "domain"]
    );
    assert_eq!(
        crate_refs("    let x = crate::write::rollups::ensure(crate::pg::x);"),
        ["write", "pg"]
    );
    // A planner that called the write path would be caught.
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan");
    std::fs::create_dir(&plan).unwrap();
    std::fs::write(plan.join("mod.rs"), "use crate::write::rollups;\n").unwrap();
    assert_eq!(
        violations(dir.path(), &plan.join("mod.rs")).len(),
        1,
        "plan -> write must be refused"
    );
}
