"""Split a diffusers UNet2DConditionModel denoiser into sub-graphs at block boundaries, for streaming.

The parts follow ``UNet2DConditionModel.forward`` (diffusers 0.3x-0.4x) section by section, each a
thin wrapper calling the model's own modules and methods (no math of ours):

- ``embed``: time (+ LCM ``timestep_cond``, SDXL ``added_cond_kwargs``) embedding and ``conv_in``;
- ``down<i>``: one down block; it returns its residuals, the last of which is also the next block's input;
- ``mid``: the mid block;
- ``up<j>``: one up block, taking the residuals it pops in forward as explicit inputs;
- ``out``: ``conv_norm_out``, ``conv_act``, ``conv_out``.

``granularity="layers"`` splits each standard block (``CrossAttnDownBlock2D``, ``DownBlock2D``,
``UNetMidBlock2DCrossAttn``, ``CrossAttnUpBlock2D``, ``UpBlock2D``) further, one part per resnet,
transformer and resampler (``down2-res0``, ``down2-attn0``, ``down2-ds``, ``up1-res2``, ``up1-us``),
in the order the block's forward calls them (an up block's resnet takes the concatenation of its
input and the skip it pops, as forward does). SD 1.5's largest block (``up1``, 258M parameters)
becomes parts of at most 49M: what a board whose cap is a few hundred MB can hold one at a time.

Tensors between parts are named: ``skip<k>`` (the k-th entry of forward's
``down_block_res_samples``; ``skip0`` is conv_in's output), ``temb``, ``mid``, ``up<j>``, and the
component's own input and output names. Spatial axes are named by their scale (``height``,
``height_2``, ``height_4``, ...: the sample's height divided by 2, 4, ...), so a memory model can
size every tensor at a requested resolution from the manifest alone.

``upsample_size`` is left None, as forward does when the sample's height and width are multiples
of ``2 ** num_upsamplers`` (the model's ``spatial_multiple``, which the pipeline enforces).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edge_sdk.converters.spec import ComponentSpec
from edge_sdk.errors import ConversionError


@dataclass
class PartSpec:
    """One part of a split component: its exportable spec and where it sits in the chain."""

    name: str
    spec: ComponentSpec  # module, example inputs (captured from the chain) and output names


class _Embed(nn.Module):
    def __init__(self, unet: nn.Module, extras: tuple[str, ...]) -> None:
        super().__init__()
        self.unet = unet
        self.extras = extras

    def _run(self, sample: torch.Tensor, timestep: torch.Tensor, extra: tuple[torch.Tensor, ...]):
        u = self.unet
        kw = dict(zip(self.extras, extra, strict=True))
        if u.config.center_input_sample:
            sample = 2 * sample - 1.0
        t_emb = u.get_time_embed(sample=sample, timestep=timestep)
        emb = u.time_embedding(t_emb, kw.get("timestep_cond"))
        added = {k: kw[k] for k in ("text_embeds", "time_ids") if k in kw}
        aug = u.get_aug_embed(emb=emb, encoder_hidden_states=None, added_cond_kwargs=added)
        emb = emb + aug if aug is not None else emb
        if u.time_embed_act is not None:
            emb = u.time_embed_act(emb)
        return u.conv_in(sample), emb


# One class per input count: torch.export matches dynamic shapes to forward's parameters, and a
# *args parameter is one tuple to it, so every tensor is its own named parameter.
class _Embed0(_Embed):
    def forward(self, sample, timestep):
        return self._run(sample, timestep, ())


class _Embed1(_Embed):
    def forward(self, sample, timestep, e0):
        return self._run(sample, timestep, (e0,))


class _Embed2(_Embed):
    def forward(self, sample, timestep, e0, e1):
        return self._run(sample, timestep, (e0, e1))


class _Embed3(_Embed):
    def forward(self, sample, timestep, e0, e1, e2):
        return self._run(sample, timestep, (e0, e1, e2))


class _Down(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, h: torch.Tensor, temb: torch.Tensor, ehs: torch.Tensor):
        if getattr(self.block, "has_cross_attention", False):
            _, res = self.block(hidden_states=h, temb=temb, encoder_hidden_states=ehs)
        else:
            _, res = self.block(hidden_states=h, temb=temb)
        return tuple(res)


class _DownNoText(_Down):
    """A down block without cross-attention: no text input (an unused input would not export)."""

    def forward(self, h: torch.Tensor, temb: torch.Tensor):  # type: ignore[override]
        _, res = self.block(hidden_states=h, temb=temb)
        return tuple(res)


class _Mid(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, h: torch.Tensor, temb: torch.Tensor, ehs: torch.Tensor):
        return self.block(h, temb, encoder_hidden_states=ehs)


class _MidNoText(_Mid):
    def forward(self, h: torch.Tensor, temb: torch.Tensor):  # type: ignore[override]
        return self.block(h, temb)


class _Up(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def _run(self, h, temb, ehs, skips):
        if ehs is None:
            return self.block(hidden_states=h, temb=temb, res_hidden_states_tuple=skips, upsample_size=None)
        return self.block(hidden_states=h, temb=temb, res_hidden_states_tuple=skips, encoder_hidden_states=ehs,
                          upsample_size=None)


class _Up1(_Up):
    def forward(self, h, temb, ehs, s0):
        return self._run(h, temb, ehs, (s0,))


class _Up2(_Up):
    def forward(self, h, temb, ehs, s0, s1):
        return self._run(h, temb, ehs, (s0, s1))


class _Up3(_Up):
    def forward(self, h, temb, ehs, s0, s1, s2):
        return self._run(h, temb, ehs, (s0, s1, s2))


class _Up4(_Up):
    def forward(self, h, temb, ehs, s0, s1, s2, s3):
        return self._run(h, temb, ehs, (s0, s1, s2, s3))


class _UpNoText1(_Up):
    def forward(self, h, temb, s0):
        return self._run(h, temb, None, (s0,))


class _UpNoText2(_Up):
    def forward(self, h, temb, s0, s1):
        return self._run(h, temb, None, (s0, s1))


class _UpNoText3(_Up):
    def forward(self, h, temb, s0, s1, s2):
        return self._run(h, temb, None, (s0, s1, s2))


class _UpNoText4(_Up):
    def forward(self, h, temb, s0, s1, s2, s3):
        return self._run(h, temb, None, (s0, s1, s2, s3))


class _Res(nn.Module):
    """One resnet of a block (``block`` so the part's own parameters are counted)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, h: torch.Tensor, temb: torch.Tensor):
        return self.block(h, temb)


class _ResCat(_Res):
    """An up block's resnet: forward concatenates the popped skip to its input first."""

    def forward(self, h: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor):  # type: ignore[override]
        return self.block(torch.cat([h, skip], dim=1), temb)


class _Attn(_Res):
    """One transformer of a block, with the text states."""

    def forward(self, h: torch.Tensor, ehs: torch.Tensor):  # type: ignore[override]
        return self.block(h, encoder_hidden_states=ehs, return_dict=False)[0]


class _Sampler(_Res):
    """A block's down- or upsampler (upsample_size None, as in forward)."""

    def forward(self, h: torch.Tensor):  # type: ignore[override]
        return self.block(h)


# Block types the layers split knows the forward of (diffusers 0.3x-0.4x); others stay whole.
_LAYERED = {"CrossAttnDownBlock2D", "DownBlock2D", "UNetMidBlock2DCrossAttn", "CrossAttnUpBlock2D", "UpBlock2D"}
GRANULARITIES = ("blocks", "layers")


def _layered(block: nn.Module, granularity: str) -> bool:
    if granularity != "layers" or type(block).__name__ not in _LAYERED:
        return False
    freeu = all(getattr(block, a, None) for a in ("s1", "s2", "b1", "b2"))
    return not freeu  # FreeU rescales inside forward: keep such a block whole


_EMBED = (_Embed0, _Embed1, _Embed2, _Embed3)
_UP = {True: (None, _Up1, _Up2, _Up3, _Up4), False: (None, _UpNoText1, _UpNoText2, _UpNoText3, _UpNoText4)}


class _Out(nn.Module):
    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, h: torch.Tensor):
        u = self.unet
        if u.conv_norm_out is not None:
            h = u.conv_act(u.conv_norm_out(h))
        return u.conv_out(h)


