"""README's and docs/'s promises that can be run: the Python API example (docs/python-api.md), the exit
codes table (docs/reliability.md), the test command (README), and every relative link between the pages
resolving to a file and, when it names one, a heading of that file."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def _prose(text: str) -> str:
    """The text outside fenced code blocks (a `# comment` in a bash block is not a heading)."""
    return "".join(part for i, part in enumerate(re.split(r"^```.*$", text, flags=re.M)) if i % 2 == 0)


def _section(page: Path, title: str) -> str:
    """The section headed `title` (at any level) of `page`, up to the next heading of its level or above."""
    text = page.read_text(encoding="utf-8")
    found = re.search(rf"^(#+) {re.escape(title)}\n", text, re.M)
    assert found, f"{page.name} has no heading {title!r}"
    level = len(found.group(1))
    end = re.search(rf"^#{{1,{level}}} ", _blank_code(text[found.end():]), re.M)
    return text[found.start():found.end() + end.start() if end else None]


def _blank_code(text: str) -> str:
    """`text` with its fenced code blocks' lines blanked, offsets kept."""
    out, fence = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fence = not fence
            out.append(line)
        else:
            out.append(" " * (len(line) - 1) + "\n" if fence and line.endswith("\n") else line)
    return "".join(out)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text, flags=re.U).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", _prose(page.read_text(encoding="utf-8")), re.M):
        slug = _anchor(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(page: Path) -> list[str]:
    prose = re.sub(r"`[^`\n]*`", "", _prose(page.read_text(encoding="utf-8")))
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", prose) if not re.match(r"[a-z]+:", t)]


@pytest.mark.slow
def test_python_api_example_runs_as_written(tmp_path):
    pytest.importorskip("tensorflow")
    code = re.search(r"```python\n(.*?)```", _section(DOCS / "python-api.md", "Python API"), re.S).group(1)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("True ") and lines[0].endswith("model_int8.tflite")
    assert lines[1].startswith("int8 ") and lines[2] == "['float32', 'int8'] True"
    assert (tmp_path / "api_out" / "report.json").is_file()


def test_exit_codes_table_matches_the_error_classes():
    from edgenet import errors

    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", _section(DOCS / "reliability.md", "Exit codes"), re.M))
    assert errors.UsageError.exit_code == 2 and "2" in table
    assert errors.MissingDependencyError.exit_code == 3 and "3" in table
    for cls in (errors.ModelError, errors.DataError, errors.ConversionError, errors.TargetError):
        assert cls.exit_code == 1
    assert "1" in table and "70" in table


def test_ci_runs_exactly_the_readme_test_command():
    text = README.read_text(encoding="utf-8")
    command = re.search(r"The test command is `([^`]+)`", text).group(1)
    ci = (README.parent / ".ci" / "run").read_text()
    assert [ln.strip() for ln in ci.splitlines() if "pytest" in ln and not ln.strip().startswith("#")] == [command]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_and_heading(page):
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and (dest.suffix != ".md" or anchor not in _anchors(dest)):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in _links(README) if t.partition("#")[0]}
    assert [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked] == []


def test_the_link_check_catches_a_broken_link(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n\n## The ONNX → TF `step`\n\n```bash\n# not a heading\n```\n"
                                   "[ok](#the-onnx--tf-step) [bad](#not-a-heading) [gone](b.md)\n")
    assert _anchors(tmp_path / "a.md") == {"a-page", "the-onnx--tf-step"}
    assert _links(tmp_path / "a.md") == ["#the-onnx--tf-step", "#not-a-heading", "b.md"]
