"""The bundle: a folder with manifest.json and the artifacts it lists.

``Bundle.open`` verifies the size and sha256 of every listed file before anything parses a model;
``BundleWriter`` builds a bundle in a temporary sibling folder and renames it into place, so a
half-written bundle is never visible under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_sdk import __version__, manifest
from edge_sdk.errors import BundleError, IntegrityError, ModelFileError, UsageError
from edge_sdk.guard.faults import kill_point
from edge_sdk.guard.fsutil import atomic_write, fsync_tree, replace_dir, sha256_file
from edge_sdk.guard.paths import check_relpath, resolve_inside
from edge_sdk.manifest import MANIFEST_NAME, SCHEMA_VERSION, TensorSpec
from edge_sdk.names import check_name

ROLES = ("denoiser", "decoder", "encoder", "text_encoder", "generator")
# The sample size (cells per side) of a bundle whose model records none and whose denoiser takes
# any size (hand-written or older bundles; converters record ``model.sample_size``).
DEFAULT_SAMPLE_CELLS = 32
TMP_PREFIX = ".edge-sdk-tmp-"


@dataclass(frozen=True)
class Artifact:
    """One converted file set of a component: a format, a precision and a variant."""

    component: str
    format: str
    precision: str
    variant: str
    path: Path  # the entry file, absolute
    static_shapes: dict[str, tuple[int, ...]] | None
    validation: dict[str, Any] | None
    size: int  # bytes over all its files
    # (absolute path, size, sha256) of every file, for runtimes to verify the bytes they load
    files: tuple[tuple[Path, int, str], ...] = ()


class Bundle:
    """A verified, opened bundle. Use ``Bundle.open(path)``."""

    def __init__(self, root: Path, data: dict[str, Any]) -> None:
        self.root = root
        self.manifest = data

    @classmethod
    def open(cls, path: str | os.PathLike, *, verify: bool = True) -> Bundle:
        root = Path(path)
        if not root.exists():
            raise BundleError(f"bundle not found: {root}", hint="give the folder that `edge-sdk convert -o` wrote")
        if root.is_symlink() or not root.is_dir():
            if root.is_file() and root.suffix == ".tar":
                raise BundleError(f"{root} is a package archive, not a bundle folder",
                                  hint="install it with `edge-sdk install` first")
            raise BundleError(f"{root} is not a bundle folder")
        data = manifest.load(root / MANIFEST_NAME)
        bundle = cls(root, data)
        if verify:
            bundle.verify()
        return bundle

    # -- integrity -----------------------------------------------------------------------------
    def verify(self) -> None:
        """Check every listed file: a regular file, not a link, of the recorded size and sha256."""
        for f in manifest.all_files(self.manifest):
            self._check_file(f)
        self._check_onnx_external_data()

    def _check_onnx_external_data(self) -> None:
        """An ONNX model may name weight files beside it; each must be one the manifest lists (and so
        was just hashed), so no unverified byte reaches a runtime (hardening, docs/hardening.md)."""
        from edge_sdk.guard.modelcheck import onnx_external_data

        for comp in self.manifest["components"].values():
            for art in manifest.all_artifacts_of_component(comp):
                listed = {f["path"] for f in art["files"]}
                if art["entry"].endswith(".xml"):  # an IR reads its weights from the .bin beside it
                    weights = art["entry"][:-4] + ".bin"
                    if weights not in listed:
                        raise IntegrityError(f"bundle {self.root}: {art['entry']} reads weights {weights!r}, "
                                             "which the manifest does not list",
                                             hint="the bundle was altered or built by hand; convert it again")
                if not art["entry"].endswith(".onnx"):
                    continue
                listed = {f["path"] for f in art["files"]}
                base = art["entry"].rsplit("/", 1)[0] if "/" in art["entry"] else ""
                try:
                    external = onnx_external_data(resolve_inside(self.root, art["entry"], where=f"bundle {self.root}"))
                except ModelFileError:
                    continue  # not parseable: the runtime's own pre-parse refuses it when it is opened
                for ext in external:
                    loc = ext.get("location", "")
                    check_relpath(loc, where=f"bundle {self.root}: {art['entry']} external data")
                    rel = f"{base}/{loc}" if base else loc
                    check_relpath(rel, where=f"bundle {self.root}: {art['entry']} external data")
                    if rel not in listed:
                        raise IntegrityError(f"bundle {self.root}: {art['entry']} reads external data {loc!r}, "
                                             "which the manifest does not list",
                                             hint="the bundle was altered or built by hand; convert it again")

    def _check_file(self, f: dict[str, Any]) -> Path:
        rel = f["path"]
        full = resolve_inside(self.root, rel, where=f"bundle {self.root}")
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            raise IntegrityError(f"bundle {self.root}: file {rel} is missing",
                                 hint="the bundle is incomplete; copy it again or re-run convert") from None
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError(f"bundle {self.root}: {rel} is not a regular file")
        if st.st_size != f["size"]:
            raise IntegrityError(
                f"bundle {self.root}: file {rel} is {st.st_size} bytes, the manifest says {f['size']}",
                hint="the file was truncated or changed; copy the bundle again")
        if sha256_file(full) != f["sha256"]:
            raise IntegrityError(f"bundle {self.root}: file {rel} fails its sha256 check",
                                 hint="the file was modified or corrupted; copy the bundle again")
        return full

    # -- views ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def model(self) -> dict[str, Any]:
        return self.manifest["model"]

    @property
    def sampler(self) -> dict[str, Any]:
        return self.manifest["sampler"]

    @property
    def components(self) -> list[str]:
        return list(self.manifest["components"])

    def component(self, name: str) -> dict[str, Any]:
        try:
            return self.manifest["components"][name]
        except KeyError:
            raise UsageError(f"bundle {self.name} has no component {name!r}",
                             hint=f"it has: {', '.join(self.components)}") from None

    def native_cells(self) -> tuple[int, int] | None:
        """(height, width) in cells of the denoiser's native sample: ``model.sample_size``, else its
        fixed input size, else DEFAULT_SAMPLE_CELLS per free side; None without an image-shaped
        denoiser input (a GAN's z). The one answer for the planner, the pipeline and serve."""
        native = self.model.get("sample_size")
        if native:
            return int(native[0]), int(native[1])
        comp = "denoiser" if "denoiser" in self.components else self.components[0]
        dims = self.signature(comp)[0][0].shape[2:]
        if len(dims) != 2:
            return None
        h, w = (d if isinstance(d, int) else DEFAULT_SAMPLE_CELLS for d in dims)
        return int(h), int(w)

    def signature(self, name: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
        c = self.component(name)
        return [TensorSpec.from_json(t) for t in c["inputs"]], [TensorSpec.from_json(t) for t in c["outputs"]]

    def artifacts(self, component: str) -> list[Artifact]:
        return [self._artifact(component, a) for a in self.component(component)["artifacts"]]

    def stream_parts(self, component: str, format: str, precision: str) -> list[StreamPart]:
        """The component's stream parts in run order, each with its ``format``/``precision`` artifact;
        [] when the component is not split in that one."""
        out = []
        for i, part in enumerate(self.component(component).get("stream", {}).get("parts", [])):
            art = next((a for a in part["artifacts"] if a["format"] == format and a["precision"] == precision), None)
            if art is None:
                return []
            out.append(StreamPart(i, part["name"], tuple(TensorSpec.from_json(t) for t in part["inputs"]),
                                  tuple(TensorSpec.from_json(t) for t in part["outputs"]),
                                  self._artifact(component, art)))
        return out

    def _artifact(self, component: str, a: dict[str, Any]) -> Artifact:
        shapes = a.get("static_shapes")
        return Artifact(
            component=component, format=a["format"], precision=a["precision"], variant=a.get("variant", ""),
            path=resolve_inside(self.root, a["entry"], where=f"bundle {self.root}"),
            static_shapes={k: tuple(v) for k, v in shapes.items()} if shapes else None,
            validation=a.get("validation"), size=sum(f["size"] for f in a["files"]),
            files=tuple((resolve_inside(self.root, f["path"], where=f"bundle {self.root}"), f["size"], f["sha256"])
                        for f in a["files"]))

    def artifact(self, component: str, format: str | None = None, precision: str | None = None,
                 variant: str | None = "") -> Artifact:
        """The artifact of ``component`` matching the filters (None matches anything)."""
        matches = [a for a in self.artifacts(component)
                   if (format is None or a.format == format) and (precision is None or a.precision == precision)
                   and (variant is None or a.variant == variant)]
        if not matches:
            have = ", ".join(f"{a.format}/{a.precision}{'/' + a.variant if a.variant else ''}"
                             for a in self.artifacts(component))
            raise UsageError(f"bundle {self.name}: component {component} has no "
                             f"{format or 'any-format'}/{precision or 'any-precision'} artifact",
                             hint=f"it has: {have}; convert with --format/--precision to add one")
        return matches[0]

    def extra_file(self, component: str, name: str) -> Path:
        for f in self.component(component).get("extra_files", []):
            if f["path"].rsplit("/", 1)[-1] == name:
                return resolve_inside(self.root, f["path"], where=f"bundle {self.root}")
        raise BundleError(f"bundle {self.name}: component {component} has no file {name}")


@dataclass(frozen=True)
class StreamPart:
    """One part of a streamed component (manifest ``stream``), with its artifact in one format/precision."""

    index: int
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    artifact: Artifact


@dataclass
class _PendingArtifact:
    component: str
    format: str
    precision: str
    variant: str
    entry: str
    files: list[str]
    static_shapes: dict[str, list[int]] | None
    validation: dict[str, Any] | None
    convert_seconds: float | None


@dataclass
class _PendingPart:
    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: int | None = None
    artifacts: list[_PendingArtifact] = field(default_factory=list)


@dataclass
class _PendingComponent:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: int | None = None
    config: dict[str, Any] | None = None
    extra_files: list[str] = field(default_factory=list)
    parts: list[_PendingPart] = field(default_factory=list)  # stream parts, in run order
    stream_validation: list[dict[str, Any]] = field(default_factory=list)
    stream_split: str = "unet-blocks"
    stream_attention: str = ""  # the parts' attention when sliced ("sliced:N")


class BundleWriter:
    """Builds a bundle in a temporary folder beside ``target`` and publishes it on ``commit``.

    Use as a context manager: leaving the block without ``commit()`` (an exception, Ctrl-C)
    removes the temporary folder and leaves whatever was at ``target`` untouched.
    """

    def __init__(self, target: str | os.PathLike, *, name: str, overwrite: bool = False) -> None:
        check_name(name, what="bundle name", where=f"output {target}")
        self.target = Path(target).absolute()
        if os.path.lexists(self.target):
            if not overwrite:
                raise UsageError(f"output {self.target} already exists", hint="pass --overwrite or choose another -o")
            check_replaceable(self.target)
        parent = self.target.parent
        if not parent.is_dir():
            raise UsageError(f"output folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise UsageError(f"output folder {parent} is not writable")
        _remove_stale_temps(parent)
        try:
            self.stage = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-{self.target.name}-", dir=parent))
        except OSError as e:  # os.access says yes for root even on read-only or virtual file systems
            raise UsageError(f"output folder {parent} is not writable ({e.strerror})",
                             hint="choose another -o on a writable disk") from None
        self.name = name
        self.model: dict[str, Any] = {"kind": "pixel_diffusion"}
        self.sampler: dict[str, Any] = {}
        self.description: str | None = None
        self._components: dict[str, _PendingComponent] = {}
        self._artifacts: list[_PendingArtifact] = []
        self._committed = False

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self._committed:
            shutil.rmtree(self.stage, ignore_errors=True)

    def artifact_dir(self, component: str, format: str, precision: str, variant: str = "") -> Path:
        d = self.stage / component / format / (precision + (f"-{variant}" if variant else ""))
        d.mkdir(parents=True, exist_ok=True)
        return d

    def add_component(self, role: str, inputs: Iterable[TensorSpec], outputs: Iterable[TensorSpec], *,
                      parameters: int | None = None, config: dict[str, Any] | None = None) -> None:
        if role not in ROLES:
            raise UsageError(f"unknown component role {role!r}", hint=f"roles: {', '.join(ROLES)}")
        self._components[role] = _PendingComponent(list(inputs), list(outputs), parameters, config)

    def add_extra_file(self, component: str, src: Path, name: str | None = None) -> str:
        rel = f"{component}/{name or Path(src).name}"
        check_relpath(rel, where="extra file")
        dst = self.stage / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        self._components[component].extra_files.append(rel)
        return rel

    def add_artifact(self, component: str, format: str, precision: str, entry: Path, *,
                     variant: str = "", files: Iterable[Path] | None = None,
                     static_shapes: dict[str, list[int]] | None = None,
                     validation: dict[str, Any] | None = None, convert_seconds: float | None = None) -> None:
        """Record an artifact whose files already sit under ``artifact_dir(...)``."""
        if component not in self._components:
            raise UsageError(f"add_component({component!r}) must come before its artifacts")
        entry = Path(entry)
        paths = [Path(p) for p in files] if files is not None else [p for p in entry.parent.rglob("*") if p.is_file()]
        rels = sorted({p.relative_to(self.stage).as_posix() for p in paths + [entry]})
        self._artifacts.append(_PendingArtifact(component, format, precision, variant,
                                                entry.relative_to(self.stage).as_posix(), rels,
                                                static_shapes, validation, convert_seconds))

    def add_stream_part(self, component: str, name: str, inputs: Iterable[TensorSpec],
                        outputs: Iterable[TensorSpec], *, parameters: int | None = None) -> None:
        """Append a stream part (in run order) to a component added before."""
        self._components[component].parts.append(_PendingPart(name, list(inputs), list(outputs), parameters))

    def add_stream_artifact(self, component: str, part: str, format: str, precision: str, entry: Path, *,
                            files: Iterable[Path], validation: dict[str, Any] | None = None,
                            convert_seconds: float | None = None) -> None:
        """Record a part's artifact whose files already sit under ``artifact_dir(...)``."""
        target = next(p for p in self._components[component].parts if p.name == part)
        rels = sorted({Path(p).relative_to(self.stage).as_posix() for p in [*files, entry]})
        target.artifacts.append(_PendingArtifact(component, format, precision, "",
                                                 Path(entry).relative_to(self.stage).as_posix(), rels, None,
                                                 validation, convert_seconds))

    def add_stream_validation(self, component: str, record: dict[str, Any]) -> None:
        self._components[component].stream_validation.append(record)

    def set_stream_split(self, component: str, granularity: str) -> None:
        """How the parts were cut: ``blocks`` (manifest ``split: unet-blocks``) or ``layers``."""
        self._components[component].stream_split = f"unet-{granularity}"

    def set_stream_attention(self, component: str, attention: str) -> None:
        """The parts' attention (``sliced:N``), when it differs from the whole component's."""
        self._components[component].stream_attention = attention

    def _artifact_record(self, a: _PendingArtifact) -> dict[str, Any]:
        rec: dict[str, Any] = {"format": a.format, "precision": a.precision, "entry": a.entry,
                               "files": [self._file_record(f) for f in a.files]}
        if a.variant:
            rec["variant"] = a.variant
        if a.static_shapes:
            rec["static_shapes"] = a.static_shapes
        if a.validation is not None:
            rec["validation"] = a.validation
        if a.convert_seconds is not None:
            rec["convert_seconds"] = round(a.convert_seconds, 3)
        return rec

    def _stream_record(self, c: _PendingComponent) -> dict[str, Any]:
        parts = []
        for p in c.parts:
            rec: dict[str, Any] = {"name": p.name, "inputs": [t.to_json() for t in p.inputs],
                                   "outputs": [t.to_json() for t in p.outputs],
                                   "artifacts": [self._artifact_record(a) for a in p.artifacts]}
            if p.parameters is not None:
                rec["parameters"] = p.parameters
            parts.append(rec)
        out: dict[str, Any] = {"split": c.stream_split, "parts": parts}
        if c.stream_attention:
            out["attention"] = c.stream_attention
        if c.stream_validation:
            out["validation"] = list(c.stream_validation)
        return out

    def _file_record(self, rel: str) -> dict[str, Any]:
        p = self.stage / rel
        return {"path": rel, "sha256": sha256_file(p), "size": p.stat().st_size}

    def build_manifest(self) -> dict[str, Any]:
        comps: dict[str, Any] = {}
        for role, c in self._components.items():
            arts = [self._artifact_record(a) for a in self._artifacts if a.component == role]
            comp: dict[str, Any] = {"role": role, "inputs": [t.to_json() for t in c.inputs],
                                    "outputs": [t.to_json() for t in c.outputs], "artifacts": arts}
            if c.extra_files:
                comp["extra_files"] = [self._file_record(f) for f in c.extra_files]
            if c.parameters is not None:
                comp["parameters"] = c.parameters
            if c.config:
                comp["config"] = c.config
            if c.parts and all(p.artifacts for p in c.parts):
                comp["stream"] = self._stream_record(c)
            comps[role] = comp
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "sdk_version": __version__, "name": self.name,
                                "model": self.model, "sampler": self.sampler, "components": comps}
        if self.description:
            data["description"] = self.description
        return manifest.validate(data, source=f"new bundle {self.name}")

    def commit(self) -> Bundle:
        """Hash every file, write manifest.json, fsync, and rename the bundle into place."""
        data = self.build_manifest()
        with atomic_write(self.stage / MANIFEST_NAME, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
        kill_point("commit:manifest")  # interruption tests (edge_sdk.guard.faults); a no-op otherwise
        # Open it with the reader `run` uses before publishing: a bundle that cannot be opened is
        # never put in place (the writer must not accept what the reader refuses).
        Bundle.open(self.stage)
        fsync_tree(self.stage)
        kill_point("commit:synced")
        replace_dir(self.stage, self.target)
        self._committed = True
        return Bundle(self.target, data)


def check_replaceable(target: Path) -> None:
    """Refuse to replace ``target`` unless edge-sdk made it: a real folder (not a link) holding a
    manifest.json that reads as a bundle manifest. Anything else may be the user's files."""
    st = os.lstat(target)
    if stat.S_ISLNK(st.st_mode):
        raise UsageError(f"output {target} is a symbolic link; --overwrite replaces only bundle folders",
                         hint="remove the link yourself or choose another -o")
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"output {target} is a file, not a bundle; --overwrite replaces only bundle folders",
                         hint="choose another -o")
    try:
        manifest.load(target / MANIFEST_NAME)
    except BundleError as e:
        raise UsageError(f"output {target} is not an edge-sdk bundle ({e.message}); --overwrite replaces "
                         "only folders edge-sdk wrote", hint="choose another -o, or move the folder away") from None


def _remove_stale_temps(parent: Path) -> None:
    """Remove temporary folders that a killed writer left behind (the pid in their name is gone)."""
    for p in parent.glob(f"{TMP_PREFIX}*"):
        pid_text = p.name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            shutil.rmtree(p, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
