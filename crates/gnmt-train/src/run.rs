//! What a run opens before its first step: its directory (fresh, resumed or overwritten, never
//! a user's files), its vocabulary, training pairs and validation data, and the checkpoint
//! state it resumes from; in a data-parallel run rank 0 does this and hands it to the others.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use gnmt_data::{FilterConfig, PairCorpus};
use gnmt_tokenizer::SubwordTokenizer;

use crate::checkpoint::{self, TrainerState};
use crate::config::{changed_settings, io_err, TrainConfig, TrainError};
use crate::trainer::Start;

/// The files and directories a training run writes in its directory: the only ones
/// [`Start::Overwrite`] deletes, and the ones a new run refuses to overwrite when it did not
/// write them.
pub const RUN_FILES: &[&str] = &[
    "checkpoints",
    "best",
    "final",
    "data",
    "metrics.jsonl",
    "config.toml",
    "tokenizer.json",
];

/// Written first into a run directory: what is listed in [`RUN_FILES`] there is the trainer's.
const RUN_MARKER: &str = ".gnmt-run";

/// Makes `run` ready for a run: refuses to overwrite files the trainer did not write, deletes
/// an earlier run's files for [`Start::Overwrite`] (only those), and marks the directory.
fn open_run_dir(run: &Path, start: &Start) -> Result<(), TrainError> {
    let has_ckpt = !checkpoint::list(run).is_empty();
    let ours = has_ckpt || run.join(RUN_MARKER).exists();
    let present: Vec<&str> = RUN_FILES
        .iter()
        .copied()
        .filter(|f| run.join(f).exists())
        .collect();
    if !ours && !present.is_empty() {
        return Err(TrainError::Config(format!(
            "{} holds {} that no training run wrote there, and a run would overwrite them: \
             choose another --out (or move them)",
            run.display(),
            present.join(", ")
        )));
    }
    match start {
        Start::Fresh if has_ckpt => {
            return Err(TrainError::Config(format!(
                "{} already holds a training run: pass --resume to continue it or --force to start over",
                run.display()
            )))
        }
        Start::Overwrite => {
            for f in present {
                let p = run.join(f);
                let r = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                r.map_err(io_err(&p))?;
            }
        }
        Start::Fresh | Start::Resume { .. } => {}
    }
    std::fs::create_dir_all(run.join("checkpoints")).map_err(io_err(run))?;
    let marker = run.join(RUN_MARKER);
    if !marker.exists() {
        let note = "This directory holds a gnmt training run; `gnmt train --force` deletes only \
                    checkpoints/, best/, final/, data/, metrics.jsonl, config.toml and tokenizer.json.\n";
        gnmt_io::write_file(&marker, note).map_err(io_err(&marker))?;
    }
    Ok(())
}

/// Whether this process writes the run directory: a single process, or rank 0 of a group.
pub(crate) fn leads(group: Option<&gnmt_dist::ProcessGroup>) -> bool {
    group.is_none_or(|g| g.rank() == 0)
}

/// Rank 0 writes `config.toml` and opens `metrics.jsonl` (cut back to `step` when resuming).
pub(crate) fn write_run_files(
    cfg: &TrainConfig,
    run: &Path,
    step: i64,
) -> Result<std::fs::File, TrainError> {
    let toml = toml::to_string(cfg)
        .map_err(|e| TrainError::Config(format!("writing config.toml: {e}")))?;
    let cfg_path = run.join("config.toml");
    gnmt_io::write_file(&cfg_path, toml).map_err(io_err(&cfg_path))?;
    let metrics_path = run.join("metrics.jsonl");
    restart_metrics(&metrics_path, step)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(io_err(&metrics_path))
}

/// The run directory made ready, the vocabulary and the training pairs, by a single process or
/// rank 0 (which then hands the vocabulary to the other ranks through the store).
pub(crate) fn lead_data(
    cfg: &TrainConfig,
    run: &Path,
    start: &Start,
    group: Option<&gnmt_dist::ProcessGroup>,
) -> Result<RunData, TrainError> {
    open_run_dir(run, start)?;
    let resume = matches!(start, Start::Resume { .. });
    let tok_path = run.join("tokenizer.json");
    let tokenizer = open_tokenizer(cfg, &tok_path, resume)?;
    let (corpus, meta) = open_corpus(cfg, run, &tokenizer)?;
    if let Some(g) = group {
        let bytes = std::fs::read(&tok_path).map_err(io_err(&tok_path))?;
        g.store_set("tokenizer", &bytes)?;
    }
    Ok((tok_path, tokenizer, corpus, meta))
}

