"""Check that the generated API reference lists every public Python name.

Reads the site's inventory (``site/objects.inv``, written by mkdocstrings) and fails if
a name in ``__all__`` of ``shmplane``, ``shmplane.rpc`` or ``shmplane.errors``, or a
public attribute of one of their classes, is missing: a name added to the package (or
to the native module but not to its stubs, which the reference is generated from) must
be documented. Usage: python ci/check_api_docs.py site/objects.inv
"""

from __future__ import annotations

import sys
import zlib
from types import ModuleType

import shmplane
import shmplane.errors
import shmplane.rpc


def inventory(path: str) -> set[str]:
    with open(path, "rb") as f:
        for _ in range(4):  # the Sphinx inventory header, version 2
            f.readline()
        body = zlib.decompress(f.read()).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line}


def main(path: str) -> int:
    names = inventory(path)
    missing: list[str] = []
    checked = 0

    def find(*ids: str) -> str | None:
        return next((i for i in ids if i in names), None)

    modules: list[tuple[str, ModuleType]] = [
        ("shmplane", shmplane), ("shmplane.rpc", shmplane.rpc), ("shmplane.errors", shmplane.errors)]
    for modname, mod in modules:
        for name in mod.__all__:
            obj = getattr(mod, name)
            checked += 1
            if isinstance(obj, ModuleType):
                if find(obj.__name__) is None:
                    missing.append(obj.__name__)
                continue
            found = find(f"{modname}.{name}", f"{getattr(obj, '__module__', modname)}.{name}")
            if found is None:
                missing.append(f"{modname}.{name}")
                continue
            if not isinstance(obj, type):
                continue
            # Members defined by the class itself or by a private base (rendered with
            # it, as inherited members); public bases have entries of their own.
            for klass in obj.__mro__:
                if klass is not obj and not (klass.__name__.startswith("_") and klass.__module__.startswith("shmplane")):
                    continue
                for member in vars(klass):
                    if member.startswith("_"):
                        continue
                    checked += 1
                    if find(f"{found}.{member}") is None:
                        missing.append(f"{found}.{member}")
    if missing:
        print(f"check_api_docs: {len(missing)} public names missing from the API reference "
              "(add them to the stubs or docstrings, and to a docs/reference page):")
        for m in sorted(set(missing)):
            print(f"  {m}")
        return 1
    print(f"check_api_docs: {checked} public names, all in the API reference")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "site/objects.inv"))
