#!/usr/bin/env python3
"""Circles between the files of each crate: run by hack/test.sh, exits 1 when there is one.

A file depends on another when it names an item of that file's module by path (`crate::a::b`,
`super::x`, `self::x`, or a name brought in by `use`), outside its `#[cfg(test)]` module: a
unit test may look at its neighbours, the code it tests may not lean on them in a circle.
A `mod x;` declaration is not a dependency (every module is declared by its parent).

    python3 hack/file-circles.py [--graph] [CRATE_DIR ...]

--graph prints every file's dependencies too. Without crate directories: every crate of the
workspace (a directory holding Cargo.toml and src/).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE = re.compile(r"\buse\s+([^;]+);", re.S)
# Comments, raw strings, strings and character literals (a `'"'` must not open a string).
LEXEME = re.compile(r"""//[^\n]*|/\*(?:.|\n)*?\*/|(?<![\w])r(#*)"(?:.|\n)*?"\1|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\\n])'""")


def expand(tree: str) -> list[list[str]]:
    """`a::{b, c::{d, e}}` -> [[a, b], [a, c, d], [a, c, e]] (`self` in a group is its prefix)."""
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        return [[p for p in tree.split("::") if p]]
    prefix = [p for p in tree[:brace].split("::") if p]
    inner = tree[brace + 1 : tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for part in filter(None, parts):
        for sub in expand(part):
            out.append(prefix + [x for x in sub if x not in ("self", "*")])
    return out


def modules(src: Path) -> dict[tuple[str, ...], Path]:
    """Module path -> file, for every file of a crate's src/ (binaries, src/bin and a main.rs beside a
    lib.rs, are crates of their own)."""
    out: dict[tuple[str, ...], Path] = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src)
        if rel.parts[0] == "bin" or (rel == Path("main.rs") and (src / "lib.rs").exists()):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "mod":
            parts.pop()
        if parts in (["lib"], ["main"]):
            parts = []
        out[tuple(parts)] = f
    return out


def code(text: str) -> str:
    """The text without comments, string literals and the `#[cfg(test)]` module."""
    cut = re.search(r"#\[cfg\(test\)\](\s*#\[[^\]]*\])*\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
    if cut:
        text = text[: cut.start()]
    # One left-to-right scan, so a string's closing `r"` is never taken for a raw string's start.
    return LEXEME.sub(lambda m: "" if m.group(0).startswith("/") else '""', text)


def resolve_full(here: tuple[str, ...], head: str, tail: list[str]) -> list[str]:
    """The absolute module path a path starting at `head` (`crate`, `super`, `self`) names."""
    base = [] if head == "crate" else list(here[:-1] if head == "super" else here)
    while tail and tail[0] == "super":
        base, tail = base[:-1], tail[1:]
    return base + tail


def resolve(mods, here: tuple[str, ...], head: str, tail: list[str]) -> tuple[str, ...] | None:
    """The module file a path lands in: its longest prefix that is a file."""
    full = resolve_full(here, head, tail)
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in mods:
            return tuple(full[:n])
    return None


def reexports(mods) -> dict[tuple[tuple[str, ...], str], tuple[str, ...]]:
    """(module, name) -> the module a `pub use` of that module brings the name from: naming
    `crate::Sidecar` where lib.rs says `pub use state::Sidecar` depends on state.rs, not lib.rs."""
    out = {}
    for here, f in mods.items():
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", code(f.read_text()), re.S):
            for path in expand(re.sub(r"\s+as\s+\w+", "", m.group(1))):
                if len(path) < 2:
                    continue
                head, tail = (path[0], path[1:]) if path[0] in ("crate", "super", "self") else ("self", path)
                target = resolve(mods, here, head, tail)
                if target is not None and target != here:
                    out[(here, path[-1])] = target
    return out


def edges(mods: dict[tuple[str, ...], Path]) -> dict[tuple[str, ...], set[tuple[str, ...]]]:
    out: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in mods}
    again = reexports(mods)
    for here, f in mods.items():
        text = code(f.read_text())
        paths: list[tuple[str, list[str]]] = []
        for m in USE.finditer(text):
            for path in expand(re.sub(r"\s+as\s+\w+", "", m.group(1))):
                path = [p for p in path if p not in ("*",)]
                if not path:
                    continue
                if path[0] in ("crate", "super", "self"):
                    paths.append((path[0], path[1:]))
                elif tuple(list(here) + [path[0]]) in mods:
                    # 2018 paths: `use child::x` from a module names its child.
                    paths.append(("self", path))
        for m in PATH.finditer(text):
            paths.append((m.group(1), [p for p in m.group(2).split("::") if p]))
        # A bare `child::item` from a parent module names its child file.
        for m in re.finditer(r"(?<![:\w])([a-z_][a-z0-9_]*)::[A-Za-z_]", text):
            if tuple(list(here) + [m.group(1)]) in mods:
                paths.append(("self", [m.group(1)]))
        for head, tail in paths:
            target = resolve(mods, here, head, tail)
            if target is None:
                continue
            # Through re-exports to where the item lives.
            named = resolve_full(here, head, tail)[len(target):]
            if named and (target, named[0]) in again:
                target = again[(target, named[0])]
            if target != here:
                out[here].add(target)
    return out


def circles(graph: dict[tuple[str, ...], set[tuple[str, ...]]]) -> list[list[tuple[str, ...]]]:
    """Strongly connected components of more than one file (Tarjan)."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on: set = set()
    found: list = []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def name(src: Path, mods, m) -> str:
    return str(mods[m].relative_to(src.parent.parent))


def check_reader() -> None:
    """What `code` must see through, each once missed: a string ending in `r` before its quote
    (taken for a raw string's start, it hid the rest of the file), a `'"'` character, and a
    `pub(crate) mod tests`."""
    text = 'm(1, "ledger", x); let q = \'"\'; crate::a::f(); /* crate::b */ "crate::c"\n#[cfg(test)]\npub(crate) mod tests { crate::d }'
    seen = code(text)
    assert "crate::a" in seen and "crate::b" not in seen and "crate::c" not in seen and "crate::d" not in seen, seen


def main() -> int:
    check_reader()
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    show = "--graph" in sys.argv
    crates = [ROOT / a for a in args] or sorted(p.parent for p in ROOT.glob("*/Cargo.toml") if (p.parent / "src").is_dir())
    bad = 0
    for crate in crates:
        src = crate / "src"
        mods = modules(src)
        graph = edges(mods)
        if show:
            for m in sorted(graph):
                print(f"{name(src, mods, m)} -> {', '.join(name(src, mods, t) for t in sorted(graph[m])) or '-'}")
        for comp in circles(graph):
            bad += 1
            print(f"circle in {crate.name}: " + " <-> ".join(name(src, mods, m) for m in comp))
    if bad:
        print(f"{bad} circle(s) between files: pass narrow handles, or move what both need into a module of its own", file=sys.stderr)
        return 1
    print("no circles between files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
