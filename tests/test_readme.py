"""The README's Python examples run as written."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_opens_with_the_two_commands():
    lines = [l.strip() for l in (ROOT / "README.md").read_text().splitlines() if l.strip()]
    assert lines[0].startswith("#")
    assert lines[1].startswith("make sweep") and lines[2].startswith("make test")


def test_readme_python_examples_run(tmp_path):
    blocks = _python_blocks()
    assert len(blocks) >= 2, "README lost its quick-start examples"
    outputs = []
    for index, block in enumerate(blocks):
        script = tmp_path / f"block_{index}.py"
        script.write_text("import torch\ntorch.set_num_threads(1)\n" + block)
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"README block {index} failed:\n{block}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
    # The regression example prints its R^2; the README promises > 0.95.
    assert float(outputs[0].strip().splitlines()[-1]) > 0.95
    assert (tmp_path / "damped_sine" / "metadata.json").is_file()
