//! Confidence intervals (bootstrap resampling) and paired significance tests (paired bootstrap
//! resampling, paired approximate randomization) exactly as sacreBLEU 2.6.0 computes them: the
//! same numpy random draws ([`crate::rng`]), per-segment statistics cast to float32 and summed
//! per resample, scores computed with NumPy 2's type rules (a float32 meeting a Python float
//! stays float32), numpy's sort/mean where sacreBLEU uses numpy and `statistics.mean` where it
//! does not. Resamples are scored in parallel.

use rayon::prelude::*;

use crate::bleu::Smooth;
use crate::rng::Generator;
use crate::{Metric, Segments};

/// A number as Python with NumPy 2 sees it: a Python float (or int), or a numpy float32.
/// Mixed arithmetic stays float32 (NEP 50: Python scalars are "weak").
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Py(f64),
    F32(f32),
}

impl Num {
    pub fn value(self) -> f64 {
        match self {
            Num::Py(x) => x,
            Num::F32(x) => x as f64,
        }
    }

    fn is_f32(self) -> bool {
        matches!(self, Num::F32(_))
    }

    fn op(self, o: Num, f64op: fn(f64, f64) -> f64, f32op: fn(f32, f32) -> f32) -> Num {
        match (self, o) {
            (Num::Py(a), Num::Py(b)) => Num::Py(f64op(a, b)),
            (a, b) => Num::F32(f32op(a.value() as f32, b.value() as f32)),
        }
    }

    fn add(self, o: Num) -> Num {
        self.op(o, |a, b| a + b, |a, b| a + b)
    }

    fn sub(self, o: Num) -> Num {
        self.op(o, |a, b| a - b, |a, b| a - b)
    }

    fn mul(self, o: Num) -> Num {
        self.op(o, |a, b| a * b, |a, b| a * b)
    }

    fn div(self, o: Num) -> Num {
        self.op(o, |a, b| a / b, |a, b| a / b)
    }
}

fn py(x: f64) -> Num {
    Num::Py(x)
}

/// The seed setting of `SACREBLEU_SEED`: a number (default 12345) or `none` (unseeded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The seed, or `None` for fresh entropy.
    pub value: Option<u64>,
    /// The environment string as given, lowercased (the single-system signature prints it).
    pub raw: String,
}

/// sacreBLEU's seed when `SACREBLEU_SEED` is not set.
const DEFAULT_SEED: u64 = 12345;

impl Default for Seed {
    fn default() -> Self {
        Seed {
            value: Some(DEFAULT_SEED),
            raw: DEFAULT_SEED.to_string(),
        }
    }
}

impl Seed {
    pub fn from_env_value(s: Option<&str>) -> Result<Self, String> {
        let Some(s) = s else {
            return Ok(Seed::default());
        };
        let raw = s.to_string();
        if raw.to_lowercase() == "none" {
            return Ok(Seed {
                value: None,
                raw: "none".into(),
            });
        }
        let v: u64 = raw
            .trim()
            .replace('_', "")
            .trim_start_matches('+')
            .parse()
            .map_err(|_| format!("SACREBLEU_SEED={raw}: not a non-negative integer or `none`"))?;
        Ok(Seed {
            value: Some(v),
            raw: raw.to_lowercase(),
        })
    }

    /// `str(int(seed)).lower()`, as the paired tests' signature prints it.
    pub fn normalized(&self) -> String {
        self.value.map_or("none".into(), |v| v.to_string())
    }

    fn generator(value: Option<u64>) -> Generator {
        match value {
            Some(v) => Generator::new(v as u128),
            None => Generator::from_entropy(),
        }
    }
}

/// Per-segment sufficient statistics as the flat rows sacreBLEU turns into numpy arrays.
pub fn segment_stats(metric: &Metric, seg: &Segments) -> Vec<Vec<f64>> {
    let n = seg.hyps.len();
    (0..n)
        .into_par_iter()
        .map(|i| {
            let refs: Vec<&str> = seg.refs.iter().map(|r| r[i].as_str()).collect();
            let h = &seg.hyps[i];
            match metric {
                Metric::Bleu(m) => {
                    let s = m.sentence_stats(h, &refs);
                    let mut v = vec![s.hyp_len as f64, s.ref_len as f64];
                    v.extend(s.correct.iter().map(|&x| x as f64));
                    v.extend(s.total.iter().map(|&x| x as f64));
                    v
                }
                Metric::Chrf(m) => m
                    .sentence_stats(h, &refs)
                    .iter()
                    .map(|&x| x as f64)
                    .collect(),
                Metric::Ter(m) => {
                    let s = m.sentence_stats(h, &refs);
                    vec![s.edits as f64, s.ref_len]
                }
            }
        })
        .collect()
}

