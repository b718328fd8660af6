"""Board detection from recorded device-tree and /proc contents of real boards (edge_sdk.planning.board_detect).

Every string below was published by someone reading it off the board; sources:
[pi5]    sergev/vak-opensource sysinfo/Raspberry-Pi-5-Model-B/cpuinfo.txt (Pi 5, 64-bit OS, Revision c04170)
[pi4-64] fastfetch-cli/fastfetch issue #1529 (Pi 4 Model B Rev 1.5, 64-bit OS, Revision d03115)
[pi4-32] hrw/arm-socs-table issue #31 (Pi 4 Model B Rev 1.2, 32-bit Raspberry Pi OS, Revision c03112)
[zero2]  gpiozero/gpiozero issue #1091 (Zero 2 W Rev 1.0, 32-bit OS, Revision 902120);
         MemTotal 426068 kB: raspberrypi/picamera2 issue #1358 (Zero 2 W)
[orin-nano] rbonghi/jetson_stats issue #400 (Orin Nano devkit, L4T 35.3.1: nv_tegra_release, model, compatible)
[agx-orin]  NVIDIA/jetson-gpio issue #125 (AGX Orin 64GB devkit compatible); model and release file:
            rbonghi/jetson_stats issue #864 ("NVIDIA Jetson AGX Orin Developer Kit")
[nano]   rbonghi/jetson_stats issue #48 (Jetson Nano, JP 4.3: model "NVIDIA Jetson Nano Developer Kit",
         BOARD: t210ref) and issue #586 (module p3448-0002)
[rock5b] hrw/arm-socs-table issue #18 (Radxa Rock 5B cpuinfo: 4x A55 0xd05, 4x A76 0xd0b); model and
         compatible from Linux arch/arm64/boot/dts/rockchip/rk3588-rock-5b.dts
[opi5]   armbian/build PR #4582 boot log ("Machine model: Orange Pi 5"); compatible from Linux
         rk3588s-orangepi-5.dts ("xunlong,orangepi-5", "rockchip,rk3588s")
Module part numbers -> modules: rbonghi/jetson_stats jtop/core/jetson_variables.py. Pi revision-code
memory bits: raspberrypi/documentation revision-codes.adoc.
Where no MemTotal was published for a board the fixture has none: detection must then rely on the
revision code / module part number, which is what these boards publish exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_sdk.errors import PlanError
from edge_sdk.planning.board_detect import MachineFacts, detect_board, machine_facts, pi_ram_mb

A76 = ("Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
       "asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\n")
PI5_CPUINFO = "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\n{A76}CPU variant\t: 0x4\nCPU part\t: 0xd0b\n"
                      "CPU revision\t: 1\n\n" for i in range(4)) + (
    "Hardware\t: BCM2835\nRevision\t: c04170\nSerial\t\t: 339e7785ac4ed3d6\n"
    "Model\t\t: Raspberry Pi 5 Model B Rev 1.0\n")
PI4_64_CPUINFO = "".join(
    f"processor       : {i}\nBogoMIPS        : 108.00\nFeatures        : fp asimd evtstrm crc32 cpuid\n"
    "CPU implementer : 0x41\nCPU architecture: 8\nCPU variant     : 0x0\nCPU part        : 0xd08\n"
    "CPU revision    : 3\n\n" for i in range(4)) + (
    "Revision        : d03115\nSerial          : 100000000fe69593\nModel           : Raspberry Pi 4 Model B Rev 1.5\n")
V7 = ("Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32 \n"
      "CPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\n")
PI4_32_CPUINFO = "".join(f"processor\t: {i}\nmodel name\t: ARMv7 Processor rev 3 (v7l)\nBogoMIPS\t: 108.00\n{V7}"
                         "CPU part\t: 0xd08\nCPU revision\t: 3\n\n" for i in range(4)) + (
    "Hardware\t: BCM2711\nRevision\t: c03112\nSerial\t\t: 1000000046a57\nModel\t\t: Raspberry Pi 4 Model B Rev 1.2\n")
ZERO2_CPUINFO = "".join(f"processor       : {i}\nmodel name      : ARMv7 Processor rev 4 (v7l)\n"
                        "BogoMIPS        : 38.40\n"
                        f"{V7}CPU part        : 0xd03\nCPU revision    : 4\n\n" for i in range(4)) + (
    "Hardware        : BCM2835\nRevision        : 902120\nSerial          : 000000008f249728\n"
    "Model           : Raspberry Pi Zero 2 W Rev 1.0\n")
ROCK5B_CPUINFO = "".join(f"processor       : {i}\nBogoMIPS        : 48.00\n{A76}CPU variant     : "
                         f"{'0x2' if i < 4 else '0x4'}\nCPU part        : {'0xd05' if i < 4 else '0xd0b'}\n"
                         "CPU revision    : 0\n\n" for i in range(8))

BOARDS = {
    "pi5": dict(cpuinfo=PI5_CPUINFO, model="Raspberry Pi 5 Model B Rev 1.0"),
    "pi4-64": dict(cpuinfo=PI4_64_CPUINFO, model="Raspberry Pi 4 Model B Rev 1.5"),
    "pi4-32": dict(cpuinfo=PI4_32_CPUINFO, model="Raspberry Pi 4 Model B Rev 1.2"),
    # No device-tree file here: the cpuinfo Model line alone must do (old kernels, containers).
    "zero2": dict(cpuinfo=ZERO2_CPUINFO, meminfo_kb=426068),
    "orin-nano": dict(model="NVIDIA Orin Nano Developer Kit",
                      compatible=["nvidia,p3768-0000+p3767-0003", "nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0003",
                                  "nvidia,p3767-0005", "nvidia,tegra234", "nvidia,tegra23x"],
                      tegra="# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64, "
                            "DATE: Sun Mar 19 15:19:21 UTC 2023"),
    "agx-orin": dict(model="NVIDIA Jetson AGX Orin Developer Kit",
                     compatible=["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234",
                                 "nvidia,tegra23x"],
                     tegra="# R36 (release), REVISION: 4.3, BOARD: generic, EABI: aarch64"),
    "nano": dict(model="NVIDIA Jetson Nano Developer Kit", compatible=["nvidia,p3449-0000-b00+p3448-0002",
                                                                      "nvidia,jetson-nano", "nvidia,tegra210"],
                 tegra="# R32 (release), REVISION: 3.1, BOARD: t210ref, EABI: aarch64"),
    "rock5b": dict(cpuinfo=ROCK5B_CPUINFO, model="Radxa ROCK 5 Model B",
                   compatible=["radxa,rock-5b", "rockchip,rk3588"]),
    "opi5": dict(cpuinfo=ROCK5B_CPUINFO, model="Orange Pi 5", compatible=["xunlong,orangepi-5", "rockchip,rk3588s"]),
}


def record(root: Path, *, cpuinfo: str = "", model: str | None = None, compatible=(), tegra: str | None = None,
           meminfo_kb: int | None = None) -> Path:
    """Write a board's files the way its kernel shows them (device-tree strings NUL-terminated)."""
    (root / "proc").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text(cpuinfo)
    if meminfo_kb:
        (root / "proc/meminfo").write_text(f"MemTotal:       {meminfo_kb} kB\nMemFree:          135076 kB\n")
    if model is not None:
        (root / "proc/device-tree").mkdir()
        (root / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
        if compatible:
            (root / "proc/device-tree/compatible").write_bytes(b"".join(c.encode() + b"\x00" for c in compatible))
    if tegra is not None:
        (root / "etc").mkdir()
        (root / "etc/nv_tegra_release").write_text(tegra + "\n")
    return root


@pytest.mark.parametrize("board,profile,arch,ram_mb,ram_source", [
    ("pi5", "rpi5-4gb", "aarch64", 4096, "Raspberry Pi revision code"),  # c04170: memory bits 4 = 4 GB
    ("pi4-64", "rpi4-4gb", "aarch64", 8192, "Raspberry Pi revision code"),  # d03115: 8 GB (only a 4 GB Pi 4 profile)
    ("pi4-32", "rpi4-4gb", "armv7l", 4096, "Raspberry Pi revision code"),
    ("zero2", "rpi-zero-2w", "armv7l", 512, "Raspberry Pi revision code"),  # MemTotal says 416 MB
    ("orin-nano", "jetson-orin-nano-8gb", "", 8192, "Jetson module"),
    ("agx-orin", "jetson-agx-orin-64gb", "", 65536, "Jetson module"),
    ("nano", "jetson-nano-4gb", "", 4096, "Jetson module"),
    ("rock5b", "rk3588", "aarch64", 0, ""),
    ("opi5", "rk3588", "aarch64", 0, ""),
])
def test_real_board_strings_pick_their_profile(tmp_path, board, profile, arch, ram_mb, ram_source):
    root = record(tmp_path / board, **BOARDS[board])
    facts = machine_facts(root)
    assert facts.arch == arch
    assert facts.ram_bytes == ram_mb * 1024 * 1024
    assert facts.ram_source == ram_source
    name, reasons = detect_board(root)
    assert name == profile, reasons
    assert reasons[-1 if arch != "armv7l" else -2].startswith(f"{profile} fits")


def test_cpu_cores_and_32_bit_userland_are_reported(tmp_path):
    f = machine_facts(record(tmp_path / "r", **BOARDS["rock5b"]))
    assert f.cpu_cores == ["Cortex-A55", "Cortex-A76"]
    assert {"asimddp", "asimdhp"} <= f.cpu_flags
    name, reasons = detect_board(record(tmp_path / "z", **BOARDS["zero2"]))
    assert name == "rpi-zero-2w"
    assert "32-bit ARM userland" in reasons[-1]
    assert "RAM: 512 MB (Raspberry Pi revision code)" in reasons


def test_a_jetson_module_without_a_profile_is_not_guessed(tmp_path):
    # An Orin NX 8GB (p3767-0001) must not be planned as the 16 GB one: twice the memory it has.
    kw = dict(BOARDS["orin-nano"], compatible=["nvidia,p3768-0000+p3767-0001", "nvidia,p3767-0001", "nvidia,tegra234"],
              model="NVIDIA Orin NX Developer Kit")
    name, reasons = detect_board(record(tmp_path / "nx8", **kw))
    assert name is None
    assert "Jetson Orin NX 8GB has no built-in profile" in reasons[-1]


@pytest.mark.parametrize("revision,mb", [("c04170", 4096), ("d03115", 8192), ("c03112", 4096), ("902120", 512),
                                         ("2902120", 512), ("a02082", 1024), ("e04171", 16384),
                                         ("000f", None), ("zz", None)])
def test_pi_revision_code_memory_bits(revision, mb):
    assert pi_ram_mb(revision) == mb


def test_detection_root_from_the_environment(tmp_path, monkeypatch):
    root = record(tmp_path / "z", **BOARDS["zero2"])
    monkeypatch.setenv("EDGE_SDK_DETECT_ROOT", str(root))
    assert detect_board()[0] == "rpi-zero-2w"
    from edge_sdk.measure.doctor import report

    r = report()
    assert r["board"]["name"] == "rpi-zero-2w" and r["board"]["arch"] == "armv7l"
    assert any("no onnxruntime or ai-edge-litert wheel" in n and "tflite-runtime 2.14" in n for n in r["arch_notes"])


def test_planner_auto_board_uses_detection(tmp_path, monkeypatch, tiny_bundle):
    from edge_sdk.bundle import Bundle
    from edge_sdk.planning.planner import PlanRequest, plan

    monkeypatch.setenv("EDGE_SDK_DETECT_ROOT", str(record(tmp_path / "p5", **BOARDS["pi5"])))
    assert plan(Bundle.open(tiny_bundle), "auto", PlanRequest(measure=False)).board == "rpi5-4gb"
    monkeypatch.setenv("EDGE_SDK_DETECT_ROOT", str(record(tmp_path / "unknown", model="Pine64 RockPro64",
                                                          cpuinfo=PI4_64_CPUINFO.split("Revision")[0])))
    with pytest.raises(PlanError, match="no built-in board profile matches"):
        plan(Bundle.open(tiny_bundle), "auto", PlanRequest(measure=False))


@pytest.mark.slow  # three CLI subprocesses: 5.2-7 s
def test_doctor_and_plan_cli_on_a_recorded_board(cli, tmp_path, tiny_bundle):
    env = {"EDGE_SDK_DETECT_ROOT": str(record(tmp_path / "z", **BOARDS["zero2"]))}
    r = cli("doctor", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["board"]["name"] == "rpi-zero-2w"
    r = cli("doctor", env=env)
    assert "note: 32-bit ARM (armv7l)" in r.stdout
    r = cli("plan", str(tiny_bundle), "--no-measure", "--json", env=env)  # --board defaults to auto
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["board"] == "rpi-zero-2w"


def test_facts_read_here_are_consistent():
    f = machine_facts("/")
    assert f.ram_bytes > 0 and f.arch
    assert detect_board(facts=MachineFacts(arch="riscv64", ram_bytes=2 << 30))[0] is None
