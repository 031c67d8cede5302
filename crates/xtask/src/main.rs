//! `cargo xtask generate`: write every generated copy from its source (see the library).
//! `cargo xtask check`: list the stale ones and fail if there are any.

use std::process::ExitCode;

fn main() -> ExitCode {
    let root = xtask::repo_root();
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "generate" => xtask::write(&root).map(|changed| {
            for path in &changed {
                println!("wrote {path}");
            }
            if changed.is_empty() {
                println!("every generated file is up to date");
            }
            true
        }),
        "check" => xtask::stale(&root).map(|stale| {
            for path in &stale {
                println!("stale: {path} (run `cargo xtask generate`)");
            }
            stale.is_empty()
        }),
        _ => {
            eprintln!("usage: cargo xtask generate | check");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
