"""SDXL conditioning: two tokenizers into one dual text encoder, pooled text embeds, and time ids.

The bundle's text_encoder takes ``input_ids`` (tokenizer.json) and ``input_ids_2``
(tokenizer_2.json) and returns the concatenated penultimate hidden states and the second
encoder's pooled projection (see ``converters/diffusers_folder.py``). The denoiser takes both,
plus ``time_ids`` = original size + crop top-left + target size, in pixels, as
StableDiffusionXLPipeline builds them. With ``force_zeros_for_empty_prompt`` (the folder's
model_index.json) an absent negative prompt is all-zero embeddings, not the encoded "".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.errors import BundleError, UsageError
from edge_sdk.pipelines.sessions import Sessions
from edge_sdk.pipelines.text import Prompt, TextConditioner, prompt_list

SECOND_TOKENIZER_FILE = "tokenizer_2.json"


def is_dual(bundle: Bundle) -> bool:
    """True when the bundle's text encoder is SDXL's pair (it takes input_ids_2)."""
    if "text_encoder" not in bundle.components:
        return False
    return any(t.name == "input_ids_2" for t in bundle.signature("text_encoder")[0])


def time_ids(height: int, width: int, batch: int, crop: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(batch, 6) float32: original (h, w), crop (top, left), target (h, w); original = target."""
    return np.tile(np.array([[height, width, crop[0], crop[1], height, width]], dtype=np.float32), (batch, 1))


class DualTextConditioner(TextConditioner):
    """Prompts -> {encoder_hidden_states, text_embeds} for the cond and uncond branches."""

    def __init__(self, bundle: Bundle, sessions: Sessions) -> None:
        super().__init__(bundle, sessions)
        self._tokenizer_2 = None
        config = bundle.component("text_encoder").get("config") or {}
        self.force_zeros = bool(config.get("force_zeros_for_empty_prompt", False))

    @property
    def tokenizer_2(self) -> Any:
        if self._tokenizer_2 is None:
            from tokenizers import Tokenizer

            path = self.bundle.extra_file("text_encoder", SECOND_TOKENIZER_FILE)
            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as e:  # tokenizers raises a bare Exception on a malformed file
                raise BundleError(f"bundle {self.bundle.name}: {SECOND_TOKENIZER_FILE} cannot be read: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            config = self.bundle.component("text_encoder").get("config") or {}
            if tok.padding is not None:
                pad_id, pad_token = tok.padding["pad_id"], tok.padding["pad_token"]
            elif config.get("pad_token_id_2") is not None:
                pad_id = int(config["pad_token_id_2"])
                pad_token = tok.id_to_token(pad_id) or ""
            else:
                raise BundleError(f"bundle {self.bundle.name}: {SECOND_TOKENIZER_FILE} has no padding setting and "
                                  "the text_encoder config no pad_token_id_2", hint="convert the folder again")
            n = self.sequence_length()
            tok.enable_truncation(n)
            tok.enable_padding(length=n, pad_id=pad_id, pad_token=pad_token)
            self._tokenizer_2 = tok
        return self._tokenizer_2

    def encode_dual(self, prompts: list[str]) -> dict[str, np.ndarray]:
        unique = list(dict.fromkeys(prompts))
        ids = np.array([e.ids for e in self.tokenizer.encode_batch(unique)], dtype=np.int64)
        ids2 = np.array([e.ids for e in self.tokenizer_2.encode_batch(unique)], dtype=np.int64)
        specs = self.bundle.signature("text_encoder")[0]
        outs = self.sessions.run_all("text_encoder", {specs[0].name: ids, specs[1].name: ids2})
        rows = {p: i for i, p in enumerate(unique)}
        pick = [rows[p] for p in prompts]
        return {"encoder_hidden_states": outs[0][pick].astype(np.float32, copy=False),
                "text_embeds": outs[1][pick].astype(np.float32, copy=False)}

    def condition_dual(self, *, prompt: Prompt | None, negative_prompt: Prompt | None, prompt_embeds: Any,
                       negative_prompt_embeds: Any, batch: int,
                       guided: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        if prompt_embeds is not None or negative_prompt_embeds is not None:
            raise UsageError("an SDXL bundle takes prompts, not precomputed prompt_embeds",
                             hint="pass prompt (and negative_prompt)")
        if prompt is None:
            raise UsageError("this model is text-conditioned: give a prompt",
                             hint="e.g. --prompt 'a red cat'; an empty prompt '' is allowed")
        cond = self.encode_dual(prompt_list(prompt, batch))
        if not guided:
            if negative_prompt is not None:
                raise UsageError("a negative prompt needs classifier-free guidance", hint="set guidance above 1")
            return cond, None
        if negative_prompt is None and self.force_zeros:
            return cond, {k: np.zeros_like(v) for k, v in cond.items()}
        neg = prompt_list("" if negative_prompt is None else negative_prompt, batch, "negative prompt")
        return cond, self.encode_dual(neg)
