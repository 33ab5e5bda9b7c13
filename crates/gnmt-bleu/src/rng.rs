//! NumPy's random generator reproduced bit for bit: `np.random.default_rng(seed)` is a
//! `SeedSequence` (entropy pool of four 32-bit words, hash-mixed) seeding a PCG64 (128-bit LCG
//! with XSL-RR output), and `Generator.choice`/`integers` draw bounded integers with Lemire's
//! method on 32-bit words and booleans bit by bit from buffered 32-bit words. sacreBLEU's
//! bootstrap and approximate-randomization tests use exactly these draws, so identical p-values
//! and intervals need identical numbers.

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut v = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    v = v.wrapping_mul(*hash_const);
    v ^ (v >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

/// `np.random.SeedSequence(entropy)` for a non-negative integer entropy.
#[derive(Debug, Clone)]
pub struct SeedSequence {
    pool: [u32; POOL_SIZE],
}

impl SeedSequence {
    pub fn new(entropy: u128) -> Self {
        // The integer as little-endian 32-bit words (at least one word, as numpy does).
        let mut words = Vec::new();
        let mut e = entropy;
        loop {
            words.push(e as u32);
            e >>= 32;
            if e == 0 {
                break;
            }
        }
        let mut pool = [0u32; POOL_SIZE];
        let mut hc = INIT_A;
        for (i, slot) in pool.iter_mut().enumerate() {
            *slot = hashmix(words.get(i).copied().unwrap_or(0), &mut hc);
        }
        for src in 0..POOL_SIZE {
            for dst in 0..POOL_SIZE {
                if src != dst {
                    let v = hashmix(pool[src], &mut hc);
                    pool[dst] = mix(pool[dst], v);
                }
            }
        }
        for &w in words.iter().skip(POOL_SIZE) {
            for slot in pool.iter_mut() {
                let v = hashmix(w, &mut hc);
                *slot = mix(*slot, v);
            }
        }
        SeedSequence { pool }
    }

    /// `generate_state(n, np.uint64)`.
    pub fn generate_state_u64(&self, n: usize) -> Vec<u64> {
        let mut hc = INIT_B;
        let words: Vec<u32> = (0..2 * n)
            .map(|i| {
                let mut v = self.pool[i % POOL_SIZE] ^ hc;
                hc = hc.wrapping_mul(MULT_B);
                v = v.wrapping_mul(hc);
                v ^ (v >> XSHIFT)
            })
            .collect();
        words
            .chunks(2)
            .map(|c| c[0] as u64 | ((c[1] as u64) << 32))
            .collect()
    }
}

const PCG_MULT: u128 = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645;

/// NumPy's `PCG64` bit generator (with its 32-bit buffering) and the `Generator` draws
/// sacreBLEU uses.
#[derive(Debug, Clone)]
pub struct Generator {
    state: u128,
    inc: u128,
    buffered: Option<u32>,
}

impl Generator {
    /// `np.random.default_rng(seed)`.
    pub fn new(seed: u128) -> Self {
        let s = SeedSequence::new(seed).generate_state_u64(4);
        let initstate = ((s[0] as u128) << 64) | s[1] as u128;
        let initseq = ((s[2] as u128) << 64) | s[3] as u128;
        let mut g = Generator {
            state: 0,
            inc: (initseq << 1) | 1,
            buffered: None,
        };
        g.step();
        g.state = g.state.wrapping_add(initstate);
        g.step();
        g
    }

    /// An unseeded generator (`SACREBLEU_SEED=none`), from the clock and the process id.
    pub fn from_entropy() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Generator::new(t ^ ((std::process::id() as u128) << 64))
    }

    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let hi = (self.state >> 64) as u64;
        let lo = self.state as u64;
        (hi ^ lo).rotate_right((self.state >> 122) as u32)
    }

    pub fn next_u32(&mut self) -> u32 {
        if let Some(b) = self.buffered.take() {
            return b;
        }
        let n = self.next_u64();
        self.buffered = Some((n >> 32) as u32);
        n as u32
    }

    /// A uniform integer in `[0, n)` for `n <= 2^32` (Lemire's method, as numpy).
    fn bounded(&mut self, n: u64) -> u64 {
        let rng = n - 1;
        if rng == 0 {
            return 0;
        }
        if rng == u32::MAX as u64 {
            return self.next_u32() as u64;
        }
        let excl = n;
        let mut m = self.next_u32() as u64 * excl;
        let mut leftover = m & 0xFFFF_FFFF;
        if leftover < excl {
            let threshold = (u32::MAX as u64 - rng) % excl;
            while leftover < threshold {
                m = self.next_u32() as u64 * excl;
                leftover = m & 0xFFFF_FFFF;
            }
        }
        m >> 32
    }

    /// `choice(n, size=count, replace=True)`: `count` indices in `[0, n)`, `n <= 2^32`.
    pub fn choice(&mut self, n: usize, count: usize) -> Vec<usize> {
        (0..count)
            .map(|_| self.bounded(n as u64) as usize)
            .collect()
    }

    /// `integers(2, size=count, dtype=bool)`.
    pub fn bools(&mut self, count: usize) -> Vec<bool> {
        let mut out = Vec::with_capacity(count);
        let mut buf = 0u32;
        let mut left = 0u32;
        for _ in 0..count {
            if left == 0 {
                buf = self.next_u32();
                left = 31;
            } else {
                buf >>= 1;
                left -= 1;
            }
            out.push(buf & 1 == 1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NUMPY_U64_12345: u64 = 4193609425186963869;
    const NUMPY_CHOICE_200: [usize; 10] = [139, 45, 157, 63, 40, 159, 128, 135, 197, 78];
    const NUMPY_BOOLS_40: [u8; 40] = [
        1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1,
        0, 1, 1, 0, 1, 1, 0, 0, 0, 1,
    ];
    const NUMPY_CHOICE_3_SEED7: [usize; 12] = [2, 1, 2, 2, 1, 2, 2, 0, 0, 0, 0, 2];

    // Expected values printed by numpy 2.4 (`np.random.default_rng(12345)` and friends).
    #[test]
    fn matches_numpy() {
        let mut g = Generator::new(12345);
        assert_eq!(g.next_u64(), NUMPY_U64_12345);
        let mut g = Generator::new(12345);
        assert_eq!(g.choice(200, 10), NUMPY_CHOICE_200);
        let mut g = Generator::new(12345);
        let b: Vec<u8> = g.bools(40).into_iter().map(u8::from).collect();
        assert_eq!(b, NUMPY_BOOLS_40);
        let mut g = Generator::new(7);
        assert_eq!(g.choice(3, 12), NUMPY_CHOICE_3_SEED7);
    }
}
