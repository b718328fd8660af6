"""OpenVINO adapter: IR (.xml/.bin) or ONNX files on CPU, GPU, NPU or AUTO.

A compiled-model cache folder makes the second start on a device fast (the NPU and GPU compile
for seconds to minutes); NPUs take static shapes only, so the model is reshaped to fixed dims
before compiling for one. fp32 artifacts run at f32 on the CPU by default: recent CPUs otherwise
default to bf16 (AMX / avx512_bf16) and drift ~1e-2 from PyTorch.
"""

from __future__ import annotations

import glob
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.errors import EdgeSDKError, InferenceError, ModelFileError, RuntimeUnavailableError, UsageError
from edge_sdk.manifest import TensorSpec
from edge_sdk.runtimes.base import FD_PATHS, MB, Runtime, first_line, give_back_freed_memory, pin_verified

# OpenVINO errors start with source locations; the informative line comes after them.
_LOCATIONS = ("Exception from", "Check '")

# Our device names -> OpenVINO's. 'auto' is resolved in _device_name from what is present.
DEVICE_NAMES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "AUTO": "AUTO"}
_PRECISIONS = ("f32", "f16", "bf16")


def _ov():
    try:
        import openvino
    except ImportError as e:
        raise RuntimeUnavailableError(f"openvino is not installed ({e})",
                                      hint="pip install 'edge-sdk[openvino]'") from None
    return openvino


def default_cache_dir() -> Path:
    """Where compiled models are cached unless options['cache_dir'] says otherwise."""
    from edge_sdk.cache import cache_dir

    return cache_dir("openvino")


def cpu_inference_precisions() -> tuple[str, ...]:
    """Inference precisions OpenVINO's CPU plugin can compute in here, in our names ('f32', and
    'bf16' / 'f16' where the CPU has the arithmetic: AVX512_BF16, AMX); () without openvino."""
    try:
        caps = _ov().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - not installed or no CPU plugin: no precision to offer
        return ()
    names = {"FP32": "f32", "BF16": "bf16", "FP16": "f16"}
    return tuple(names[c] for c in caps if c in names)


def check_ir_files(xml_path: Path) -> Path:
    """The .bin beside ``xml_path``, after checking both are real, non-empty and the XML parses."""
    where = f"OpenVINO IR {xml_path}"
    bin_path = xml_path.with_suffix(".bin")
    for p in (xml_path, bin_path):
        if not p.is_file():
            raise ModelFileError(f"{where}: {p.name} is missing", hint="an IR is a .xml plus a .bin of the same name")
        if p.stat().st_size == 0:
            raise ModelFileError(f"{where}: {p.name} is empty", hint="copy or convert the model again")
    try:
        # expat refuses external entities and caps entity expansion (Python >= 3.11 ships expat 2.4+).
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, UnicodeDecodeError, ValueError) as e:
        raise ModelFileError(f"{where}: not valid XML ({e})", hint="the file is corrupt; convert it again") from None
    if root.tag != "net" or root.find("layers") is None:
        raise ModelFileError(f"{where}: XML root is <{root.tag}>, not an OpenVINO <net> with <layers>",
                             hint="is this an OpenVINO IR .xml?")
    return bin_path


def _compile_config(dev: str, options: Mapping[str, Any], threads: int | None) -> dict[str, Any]:
    """The compile properties the session options and thread count ask for on ``dev`` (the
    compiled-model cache aside): inference precision (f32 on a CPU unless asked), threads, hint."""
    cfg: dict[str, Any] = {}
    prec = options.get("inference_precision")
    if prec is None and dev == "CPU":
        prec = "f32"
    if prec is not None:
        if prec not in _PRECISIONS:
            raise UsageError(f"openvino inference_precision {prec!r} is not one of {', '.join(_PRECISIONS)}")
        if dev.startswith("AUTO"):
            cfg["DEVICE_PROPERTIES"] = {d: {"INFERENCE_PRECISION_HINT": prec} for d in dev.split(":", 1)[1].split(",")}
        else:
            cfg["INFERENCE_PRECISION_HINT"] = prec
    if threads and dev in ("CPU",):
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    if options.get("performance_hint"):
        cfg["PERFORMANCE_HINT"] = str(options["performance_hint"]).upper()
    return cfg


