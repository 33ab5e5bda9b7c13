#!/usr/bin/env python3
"""Writes sacreBLEU's catalogue of test sets (names, URLs, MD5 sums, files per language pair,
descriptions, citations, and the document subsets of --subset) as JSON, the facts gnmt-testsets
reads: `python scripts/sacrebleu-catalogue.py > data/sacrebleu/catalogue.json`, run with a Python
that has sacrebleu==2.6.0 installed (scripts/sacrebleu-catalogue.sh makes one)."""
import json
import sys

import sacrebleu
from sacrebleu.dataset import DATASETS, SUBSETS
from sacrebleu.dataset.fake_sgml import FakeSGMLDataset, WMTAdditionDataset
from sacrebleu.dataset.iwslt_xml import IWSLTXMLDataset
from sacrebleu.dataset.plain_text import PlainTextDataset
from sacrebleu.dataset.tsv import TSVDataset
from sacrebleu.dataset.wmt_xml import WMTXMLDataset

# Most specific class first: the subclasses before FakeSGMLDataset.
KINDS = [
    (WMTAdditionDataset, "wmt_addition"),
    (IWSLTXMLDataset, "iwslt_xml"),
    (FakeSGMLDataset, "fake_sgml"),
    (PlainTextDataset, "plain_text"),
    (TSVDataset, "tsv"),
    (WMTXMLDataset, "wmt_xml"),
]


def kind(dataset):
    for cls, name in KINDS:
        if isinstance(dataset, cls):
            return name
    raise SystemExit(f"unknown dataset class {type(dataset).__name__}")


def entry(d):
    return {
        "name": d.name,
        "kind": kind(d),
        "data": list(d.data),
        "md5": list(d.md5) if d.md5 else None,
        "description": d.description,
        "citation": d.citation,
        # A list, so that the order sacreBLEU lists them in survives any JSON reader.
        "langpairs": [[pair, spec] for pair, spec in d.langpairs.items()],
        "refs": d.kwargs.get("refs"),
    }


def main():
    assert sacrebleu.__version__ == "2.6.0", sacrebleu.__version__
    out = {
        "sacrebleu_version": sacrebleu.__version__,
        "datasets": [entry(d) for d in DATASETS.values()],
        "subsets": SUBSETS,
    }
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
