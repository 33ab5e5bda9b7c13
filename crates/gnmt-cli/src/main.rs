//! `gnmt-torch`: the half of `gnmt` that links libtorch -- train GNMT translation models,
//! translate text files with beam search, serve, benchmark. Users type `gnmt`: the launcher
//! (launcher.rs) runs `gnmt eval` itself and hands every other subcommand to this binary. Each
//! subcommand lives in its own module; this file holds the command line.

mod args;
mod bench;
mod commands;
mod common;
mod doctor;
mod models;
mod plot;
mod precision;
mod quantize;
mod serve;
mod tune;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// GNMT-style neural machine translation: train, translate, evaluate.
#[derive(Parser, Debug)]
#[command(name = "gnmt", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    globals: common::Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Score hypotheses against references: BLEU, chrF, TER, exactly as sacreBLEU 2.6.0.
    ///
    /// Takes sacreBLEU's command line: `gnmt eval REF... -i HYP... -m bleu chrf ter`.
    #[command(disable_help_flag = false)]
    Eval(gnmt_eval::EvalArgs),
    /// Train the shared subword vocabulary on both sides of a parallel corpus.
    Vocab(commands::VocabArgs),
    /// Text (stdin) to subword pieces or ids (stdout).
    Tokenize(commands::TokenizeCmd),
    /// Subword pieces or ids (stdin) back to text (stdout); --ids for ids.
    Detokenize(commands::TokenizeArgs),
    /// Tokenize a parallel corpus once into a memory-mapped binary corpus.
    Prepare(commands::PrepareArgs),
    /// Parameter counts of a preset or a model directory.
    ModelInfo(commands::ModelInfoArgs),
    /// Train a GNMT model on a parallel corpus.
    Train(commands::TrainArgs),
    /// Translate a text file (or stdin) with batched beam search.
    Translate(commands::TranslateArgs),
    /// Serve translations over HTTP (POST /v1/translate, GET /health, GET /metrics), batching
    /// the sentences of concurrent requests together.
    Serve(serve::ServeArgs),
    /// Translate a validation set at each precision this CPU runs fast (fp32, bf16, int8) and
    /// record the BLEU of each beside the model: `gnmt translate` then picks the fastest that
    /// stays within 0.2 BLEU of fp32.
    CheckPrecision(precision::CheckPrecisionArgs),
    /// Try beam widths, length normalization (alpha) and coverage penalties (beta) on validation
    /// data, print the BLEU of each, and write the best beside the model (search.json), where
    /// translate and serve start from it. An ensemble (`--model a b`) is tuned as one; its
    /// settings go beside its first model.
    Tune(tune::TuneArgs),
    /// Average the weights of several checkpoints into one model directory.
    Average(commands::AverageArgs),
    /// Write an int8 model directory from a float32 one: every large matrix quantized per row,
    /// about a quarter of the size, translating as the float32 model does at --precision int8.
    Quantize(quantize::QuantizeArgs),
    /// Draw loss, BLEU, learning rate and gradient norms of a training run.
    Plot(plot::PlotArgs),
    /// Benchmarks: eval, train, translate throughput.
    Bench(bench::BenchArgs),
    /// Print what libtorch sees: version, CUDA and cuDNN, devices, threads, bf16 support.
    Doctor(doctor::DoctorArgs),
}

/// libgomp reads OMP_WAIT_POLICY when it is loaded, before `main`; its default (spinning) makes
/// libtorch up to 8x slower on a machine where another process keeps a core busy. Re-execute
/// ourselves once with PASSIVE unless the user chose a policy.
fn ensure_omp_wait_policy() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .exec();
    // exec only returns on failure; carry on with the default policy.
    eprintln!("warning: could not re-execute with OMP_WAIT_POLICY=PASSIVE: {err}");
}

/// glibc hands freed blocks above its mmap threshold straight back to the kernel and trims the
/// heap top past 128 KiB, so every decoding or training step re-faults and zeroes the pages of
/// its large activations (logits alone are megabytes): 10-15% of a CPU translation went to
/// page faults. Keep freed memory for reuse instead. The threshold cannot be raised past 32 MiB,
/// and a training batch's logits and their gradients are larger (64 x 17 x 8000 floats: 35 MB),
/// so the main thread's heap takes every size (no mmap: 1.1-1.3x faster training steps, 10%
/// more peak memory). Every thread allocates from that one heap (one arena): glibc gives other
/// threads arenas of their own, made of 64 MiB heaps that are unmapped the moment they are
/// empty, so the threads training a batch's shares (new each step) faulted their activations
/// in afresh at every step (6,000 page faults a step for a 4+4 x 384 model; 1.05x its
/// two-thread step without them).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_memory() {
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    const M_MMAP_MAX: i32 = -4;
    const M_ARENA_MAX: i32 = -8;
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists, and these take any non-negative value.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    ensure_omp_wait_policy();
    keep_freed_memory();
    let args = gnmt_eval::translate_sacrebleu_flags(std::env::args_os().collect());
    let cli = Cli::parse_from(args);
    common::init_logging(&cli.globals);
    let result = match cli.command {
        Command::Eval(args) => gnmt_eval::run(args),
        Command::Doctor(a) => doctor::run(a),
        Command::Vocab(a) => commands::vocab(a),
        Command::Tokenize(a) => commands::tokenize(a),
        Command::Detokenize(a) => commands::detokenize(a),
        Command::ModelInfo(a) => commands::model_info(a),
        Command::Train(a) => commands::train(a),
        Command::Translate(a) => commands::translate(a),
        Command::Serve(a) => serve::run(a),
        Command::Average(a) => commands::average(a),
        Command::Quantize(a) => quantize::run(a),
        Command::CheckPrecision(a) => precision::check_precision(a),
        Command::Tune(a) => tune::run(a),
        Command::Prepare(a) => commands::prepare(a),
        Command::Plot(a) => plot::run(a),
        Command::Bench(a) => bench::run(a),
    };
    common::exit_code(result)
}
