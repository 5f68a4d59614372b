//! `parkcast`: one command-line entry to every part of the product. Each subcommand is glue: it parses
//! arguments, calls into the crates and prints a summary.

mod cli;
mod progress;
mod report;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    telemetry::init(&cli.global);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", render(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once. Library errors embed their source in their
/// own message (`reading x.csv: permission denied`) and also expose it as `source()`, so anyhow's
/// `{:#}` would print the innermost text once per level; a cause already in the text is left out.
fn render(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::render;

    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("reading {path}: {source}")]
        Read {
            path: String,
            source: std::io::Error,
        },
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let error = anyhow::Error::new(Inner::Read {
            path: "x.csv".to_owned(),
            source: io,
        })
        .context("importing birmingham");
        // anyhow alone repeats the innermost cause.
        assert_eq!(
            format!("{error:#}"),
            "importing birmingham: reading x.csv: permission denied: permission denied"
        );
        assert_eq!(
            render(&error),
            "importing birmingham: reading x.csv: permission denied"
        );
        // A cause that its parent does not embed is still printed.
        let bare = anyhow::anyhow!("disk full").context("writing the model");
        assert_eq!(render(&bare), "writing the model: disk full");
    }
}
