"""Hardening round two, class 8 for text: prompts that are not valid UTF-8, carry NUL, or are huge
(issue 14), through the real CLI (raw argv bytes) and the API. A typed error, never a panic message
from the tokenizer's native code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import edge_sdk
from edge_sdk.errors import UsageError
from edge_sdk.pipelines.text import MAX_PROMPT_CHARS, check_prompt, prompt_list

BAD = {
    "lone-surrogate": ("a cat \udcff", "not valid UTF-8"),
    "high-surrogate": ("\ud800", "not valid UTF-8"),
    "nul": ("a\x00b", "NUL"),
    "huge": ("a " * (MAX_PROMPT_CHARS), "over the"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_prompt_api(name, tiny_bundle):
    text, frag = BAD[name]
    with pytest.raises(UsageError, match=frag):
        check_prompt(text)
    with pytest.raises(UsageError, match=frag):
        prompt_list([text, "ok"], 2)
    with pytest.raises(UsageError, match=frag):  # the pipeline checks text before anything else
        with edge_sdk.load(tiny_bundle) as gen:
            gen.generate(steps=1, prompt=text)
    with pytest.raises(UsageError, match=frag):
        with edge_sdk.load(tiny_bundle) as gen:
            gen.generate(steps=1, negative_prompt=text)


def test_valid_prompts_pass():
    for ok in ("", "a red cat", "ein Kätzchen 🐱", "中文提示", "x" * MAX_PROMPT_CHARS):
        check_prompt(ok)
    assert prompt_list("a", 3) == ["a", "a", "a"]


@pytest.mark.parametrize("raw", [b"\xff\xfe cat", b"caf\xe9", b"\xed\xa0\x80"])  # latin-1, CESU surrogate
def test_invalid_utf8_argv_cli(raw, tiny_bundle, tmp_path):
    exe = os.fsencode(Path(sys.executable).with_name("edge-sdk"))
    proc = subprocess.run([exe, b"run", os.fsencode(tiny_bundle), b"--steps", b"1", b"--prompt", raw,
                           b"--out", os.fsencode(tmp_path / "o.png")], capture_output=True, timeout=300,
                          env={**os.environ, "LC_ALL": "C.UTF-8"})
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == UsageError.exit_code and "not valid UTF-8" in err, err
    assert "Traceback" not in err and "panic" not in err.lower()
    assert not (tmp_path / "o.png").exists()
