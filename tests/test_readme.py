"""The README's Python examples run as written (with the real local model)."""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = _python_blocks()[index]
    if "class TestMyStore" in code:
        code += "\nassert issubclass(TestMyStore, StoreConformance)\n"
        code = "MyStore = None\n" + code
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    if "await " in code:
        imports = "\n".join(line for line in code.splitlines() if line.startswith("from "))
        body = "\n".join(line for line in code.splitlines() if not line.startswith("from "))
        code = f"{imports}\nasync def _main():\n{textwrap.indent(body, '    ')}\n"
        exec(compile(code, f"README block {index}", "exec"), namespace)
        asyncio.run(namespace["_main"]())  # type: ignore[operator]
    else:
        exec(compile(code, f"README block {index}", "exec"), namespace)