class OpenVinoRuntime(Runtime):
    """Options: ``cache_dir`` (compiled-model cache folder; False disables it; unset: the default
    folder, on a CPU for models up to ``cpu_cache_max_bytes`` only), ``inference_precision``
    ('f32', 'f16', 'bf16'; default f32 on CPU, the device's own default elsewhere),
    ``static_shapes`` ({input: [dims]}, applied always; needed on NPU for dynamic models; or
    'per_shape': one static-shape compile per distinct set of fed shapes, kept in a small cache
    keyed by those shapes, instead of one dynamic-shape compile),
    ``performance_hint`` ('LATENCY' or 'THROUGHPUT')."""

    per_shape_limit = 4  # compiled models kept by 'per_shape' (each holds its own weights copy)
    # On a CPU cache hit the plugin imports the blob while the model as read is still held: at SD
    # 1.5's size (3.4 GB UNet) that raised the bf16 plan's peak from 6664 to 9145 MB, for no speed
    # (11.8 s a generation uncached, 12.4 s cached; the warm-up with its compile 19.2 s uncached,
    # 23.8 s from the cache; benchmarks/RESULTS.md, peers sd15). Larger models compile each start.
    cpu_cache_max_bytes = 1 << 30

    name = "openvino"
    formats = ("openvino", "onnx")
    devices = ("auto", "cpu", "gpu", "npu")
    probe_device = "CPU"
    base_memory = 110 * MB  # Python 3.11 + numpy + openvino, measured here
    install_hint = "pip install 'edge-sdk[openvino]'"
    module = "openvino"
    rank = 20
    materialises_attention = False  # the CPU plugin fuses scaled dot-product attention
    batch_holds_fixed_once = True  # the first call's weight layout (2.4-2.7 GB for SD 1.5's UNet) is per session

    @classmethod
    def probe(cls) -> dict[str, Any]:
        try:
            ov = _ov()
            core = ov.Core()
            present = list(core.available_devices)
        except RuntimeUnavailableError as e:
            return {"available": False, "reason": e.message, "version": None, "devices": []}
        except Exception as e:  # noqa: BLE001 - a broken plugin install must not break doctor
            return {"available": False, "reason": f"openvino is installed but Core() failed: {e}",
                    "version": None, "devices": []}
        details = {}
        for d in present:
            try:
                details[d] = str(core.get_property(d, "FULL_DEVICE_NAME"))
            except Exception:  # noqa: BLE001
                details[d] = ""
        kinds = {d.split(".")[0] for d in present}
        notes = []
        if "GPU" not in kinds:
            notes.append("GPU: " + ("/dev/dri has a render node but no OpenCL/Level Zero driver answered "
                                    "(intel-opencl-icd)"
                                    if glob.glob("/dev/dri/renderD*") else "no Intel GPU render node (/dev/dri)"))
        if "NPU" not in kinds:
            notes.append("NPU: " + ("/dev/accel exists but the NPU plugin found no device (linux-npu-driver version?)"
                                    if glob.glob("/dev/accel/accel*") else "no NPU device node (/dev/accel)"))
        return {"available": True, "reason": "", "version": ov.__version__.split("-")[0],
                "devices": ["auto", *dict.fromkeys(d.split(".")[0].lower() for d in present)],  # GPU.0, GPU.1 -> gpu
                "device_names": details,
                "notes": notes}

    def _device_name(self, core) -> str:
        present = [d.split(".")[0] for d in core.available_devices]
        if self.device == "auto":
            # NPUs need static shapes, so 'auto' only spans GPU and CPU; ask for npu by name.
            usable = [d for d in ("GPU", "CPU") if d in present]
            if not usable:
                raise RuntimeUnavailableError("openvino sees no CPU or GPU device here",
                                              hint="check the openvino install (`edge-sdk doctor`)")
            return usable[0] if len(usable) == 1 else "AUTO:" + ",".join(usable)
        dev = DEVICE_NAMES.get(self.device.lower())
        if dev is None:
            raise UsageError(f"openvino has no device {self.device!r}", hint=f"devices: {', '.join(self.devices)}")
        if dev not in present:
            hints = {"GPU": "install the Intel GPU compute runtime (intel-opencl-icd / level-zero) and add the user "
                            "to the 'render' group",
                     "NPU": "install the Intel NPU driver (linux-npu-driver) and check /dev/accel/accel0"}
            raise RuntimeUnavailableError(
                f"openvino device {dev} is not available here (present: {', '.join(present) or 'none'})",
                hint=hints.get(dev, "use --device cpu"))
        return dev

    def _weight_bytes(self) -> int:
        """The model's file bytes: its verified files, else the files at its path."""
        if self._records:
            return sum(size for size, _ in self._records.values())
        return sum(p.stat().st_size for p in (self.path, self.path.with_suffix(".bin")) if p.is_file())

    def _caches(self, dev: str) -> bool:
        """Whether compiles go through the compiled-model cache: as ``cache_dir`` says, else on a
        CPU only for models under ``cpu_cache_max_bytes`` (a GPU or NPU compile is slow enough to
        always cache)."""
        cache = self.options.get("cache_dir", None)
        if cache is not None:
            return cache is not False
        return dev != "CPU" or self._weight_bytes() <= self.cpu_cache_max_bytes

    def _config(self, dev: str) -> dict[str, Any]:
        cfg = _compile_config(dev, self.options, self.threads)
        cache = self.options.get("cache_dir", None)
        if self._caches(dev):
            cache_path = Path(cache) if cache else default_cache_dir()
            if self.options.get("inference_precision") not in (None, "f32"):
                # Reduced-precision blobs in their own folder: with bf16 blobs beside the f32 ones of
                # the same model, a CPU run here returned NaN (seen with OpenVINO 2026.4, not since
                # with separate folders).
                cache_path = cache_path / str(self.options["inference_precision"])
            try:
                cache_path.mkdir(parents=True, exist_ok=True)
                cfg["CACHE_DIR"] = str(cache_path)
            except OSError:
                pass  # a read-only home only costs the compile time, never the run
        return cfg

    def _read_model(self, core, ov):
        return self._read_file(core, self.path)

    def read_verified_files(self) -> None:
        """An ONNX model is hashed through descriptors and read by OpenVINO from the one it was
        hashed through (``verified_path``; with external data, by path, its files checked unchanged
        after the read), as ONNX Runtime does: read from verified bytes, SD 1.5's fp32 text encoder
        (470 MB) peaked at +1907 MB while opening, against +1152 MB by path. An IR's weights are
        read into a tensor OpenVINO owns (``_buffer_for``)."""
        if self.path.suffix == ".onnx" and FD_PATHS.is_dir():
            for fpath, (size, digest) in self._records.items():
                self._pinned[fpath] = pin_verified(fpath, size, digest)
            return
        super().read_verified_files()

    def _read_file(self, core, path: Path):
        """From the verified bytes (IR .xml + .bin) or the verified descriptor (ONNX) when the runtime
        has them."""
        data = self.verified_bytes(path)
        if data is None:
            return core.read_model(self.verified_path(path))
        if path.suffix == ".xml":
            weights = self.verified_bytes(path.with_suffix(".bin"))
            if weights is None:
                raise ModelFileError(f"openvino: {path.with_suffix('.bin').name} is not listed with "
                                     f"{path.name} in the manifest", hint="convert the model again")
            return core.read_model(data.decode("utf-8"), weights)  # an ov.Tensor: _buffer_for
        if not any(f.parent == path.parent and f != path for f in self._records):  # no external data
            return core.read_model(data)
        return core.read_model(str(path))

    def _buffer_for(self, path: Path, size: int) -> tuple[Any, Any] | None:
        # The IR's weights straight into a tensor OpenVINO owns: the model's constants point into it
        # and keep it alive as long as they need it (a numpy/bytes buffer is freed under them once
        # Python drops it), and the process holds one copy of the file, not the two a bytes read does.
        if path.suffix != ".bin":
            return None
        ov = _ov()
        tensor = ov.Tensor(ov.Type.u8, ov.Shape([size]))
        return tensor, tensor.data

    def _open(self) -> None:
        ov = _ov()
        if not self.path.is_file():
            raise ModelFileError(f"openvino: model file {self.path} does not exist")
        if self.path.suffix == ".xml":
            check_ir_files(self.path)
        core = ov.Core()
        dev = self._device_name(core)
        try:
            model = self._read_model(core, ov)
        except Exception as e:  # openvino raises RuntimeError/GeneralFailure for any parse problem
            raise ModelFileError(f"openvino cannot read {self.path}: {first_line(e, _LOCATIONS)}",
                                 hint="the file is corrupt or not an OpenVINO IR / ONNX model; "
                                      "convert it again") from None
        static_opt = self.options.get("static_shapes") or {}
        per_shape = static_opt == "per_shape"
        if isinstance(static_opt, str) and not per_shape:
            raise UsageError(f"openvino static_shapes {static_opt!r} is neither {{input: [dims]}} nor 'per_shape'")
        static = {} if per_shape else dict(static_opt)
        if dev == "NPU" and not static and model.is_dynamic():
            dyn = [i.get_any_name() for i in model.inputs if i.get_partial_shape().is_dynamic]
            raise UsageError(f"openvino NPU needs static shapes; inputs {dyn} of {self.path.name} are dynamic",
                             hint="use the bundle's 'static' variant (convert --static HxW) or pass "
                                  "options static_shapes={input: [dims]}")
        if static:
            names = {i.get_any_name() for i in model.inputs}
            unknown = sorted(set(static) - names)
            if unknown:
                raise UsageError(f"static_shapes names {unknown} are not inputs of {self.path.name}",
                                 hint=f"inputs: {', '.join(sorted(names))}")
            try:
                model.reshape({k: ov.PartialShape([int(d) for d in v]) for k, v in static.items()})
            except Exception as e:
                raise UsageError(f"openvino cannot reshape {self.path.name} to {static}: "
                                 f"{first_line(e, _LOCATIONS)}") from None
        self._device = dev
        self._per_shape: dict[tuple, tuple[Any, Any]] | None = None
        if per_shape and model.is_dynamic():
            # Compiled on first use for each set of shapes (in a run's warm-up); described meanwhile
            # by the model as read, which the first compile then uses and drops (_for_shapes).
            self._core, self._model, self._per_shape = core, model, {}
            self._compiled, self._request = None, None
            ports = list(model.inputs), list(model.outputs)
        else:
            self._compiled = self._compile(core, model)
            self._request = self._compiled.create_infer_request()  # reused across runs: no per-call setup
            ports = list(self._compiled.inputs), list(self._compiled.outputs)
        # Names from the model as read: compiling may merge aliases into a port ('43' beside
        # 'timestep' once a static shape lets the plugin fold a node), and get_any_name picks one.
        self.inputs = [TensorSpec(src.get_any_name(), _dtype(p.get_element_type()), _dims(p.get_partial_shape()))
                       for src, p in zip(model.inputs, ports[0], strict=False)]
        self.outputs = [TensorSpec(_port_name(p, i), _dtype(p.get_element_type()), _dims(p.get_partial_shape()))
                        for i, p in enumerate(ports[1])]

    @classmethod
    def warm_up(cls, device: str, threads: int | None, options: Mapping[str, Any]) -> Any:
        """Compiles and runs a one-op model: the CPU plugin and its thread pool are then in the
        probe's base. Two sessions of one model share weights here (SD 1.5's int8-weight text
        encoder: the second added 16 MB), so a second session does not measure the first."""
        ov = _ov()
        from openvino import opset13 as ops

        x = ops.parameter([1, 8], ov.Type.f32)
        dev = DEVICE_NAMES.get(str(device).lower(), "CPU")
        compiled = ov.Core().compile_model(ov.Model([ops.relu(x)], [x], "warm-up"), dev,
                                           _compile_config(dev, options, threads))
        compiled(np.zeros((1, 8), np.float32))
        return compiled

    @classmethod
    def open_chain(cls, paths: Sequence[Path], outputs: Sequence[str], **kwargs: Any) -> OpenVinoChain:
        return OpenVinoChain(paths, outputs, **kwargs)

    @classmethod
    def tune_options(cls, device: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        # On the CPU: compiled once per fed shape (static shapes fold more), and bf16 arithmetic where
        # the CPU has it (OpenVINO's own CPU default there, ~2x per UNet call; benchmarks/RESULTS.md).
        if device.lower() not in ("auto", "cpu"):
            return {}, None
        return {"static_shapes": "per_shape"}, (
            {"inference_precision": "bf16"} if "bf16" in cpu_inference_precisions() else None)

    def _compile(self, core, model):
        dev = self._device
        try:
            compiled = core.compile_model(model, dev, self._config(dev))
        except Exception as e:
            raise ModelFileError(f"openvino cannot compile {self.path.name} for {dev}: {first_line(e, _LOCATIONS)}",
                                 hint="an op or precision this device does not support; try --device cpu") from None
        # The compile's scratch (and, once the caller drops the model, its source weights) back to the
        # OS before the next model loads: otherwise the heap keeps it and the peak stacks up.
        give_back_freed_memory()
        return compiled

    def _source_model(self):
        """The model as read, for one per-shape compile: the one _open read (first use), else read
        again from the files (verified again when opened from a bundle). Not kept between compiles:
        it holds the file's weights beside each compiled copy (a third of the peak on a UNet)."""
        model, self._model = self._model, None
        if model is not None:
            return model
        ov = _ov()
        try:
            self.read_verified_files()  # an IntegrityError if a file changed since the bundle was opened
            return self._read_model(self._core, ov)
        except EdgeSDKError:
            raise
        except Exception as e:
            raise InferenceError(f"openvino cannot read {self.path} again: {first_line(e, _LOCATIONS)}") from None
        finally:
            self._bytes.clear()

    def _for_shapes(self, feeds: dict[str, np.ndarray]):
        """The compiled model and request for these feeds' shapes ('per_shape'), compiled once."""
        key = tuple(sorted((k, tuple(v.shape)) for k, v in feeds.items()))
        hit = self._per_shape.get(key)
        if hit is None:
            ov = _ov()
            if len(self._per_shape) >= self.per_shape_limit:  # the oldest goes: its memory is a model's weights
                self._per_shape.pop(next(iter(self._per_shape)))
                self._compiled = self._request = None
            model = self._source_model()
            try:
                model.reshape({k: ov.PartialShape(list(shape)) for k, shape in key})
            except Exception as e:
                raise InferenceError(f"openvino cannot reshape {self.path.name} to {dict(key)}: "
                                     f"{first_line(e, _LOCATIONS)}") from None
            compiled = self._compile(self._core, model)
            hit = self._per_shape[key] = (compiled, compiled.create_infer_request())
            del model
            give_back_freed_memory()
        self._compiled, self._request = hit
        return hit

    @property
    def active_device(self) -> str:
        if getattr(self, "_compiled", None) is None:
            return getattr(self, "_device", self.device)
        try:
            return ",".join(self._compiled.get_property("EXECUTION_DEVICES"))
        except Exception:  # noqa: BLE001
            return self._device

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if getattr(self, "_per_shape", None) is not None:
            self._for_shapes(feeds)
        # The async API, so that InferRequest.cancel() (runtimes/watch.py, on Ctrl-C or past the call
        # deadline) can end the request: wait() then raises. The locals keep the request and the
        # compiled model alive while the call runs, even if close() drops them meanwhile.
        request, compiled = self._request, self._compiled
        try:
            request.start_async(feeds)  # copies the inputs (share_inputs=False)
            request.wait()
            # Copies out of the request's buffers, so the next run cannot overwrite what the caller holds.
            return {spec.name: request.get_tensor(port).data.copy()
                    for spec, port in zip(self.outputs, compiled.outputs, strict=False)}
        except Exception as e:
            raise InferenceError(f"openvino failed running {self.path.name} on {self._device}: "
                                 f"{first_line(e, _LOCATIONS)}") from None

    def _cancel(self) -> bool:
        request = self._request
        if request is None:
            return False
        # Honoured between nodes; the CPU plugin does not check it inside a running Loop or
        # TensorIterator, so such a call goes on (watch.py then treats it as a runaway).
        request.cancel()
        return True

    def release_scratch(self) -> None:
        # The CPU plugin keeps each request's intermediate tensors between calls; at 256x256 the VAE
        # decoder's alone are tens of MB, and they would sit beside the UNet's through the whole loop.
        compiled = [c for c, _ in (self._per_shape or {}).values()] if getattr(self, "_per_shape", None) \
            else [c for c in (getattr(self, "_compiled", None),) if c is not None]
        for c in compiled:
            try:
                c.release_memory()
            except Exception:  # noqa: BLE001 - a plugin without it (or mid-call) keeps its memory, nothing else
                pass
        give_back_freed_memory()

    def close(self) -> None:
        self._request = None
        self._compiled = None
        self._model = None
        if getattr(self, "_per_shape", None):
            self._per_shape = {}
        give_back_freed_memory()


class OpenVinoChain(OpenVinoRuntime):
    """A chain of IR (or ONNX) parts read and joined into one ov.Model (``Runtime.open_chain``).

    Compiled as one model, the chain has one activation arena where part-by-part sessions have
    one each, all live at once: on the SD-shaped UNet's nine parts, -47 MB of peak RSS at the same
    speed (benchmarks/RESULTS.md, peers: SD-shaped reading). Everything else (per-shape compiles, the cache,
    verified reads) is the single-model adapter's."""

    def __init__(self, paths: Sequence[Path], outputs: Sequence[str], **kwargs: Any) -> None:
        if not paths:
            raise UsageError("openvino: a chain needs at least one part")
        self.links = [Path(p) for p in paths]
        self.wanted = list(outputs)
        # Checked once here, as _open checks a single model's file; a per-shape compile's re-read
        # is verified by its hashes instead.
        for p in self.links[1:]:  # the constructor preflights and checks the first
            self.preflight(p)
            if not p.is_file():
                raise ModelFileError(f"openvino: model file {p} does not exist")
            if p.suffix == ".xml":
                check_ir_files(p)
        super().__init__(self.links[0], **kwargs)

    def _read_model(self, core, ov):
        return join_models([self._read_file(core, p) for p in self.links], self.wanted)


def join_models(models: Sequence[Any], outputs: Sequence[str]):
    """One ov.Model from ``models`` run in order: a parameter whose name an earlier model's result
    (or parameter) carries is replaced by that tensor; the others are the joined model's inputs, in
    order of first appearance; ``outputs`` are named results (each must be made somewhere)."""
    ov = _ov()
    made: dict[str, Any] = {}
    params = []
    for m in models:
        for prm in m.get_parameters():
            name = prm.get_output_tensor(0).get_any_name()
            if name in made:
                for target in list(prm.output(0).get_target_inputs()):
                    target.replace_source_output(made[name])
            else:
                params.append(prm)
                made[name] = prm.output(0)
        for r in m.get_results():
            for name in r.get_output_tensor(0).get_names():
                made[name] = r.input_value(0)
    missing = [n for n in outputs if n not in made]
    if missing:
        raise ModelFileError(f"openvino: no part of the chain makes {', '.join(missing)}",
                             hint="the bundle's stream parts do not fit together; convert the model again")
    joined = ov.Model([made[n] for n in outputs], params, "chain")
    for port, name in zip(joined.outputs, outputs, strict=True):
        port.get_tensor().set_names({name})  # the part's own name, not an alias get_any_name may pick
    return joined


def _dtype(t) -> str:
    return np.dtype(t.to_dtype()).name


def _dims(ps) -> tuple[int | str, ...]:
    if ps.rank.is_dynamic:
        return ("dynamic",)
    return tuple(d.get_length() if d.is_static else "dynamic" for d in ps)


def _port_name(port, i: int) -> str:
    try:
        return port.get_any_name()
    except RuntimeError:  # an output without a tensor name
        return f"output_{i}"
