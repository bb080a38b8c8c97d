"""Print the requirements of fsftpd from pyproject.toml, one per line, for the image build.

    python3 requirements.py pyproject.toml [--build] [EXTRA...]

The project's dependencies, then those of each named extra (``fsftpd[x]`` references to other
extras are followed), then with ``--build`` the build system's own requirements. The image
installs these from pyproject.toml alone, in a layer of their own, so a change to the code
does not download every dependency again. Standard library only (tomllib: Python 3.11+).
"""

from __future__ import annotations

import re
import sys
import tomllib


def requirements(pyproject: dict[str, object], extras: list[str], build: bool) -> list[str]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    name = project["name"]
    optional = project.get("optional-dependencies", {})
    out: list[str] = list(project.get("dependencies", []))
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise SystemExit(f"requirements.py: no extra {extra!r} in pyproject.toml")
        for req in optional[extra]:
            own = re.fullmatch(rf"{re.escape(name)}\[([^\]]+)\]", req.replace(" ", ""))
            if own:
                todo += own.group(1).split(",")
            else:
                out.append(req)
    if build:
        build_system = pyproject.get("build-system", {})
        assert isinstance(build_system, dict)
        out += build_system.get("requires", [])
    return list(dict.fromkeys(out))


def main(argv: list[str]) -> int:
    path, rest = argv[0], argv[1:]
    build = "--build" in rest
    extras = [a for a in rest if a != "--build"]
    with open(path, "rb") as f:
        data = tomllib.load(f)
    print("\n".join(requirements(data, extras, build)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
