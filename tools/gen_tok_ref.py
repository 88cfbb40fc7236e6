#!/usr/bin/env python3
r"""
gen_tok_ref.py — golden token ids for ds3's tokenizer, from Hugging Face `tokenizers`.

Encodes a fixed corpus with the `tokenizers` library (the Rust implementation
that transformers uses) reading data/tokenizers/deepseek-v3/tokenizer.json, and
writes ref_data/tokenizer/deepseek-v3.json. tests/test_tokenizer.c checks that
ds3's C tokenizer gives exactly these ids and decodes them back to the text.
Nothing here derives from ds3's C code.

The corpus (see docs/TOKENIZER.md, "Goldens"):
  - hand-written cases: scripts (Cyrillic, Latin with diacritics, Greek,
    Devanagari, CJK, kana, Hangul, Arabic, Hebrew, Thai), emoji with ZWJ,
    skin tones and flags, code, numbers, odd whitespace (tabs, CRLF, NBSP,
    U+2000.. spaces, U+180E, U+0085), special-token strings inside text,
    invalid UTF-8, long pieces;
  - seeded random cases: strings of random code points drawn from every
    plane-0/1/2 block that matters to the Split regexes, and strings glued
    from fragments that sit on the regexes' boundaries;
  - the chat template: transformers' apply_chat_template on a few
    conversations, rendered text and ids.

Invalid UTF-8: `tokenizers` takes a Python str, so a byte string cannot be
given to it as it is. Each case stores its raw bytes; HF is given
bytes.decode("utf-8", "replace"), which replaces each maximal ill-formed
subsequence with one U+FFFD (Unicode §3.9, "U+FFFD substitution of maximal
subparts"). ds3_tokenizer_encode reads invalid bytes the same way, so both
sides see the same text. Such cases are marked "valid_utf8": false; their
decode gives the replaced text, not the raw bytes.

Unicode classes: `tokenizers` runs the Split regexes with Oniguruma, whose
Unicode tables are newer than those of the PCRE2 a distribution ships (Debian
12: Unicode 14; tokenizers 0.23: Unicode 16). The script also writes
src/tokenizer/unicode.h: the code points Oniguruma puts in \p{L} \p{N} \p{P}
\p{S} \p{M} and \s, read back through tokenizers itself (a Split that
removes what the class matches, over every code point). ds3 uses PCRE2's own
classes where they agree and adds the missing ranges where they do not
(src/tokenizer/regex.c, docs/TOKENIZER.md).

Per case the file holds: name, text (hex of the raw bytes), valid_utf8, ids
(encode(text, add_special_tokens=False)), ids_special_as_text (the same with
encode_special_tokens=True: special tokens' strings are plain text), and
decoded (hex of UTF-8 of tokenizer.decode(ids, skip_special_tokens=False)).

Usage:
  /work/venv/bin/python tools/gen_tok_ref.py [--tokenizer DIR] [--out FILE] [--header FILE]
"""

import argparse
import hashlib
import json
import platform
import random
import sys

import tokenizers

# ---------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"

