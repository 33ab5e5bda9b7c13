#!/usr/bin/env python3
"""Regenerates tests/fixtures/testsets: a prepared sacreBLEU cache (raw WMT SGML and XML files for
wmt14, wmt19 and wmt21 made from Multi30k sentences, with non-empty stand-ins for the archives, so
nothing is downloaded), system outputs, and sacreBLEU 2.6.0's stdout and exit code for `-t/-l`,
`--echo`, `--list`, `--origlang` and `--subset` command lines run on a copy of that cache, plus the
text files sacreBLEU wrote into it. Run through scripts/testset-fixtures.sh."""
import json, os, random, shutil, subprocess, sys, tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "tests", "fixtures", "testsets")
shared = os.path.join(root, "..", "shared", "data", "multi30k")
sacrebleu = sys.argv[1]
rng = random.Random(4321)
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
cache = os.path.join(out, "cache")

def lines(path, n):
    return open(path, encoding="utf-8").read().split("\n")[:n]

en = lines(os.path.join(shared, "test2016.en"), 90)
de = lines(os.path.join(shared, "test2016.de"), 90)
# Lines sacreBLEU's conversion treats specially: runs of spaces and tabs, a no-break space,
# entities it keeps, a second </seg>.
en[3] = "  Two   spaces\tand a tab  "
de[3] = "Zwei\u00a0Leerzeichen  und ein Tab "
en[5] = "Fish &amp; chips &lt;b&gt;"
de[5] = "Fisch &amp; Pommes</seg> dahinter"
zh = ["我爱北京天安门。", "今天天气很好。", "他们在公园里散步。", "这是一本书。", "我们明天见！",
      "请给我一杯水。", "火车站在哪里？", "她正在学习中文。", "这个问题很难回答。", "谢谢你的帮助。"]

def perturb(line):
    w = line.split()
    r = [x for x in w if rng.random() > 0.15]
    if len(r) > 3 and rng.random() < 0.3:
        i = rng.randrange(len(r) - 1); r[i], r[i + 1] = r[i + 1], r[i]
    return " ".join(r)

def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)

def sgml(kind, docs, lang):
    """docs: [(docid, origlang, [segments])]"""
    s = f'<{kind}set setid="newstest" srclang="any">\n'
    for docid, origlang, segs in docs:
        s += f'<doc sysid="ref" docid="{docid}" genre="news" origlang="{origlang}">\n'
        for i, seg in enumerate(segs, 1):
            s += f'<seg id="{i}">{seg}</seg>\n'
        s += "</doc>\n"
    return s + f"</{kind}set>\n"

def docs_of(ids, origlangs, sents, per):
    return [(d, o, sents[i * per:(i + 1) * per]) for i, (d, o) in enumerate(zip(ids, origlangs))]

def stand_in(name, url):
    write(os.path.join(cache, name, "raw", name.replace("/", "_") + "." + url.rsplit("/", 1)[1]),
          "stand-in: a non-empty download is taken as done by sacreBLEU and gnmt\n")

# wmt14 en-de: 60 segments in 6 documents, origlang alternating.
ids14 = [f"doc{i}.news" for i in range(6)]
orig14 = ["en", "de"] * 3
write(os.path.join(cache, "wmt14/raw/test/newstest2014-deen-src.en.sgm"), sgml("src", docs_of(ids14, orig14, en[:60], 10), "en"))
write(os.path.join(cache, "wmt14/raw/test/newstest2014-deen-ref.de.sgm"), sgml("ref", docs_of(ids14, orig14, de[:60], 10), "de"))
stand_in("wmt14", "https://statmt.org/wmt14/test-filtered.tgz")
write(os.path.join(out, "hyp14.de"), "".join(perturb(l) + "\n" for l in de[:60]))
write(os.path.join(out, "hyp14b.de"), "".join(perturb(l) + "\n" for l in de[:60]))

