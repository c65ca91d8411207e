//! The README and docs/ say what the code does, where a machine can tell: every repository path
//! they name exists, every `orderly` and `orderly-loadtest` command they show parses with the
//! binaries' own command lines, and every `ORDERLY_*` setting they name is one orderly or its
//! scripts read.

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::helpers::repository_root;

/// The top-level names a path in the docs starts with.
const TOP: [&str; 16] = [
    "src/",
    "docs/",
    "scripts/",
    "deploy/",
    "loadtest/",
    "lua/",
    "migrations/",
    "tests/",
    ".ci/",
    "proptest-regressions/",
    "Cargo.toml",
    "Cargo.lock",
    "Dockerfile",
    "docker-compose.yml",
    "README.md",
    "LICENSE",
];

/// README.md and every page of docs/, with their text.
fn pages() -> Vec<(PathBuf, String)> {
    let root = PathBuf::from(repository_root());
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            (f, text)
        })
        .collect()
}

/// The text of every inline code span and every line of every fenced block.
fn code(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            found.push(line.trim().to_owned());
            continue;
        }
        found.extend(
            line.split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, span)| span.trim().to_owned()),
        );
    }
    found
}

/// Markdown link targets that are files of the repository (not web addresses or anchors).
fn links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|target| target.split('#').next().unwrap_or_default().to_owned())
        .filter(|t| !t.is_empty() && !t.contains("://") && !t.starts_with("mailto:"))
        .collect()
}

/// Whether a code span is a concrete path (not a pattern with a placeholder in it).
fn concrete_path(span: &str) -> Option<&str> {
    let span = span.split_whitespace().next()?;
    let span = span.trim_end_matches([',', '.', ':', ';']);
    let is_path = TOP.iter().any(|top| span.starts_with(top))
        && !span.contains(['<', '>', '*', '{', '$', '…', '|', '[']);
    // `src/domain/saga.rs:120` names a line of a file.
    is_path.then(|| span.split(':').next().unwrap_or(span))
}

#[test]
fn every_path_the_docs_name_exists() {
    let root = PathBuf::from(repository_root());
    let mut missing = Vec::new();
    for (page, text) in pages() {
        let here = page.parent().unwrap().to_owned();
        let spans = code(&text);
        let named = spans
            .iter()
            .filter_map(|s| concrete_path(s))
            .map(|p| root.join(p));
        let linked = links(&text).into_iter().map(|l| here.join(l));
        for path in named.chain(linked) {
            if !path.exists() {
                missing.push(format!(
                    "{}: {}",
                    page.strip_prefix(&root).unwrap().display(),
                    path.strip_prefix(&root).unwrap_or(&path).display()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths the docs name that do not exist:\n{}",
        missing.join("\n")
    );
}

/// A command as the docs show it, made into the words a shell would pass: comments and what
/// follows a pipe or redirect dropped, optional parts (`[--check]`) kept, and placeholders
/// (`ID`, `Q`, `<id>`) given a value of their kind.
fn words(command: &str) -> Vec<String> {
    let command = command.split(" #").next().unwrap_or(command);
    let command = command
        .split(['|', '>', ';', '&'])
        .next()
        .unwrap_or(command);
    let mut words: Vec<String> = Vec::new();
    for word in command.replace(['[', ']'], " ").split_whitespace() {
        let word = word.trim_matches(['"', '\'']);
        let placeholder = word.starts_with('<')
            || (word.len() <= 3 && word.chars().all(|c| c.is_ascii_uppercase()));
        let value = match (placeholder, words.last().map(String::as_str)) {
            (true, Some("--queue")) => "payments".to_owned(),
            (true, _) => "x".to_owned(),
            (false, _) => word.to_owned(),
        };
        words.push(value);
    }
    words
}

/// Every `orderly …` and `orderly-loadtest …` command the docs show, with where.
fn commands(program: &str) -> Vec<(String, String)> {
    let root = PathBuf::from(repository_root());
    let mut found = Vec::new();
    for (page, text) in pages() {
        let name = page.strip_prefix(&root).unwrap().display().to_string();
        for span in code(&text) {
            let span = span.trim_start_matches("$ ");
            let command = span.strip_prefix(&format!("{program} ")).or_else(|| {
                (program == "orderly-loadtest")
                    .then(|| span.strip_prefix("scripts/loadtest "))
                    .flatten()
            });
            // A summary line (`list|show|replay`, `…`) or a sentence (the `orderly is up …`
            // that scripts/up prints) is prose, not a command.
            if let Some(command) = command
                && !command.contains(['…', '|'])
                && !command.ends_with('.')
            {
                found.push((name.clone(), command.to_owned()));
            }
        }
    }
    found
}

fn refused<P: Parser>(program: &str) -> (usize, Vec<String>) {
    let commands = commands(program);
    let refused = commands
        .iter()
        .filter_map(|(page, command)| {
            let mut args = vec![program.to_owned()];
            args.extend(words(command));
            match P::try_parse_from(&args) {
                Ok(_) => None,
                Err(e)
                    if matches!(
                        e.kind(),
                        clap::error::ErrorKind::DisplayHelp
                            | clap::error::ErrorKind::DisplayVersion
                    ) =>
                {
                    None
                }
                Err(e) => Some(format!("{page}: `{program} {command}`: {}", e.kind())),
            }
        })
        .collect();
    (commands.len(), refused)
}

#[test]
fn every_orderly_command_the_docs_show_parses() {
    let (shown, refused) = refused::<orderly::cli::Cli>("orderly");
    assert!(
        shown >= 10,
        "only {shown} orderly commands found in the docs"
    );
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

#[test]
fn every_load_test_command_the_docs_show_parses() {
    let (shown, refused) = refused::<orderly_loadtest::cli::Cli>("orderly-loadtest");
    assert!(
        shown >= 5,
        "only {shown} load test commands found in the docs"
    );
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

#[test]
fn every_setting_the_docs_name_is_read() {
    let root = PathBuf::from(repository_root());
    let read = |p: &str| std::fs::read_to_string(Path::new(&root).join(p)).unwrap();
    // Read by the binary's settings, by the scripts around it (the cache directory, say), or by
    // a test (ORDERLY_BLESS).
    let mut known = read("src/config.rs") + &read("src/http/openapi.rs");
    for entry in std::fs::read_dir(root.join("scripts")).unwrap() {
        known.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let mut unknown = Vec::new();
    for (page, text) in pages() {
        for (at, _) in text.match_indices("ORDERLY_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let name = name.trim_end_matches('_');
            // `ORDERLY_*` names them all.
            if name != "ORDERLY"
                && !known.contains(&format!("\"{name}\""))
                && !known.contains(&format!("{name}="))
            {
                unknown.push(format!(
                    "{}: {name}",
                    page.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "settings the docs name that nothing reads:\n{}",
        unknown.join("\n")
    );
}