/// The tokenizer's path and the tokenizer, the training pairs and what their preparation found.
type RunData = (
    PathBuf,
    SubwordTokenizer,
    PairCorpus,
    gnmt_data::prepare::PreparedMeta,
);

/// What a rank other than 0 trains on: rank 0's vocabulary (from the job's store, so no shared
/// file system is needed) and the training pairs prepared with it.
pub(crate) fn follower_data(
    cfg: &TrainConfig,
    run: &Path,
    group: &gnmt_dist::ProcessGroup,
) -> Result<RunData, TrainError> {
    let bytes = group.store_get("tokenizer")?;
    let text = String::from_utf8_lossy(&bytes);
    let tokenizer = SubwordTokenizer::from_json(&text, "the vocabulary rank 0 sent")?;
    std::fs::create_dir_all(run).map_err(io_err(run))?;
    let (corpus, meta) = open_corpus(cfg, run, &tokenizer)?;
    Ok((run.join("tokenizer.json"), tokenizer, corpus, meta))
}

/// Every rank takes rank 0's state (its resumed step and data position included).
pub(crate) fn share_state(
    group: &gnmt_dist::ProcessGroup,
    state: TrainerState,
) -> Result<TrainerState, TrainError> {
    let bad = |e: serde_json::Error| TrainError::Config(format!("the run state of rank 0: {e}"));
    if group.rank() == 0 {
        let json = serde_json::to_vec(&state).map_err(bad)?;
        group.store_set("state", &json)?;
        return Ok(state);
    }
    let json = group.store_get("state")?;
    serde_json::from_slice(&json).map_err(bad)
}

/// The state of the checkpoint in `dir`, checked against the run opened now (`now`): the same
/// run, and the same settings except those in `allow` (each change logged).
pub(crate) fn resume_state(
    dir: &Path,
    now: &TrainerState,
    legacy_run_id: &str,
    allow: &BTreeSet<String>,
) -> Result<TrainerState, TrainError> {
    let err = |msg: String| TrainError::Checkpoint {
        path: dir.display().to_string(),
        msg,
    };
    let mut state = checkpoint::read_state(dir)?;
    let same_run = match &state.settings {
        Some(_) => state.run_id == now.run_id,
        None => state.run_id == legacy_run_id,
    };
    if !same_run {
        return Err(err(
            "belongs to a different run (model, data or seed differ); use --force to start over"
                .into(),
        ));
    }
    let current = now.settings.clone().unwrap_or_default();
    if let Some(then) = &state.settings {
        let changed = changed_settings(then, &current);
        let refused: Vec<String> = changed
            .iter()
            .filter(|(k, _, _)| !allow.contains(k))
            .map(|(k, a, b)| format!("{k} was {a}, now {b}"))
            .collect();
        if !refused.is_empty() {
            return Err(err(format!(
                "the run was trained with other settings ({}): resuming would change its course; \
                 pass --set KEY=VALUE to change a setting deliberately, or --force to start over",
                refused.join("; ")
            )));
        }
        for (k, a, b) in changed {
            tracing::warn!("resuming with {k} changed deliberately: {a} -> {b}");
        }
    }
    state.run_id = now.run_id.clone();
    state.settings = Some(current);
    Ok(state)
}

/// The run's vocabulary: the run's own when resuming, else the given or a newly trained one,
/// written to `tok_path` and read back from it.
fn open_tokenizer(
    cfg: &TrainConfig,
    tok_path: &Path,
    resume: bool,
) -> Result<SubwordTokenizer, TrainError> {
    let tokenizer = match (&cfg.vocab, tok_path.exists() && resume) {
        (_, true) => SubwordTokenizer::load(tok_path)?,
        (Some(p), false) => SubwordTokenizer::load(p)?,
        (None, false) => {
            tracing::info!(
                "no vocabulary given: training a {}-piece {:?} vocabulary on both sides",
                cfg.vocab_size,
                cfg.vocab_kind
            );
            let mut lines = gnmt_data::text::read_lines(&cfg.train_src)?;
            lines.extend(gnmt_data::text::read_lines(&cfg.train_tgt)?);
            SubwordTokenizer::train(lines.into_iter(), cfg.vocab_size, cfg.vocab_kind)?
        }
    };
    tokenizer.save(tok_path)?;
    // Work with exactly what the file holds: a freshly trained tokenizer can serialize slightly
    // differently before and after a save/load round trip, and its hash keys the prepared corpus
    // and the run id, which a resumed run (loading the file) must reproduce.
    Ok(SubwordTokenizer::load(tok_path)?)
}

