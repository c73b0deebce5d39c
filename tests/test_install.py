"""A plain `pip install .` (no extras): the command line still starts, and a command that needs an
extra says which one. The extras' modules are hidden from a fresh interpreter by an import hook,
which is what an environment without them looks like to `presenter`."""
from __future__ import annotations

import subprocess
import sys

import pytest

from presenter.cli import EXTRAS

WITHOUT_EXTRAS = """
import importlib.abc, sys
HIDDEN = set(sys.argv[1].split(","))

class HideExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, HideExtras())
from presenter.cli import main
code = main(sys.argv[2:])
leaked = sorted(m for m in HIDDEN if m in sys.modules)
assert not leaked, f"imported anyway: {leaked}"
sys.exit(code)
"""


def presenter_without_extras(*args: str) -> subprocess.CompletedProcess:
    """`presenter ARGS` in a fresh interpreter that cannot import any extra's module."""
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, ",".join(EXTRAS), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [("--help",), ("live", "--help"), ("bench", "--help"), ("train", "--help"),
                                  ("data", "--help"), ("export", "--help"), ("lipsync", "--help"),
                                  ("avatar", "finetune", "--help"), ("bench", "networks", "--help")])
def test_help_works_without_extras(args: tuple[str, ...]) -> None:
    """`presenter --help` and each command's help need nothing beyond the base install."""
    r = presenter_without_extras(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage: presenter" in r.stdout


def test_command_needing_an_extra_names_it() -> None:
    """`presenter live` without the serve extra exits with code 2 and says what to install."""
    r = presenter_without_extras("live")
    extra = "serve"
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert f"pip install 'presenter[{extra}]'" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_extras_map_matches_pyproject() -> None:
    """presenter.cli.EXTRAS says, for each optional module, exactly the extras of pyproject.toml
    that install it (so the error message names one that helps)."""
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    import_names = {"webrtcvad-wheels": "webrtcvad", "prometheus-client": "prometheus_client",
                    "dlib-bin": "dlib", "pytorch-msssim": "pytorch_msssim"}
    found: dict[str, set[str]] = {}
    for extra, reqs in meta["optional-dependencies"].items():
        for req in reqs:
            dist = req.split("=")[0].split(">")[0].split("<")[0].strip()
            found.setdefault(import_names.get(dist, dist), set()).add(extra)
    for module, extras in EXTRAS.items():
        if module != "aioice":                              # comes with aiortc
            assert set(extras) == found.get(module), (module, extras, found.get(module))
    for module, extras in found.items():
        if extras & {"serve", "train"}:
            assert module in EXTRAS, f"{module} ({extras}) is not in presenter.cli.EXTRAS"
