#!/usr/bin/env python3
"""Writes tests/fixtures/bleu/tercom.jsonl.gz: sacreBLEU 2.6.0's TER tokenizer (`tercom`) on text in
every Unicode script, for each of its 16 option combinations: {"in": ..., "out": [16 strings]},
the options enumerated as bits (normalized=1, no_punct=2, asian_support=4, case_sensitive=8).
Run with a Python that has sacrebleu==2.6.0 (scripts/bleu-fixtures.sh makes one)."""
import gzip, json, os, random, sys, unicodedata
from sacrebleu.tokenizers.tokenizer_ter import TercomTokenizer

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "tests", "fixtures", "bleu", "tercom.jsonl.gz")
rng = random.Random(20261202)

# Sentences written for this corpus (Hausa, Bengali, Hindi, Yoruba, Amharic, Greek, Turkish,
# Russian, Arabic, Chinese, Japanese, Korean), with the punctuation, apostrophes, digits and
# cases TER's normalizer treats specially.
sentences = [
    "Ƙasar Najeriya ta samu 'yancin kai a shekarar 1960, kuma Ɗan'uwansa ya ce: \"Mun gode!\"",
    "Gwamnatin tarayya ta ƙaddamar da shirin ba da tallafi ga 'yan kasuwa 2,500 a jihar Kano.",
    "ƊALIBAI ƊARI BIYU (200) SUN KAMMALA KARATU; SHUGABAN MAKARANTA YA YABA MUSU.",
    "Ya ce ʼyan sanda sun kama mutane 3.5 cikin ɗari... Ta'aziyya ga iyalan mamatan!",
    "বাংলাদেশের রাজধানী ঢাকা। ২০২১ সালে জনসংখ্যা ছিল প্রায় ২,১০,০০০,০০০ জন।",
    "তিনি বললেন, \"আমরা আগামীকাল (শনিবার) যাব।\" কিন্তু সে রাজি হলো না?",
    "ভারতের প্রধানমন্ত্রী নরেন্দ্র মোদী 3.14 শতাংশ বৃদ্ধির কথা ঘোষণা করেছেন; দেশটির অর্থনীতি!",
    "भारत की राजधानी नई दिल्ली है। 2021 में, सरकार ने कहा: \"हम तैयार हैं।\"",
    "Ọjọ́ ìbí mi ni ọjọ́ kẹta oṣù kejì, ọdún 1990. Ẹ ṣé o!",
    "ኢትዮጵያ በአፍሪካ ቀንድ የምትገኝ አገር ናት። አዲስ አበባ ዋና ከተማዋ ናት፤",
    "Ο Σίσυφος ΚΥΛΟΥΣΕ ΤΗΝ ΠΕΤΡΑ· «ΟΔΟΣ» και ΣΑΣ, 2.000 ευρώ.",
    "İstanbul'un IŞIKLARI ve Ankara'nın SOKAKLARI; Iğdır'da 1.500 kişi.",
    "Москва — столица России. В 2020 г. население составило 12,6 млн чел.",
    "قال الرئيس: \"سنبني 1,000 مدرسة\"، وأضاف أن الحكومة (الجديدة) جاهزة؟",
    "我爱北京天安门。他说：“今天（星期六）很好！”",
    "日本語のテキストです、ね。カタカナとひらがな、ｶﾀｶﾅ。",
    "한국어 문장입니다. 서울은 대한민국의 수도입니다!",
    "It's John's car &amp; it's &quot;new&quot; -- 1990-2000, 3.5.",
    "Line one\n-continued and\nline two",
    "ǅungla ǈubav ǋjegoš ẞtraße ﬃ ŉ ǰ ΐ Ϊ́",
]

# Blocks of every script Unicode has, as (first, last) code points, with ASCII mixed in.
ascii_bits = list(" ,.?!:;\"()'-&/[]{}~`@+*0123456789") + ["'s", "'s ", "&amp;", "&quot;", "&lt;", "&gt;", "\n-", "\n"]

def blocks():
    start, prev = None, None
    for cp in range(0x20, 0x30000):
        c = chr(cp)
        ok = unicodedata.category(c)[0] in "LMNPSZ" and not (0xD800 <= cp <= 0xDFFF)
        if ok and start is None:
            start = cp
        if not ok and start is not None:
            yield start, cp - 1
            start = None
    if start is not None:
        yield start, 0x2FFFF

ranges = [r for r in blocks()]
lines = list(sentences)
for lo, hi in ranges:
    # A few lines per run of assigned characters, more for long runs.
    n = 1 + min(3, (hi - lo) // 200)
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(3, 14)):
            if rng.random() < 0.35:
                parts.append(rng.choice(ascii_bits))
            else:
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6))))
            if rng.random() < 0.5:
                parts.append(" ")
        lines.append("".join(parts))

# Every code point in context, where the options can treat it differently: letters with a case
# (lowercasing follows Python's own Unicode tables) and the ranges the Asian rules name.
def special(cp):
    c = chr(cp)
    asian = any(lo <= cp <= hi for lo, hi in [(0x2e80, 0x2eff), (0x3000, 0x3f22), (0x31c0, 0x31ff),
                                               (0xf900, 0xfaff), (0xfe30, 0xfe4f), (0xff00, 0xffef)])
    return asian or c.lower() != c or c.upper() != c

for base in range(0, 0x110000, 32):
    cs = [chr(c) for c in range(base, base + 32) if not (0xD800 <= c <= 0xDFFF) and special(c)]
    if cs:
        lines.append(" ".join(f"a{c}B{c}. 1{c}2 {c}'s {c}," for c in cs))

with gzip.open(out, "wt", encoding="utf-8", newline="\n", compresslevel=9) as f:
    for line in lines:
        outs = []
        for bits in range(16):
            t = TercomTokenizer(normalized=bool(bits & 1), no_punct=bool(bits & 2),
                                asian_support=bool(bits & 4), case_sensitive=bool(bits & 8))
            outs.append(t(line))
        f.write(json.dumps({"in": line, "out": outs}, ensure_ascii=False) + "\n")
print(f"{out}: {len(lines)} lines", file=sys.stderr)
