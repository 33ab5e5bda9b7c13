//! `x W^T + b` for the inference of linear layers on a CPU, with `W` packed once into column
//! panels so that no call repacks it (MKL copies the whole weight matrix into its own panels on
//! every call: at the small row counts of search, as long as the multiplication itself).

/// Columns of `W^T` (rows of `W`) per panel: two AVX2 registers, one AVX-512 register.
pub(crate) const NR: usize = 16;
/// Rows of `x` per micro-kernel call: 6 x 2 accumulator registers.
pub(crate) const MR: usize = 6;

/// Panels per block of the AVX-512 and AMX kernels, for panel rows of `width` 4-byte elements:
/// ~256 KB, kept in L2 while every row block of `x` passes over them; even, since the kernels
/// take panels two at a time.
pub(crate) fn panels_per_l2_block(width: usize) -> usize {
    (((256 << 10) / (width.max(1) * NR * 4)).max(2) / 2) * 2
}

/// A weight matrix `W` `[n, k]` (a linear layer's, row-major) packed as `ceil(n / 16)` panels,
/// each `k` rows of 16 consecutive output columns (zero beyond `n`).
#[derive(Debug, Clone)]
pub struct PackedLinear {
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) panels: Vec<f32>,
    pub(crate) bias: Vec<f32>,
}

impl PackedLinear {
    /// Packs `w` `[n, k]` and the optional bias `[n]`.
    ///
    /// # Panics
    /// If the lengths do not match `n` and `k`.
    pub fn new(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight");
        let panels = pack_panels(w.chunks_exact(k.max(1)), n, k, 1, |x| x[0]);
        PackedLinear {
            n,
            k,
            panels,
            bias: bias_or_zeros(bias, n),
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// `out[m, n] = x[m, k] . W^T + b`, row-major.
    ///
    /// # Panics
    /// If `x` is not `m * k` long or `out` not `m * n`.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.forward_on(crate::Isa::detected(), x, m, out)
    }

    /// The build [`PackedLinear::forward`] runs on in this process: the instruction set's
    /// name (`"avx512"`, `"avx2"` or `"portable"`).
    pub fn build(&self) -> &'static str {
        crate::Isa::detected().name()
    }

    /// [`PackedLinear::forward`] on the build `isa` (or the best below it this process may use).
    pub(crate) fn forward_on(&self, isa: crate::Isa, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.k, "input");
        assert_eq!(out.len(), m * self.n, "output");
        crate::dispatch!(isa, gemm::linear(self, x, m, out))
    }
}

/// The panel layout every packed matrix shares: the `n` rows of `W` as `ceil(n / 16)` panels of
/// `width` panel rows, panel row `q` of column `j` being `lane(&row_j[group * q..][..group])`
/// (the last group shorter when `group` does not divide the row), zero beyond `n`.
pub(crate) fn pack_panels<S, T: Copy + Default>(
    rows: impl Iterator<Item = impl AsRef<[S]>>,
    n: usize,
    width: usize,
    group: usize,
    lane: impl Fn(&[S]) -> T,
) -> Vec<T> {
    let mut panels = vec![T::default(); n.div_ceil(NR) * width * NR];
    for (j, row) in rows.enumerate().take(n) {
        let (p, c) = (j / NR, j % NR);
        let panel = &mut panels[p * width * NR..(p + 1) * width * NR];
        for (q, part) in row.as_ref().chunks(group).enumerate() {
            panel[q * NR + c] = lane(part);
        }
    }
    panels
}

/// The bias `[n]` as given, or zeros.
///
/// # Panics
/// If a given bias is not `n` long.
pub(crate) fn bias_or_zeros(bias: Option<&[f32]>, n: usize) -> Vec<f32> {
    match bias {
        Some(b) => {
            assert_eq!(b.len(), n, "bias");
            b.to_vec()
        }
        None => vec![0.0; n],
    }
}

/// The portable build: the same panel order, scalar.
pub(crate) fn linear(w: &PackedLinear, x: &[f32], m: usize, out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    if k == 0 {
        for r in 0..m {
            out[r * n..(r + 1) * n].copy_from_slice(&w.bias);
        }
        return;
    }
    for (p, panel) in w.panels.chunks_exact(k * NR).enumerate() {
        let cols = NR.min(n - p * NR);
        for r in 0..m {
            let xr = &x[r * k..(r + 1) * k];
            let mut acc = [0f32; NR];
            for (kk, &a) in xr.iter().enumerate() {
                for (c, v) in acc.iter_mut().enumerate() {
                    *v += a * panel[kk * NR + c];
                }
            }
            for c in 0..cols {
                out[r * n + p * NR + c] = acc[c] + w.bias[p * NR + c];
            }
        }
    }
}

/// A product's input rows given as parts side by side: part `i` holds `m` rows of `width_i`
/// values, row-major, and a whole input row is the parts' rows one after another. The decoder's
/// layers read `[input, attention context, previous h]` so: the int8 and bf16 products quantize
/// or round the parts straight into their packed rows, with the bits of the concatenated rows
/// and without that copy. One part may be read through a row map ([`RowParts::picking`]): the
/// previous `h` of the hypotheses the search kept, read where it lies rather than gathered.
#[derive(Debug, Clone, Copy)]
pub struct RowParts<'a> {
    parts: &'a [(&'a [f32], usize)],
    /// Part `.0`'s row `r` is its row `.1[r]`.
    picked: Option<(usize, &'a [usize])>,
}

impl<'a> RowParts<'a> {
    /// Parts of `(values, width)`, each read row by row.
    pub fn new(parts: &'a [(&'a [f32], usize)]) -> Self {
        RowParts {
            parts,
            picked: None,
        }
    }

    /// The same parts, part `part`'s row `r` read from its row `rows[r]` (any rows it holds,
    /// in any order, repeated or not).
    pub fn picking(self, part: usize, rows: &'a [usize]) -> Self {
        RowParts {
            picked: Some((part, rows)),
            ..self
        }
    }

    /// The parts' widths, in order.
    pub fn widths(&self) -> impl Iterator<Item = usize> + 'a {
        self.parts.iter().map(|p| p.1)
    }

    /// The whole rows' width.
    pub fn width(&self) -> usize {
        self.widths().sum()
    }

    /// Whether each part holds `m` rows of its width (a picked part: `m` picks of rows it holds).
    pub fn holds(&self, m: usize) -> bool {
        self.parts
            .iter()
            .enumerate()
            .all(|(i, &(v, w))| match self.picked {
                Some((p, rows)) if p == i => {
                    rows.len() == m && rows.iter().all(|&r| (r + 1) * w <= v.len())
                }
                _ => v.len() == m * w,
            })
    }

    /// Row `r`'s parts, in order.
    #[inline]
    pub fn row(&self, r: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let picked = self.picked;
        self.parts.iter().enumerate().map(move |(i, &(v, w))| {
            let r = match picked {
                Some((p, rows)) if p == i => rows[r],
                _ => r,
            };
            &v[r * w..(r + 1) * w]
        })
    }

    /// The `m` whole rows, concatenated (for the products that read one slice).
    pub fn concat(&self, m: usize) -> Vec<f32> {
        let mut x = Vec::with_capacity(m * self.width());
        for r in 0..m {
            for part in self.row(r) {
                x.extend_from_slice(part);
            }
        }
        x
    }
}