/// The training pairs: the prepared corpus given, or the text prepared into `run/data` once.
fn open_corpus(
    cfg: &TrainConfig,
    run: &Path,
    tokenizer: &SubwordTokenizer,
) -> Result<(PairCorpus, gnmt_data::prepare::PreparedMeta), TrainError> {
    let filter = &cfg.filter;
    let (corpus, meta) = match &cfg.prepared {
        Some(dir) => gnmt_data::prepare::open(dir, tokenizer)?,
        None => {
            let dir = run.join("data");
            if gnmt_data::prepare::is_current(
                &dir,
                &cfg.train_src,
                &cfg.train_tgt,
                tokenizer,
                filter,
                cfg.train_limit,
            ) {
                tracing::info!("training data: reusing {}", dir.display());
            } else {
                tracing::info!("training data: tokenizing into {}", dir.display());
                gnmt_data::prepare::prepare(
                    &cfg.train_src,
                    &cfg.train_tgt,
                    tokenizer,
                    filter,
                    cfg.train_limit,
                    &dir,
                    |n| tracing::debug!("{n} pairs read"),
                )?;
            }
            gnmt_data::prepare::open(&dir, tokenizer)?
        }
    };
    if cfg.prepared.is_some() && meta.max_len != filter.max_len {
        tracing::warn!(
            "the prepared corpus was filtered at max_len {}, the config says {}: the corpus wins",
            meta.max_len,
            filter.max_len
        );
    }
    tracing::info!("training data: {}", meta.report);
    if corpus.is_empty() {
        return Err(TrainError::Config("no usable training pairs".into()));
    }
    Ok((corpus, meta))
}

/// The validation pairs and their references, as text.
pub(crate) struct Validation {
    pub(crate) corpus: PairCorpus,
    pub(crate) refs: Vec<String>,
}

pub(crate) fn open_validation(
    cfg: &TrainConfig,
    tokenizer: &SubwordTokenizer,
) -> Result<Option<Validation>, TrainError> {
    match (&cfg.valid_src, &cfg.valid_tgt) {
        (Some(s), Some(t)) => {
            let vf = FilterConfig {
                max_len: 1000,
                max_ratio: f64::INFINITY,
                strict: false,
            };
            let (c, r) = PairCorpus::load(s, t, tokenizer, &vf, None)?;
            tracing::info!("validation data: {r}");
            // References for BLEU: the raw target lines of exactly the pairs the filter kept.
            let raw_t = gnmt_data::text::read_lines(t)?;
            let refs = (0..c.len()).map(|i| raw_t[c.line(i)].clone()).collect();
            Ok(Some(Validation { corpus: c, refs }))
        }
        (None, None) => Ok(None),
        _ => Err(TrainError::Config(
            "give both --valid-src and --valid-tgt, or neither".into(),
        )),
    }
}

/// Keeps the lines of `metrics.jsonl` up to `step`, the step training restarts from: a fresh
/// run (step 0) starts an empty file, and a run resumed after `kill -9` drops what the killed
/// process logged after its last checkpoint, which the resumed run logs again (a line torn by
/// the kill, which does not parse, goes too).
fn restart_metrics(path: &Path, step: i64) -> Result<(), TrainError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                return false;
            };
            let Some(s) = v.get("step").and_then(|s| s.as_i64()) else {
                return false;
            };
            // An epoch header at the restart step belongs to the new run.
            step > 0 && (s < step || (s == step && v.get("padding_waste").is_none()))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    gnmt_io::write_file(path, kept).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_restart_at_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let lines = [
            r#"{"step":0,"epoch":0,"padding_waste":0.1}"#,
            r#"{"step":10,"loss":3.0}"#,
            r#"{"step":10,"valid_loss":2.0}"#,
            r#"{"step":10,"epoch":1,"padding_waste":0.1}"#,
            r#"{"step":15,"loss":2.5}"#,
        ];
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        // Resuming from the step-10 checkpoint keeps what led to it, drops what came after.
        restart_metrics(&p, 10).unwrap();
        let kept = std::fs::read_to_string(&p).unwrap();
        assert_eq!(kept, lines[..3].join("\n") + "\n");
        // A fresh run starts empty.
        restart_metrics(&p, 0).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
    }
}
