"""Docker files, checked without a Docker engine: base, lock file, install, entrypoint, build context."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _ignored(ignore: Path, rel: str) -> bool:
    """Docker's .dockerignore semantics for the patterns used here (last match wins, ``!`` re-includes)."""
    result = False
    for pat in ignore.read_text().splitlines():
        pat = pat.strip()
        if not pat or pat.startswith("#"):
            continue
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        hit = fnmatch.fnmatch(rel, pat) or rel.startswith(pat + "/") or fnmatch.fnmatch(rel, pat + "/*")
        if pat.startswith("**/"):
            hit = hit or fnmatch.fnmatch(rel.rsplit("/", 1)[-1], pat[3:])
        if hit:
            result = not neg
    return result


@pytest.mark.parametrize("name, gpu", [("Dockerfile", True), ("Dockerfile.cpu", False)])
def test_dockerfile(name: str, gpu: bool) -> None:
    ins = _instructions(DOCKER / name)
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in ins if op == "ARG" and "=" in a}
    base = next(a for op, a in ins if op == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert ("nvidia/cuda" in base and "runtime" in base) if gpu else base.startswith("python:3.11")
    copied = [shlex.split(a)[:-1] for op, a in ins if op == "COPY"]
    sources = [s for group in copied for s in group]
    for src in sources:  # everything COPY names exists in the repository and is in the build context
        assert (ROOT / src).exists(), src
        assert not _ignored(DOCKER / f"{name}.dockerignore", src), src
    assert "constraints.txt" in sources and "sam_mix_monai" in sources
    runs = " ".join(a for op, a in ins if op == "RUN")
    installs = re.findall(r"pip install ([^&]*)", runs)
    package = [i for i in installs if i.split()[-1] == "."]
    assert package and all("-c constraints.txt" in i for i in installs if "torch" in i or i in package)
    if not gpu:  # the CPU pair comes from one index
        assert "download.pytorch.org/whl/cpu" in runs and re.search(r"torch torchvision", runs)
    entry = next(a for op, a in ins if op == "ENTRYPOINT")
    assert json.loads(entry) == ["sam-mix"]
    assert any(op == "CMD" for op, _ in ins)


def test_build_context_excludes_local_state() -> None:
    for name in ("Dockerfile", "Dockerfile.cpu"):
        ignore = DOCKER / f"{name}.dockerignore"
        for rel in (".venv", ".venv/bin/python", "runs/x", "data/x.h5", "bundles/sam_mix_liver_ct/models/model.pt",
                    ".git/HEAD", "sam_mix_monai/__pycache__/x.pyc"):
            assert _ignored(ignore, rel), (name, rel)
        for rel in ("sam_mix_monai/cli/main.py", "constraints.txt", "bundles/sam_mix_liver_ct/configs/train.yaml"):
            assert not _ignored(ignore, rel), (name, rel)


def test_documented_docker_run() -> None:
    text = (DOCKER / "README.md").read_text()
    assert re.search(r"docker run .*--gpus all.* sam-mix:gpu infer /data/in --checkpoint", text.replace("\\\n", " "))
    assert "docker build -f docker/Dockerfile.cpu" in text
    # The entry point really is the package's console script.
    setup = (ROOT / "setup.cfg").read_text()
    assert re.search(r"sam-mix\s*=\s*sam_mix_monai\.cli\.main:main", setup)
