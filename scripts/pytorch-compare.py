#!/usr/bin/env python3
"""The gnmt-rs model and beam search written in PyTorch eager, for speed comparisons.

It builds the same network as crates/gnmt-model (bidirectional bottom encoder layer, residual
LSTM stacks, normalized Bahdanau attention, GNMT v2 decoder wiring) with the same parameter names,
so it can load a gnmt-rs model directory, and runs:

  train      training steps on synthetic batches (forward, label-smoothed loss, backward,
             clipping at norm 5, Adam) -- the counterpart of `gnmt bench train`
  translate  batched beam search with GNMT length normalization and coverage penalty, with the
             same algorithm as crates/gnmt-translate -- the counterpart of `gnmt bench translate`;
             alpha, beta and the length limit default to the model's search.json (`gnmt tune`)
             as gnmt's do, so both run the same search

on the CPU, or on a GPU with `--device cuda` (scripts/gpu-check.sh; the model, the batches and
the search's tensors then live there, and the timings include a synchronization).

and prints the same JSON fields. Run it with the Python of the torch virtual environment that
scripts/setup.sh made (scripts/bench.sh does), with the same thread count as the Rust side.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD, BOS, EOS, FIRST_PIECE = 0, 1, 2, 260
MASK_VALUE = -65504.0


def preset_config(gnmt, name, vocab_size):
    """A preset's model config as gnmt-rs defines it (`gnmt model-info --json`), not a copy."""
    out = subprocess.run([gnmt, "model-info", "--preset", name, "--vocab", str(vocab_size), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["config"]


def residual_at(cfg, i, encoder):
    start = max(cfg["residual_start"], 3 if encoder else 2)
    return cfg["residual"] and i + 1 >= start


class Attention(nn.Module):
    def __init__(self, h, units):
        super().__init__()
        self.query = nn.Linear(h, units, bias=False)
        self.key = nn.Linear(h, units, bias=False)
        self.v = nn.Parameter(torch.empty(units))
        self.gain = nn.Parameter(torch.full((1,), 1.0 / math.sqrt(units)))
        self.bias = nn.Parameter(torch.zeros(units))

    def forward(self, q, keys, values, pad_mask):
        s = self.query(q).unsqueeze(2) + keys.unsqueeze(1) + self.bias
        v = self.v * self.gain / self.v.norm()
        scores = s.tanh().matmul(v).masked_fill(pad_mask.unsqueeze(1), MASK_VALUE)
        w = scores.softmax(-1)
        return w.bmm(values), w


class Seq2Seq(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        h, e, v = cfg["hidden_size"], cfg["embedding_size"], cfg["vocab_size"]
        self.embedding = nn.Embedding(v, e, padding_idx=0)
        self.encoder = nn.Module()
        self.encoder.bottom_fwd = nn.LSTM(e, h, batch_first=True)
        self.encoder.bottom_bwd = nn.LSTM(e, h, batch_first=True)
        # Index 0 is unused so parameter names match gnmt-rs (encoder.layers.1 ...).
        self.encoder.layers = nn.ModuleList(
            [nn.Identity()] + [nn.LSTM(2 * h if i == 1 else h, h, batch_first=True) for i in range(1, cfg["encoder_layers"])])
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(
            [nn.LSTM(e, h, batch_first=True)] + [nn.LSTM(2 * h, h, batch_first=True) for _ in range(1, cfg["decoder_layers"])])
        self.decoder.attention = Attention(h, cfg["attention_units"])
        self.decoder.classifier = nn.Linear(h, v)
        if cfg.get("tied_output"):
            # One matrix for the embedding and the classifier, as gnmt-rs's tied models keep it
            # (their files hold no classifier matrix of their own).
            self.decoder.classifier.weight = self.embedding.weight
        r = cfg["init_range"]
        for name, p in self.named_parameters():
            if not name.endswith(("gain", "attention.bias")):
                nn.init.uniform_(p, -r, r)
        self.drop = nn.Dropout(cfg["dropout"])

    def encode(self, src, lens):
        b, s = src.shape
        x = self.drop(self.embedding(src))
        pos = torch.arange(s).unsqueeze(0).expand(b, s)
        l = lens.unsqueeze(1)
        rev = torch.where(pos < l, l - 1 - pos, pos).unsqueeze(2)
        gather = lambda t: t.gather(1, rev.expand_as(t))
        fwd, _ = self.encoder.bottom_fwd(x)
        bwd, _ = self.encoder.bottom_bwd(gather(x))
        out = torch.cat([fwd, gather(bwd)], 2)
        for i in range(1, self.cfg["encoder_layers"]):
            y, _ = self.encoder.layers[i](self.drop(out))
            out = y + out if residual_at(self.cfg, i, True) else y
        return out, self.decoder.attention.key(out), src.eq(0)

    def decode(self, enc, tgt_in, state=None, group=1):
        outputs, keys, mask = enc
        x = self.drop(self.embedding(tgt_in))
        new = []
        h0, s0 = self.decoder.layers[0](x, None if state is None else state[0])
        new.append(s0)
        if group > 1:  # the group's hypotheses are queries over their sentence's encoder rows
            rows = h0.shape[0]
            ctx, attn = self.decoder.attention(h0.view(rows // group, group, -1), keys, outputs, mask)
            ctx, attn = ctx.reshape(rows, 1, -1), attn.reshape(rows, 1, -1)
        else:
            ctx, attn = self.decoder.attention(h0, keys, outputs, mask)
        out = h0
        for k in range(1, self.cfg["decoder_layers"]):
            y, st = self.decoder.layers[k](torch.cat([self.drop(out), ctx], 2), None if state is None else state[k])
            new.append(st)
            out = y + out if residual_at(self.cfg, k, False) else y
        return self.decoder.classifier(self.drop(out)), attn, new


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F32", f"{name}: {meta['dtype']}"
        a, b = meta["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(meta["shape"])
    return out


def build(args):
    torch.manual_seed(args.seed)
    if args.model:
        cfg = json.load(open(f"{args.model}/config.json"))
        m = Seq2Seq(cfg)
        missing, unexpected = m.load_state_dict(load_safetensors(f"{args.model}/model.safetensors"), strict=False)
        tied = {"decoder.classifier.weight"} if cfg.get("tied_output") else set()
        if set(missing) - tied or unexpected:
            sys.exit(f"pytorch-compare.py: {args.model}: missing {sorted(set(missing) - tied)}, unexpected {unexpected}")
    else:
        cfg = preset_config(args.gnmt, args.preset, args.vocab_size)
        m = Seq2Seq(cfg)
    return m


def synthetic(n, length, vocab, seed):
    # Drawn on the CPU, so a GPU run trains and translates the same sentences.
    g = torch.Generator().manual_seed(seed)
    return torch.randint(FIRST_PIECE, vocab, (n, length), generator=g, device="cpu").to(torch.get_default_device())


def smoothed_loss(logits, target, eps):
    lp = logits.float().log_softmax(-1)
    nll = -lp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    smooth = -lp.mean(-1)
    mask = target.ne(PAD).float()
    loss = ((1 - eps) * nll + eps * smooth) * mask
    return loss.sum() / mask.sum()


def bench_train(args):
    m = build(args)
    m.train()
    b, l = args.batch_size, args.len
    v = m.cfg["vocab_size"]
    src = synthetic(b, l, v, args.seed)
    tgt = synthetic(b, l, v, args.seed + 1)
    tgt_in = torch.cat([torch.full((b, 1), BOS), tgt], 1)
    tgt_out = torch.cat([tgt, torch.full((b, 1), EOS)], 1)
    lens = torch.full((b,), l)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)

    # bf16 (fp16): PyTorch's autocast (float32 weights and optimizer, half-precision matrix
    # products; fp16 without a loss scaler: this times steps, it does not train).
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    autocast = torch.autocast(torch.get_default_device().type, dtype=half or torch.bfloat16, enabled=half is not None)

    def step():
        with autocast:
            logits, _, _ = m.decode(m.encode(src, lens), tgt_in)
            loss = smoothed_loss(logits, tgt_out, 0.1)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    t = time.perf_counter()
    for _ in range(args.steps):
        last = step()
    secs = time.perf_counter() - t
    tokens = b * l + b * (l + 1)
    return dict(bench="train", impl="pytorch", device=args.device, precision=args.precision, preset=args.preset, threads=torch.get_num_threads(), batch_size=b,
                len=l, steps=args.steps, ms_per_step=secs * 1000 / args.steps,
                tokens_per_s=tokens * args.steps / secs, final_loss=last)


def length_penalty(n, alpha):
    return ((5.0 + n) / 6.0) ** alpha


@torch.no_grad()
def beam_search(m, sources, k, alpha, beta, a, b_len, grouped=False):
    """The algorithm of crates/gnmt-translate, step for step. Plain (the usual implementation):
    k rows per sentence from the start, encoder outputs copied per row and reordered every step.
    `grouped` (gnmt-rs's way): the rows of a sentence share its encoder outputs as attention
    queries, and the first step runs one row per sentence."""
    b = len(sources)
    s = max(max(len(x) for x in sources), 1)
    src = torch.zeros(b, s, dtype=torch.long)
    for i, x in enumerate(sources):
        src[i, :len(x)] = torch.tensor(x)
    lens = torch.tensor([max(len(x), 1) for x in sources])
    enc = m.encode(src, lens)
    vocab = m.cfg["vocab_size"]
    max_len = [int(a * len(x)) + b_len for x in sources]
    active = list(range(b))
    # Rows per sentence: `group`; in the plain search the extra first-step rows start at -inf.
    group = 1 if grouped else k
    if not grouped:
        rows = torch.tensor([i for i in active for _ in range(k)])
        enc = tuple(x[rows] for x in enc)
    scores = [0.0 if r % group == 0 else -math.inf for r in range(b * group)]
    hist = [[] for _ in range(b * group)]
    coverage = torch.zeros(b * group, s)
    tokens = torch.full((b * group,), BOS)
    state = None
    finished = [[] for _ in range(b)]
    src_mask = [[j < len(sources[i]) for j in range(s)] for i in range(b)]
    for t in range(max(max_len)):
        if not active:
            break
        logits, attn, st = m.decode(enc, tokens.unsqueeze(1), state, group if grouped else 1)
        lp = logits.squeeze(1).float().log_softmax(-1)
        coverage += attn.squeeze(1).float()
        cand = (lp + torch.tensor(scores, dtype=torch.float32).unsqueeze(1)).view(len(active), group * vocab)
        want = min(2 * k, group * vocab)
        top_v, top_i = cand.topk(want, -1)
        top_v, top_i, cov = top_v.tolist(), top_i.tolist(), coverage.tolist()
        next_rows, next_tokens, next_scores, next_hist, still, kept = [], [], [], [], [], []
        for ai, sent in enumerate(active):
            live = []
            for c in range(want):
                v = top_v[ai][c]
                if v == -math.inf:
                    continue
                idx = top_i[ai][c]
                beam, tok = idx // vocab, idx % vocab
                row = ai * group + beam
                if tok == EOS or t + 1 >= max_len[sent]:
                    if c < k and len(finished[sent]) < k:
                        toks = hist[row] + ([] if tok == EOS else [tok])
                        cp = beta * sum(math.log(min(max(x, 1e-10), 1.0)) for x, mk in zip(cov[row], src_mask[sent]) if mk)
                        finished[sent].append((v / length_penalty(len(toks) + 1, alpha) + cp, toks))
                elif len(live) < k:
                    live.append((row, tok, v))
            best_done = max((h[0] for h in finished[sent]), default=-math.inf)
            bound = max((x[2] / length_penalty(max_len[sent] + 1, alpha) for x in live), default=-math.inf)
            if len(finished[sent]) >= k or not live or t + 1 >= max_len[sent] or best_done >= bound:
                continue
            still.append(sent)
            kept.append(ai)
            while len(live) < k:
                live.append((live[0][0], live[0][1], -math.inf))
            for row, tok, v in live:
                next_rows.append(row)
                next_tokens.append(tok)
                next_scores.append(v)
                next_hist.append(hist[row] + [tok])
        if not still:
            break
        index = torch.tensor(next_rows)
        if not grouped:
            enc = tuple(x[index] for x in enc)
        elif len(kept) < len(active):
            enc = tuple(x[torch.tensor(kept)] for x in enc)
        group = k
        state = [(h[:, index], c[:, index]) for h, c in st]
        coverage = coverage[index]
        tokens = torch.tensor(next_tokens)
        scores, hist, active = next_scores, next_hist, still
    return [max(f, key=lambda h: h[0])[1] if f else [] for f in finished]


def for_inference(m, precision):
    """The model as PyTorch users run it at `precision`: float32; bf16 or fp16 weights and
    activations (`model.to(torch.bfloat16)`); or, on a CPU, dynamic int8 quantization of the LSTMs
    and linear layers (`torch.ao.quantization.quantize_dynamic`, what OpenNMT-py's `-precision
    int8` does)."""
    m.eval()
    if precision == "bf16":
        return m.to(torch.bfloat16)
    if precision == "fp16":
        return m.to(torch.float16)
    if precision == "int8":
        return torch.ao.quantization.quantize_dynamic(m, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    return m


def bench_translate(args):
    m = for_inference(build(args), args.precision)
    if args.ids:
        sources = [[int(x) for x in line.split()] for line in open(args.ids)]
    else:
        sources = synthetic(args.sentences, args.len, m.cfg["vocab_size"], args.seed).tolist()
    order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
    beam_search(m, [sources[i] for i in order[:4]], args.beam, args.alpha, args.beta, args.max_len_a, args.max_len_b,
                args.grouped)
    out = [None] * len(sources)
    t = time.perf_counter()
    for j in range(0, len(order), args.batch_size):
        batch = order[j:j + args.batch_size]
        for i, h in zip(batch, beam_search(m, [sources[i] for i in batch], args.beam, args.alpha, args.beta,
                                           args.max_len_a, args.max_len_b, args.grouped)):
            out[i] = h
    secs = time.perf_counter() - t
    if args.output:
        with open(args.output, "w") as f:
            for h in out:
                f.write(" ".join(map(str, h)) + "\n")
    source = sum(len(x) for x in sources)
    generated = sum(len(h) + 1 for h in out)
    return dict(bench="translate", impl="pytorch-grouped" if args.grouped else "pytorch", device=args.device, precision=args.precision,
                threads=torch.get_num_threads(), beam=args.beam,
                batch_size=args.batch_size, sentences=len(sources), source_tokens=source,
                generated_tokens=generated, seconds=secs, tokens_per_s=(source + generated) / secs,
                sentences_per_s=len(sources) / secs)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["train", "translate"])
    p.add_argument("--preset", default="small", help="a gnmt-rs preset (read with `gnmt model-info --json`)")
    p.add_argument("--gnmt", default="target/release/gnmt", help="the gnmt binary, for --preset")
    p.add_argument("--model", help="a gnmt-rs model directory")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--threads", type=int)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--len", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sentences", type=int, default=256)
    p.add_argument("--ids", help="source ids, one sentence per line (from `gnmt tokenize --ids`)")
    p.add_argument("--output", help="write the best hypotheses' ids here")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "int8"], default="fp32",
                   help="translate: the model in bf16/fp16 or dynamically quantized to int8 (CPU); "
                        "train: bf16/fp16 autocast")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--grouped", action="store_true",
                   help="beams share encoder outputs, first step one hypothesis (gnmt-rs's search)")
    # Unset, the search settings are what `gnmt translate` takes for this model: its search.json
    # (written by `gnmt tune`) where there is one, else gnmt's defaults.
    p.add_argument("--alpha", type=float)
    p.add_argument("--beta", type=float)
    p.add_argument("--max-len-a", type=float)
    p.add_argument("--max-len-b", type=int)
    args = p.parse_args()
    search = {"alpha": 0.6, "beta": 0.1, "max_len_a": 1.5, "max_len_b": 10}
    tuned = os.path.join(args.model or "", "search.json")
    if args.model and os.path.exists(tuned):
        with open(tuned) as f:
            search.update({k: v for k, v in json.load(f).items() if k in search})
    for k, v in search.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device != "cpu":  # (a device mode intercepts every call: CPU timings stay without it)
        torch.set_default_device(args.device)
    res = bench_train(args) if args.what == "train" else bench_translate(args)
    print(json.dumps(res))


if __name__ == "__main__":
    sys.exit(main())
