//! Python's string semantics where sacreBLEU depends on them: whitespace, `split`, `strip`,
//! and the way `float` values print.

/// Python's `str.isspace()` for one character: Unicode White_Space plus U+001C..U+001F, which
/// Python splits on and Rust's `char::is_whitespace` does not.
#[inline]
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Letters whose lowercase form Unicode defined after version 14.0, the tables of Python 3.11
/// (on which sacreBLEU's expected outputs are made): Python's `str.lower()` leaves them as they
/// are, Rust's `to_lowercase` (newer tables) does not. Cyrillic TJE, Latin letters of Unicode
/// 15-16, Garay and Kirat Rai capitals.
const LOWER_NEWER_THAN_PYTHON: &[(char, char)] = &[
    ('\u{1c89}', '\u{1c89}'),
    ('\u{a7cb}', '\u{a7cc}'),
    ('\u{a7ce}', '\u{a7ce}'),
    ('\u{a7d2}', '\u{a7d2}'),
    ('\u{a7d4}', '\u{a7d4}'),
    ('\u{a7da}', '\u{a7da}'),
    ('\u{a7dc}', '\u{a7dc}'),
    ('\u{10d50}', '\u{10d65}'),
    ('\u{16ea0}', '\u{16eb8}'),
];

fn lower_is_newer_than_python(c: char) -> bool {
    LOWER_NEWER_THAN_PYTHON
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Python's `str.lower()` (Unicode 14.0, as Python 3.11 has it): Rust's `to_lowercase`, final
/// sigma included, except for the letters whose lowercase came later.
pub fn py_lower(s: &str) -> String {
    if !s.chars().any(lower_is_newer_than_python) {
        return s.to_lowercase();
    }
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    for c in s.chars() {
        if lower_is_newer_than_python(c) {
            out.push_str(&run.to_lowercase());
            run.clear();
            out.push(c);
        } else {
            run.push(c);
        }
    }
    out.push_str(&run.to_lowercase());
    out
}

/// Python's `str.split()` with no argument.
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|t| !t.is_empty())
}

/// Python's `str.rstrip()`.
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// `' '.join(s.split())`.
pub fn collapse_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, t) in py_split(s).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(t);
    }
    out
}

/// Python's `f"{x:.{w}f}"`. Rust's formatter rounds the exact binary value half-to-even, as
/// Python's does, so the digits agree; only `-0.0` and non-finite values need care.
pub fn fmt_fixed(x: f64, width: usize) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    format!("{x:.width$}")
}

/// Python's `repr(float)` (what `json.dumps` prints for a float): the shortest round-tripping
/// digits, always with a `.0` or an exponent, exponents with at least two digits.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Shortest digits and decimal exponent, from Rust's `{:e}` (also shortest round-trip).
    let e = format!("{x:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if neg { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let s = if exp >= 0 {
            if n <= exp + 1 {
                format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
            } else {
                let (a, b) = digits.split_at((exp + 1) as usize);
                format!("{a}.{b}")
            }
        } else {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        };
        format!("{sign}{s}")
    } else {
        let (a, b) = digits.split_at(1);
        let m = if b.is_empty() {
            a.to_string()
        } else {
            format!("{a}.{b}")
        };
        let es = if exp < 0 { "-" } else { "+" };
        format!("{sign}{m}e{es}{:02}", exp.abs())
    }
}

/// A string as `json.dumps(..., ensure_ascii=False)` writes it.
pub fn py_json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercase_follows_python_3_11() {
        assert_eq!(py_lower("ΣΑΣ Ƙasa İ"), "σας ƙasa i\u{307}");
        // Unicode 16's capital TJE and Latin capitals: unchanged, as Python 3.11 leaves them.
        assert_eq!(py_lower("A\u{1c89}B\u{a7cb}C"), "a\u{1c89}b\u{a7cb}c");
        assert_eq!(py_lower("\u{16ea0}x"), "\u{16ea0}x");
        // Every range holds letters that Rust does lowercase (the tables are not stale).
        for &(lo, _) in LOWER_NEWER_THAN_PYTHON {
            assert_ne!(lo.to_lowercase().to_string(), lo.to_string(), "{lo:?}");
        }
    }

    #[test]
    fn python_split_includes_file_separators() {
        let v: Vec<_> = py_split("a\u{1c}b \u{a0}c\u{3000}d").collect();
        assert_eq!(v, ["a", "b", "c", "d"]);
        assert_eq!(py_rstrip("x \u{1f}\t"), "x");
    }

    #[test]
    fn float_repr_matches_python() {
        assert_eq!(py_float_repr(45.1), "45.1");
        assert_eq!(py_float_repr(100.0), "100.0");
        assert_eq!(py_float_repr(0.0), "0.0");
        assert_eq!(py_float_repr(1e-5), "1e-05");
        assert_eq!(py_float_repr(0.0001), "0.0001");
        assert_eq!(py_float_repr(1e16), "1e+16");
        assert_eq!(py_float_repr(123456.75), "123456.75");
        assert_eq!(py_float_repr(-2.5), "-2.5");
    }

    #[test]
    fn fixed_rounds_like_python() {
        assert_eq!(fmt_fixed(0.125, 2), "0.12");
        assert_eq!(fmt_fixed(2.675, 2), "2.67");
        assert_eq!(fmt_fixed(48.530827, 1), "48.5");
    }
}
