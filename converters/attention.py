"""Attention computed in query chunks, so an exported graph never holds a whole score matrix.

``--attention sliced:N`` sets :class:`ChunkedAttnProcessor` on every diffusers ``Attention`` of the
component (``set_attn_processor``: the modules and weights stay diffusers' own) before export.
Self-attention at 64x64 latents has 4096 tokens: the score matrix of one head is 64 MB in fp32,
times heads, times the CFG batch. Split into N query chunks, one chunk's scores are 1/N of that,
and the runtime can reuse one chunk's buffers for the next.

Why not diffusers' ``SlicedAttnProcessor``: it slices the batch x heads axis in a Python loop over
its run-time size, and the batch axis of our exports is dynamic (the exporter would fix it), and
a slice of one head still holds that head's full [tokens x tokens] matrix. Here the number of
chunks is fixed at export time (``torch.tensor_split`` into N pieces of the dynamic token axis),
so every height, width and batch stays dynamic. The arithmetic is AttnProcessor's (scaled QK^T,
softmax, AV) per chunk: the same numbers up to float summation order.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from edge_sdk.errors import UsageError

MAX_CHUNKS = 1024


def parse_attention(value: str | None) -> int | None:
    """``sliced:N`` -> N (query chunks); ``full`` or None -> None. UsageError for anything else."""
    if value is None or value.strip().lower() in ("", "full"):
        return None
    m = re.fullmatch(r"\s*sliced:(\d+)\s*", value.lower())
    if not m or not 2 <= int(m.group(1)) <= MAX_CHUNKS:
        raise UsageError(f"attention {value!r} is not understood",
                         hint=f"use full, or sliced:N with N query chunks from 2 to {MAX_CHUNKS} (e.g. sliced:16)")
    return int(m.group(1))


class ChunkedAttnProcessor:
    """diffusers ``AttnProcessor`` with the queries in ``chunks`` pieces (self-attention only:
    cross-attention's keys are the 77 text tokens, its scores already small)."""

    def __init__(self, chunks: int) -> None:
        self.chunks = int(chunks)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                          else encoder_hidden_states.shape)
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        cross = encoder_hidden_states is not None
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        query = attn.head_to_batch_dim(query)
        key = attn.head_to_batch_dim(key)
        value = attn.head_to_batch_dim(value)
        if cross or attention_mask is not None:
            probs = attn.get_attention_scores(query, key, attention_mask)
            hidden_states = torch.bmm(probs, value)
        else:
            key_t = key.transpose(-1, -2)
            outs = []
            for q in torch.tensor_split(query, self.chunks, dim=1):
                scores = torch.softmax(torch.bmm(q, key_t) * attn.scale, dim=-1)
                outs.append(torch.bmm(scores.to(value.dtype), value))
            hidden_states = torch.cat(outs, dim=1)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def has_diffusers_attention(module: nn.Module) -> bool:
    from diffusers.models.attention_processor import Attention

    return any(isinstance(m, Attention) for m in module.modules())


class ChunkedAttention(nn.Module):
    """``inner`` (sharing its weights, no copy) with every diffusers Attention in it computed in
    ``chunks`` query chunks while this module runs; the processors are put back after each call,
    so the same loaded model also exports with its own attention."""

    def __init__(self, inner: nn.Module, chunks: int) -> None:
        super().__init__()
        self.inner = inner
        self.chunks = int(chunks)
        # The exporters bind example inputs and dynamic shapes to forward's parameter names: give
        # this instance a forward with the inner module's signature rather than ``*args``.
        sig = inspect.signature(inner.forward)
        this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)

        def forward(self, *args, **kwargs):
            return self._chunked(*args, **kwargs)

        forward.__signature__ = sig.replace(parameters=[this, *sig.parameters.values()])
        self.__class__ = type(type(self).__name__, (type(self),), {"forward": forward})

    def _chunked(self, *args, **kwargs):
        with chunked(self.inner, self.chunks):
            return self.inner(*args, **kwargs)


@contextmanager
def chunked(module: nn.Module, chunks: int) -> Iterator[None]:
    """Every diffusers Attention in ``module`` computes in ``chunks`` query chunks inside the block;
    the processors are put back after it."""
    from diffusers.models.attention_processor import Attention

    attns = [m for m in module.modules() if isinstance(m, Attention)]
    before = [m.processor for m in attns]
    proc = ChunkedAttnProcessor(chunks)
    try:
        for m in attns:
            m.set_processor(proc)
        yield
    finally:
        for m, p in zip(attns, before, strict=True):
            m.set_processor(p)


SLICED = "sliced"  # the variant name of the chunked-attention artifacts
ROLES = ("denoiser", "decoder")  # the components whose attention runs at latent resolution per image


def add_sliced_variants(spec, chunks: int) -> list[str]:
    """Give every component of ``spec`` in ROLES that has diffusers attention a ``sliced``
    alternative: the same module and weights with ``chunks`` query chunks, converted beside the
    full-attention artifacts and recorded as ``config.variants.sliced.attention = "sliced:N"``
    in the manifest. Returns the roles that got one."""
    from dataclasses import replace

    done = []
    for role in ROLES:
        comp = spec.components.get(role)
        if comp is None or not has_diffusers_attention(comp.module):
            continue
        alt = replace(comp, module=ChunkedAttention(comp.module, chunks), alternatives={},
                      config={"attention": f"{SLICED}:{chunks}"})
        comp.alternatives[SLICED] = alt
        comp.config.setdefault("variants", {})[SLICED] = {"attention": f"{SLICED}:{chunks}"}
        done.append(role)
    if not done:
        raise UsageError(f"--attention {SLICED}:{chunks}: no {' or '.join(ROLES)} of this model uses diffusers "
                         "attention modules", hint="drop --attention (it applies to diffusers UNets and VAEs)")
    return done
