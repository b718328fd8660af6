"""The counts table of docs/hardening.md, computed from the hardening tests themselves.

Every collected test item of ``tests/hardening`` is one of:

- a **bad-input case**: it builds one hostile input and asserts edge-sdk's typed error (exit code,
  message, no traceback, no signal, a time limit where a hang is possible);
- a **fuzz test**: it generates many cases itself (``FUZZ`` says how many, read from the test's own
  source so the number cannot drift);
- a **control**: a good input that must still work, or a check of the harness itself (``CONTROLS``).

A crash, hang, silent acceptance or escape makes its case fail, so with the suite green those four
columns are 0; the table says how many cases stand behind that 0.

``python tests/hardening/counts.py`` prints the table from a ``pytest --collect-only`` run;
``--write`` puts it into docs/hardening.md. ``test_counts.py`` fails when the docs fall behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DOC = REPO / "docs" / "hardening.md"
BEGIN, END = "<!-- counts:begin (tests/hardening/counts.py --write) -->", "<!-- counts:end -->"

# Which attack class of issue 14 each file covers ("r1": round one, issue 10).
FILE_CLASSES = {
    "test_bad_inputs.py": "r1", "test_tamper.py": "r1", "test_fuzz_manifest.py": "r1, 5, 7",
    "test_model_fuzz.py": "r1", "test_interruption.py": "r1", "test_supervise.py": "r1, 7",
    "test_checkpoints.py": "r1", "test_fp16_fallback.py": "r1",
    "test_destructive.py": "1, 5, 6", "test_names.py": "2", "test_verify_then_use.py": "3, 4",
    "test_files_and_schemas.py": "5, 6, 7", "test_config_values.py": "6, 7", "test_governor.py": "7",
    "test_endless_graphs.py": "6, 7", "test_images.py": "7, 8", "test_prompts.py": "8", "test_signals.py": "9",
    "test_stream_manifest.py": "2, 6", "test_counts.py": "-",
}
# Good inputs that must still work, static guards and checks of the harness: not bad inputs.
CONTROLS = {
    "test_table_is_big_enough", "test_plain_and_wrapped_state_dicts_load_exactly",
    "test_valid_safetensors_header_passes_the_check", "test_every_torch_load_in_the_sdk_is_weights_only",
    "test_converters_load_weights_uses_the_safe_loader", "test_convert_overwrite_still_replaces_a_bundle",
    "test_valid_profile_still_loads", "test_complete_images_still_decode", "test_normal_run_passes",
    "test_governor_arithmetic", "test_valid_prompts_pass", "test_isolated_generate_matches_in_process",
    "test_result_comes_back", "test_cli_run_isolate_writes_the_same_image", "test_unswapped_runs_and_matches",
    "test_every_kill_point_is_still_in_the_code", "test_the_harness_counts_a_native_crash",
    "test_the_fp16_decoder_really_overflows", "test_docs_counts_are_current",
    "test_a_consistent_stream_section_loads", "test_the_model_walk_maps_no_weights",
}


def _source(name: str) -> str:
    return (HERE / name).read_text()


def _int(pattern: str, name: str) -> int:
    m = re.search(pattern, _source(name), re.MULTILINE)
    if not m:
        raise LookupError(f"counts.py: {pattern!r} not found in {name}; update FUZZ")
    return int(m.group(1))


# Cases each fuzz test generates per collected item (CI settings).
FUZZ = {
    "test_every_mutation_is_detected_before_any_runtime": lambda: _int(r"^MUTATIONS = (\d+)", "test_tamper.py"),
    **{fn: (lambda: _int(r'"edge-hardening-ci", max_examples=(\d+)', "test_fuzz_manifest.py"))
       for fn in ("test_load_takes_any_bytes", "test_mutated_manifests_never_escape_or_crash",
                  "test_onnx_preparser_takes_any_mutation", "test_validate_takes_any_json_value")},
    "test_onnx_mutants_never_crash_onnxruntime": lambda: _int(r'"onnxruntime", tmp_path, cases=(\d+)',
                                                              "test_model_fuzz.py"),
    "test_mutants_never_crash_a_runtime": lambda: _int(r"entry, runtime, tmp_path, cases=(\d+)", "test_model_fuzz.py"),
    "test_writer_killed_after_random_delays": lambda: _int(r"for _ in range\((\d+)\):\n\s+p = _writer",
                                                           "test_interruption.py"),
}

HEADER = ("| File | Classes | Bad-input cases | Fuzz cases | Controls | Crashes | Hangs | Silent acceptances "
          "| Escapes |\n|---|---|---|---|---|---|---|---|---|")


def tally(nodeids: list[str]) -> dict[str, dict[str, int]]:
    rows: dict[str, dict[str, int]] = defaultdict(lambda: {"bad": 0, "fuzz": 0, "controls": 0})
    for nid in nodeids:
        path, _, rest = nid.partition("::")
        fn = rest.split("[")[0]
        row = rows[Path(path).name]
        if fn in CONTROLS:
            row["controls"] += 1
        elif fn in FUZZ:
            row["fuzz"] += FUZZ[fn]()
        else:
            row["bad"] += 1
    return dict(rows)


def table(nodeids: list[str]) -> str:
    rows = tally(nodeids)
    unknown = sorted(set(rows) - set(FILE_CLASSES))
    if unknown:
        raise LookupError(f"counts.py: add {', '.join(unknown)} to FILE_CLASSES")
    lines = [HEADER]
    for name in sorted(rows):
        r = rows[name]
        lines.append(f"| `{name}` | {FILE_CLASSES[name]} | {r['bad']} | {r['fuzz']:,} | {r['controls']} "
                     "| 0 | 0 | 0 | 0 |")
    tot = {k: sum(r[k] for r in rows.values()) for k in ("bad", "fuzz", "controls")}
    lines.append(f"| **total** ({len(nodeids)} test items) | | **{tot['bad']}** | **{tot['fuzz']:,}** | "
                 f"{tot['controls']} | **0** | **0** | **0** | **0** |")
    return "\n".join(lines)


def doc_table() -> str:
    text = DOC.read_text()
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()


def collect() -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", str(HERE), "--collect-only", "-q", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, cwd=REPO, check=True)
    return [ln for ln in proc.stdout.splitlines() if "::" in ln]


def main(argv: list[str]) -> int:
    t = table(collect())
    if "--write" in argv:
        text = DOC.read_text()
        text = text[:text.index(BEGIN) + len(BEGIN)] + "\n" + t + "\n" + text[text.index(END):]
        DOC.write_text(text)
    print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
