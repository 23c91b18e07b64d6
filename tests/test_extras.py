"""Each framework integration is an optional extra: ``import memlane`` pulls in none of
the frameworks, and importing an integration without its framework raises
MissingExtraError naming the extra to install. Real subprocesses, with the framework's
packages blocked on the import path as if they were not installed."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ("agno", "langchain", "langchain_core", "langgraph", "agents")

# (integration module, the framework's top-level packages, the extra that installs them)
INTEGRATIONS = [
    ("agno", ("agno",), "agno"),
    ("langchain", ("langchain_core", "langchain"), "langchain"),
    ("langgraph", ("langgraph",), "langgraph"),
    ("openai_agents", ("agents",), "openai-agents"),
]

SCRIPT = """
import sys
import memlane, memlane.integrations
loaded = [m for m in sys.modules if m.split('.')[0] in {frameworks!r}]
assert not loaded, f'import memlane pulled in {{loaded}}'
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked')
sys.meta_path.insert(0, Block())
try:
    import memlane.integrations.{module}
except ImportError as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize(("module", "blocked", "extra"), INTEGRATIONS)
def test_memlane_imports_no_framework_and_a_missing_one_names_its_extra(
    module: str, blocked: tuple[str, ...], extra: str
) -> None:
    code = SCRIPT.format(frameworks=FRAMEWORKS, blocked=blocked, module=module)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("MissingExtraError"), out.stdout
    assert f"pip install 'memlane[{extra}]'" in out.stdout
