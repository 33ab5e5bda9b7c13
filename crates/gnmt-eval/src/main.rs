//! `gnmt-eval`: `gnmt eval` without libtorch. The `gnmt` binary links libtorch (about 0.8 s and
//! 450 MB just to start); scoring needs none of it, so this binary starts in milliseconds.
//! Same command line, same output: `gnmt-eval REF... -i HYP... -m bleu chrf ter`.

use std::process::ExitCode;

use clap::Parser;

/// Score hypotheses against references: BLEU, chrF, TER, exactly as sacreBLEU 2.6.0.
#[derive(Parser, Debug)]
#[command(name = "gnmt-eval", version, about)]
struct Cli {
    #[command(flatten)]
    args: gnmt_eval::EvalArgs,
}

fn main() -> ExitCode {
    let args = gnmt_eval::translate_sacrebleu_flags_all(std::env::args_os().collect());
    let cli = Cli::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    match gnmt_eval::run(cli.args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