# wmt19 en-de: documents annotated in sacreBLEU's subsets (GB-politics, US-world, ...).
ids19 = ["bbc.381790", "nytimes.184853", "upi.176266", "cnbc.com.6790", "guardian.221754"]
orig19 = ["en", "en", "de", "en", "de"]
write(os.path.join(cache, "wmt19/raw/sgm/newstest2019-ende-src.en.sgm"), sgml("src", docs_of(ids19, orig19, en[60:90], 6), "en"))
write(os.path.join(cache, "wmt19/raw/sgm/newstest2019-ende-ref.de.sgm"), sgml("ref", docs_of(ids19, orig19, de[60:90], 6), "de"))
# wmt19 en-zh: the target language picks the zh tokenizer.
write(os.path.join(cache, "wmt19/raw/sgm/newstest2019-enzh-src.en.sgm"), sgml("src", [("d.zh", "en", en[:10])], "en"))
write(os.path.join(cache, "wmt19/raw/sgm/newstest2019-enzh-ref.zh.sgm"), sgml("ref", [("d.zh", "en", zh)], "zh"))
stand_in("wmt19", "https://data.statmt.org/wmt19/translation-task/test.tgz")
write(os.path.join(out, "hyp19.de"), "".join(perturb(l) + "\n" for l in de[60:90]))
write(os.path.join(out, "hyp19.zh"), "".join(z[:-2] + "。\n" for z in zh))
write(os.path.join(out, "hyp14-19.de"), "".join(perturb(l) + "\n" for l in de[:90]))

# wmt21 en-de: WMT's XML with a system, domains, a test suite and a segment without reference.
x = ['<?xml version="1.0" encoding="utf-8"?>', '<dataset id="newstest2021">', ' <collection id="general">']
for d in range(3):
    x.append(f'  <doc id="x{d}" origlang="{"en" if d != 1 else "de"}" domain="{["news", "social", "news"][d]}">')
    segs = range(d * 10, d * 10 + 10)
    x.append('   <src lang="en"><p>' + "".join(f'<seg id="{i - d * 10 + 1}">{en[i].replace("&amp;", "&amp;amp;")}</seg>' for i in segs) + "</p></src>")
    x.append('   <ref lang="de" translator="A"><p>' + "".join(
        f'<seg id="{i - d * 10 + 1}">{"" if i == 12 else de[i].replace("&amp;", "&amp;amp;").replace("</seg>", "&lt;/seg&gt;")}</seg>' for i in segs) + "</p></ref>")
    x.append('   <hyp system="sysX" language="de"><p>' + "".join(f'<seg id="{i - d * 10 + 1}">{perturb(de[i]).replace("&", "&amp;").replace("<", "&lt;")}</seg>' for i in segs) + "</p></hyp>")
    x.append("  </doc>")
x.append('  <doc id="suite" origlang="en" testsuite="yes"><src lang="en"><p><seg id="1">Suite</seg></p></src></doc>')
x += [" </collection>", "</dataset>", ""]
write(os.path.join(cache, "wmt21/raw/test/newstest2021.en-de.xml"), "\n".join(x))
stand_in("wmt21", "https://data.statmt.org/wmt21/translation-task/test.tgz")
write(os.path.join(out, "hyp21.de"), "".join(perturb(de[i]) + "\n" for i in range(30) if i != 12))

# Japanese and Korean (sacreBLEU's ja-mecab and ko-mecab: MeCab with its pinned dictionaries).
ja = ["日本語のテキストです、ね。", "東京特許許可局は存在しない。", "すもももももももものうち", "私は昨日、友達と映画を見に行きました。",
      "この本はとても面白かったです！", "ＦＵＬＬ　ｗｉｄｔｈ！ abc 123 ﾊﾝｶｸ", "彼女はJohn's carを見た…(ok)?!", "猫が窓の外をじっと見ている。",
      "明日の会議は午後三時からです。", "駅までの道を教えてください。", "富士山は日本で一番高い山です。", "", "  前後に空白  ",
      "コンピューターのプログラムを書くのが好きだ。", "雨が降っても試合は行われます。", "絵文字😀と記号±×÷も入る。",
      "機械翻訳の評価にはBLEUがよく使われる。", "今日は2026年12月2日です。", "お茶とコーヒー、どちらがいいですか？", "ありがとうございました。"]
