//! sacreBLEU's BLEU tokenizers (`13a`, `intl`, `zh`, `char`, `none`) and TER's `tercom`.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use regex::Regex;

use crate::text::{collapse_ws, is_py_space, py_strip};
use crate::Error;

/// A tokenizer this crate does not implement itself (MeCab for `ja-mecab` and `ko-mecab`),
/// handed in by its caller.
pub trait ExternalTokenizer: std::fmt::Debug + Send + Sync {
    /// Tokenizes one (already right-stripped) line into space-separated tokens.
    fn tokenize(&self, line: &str) -> String;
    /// The `tok:` value of the signature (`ja-mecab-0.996-IPA`).
    fn signature(&self) -> String;
}

/// The tokenizer BLEU applies to hypotheses and references before counting n-grams.
#[derive(Debug, Clone, Default)]
pub enum Tokenizer {
    /// No tokenization: split on whitespace only.
    None,
    /// mteval-v13a, the WMT standard and sacreBLEU's default.
    #[default]
    T13a,
    /// mteval-v14 international: split on Unicode punctuation and symbols.
    Intl,
    /// Chinese: every CJK character a token, then 13a rules.
    Zh,
    /// Every character a token.
    Char,
    /// One given by the caller.
    External(Arc<dyn ExternalTokenizer>),
}

impl PartialEq for Tokenizer {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Tokenizer::External(a), Tokenizer::External(b)) => Arc::ptr_eq(a, b),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Tokenizer {
    /// The name sacreBLEU's signature uses (for the built-in ones, also `-tok`'s value).
    pub fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Tokenizer::None => "none",
            Tokenizer::T13a => "13a",
            Tokenizer::Intl => "intl",
            Tokenizer::Zh => "zh",
            Tokenizer::Char => "char",
            Tokenizer::External(t) => return Cow::Owned(t.signature()),
        })
    }

    /// Parses a `-tok` value.
    pub fn from_name(name: &str) -> Result<Self, Error> {
        Ok(match name {
            "none" => Tokenizer::None,
            "13a" => Tokenizer::T13a,
            "intl" => Tokenizer::Intl,
            "zh" => Tokenizer::Zh,
            "char" => Tokenizer::Char,
            "ja-mecab" | "ko-mecab" | "spm" | "flores101" | "flores200" | "spBLEU-1K" => {
                return Err(Error::Unsupported(format!(
                    "tokenizer `{name}` needs an external model and is not supported by gnmt-bleu"
                )))
            }
            other => return Err(Error::Unsupported(format!("unknown tokenizer `{other}`"))),
        })
    }

    /// Tokenizes one (already right-stripped) line.
    pub fn tokenize(&self, line: &str) -> String {
        match self {
            Tokenizer::External(t) => t.tokenize(line),
            Tokenizer::None => line.to_string(),
            Tokenizer::T13a => tok_13a(line),
            Tokenizer::Intl => tok_intl(line),
            Tokenizer::Zh => tok_zh(line),
            Tokenizer::Char => {
                let mut out = String::with_capacity(line.len() * 2);
                for (i, c) in line.chars().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push(c);
                }
                out
            }
        }
    }
}

fn re(pattern: &str) -> Regex {
    #[allow(clippy::unwrap_used)] // constant patterns, covered by tests
    Regex::new(pattern).unwrap()
}

// The mteval "regexp" post-tokenizer shared by 13a and zh, as sacreBLEU's four regexes:
//   ([\{-~\[-` -\&\(-\+:-@/]) -> " \1 "     ([^0-9])([\.,]) -> "\1 \2 "
//   ([\.,])([^0-9]) -> " \1 \2"                 ([0-9])(-)     -> "\1 \2 "
// Each is a left-to-right scan of non-overlapping matches of one or two characters, written
// here as plain loops (the regex engine made 13a the bottleneck of BLEU). Character ranges are
// ASCII-only as in Python's `re`; `[^0-9]` matches any other character, newline included.

// The same rules as regexes, for TER's normalized tokenizer (which interleaves others with them).
static RE_PUNCT: LazyLock<Regex> = LazyLock::new(|| re(r"([\{-~\[-` -\&\(-\+:-@/])"));
static RE_NONDIGIT_DOT: LazyLock<Regex> = LazyLock::new(|| re(r"([^0-9])([\.,])"));
static RE_DOT_NONDIGIT: LazyLock<Regex> = LazyLock::new(|| re(r"([\.,])([^0-9])"));
static RE_DIGIT_DASH: LazyLock<Regex> = LazyLock::new(|| re(r"([0-9])(-)"));

