"""The documentation (README.md, docs/, examples/) against the code it describes.

The configuration reference lists exactly the schema's fields with its
defaults, so the two cannot drift; example outputs are real runs, which must
not show the paths of the machine they were made on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA: dict[str, Any] = yaml.safe_load((ROOT / "config.schema.yaml").read_text(encoding="utf-8"))
REFERENCE = ROOT / "docs" / "configuration.md"
# A made-up home (/home/you, /home/user, /home/svc) is fine; anything a real machine or test run leaves is not.
MACHINE_PATH = re.compile(r"/root\b|/home/(?!(?:you|user|svc)\b)[a-z_][\w-]*|/tmp/pytest|/tmp/rd|/work/|"
                          r"/Users/|C:\\Users\\(?!you\b)")
DOC_FILES = sorted([ROOT / "README.md", ROOT / "mkdocs.yml", *(ROOT / "docs").rglob("*.md"),
                    *(ROOT / "examples").glob("*.yaml")])


def reference_rows() -> dict[str, tuple[str, str]]:
    """Field → (required, default) from the first table of the configuration reference."""
    rows: dict[str, tuple[str, str]] = {}
    table = REFERENCE.read_text(encoding="utf-8").split("| Field |", 1)[1].split("\n\n", 1)[0]
    for line in table.splitlines()[2:]:
        names, required, default = (cell.strip() for cell in line.split("|")[1:4])
        for name in re.findall(r"`([a-z_]+)`", names):
            rows[name] = (required, default)
    return rows


def test_reference_lists_exactly_the_schema_fields() -> None:
    assert sorted(reference_rows()) == sorted(SCHEMA["properties"])


def test_reference_required_column_is_the_schema_required_list() -> None:
    required = {name for name, (flag, _) in reference_rows().items() if flag == "yes"}
    assert required == set(SCHEMA["required"])


@pytest.mark.parametrize("name", sorted(SCHEMA["properties"]))
def test_reference_default_is_the_schema_default(name: str) -> None:
    """No default in the schema: the column is empty or names what stands in (`hostname`, *(local)*)."""
    default = SCHEMA["properties"][name].get("default")
    shown = reference_rows()[name][1]
    if default is None:
        assert shown in ("", "*(local)*") or shown.strip("`") in SCHEMA["properties"], f"{name}: {shown}"
    else:
        assert shown == f"`{yaml.safe_dump(default).splitlines()[0]}`", name


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_docs_show_no_machine_paths(path: Path) -> None:
    found = [f"{number}: {line.strip()}" for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if MACHINE_PATH.search(line)]
    assert not found, f"{path.relative_to(ROOT)} shows paths of the machine it was made on: {found}"


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = {page for entry in config["nav"] for page in entry.values()}
    assert listed == {path.name for path in (ROOT / "docs").glob("*.md")}


def test_the_version_is_named_once_and_the_changelog_starts_with_it() -> None:
    from importlib.metadata import version

    from remote_http_launcher import __version__

    assert version("remote-http-launcher") == __version__  # pyproject.toml reads _version.py
    project = (ROOT / "pyproject.toml").read_text(encoding="utf-8").split("\n[project]\n", 1)[1].split("\n[", 1)[0]
    assert 'dynamic = ["version"]' in project and not re.search(r"^version\s*=", project, re.MULTILINE)
    first = next(line for line in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
                 if line.startswith("## "))
    assert first.split()[1] == __version__, first


def test_readme_links_point_at_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [target.split("#", 1)[0] for target in re.findall(r"\]\(([^)#][^)]*)\)", readme)
               if "://" not in target]
    assert targets and [target for target in targets if not (ROOT / target).exists()] == []


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda path: path.name)
def test_each_example_passes_dry_run(path: Path, tmp_path: Path) -> None:
    """`--dry-run` connects to nothing: it prints the command a launch would run, with its status file (a
    stock server's, which writes none, with the ports the launch chooses shown as `<port>`)."""
    env = {**os.environ, "REMOTE_HTTP_LAUNCHER_DIR": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, "-m", "remote_http_launcher", str(path), "--dry-run"], env=env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    if "<port>" in line:
        assert "--status-file" not in line
    else:
        assert "--status-file " in line and line.split("--status-file ", 1)[1].split()[0].endswith(".json")
    assert not (tmp_path / "state").exists()  # nothing written


def test_readme_is_a_front_page() -> None:
    """Reference material belongs in docs/: the README stays short enough to read as a front page."""
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 300


def test_the_package_names_its_pages_as_the_docs_site_does() -> None:
    """PyPI's sidebar links (project.urls) are the site's own addresses, the changelog one in the source."""
    section = (ROOT / "pyproject.toml").read_text(encoding="utf-8").split("\n[project.urls]\n", 1)[1].split("\n[", 1)[0]
    urls = dict(re.findall(r'^(\w+) = "([^"]+)"$', section, re.MULTILINE))
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert urls["Documentation"] == site["site_url"] and urls["Source"] == site["repo_url"]
    assert urls["Issues"] == f"{urls['Source']}/issues"
    assert urls["Changelog"].startswith(f"{urls['Source']}/blob/main/") and urls["Changelog"].endswith("/CHANGELOG.md")


def test_the_example_notebook_parses_and_its_config_passes_dry_run(tmp_path: Path) -> None:
    """The notebook is valid nbformat, and the config its setup cell builds (run as the notebook runs it,
    from examples/) is one `--dry-run` accepts; tests/test_notebook.py runs the whole notebook."""
    import nbformat

    notebook = nbformat.read(ROOT / "examples" / "notebook.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    nbformat.validate(notebook)
    [setup] = [cell.source for cell in notebook.cells if cell.cell_type == "code" and "config = {" in cell.source]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    built = subprocess.run([sys.executable, "-c", f"{setup}\nimport json; print(json.dumps(config))"], env=env,
                           cwd=ROOT / "examples", capture_output=True, text=True, timeout=60, check=True)
    config_file = tmp_path / "notebook.yaml"
    config_file.write_text(yaml.safe_dump(json.loads(built.stdout)), encoding="utf-8")
    env["REMOTE_HTTP_LAUNCHER_DIR"] = str(tmp_path / "state")
    result = subprocess.run([sys.executable, "-m", "remote_http_launcher", str(config_file), "--dry-run"], env=env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert "demo_service.py" in line and "--status-file " in line