/// The score of summed statistics computed with Python floats / int64 (the actual score, and
/// every approximate-randomization trial).
pub fn score_f64(metric: &Metric, s: &[f64]) -> f64 {
    match metric {
        Metric::Bleu(m) => {
            let o = m.config.max_ngram_order;
            crate::bleu::compute_bleu(
                &s[2..2 + o],
                &s[2 + o..2 + 2 * o],
                s[0] as u64,
                s[1] as u64,
                m.config.smooth,
                m.config.effective_order,
                o,
            )
            .score
        }
        Metric::Chrf(m) => m.f_score(&s.iter().map(|&x| x as u64).collect::<Vec<_>>()),
        Metric::Ter(m) => {
            // Float statistics: sacreBLEU divides the float sums directly.
            let (edits, len) = (s[0], s[1]);
            let v = if len > 0.0 {
                edits / len
            } else if edits > 0.0 {
                1.0
            } else {
                0.0
            };
            let _ = m;
            100.0 * v
        }
    }
}

fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9999999999.0
    } else {
        x.ln()
    }
}

/// The score of float32 statistics, with the types numpy gives every intermediate value.
pub fn score_f32(metric: &Metric, s: &[f32]) -> Num {
    match metric {
        Metric::Bleu(m) => bleu_f32(m, s),
        Metric::Chrf(m) => chrf_f32(m, s),
        Metric::Ter(_) => ter_f32(s),
    }
}

/// [`score_f32`] of BLEU statistics `[sys_len, ref_len, correct.., total..]`.
fn bleu_f32(m: &crate::Bleu, s: &[f32]) -> Num {
    let o = m.config.max_ngram_order;
    let (sys_len, ref_len) = (s[0] as f64 as u64, s[1] as f64 as u64);
    let mut correct: Vec<Num> = s[2..2 + o].iter().map(|&x| Num::F32(x)).collect();
    let mut total: Vec<Num> = s[2 + o..2 + 2 * o].iter().map(|&x| Num::F32(x)).collect();
    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        };
    }
    if correct.iter().all(|c| c.value() == 0.0) {
        return py(0.0);
    }
    let mut prec = vec![py(0.0); o];
    let mut smooth_mteval = py(1.0);
    let mut eff = o;
    for n in 1..=o {
        if let Smooth::AddK(k) = m.config.smooth {
            if n > 1 {
                correct[n - 1] = correct[n - 1].add(py(k));
                total[n - 1] = total[n - 1].add(py(k));
            }
        }
        if total[n - 1].value() == 0.0 {
            break;
        }
        if m.config.effective_order {
            eff = n;
        }
        if correct[n - 1].value() == 0.0 {
            match m.config.smooth {
                Smooth::Exp => {
                    smooth_mteval = smooth_mteval.mul(py(2.0));
                    prec[n - 1] = py(100.0).div(smooth_mteval.mul(total[n - 1]));
                }
                Smooth::Floor(v) => prec[n - 1] = py(100.0 * v).div(total[n - 1]),
                Smooth::None | Smooth::AddK(_) => {}
            }
        } else {
            prec[n - 1] = py(100.0).mul(correct[n - 1]).div(total[n - 1]);
        }
    }
    let sum: f64 = prec[..eff].iter().fold(0.0, |a, p| a + my_log(p.value()));
    py(bp * (sum / eff as f64).exp())
}

