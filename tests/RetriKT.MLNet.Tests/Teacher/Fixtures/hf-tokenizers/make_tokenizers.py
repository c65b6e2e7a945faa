"""Builds the small synthetic byte-level BPE tokenizer.json fixtures (Qwen2-, LLaMA-3- and mixed-style sections).

Run: python3 make_tokenizers.py  (writes */tokenizer.json next to this script; deterministic, no dependencies).
The merges are learned on the corpus below with GPT-2's split (same greedy loop as ByteLevelBpeTrainer); the
interesting parts are the normalizer / pre_tokenizer / added_tokens / ignore_merges sections, copied from the real files.
"""
import json, os, re, unicodedata

def byte_alphabet():
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs: bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}

A = byte_alphabet()
bl = lambda s: ''.join(A[b] for b in s.encode('utf-8'))
SPLIT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+""")
CORPUS = """The quick brown fox jumps over the lazy dog. Hello world! It's the word (word) and [word] {word}.
Numbers 0 1 2 3 12 123 1234 2024 3.14 100 and 99999. Line one\nLine two\r\nthe end.\n\n    indented code\tif (a) { b(); }
def f(x):\n    return x**2\ncafé café naïve über señor Ångström 日本語 中文 한국어 Русский текст ελληνικά emoji 😀
they'll we've I'd you're don't ALLCAPS CamelCase snake_case kebab-case https://example.com user@example.com
""" * 3

def train(n_merges):
    words = {}
    for m in SPLIT.finditer(CORPUS):
        w = bl(m.group(0)); words[w] = words.get(w, 0) + 1
    seqs = [(list(w), c) for w, c in words.items()]
    vocab = {A[b]: b for b in range(256)}
    vocab = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    merges = []
    for _ in range(n_merges):
        pairs = {}
        for s, c in seqs:
            for i in range(len(s) - 1): pairs[(s[i], s[i + 1])] = pairs.get((s[i], s[i + 1]), 0) + c
        if not pairs: break
        (l, r), cnt = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if cnt < 2: break
        merges.append((l, r)); vocab.setdefault(l + r, len(vocab))
        for s, _ in seqs:
            i = 0
            while i < len(s) - 1:
                if s[i] == l and s[i + 1] == r: s[i:i + 2] = [l + r]
                i += 1
    return vocab, merges

def added(id_, content, special=True, normalized=False, lstrip=False, rstrip=False):
    return {"id": id_, "content": content, "single_word": False, "lstrip": lstrip, "rstrip": rstrip, "normalized": normalized, "special": special}

def tokenizer(vocab, merges, normalizer, pre_tokenizer, added_tokens, ignore_merges, merges_as_pairs):
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens, "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer, "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges, "vocab": vocab,
                      "merges": [[l, r] for l, r in merges] if merges_as_pairs else [f"{l} {r}" for l, r in merges]}}

QWEN2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
LLAMA3 = QWEN2.replace("|\\p{N}|", "|\\p{N}{1,3}|")

def write(name, tok):
    os.makedirs(name, exist_ok=True)
    with open(os.path.join(name, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, separators=(",", ":"))

vocab, merges = train(220)
here = os.path.dirname(os.path.abspath(__file__)); os.chdir(here)

# Qwen2 / Qwen2.5: NFC, Split(\p{N} one digit at a time) + ByteLevel without regex, chat tokens (special and not).
v = dict(vocab); n = len(v)
write("qwen2-style", tokenizer(v, merges, {"type": "NFC"},
      {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": QWEN2}, "behavior": "Isolated", "invert": False},
                                             {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
      [added(n, "<|endoftext|>"), added(n + 1, "<|im_start|>"), added(n + 2, "<|im_end|>"), added(n + 3, "<think>", special=False),
       added(n + 4, "</think>", special=False)], False, True))

# LLaMA-3: no normalizer, \p{N}{1,3}, ignore_merges with whole words in the vocabulary that the merges never build.
v = dict(vocab)
for w in ["(word", "Ġfox", "Ġjumps", "123", "Ġworld", "ĊĊ", "Hello"]:
    v.setdefault(w, len(v))
n = len(v)
write("llama3-style", tokenizer(v, merges, None,
      {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": LLAMA3}, "behavior": "Isolated", "invert": False},
                                             {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
      [added(n, "<|begin_of_text|>"), added(n + 1, "<|end_of_text|>"), added(n + 2, "<|start_header_id|>"),
       added(n + 3, "<|end_header_id|>"), added(n + 4, "<|eot_id|>")], True, False))

# Mixed: NFKC in a Sequence; whitespace removed by a Regex Split, '-' isolated by a String Split, digits one by one,
# ByteLevel with a prefix space (added to every piece) and GPT-2's regex; lstrip/rstrip and a normalized added token.
v = dict(vocab); n = len(v)
write("mixed-style", tokenizer(v, merges, {"type": "Sequence", "normalizers": [{"type": "NFKC"}]},
      {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Removed", "invert": False},
                                             {"type": "Split", "pattern": {"String": "-"}, "behavior": "Isolated", "invert": False},
                                             {"type": "Digits", "individual_digits": True},
                                             {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]},
      [added(n, "<|endoftext|>"), added(n + 1, "<mask>", lstrip=True), added(n + 2, "<sep>", rstrip=True),
       added(n + 3, "<café>", special=False, normalized=True)], False, True))
print(len(vocab), len(merges))
