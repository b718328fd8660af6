"""Text conditioning: prompts through the bundle's tokenizer.json and text encoder, or
precomputed embeddings given by the caller; the negative (by default empty) prompt is the
unconditional branch of classifier-free guidance.

The tokenizer is the ``tokenizers`` library's JSON file, stored as an extra file of the
``text_encoder`` component. Every prompt is padded and truncated to the text encoder's sequence
length: its fixed input length, else the model's ``max_text_length``. The pad id comes from the
tokenizer's own padding setting, else the component config's ``pad_token_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.errors import BundleError, InputError, RuntimeUnavailableError, UsageError
from edge_sdk.pipelines.sessions import Sessions

TOKENIZER_FILE = "tokenizer.json"
MAX_PROMPT_CHARS = 16_384
Prompt = str | Sequence[str]


def prompt_list(prompt: Prompt | None, batch: int, what: str = "prompt") -> list[str] | None:
    """One string per row: a single string repeats, a list must have one per row."""
    if prompt is None:
        return None
    items = [prompt] if isinstance(prompt, str) else list(prompt)
    if not all(isinstance(p, str) for p in items):
        raise UsageError(f"{what} must be a string or a list of strings")
    for i, p in enumerate(items):
        check_prompt(p, what if len(items) == 1 else f"{what} {i}")
    if isinstance(prompt, str):
        return [prompt] * batch
    if len(items) != batch:
        raise UsageError(f"{len(items)} {what}s for a batch of {batch}", hint=f"give one {what} per image, or one for all")
    return items


def check_prompt(text: str, what: str = "prompt") -> None:
    """A prompt must be valid UTF-8 text (no lone surrogates, which is how Python carries undecodable
    bytes from argv or a file) without NUL, and of bounded length: the tokenizer's native regex engine
    gets nothing it could panic or spin on. The encoder truncates to its sequence length anyway."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(f"{what} is not valid UTF-8 (undecodable byte at character {e.start})",
                         hint="give the prompt as UTF-8 text") from None
    if "\x00" in text:
        raise UsageError(f"{what} contains a NUL character")
    if len(text) > MAX_PROMPT_CHARS:
        raise UsageError(f"{what} is {len(text)} characters, over the {MAX_PROMPT_CHARS} limit",
                         hint="the text encoder reads only its first few dozen tokens")