/// [`score_f32`] of chrF statistics `[hyp, ref, match]` per order.
fn chrf_f32(m: &crate::Chrf, s: &[f32]) -> Num {
    let eps = py(1e-16);
    let factor = py((m.config.beta as f64).powi(2));
    let order = m.config.char_order + m.config.word_order;
    let mut score = py(0.0);
    let mut eff = 0usize;
    let (mut ap, mut ar) = (py(0.0), py(0.0));
    for i in 0..order {
        let (nh, nr, nm) = (
            Num::F32(s[3 * i]),
            Num::F32(s[3 * i + 1]),
            Num::F32(s[3 * i + 2]),
        );
        let p = if nh.value() > 0.0 { nm.div(nh) } else { eps };
        let r = if nr.value() > 0.0 { nm.div(nr) } else { eps };
        let denom = factor.mul(p).add(r);
        let term = if denom.value() > 0.0 {
            py(1.0).add(factor).mul(p).mul(r).div(denom)
        } else {
            eps
        };
        score = score.add(term);
        if nh.value() > 0.0 && nr.value() > 0.0 {
            ap = ap.add(p);
            ar = ar.add(r);
            eff += 1;
        }
    }
    if m.config.eps_smoothing {
        return py(100.0).mul(score).div(py(order as f64));
    }
    if eff == 0 {
        ap = py(0.0);
        ar = py(0.0);
    } else {
        ap = ap.div(py(eff as f64));
        ar = ar.div(py(eff as f64));
    }
    if ap.add(ar).value() != 0.0 {
        let mut sc = py(1.0).add(factor).mul(ap).mul(ar);
        sc = sc.div(factor.mul(ap).add(ar));
        py(100.0).mul(sc)
    } else {
        py(0.0)
    }
}

/// [`score_f32`] of TER statistics `[edits, ref_len]`.
fn ter_f32(s: &[f32]) -> Num {
    let (edits, len) = (Num::F32(s[0]), Num::F32(s[1]));
    let v = if len.value() > 0.0 {
        edits.div(len)
    } else if edits.value() > 0.0 {
        py(1.0)
    } else {
        py(0.0)
    };
    py(100.0).mul(v)
}

/// Scores of `n` resamples: resample `i` sums the float32 rows `idx[i*N..(i+1)*N]` in order.
fn resample_scores(metric: &Metric, stats: &[Vec<f64>], idx: &[usize], n: usize) -> Vec<Num> {
    let rows: Vec<Vec<f32>> = stats
        .iter()
        .map(|r| r.iter().map(|&x| x as f32).collect())
        .collect();
    let segs = stats.len();
    let k = stats.first().map_or(0, Vec::len);
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut sum = vec![0f32; k];
            for &j in &idx[i * segs..(i + 1) * segs] {
                for (a, b) in sum.iter_mut().zip(&rows[j]) {
                    *a += *b;
                }
            }
            score_f32(metric, &sum)
        })
        .collect()
}

/// The correctly rounded sum of `xs` (Shewchuk's algorithm, as Python's `math.fsum`).
fn fsum(xs: impl Iterator<Item = f64>) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for mut x in xs {
        let mut i = 0;
        for j in 0..partials.len() {
            let mut y = partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        partials.truncate(i);
        partials.push(x);
    }
    partials.iter().rev().fold(0.0, |a, &b| a + b)
}

/// numpy's pairwise summation (`np.add.reduce` on a contiguous array), in the array's type:
/// a running sum below 8 values, 8 interleaved accumulators up to 128, halves above.
fn pairwise<T: Copy + Default + std::ops::Add<Output = T>>(a: &[T]) -> T {
    let n = a.len();
    if n < 8 {
        a.iter().fold(T::default(), |s, &x| s + x)
    } else if n <= 128 {
        let mut r = [T::default(); 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] = r[j] + a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res = res + a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise(&a[..n2]) + pairwise(&a[n2..])
    }
}

/// A numpy array of scores: float32 when every score is a float32, else float64.
#[derive(Debug, Clone)]
enum Array {
    F64(Vec<f64>),
    F32(Vec<f32>),
}

impl Array {
    fn from(scores: &[Num]) -> Array {
        if !scores.is_empty() && scores.iter().all(|s| s.is_f32()) {
            Array::F32(scores.iter().map(|s| s.value() as f32).collect())
        } else {
            Array::F64(scores.iter().map(|s| s.value()).collect())
        }
    }

    /// `np.mean`.
    fn mean(&self) -> Num {
        match self {
            Array::F64(v) => Num::Py(pairwise(v) / v.len() as f64),
            Array::F32(v) => Num::F32(pairwise(v) / v.len() as f32),
        }
    }

