"""The two modular-norm examples run, print the norm table, and (GPT) hit the target."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True,
                         text=True, timeout=120, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_gpt_modules_example():
    text = _run("gpt_modules.py", "--steps", "2")
    assert "Modular norm of GPT" in text and "head.weight" in text and "rms->linf" in text
    m = re.search(r"‖update‖ = ([0-9.]+) \(target ([0-9.]+)\)", text)
    assert m and abs(float(m.group(1)) - float(m.group(2))) < 1e-5


def test_wrap_torch_model_example():
    text = _run("wrap_torch_model.py", "--steps", "2")
    assert "Modular norm of Sequential" in text
    assert re.search(r"0\.weight\s+16×3×3×3\s+conv\s+conv2d", text)
    assert re.search(r"8\.weight\s+4×128\s+head\s+rms->linf", text)
    assert "step   0" in text
