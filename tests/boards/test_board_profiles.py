"""Board profiles: every built-in one loads with sources; users add their own; detection picks the right one."""

from __future__ import annotations

from importlib import resources

import pytest

from edge_sdk.errors import PlanError
from edge_sdk.planning.board import MB, MachineFacts, board_names, detect_board, load_board, machine_facts

REQUIRED = ["jetson-orin-nano-4gb", "jetson-orin-nano-8gb", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb",
            "jetson-nano-4gb", "rpi4-4gb", "rpi5-4gb", "rpi5-8gb", "rpi-zero-2w", "intel-core-ultra-npu", "rk3588",
            "x86-64-generic"]


def test_every_required_board_has_a_valid_sourced_profile():
    names = board_names()
    assert set(REQUIRED) <= set(names)
    for name in names:
        b = load_board(name)
        assert b.name == name
        assert 0 < b.cap_bytes < b.ram_bytes, name  # the OS always keeps something
        assert b.sources["memory"] and b.sources["memory_cap"] and b.sources["cpu"], name
        assert b.runtimes and b.precisions_for("denoiser") and b.threads >= 1
        assert 1 <= b.min_tile <= b.max_tile
        assert b.unified == name.startswith("jetson"), name  # only Jetsons share RAM with the GPU


def test_profiles_carry_the_researched_figures():
    # docs/boards.md Sources: A76 has fp16 + dotprod [src23]; A72/A53/A57 have neither; Zero: 512 MB [src25].
    assert {"fp16", "dotprod"} <= set(load_board("rpi5-8gb").isa)
    for name in ("rpi4-4gb", "rpi-zero-2w", "jetson-nano-4gb"):
        assert not {"fp16", "dotprod"} & set(load_board(name).isa), name
    assert load_board("rpi-zero-2w").ram_bytes == 512 * MB
    assert load_board("jetson-agx-orin-64gb").cpu_cores == 12
    assert load_board("intel-core-ultra-npu").runtimes[0] == ("openvino", "NPU")
    # No fp16 arithmetic on the Pi 4: fp16 is not its first choice.
    assert load_board("rpi4-4gb").precisions_for("denoiser")[0] == "fp32"


def test_generic_host_detects_its_cores_and_threads():
    # The generic profile takes the CPUs this process may use (affinity), like its RAM.
    import os

    b = load_board("x86-64-generic")
    assert b.cpu_cores == b.threads == len(os.sched_getaffinity(0))
    assert load_board("rpi5-8gb").threads == 4  # fixed boards keep their figure


def _user_profile(tmp_path, **changes):
    text = resources.files("edge_sdk.boards").joinpath("rpi5-8gb.toml").read_text()
    text = text.replace('name = "rpi5-8gb"', 'name = "my-board"')
    for old, new in changes.items():
        text = text.replace(old, new)
    p = tmp_path / "my-board.toml"
    p.write_text(text)
    return p


def test_a_user_profile_loads_by_path_and_from_the_board_path(tmp_path, monkeypatch):
    p = _user_profile(tmp_path, **{"cap_mb = 6656": "cap_mb = 1000"})
    b = load_board(str(p))
    assert b.name == "my-board" and b.cap_bytes == 1000 * MB
    monkeypatch.setenv("EDGE_SDK_BOARD_PATH", str(tmp_path))
    assert "my-board" in board_names()
    assert load_board("my-board").cap_bytes == 1000 * MB


@pytest.mark.parametrize("change,message", [
    ({"cap_mb = 6656": "cap_mb = 9000"}, r"cap \(9000 MB\) must be above 0 and at most the RAM"),
    ({"threads]": "threads]\nnumber = 3"}, r"\[threads\]: unknown field 'number'"),
    ({"cores = 4": 'cores = "four"'}, r"\[cpu\] cores: must be a positive integer or \"detect\", got 'four'"),
    ({"cores = 4": "cores = 0"}, r"\[cpu\] cores: must be a positive integer"),
    ({'"litert:cpu"': '"litert"'}, r"not RUNTIME:DEVICE"),
    ({'isa = ["neon"': 'isa = ["neon", "warp-drive"'}, r"unknown ISA feature"),
    ({"[tiling]": "[tiling\n"}, r"not valid TOML"),
    ({"min_tile = 8": "min_tile = 99"}, r"min_tile <= max_tile"),
])
def test_bad_profiles_are_refused_naming_the_field(tmp_path, change, message):
    with pytest.raises(PlanError, match=message):
        load_board(str(_user_profile(tmp_path, **change)))


