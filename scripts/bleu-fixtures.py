#!/usr/bin/env python3
"""Regenerates tests/fixtures/bleu: inputs (slices of the shared corpora, perturbed "system outputs",
adversarial lines) and sacreBLEU 2.6.0's exact stdout for many command lines.
Run through scripts/bleu-fixtures.sh, which installs sacreBLEU into a temporary venv."""
import json, os, random, subprocess, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "tests", "fixtures", "bleu")
shared = os.path.join(root, "..", "shared", "data")
sacrebleu = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = random.Random(1234)

def perturb(line, p):
    w = line.split()
    r = []
    for x in w:
        u = rng.random()
        if u < p: continue
        if u < 2 * p: r.append(x.lower())
        elif u < 3 * p: r.extend([x, x])
        else: r.append(x)
    if len(r) > 3 and rng.random() < p * 3:
        i = rng.randrange(len(r) - 1); r[i], r[i + 1] = r[i + 1], r[i]
    return " ".join(r)

def write(name, lines):
    with open(os.path.join(out, name), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(l + "\n" for l in lines))

ref = open(os.path.join(shared, "multi30k", "test2016.de"), encoding="utf-8").read().split("\n")[:400]
ref2 = [perturb(l, 0.05) for l in ref]
write("ref.de", ref); write("ref2.de", ref2)
write("sysA.de", [perturb(l, 0.15) for l in ref]); write("sysB.de", [perturb(l, 0.3) for l in ref])
write("refs.tsv", [a + "\t" + b for a, b in zip(ref, ref2)])
wmt = open(os.path.join(shared, "wmt-sample-en-de", "valid.de"), encoding="utf-8").read().split("\n")[:50]
write("wmt.ref", wmt); write("wmt.hyp", [perturb(l, 0.2) for l in wmt])
adv_ref = ["", "Hello, world!", "Das ist 1.000,50 € teuer.", "我爱北京天安门。", "日本語のテキストです、ね。",
           "A\u001cB\u001fC D", "&amp; &lt;tag&gt; &quot;q&quot;", "it's John's car ... (ok) ?!", "x" * 500 + " y z",
           "Control\u0007char\ttab", "«Guillemets» — dash – and “quotes”", "3-4 2000-2010 1,2.3", "α β γ Σίσυφος",
           "emoji 😀 ☃ ✓ symbols ± × ÷", "ＦＵＬＬ　ｗｉｄｔｈ！", "tokenized . text , here .", "", "a b c d e f g h"]
adv_hyp = ["nothing", "Hello world", "Das ist 1.000,50€ teuer .", "我爱北京天安门", "日本語のテキスト、です。",
           "A B C D", "& <tag> \"q\"", "its Johns car... ok?!", "x" * 499 + " y", "Control char tab",
           "«Guillemets» - dash and \"quotes\"", "3 - 4 2000 - 2010 1,2.3", "Α Β γ ΣΊΣΥΦΟΣ", "emoji 😀 ☃ symbols ±×÷",
           "FULL width!", "tokenized. text, here.", "", "h g f e d c b a"]
write("adv.ref", adv_ref); write("adv.hyp", adv_hyp)
write("empty.txt", [])

cases = []
for metric_args in (["-m", "bleu"], ["-m", "chrf"], ["-m", "ter"], ["-m", "bleu", "chrf", "ter"]):
    for fmt in (["-f", "text"], ["-f", "json"]):
        for inp in (["ref.de", "-i", "sysA.de"], ["ref.de", "ref2.de", "-i", "sysB.de"], ["wmt.ref", "-i", "wmt.hyp"], ["adv.ref", "-i", "adv.hyp"]):
            cases.append(inp + metric_args + fmt)
for inp in (["ref.de", "-i", "sysA.de"], ["adv.ref", "-i", "adv.hyp"]):
    for opt in (["-tok", "intl"], ["-tok", "zh"], ["-tok", "char"], ["-tok", "none"], ["-lc"], ["-s", "none"], ["-s", "floor"],
                ["-s", "floor", "-sv", "0.2"], ["-s", "add-k"], ["-s", "add-k", "-sv", "2"], ["-w", "4"], ["-b"], ["-sh", "-f", "text"],
                ["-m", "chrf", "-cw", "2"], ["-m", "chrf", "--chrf-beta", "1"], ["-m", "chrf", "--chrf-whitespace"],
                ["-m", "chrf", "--chrf-lowercase"], ["-m", "chrf", "--chrf-eps-smoothing"], ["-m", "chrf", "-cc", "4", "-cw", "1"],
                ["-m", "ter", "--ter-case-sensitive"], ["-m", "ter", "--ter-normalized"], ["-m", "ter", "--ter-no-punct"],
                ["-m", "ter", "--ter-normalized", "--ter-asian-support"], ["-m", "ter", "--ter-no-punct", "--ter-asian-support"],
                ["-sl"], ["-sl", "-m", "chrf", "-cw", "2"], ["-sl", "-m", "ter"], ["-sl", "-b", "-w", "3"]):
        cases.append(inp + opt)