# (name, text): str is UTF-8 encoded; bytes are given raw (may be invalid UTF-8).
HAND = [
    ("empty", ""),
    ("space", " "),
    ("english", "Hello, world! The quick brown fox jumps over the lazy dog."),
    ("english-contractions", "I'm sure it's what they'd've wanted; don't you think? We'll see, y'all."),
    ("cyrillic", "Съешь же ещё этих мягких французских булок, да выпей чаю. Ёлка, ЙОД, щука."),
    ("ukrainian", "Гей, хлопці, вставаймо! Їжак і ґанок — це українська ї та ґ."),
    ("latin-diacritics", "Façade, naïve, coöperate, Ångström, Dvořák, Łódź, Øresund, Straße, ÆØÅ æøå, İstanbul, ǅ."),
    ("latin-combining", "e\u0301 a\u0300 n\u0303 o\u0308 — decomposed: Ame\u0301lie, cafe\u0301, Z\u030c"),
    ("vietnamese", "Tiếng Việt có dấu: Người ta đã nói rằng điều đó không thể xảy ra."),
    ("greek", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Αλφα βήτα γάμμα δέλτα."),
    ("devanagari", "हिन्दी भाषा में लिखा गया वाक्य। संस्कृतम् अपि। क्षत्रिय, ज्ञान, श्री ॐ ०१२३४५६७८९"),
    ("bengali-tamil", "বাংলা ভাষা। தமிழ் மொழி அழகானது."),
    ("cjk-chinese", "中华人民共和国成立于1949年。我爱北京天安门，天安门上太阳升！"),
    ("cjk-traditional", "繁體中文測試：龜、鬱、齉、龘。"),
    ("cjk-outside-range", "\u9fa6\u9fa5\u9fff\u3400\u4dbf \U00020000\U0002a6df 𠮷野家 鿿"),
    ("japanese", "日本語のテキストです。カタカナとひらがな、漢字を混ぜて書きます。ｶﾀｶﾅ（半角）ー〜"),
    ("kana-boundaries", "\u3040\u3041\u309f\u30a0\u30a1\u30ff\u3100\u31f0 ゔゕゖ゛゜ゝゞゟ"),
    ("korean", "한국어 문장입니다. 안녕하세요, 세계! ㄱㄴㄷ ᄀᄁ"),
    ("arabic", "اللغة العربية جميلة. مرحبا بالعالم! ١٢٣٤٥ ۱۲۳ «اقتباس» ؟،"),
    ("arabic-harakat", "بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ"),
    ("hebrew", "עברית היא שפה שמית. שָׁלוֹם עוֹלָם! ״גרשיים״ ׳"),
    ("thai", "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ สวัสดีครับ"),
    ("emoji", "I ❤️ emoji 😀😃😄 👍🏽 👋🏿 🇩🇪🇯🇵 🏳️‍🌈 ✊🏾"),
    ("emoji-zwj", "👨‍👩‍👧‍👦 family, 👩🏽‍💻 coder, 🧑‍🤝‍🧑, 🐻‍❄️, 👁️‍🗨️, 🫠🫡"),
    ("emoji-new", "Unicode 15: 🫨 🩷 🩵 🩶 🪭 🪮 🪇 🪈 🫎 🫏 🪼 🪽 🪿 🫚 🫛; 15.1: 🐦‍🔥 🍋‍🟩"),
    ("unicode-15-16", "Kawi \U00011f04\U00011f05 ext-H \U00031350\U00031351 16.0: \u1c89\u1c8a "
                      "\U00010d40\U00010d41 \u1b4e\u1b4f \u2427\u2428 a\u0897b \U0001cc00 \u2ffc\u2ffd"),
    ("symbols", "© ® ™ ° ± × ÷ ∞ ≠ ≤ ≥ √ ∑ ∏ ∫ € £ ¥ ₹ ₿ § ¶ † ‡ • … ‰ ← → ↑ ↓ ⇒ ♠ ♥ ★ ☆"),
    ("math-alnum", "𝐀𝐁𝐂 𝑥𝑦𝑧 𝔸𝔹ℂ 𝟎𝟏𝟐 ℕ ℤ ℚ ℝ x² y³ ½ ¾ ⅓ Ⅻ ⅻ ①②③"),
    ("fullwidth", "ＡＢＣ　ａｂｃ　１２３！？＠＃"),
    ("code-c", "int main(int argc, char **argv) {\n\tfor (int i = 0; i < argc; i++) printf(\"%s\\n\", argv[i]);\n\treturn 0;\n}\n"),
    ("code-python", "def f(x: int) -> int:\n    \"\"\"Docstring.\"\"\"\n    return x ** 2 + 3*x - 1  # comment\n\nclass A(object):\n    pass\n"),
    ("code-js", "const add = (a, b) => a + b;\nconsole.log(`${add(1, 2)}`);\n// TODO: fix!!!\nif (x !== null && y === undefined) {}\n"),
    ("code-json", '{"key": [1, 2.5, -3e10, true, null], "nested": {"a": "b\\u00e9"}}'),
    ("code-html", '<div class="x">&amp; &lt;p&gt;</div><!-- c --><br/>'),
    ("code-shell", "for f in *.c; do gcc -O2 -Wall \"$f\" -o \"${f%.c}\" || exit 1; done 2>&1 | tee log.txt"),
    ("numbers", "0 1 12 123 1234 12345 123456 1234567 3.14159 -42 +7 1e-9 0x1F 1,000,000 10.000,50 2024-01-01 12:30:45"),
    ("numbers-long", "31415926535897932384626433832795028841971693993751058209749445923078164062862089986280348253421170679"),
    ("numbers-scripts", "٠١٢٣٤٥٦٧٨٩ ०१२३ ০১২৩ ௦௧௨ ๐๑๒ ０１２３ ¹²³ ⁴⁵ ₁₂₃ Ⅰ Ⅱ Ⅲ 〇 一二三"),
    ("numbers-letters", "abc123def4567ghi89 v1.2.3 x86_64 sha256 H2O CO2 3D 4K 1st 2nd 3rd 4th"),
    ("tabs", "\tone\ttab\t\ttwo tabs\t\t\tthree\t"),
    ("crlf", "line one\r\nline two\r\n\r\nafter blank\r\n"),
    ("cr-only", "old\rmac\r\rline\r"),
    ("newlines", "\n\n\nthree newlines\n \n  \n\t\n"),
    ("nbsp", "non\u00a0breaking\u00a0space, 100\u00a0km, «\u00a0guillemets\u00a0»"),
    ("unicode-spaces", "en\u2002em\u2003thin\u2009hair\u200anarrow\u202fmath\u205fideo\u3000ogham\u1680end"),
    ("mongolian-vs", "a\u180eb \u180e c\u180e\u180e"),
    ("nel-ls-ps", "next\u0085line sep\u2028para\u2029end\u000bvt\u000cff\u001cfs"),
    ("zero-width", "zero\u200bwidth\u200cnon\u200djoiner\u2060wj\ufeffbom\u00adshy"),
    ("whitespace-runs", "a  b   c    d     e      f\t \t g \n \n h    \n\n   "),
    ("trailing-spaces", "trailing   "),
    ("leading-spaces", "   leading"),
    ("only-whitespace", " \t \r\n \u00a0 \u3000 "),
    ("punctuation", "Wait... what?! (Really?) [yes]; {no}: 'single' \"double\" — dash – en ‐ hyphen ¿¡ «» „“ ‹›"),
    ("punct-letters", "!important #hash $var %mod &ref *ptr -flag .ext /path :key ;end <tag =eq >gt ?q @user [x \\n ]y ^z _u `b {c |d }e ~t"),
    ("urls", "https://example.com/path?q=1&r=%20#frag mailto:a@b.c ftp://x.y/z.tar.gz"),
    ("special-bos-eos", BOS + "Hello" + EOS),
    ("special-in-text", "Some text " + USER + " question " + ASSISTANT + " answer" + EOS + "more"),
    ("special-chat", BOS + "You are helpful." + USER + "Hi!" + ASSISTANT),
    ("special-adjacent", USER + USER + ASSISTANT + EOS + EOS),
    ("special-partial", "<｜User｜ <｜Use｜> <|User|> <｜user｜> ｜>< <｜begin▁of▁sentence"),
    ("special-normalized", "call<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
    ("special-tool-output", "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>42<｜tool▁output▁end｜><｜tool▁outputs▁end｜>"),
    ("special-placeholders", "<｜place▁holder▁no▁0｜><｜place▁holder▁no▁1｜>x<｜place▁holder▁no▁99｜><｜place▁holder▁no▁799｜>"),
    ("special-pad", "<｜▁pad▁｜>pad<｜▁pad▁｜>"),
    ("special-fim", "<｜fim▁begin｜>def f():<｜fim▁hole｜>\n<｜fim▁end｜>"),
    ("special-think", "<think>\nreasoning\n</think>\n\nanswer"),
    ("mixed-scripts", "Hello Привет 你好 こんにちは 안녕 مرحبا שלום नमस्ते Γειά σου 123 😀"),
    ("mixed-nospace", "abcПриветdef你好ghiこんにちは123xyz😀end"),
    ("cjk-digits", "第1章第23节第456页共7890字"),
    ("apostrophes", "'s 's 't 're 've 'm 'll 'd ’s ’t ‘quoted’ rock'n'roll"),
    ("repeated-chars", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!!!!!!!!!!!!!!!!!!!!!!------=========....."),
    ("nul-and-controls", "a\x00b\x01c\x02\x03\x07\x08\x1b[0mEND\x7f"),
    ("c1-controls", "x\u0080\u0081\u009f\u00a0y"),
    ("surrogate-neighbours", "\ud7ff\ue000\uf8ff\ufffd\ufffe\uffff"),
    ("astral", "\U00010000\U0001f600\U0001d11e\U000e0041\U000e007f\U000f0000\U0010fffd\U0010ffff"),
    ("variation-selectors", "︎☺︎ ☺️ 葛\U000e0100 ⌛︎ #️⃣ 1️⃣"),
    ("tag-flags", "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f Scotland"),
    ("rtl-marks", "\u200fRTL\u200e \u202aembed\u202c \u2066isolate\u2069"),
    ("invalid-lone-ff", b"\xff"),
    ("invalid-continuation", b"abc\x80def\xbf"),
    ("invalid-truncated-2", b"end\xc3"),
    ("invalid-truncated-3", b"\xe4\xb8 mid \xe4\xb8"),
    ("invalid-truncated-4", b"\xf0\x9f\x98 smile cut"),
    ("invalid-overlong", b"\xc0\xaf \xc1\xbf \xe0\x80\xaf \xf0\x80\x80\xaf"),
    ("invalid-surrogate", b"\xed\xa0\x80\xed\xbf\xbf half"),
    ("invalid-above-max", b"\xf4\x90\x80\x80 \xf5\x80\x80\x80 \xf8\x88\x80\x80\x80"),
    ("invalid-mixed", b"Good \xe2\x82\xac then \xe2\x82 bad \xff\xfe and \xe4\xbd\xa0\xe5\xa5\xbd ok \x80\x80\x80"),
    ("invalid-in-special", b"<\xef\xbd\x9cUser\xef\xbd\x9c>\xff<\xef\xbd\x9cUser\xef\xbd\x9c>"),
    ("invalid-all-bytes", bytes(range(256))),
]


def long_cases():
    """Pieces long enough to stress BPE (one pre-token of thousands of bytes)."""
    return [
        ("long-word", "pneumonoultramicroscopicsilicovolcanoconiosis" * 60),
        ("long-letters-a", "a" * 5000),
        ("long-cjk", "中文字符测试" * 400),
        ("long-spaces", " " * 3000 + "x"),
        ("long-newlines", "\n" * 1000),
        ("long-digits", "9876543210" * 300),
        ("long-emoji", "😀👍🏽👨‍👩‍👧‍👦" * 300),
        ("long-punct", "=-" * 2000),
        ("long-devanagari", "नमस्तेदुनिया" * 300),
    ]


# Code point ranges the random strings draw from: every class the Split
# regexes look at, and the edges of their explicit ranges.
RANGES = [
    (0x20, 0x7E), (0x09, 0x0D), (0x00, 0x1F), (0x7F, 0x9F), (0xA0, 0xFF), (0x100, 0x24F),
    (0x250, 0x2FF), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x52F), (0x530, 0x58F),
    (0x590, 0x5FF), (0x600, 0x6FF), (0x700, 0x74F), (0x780, 0x7BF), (0x900, 0x97F),
    (0x980, 0xDFF), (0xE00, 0xE7F), (0xF00, 0xFFF), (0x1000, 0x109F), (0x10A0, 0x10FF),
    (0x1100, 0x11FF), (0x1680, 0x169F), (0x1780, 0x18AF), (0x1AB0, 0x1AFF), (0x1D00, 0x1DFF),
    (0x1E00, 0x1FFF), (0x2000, 0x206F), (0x2070, 0x209F), (0x20A0, 0x20CF), (0x20D0, 0x20FF),
    (0x2100, 0x218F), (0x2190, 0x23FF), (0x2460, 0x24FF), (0x2500, 0x27BF), (0x2800, 0x28FF),
    (0x2900, 0x2BFF), (0x2C00, 0x2E7F), (0x2E80, 0x2FDF), (0x3000, 0x303F), (0x3040, 0x309F),
    (0x30A0, 0x30FF), (0x3100, 0x31FF), (0x3200, 0x33FF), (0x3400, 0x4DBF), (0x4DC0, 0x4DFF),
    (0x4E00, 0x4E10), (0x9FA0, 0x9FFF), (0x4E00, 0x9FFF), (0xA000, 0xA4CF), (0xA4D0, 0xA4FF),
    (0xA640, 0xA6FF), (0xA700, 0xA7FF), (0xA800, 0xABFF), (0xAC00, 0xD7A3), (0xD7B0, 0xD7FF),
    (0xE000, 0xE0FF), (0xF900, 0xFAFF), (0xFB00, 0xFDFF), (0xFE00, 0xFE6F), (0xFE70, 0xFEFF),
    (0xFF00, 0xFFEF), (0xFFF0, 0xFFFD), (0x10000, 0x1007F), (0x10300, 0x1034F), (0x10400, 0x1044F),
    (0x11000, 0x1107F), (0x1D400, 0x1D7FF), (0x1E900, 0x1E95F), (0x1F000, 0x1F0FF),
    (0x1F100, 0x1F1FF), (0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF),
    (0x1F900, 0x1F9FF), (0x1FA70, 0x1FAFF), (0x20000, 0x2A6DF), (0x2B740, 0x2B81F),
    (0x30000, 0x3134F), (0x31350, 0x323AF), (0xE0000, 0xE007F), (0xE0100, 0xE01EF),
    # blocks new in Unicode 15.0 .. 16.0 (Kawi, Garay, Tulu-Tigalari, legacy computing, …)
    (0x11F00, 0x11F5F), (0x10D40, 0x10D8F), (0x11380, 0x113FF), (0x1CC00, 0x1CEBF), (0x1C80, 0x1C8F),
    (0x2FF0, 0x2FFF), (0x31C0, 0x31EF), (0x1E030, 0x1E08F), (0x1E4D0, 0x1E4FF), (0x1E5D0, 0x1E5FF),
    (0x16100, 0x1613F), (0x16D40, 0x16D7F), (0x1B4E, 0x1B7F), (0x2420, 0x243F), (0x890, 0x8FF),
]

FRAGMENTS = [
    " ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2009", "\u180e", "\u0085",
    "a", "abc", "The", "Ünïcödé", "é", "e\u0301", "\u0301", "\u0308", "ß", "İ", "ǅ", "Привет", "Ё",
    "1", "12", "123", "1234", "12345", "١٢٣", "٤", "०", "²", "½", "Ⅻ", "一", "〇",
    "中", "中文", "龥", "鿦", "㐀", "𠀀", "か", "かな", "カナ", "ー", "ｶ", "〜", "한국어", "ㄱ",
    "!", "!!", "?", ".", "...", ",", "'", "'s", "\"", "(", ")", "[", "]", "{", "}", "-", "--",
    "_", "/", "\\", "#", "$", "%", "&", "*", "+", "=", "<", ">", "@", "^", "`", "|", "~", ":", ";",
    "—", "–", "«", "»", "¿", "、", "。", "，", "！", "…", "€", "©", "∑", "★",
    "😀", "👍🏽", "👨‍👩‍👧", "🇺🇸", "❤️", "\u200d", "\ufe0f", "🫨",
    "مرحبا", "שלום", "नमस्ते", "ไทย", "Ωμέγα",
    USER, ASSISTANT, BOS, EOS, "<｜tool▁sep｜>", "<｜User", "｜>", "<think>", "</think>",
    "if", "x=1", "()", "=>", "->", "::", "//", "/*", "*/", "0x", "1e9",
]


def random_cases(rng):
    cases = []
    for k in range(300):
        n = rng.randint(1, 40)
        cps = []
        for _ in range(n):
            lo, hi = rng.choice(RANGES)
            c = rng.randint(lo, hi)
            if 0xD800 <= c <= 0xDFFF:
                continue
            cps.append(chr(c))
        cases.append((f"random-codepoints-{k:03d}", "".join(cps)))
    for k in range(300):
        n = rng.randint(1, 25)
        cases.append((f"random-fragments-{k:03d}", "".join(rng.choice(FRAGMENTS) for _ in range(n))))
    for k in range(60):
        n = rng.randint(1, 40)
        cases.append((f"random-bytes-{k:03d}", bytes(rng.randrange(256) for _ in range(n))))
    # Valid text with a few bytes broken.
    for k in range(40):
        s = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(2, 20))).encode("utf-8")
        b = bytearray(s)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(b))
            r = rng.random()
            if r < 0.4:
                del b[i]
            elif r < 0.7:
                b[i] = rng.randrange(0x80, 0x100)
            else:
                b.insert(i, rng.randrange(0x80, 0x100))
        cases.append((f"random-broken-{k:03d}", bytes(b)))
    return cases


