"""`pip install .` (non-editable) gives clean import names and a working `ragtune` command."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_clean_names_and_console_script(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("ragtune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"ragtune"}, tops  # never a top-level `cli` or `integrations`
    assert "ragtune/integrations/__init__.py" in names and "ragtune/py.typed" in names
    static = {f"ragtune/server/static/{p.name}" for p in (ROOT / "ragtune" / "server" / "static").iterdir() if p.suffix in (".html", ".js", ".css")}
    assert len(static) == 3 and static <= set(names), static - set(names)  # the dashboard's page ships in the wheel
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([str(target / "bin" / "ragtune"), "--help"], capture_output=True, text=True, env=env, check=True, cwd=tmp_path)
    assert "refresh" in out.stdout
    code = "import ragtune, ragtune.integrations; print(ragtune.__file__, ragtune.integrations.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=tmp_path)
    assert str(target) in out.stdout.split()[0] and str(target) in out.stdout.split()[1]
