//! What both binaries of this package share: logging set-up and the error report. Both `gnmt`
//! (the launcher, without libtorch) and `gnmt-torch` include this module.

use tracing_subscriber::EnvFilter;

/// The flags every subcommand takes.
#[derive(clap::Args, Debug)]
pub struct Globals {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Logs to stderr at the level of `-v`/`-q`; `RUST_LOG` overrides.
pub fn init_logging(globals: &Globals) {
    let default = if globals.quiet {
        "error"
    } else {
        match globals.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

/// The error and its causes, each said once: library errors often repeat their source in their
/// own message (`path: No such file or directory`), and `{:#}` would print it a second time.
pub fn report(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let mut text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        // `reading X` then `X: reason`: say X once.
        if let Some((head, rest)) = text.split_once(": ") {
            if !head.is_empty() && out.ends_with(head) {
                text = rest.to_string();
            }
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Prints the error report and turns the result into the process's exit code.
pub fn exit_code(result: anyhow::Result<std::process::ExitCode>) -> std::process::ExitCode {
    match result {
        Ok(code) => code,
        Err(err) if closed_pipe(&err) => std::process::ExitCode::from(CLOSED_PIPE),
        Err(err) => {
            eprintln!("error: {}", report(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The exit status of a command whose standard output was closed under it (`gnmt tokenize x |
/// head`): what a shell reports for a C tool killed by SIGPIPE (128 + 13), said without a message.
pub const CLOSED_PIPE: u8 = 141;

/// Whether `err` comes from writing to a pipe whose reader has gone.
fn closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_told_from_other_errors() {
        let pipe = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "Broken pipe");
        assert!(closed_pipe(
            &anyhow::Error::new(pipe).context("writing out.txt")
        ));
        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left");
        assert!(!closed_pipe(
            &anyhow::Error::new(full).context("writing out.txt")
        ));
        assert!(!closed_pipe(&anyhow::anyhow!("Broken pipe")));
    }

    #[test]
    fn an_error_report_names_each_cause_once() {
        let io = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file or directory (os error 2)",
        );
        #[derive(Debug, thiserror::Error)]
        #[error("in.txt: {source}")]
        struct Wrapped {
            source: std::io::Error,
        }
        let err = anyhow::Error::new(Wrapped { source: io }).context("translating");
        let r = report(&err);
        assert_eq!(
            r,
            "translating: in.txt: No such file or directory (os error 2)"
        );
        assert_eq!(r.matches("os error 2").count(), 1, "{r}");
        // A context naming the path, then the error naming it again: the path once.
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let err = anyhow::Error::new(Wrapped { source: io }).context("reading in.txt");
        assert_eq!(report(&err), "reading in.txt: gone");
    }
}