fn is_13a_punct(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// Applies a two-character rule left to right without overlaps: where `hit(a, b)`, `emit`
/// writes the replacement of the pair.
fn pair_pass(
    s: &str,
    hit: impl Fn(char, char) -> bool,
    emit: impl Fn(&mut String, char, char),
) -> String {
    let cs: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 16);
    let mut i = 0;
    while i < cs.len() {
        if i + 1 < cs.len() && hit(cs[i], cs[i + 1]) {
            emit(&mut out, cs[i], cs[i + 1]);
            i += 2;
        } else {
            out.push(cs[i]);
            i += 1;
        }
    }
    out
}

fn regexp_post(line: &str) -> String {
    let mut s = String::with_capacity(line.len() * 2);
    for c in line.chars() {
        if is_13a_punct(c) {
            s.push(' ');
            s.push(c);
            s.push(' ');
        } else {
            s.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let dot = |c: char| c == '.' || c == ',';
    let s = pair_pass(
        &s,
        |a, b| !digit(a) && dot(b),
        |o, a, b| {
            o.push(a);
            o.push(' ');
            o.push(b);
            o.push(' ');
        },
    );
    let s = pair_pass(
        &s,
        |a, b| dot(a) && !digit(b),
        |o, a, b| {
            o.push(' ');
            o.push(a);
            o.push(' ');
            o.push(b);
        },
    );
    let s = pair_pass(
        &s,
        |a, b| digit(a) && b == '-',
        |o, a, b| {
            o.push(a);
            o.push(' ');
            o.push(b);
            o.push(' ');
        },
    );
    collapse_ws(&s)
}

fn tok_13a(line: &str) -> String {
    let mut l = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if l.contains('&') {
        l = l
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    regexp_post(&format!(" {l} "))
}

// sacreBLEU's `(\P{N})(\p{P})`, `(\p{P})(\P{N})` and `(\p{S})`, with the categories of Python's
// `regex` module (Unicode 17) rather than the `regex` crate's older tables.
static RE_INTL_1: LazyLock<Regex> = LazyLock::new(|| re(&format!("([^{N}])([{P}])")));
static RE_INTL_2: LazyLock<Regex> = LazyLock::new(|| re(&format!("([{P}])([^{N}])")));
static RE_INTL_3: LazyLock<Regex> = LazyLock::new(|| re(&format!("([{S}])")));

use crate::unicode_classes::{N, P, S};

fn tok_intl(line: &str) -> String {
    let s = RE_INTL_1.replace_all(line, "$1 $2 ");
    let s = RE_INTL_2.replace_all(&s, " $1 $2");
    let s = RE_INTL_3.replace_all(&s, " $1 ");
    collapse_ws(&s)
}

/// sacreBLEU's table of "Chinese" ranges, including its quirk: the bounds it writes as
/// `\u20000`..`\u2a6d6` and `\u2f800`..`\u2fa1d` are two-character strings, so the effective ranges
/// are U+2001..U+2A6D and U+2F81..U+2FA1, and CJK Extension B is not Chinese to it.
const ZH_RANGES: &[(u32, u32)] = &[
    (0x3400, 0x4db5),
    (0x4e00, 0x9fa5),
    (0x9fa6, 0x9fbb),
    (0xf900, 0xfa2d),
    (0xfa30, 0xfa6a),
    (0xfa70, 0xfad9),
    (0x2001, 0x2a6d),
    (0x2f81, 0x2fa1),
    (0xff00, 0xffef),
    (0x2e80, 0x2eff),
    (0x3000, 0x303f),
    (0x31c0, 0x31ef),
    (0x2f00, 0x2fdf),
    (0x2ff0, 0x2fff),
    (0x3100, 0x312f),
    (0x31a0, 0x31bf),
    (0xfe10, 0xfe1f),
    (0xfe30, 0xfe4f),
    (0x2600, 0x26ff),
    (0x2700, 0x27bf),
    (0x3200, 0x32ff),
    (0x3300, 0x33ff),
];

fn is_chinese(c: char) -> bool {
    let c = c as u32;
    ZH_RANGES.iter().any(|&(a, b)| a <= c && c <= b)
}

fn tok_zh(line: &str) -> String {
    let line = py_strip(line);
    let mut s = String::with_capacity(line.len() * 2);
    for c in line.chars() {
        if is_chinese(c) {
            s.push(' ');
            s.push(c);
            s.push(' ');
        } else {
            s.push(c);
        }
    }
    regexp_post(&s)
}

/// TER's `tercom` tokenizer options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TercomOptions {
    pub normalized: bool,
    pub no_punct: bool,
    pub asian_support: bool,
    pub case_sensitive: bool,
}

static RE_APOS_S: LazyLock<Regex> = LazyLock::new(|| re(r"'s "));
static RE_APOS_S_END: LazyLock<Regex> = LazyLock::new(|| re(r"'s$"));
static RE_ASIAN_1: LazyLock<Regex> =
    LazyLock::new(|| re(r"([\u{4e00}-\u{9fff}\u{3400}-\u{4dbf}])"));
static RE_ASIAN_2: LazyLock<Regex> =
    LazyLock::new(|| re(r"([\u{31c0}-\u{31ef}\u{2e80}-\u{2eff}])"));
static RE_ASIAN_3: LazyLock<Regex> =
    LazyLock::new(|| re(r"([\u{3300}-\u{33ff}\u{f900}-\u{faff}\u{fe30}-\u{fe4f}])"));
static RE_ASIAN_4: LazyLock<Regex> = LazyLock::new(|| re(r"([\u{3200}-\u{3f22}])"));
const ASIAN_PUNCT: &str =
    r"([\u{3001}\u{3002}\u{3008}-\u{3011}\u{3014}-\u{301f}\u{ff61}-\u{ff65}\u{30fb}])";
const FULL_WIDTH_PUNCT: &str =
    r"([\u{ff0e}\u{ff0c}\u{ff1f}\u{ff1a}\u{ff1b}\u{ff01}\u{ff02}\u{ff08}\u{ff09}])";
static RE_ASIAN_PUNCT: LazyLock<Regex> = LazyLock::new(|| re(ASIAN_PUNCT));
static RE_FULL_WIDTH_PUNCT: LazyLock<Regex> = LazyLock::new(|| re(FULL_WIDTH_PUNCT));
static RE_PUNCT_TER: LazyLock<Regex> = LazyLock::new(|| re(r#"[\.,\?:;!"\(\)]"#));

/// TER's tokenizer (a re-implementation of tercom's normalizer, as sacreBLEU has it).
pub fn tercom(sent: &str, o: TercomOptions) -> String {
    if sent.is_empty() {
        return String::new();
    }
    let mut s = if o.case_sensitive {
        sent.to_string()
    } else {
        crate::text::py_lower(sent)
    };
    if o.normalized {
        s = s.replace("\n-", "").replace('\n', " ");
        s = s
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
        s = format!(" {s} ");
        s = RE_PUNCT.replace_all(&s, " $1 ").into_owned();
        s = RE_APOS_S.replace_all(&s, " 's ").into_owned();
        // Python's `$` also matches before a final newline; none is left at this point.
        s = RE_APOS_S_END.replace_all(&s, " 's").into_owned();
        s = RE_NONDIGIT_DOT.replace_all(&s, "$1 $2 ").into_owned();
        s = RE_DOT_NONDIGIT.replace_all(&s, " $1 $2").into_owned();
        s = RE_DIGIT_DASH.replace_all(&s, "$1 $2 ").into_owned();
        if o.asian_support {
            for r in [&*RE_ASIAN_1, &*RE_ASIAN_2, &*RE_ASIAN_3, &*RE_ASIAN_4] {
                s = r.replace_all(&s, " $1 ").into_owned();
            }
            // sacreBLEU's kana rules are anchored at the start of the string, which always holds
            // a space here, so they never fire: nothing to do for them.
            s = RE_ASIAN_PUNCT.replace_all(&s, " $1 ").into_owned();
            s = RE_FULL_WIDTH_PUNCT.replace_all(&s, " $1 ").into_owned();
        }
    }
    if o.no_punct {
        s = RE_PUNCT_TER.replace_all(&s, "").into_owned();
        if o.asian_support {
            s = RE_ASIAN_PUNCT.replace_all(&s, "").into_owned();
            s = RE_FULL_WIDTH_PUNCT.replace_all(&s, "").into_owned();
        }
    }
    collapse_ws(&s)
}

/// The string with all Python whitespace removed (chrF's character n-grams).
pub(crate) fn strip_all_ws(s: &str) -> String {
    s.chars().filter(|&c| !is_py_space(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t13a_examples() {
        assert_eq!(Tokenizer::T13a.tokenize("Hello, world!"), "Hello , world !");
        assert_eq!(
            Tokenizer::T13a.tokenize("3.14 and 1,000 ok."),
            "3.14 and 1,000 ok ."
        );
        assert_eq!(
            Tokenizer::T13a.tokenize("a &amp; b &lt;c&gt;"),
            "a & b < c >"
        );
        assert_eq!(Tokenizer::T13a.tokenize("1990-2000"), "1990 - 2000");
    }

    #[test]
    fn zh_quirk_ranges() {
        // U+2001 (em quad) is "Chinese" to sacreBLEU; U+20000 is not.
        assert!(is_chinese('\u{2001}'));
        assert!(!is_chinese('\u{2000}'));
        assert!(!is_chinese('\u{20000}'));
        assert_eq!(Tokenizer::Zh.tokenize("我爱你。"), "我 爱 你 。");
    }

    #[test]
    fn intl_uses_python_regex_unicode_tables() {
        // Code points Python 3.11's own tables do not know; sacreBLEU (Python `regex`) output.
        for (cp, want) in [
            (0x1b4e, "a \u{1b4e} b 1\u{1b4e}2"),
            (0x1cc07, "a \u{1cc07} b 1 \u{1cc07} 2"),
            (0x1cd07, "a \u{1cd07} b 1 \u{1cd07} 2"),
            (0x1fbfa, "a \u{1fbfa} b 1 \u{1fbfa} 2"),
        ] {
            let c = char::from_u32(cp).unwrap();
            assert_eq!(
                Tokenizer::Intl.tokenize(&format!("a{c}b 1{c}2")),
                want,
                "U+{cp:X}"
            );
        }
        // The tables hold as many code points as Python's regex module reports.
        let count = |class: &str| {
            let r = Regex::new(&format!("[{class}]")).unwrap();
            (0..0x110000u32)
                .filter_map(char::from_u32)
                .filter(|c| r.is_match(c.encode_utf8(&mut [0; 4])))
                .count()
        };
        assert_eq!((count(P), count(S), count(N)), (860, 8760, 2247));
    }

    #[test]
    fn intl_and_char() {
        assert_eq!(
            Tokenizer::Intl.tokenize("Hi, 3.5$ «ok»"),
            "Hi , 3.5 $ « ok »"
        );
        assert_eq!(Tokenizer::Char.tokenize("ab c"), "a b   c");
    }

    /// sacreBLEU 2.6.0's own output (scripts/tercom-fixtures.py) on text in every script, for
    /// every combination of the four options.
    #[test]
    fn tercom_equals_sacrebleu_on_every_script_and_option() {
        use std::io::Read;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/bleu/tercom.jsonl.gz"
        );
        let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut cases = 0;
        let mut wrong = Vec::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let input = v["in"].as_str().unwrap();
            let outs = v["out"].as_array().unwrap();
            assert_eq!(outs.len(), 16);
            for (bits, want) in outs.iter().enumerate() {
                let o = TercomOptions {
                    normalized: bits & 1 != 0,
                    no_punct: bits & 2 != 0,
                    asian_support: bits & 4 != 0,
                    case_sensitive: bits & 8 != 0,
                };
                let got = tercom(input, o);
                cases += 1;
                if got != want.as_str().unwrap() {
                    wrong.push(format!(
                        "{o:?}\n  in:   {input:?}\n  got:  {got:?}\n  want: {want}"
                    ));
                }
            }
        }
        assert!(cases >= 16 * 1000, "only {cases} cases in {path}");
        assert!(
            wrong.is_empty(),
            "{} of {cases} differ; first:\n{}",
            wrong.len(),
            wrong[..wrong.len().min(8)].join("\n")
        );
    }

    #[test]
    fn tercom_default_lowercases_only() {
        let o = TercomOptions::default();
        assert_eq!(tercom("Hello,  World!", o), "hello, world!");
        let n = TercomOptions {
            normalized: true,
            ..o
        };
        assert_eq!(tercom("John's car, ok.", n), "john 's car , ok .");
        let p = TercomOptions {
            no_punct: true,
            ..o
        };
        assert_eq!(tercom("a, b. (c)", p), "a b c");
    }
}
