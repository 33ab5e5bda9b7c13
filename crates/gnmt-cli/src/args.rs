//! Command-line argument groups shared by several subcommands.

use clap::Args;
use gnmt_translate::SearchConfig;

/// Beam search settings (`gnmt translate`, `gnmt bench translate`); the defaults are
/// [`SearchConfig::default`]'s.
#[derive(Args, Debug, Clone)]
pub struct SearchArgs {
    /// Beam width.
    #[arg(long, default_value_t = SearchConfig::default().beam)]
    pub beam: usize,
    /// Length normalization exponent: scores are divided by ((5 + |Y|) / 6)^alpha.
    #[arg(long, default_value_t = SearchConfig::default().alpha)]
    pub alpha: f64,
    /// Coverage penalty weight: beta * sum over source words of log(min(attention sum, 1)).
    #[arg(long, default_value_t = SearchConfig::default().beta)]
    pub beta: f64,
    /// Output length limit: max_len_a * source length + max_len_b.
    #[arg(long, default_value_t = SearchConfig::default().max_len_a)]
    pub max_len_a: f64,
    #[arg(long, default_value_t = SearchConfig::default().max_len_b)]
    pub max_len_b: usize,
    /// Greedy search (beam 1).
    #[arg(long)]
    pub greedy: bool,
}

impl From<&SearchArgs> for SearchConfig {
    fn from(a: &SearchArgs) -> Self {
        SearchConfig {
            beam: if a.greedy { 1 } else { a.beam.max(1) },
            alpha: a.alpha,
            beta: a.beta,
            max_len_a: a.max_len_a,
            max_len_b: a.max_len_b,
            ..SearchConfig::default()
        }
    }
}