cases.append(["refs.tsv", "-nr", "2", "-i", "sysA.de", "-m", "bleu", "chrf", "ter"])
cases.append(["ref.de", "-i", "sysA.de", "sysB.de", "-m", "bleu", "chrf"])
cases.append(["ref.de", "-i", "sysA.de", "sysB.de", "-m", "bleu", "ter", "-w", "2"])
# The text table for several systems.
cases.append(["ref.de", "-i", "sysA.de", "sysB.de", "-m", "bleu", "chrf", "ter", "-f", "text"])
cases.append(["ref.de", "-i", "sysA.de", "sysB.de", "ref2.de", "-m", "bleu", "-f", "text", "-w", "3", "-sh"])
# Confidence intervals and paired tests (numpy's generator, float32 statistics).
for inp in (["ref.de", "-i", "sysA.de"], ["adv.ref", "-i", "adv.hyp"], ["wmt.ref", "-i", "wmt.hyp"]):
    for fmt in (["-f", "text"], ["-f", "json"]):
        cases.append(inp + ["-ci", "-m", "bleu", "chrf", "ter"] + fmt)
cases.append(["ref.de", "-i", "sysA.de", "-ci", "-cin", "300", "-w", "3", "-f", "text", "-s", "floor", "-m", "bleu", "chrf", "-cw", "2"])
cases.append(["ref.de", "ref2.de", "-i", "sysB.de", "-ci", "-m", "bleu", "ter", "-lc", "-f", "text", "-sh"])
cases.append(["ref.de", "-i", "sysA.de", "sysB.de", "-pbs", "-m", "bleu", "chrf", "ter", "-f", "text"])
cases.append(["ref.de", "-i", "sysA.de", "sysB.de", "ref2.de", "-pbs", "-pbsn", "500", "-m", "bleu", "-f", "json"])
cases.append(["ref.de", "-i", "sysA.de", "sysB.de", "-par", "-m", "bleu", "chrf", "ter", "-f", "text", "-w", "2"])
cases.append(["ref.de", "-i", "sysA.de", "sysB.de", "ref2.de", "-par", "-parn", "2000", "-m", "bleu", "chrf", "ter", "-f", "json"])
cases.append(["adv.ref", "-i", "adv.hyp", "adv.ref", "-pbs", "-m", "bleu", "chrf", "ter", "-f", "text", "-sh"])
cases.append(["ref.de", "-i", "sysA.de", "sysA.de", "sysB.de", "-par", "-parn", "500", "-m", "chrf", "-f", "text"])
cases.append({"args": ["ref.de", "-i", "sysA.de", "sysB.de", "-pbs", "-m", "bleu", "ter", "-f", "text"], "env": {"SACREBLEU_SEED": "7"}})
cases.append({"args": ["wmt.ref", "-i", "wmt.hyp", "-ci", "-m", "bleu", "chrf", "-f", "text"], "env": {"SACREBLEU_SEED": "42"}})
# Refusals: -ci with several systems, a paired test with one.
cases.append(["ref.de", "-i", "sysA.de", "sysB.de", "-ci"])
cases.append(["ref.de", "-i", "sysA.de", "-pbs"])

fixtures = []
env = dict(os.environ, NO_COLOR="1")
env.pop("SACREBLEU_FORMAT", None)
for case in cases:
    args, extra = (case["args"], case["env"]) if isinstance(case, dict) else (case, {})
    p = subprocess.run([sacrebleu] + args, cwd=out, capture_output=True, text=True, env=dict(env, **extra))
    fixture = {"args": args, "code": p.returncode, "stdout": p.stdout}
    if extra:
        fixture["env"] = extra
    fixtures.append(fixture)
with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
    json.dump(fixtures, f, ensure_ascii=False, indent=1)
print(f"wrote {len(fixtures)} cases to {out}")
