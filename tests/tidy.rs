//! The layering docs/ARCHITECTURE.md promises ("Architecture invariant" lines), checked
//! against the source: which module may name which (`crate::X` paths in code, comments
//! left out), that the sans-IO modules name no runtime, that only the connection driver waits
//! on a client's queue, and that no function outside tests is longer than a screen (80
//! lines). A change that breaks one fails here with the file and line.

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
            "wire", "webhook", "cli", "reply",
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
    (
        &["session", "reply"],
        &["wire"],
        "a session answers with Replies; only wire/ renders them",
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

/// "No transport writes its own loop around `Outbox::wait`": only the connection driver
/// (`transport/link.rs`) and the writer itself wait on a client's queue.
#[test]
fn only_the_connection_driver_waits_on_a_queue() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed = [
        src.join("transport/link.rs"),
        src.join("transport/writer.rs"),
    ];
    let mut broken = Vec::new();
    for file in sources(&src) {
        if allowed.contains(&file) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in code_lines(&text) {
            if line.contains("outbox.wait") || line.contains("Wake::") {
                broken.push(format!("{}:{number}: {}", file.display(), line.trim()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "a loop of its own around Outbox::wait; implement link::Link instead:\n{}",
        broken.join("\n")
    );
}

/// Longest function outside tests, in lines from its `fn` line to its closing brace.
const MAX_FUNCTION_LINES: usize = 80;

/// Each function in `lines` (`code_lines` of one file, whole lines kept) longer than
/// `MAX_FUNCTION_LINES`: its name, first line and length. A function ends at the first line
/// that is its own indentation and a `}`, as rustfmt writes it.
fn long_functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .collect();
    let mut long = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some(name) = fn_name(trimmed) else {
            continue;
        };
        // A declaration, or a function on one line.
        if line.trim_end().ends_with(';') || line.trim_end().ends_with('}') {
            continue;
        }
        let closing = " ".repeat(indent) + "}";
        let end = lines[at..]
            .iter()
            .position(|l| l.trim_end() == closing)
            .map_or(lines.len() - at, |n| n + 1);
        if end > MAX_FUNCTION_LINES {
            long.push((name.to_owned(), at + 1, end));
        }
    }
    long
}

/// The name a line declares a function by (`pub(crate) async fn name(`), if it does.
fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line;
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("async ").unwrap_or(rest);
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(&rest[..end])
}

#[test]
fn no_function_outside_tests_is_longer_than_a_screen() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut long = Vec::new();
    for file in sources(&src) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (name, line, length) in long_functions(&text) {
            long.push(format!(
                "{}:{line}: {name} is {length} lines",
                file.display()
            ));
        }
    }
    assert!(
        long.is_empty(),
        "over {MAX_FUNCTION_LINES} lines; split them:\n{}",
        long.join("\n")
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
    assert_eq!(fn_name("pub(crate) async fn serve(x: u8) {"), Some("serve"));
    assert_eq!(fn_name("let f = 1;"), None);
    let body = "    x();\n".repeat(MAX_FUNCTION_LINES);
    let long = format!("impl A {{\n    fn big() {{\n{body}    }}\n\n    fn small() {{}}\n}}\n");
    assert_eq!(
        long_functions(&long),
        [("big".to_owned(), 2, MAX_FUNCTION_LINES + 2)]
    );
    assert_eq!(module_of(src, Path::new("/r/src/event.rs")), "event");
}
