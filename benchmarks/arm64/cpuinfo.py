"""The /proc/cpuinfo scripts/arm64-check shows its emulated userland (qemu-user 7.2 shows the host's).

An ARM kernel's format for the emulated core, one entry per host CPU: a Raspberry Pi 5's
Cortex-A76 for arm64; for armhf a Cortex-A53 in AArch32 mode, as a Pi Zero 2 W or Pi 3 running
32-bit Raspberry Pi OS reports it. Without it ONNX Runtime's CPU detection (pytorch/cpuinfo) finds
no ARM core and `import onnxruntime` dies with SIGSEGV.

    python cpuinfo.py arm64|armhf NCPUS
"""

from __future__ import annotations

import sys

ENTRIES = {
    "arm64": ("BogoMIPS\t: 108.00\n"
              "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
              "dcpop asimddp\n"
              "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\n"
              "CPU revision\t: 1\n"),
    "armhf": ("model name\t: ARMv7 Processor rev 4 (v7l)\nBogoMIPS\t: 38.40\n"
              "Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\n"
              "CPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xd03\n"
              "CPU revision\t: 4\n"),
}


def cpuinfo(arch: str, ncpus: int) -> str:
    return "".join(f"processor\t: {i}\n{ENTRIES[arch]}\n" for i in range(ncpus))


if __name__ == "__main__":
    sys.stdout.write(cpuinfo(sys.argv[1], int(sys.argv[2])))
