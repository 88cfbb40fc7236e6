"""ds3.Tokenizer against Hugging Face tokenizers' golden corpus (ref_data/tokenizer/)."""

import json
import os

import pytest

import ds3

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOK = os.path.join(ROOT, "data", "tokenizers", "deepseek-v3")


@pytest.fixture(scope="module")
def tok():
    return ds3.Tokenizer(TOK)


@pytest.fixture(scope="module")
def golden(ref_dir):
    with open(os.path.join(ref_dir, "tokenizer", "deepseek-v3.json")) as f:
        return json.load(f)


def test_every_golden_case(tok, golden):
    """All 798 cases: ids, ids with special tokens as text, and decoding back."""
    bad = []
    for c in golden["cases"]:
        data = bytes.fromhex(c["text"])
        if tok.encode(data) != c["ids"]:
            bad.append((c["name"], "ids"))
        if tok.encode(data, special_as_text=True) != c["ids_special_as_text"]:
            bad.append((c["name"], "ids_special_as_text"))
        if tok.decode_bytes(c["ids"]) != bytes.fromhex(c["decoded"]):
            bad.append((c["name"], "decoded"))
        if c["valid_utf8"] and tok.encode(data.decode("utf-8")) != c["ids"]:
            bad.append((c["name"], "str"))
    assert not bad, bad[:10]
    assert len(golden["cases"]) == 798


def test_chat_matches_apply_chat_template(tok, golden):
    n = 0
    for c in golden["chat"]:
        roles = [m["role"] for m in c["messages"]]
        if roles not in (["user"], ["system", "user"]):
            continue                      # chat() is one user turn, with or without a system prompt
        system = c["messages"][0]["content"] if roles[0] == "system" else None
        user = c["messages"][-1]["content"]
        assert tok.chat(user, system=system) == c["ids"], c["name"]
        assert tok.chat_prompt(user, system=system).encode() == bytes.fromhex(c["rendered"]), c["name"]
        n += 1
    assert n == 3


def test_small_api(tok):
    assert tok.encode("Hello, 世界") == [19923, 14, 223, 3427]      # README's example
    assert tok.encode("Hello", bos=True)[0] == tok.bos == 0
    assert tok.eos == 1 and tok.n_ids == 128815
    assert tok.decode([19923, 14, 223, 3427]) == "Hello, 世界"
    assert tok.decode([]) == "" and tok.encode("") == []
    # a model can stop inside a character: bytes as they are, text with U+FFFD
    ids = tok.encode("世")
    partial = tok.decode_bytes(ids)[:2]
    assert len(partial) == 2 and "\ufffd" in partial.decode("utf-8", "replace")


def test_errors(tok, tmp_path):
    with pytest.raises(ds3.FileError):
        ds3.Tokenizer(tmp_path / "none")
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "Unigram"}}')
    with pytest.raises(ds3.FormatError):
        ds3.Tokenizer(tmp_path)
    with pytest.raises(ds3.ArgumentError, match="not a token|out of range|id"):
        tok.decode([10**6])
    with pytest.raises(ds3.ArgumentError):
        tok.decode(["a"])
    with pytest.raises(ds3.ArgumentError, match="str or bytes"):
        tok.encode(12)


def test_mkmodel_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path):
    with pytest.raises(ds3.ArgumentError, match="128815 ids, more than the model's vocab_size 512"):
        ds3.mkmodel("tiny", "f32", 1, tmp_path / "m", tokenizer=TOK)