# Conversations for the chat template (transformers' apply_chat_template).
CHATS = [
    ("chat-one-turn", [{"role": "user", "content": "What is 2+2?"}]),
    ("chat-system", [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "Привет! Как дела?"}]),
    ("chat-multi-turn", [{"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello! How can I help?"},
                         {"role": "user", "content": "Tell me a joke about 猫."}]),
    ("chat-newlines", [{"role": "user", "content": "line one\nline two\n\n  indented\ttab"}]),
]


# ---------------------------------------------------------------------------
# Unicode classes as the tokenizers library's regex engine sees them
# ---------------------------------------------------------------------------

CLASSES = [("L", r"\p{L}"), ("N", r"\p{N}"), ("P", r"\p{P}"), ("S", r"\p{S}"), ("M", r"\p{M}"), ("s", r"\s")]
# A character new in each Unicode version, in the class it belongs to.
VERSION_PROBES = [("16.0", "L", 0x1C89), ("15.1", "S", 0x2FFC), ("15.0", "S", 0x1FAE8), ("14.0", "S", 0x1FAE0)]


def class_ranges():
    """{name: [(lo, hi), ...]} for each class, over all code points."""
    from tokenizers import Regex, pre_tokenizers
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    every = "".join(map(chr, cps))
    out = {}
    for name, rx in CLASSES:
        # "removed": the pieces returned are what the class did not match
        rest = set()
        for piece, _ in pre_tokenizers.Split(Regex(rx), "removed").pre_tokenize_str(every):
            rest.update(map(ord, piece))
        ranges = []
        for c in cps:
            if c in rest:
                continue
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1][1] = c
            else:
                ranges.append([c, c])
        out[name] = ranges
    return out