def test_unknown_board_names_suggest_close_ones():
    with pytest.raises(PlanError, match="unknown board 'rpi5-8g'") as e:
        load_board("rpi5-8g")
    assert "rpi5-8gb" in e.value.hint
    with pytest.raises(PlanError, match="does not exist"):
        load_board("/nonexistent/board.toml")


def _tree(tmp_path, *, model=None, compatible=None, tegra=None, cpuinfo="", mem_gb=8.0, devices=()):
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    if model is not None:
        (root / "proc/device-tree").mkdir()
        (root / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
        if compatible:
            (root / "proc/device-tree/compatible").write_bytes(b"\x00".join(c.encode() for c in compatible) + b"\x00")
    if tegra is not None:
        (root / "etc").mkdir()
        (root / "etc/nv_tegra_release").write_text(tegra)
    (root / "proc/cpuinfo").write_text(cpuinfo)
    # MemTotal is a little under the nominal size (firmware and kernel reservations).
    (root / "proc/meminfo").write_text(f"MemTotal:       {int(mem_gb * 0.95 * 1024 * 1024)} kB\n")
    for d in devices:
        (root / d.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / d.lstrip("/")).write_text("")
    return root


ARM = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes crc32 asimdhp asimddp\n"
X86 = "processor\t: 0\nmodel name\t: {}\nflags\t\t: fpu sse2 avx2 avx_vnni\n"


@pytest.mark.parametrize("kwargs,expected", [
    (dict(model="Raspberry Pi 5 Model B Rev 1.0", cpuinfo=ARM, mem_gb=8), "rpi5-8gb"),
    (dict(model="Raspberry Pi 5 Model B Rev 1.0", cpuinfo=ARM, mem_gb=4), "rpi5-4gb"),
    (dict(model="Raspberry Pi 4 Model B Rev 1.4", cpuinfo=ARM, mem_gb=4), "rpi4-4gb"),
    (dict(model="Raspberry Pi Zero 2 W Rev 1.0", cpuinfo=ARM, mem_gb=0.5), "rpi-zero-2w"),
    (dict(model="NVIDIA Jetson Orin Nano Developer Kit", tegra="# R36 (release), REVISION: 4.0", cpuinfo=ARM,
          mem_gb=8), "jetson-orin-nano-8gb"),
    (dict(model="NVIDIA Jetson Orin Nano Developer Kit", tegra="# R36 (release), REVISION: 4.0", cpuinfo=ARM,
          mem_gb=4), "jetson-orin-nano-4gb"),
    (dict(model="NVIDIA Jetson Nano Developer Kit", tegra="# R32 (release), REVISION: 7.1", cpuinfo=ARM, mem_gb=4),
     "jetson-nano-4gb"),
    (dict(model="Jetson AGX Orin Developer Kit", tegra="# R35 (release), REVISION: 5.0", cpuinfo=ARM, mem_gb=64),
     "jetson-agx-orin-64gb"),
    (dict(model="Radxa ROCK 5B", compatible=["radxa,rock-5b", "rockchip,rk3588"], cpuinfo=ARM, mem_gb=8), "rk3588"),
    (dict(cpuinfo=X86.format("Intel(R) Core(TM) Ultra 7 155H"), mem_gb=16, devices=["/dev/accel/accel0"]),
     "intel-core-ultra-npu"),
    (dict(cpuinfo=X86.format("AMD EPYC 7B13"), mem_gb=32), "x86-64-generic"),
])
def test_detect_board_from_a_recorded_machine(tmp_path, kwargs, expected):
    name, reasons = detect_board(_tree(tmp_path, **kwargs))
    assert name == expected, reasons
    assert any(expected in r for r in reasons)


def test_unknown_arm_board_is_not_guessed(tmp_path):
    name, reasons = detect_board(_tree(tmp_path, model="Pine64 RockPro64", cpuinfo=ARM, mem_gb=4))
    assert name is None and "copy the closest one" in reasons[-1]


def test_machine_facts_read_here():
    f = machine_facts()
    assert f.ram_bytes > 0 and f.arch
    name, reasons = detect_board(facts=MachineFacts(arch="riscv64", ram_bytes=2 << 30))
    assert name is None
