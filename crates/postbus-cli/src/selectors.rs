//! `postbus selector check` and `postbus selector test`: JMS selectors for people and for CI.

use clap::Subcommand;
use postbus_selector::{ParseLimits, Selector, cases};

use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum SelectorCmd {
    /// Parse a selector and explain it (or report the error with its column).
    Check {
        /// The selector, e.g. "currency IN ('EUR','USD') AND amount > 10000".
        selector: String,
    },
    /// Run a file of test cases (one JSON object per line; see docs/selectors.md) and print
    /// each failing case and "N passed, M failed". Exits 1 if any case failed.
    Test {
        /// The cases file ('-' for standard input).
        file: String,
    },
    /// Register a selector for the SQL API (`postbus.receive(..., selector => '...')`): stores
    /// its exact SQL translation in the database. Refused (exit 1) for selectors SQL can only
    /// approximate; those work over STOMP and HTTP.
    Register {
        /// The selector, exactly as SQL callers will pass it.
        selector: String,
    },
}

/// Returns the process exit code.
pub fn run(cli: &Cli, cmd: &SelectorCmd) -> anyhow::Result<i32> {
    let limits = ParseLimits::default();
    match cmd {
        SelectorCmd::Check { selector } => match Selector::parse_with_limits(selector, &limits) {
            Ok(s) => {
                if cli.json {
                    let json = serde_json::json!({
                        "valid": true,
                        "canonical": s.to_string(),
                        "properties": s.properties(),
                        "headers": s.headers().iter().map(|h| h.name()).collect::<Vec<_>>(),
                    });
                    println!("{json}");
                } else {
                    println!("{}", s.explain());
                }
                Ok(0)
            }
            Err(e) => {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::json!({"valid": false, "column": e.column, "error": e.to_string()})
                    );
                } else {
                    eprintln!("{e}");
                    eprintln!("  {selector}");
                    eprintln!("  {}^", " ".repeat(e.column.saturating_sub(1)));
                }
                Ok(1)
            }
        },
        // Needs the database: main.rs runs it.
        SelectorCmd::Register { .. } => unreachable!("postbus selector register is run by main"),
        SelectorCmd::Test { file } => {
            let input = if file == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?
            };
            let results = cases::run_cases(&input, &limits);
            for r in &results {
                if cli.json {
                    println!("{}", serde_json::to_string(r)?);
                } else if !r.pass {
                    let expected = r
                        .expected
                        .as_ref()
                        .map(|e| format!("{e:?}").to_lowercase())
                        .unwrap_or_else(|| "?".into());
                    let outcome = format!("{:?}", r.outcome).to_lowercase();
                    print!(
                        "FAIL {} (line {}): expected {expected}, got {outcome}",
                        r.id, r.line
                    );
                    match &r.error {
                        Some(e) => println!(": {e}"),
                        None => println!(),
                    }
                }
            }
            if !cli.json {
                println!("{}", cases::summary_line(&results));
            }
            Ok(if results.iter().all(|r| r.pass) { 0 } else { 1 })
        }
    }
}
