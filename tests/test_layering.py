"""proxy/'s imports point down the package order and form no cycles; a planted violation is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.layering import ORDER, import_cycles, import_graph, upward_imports
from tests.helpers.paths import ROOT

SHARED_CHECKER = ROOT.parent / "shared" / "tools" / "layering.py"


def test_imports_point_down_the_package_order() -> None:
    assert upward_imports(ROOT) == []


def test_no_modules_import_each_other_around_a_loop() -> None:
    assert import_cycles(ROOT) == []


def test_every_package_of_the_order_exists_and_the_graph_sees_its_imports() -> None:
    graph = import_graph(ROOT)
    for name in ORDER[1:]:
        assert f"proxy.{name}" in graph, f"proxy/{name}/ is in the order but not on disk"
    # The reader sees the data plane's real dependencies, so an empty result above means something.
    assert "proxy.upstream.attempt" in graph["proxy.dataplane.retry"]


@pytest.fixture
def copy_of_proxy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "proxy", tmp_path / "proxy", ignore=shutil.ignore_patterns("__pycache__", "ui"))
    return tmp_path


def _plant(root: Path, module: str, line: str) -> None:
    path = root / "proxy" / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_a_planted_upward_import_is_reported(copy_of_proxy: Path) -> None:
    _plant(copy_of_proxy, "stats/inference", "def _late() -> None:\n    from proxy.dataplane import forward")
    assert upward_imports(copy_of_proxy) == [
        "proxy.stats.inference imports proxy.dataplane.forward (stats -> dataplane, upward)"
    ]


def test_an_import_only_for_type_checking_is_not_an_edge(copy_of_proxy: Path) -> None:
    _plant(
        copy_of_proxy,
        "stats/inference",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import proxy.admin.api",
    )
    assert upward_imports(copy_of_proxy) == []


def test_a_planted_cycle_is_reported(copy_of_proxy: Path) -> None:
    _plant(copy_of_proxy, "config/units", "from proxy.config import load")
    assert any(
        {"proxy.config.load", "proxy.config.units"} <= set(group) for group in import_cycles(copy_of_proxy)
    )


def test_a_new_folder_outside_the_order_is_reported(copy_of_proxy: Path) -> None:
    (copy_of_proxy / "proxy" / "misc").mkdir()
    (copy_of_proxy / "proxy" / "misc" / "__init__.py").write_text('"""x"""\n', encoding="utf-8")
    assert upward_imports(copy_of_proxy) == ["proxy/misc/ is not in the package order"]


@pytest.mark.skipif(
    not SHARED_CHECKER.exists(), reason="the layout's own checker is not beside this checkout"
)
def test_the_layout_checker_agrees(copy_of_proxy: Path) -> None:
    run = [sys.executable, str(SHARED_CHECKER)]
    clean = subprocess.run([*run, str(ROOT)], capture_output=True, text=True, check=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    _plant(copy_of_proxy, "stats/inference", "from proxy.dataplane import forward")
    planted = subprocess.run([*run, str(copy_of_proxy)], capture_output=True, text=True, check=False)
    assert planted.returncode == 1 and "stats -> dataplane" in planted.stdout