def splittable(component: ComponentSpec) -> str:
    """'' when ``component`` can be split; else why not (one line)."""
    unet = getattr(component.module, "unet", None)
    if type(unet).__name__ != "UNet2DConditionModel":
        return (f"{component.role}: streaming splits a diffusers UNet2DConditionModel denoiser; this component "
                f"is a {type(unet or component.module).__name__}")
    cfg = unet.config
    if getattr(component.module, "conditioning", "text") != "text":
        return f"{component.role}: only text-conditioned UNets are split"
    if getattr(unet, "encoder_hid_proj", None) is not None:
        return f"{component.role}: a UNet with encoder_hid_proj ({cfg.encoder_hid_dim_type}) is not split"
    if getattr(cfg, "class_embed_type", None) is not None or getattr(cfg, "num_class_embeds", None):
        return f"{component.role}: a UNet with class embeddings is not split"
    if getattr(cfg, "addition_embed_type", None) not in (None, "text_time"):
        return f"{component.role}: addition_embed_type {cfg.addition_embed_type!r} is not split"
    return ""


def _dims(t: torch.Tensor, base_hw: tuple[int, int]) -> dict[int, str]:
    """Named dynamic axes: batch, and for 4-D tensors the spatial axes by their scale to the sample."""
    dims = {0: "batch"}
    if t.ndim == 4:
        for axis, (base, what) in ((2, (base_hw[0], "height")), (3, (base_hw[1], "width"))):
            ratio = base // int(t.shape[axis]) if int(t.shape[axis]) else 1
            dims[axis] = what if ratio == 1 else f"{what}_{ratio}"
    return dims


