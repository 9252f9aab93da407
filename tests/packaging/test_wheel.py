"""The wheel a user installs: its dependency ranges, its py.typed markers, its documents.

The wheel is built once from this checkout with pip (no build isolation, so nothing is
downloaded) into a temporary directory; the checkout must not gain ``build/`` or ``*.egg-info``.
Resolution is checked on the metadata: every ``Requires-Dist`` of an extra is evaluated with
``packaging`` against hypothetical installed versions (a torch other than 2.13.0, Keras with no
TensorFlow), which is what pip's resolver does with them, without an index.
"""

from __future__ import annotations

import email.parser
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

packaging_requirements = pytest.importorskip("packaging.requirements")
Requirement = packaging_requirements.Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("padam_core", "padam_torch", "padam_jax", "padam_keras", "padam_compare")
DOC_PREFIX = "padam-0.1.0.data/data/share/doc/padam/"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    outputs_before = {name: (ROOT / name).exists() for name in ("build", "padam.egg-info")}
    directory = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(directory), str(ROOT)],
        check=True, timeout=300,
    )
    for name, existed in outputs_before.items():
        assert existed or not (ROOT / name).exists(), f"building the wheel wrote {name}/"
    (path,) = directory.glob("padam-*.whl")
    return zipfile.ZipFile(path)


def _requirements(wheel: zipfile.ZipFile) -> list[Requirement]:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = email.parser.Parser().parsestr(wheel.read(name).decode())
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def _closure(requirements: list[Requirement], extras: set[str]) -> dict[str, Requirement]:
    """What ``pip install padam[extras]`` asks for: name -> requirement, self-extras expanded."""
    wanted: dict[str, Requirement] = {}
    pending, seen = set(extras), set()
    while pending:
        extra = pending.pop()
        seen.add(extra)
        for requirement in requirements:
            marker = requirement.marker
            if marker is None and extra != "":
                continue
            if marker is not None and not marker.evaluate({"extra": extra}):
                continue
            if requirement.name == "padam":
                pending |= set(requirement.extras) - seen
            else:
                wanted[requirement.name.lower().replace("_", "-")] = requirement
    return wanted


def _satisfied(wanted: dict[str, Requirement], installed: dict[str, str]) -> list[str]:
    """The requirements the hypothetical environment ``installed`` does not meet."""
    unmet = []
    for name, requirement in wanted.items():
        version = installed.get(name)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{requirement} (have {version})")
    return unmet


BASE = {"numpy": "2.4.6", "array-api-compat": "1.16.0"}


@pytest.mark.parametrize("torch_version", ["2.8.0", "2.12.1", "2.14.1", "2.15.0", "2.13.0+cu128"])
def test_torch_extra_resolves_beside_other_torch_versions(wheel, torch_version):
    wanted = _closure(_requirements(wheel), {"", "torch"})
    assert _satisfied(wanted, {**BASE, "torch": torch_version}) == []


def test_keras_extra_needs_no_tensorflow(wheel):
    requirements = _requirements(wheel)
    wanted = _closure(requirements, {"", "keras"})
    assert not {"tensorflow", "tensorflow-cpu"} & set(wanted)
    assert _satisfied(wanted, {**BASE, "keras": "3.15.1", "h5py": "3.15.0"}) == []
    # Each backend is its own extra.
    assert "jax" in _closure(requirements, {"keras-jax"})
    assert "torch" in _closure(requirements, {"keras-torch"})
    assert "tensorflow" in _closure(requirements, {"keras-tensorflow"})


def test_compare_extra_brings_no_jax_and_compare_jax_brings_flax(wheel):
    """`padam compare` for torch users pulls no JAX stack; --framework jax's extra has all of it."""
    requirements = _requirements(wheel)
    jax_stack = {"jax", "jaxlib", "optax", "flax", "orbax-checkpoint"}
    assert not jax_stack & set(_closure(requirements, {"", "compare"}))
    assert not jax_stack & set(_closure(requirements, {"", "torch", "compare"}))
    assert {"jax", "optax", "flax", "tomli-w"} <= set(_closure(requirements, {"", "compare-jax"}))
    # `all` still covers every extra but the pipelines' and the tools' (setup.sh adds those).
    everything = set(_closure(requirements, {"all"}))
    for extra in ("torch", "jax", "keras", "fast", "safetensors", "compare", "compare-jax"):
        assert set(_closure(requirements, {extra})) <= everything, extra


def test_no_extra_pins_an_exact_version(wheel):
    pinned = [str(r) for r in _requirements(wheel) if any(s.operator == "==" for s in r.specifier)]
    assert pinned == []


def test_every_package_ships_py_typed(wheel):
    names = set(wheel.namelist())
    assert {f"{package}/py.typed" for package in PACKAGES} <= names


# A document reference: a path ending in .md or .png (not inside a URL).
_REFERENCE = re.compile(r"(?<![\w/.:-])([\w./-]*\w\.(?:md|png))\b")
# Files padam compare writes (padam_compare.report.OUTPUT_FILES), not documents it ships.
_OUTPUT_NAMES = {"summary.md", "curves.png"}


def test_no_shipped_file_references_a_document_it_does_not_ship(wheel):
    names = wheel.namelist()
    shipped_docs = {n[len(DOC_PREFIX):] for n in names if n.startswith(DOC_PREFIX)}
    assert {"README.md", "docs/numerics.md"} <= shipped_docs
    missing = []
    for name in names:
        if not name.endswith((".py", ".md", "METADATA")):
            continue
        text = wheel.read(name).decode()
        # Code and README name documents from the project root; a document from its own folder.
        base = Path(name[len(DOC_PREFIX):]).parent if name.startswith(DOC_PREFIX) else Path()
        for match in _REFERENCE.finditer(text):
            reference = match.group(1)
            if Path(reference).name in _OUTPUT_NAMES or reference.startswith("/"):
                continue
            candidates = {(base / reference).as_posix(), Path(reference).as_posix()}
            if not candidates & shipped_docs:
                missing.append(f"{name}: {reference}")
        if re.search(r"\bSPEC\b", text):
            missing.append(f"{name}: SPEC")
    assert missing == [], "\n".join(missing)
