//! docs/CONFIG.md cannot drift from the command line: every flag of every
//! command, its `RAGD_*` variable, its default and its choices are in the
//! command's section; every flag a row names exists; and every `RAGD_*`
//! variable the sources read is listed.

use std::path::Path;

use clap::CommandFactory;
use ragd::cli::Cli;

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md");

/// Commands left out of the doc's tables, and why.
const INTERNAL: &[(&str, &str)] = &[(
    "parse",
    "the parser child the workers start, hidden from --help (the doc names it in prose)",
)];

fn doc() -> String {
    std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("read {DOC_PATH}: {e}"))
}

/// The text under "## `ragd <command>`", up to the next level-2 heading.
fn section<'a>(doc: &'a str, command: &str) -> Option<&'a str> {
    let heading = format!("\n## `ragd {command}`\n");
    let start = doc.find(&heading)? + heading.len();
    let rest = &doc[start..];
    Some(&rest[..rest.find("\n## ").unwrap_or(rest.len())])
}

/// The cells of each table row that documents a flag: flag, variable,
/// default, meaning.
fn flag_rows(section: &str) -> Vec<Vec<&str>> {
    section
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

/// `--data-dir` of the cell "`--data-dir DIR`".
fn flag_of(cell: &str) -> &str {
    let inner = cell.trim_matches('`');
    inner.split(' ').next().unwrap_or(inner)
}

/// What is wrong with `section` as the doc of `command`.
fn problems_of(command: &clap::Command, name: &str, section: &str) -> Vec<String> {
    let rows = flag_rows(section);
    let mut problems = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let Some(long) = arg.get_long() else {
            problems.push(format!("ragd {name}: argument {id} has no --flag to document"));
            continue;
        };
        let flag = format!("--{long}");
        let Some(row) = rows.iter().find(|row| flag_of(row[0]) == flag) else {
            problems.push(format!("ragd {name}: {flag} has no row"));
            continue;
        };
        if row.len() != 4 {
            problems.push(format!("ragd {name}: the row of {flag} does not have 4 cells"));
            continue;
        }
        let expected_env = format!("RAGD_{}", long.to_uppercase().replace('-', "_"));
        match arg.get_env().and_then(|env| env.to_str()) {
            Some(env) if env == expected_env => {
                if row[1] != format!("`{env}`") {
                    problems.push(format!(
                        "ragd {name}: the row of {flag} names {} instead of `{env}`",
                        row[1]
                    ));
                }
            }
            // A flag of one command run by hand (`--out`, `--yes`): none.
            None if row[1] == "none" => {}
            None => problems.push(format!(
                "ragd {name}: {flag} has no environment variable, the doc says {}",
                row[1]
            )),
            Some(other) => problems.push(format!(
                "ragd {name}: {flag} falls back to {other}, not to {expected_env}"
            )),
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|value| format!("`{}`", value.to_string_lossy()))
            .collect();
        let expected_default = if defaults.is_empty() {
            "none".to_owned()
        } else {
            defaults.join(", ")
        };
        if row[2] != expected_default {
            problems.push(format!(
                "ragd {name}: the default of {flag} is {expected_default}, the doc says {}",
                row[2]
            ));
        }
        // A switch (`--yes`) takes no value: its true/false are no choices.
        let choices = if arg.get_action().takes_values() {
            arg.get_possible_values()
        } else {
            Vec::new()
        };
        for choice in choices.iter().filter(|v| !v.is_hide_set()) {
            if !row[3].contains(&format!("`{}`", choice.get_name())) {
                problems.push(format!(
                    "ragd {name}: the row of {flag} does not explain `{}`",
                    choice.get_name()
                ));
            }
        }
    }
    for row in &rows {
        let flag = flag_of(row[0]);
        let exists = command
            .get_arguments()
            .any(|arg| arg.get_long().is_some_and(|long| format!("--{long}") == flag));
        if !exists {
            problems.push(format!(
                "ragd {name}: the doc has a row for {flag}, which does not exist"
            ));
        }
    }
    problems
}

/// Every `"RAGD_..."` string literal in the `.rs` files under `dir`.
fn variables_read(dir: &Path, found: &mut Vec<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            variables_read(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text =
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            for (at, _) in text.match_indices("\"RAGD_") {
                let name: String = text[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !found.contains(&name) {
                    found.push(name);
                }
            }
        }
    }
}

#[test]
fn every_flag_and_variable_is_in_config_md() {
    let doc = doc();
    let cli = Cli::command();
    let mut problems = Vec::new();

    // `ragd` without a command runs the server with the flags of `serve`.
    match section(&doc, "serve") {
        Some(serve) => problems.extend(problems_of(&cli, "(no command)", serve)),
        None => problems.push("no section ## `ragd serve`".to_owned()),
    }
    let mut rows_checked = 0;
    // Each command, and each command of a command (`ragd user list`), has
    // a section of its own.
    let mut commands: Vec<(String, &clap::Command)> = cli
        .get_subcommands()
        .map(|c| (c.get_name().to_owned(), c))
        .collect();
    while let Some((name, command)) = commands.pop() {
        if INTERNAL.iter().any(|(internal, _)| *internal == name) {
            continue;
        }
        for sub in command.get_subcommands() {
            commands.push((format!("{name} {}", sub.get_name()), sub));
        }
        match section(&doc, &name) {
            Some(text) => {
                rows_checked += flag_rows(text).len();
                problems.extend(problems_of(command, &name, text));
            }
            None => problems.push(format!("no section ## `ragd {name}`")),
        }
    }
    if flag_rows(&doc).len() != rows_checked {
        problems.push("a flag row stands outside the section of a command".to_owned());
    }
    for (internal, why) in INTERNAL {
        assert!(
            cli.find_subcommand(internal).is_some(),
            "INTERNAL names `{internal}` ({why}), which is no longer a command: drop it"
        );
    }

    let mut variables = Vec::new();
    variables_read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut variables);
    assert!(
        variables.iter().any(|v| v == "RAGD_DATA_DIR"),
        "the scan of src/ found no RAGD_ variable: {variables:?}"
    );
    for variable in variables {
        if !doc.contains(&format!("`{variable}`")) {
            problems.push(format!("{variable} is read in src/ but not in the doc"));
        }
    }

    assert!(
        problems.is_empty(),
        "docs/CONFIG.md is out of date:\n  {}",
        problems.join("\n  ")
    );
}

/// The checks above can fail: a doc without a flag's row, with a wrong
/// default or with a flag that does not exist is reported.
#[test]
fn a_stale_config_md_is_reported() {
    let doc = doc();
    let cli = Cli::command();
    let reindex = cli.find_subcommand("reindex").expect("ragd reindex");
    let good = section(&doc, "reindex").expect("the reindex section");
    assert_eq!(problems_of(reindex, "reindex", good), Vec::<String>::new());

    let missing = good.replace("| `--data-dir DIR` |", "| `--old-dir DIR` |");
    let found = problems_of(reindex, "reindex", &missing);
    assert!(
        found.iter().any(|p| p.contains("--data-dir has no row")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("--old-dir, which does not exist")),
        "{found:?}"
    );

    let wrong_default = good.replace("| `./data` |", "| `/var/lib/ragd` |");
    let found = problems_of(reindex, "reindex", &wrong_default);
    assert!(
        found.iter().any(|p| p.contains("the default of --data-dir")),
        "{found:?}"
    );

    let serve = section(&doc, "serve").expect("the serve section");
    let no_choice = serve.replace("`closed`: registration", "closed: registration");
    let found = problems_of(&cli, "serve", &no_choice);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("--registration does not explain `closed`"),
        "{found:?}"
    );
}