def write_header(path, ranges):
    members = {k: set() for k in ranges}
    for k, rs in ranges.items():
        for lo, hi in rs:
            # src/tokenizer/regex.c asks PCRE2 about planes 0-3 and 14 only
            assert hi < 0x40000 or 0xE0000 <= lo <= hi < 0xF0000, f"{k}: range {lo:x}-{hi:x} outside the scanned planes"
    version = "older than 14.0"
    for v, k, cp in VERSION_PROBES:
        if any(lo <= cp <= hi for lo, hi in ranges[k]):
            version = f"{v} or later"
            break
    lines = [
        "/*",
        " * tokenizer_unicode.h — GENERATED by tools/gen_tok_ref.py; do not edit.",
        " *",
        f" * The code points that Hugging Face tokenizers {tokenizers.__version__} (Oniguruma, Unicode {version})",
        " * matches with \\p{L} \\p{N} \\p{P} \\p{S} \\p{M} and \\s, as sorted ranges lo, hi (inclusive),",
        " * read back through tokenizers itself. src/tokenizer/regex.c compares them with",
        " * PCRE2's classes and adds what PCRE2's Unicode tables lack (docs/TOKENIZER.md).",
        " */",
        "#ifndef DS3_TOKENIZER_UNICODE_H",
        "#define DS3_TOKENIZER_UNICODE_H",
        "",
        "#include <stdint.h>",
        "",
        f'#define DS3_UC_SOURCE "tokenizers {tokenizers.__version__}, Unicode {version}"',
        "",
    ]
    for k, rs in ranges.items():
        lines.append(f"static const uint32_t ds3_uc_{k}[{2 * len(rs)}] = {{")
        flat = [f"0x{x:x}," for lo, hi in rs for x in (lo, hi)]
        for i in range(0, len(flat), 12):
            lines.append("    " + " ".join(flat[i:i + 12]))
        lines.append("};")
        lines.append("")
    lines.append("#endif /* DS3_TOKENIZER_UNICODE_H */")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"gen_tok_ref: classes ({', '.join(f'{k} {len(r)} ranges' for k, r in ranges.items())}), "
          f"Unicode {version} -> {path}", file=sys.stderr)


