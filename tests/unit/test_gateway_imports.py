"""The SDKs import nothing of the server: no ``ca``, ``ocsp`` or ``hsm`` import anywhere in
``agent/`` or ``gateway/`` (the agent may load ``hsm`` dynamically, for PKCS#11 keys only).
The ``wire`` package below them imports only the standard library, ``cryptography`` and itself:
nothing of the server, of the SDKs, and no asn1crypto."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVER = ("ca", "ocsp", "hsm", "cli", "migrations", "deploy")
ALLOWED_DYNAMIC = {("agent/keys.py", "hsm")}


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.append((node.module, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((str(node.args[0].value), node.lineno))
    return found


@pytest.mark.parametrize("package", ["agent", "gateway"])
def test_sdk_imports_no_server_code(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    bad = []
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        for name, line in _imports(path):
            top = name.split(".")[0]
            if top in SERVER and (rel, top) not in ALLOWED_DYNAMIC:
                bad.append(f"{rel}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_wire_imports_only_stdlib_and_cryptography() -> None:
    files = sorted((REPO / "wire").rglob("*.py"))
    assert files
    bad = []
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        for name, line in _imports(path):
            top = name.split(".")[0]
            if top not in ("wire", "cryptography", "__future__") and top not in (
                sys.stdlib_module_names
            ):
                bad.append(f"{rel}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_wire_loads_with_only_cryptography() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ca', 'ocsp', 'hsm', 'cli', 'agent', 'gateway',\n"
        "                                  'asn1crypto', 'sqlalchemy', 'flask'):\n"
        "            raise ImportError('not allowed below wire: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pkgutil, importlib, wire\n"
        "for m in pkgutil.iter_modules(wire.__path__):\n"
        "    importlib.import_module('wire.' + m.name)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_sdks_load_without_the_server_packages() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ca', 'ocsp', 'hsm', 'cli'):\n"
        "            raise ImportError('server package ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import agent, gateway, gateway.flask_ext, gateway.wsgi\n"
        "assert 'asn1crypto' not in sys.modules, 'the SDKs load asn1crypto'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
