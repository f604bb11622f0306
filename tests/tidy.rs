//! The layering docs/ARCHITECTURE.md promises ("Architecture invariant" lines), checked
//! against the source: which module may name which (`crate::X` paths in code, comments
//! left out), that the sans-IO modules name no runtime, and that no function outside tests
//! is longer than a screen. A change that breaks one fails here with the file and line.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The top module a source file belongs to: `hub` for `src/hub/room.rs`, `event` for
/// `src/event.rs`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// The lines of `text` that are code, numbered from 1, up to its `#[cfg(test)]` module:
/// comment lines are blank, so that prose naming a module is not an import.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, line)| line.trim() != "#[cfg(test)]")
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(n, line)| (n + 1, line))
        .collect()
}

/// The crate modules a line names (`crate::hub::Room` names `hub`).
fn named(line: &str) -> Vec<&str> {
    line.match_indices("crate::")
        .map(|(at, _)| {
            let rest = &line[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// Who may not name whom: (modules, the modules they never name, why).
const FORBIDDEN: &[(&[&str], &[&str], &str)] = &[
    (
        &[
            "event", "protocol", "store", "metrics", "broker", "auth", "config", "hub", "session",
            "wire", "webhook", "cli",
        ],
        &["transport", "http", "grpc", "server"],
        "nothing below the edges imports them",
    ),
    (
        &["transport"],
        &["http", "grpc", "server"],
        "transports never import HTTP, gRPC or the server",
    ),
    (
        &["grpc"],
        &["http", "server"],
        "gRPC never imports HTTP or the server",
    ),
    (&["http"], &["server"], "HTTP never imports the server"),
    (
        &["event"],
        &[
            "protocol", "store", "metrics", "broker", "auth", "config", "hub", "session", "wire",
            "webhook",
        ],
        "event.rs imports nothing of ours",
    ),
    (
        &["protocol"],
        &[
            "event", "store", "metrics", "broker", "auth", "config", "hub", "session", "wire",
            "webhook",
        ],
        "protocol/ is pure functions over bytes",
    ),
    (
        &["store"],
        &[
            "metrics", "broker", "auth", "config", "hub", "session", "wire", "webhook",
        ],
        "store/ imports event only",
    ),
    (
        &["broker"],
        &["hub", "session", "wire", "webhook", "auth"],
        "broker/ reaches rooms only by name, through Handler",
    ),
    (
        &["hub"],
        &["session", "webhook"],
        "the hub names no session and no backend",
    ),
];

#[test]
fn modules_import_only_what_the_architecture_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for file in sources(&src) {
        let module = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in code_lines(&text) {
            for name in named(line) {
                for (who, never, why) in FORBIDDEN {
                    if who.contains(&module.as_str()) && never.contains(&name) {
                        broken.push(format!(
                            "{}:{number}: {module} names crate::{name} ({why})",
                            file.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "\n{}", broken.join("\n"));
}

#[test]
fn protocol_and_wire_do_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for dir in ["protocol", "wire"] {
        for file in sources(&src.join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (number, line) in code_lines(&text) {
                if line.contains("tokio") || line.contains("std::net") || line.contains("std::fs") {
                    broken.push(format!("{}:{number}: {}", file.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "sans-IO code names IO:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The line reader and the name finder, on lines like the ones they judge.
    assert_eq!(
        named("use crate::hub::{Room, crate::wire::x};"),
        ["hub", "wire"]
    );
    let text = "use a;\n// crate::http in prose\nfn f() {}\n#[cfg(test)]\nuse crate::http;\n";
    let lines = code_lines(text);
    assert_eq!(lines, [(1, "use a;"), (3, "fn f() {}")]);
    let src = Path::new("/r/src");
    assert_eq!(module_of(src, Path::new("/r/src/hub/room.rs")), "hub");
    assert_eq!(module_of(src, Path::new("/r/src/event.rs")), "event");
}