ko = ["안녕하세요, 세계입니다.", "나는 어제 친구와 영화를 보러 갔다.", "이 책은 정말 재미있었어요!", "고양이가 창밖을 바라보고 있다.",
      "내일 회의는 오후 세 시에 시작합니다.", "역까지 가는 길을 알려 주세요.", "한라산은 제주도에 있는 산입니다.", "", "  앞뒤에 공백  ",
      "기계 번역의 평가에는 BLEU가 자주 쓰인다.", "비가 와도 경기는 열립니다.", "이모지😀와 기호±×÷도 들어간다.", "오늘은 2026년 12월 2일입니다.",
      "차와 커피 중 어느 것이 좋으세요?", "감사합니다.", "서울의 겨울은 매우 춥다.", "그는 John's car를 보았다…(ok)?!",
      "프로그램을 작성하는 것을 좋아한다.", "한국어 형태소 분석은 어렵다.", "ＦＵＬＬ　ｗｉｄｔｈ！ abc 123"]
def drop_chars(line):
    return "".join(c for c in line if rng.random() > 0.1)
write(os.path.join(out, "ref.ja"), "".join(l + "\n" for l in ja))
write(os.path.join(out, "hyp.ja"), "".join(drop_chars(l) + "\n" for l in ja))
write(os.path.join(out, "ref.ko"), "".join(l + "\n" for l in ko))
write(os.path.join(out, "hyp.ko"), "".join(drop_chars(l) + "\n" for l in ko))

# sacreBLEU's SentencePiece tokenizers read their models from $SACREBLEU/models: the small
# models of tests/fixtures/spm stand in for the FLORES ones (nothing is downloaded).
spm_dir = os.path.join(root, "tests", "fixtures", "spm")
for model, name in [("unigram", "sacrebleu_tokenizer_spm.model"), ("bpe", "flores200sacrebleuspm"),
                    ("plain", "spbleu-1k_tokenizer_spm.model")]:
    os.makedirs(os.path.join(cache, "models"), exist_ok=True)
    shutil.copyfile(os.path.join(spm_dir, model + ".model"), os.path.join(cache, "models", name))