def as_bytes(text):
    return text if isinstance(text, bytes) else text.encode("utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default="data/tokenizers/deepseek-v3")
    ap.add_argument("--out", default="ref_data/tokenizer/deepseek-v3.json")
    ap.add_argument("--header", default="src/tokenizer/unicode.h")
    ap.add_argument("--seed", type=int, default=20261123)
    args = ap.parse_args()

    write_header(args.header, class_ranges())

    path = args.tokenizer + "/tokenizer.json"
    with open(path, "rb") as f:
        tok_sha = hashlib.sha256(f.read()).hexdigest()
    tok = tokenizers.Tokenizer.from_file(path)
    tok_raw = tokenizers.Tokenizer.from_file(path)
    tok_raw.encode_special_tokens = True

    rng = random.Random(args.seed)
    corpus = [(n, as_bytes(t)) for n, t in HAND + long_cases() + random_cases(rng)]
    names = [n for n, _ in corpus]
    assert len(set(names)) == len(names), "duplicate case names"

    cases = []
    n_bytes = n_ids = 0
    for name, raw in corpus:
        text = raw.decode("utf-8", "replace")
        valid = True
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            valid = False
        ids = tok.encode(text, add_special_tokens=False).ids
        ids_raw = tok_raw.encode(text, add_special_tokens=False).ids
        dec = tok.decode(ids, skip_special_tokens=False)
        if valid:
            # HF itself round-trips: a sanity check of the oracle, not of ds3.
            assert dec == text, f"{name}: HF does not round-trip"
        cases.append({
            "name": name,
            "text": raw.hex(),
            "valid_utf8": valid,
            "ids": ids,
            "ids_special_as_text": ids_raw,
            "decoded": dec.encode("utf-8").hex(),
        })
        n_bytes += len(raw)
        n_ids += len(ids)

    chats = []
    tf_version = None
    try:
        import transformers
        tf_version = transformers.__version__
        at = transformers.AutoTokenizer.from_pretrained(args.tokenizer)
        for name, msgs in CHATS:
            rendered = at.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            ids = at.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            ids = [int(i) for i in ids]
            assert ids == tok.encode(rendered, add_special_tokens=False).ids, f"{name}: template ids differ"
            chats.append({"name": name, "messages": msgs, "rendered": rendered.encode("utf-8").hex(), "ids": ids})
    except ImportError:
        print("gen_tok_ref: transformers not installed: no chat cases", file=sys.stderr)

    out = {
        "meta": {
            "generator": "tools/gen_tok_ref.py",
            "tokenizer": path,
            "tokenizer_sha256": tok_sha,
            "tokenizers_version": tokenizers.__version__,
            "transformers_version": tf_version,
            "python_version": platform.python_version(),
            "seed": args.seed,
            "invalid_utf8": "HF is given bytes.decode('utf-8', 'replace'): one U+FFFD per maximal ill-formed subsequence",
            "n_cases": len(cases),
            "n_bytes": n_bytes,
            "n_ids": n_ids,
        },
        "cases": cases,
        "chat": chats,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"gen_tok_ref: {len(cases)} cases, {n_bytes} bytes, {n_ids} ids, {len(chats)} chats -> {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
