"""The image's compiled Python modules (apbuild.bytecode), on small trees made here and
compiled by the host's Debian Python, as a build does."""

from __future__ import annotations

import marshal
import subprocess
from pathlib import Path

import pytest
from apbuild import bytecode
from apbuild.errors import ApbuildError
from apbuild.tree import FILE, SYMLINK, Entry, Tree

VERSION = "3.11"
PYTHON = Path(f"/usr/bin/python{VERSION}")
pytestmark = pytest.mark.skipif(not PYTHON.exists(), reason=f"no {PYTHON} (python{VERSION}-minimal)")

SOURCES = {
    "/usr/lib/python3.11/os.py": "SEP = '/'\n",
    "/usr/lib/python3/dist-packages/shop/__init__.py": "",
    "/usr/lib/python3/dist-packages/shop/cart.py": "ITEMS = {'a', 'b', 'c'}\n\ndef total(n):\n    return n * 2\n",
    "/opt/app/venv/lib/python3.11/site-packages/web.py": "import shop.cart\nPORT = 8000\n",
    # Python 2, as some packages still ship in a corner: no pyc, the source stays.
    "/usr/lib/python3/dist-packages/shop/old.py": "print 'hello'\n",
    # Not where Python imports from: a script, a template.
    "/usr/share/app/hook.py": "X = 1\n",
}


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "scratch").mkdir()
    return tmp_path / "scratch"


def tree_of(sources: dict[str, str]) -> Tree:
    tree = Tree()
    for path, text in sources.items():
        tree.add(path, Entry(FILE, 0o644, data=text.encode()))
    # Debian's: read at every start of Python, a link to /etc; and a link to nothing.
    tree.add("/etc/python3.11/sitecustomize.py", Entry(FILE, 0o644, data=b"import os\n"))
    tree.add("/usr/lib/python3.11/sitecustomize.py", Entry(SYMLINK, 0o777, target="/etc/python3.11/sitecustomize.py"))
    tree.add("/usr/lib/python3.11/gone.py", Entry(SYMLINK, 0o777, target="/nowhere/gone.py"))
    return tree


def pycs(tree: Tree) -> dict[str, bytes]:
    return {p: e.read() for p, e in tree if p.endswith(".pyc")}


def test_each_module_in_an_import_path_gets_a_checked_hash_pyc_naming_its_device_path(scratch):
    tree = tree_of(SOURCES)
    assert bytecode.compile_tree(tree, "boards/x.toml", scratch) == 5   # old.py does not compile
    made = pycs(tree)
    assert sorted(made) == [
        "/opt/app/venv/lib/python3.11/site-packages/__pycache__/web.cpython-311.pyc",
        "/usr/lib/python3.11/__pycache__/os.cpython-311.pyc",
        "/usr/lib/python3.11/__pycache__/sitecustomize.cpython-311.pyc",
        "/usr/lib/python3/dist-packages/shop/__pycache__/__init__.cpython-311.pyc",
        "/usr/lib/python3/dist-packages/shop/__pycache__/cart.cpython-311.pyc",
    ]
    cart = made["/usr/lib/python3/dist-packages/shop/__pycache__/cart.cpython-311.pyc"]
    # PEP 552's flags: 0b11 is a hash-based pyc whose source hash Python checks.
    assert int.from_bytes(cart[4:8], "little") == 0b11
    code = marshal.loads(cart[16:])
    assert code.co_filename == "/usr/lib/python3/dist-packages/shop/cart.py"
    assert tree.get("/usr/lib/python3/dist-packages/shop/__pycache__").kind == "dir"


def test_the_same_sources_give_the_same_bytes(tmp_path):
    first, second = tree_of(SOURCES), tree_of(dict(reversed(SOURCES.items())))
    bytecode.compile_tree(first, "a", tmp_path / "a")
    bytecode.compile_tree(second, "b", tmp_path / "b")
    assert pycs(first) == pycs(second)


def test_python_imports_the_pyc_and_compiles_an_edited_source_again(tmp_path, scratch):
    tree = tree_of(SOURCES)
    bytecode.compile_tree(tree, "x", scratch)
    tree.write_dir(tmp_path / "root")
    site = tmp_path / "root" / "usr/lib/python3/dist-packages"
    env = {"PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}

    def loaded_from() -> str:
        out = subprocess.run([PYTHON, "-v", "-c", "import shop.cart"], env=env, capture_output=True,
                             text=True, check=True).stderr
        return next((line for line in out.splitlines() if "shop/" in line and "cart" in line
                     and "code object from" in line), "")

    assert "cart.cpython-311.pyc" in loaded_from()
    # An admin's edit on the device: the hash no longer matches, Python reads the source.
    (site / "shop/cart.py").write_text("ITEMS = set()\n")
    out = subprocess.run([PYTHON, "-c", "import shop.cart; print(shop.cart.ITEMS)"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "set()"


def test_an_image_without_python_gets_nothing(scratch):
    tree = tree_of({"/usr/share/app/hook.py": "X = 1\n", "/usr/bin/tool": "#!/bin/sh\n"})
    assert bytecode.compile_tree(tree, "x", scratch) == 0
    assert not pycs(tree)


def test_an_image_python_the_host_lacks_is_an_error_naming_the_board_and_the_package(scratch):
    tree = tree_of({"/usr/lib/python3.99/os.py": "", "/usr/lib/python3/dist-packages/m.py": ""})
    with pytest.raises(ApbuildError, match=r"boards/x\.toml: the image's Python is 3\.99; .*"
                                           r"apt-get install python3\.99-minimal"):
        bytecode.compile_tree(tree, "boards/x.toml", scratch)
