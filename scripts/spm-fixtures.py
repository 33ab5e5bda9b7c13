#!/usr/bin/env python3
"""Regenerates tests/fixtures/spm: three small SentencePiece models trained with Google's
sentencepiece (a unigram model, a BPE model with byte fallback and user-defined symbols, and a
unigram model without dummy prefix or whitespace clean-up), test lines (Multi30k, Japanese, Korean,
Chinese, awkward text), and the pieces sentencepiece's EncodeAsPieces gives for each line, joined
by spaces as sacreBLEU's spm/flores tokenizers join them. Run through scripts/spm-fixtures.sh."""
import json, os, sys
import sentencepiece as spm

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "tests", "fixtures", "spm")
shared = os.path.join(root, "..", "shared", "data", "multi30k")
os.makedirs(out, exist_ok=True)

def lines(path, n):
    return open(path, encoding="utf-8").read().split("\n")[:n]

testsets = os.path.join(root, "tests", "fixtures", "testsets")
cjk = lines(os.path.join(testsets, "ref.ja"), 20) + lines(os.path.join(testsets, "ref.ko"), 20)
zh = ["我爱北京天安门。", "今天天气很好。", "他们在公园里散步。", "这是一本书。", "我们明天见！"]
train = lines(os.path.join(shared, "train.en"), 3000) + lines(os.path.join(shared, "train.de"), 3000) + cjk * 5 + zh * 5
train_file = os.path.join(out, "train.tmp")
with open(train_file, "w", encoding="utf-8") as f:
    f.write("\n".join(l for l in train if l) + "\n")

models = {
    "unigram": dict(model_type="unigram", vocab_size=1500, character_coverage=0.995),
    "bpe": dict(model_type="bpe", vocab_size=1500, byte_fallback=True, character_coverage=0.995,
                user_defined_symbols=["<sep>", "gnmt"]),
    "plain": dict(model_type="unigram", vocab_size=1200, add_dummy_prefix=False,
                  remove_extra_whitespaces=False, user_defined_symbols=["@@", "Hund"]),
}
for name, opts in models.items():
    spm.SentencePieceTrainer.train(input=train_file, model_prefix=os.path.join(out, name), minloglevel=2,
                                   num_threads=2, **opts)
    os.remove(os.path.join(out, name + ".vocab"))
os.remove(train_file)

test = lines(os.path.join(shared, "test2016.en"), 100) + lines(os.path.join(shared, "test2016.de"), 100) + cjk + zh + [
    "", " ", "   leading and trailing   ", "tab\there", "two  spaces   three", "ＦＵＬＬ　ｗｉｄｔｈ！ ｱｲｳ ①②③ ﬁ ﬂ",
    "emoji 😀 ☃ ✓ ±×÷", "Combining e\u0301 and precomposed é", "Zero\u200bwidth and no\u00a0break", "ctrl\u0007bell",
    "word<sep>word gnmtgnmt <sep>", "Hund@@Hunde @@ x", "Ünïcödé ÀÉÎÕÜ ß ẞ", "x" * 300, "1234567890 3.14 10,000",
    "αβγ Σίσυφος кириллица עברית العربية हिन्दी ไทย", "\u3000全角スペース\u3000", "a\u2028b\u2029c", "trailing space ",
]
with open(os.path.join(out, "lines.txt"), "w", encoding="utf-8", newline="\n") as f:
    f.write("".join(l + "\n" for l in test))
expected = {}
for name in models:
    sp = spm.SentencePieceProcessor()
    sp.Load(os.path.join(out, name + ".model"))
    expected[name] = [" ".join(sp.EncodeAsPieces(l)) for l in test]
with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
    json.dump({"sentencepiece": spm.__version__, "pieces": expected}, f, ensure_ascii=False, indent=0)
    f.write("\n")
print(f"{len(test)} lines, models: {', '.join(models)}")
