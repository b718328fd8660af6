"""A LoRA for SDXL's two text encoders (``text_encoder.*`` and ``text_encoder_2.*`` keys, as
diffusers' ``StableDiffusionXLPipeline.save_lora_weights`` writes them; ``lora_te1_*``/``lora_te2_*``
as kohya writes them) fused at convert time into the SDXL folder's dual text-encoder component.

The LoRA is made with PEFT on the folder's own encoders (random A and B, rank 4, alpha = rank as
diffusers assumes for a file without alphas) and saved by diffusers. Expected fused weight of each
adapted projection: W + scale * B @ A. Tolerance: 1e-6 relative to the delta's own norm (the same
fp32 products summed in another order at most; the delta is ~1e-1 of W, far above that).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow
SCALE = 0.7
TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _peft_lora(model, seed: int) -> dict[str, torch.Tensor]:
    """Inject a random rank-4 LoRA into ``model`` with PEFT; its state as PEFT holds it."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=TARGETS), model)
    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}


@pytest.fixture(scope="module")
def sdxl_lora(family_folder, tmp_path_factory):
    """(folder, diffusers-format file, kohya-format file, {prefix: PEFT A/B state})."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = family_folder("sdxl")
    out = tmp_path_factory.mktemp("sdxl-lora")
    ab = {"text_encoder": _peft_lora(CLIPTextModel.from_pretrained(str(folder / "text_encoder")), 11),
          "text_encoder_2": _peft_lora(CLIPTextModelWithProjection.from_pretrained(str(folder / "text_encoder_2")), 12)}
    StableDiffusionXLPipeline.save_lora_weights(
        str(out), text_encoder_lora_layers=convert_state_dict_to_diffusers(ab["text_encoder"]),
        text_encoder_2_lora_layers=convert_state_dict_to_diffusers(ab["text_encoder_2"]), safe_serialization=True)
    kohya = {}
    for prefix, tag in (("text_encoder", "lora_te1_"), ("text_encoder_2", "lora_te2_")):
        for key, a in ab[prefix].items():
            if key.endswith(".lora_A.weight"):
                path = key.removesuffix(".lora_A.weight")
                name = tag + "text_model_" + path.removeprefix("text_model.").replace(".", "_")
                kohya[f"{name}.lora_down.weight"] = a
                kohya[f"{name}.lora_up.weight"] = ab[prefix][key.replace("lora_A", "lora_B")]
                kohya[f"{name}.alpha"] = torch.tensor(float(a.shape[0]))
    save_file(kohya, str(out / "kohya_sdxl_te.safetensors"))
    return folder, out / "pytorch_lora_weights.safetensors", out / "kohya_sdxl_te.safetensors", ab


def _linears(module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in module.named_modules()
            if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in TARGETS}


@pytest.fixture(scope="module")
def encoders():
    """lora argument (or None) -> (the folder's text_encoder component with it fused, its adapted
    weights per encoder); each folder load done once per module."""
    from edge_sdk.converters.sources import load_source

    made: dict = {}

    def get(folder: Path, lora: str | None):
        if lora not in made:
            te = load_source(folder, loras=[lora] if lora else []).components["text_encoder"]
            made[lora] = te, {"text_encoder": _linears(te.module.model),
                              "text_encoder_2": _linears(te.module.model_2)}
        return made[lora]

    return get


def test_sdxl_text_encoder_2_lora_fuses_the_expected_delta(sdxl_lora, encoders):
    folder, lora, kohya, ab = sdxl_lora
    _, base = encoders(folder, None)
    comp, fused = encoders(folder, f"{lora}:{SCALE}")
    for prefix in ("text_encoder", "text_encoder_2"):
        assert set(fused[prefix]) == set(base[prefix]) and len(base[prefix]) == 2 * 4  # 2 layers x q, k, v, out
        for name, w in fused[prefix].items():
            a = ab[prefix][f"{name}.lora_A.weight"]
            b = ab[prefix][f"{name}.lora_B.weight"]
            want = SCALE * (b @ a)  # alpha / r = 1
            got = w - base[prefix][name]
            assert float(torch.linalg.norm(got - want) / torch.linalg.norm(want)) < 1e-6, (prefix, name)
            assert float(torch.linalg.norm(want) / torch.linalg.norm(base[prefix][name])) > 1e-2  # a real change
    sha = hashlib.sha256(lora.read_bytes()).hexdigest()
    assert comp.config["loras"] == [{"file": lora.name, "sha256": sha, "scale": SCALE}]

    # kohya's layout of the same A and B (lora_te1_/lora_te2_ keys, alpha = rank) fuses to the same weights.
    _, from_kohya = encoders(folder, f"{kohya}:{SCALE}")
    for prefix in ("text_encoder", "text_encoder_2"):
        for name, w in from_kohya[prefix].items():
            want = fused[prefix][name] - base[prefix][name]
            assert float(torch.linalg.norm(w - fused[prefix][name]) / torch.linalg.norm(want)) < 1e-6, (prefix, name)


def test_sdxl_text_encoder_2_lora_is_in_the_exported_artifact_and_manifest(sdxl_lora, encoders, tmp_path):
    """Converted (text encoder only, OpenVINO fp32: the quickest export of the three): the manifest
    records the file, and the artifact's outputs are the fused encoders' (1e-4, the fp32 bar: the
    runtime and PyTorch differ by float reassociation), not the plain ones' (the LoRA moves them
    by > 1e-2)."""
    import edge_sdk
    from edge_sdk.bundle import Bundle
    from edge_sdk.runtimes.registry import open_artifact

    folder, lora, _, _ = sdxl_lora
    out = edge_sdk.convert(folder, tmp_path / "b", formats="openvino", precisions="fp32",
                           components=["text_encoder"], loras=[f"{lora}:{SCALE}"], samples=1)
    b = Bundle.open(out.root)
    sha = hashlib.sha256(lora.read_bytes()).hexdigest()
    assert b.component("text_encoder")["config"]["loras"] == [{"file": lora.name, "sha256": sha, "scale": SCALE}]

    ids = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(5))
    ids2 = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(6))
    with open_artifact(b.artifacts("text_encoder")[0].path, "openvino", device="cpu") as rt:
        feed = {"input_ids": ids.numpy(), "input_ids_2": ids2.numpy()}
        got = rt.run({s.name: feed[s.name].astype(s.dtype) for s in rt.inputs})
    fused_comp, _ = encoders(folder, f"{lora}:{SCALE}")
    plain_comp, _ = encoders(folder, None)
    with torch.no_grad():
        fused = [t.numpy() for t in fused_comp.module(ids, ids2)]
        plain = [t.numpy() for t in plain_comp.module(ids, ids2)]
    for name, f, p in zip(("prompt_embeds", "text_embeds"), fused, plain, strict=True):
        g = got[name]
        assert np.linalg.norm(g - f) / np.linalg.norm(f) < 1e-4, name
        assert np.linalg.norm(f - p) / np.linalg.norm(p) > 1e-2, name
