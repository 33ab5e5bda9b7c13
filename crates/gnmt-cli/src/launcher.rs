//! `gnmt`: the command users type. Loading libtorch costs about 0.8 s and 450 MB before `main`
//! runs, so this binary does not link it: it scores (`gnmt eval`, sacreBLEU's command line) by
//! itself, and hands every other subcommand to `gnmt-torch`, installed beside it, by `exec` --
//! the same process, so signals, exit codes and torchrun's view of the process are unchanged.

mod common;

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The binary that links libtorch and runs every subcommand but `eval`.
const TORCH_BIN: &str = "gnmt-torch";

/// `gnmt eval`, parsed here; `gnmt --help` and every other subcommand are `gnmt-torch`'s.
#[derive(Parser, Debug)]
#[command(name = "gnmt", version)]
struct Cli {
    #[command(flatten)]
    globals: common::Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Score hypotheses against references: BLEU, chrF, TER, exactly as sacreBLEU 2.6.0.
    Eval(gnmt_eval::EvalArgs),
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if subcommand(&args) == Some(OsStr::new("eval")) {
        let cli = Cli::parse_from(gnmt_eval::translate_sacrebleu_flags(args));
        common::init_logging(&cli.globals);
        let Command::Eval(eval) = cli.command;
        return common::exit_code(gnmt_eval::run(eval));
    }
    exec_torch(args)
}

/// The first argument that is not a flag: the global flags (`-v`, `-q`) take no value, so it is
/// the subcommand's name.
fn subcommand(args: &[OsString]) -> Option<&OsStr> {
    args.iter()
        .skip(1)
        .map(OsString::as_os_str)
        .find(|a| !a.as_encoded_bytes().starts_with(b"-"))
}

/// Replaces this process with `gnmt-torch` and the same arguments; returns only on failure.
fn exec_torch(args: Vec<OsString>) -> ExitCode {
    let torch = match torch_binary() {
        Ok(path) => path,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut cmd = std::process::Command::new(&torch);
    cmd.arg0(args.first().map_or(OsStr::new("gnmt"), OsString::as_os_str))
        .args(&args[1.min(args.len())..]);
    // libgomp reads OMP_WAIT_POLICY when libtorch loads, before `main`: its default (spinning)
    // makes libtorch up to 8x slower when another process keeps a core busy. Set it here, where
    // it costs nothing, unless the user chose a policy (gnmt-torch re-executes itself otherwise).
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        cmd.env("OMP_WAIT_POLICY", "PASSIVE");
    }
    let err = cmd.exec();
    eprintln!(
        "error: cannot run {} (gnmt's libtorch half, installed beside gnmt): {err}",
        torch.display()
    );
    ExitCode::FAILURE
}

/// `gnmt-torch` in the directory of this executable (where `cargo build` and `cargo install`
/// put both).
fn torch_binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name(TORCH_BIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_subcommand_is_the_first_argument_that_is_not_a_flag() {
        assert_eq!(
            subcommand(&args(&["gnmt", "eval", "ref", "-i", "hyp"])),
            Some(OsStr::new("eval"))
        );
        assert_eq!(
            subcommand(&args(&["gnmt", "-vv", "-q", "translate", "eval"])),
            Some(OsStr::new("translate"))
        );
        assert_eq!(subcommand(&args(&["gnmt", "--help"])), None);
        assert_eq!(subcommand(&args(&["gnmt"])), None);
    }
}