class TextConditioner:
    """Turns prompts (or given embeddings) into the denoiser's encoder_hidden_states."""

    def __init__(self, bundle: Bundle, sessions: Sessions) -> None:
        self.bundle = bundle
        self.sessions = sessions
        self.has_encoder = "text_encoder" in bundle.components
        den_in, _ = bundle.signature("denoiser")
        if len(den_in) < 3:
            raise BundleError(f"bundle {bundle.name}: a text-conditioned denoiser needs a third input "
                              "(encoder_hidden_states)")
        self.embed_spec = den_in[2]
        self._tokenizer = None

    # -- the tokenizer -----------------------------------------------------------------------
    def sequence_length(self) -> int:
        ids = self.bundle.signature("text_encoder")[0][0]
        if len(ids.shape) == 2 and isinstance(ids.shape[1], int):
            return int(ids.shape[1])
        n = self.bundle.model.get("max_text_length")
        if n is None:
            raise BundleError(f"bundle {self.bundle.name}: the text encoder's sequence length is dynamic and the "
                              "model has no max_text_length", hint="convert again with model['max_text_length'] set")
        return int(n)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise RuntimeUnavailableError("the tokenizers library is needed for text prompts",
                                              hint="pip install 'edge-sdk[text]', or pass prompt_embeds") from None
            path = self.bundle.extra_file("text_encoder", TOKENIZER_FILE)
            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as e:  # tokenizers raises a bare Exception on a malformed file
                raise BundleError(f"bundle {self.bundle.name}: {TOKENIZER_FILE} cannot be read: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            n = self.sequence_length()
            pad = tok.padding
            config = self.bundle.component("text_encoder").get("config") or {}
            if pad is not None:
                pad_id, pad_token = pad["pad_id"], pad["pad_token"]
            elif config.get("pad_token_id") is not None:
                pad_id = int(config["pad_token_id"])
                pad_token = tok.id_to_token(pad_id) or ""
            else:
                raise BundleError(f"bundle {self.bundle.name}: {TOKENIZER_FILE} has no padding setting and the "
                                  "text_encoder config no pad_token_id",
                                  hint="save the tokenizer with padding enabled, or set pad_token_id")
            tok.enable_truncation(n)
            tok.enable_padding(length=n, pad_id=pad_id, pad_token=pad_token)
            self._tokenizer = tok
        return self._tokenizer

    def tokenize(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), both int64 (batch, sequence_length)."""
        tok = self.tokenizer
        for p in prompts:
            check_prompt(p)
        try:
            encs = tok.encode_batch(prompts)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as e:  # noqa: BLE001 - a Rust panic arrives as pyo3's PanicException(BaseException)
            raise InputError(f"bundle {self.bundle.name}: the tokenizer failed on the prompt "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})",
                             hint="simplify the prompt (plain text); if it persists the bundle's "
                                  f"{TOKENIZER_FILE} is faulty") from None
        return (np.array([e.ids for e in encs], dtype=np.int64),
                np.array([e.attention_mask for e in encs], dtype=np.int64))

    # -- embeddings --------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> np.ndarray:
        """Text encoder outputs (batch, seq, dim) for ``prompts``; each distinct prompt is encoded once."""
        if not self.has_encoder:
            raise UsageError(f"bundle {self.bundle.name} has no text encoder, so it takes no text prompt",
                             hint="pass precomputed prompt_embeds (and negative_prompt_embeds for guidance)")
        unique = list(dict.fromkeys(prompts))
        ids, mask = self.tokenize(unique)
        specs = self.bundle.signature("text_encoder")[0]
        feeds = {specs[0].name: ids}
        if len(specs) > 1:  # an encoder exported with an attention mask input takes it second
            feeds[specs[1].name] = mask
        out = self.sessions.run("text_encoder", feeds)
        rows = {p: out[i] for i, p in enumerate(unique)}
        return np.stack([rows[p] for p in prompts]).astype(np.float32, copy=False)

    def check_embeds(self, embeds: Any, batch: int, what: str) -> np.ndarray:
        """Caller-given embeddings as (batch, seq, dim) float32; (seq, dim) or one row repeats."""
        arr = np.asarray(embeds, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        want = self.embed_spec.shape
        if arr.ndim != 3 or any(isinstance(w, int) and w != g for w, g in zip(want[1:], arr.shape[1:], strict=False)):
            raise UsageError(f"{what} has shape {tuple(np.shape(embeds))}; the denoiser takes "
                             f"[{', '.join(str(d) for d in want)}]")
        if arr.shape[0] == 1 and batch > 1:
            arr = np.repeat(arr, batch, axis=0)
        if arr.shape[0] != batch:
            raise UsageError(f"{what} has {arr.shape[0]} rows for a batch of {batch}")
        if not np.isfinite(arr).all():
            raise UsageError(f"{what} contains NaN or Inf")
        return arr

    def condition(self, *, prompt: Prompt | None, negative_prompt: Prompt | None, prompt_embeds: Any,
                  negative_prompt_embeds: Any, batch: int, guided: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(cond, uncond) embeddings; uncond is None when guidance is off."""
        if prompt is not None and prompt_embeds is not None:
            raise UsageError("pass either prompt or prompt_embeds, not both")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise UsageError("pass either negative_prompt or negative_prompt_embeds, not both")
        if prompt is None and prompt_embeds is None:
            raise UsageError("this model is text-conditioned: give a prompt (or prompt_embeds)",
                             hint="e.g. --prompt 'a red cat'; an empty prompt '' is allowed")
        if prompt_embeds is not None:
            cond = self.check_embeds(prompt_embeds, batch, "prompt_embeds")
        else:
            cond = self.encode(prompt_list(prompt, batch))
        if not guided:
            if negative_prompt is not None or negative_prompt_embeds is not None:
                raise UsageError("a negative prompt needs classifier-free guidance", hint="set guidance above 1")
            return cond, None
        if negative_prompt_embeds is not None:
            return cond, self.check_embeds(negative_prompt_embeds, batch, "negative_prompt_embeds")
        if not self.has_encoder:
            raise UsageError("guidance needs an unconditional branch and this bundle has no text encoder",
                             hint="pass negative_prompt_embeds, or use guidance 1.0")
        return cond, self.encode(prompt_list("" if negative_prompt is None else negative_prompt, batch,
                                             "negative prompt"))