    /// sacreBLEU's `estimate_ci` on a numpy array: (mean, half-width of the 95% interval).
    fn estimate_ci(&self) -> (Num, Num) {
        let n = self.len();
        let lo = n / 40;
        let hi = n - lo - 1;
        match self {
            // sacreBLEU takes the mean of the sorted array: the summation order matters.
            Array::F64(v) => {
                let mut s = v.clone();
                s.sort_by(f64::total_cmp);
                let ci = Num::Py(0.5 * (s[hi] - s[lo]));
                (Array::F64(s).mean(), ci)
            }
            Array::F32(v) => {
                let mut s = v.clone();
                s.sort_by(f32::total_cmp);
                let ci = Num::F32(0.5 * (s[hi] - s[lo]));
                (Array::F32(s).mean(), ci)
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Array::F64(v) => v.len(),
            Array::F32(v) => v.len(),
        }
    }

    /// `np.abs(self - other)`, with numpy's promotion.
    fn abs_diff(&self, o: &Array) -> Array {
        match (self, o) {
            (Array::F32(a), Array::F32(b)) => {
                Array::F32(a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect())
            }
            _ => Array::F64(
                (0..self.len())
                    .map(|i| (self.get(i) - o.get(i)).abs())
                    .collect(),
            ),
        }
    }

    fn get(&self, i: usize) -> f64 {
        match self {
            Array::F64(v) => v[i],
            Array::F32(v) => v[i] as f64,
        }
    }

    /// `(c + 1) / (n + 1)` with `c` the count of `self - mean(self) > delta` (in the array's type).
    fn centred_p_value(&self, delta: f64) -> f64 {
        let c = match (self, self.mean()) {
            (Array::F32(v), m) => {
                let m = m.value() as f32;
                let d = delta as f32;
                v.iter().filter(|&&x| x - m > d).count()
            }
            (Array::F64(v), m) => {
                let m = m.value();
                v.iter().filter(|&&x| x - m > delta).count()
            }
        };
        (c + 1) as f64 / (self.len() + 1) as f64
    }
}

/// Bootstrap estimate for one system (`-ci`): sacreBLEU's `Score.estimate_ci` on `n` resamples
/// drawn with `seed`. Returns (mean, half-width), the mean exact as `statistics.mean` is.
pub fn bootstrap_ci(metric: &Metric, stats: &[Vec<f64>], n: usize, seed: &Seed) -> (f64, f64) {
    let mut g = Seed::generator(seed.value);
    let idx = g.choice(stats.len(), n * stats.len());
    let scores = resample_scores(metric, stats, &idx, n);
    let mut sorted = scores.clone();
    sorted.sort_by(|a, b| a.value().total_cmp(&b.value()));
    let lo = n / 40;
    let hi = n - lo - 1;
    let ci = py(0.5).mul(sorted[hi].sub(sorted[lo]));
    // statistics.mean: the exact mean, converted to the data's type.
    let mean = fsum(scores.iter().map(|s| s.value())) / n as f64;
    let mean = if scores.iter().all(|s| s.is_f32()) {
        mean as f32 as f64
    } else {
        mean
    };
    (mean, ci.value())
}

/// One system's result in a paired test (sacreBLEU's `Result`).
#[derive(Debug, Clone, PartialEq)]
pub struct PairedResult {
    pub score: f64,
    pub p_value: Option<f64>,
    pub mean: Option<f64>,
    pub ci: Option<f64>,
}

/// The baseline's bootstrap interval in a paired bootstrap test (numpy's mean this time).
pub fn baseline_bootstrap(
    metric: &Metric,
    stats: &[Vec<f64>],
    n: usize,
    seed: &Seed,
) -> (f64, f64) {
    let mut g = Seed::generator(seed.value);
    let idx = g.choice(stats.len(), n * stats.len());
    let (m, c) = Array::from(&resample_scores(metric, stats, &idx, n)).estimate_ci();
    (m.value(), c.value())
}

/// Statistics and actual score of one system for one metric.
pub type SystemStats = (Vec<Vec<f64>>, f64);

/// A system's statistics per segment and its corpus score on `metric`.
pub fn system_stats(metric: &Metric, seg: &Segments) -> SystemStats {
    let st = segment_stats(metric, seg);
    let k = st.first().map_or(0, Vec::len);
    let mut sum = vec![0.0; k];
    for r in &st {
        for (x, y) in sum.iter_mut().zip(r) {
            *x += y;
        }
    }
    let score = score_f64(metric, &sum);
    (st, score)
}

/// The p-value of `system` against `baseline` (hypotheses of the same segments, one reference
/// each) on `metric`: paired bootstrap resampling as sacreBLEU's `--paired-bs`, `n` resamples
/// drawn with its default seed.
pub fn paired_bootstrap_p(
    metric: &Metric,
    baseline: &[String],
    system: &[String],
    refs: &[String],
    n: usize,
) -> f64 {
    let stats = |hyps: &[String]| {
        system_stats(
            metric,
            &Segments {
                hyps: hyps.to_vec(),
                refs: vec![refs.to_vec()],
            },
        )
    };
    let (_, results) = paired_bootstrap(
        std::slice::from_ref(metric),
        &[stats(baseline)],
        &[vec![stats(system)]],
        n,
        &Seed::default(),
    );
    results
        .first()
        .and_then(|r| r.first())
        .and_then(|r| r.p_value)
        .unwrap_or(1.0)
}

/// One generator per system, as sacreBLEU: seeded, every system draws the same resamples, so they
/// are drawn once (and returned, for the baseline's own statistics); unseeded (sacreBLEU passes
/// `seed if seed else None`: 0 is unseeded), each system draws anew.
fn per_system<T, R>(
    systems: &[Vec<SystemStats>],
    seed: &Seed,
    draw: impl Fn(&mut Generator, usize) -> T,
    test: impl Fn(&T, &[SystemStats]) -> R,
) -> (Option<T>, Vec<R>) {
    let value = seed.value.filter(|&v| v != 0);
    let segs = systems
        .first()
        .and_then(|s| s.first())
        .map_or(0, |s| s.0.len());
    let once = value.map(|_| draw(&mut Seed::generator(value), segs));
    let results = systems
        .iter()
        .map(|sys| match &once {
            Some(d) => test(d, sys),
            None => test(&draw(&mut Seed::generator(None), segs), sys),
        })
        .collect();
    (once, results)
}

/// Paired bootstrap resampling of each system against the baseline `bl`, for every metric with
/// the same resamples. Returns the baseline's bootstrap `(mean, ci)` per metric (sacreBLEU's
/// [`baseline_bootstrap`]; taken from the shared resamples when seeded, where they are the same)
/// and the systems' results.
pub fn paired_bootstrap(
    metrics: &[Metric],
    bl: &[SystemStats],
    systems: &[Vec<SystemStats>],
    n: usize,
    seed: &Seed,
) -> (Vec<(f64, f64)>, Vec<Vec<PairedResult>>) {
    let draw = |g: &mut Generator, segs: usize| {
        let idx = g.choice(segs, n * segs);
        let baseline: Vec<Array> = metrics
            .iter()
            .zip(bl)
            .map(|(m, (stats, _))| Array::from(&resample_scores(m, stats, &idx, n)))
            .collect();
        (idx, baseline)
    };
    let (shared, results) = per_system(systems, seed, draw, |(idx, a_bl), sys| {
        metrics
            .iter()
            .zip(bl.iter().zip(sys).zip(a_bl))
            .map(|(m, (((_, bl_score), (sys_stats, sys_score)), a_bl))| {
                let a_sys = Array::from(&resample_scores(m, sys_stats, idx, n));
                let (mean, ci) = a_sys.estimate_ci();
                let diff = (bl_score - sys_score).abs();
                let p = a_sys.abs_diff(a_bl).centred_p_value(diff);
                PairedResult {
                    score: *sys_score,
                    p_value: Some(p),
                    mean: Some(mean.value()),
                    ci: Some(ci.value()),
                }
            })
            .collect()
    });
    let baseline = match shared {
        Some((_, a_bl)) => a_bl
            .iter()
            .map(|a| {
                let (m, c) = a.estimate_ci();
                (m.value(), c.value())
            })
            .collect(),
        None => metrics
            .iter()
            .zip(bl)
            .map(|(m, (stats, _))| baseline_bootstrap(m, stats, n, seed))
            .collect(),
    };
    (baseline, results)
}

/// Paired approximate randomization of each system against `bl`: `n` trials swapping each
/// segment's statistics between the two systems with probability 1/2.
pub fn paired_randomization(
    metrics: &[Metric],
    bl: &[SystemStats],
    systems: &[Vec<SystemStats>],
    n: usize,
    seed: &Seed,
) -> Vec<Vec<PairedResult>> {
    let draw = |g: &mut Generator, segs: usize| g.bools(n * segs);
    let (_, results) = per_system(systems, seed, draw, |pos, sys| {
        metrics
            .iter()
            .zip(bl.iter().zip(sys))
            .map(|(m, ((bl_stats, bl_score), (sys_stats, sys_score)))| {
                let segs = sys_stats.len();
                let k = bl_stats.first().map_or(0, Vec::len);
                let diff = (bl_score - sys_score).abs();
                let count = (0..n)
                    .into_par_iter()
                    .filter(|&t| {
                        let mut a = vec![0.0; k];
                        let mut b = vec![0.0; k];
                        for j in 0..segs {
                            let (x, y) = if pos[t * segs + j] {
                                (&bl_stats[j], &sys_stats[j])
                            } else {
                                (&sys_stats[j], &bl_stats[j])
                            };
                            for c in 0..k {
                                a[c] += x[c];
                                b[c] += y[c];
                            }
                        }
                        (score_f64(m, &a) - score_f64(m, &b)).abs() > diff
                    })
                    .count();
                PairedResult {
                    score: *sys_score,
                    p_value: Some((count + 1) as f64 / (n + 1) as f64),
                    mean: None,
                    ci: None,
                }
            })
            .collect()
    });
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paired_bootstrap_p_value_separates_a_clear_gain_from_none() {
        let refs: Vec<String> = (0..200)
            .map(|i| format!("the cat number {i} sat on the mat today"))
            .collect();
        // A poorer system: each reference with its last words missing.
        let bad: Vec<String> = refs
            .iter()
            .map(|r| r.split(' ').take(5).collect::<Vec<_>>().join(" "))
            .collect();
        let bleu = Metric::Bleu(crate::Bleu::default());
        // One sentence of 200 better: a gain no test should call significant. (For identical
        // systems sacreBLEU's strict comparison gives 1 / (n + 1), hence not those.)
        let mut one = bad.clone();
        one[0] = refs[0].clone();
        let tiny = paired_bootstrap_p(&bleu, &bad, &one, &refs, 200);
        let better = paired_bootstrap_p(&bleu, &bad, &refs, &refs, 200);
        assert!(tiny > 0.05, "p {tiny} for one better sentence of 200");
        assert!(
            better < 0.01,
            "p {better} for a perfect system against a poor one"
        );
    }

    #[test]
    fn numpy_type_rules() {
        // float32 meets a Python float: float32 arithmetic.
        let x = Num::F32(3.0).div(py(7.0));
        assert_eq!(x, Num::F32(3.0f32 / 7.0f32));
        assert_eq!(py(3.0).div(py(7.0)), Num::Py(3.0 / 7.0));
    }

    #[test]
    fn pairwise_sum_matches_sequential_on_exact_values() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        assert_eq!(pairwise(&v), 499500.0);
        // On inexact values the order shows: numpy's blocks of 8 differ from a running sum.
        let w: Vec<f32> = (0..300).map(|i| 0.1 + i as f32 * 1e-3).collect();
        let seq = w.iter().fold(0.0f32, |a, &b| a + b);
        assert!((pairwise(&w) - seq).abs() < 1e-2);
    }

    #[test]
    fn fsum_is_exact() {
        assert_eq!(fsum([1e100, 1.0, -1e100, 1e-100].into_iter()), 1.0);
        assert_eq!(fsum([0.1; 10].into_iter()), 1.0);
    }

    #[test]
    fn seeds_parse_like_sacrebleu() {
        assert_eq!(Seed::from_env_value(None).unwrap().value, Some(12345));
        let s = Seed::from_env_value(Some("None")).unwrap();
        assert_eq!((s.value, s.raw.as_str()), (None, "none"));
        assert_eq!(Seed::from_env_value(Some("007")).unwrap().normalized(), "7");
        assert!(Seed::from_env_value(Some("abc")).is_err());
    }
}