def split_unet(component: ComponentSpec, granularity: str = "blocks") -> list[PartSpec]:
    """The parts of a UNet denoiser, in order, with example inputs captured by running the chain on the
    component's own example inputs (so each part is exported at the shapes it sees in the whole).
    ``granularity``: ``blocks`` (one part per block) or ``layers`` (per resnet/transformer/resampler)."""
    if granularity not in GRANULARITIES:
        raise ConversionError(f"stream split {granularity!r} is not one of {', '.join(GRANULARITIES)}")
    why = splittable(component)
    if why:
        raise ConversionError(why, hint="drop --stream-parts for this component")
    den = component.module
    unet = den.unet
    names = list(component.example_inputs)
    sample_name, t_name = names[0], names[1]
    cond_name = names[2]
    extras = tuple(getattr(den, "extras", ()))
    ex = component.example_inputs
    hw = (int(ex[sample_name].shape[2]), int(ex[sample_name].shape[3]))
    if any(s % (2 ** unet.num_upsamplers) for s in hw):
        raise ConversionError(f"{component.role}: example sample {hw} is not a multiple of "
                              f"{2 ** unet.num_upsamplers}; the split follows forward's default upsampling")
    env: dict[str, torch.Tensor] = dict(ex)
    plan: list[tuple[str, nn.Module, list[str], list[str]]] = []
    if len(extras) >= len(_EMBED):
        raise ConversionError(f"{component.role}: {len(extras)} extra inputs; the split takes at most "
                              f"{len(_EMBED) - 1}")
    plan.append(("embed", _EMBED[len(extras)](unet, extras), [sample_name, t_name, *extras], ["skip0", "temb"]))
    k = 0  # skips so far - 1
    for i, block in enumerate(unet.down_blocks):
        if _layered(block, granularity):
            cur = f"skip{k}"
            attns = list(getattr(block, "attentions", None) or [None] * len(block.resnets))
            for j, (res, attn) in enumerate(zip(block.resnets, attns, strict=True)):
                k += 1
                mid = f"skip{k}" if attn is None else f"d{i}r{j}"
                plan.append((f"down{i}-res{j}", _Res(res), [cur, "temb"], [mid]))
                if attn is not None:
                    plan.append((f"down{i}-attn{j}", _Attn(attn), [mid, cond_name], [f"skip{k}"]))
                cur = f"skip{k}"
            for ds in block.downsamplers or []:
                k += 1
                plan.append((f"down{i}-ds", _Sampler(ds), [cur], [f"skip{k}"]))
                cur = f"skip{k}"
            continue
        n_res = len(block.resnets) + (1 if getattr(block, "downsamplers", None) else 0)
        outs = [f"skip{k + j + 1}" for j in range(n_res)]
        text = getattr(block, "has_cross_attention", False)
        mod = _Down(block) if text else _DownNoText(block)
        plan.append((f"down{i}", mod, [f"skip{k}", "temb"] + ([cond_name] if text else []), outs))
        k += n_res
    h = f"skip{k}"
    if unet.mid_block is not None and _layered(unet.mid_block, granularity):
        mb = unet.mid_block
        steps: list[tuple[str, nn.Module, list[str]]] = [("mid-res0", _Res(mb.resnets[0]), ["temb"])]
        for j, (attn, res) in enumerate(zip(mb.attentions, mb.resnets[1:], strict=True)):
            steps += [(f"mid-attn{j}", _Attn(attn), [cond_name]), (f"mid-res{j + 1}", _Res(res), ["temb"])]
        h = _chain(plan, steps, h, "mid")
    elif unet.mid_block is not None:
        text = getattr(unet.mid_block, "has_cross_attention", False)
        plan.append(("mid", _Mid(unet.mid_block) if text else _MidNoText(unet.mid_block),
                     [h, "temb"] + ([cond_name] if text else []), ["mid"]))
        h = "mid"
    stack = [f"skip{j}" for j in range(k + 1)]
    for j, block in enumerate(unet.up_blocks):
        n = len(block.resnets)
        res, stack = stack[-n:], stack[:-n]
        if _layered(block, granularity):
            attns = list(getattr(block, "attentions", None) or [None] * n)
            steps = []
            for r, (rn, attn) in enumerate(zip(block.resnets, attns, strict=True)):
                steps.append((f"up{j}-res{r}", _ResCat(rn), [res[-1 - r], "temb"]))  # forward pops from the end
                if attn is not None:
                    steps.append((f"up{j}-attn{r}", _Attn(attn), [cond_name]))
            steps += [(f"up{j}-us", _Sampler(us), []) for us in block.upsamplers or []]
            h = _chain(plan, steps, h, f"up{j}")
            continue
        text = getattr(block, "has_cross_attention", False)
        if n >= len(_UP[text]):
            raise ConversionError(f"{component.role}: up block {j} has {n} resnets; the split takes at most 4")
        mod = _UP[text][n](block)
        plan.append((f"up{j}", mod, [h, "temb"] + ([cond_name] if text else []) + res, [f"up{j}"]))
        h = f"up{j}"
    plan.append(("out", _Out(unet), [h], list(component.output_names[:1])))

    parts = []
    with torch.no_grad():
        for name, mod, ins, outs in plan:
            mod.eval()
            feeds = {n: env[n] for n in ins}
            got = mod(*feeds.values())
            got = got if isinstance(got, tuple) else (got,)
            if len(got) != len(outs):
                raise ConversionError(f"{component.role} part {name}: {len(got)} outputs where the split expects "
                                      f"{len(outs)}", hint="this UNet's block layout is not one edge-sdk splits")
            env.update(zip(outs, got, strict=True))
            dyn = {n: _dims(t, hw) for n, t in feeds.items()}
            odyn = {n: _dims(t, hw) for n, t in zip(outs, got, strict=True)}
            # Integer inputs (none today) keep their dtype; floats are float32 like the whole component.
            spec = ComponentSpec(role=component.role, module=mod, example_inputs=feeds, output_names=outs,
                                 dynamic_dims=dyn, output_dynamic_dims=odyn)
            parts.append(PartSpec(name, spec))
    return parts


def _chain(plan: list, steps: list[tuple[str, nn.Module, list[str]]], h: str, out: str) -> str:
    """Append ``steps`` (name, module, inputs after the running tensor) to ``plan``, each taking the
    previous one's output first; the last output is named ``out`` (intermediates after the part)."""
    for i, (name, mod, extra) in enumerate(steps):
        nxt = out if i == len(steps) - 1 else name.replace("-", "_")
        plan.append((name, mod, [h, *extra], [nxt]))
        h = nxt
    return h


def run_chain(parts: list[PartSpec], feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The parts' PyTorch modules run in turn on ``feeds`` (every tensor of the chain, by name)."""
    env = dict(feeds)
    with torch.no_grad():
        for p in parts:
            got = p.spec.module(*(env[n] for n in p.spec.example_inputs))
            got = got if isinstance(got, tuple) else (got,)
            env.update(zip(p.spec.output_names, got, strict=True))
    return env