cases = [
    ["ref.ja", "-i", "hyp.ja", "-tok", "flores101", "-f", "text"],
    ["ref.ko", "-i", "hyp.ko", "-tok", "spm", "-f", "text"],
    ["hyp14.de", "-i", "hyp14b.de", "-tok", "flores200"],
    ["ref.ja", "-i", "hyp.ja", "-tok", "spBLEU-1K", "-sl"],
    ["-t", "wmt14", "-l", "en-de", "-i", "hyp14.de", "-tok", "flores200", "-f", "text"],
    ["ref.ja", "-i", "hyp.ja", "-tok", "ja-mecab", "-f", "text"],
    ["ref.ja", "-i", "hyp.ja", "-l", "en-ja", "-m", "bleu", "chrf"],
    ["ref.ja", "-i", "hyp.ja", "-tok", "ja-mecab", "-sl"],
    ["ref.ja", "-i", "hyp.ja", "-tok", "ja-mecab", "-lc", "-sh", "-f", "text"],
    ["ref.ko", "-i", "hyp.ko", "-tok", "ko-mecab", "-f", "text"],
    ["ref.ko", "-i", "hyp.ko", "-l", "en-ko"],
    ["ref.ko", "-i", "hyp.ko", "-tok", "ko-mecab", "-sl"],
    ["-t", "wmt14", "-l", "en-de", "--echo", "src"],
    ["-t", "wmt14", "-l", "en-de", "--echo", "ref", "src", "docid", "origlang", "genre"],
    ["-t", "wmt14", "-l", "en-de", "--echo", "src", "-ol", "de"],
    ["-t", "wmt14", "-l", "en-de", "-i", "hyp14.de"],
    ["-t", "wmt14", "-l", "en-de", "-i", "hyp14.de", "-m", "bleu", "chrf", "ter", "-f", "text"],
    ["-t", "wmt14", "-l", "en-de", "-i", "hyp14.de", "-sh", "-f", "text"],
    ["-t", "wmt14", "-l", "en-de", "-i", "hyp14.de", "-ol", "de", "-f", "text"],
    ["-t", "wmt14", "-l", "en-de", "-i", "hyp14.de", "-ol", "non-de", "-b"],
    ["-t", "wmt14", "-l", "en-de", "-i", "hyp14.de", "hyp14b.de", "-m", "bleu", "chrf"],
    ["-t", "wmt14", "-l", "en-de", "-i", "hyp14.de", "hyp14b.de", "-pbs", "-f", "text"],
    ["-t", "wmt19", "-l", "en-de", "-i", "hyp19.de", "--subset", "politics", "-f", "text"],
    ["-t", "wmt19", "-l", "en-de", "-i", "hyp19.de", "--subset", "country:US", "-b"],
    ["-t", "wmt19", "-l", "en-zh", "-i", "hyp19.zh", "-f", "text"],
    ["-t", "wmt14,wmt19", "-l", "en-de", "-i", "hyp14-19.de", "-f", "text"],
    ["-t", "wmt21", "-l", "en-de", "--echo", "all"],
    ["-t", "wmt21", "-l", "en-de", "-i", "hyp21.de", "-m", "bleu", "chrf", "-f", "text"],
    ["-t", "wmt21", "-l", "en-de", "-i", "hyp21.de", "--subset", "news", "-b"],
    ["-t", "wmt21", "-l", "en-de", "-i", "hyp21.de", "-ol", "de", "-b"],
    ["-t", "wmt14", "-l", "en-de", "-i", "hyp14.de", "--detail"],
    ["-t", "wmt19", "-l", "en-de", "-i", "hyp19.de", "-d", "-m", "ter", "bleu", "-f", "text"],
    ["-t", "wmt19", "-l", "en-de", "-i", "hyp19.de", "-d", "--subset", "politics", "-w", "2"],
    ["-t", "wmt21", "-l", "en-de", "-i", "hyp21.de", "-d", "-b", "-m", "chrf"],
    ["-t", "wmt14,wmt19", "-l", "en-de", "-i", "hyp14-19.de", "-d"],
    ["hyp14.de", "-i", "hyp14b.de", "-d"],
    ["--list"],
    ["--list", "-l", "en-de"],
    ["--list", "-t", "wmt14"],
    ["--list", "-t", "wmt21", "-l", "en-de"],
    ["-t", "wmt99", "-l", "en-de", "-i", "hyp14.de"],
    ["-t", "wmt14", "-l", "xx-yy", "-i", "hyp14.de"],
    ["-t", "wmt14", "-i", "hyp14.de"],
    ["-t", "wmt14", "-l", "en-de", "-i", "hyp19.de"],
]

work = tempfile.mkdtemp()
run_cache = os.path.join(work, "cache")
shutil.copytree(cache, run_cache)
env = dict(os.environ, SACREBLEU=run_cache, NO_COLOR="1", PYTHONHASHSEED="0")
results = []
for args in cases:
    p = subprocess.run([sacrebleu] + args, cwd=out, env=env, capture_output=True, text=True)
    results.append({"args": args, "code": p.returncode, "stdout": p.stdout})
with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
    json.dump(results, f, ensure_ascii=False, indent=1)
    f.write("\n")
# The text files sacreBLEU wrote into the cache: gnmt must write the same.
for dirpath, dirs, files in os.walk(run_cache):
    dirs[:] = [d for d in dirs if d != "raw"]
    for name in files:
        src = os.path.join(dirpath, name)
        dst = os.path.join(out, "expected-text", os.path.relpath(src, run_cache))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst)
shutil.rmtree(work)
print(f"{len(results)} cases, {sum(1 for r in results if r['code'] != 0)} failing as expected")
