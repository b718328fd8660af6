"""The device side (open, plan, sample, decode, write) runs with torch unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_load_and_generate_without_torch(tiny_bundle, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, Block())
        import edge_sdk
        gen = edge_sdk.load({str(tiny_bundle)!r})
        res = gen.generate(steps=3, seed=1)
        res.save({str(tmp_path / 'nt.png')!r})
        assert "torch" not in sys.modules
        print("shape", res.images.shape, "mods", sorted(m for m in sys.modules if m.startswith("edge_sdk.converters")))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "shape (1, 32, 32, 3) mods []" in r.stdout
    assert (tmp_path / "nt.png").stat().st_size > 100
