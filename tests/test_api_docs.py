"""docs/api.md documents exactly the public names: every name in ``psann.__all__`` has a
``### `name` `` heading with a one-line purpose and a Python example, and no heading names
something that is not public.

Reads ``psann.__all__`` only (names load lazily), so this test imports no torch of its own.
"""

import ast
import re
from pathlib import Path

import psann

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"

_NAME_HEADING = re.compile(r"^### `([^`]+)`$")
_PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", flags=re.S)


def _sections() -> dict[str, list[str]]:
    """Heading name -> the lines up to the next heading (duplicates fail here)."""
    sections: dict[str, list[str]] = {}
    current = None
    in_code = False
    for line in API_DOC.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else _NAME_HEADING.match(line)
        if match:
            current = match.group(1)
            assert current not in sections, f"docs/api.md has two headings for {current!r}"
            sections[current] = []
        elif line.startswith("#") and not in_code:
            current = None  # an area heading ends the name's section
        elif current is not None:
            sections[current].append(line)
    return sections


def test_every_public_name_has_a_heading_in_api_docs():
    missing = sorted(set(psann.__all__) - set(_sections()))
    assert not missing, f"docs/api.md has no '### `name`' heading for public name(s) {missing}"


def test_api_docs_has_no_heading_for_a_name_that_is_not_public():
    stale = sorted(set(_sections()) - set(psann.__all__))
    assert not stale, f"docs/api.md documents {stale}, which psann.__all__ does not export"


def test_each_documented_name_has_a_purpose_line_and_a_python_example():
    for name, lines in _sections().items():
        body = "\n".join(lines)
        prose = body.split("```", 1)[0].strip()
        assert prose, f"docs/api.md: `{name}` has no one-line purpose before its example"
        assert _PYTHON_BLOCK.search(body), f"docs/api.md: `{name}` has no ```python example"


def test_api_docs_examples_parse_and_import_only_public_names():
    public = set(psann.__all__)
    for index, block in enumerate(_PYTHON_BLOCK.findall(API_DOC.read_text())):
        tree = ast.parse(block, filename=f"docs/api.md python block {index}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "psann":
                unknown = sorted(alias.name for alias in node.names if alias.name not in public)
                assert not unknown, f"docs/api.md block {index} imports non-public {unknown} from psann:\n{block}"
