"""ONNX Runtime adapter: TensorRT > CUDA > CPU execution providers, whichever are present.

Options: ``graph_optimization`` ('disable', 'basic', 'extended', 'all'; default 'all'),
``trt_cache_dir`` (TensorRT engine + timing cache, so the second start skips the engine build),
``trt_fp16`` (default True), ``io_binding`` (default True; used only on CUDA/TensorRT),
``cpu_mem_arena`` and ``mem_pattern`` (default True; False trades some speed for a lower peak).

IO binding: on CUDA/TensorRT, inputs are bound from host memory and outputs to host memory that
ONNX Runtime allocates once per shape, which saves the per-run output allocation and lets the
provider copy asynchronously. On the CPU provider a plain ``run`` already reads numpy buffers in
place and returns its output buffers without a copy, so binding would save nothing there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_sdk.errors import InferenceError, ModelFileError, RuntimeUnavailableError, UsageError
from edge_sdk.manifest import TensorSpec
from edge_sdk.runtimes.base import MB, NUMPY_DTYPES, Runtime, first_line

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
DEVICE_PROVIDERS = {
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "cpu": ("CPUExecutionProvider",),
}
DEVICE_ALIASES = {"gpu": "cuda", "trt": "tensorrt"}
GRAPH_LEVELS = ("disable", "basic", "extended", "all")
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise RuntimeUnavailableError(f"onnxruntime is not installed ({e})",
                                      hint="pip install 'edge-sdk[onnxruntime]'") from None
    return onnxruntime


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    formats = ("onnx",)
    devices = ("auto", "cpu", "cuda", "tensorrt")
    base_memory = 60 * MB  # Python 3.11 + numpy + onnxruntime, measured here
    # ONNX Runtime's memory pattern would add a second pre-planned block beside the arena after the
    # first run (2x the activations here, and no faster on CPU: 0.29 s vs 0.46 s per denoiser call).
    # Workers that spin on after a run hold a core the caller needs next (the sampler step, the
    # next component): stopped as each run returns, the SD-shaped ORT plan ran 4-6 % faster
    # (benchmarks/RESULTS.md, peers), its decoder call ~25 % (the denoiser's workers had spun on).
    plan_options = {"mem_pattern": False, "spin_after_run": False}
    loads_by_path = True
    # Chained sessions (DeepCache's parts) above all must not spin on after a run: the next part
    # needs the core (a plan from an older edge-sdk may lack the plan option). Spinning within a run
    # stays: with it the SD-shaped DeepCache chain ran 1.54-1.59 s a generation, without 1.59-1.67 s.
    chained_options = {"spin_after_run": False}
    # A component streamed part by part (the last rung: memory first): no CPU arena, so a part's
    # dequantized weights and activations go back as each node ends. SD 1.5's int8-weight layer
    # parts at 512x512: the worst part peaked at 343 MB with the arena, 289 MB without; one UNet
    # call through the 46 parts 10.9 -> 14.3 s (benchmarks/RESULTS.md, issue 16).
    streamed_options = {"cpu_mem_arena": False}
    install_hint = "pip install 'edge-sdk[onnxruntime]' (on Jetson: NVIDIA's onnxruntime-gpu wheel for your JetPack)"
    module = "onnxruntime"
    rank = 10

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._session = None
        self._binding = None
        super().__init__(*args, **kwargs)

    @classmethod
    def probe(cls) -> dict[str, Any]:
        try:
            ort = _ort()
        except RuntimeUnavailableError as e:
            return {"available": False, "reason": e.message, "version": None, "devices": []}
        providers = ort.get_available_providers()
        devs = ["cpu"] + [d for d, p in (("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider"))
                          if p in providers]
        notes = []
        if "CUDAExecutionProvider" not in providers:
            notes.append("no CUDA/TensorRT provider in this build (GPU: onnxruntime-gpu, or NVIDIA's wheel on Jetson)")
        elif "TensorrtExecutionProvider" not in providers:
            notes.append("no TensorRT provider (needs an onnxruntime-gpu build with TensorRT)")
        return {"available": True, "reason": "", "version": ort.__version__, "devices": devs,
                "providers": providers, "notes": notes}

    def _providers(self) -> list[Any]:
        ort = _ort()
        present = set(ort.get_available_providers())
        device = DEVICE_ALIASES.get(self.device, self.device)
        wanted = PROVIDER_ORDER if device == "auto" else DEVICE_PROVIDERS.get(device)
        if wanted is None:
            raise UsageError(f"onnxruntime has no device {self.device!r}",
                             hint=f"devices: {', '.join(self.devices)} (or gpu = cuda)")
        if device != "auto" and wanted[0] not in present:
            raise RuntimeUnavailableError(
                f"onnxruntime here has no {wanted[0]} (available: {', '.join(sorted(present))})",
                hint="install onnxruntime-gpu built for your CUDA/JetPack, or use --device cpu")
        chosen: list[Any] = []
        for p in wanted:
            if p not in present:
                continue
            if p == "TensorrtExecutionProvider":
                cache = self.options.get("trt_cache_dir")
                opts = {"trt_fp16_enable": bool(self.options.get("trt_fp16", True))}
                if cache:
                    opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache),
                                trt_timing_cache_enable=True, trt_timing_cache_path=str(cache))
                chosen.append((p, opts))
            else:
                chosen.append(p)
        return chosen

    def _open(self) -> None:
        ort = _ort()
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        level = self.options.get("graph_optimization", "all")
        if level not in GRAPH_LEVELS:
            raise UsageError(f"onnxruntime graph_optimization {level!r} is not one of {', '.join(GRAPH_LEVELS)}")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        so.log_severity_level = 3
        # allow_spinning False: worker threads sleep between runs instead of spinning, which frees the
        # cores for the next of many small chained sessions (DeepCache's parts); ORT's default spins.
        if "allow_spinning" in self.options:
            flag = "1" if self.options["allow_spinning"] else "0"
            so.add_session_config_entry("session.intra_op.allow_spinning", flag)
            so.add_session_config_entry("session.inter_op.allow_spinning", flag)
        # spin_after_run False: workers spin while a run is in flight (fast hand-offs between
        # kernels) but stop as it returns, so they do not hold a core the caller's next step, or the
        # next component's session, needs.
        if not self.options.get("spin_after_run", True):
            so.add_session_config_entry("session.force_spinning_stop", "1")
        # The CPU arena and memory patterns keep a run's peak activations allocated between runs (fast
        # reuse); off, peak memory falls back after each run (benchmarks/RESULTS.md: 3.3 GB -> 1.2 GB).
        # The memory pattern is a second pre-planned block beside the arena, doubling what a session
        # holds after its second run, so the planner turns it off (plan_options above).
        so.enable_cpu_mem_arena = bool(self.options.get("cpu_mem_arena", True))
        so.enable_mem_pattern = bool(self.options.get("mem_pattern", True))
        if not self.path.is_file():
            raise ModelFileError(f"onnxruntime: model file {self.path} does not exist")
        try:
            data = self.verified_bytes(self.path)
            # The descriptor a one-file model was verified through (loads_by_path), or its verified
            # bytes where a system has no /proc/self/fd; a model with external data by path (ORT
            # resolves the data beside the file), its files checked unchanged after the load.
            source = data if data is not None and len(self._bytes) == 1 else self.verified_path(self.path)
            self._session = ort.InferenceSession(source, sess_options=so, providers=self._providers())
        except (RuntimeUnavailableError, UsageError):
            raise
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelFileError(f"onnxruntime cannot load {self.path}: {first_line(e)}",
                                 hint="the file is corrupt or not an ONNX model; convert it again") from None
        self.inputs = [TensorSpec(i.name, NUMPY_DTYPES.get(i.type, i.type), _dims(i.shape))
                       for i in self._session.get_inputs()]
        self.outputs = [TensorSpec(o.name, NUMPY_DTYPES.get(o.type, o.type), _dims(o.shape))
                        for o in self._session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]
        self._binding = None
        if self.options.get("io_binding", True) and self.active_device in _GPU_PROVIDERS:
            self._binding = self._session.io_binding()

    @property
    def active_device(self) -> str:
        return self._session.get_providers()[0]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._binding is not None:
            return self._run_bound(feeds)
        self._run_options = ort_options = _ort().RunOptions()  # one per call: terminate is per call
        try:
            values = self._session.run(self._output_names, feeds, ort_options)
        except Exception as e:
            raise InferenceError(f"onnxruntime failed running {self.path.name}: {first_line(e)}") from None
        return dict(zip(self._output_names, values, strict=False))

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        b = self._binding
        try:
            b.clear_binding_inputs()
            b.clear_binding_outputs()
            for name, arr in feeds.items():
                b.bind_cpu_input(name, arr)
            for name in self._output_names:
                b.bind_output(name, "cpu")
            self._run_options = ort_options = _ort().RunOptions()
            self._session.run_with_iobinding(b, ort_options)
            values = b.copy_outputs_to_cpu()
        except Exception as e:
            raise InferenceError(f"onnxruntime failed running {self.path.name}: {first_line(e)}") from None
        return dict(zip(self._output_names, values, strict=False))

    def _cancel(self) -> bool:
        opts = getattr(self, "_run_options", None)
        if opts is None:
            return False
        opts.terminate = True  # ORT checks it between kernels, Loop iterations included
        return True

    def close(self) -> None:
        self._binding = None
        self._session = None


def _dims(shape) -> tuple[int | str, ...]:
    return tuple(d if isinstance(d, int) else (d or "dynamic") for d in shape)
