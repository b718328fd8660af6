"""Tokenizers identical to the reference: an SD-layout folder that ships only vocab.json +
merges.txt (with real BPE merges) tokenizes in the device pipeline exactly as transformers'
CLIPTokenizer does in diffusers' pipelines (padding="max_length", max_length=77, truncation=True),
for SD 1.x (pads with <|endoftext|>) and SD 2.x (pads with "!", id 0, from tokenizer_config)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # shares the one hub-layout convert (hub_sd_bundle)

PROMPTS = [
    "",
    "a photograph of an astronaut riding a horse on the moon",
    # beyond 77 tokens: truncated, EOS kept last
    "portrait of a woman with red hair, " * 12,
    " ".join(f"word{i}" for i in range(90)),
    "hello, world!!! (masterpiece:1.2) [x] {y} -- 'quoted' \"double\" a/b\\c; e.g. 50% off & more?",
    "café naïve Zürich 東京 Привет мир ñandú",
    "a cat 🐱 with a 🎩 hat 👨‍👩‍👧 and ❤️",
    "  many   spaces\tand\nnewlines  ",
    "LOUD PROMPT In MiXeD Case",
    "1234 5678 3.14159",
]


def _reference(folder: Path) -> np.ndarray:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(folder))
    return np.asarray(tok(PROMPTS, padding="max_length", max_length=tok.model_max_length, truncation=True,
                          return_tensors="np").input_ids)


def _device_ids(bundle: Path) -> np.ndarray:
    from edge_sdk import api

    with api.load(bundle) as g:
        ids, _mask = g.pipeline.text.tokenize(PROMPTS)
    return ids


def test_sd1_layout_tokens_equal_clip_tokenizer(hub_sd_bundle):
    folder, bundle = hub_sd_bundle
    assert not (folder / "tokenizer" / "tokenizer.json").exists()
    assert len((folder / "tokenizer" / "merges.txt").read_text().splitlines()) > 100
    ref = _reference(folder / "tokenizer")
    assert ref.shape == (len(PROMPTS), 77)
    got = _device_ids(bundle)
    np.testing.assert_array_equal(got, ref)  # token ids: exact
    eos = ref[0, 1]
    assert (ref[2:4, -1] == eos).all()  # the long prompts were truncated with EOS last


def test_sd2_layout_pads_with_its_own_pad_token(hub_sd_bundle, tmp_path, arch):
    """SD 2.x ships pad_token "!" (id 0, not <|endoftext|>). What convert writes for that folder
    (tokenizer.json and pad_token_id, from the converter's own functions) goes into a copy of the
    converted bundle; the device pipeline must then pad with 0 as CLIPTokenizer does."""
    from edge_sdk.converters.diffusers_folder import _pad_token_id, _tokenizer_json

    folder, bundle = hub_sd_bundle
    tok2 = tmp_path / "tokenizer"
    shutil.copytree(folder / "tokenizer", tok2)
    cfg = json.loads((tok2 / "tokenizer_config.json").read_text())
    cfg["pad_token"] = "!"
    (tok2 / "tokenizer_config.json").write_text(json.dumps(cfg))
    ref = _reference(tok2)
    assert ref[0, -1] == 0 and ref[0, 1] != 0  # "!" pads; EOS stays EOS

    tok_json = _tokenizer_json(tok2, tmp_path)
    pad_id = _pad_token_id(tok2, tok_json)
    assert pad_id == 0
    copy = tmp_path / "sd2.bundle"
    shutil.copytree(bundle, copy)
    shutil.copyfile(tok_json, copy / "text_encoder" / "tokenizer.json")
    man = json.loads((copy / "manifest.json").read_text())
    comp = man["components"]["text_encoder"]
    comp["config"]["pad_token_id"] = pad_id
    for f in comp["extra_files"]:
        if f["path"] == "text_encoder/tokenizer.json":
            data = (copy / f["path"]).read_bytes()
            f.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (copy / "manifest.json").write_text(json.dumps(man))
    np.testing.assert_array_equal(_device_ids(copy), ref)
