#!/usr/bin/python3
"""check_layers: the broker's modules must form layers that point one way.

A module is a pair src/NAME.c + src/NAME.h (or one of them). Two graphs
between modules are built from the source text alone:

  includes  a file has #include "OTHER.h" (between files)
  calls     NAME.c calls a function that OTHER.h declares (between modules)

Each must be free of cycles. Prints every cycle found (the modules of each
strongly connected component, with the edges that close it) and exits 1,
or prints the layers (each module after everything it uses) and exits 0.

    tools/check_layers.py [--src DIR] [--quiet]
"""
import argparse
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)\.h"', re.M)
# a prototype in a header: type words, the name, an opening parenthesis
PROTO = re.compile(r'^[A-Za-z_][\w \t\*]*?\b([a-z_][a-z0-9_]*)\s*\(', re.M)
CALL = re.compile(r'\b([a-z_][a-z0-9_]*)\s*\(')
# comments, strings and character literals, in the order they appear (a
# "//" inside a string is no comment, a quote inside a comment no string)
LEXEMES = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)


def strip(text):
    # keep #include "x.h" lines whole: their quotes name the header
    keep = {}
    def hold(m):
        keep[len(keep)] = m.group(0)
        return "@INCLUDE%d@" % (len(keep) - 1)
    text = INCLUDE.sub(hold, text)
    text = LEXEMES.sub(lambda m: " " if m.group(0)[0] == "/" else '""', text)
    return re.sub(r"@INCLUDE(\d+)@", lambda m: keep[int(m.group(1))], text)


def modules(src):
    mods = {}
    for f in sorted(os.listdir(src)):
        stem, ext = os.path.splitext(f)
        if ext in (".c", ".h") and os.path.isfile(os.path.join(src, f)):
            with open(os.path.join(src, f), encoding="utf-8", errors="replace") as fh:
                mods.setdefault(stem, {})[ext] = strip(fh.read())
    return mods


def graphs(mods):
    declared = {}                      # function -> module whose header declares it
    for m, files in mods.items():
        for name in PROTO.findall(files.get(".h", "")):
            if name not in ("if", "while", "for", "switch", "return", "sizeof"):
                declared.setdefault(name, m)
    # includes between files (a .c including its own header is no cycle;
    # a header including itself through others is)
    inc = {}
    for m, files in mods.items():
        for ext, text in files.items():
            inc[m + ext] = {o + ".h" for o in INCLUDE.findall(text)
                            if o in mods and ".h" in mods[o] and o + ".h" != m + ext}
    call = {m: set() for m in mods}
    for m, files in mods.items():
        for name in CALL.findall(files.get(".c", "")):
            other = declared.get(name)
            if other and other != m:
                call[m].add(other)
    return inc, call


def sccs(graph):
    """Tarjan's strongly connected components."""
    index, low, on, stack, out = {}, {}, set(), [], []
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layers(graph):
    depth = {}

    def d(v):
        if v not in depth:
            depth[v] = 0
            depth[v] = 1 + max((d(w) for w in graph[v]), default=-1)
        return depth[v]
    for v in graph:
        d(v)
    by = {}
    for v, k in depth.items():
        by.setdefault(k, []).append(v)
    return [sorted(by[k]) for k in sorted(by)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    mods = modules(args.src)
    inc, call = graphs(mods)
    bad = False
    for kind, g in (("include", inc), ("call", call)):
        for comp in sccs(g):
            if len(comp) > 1:
                bad = True
                edges = ["%s -> %s" % (a, b) for a in comp for b in sorted(g[a]) if b in comp]
                print("%s cycle: %s (%s)" % (kind, " ".join(comp), ", ".join(edges)))
    if bad:
        return 1
    if not args.quiet:
        merged = {m: call[m] | {f[:-2] for f in inc.get(m + ".c", set()) | inc.get(m + ".h", set())
                                 if f[:-2] != m} for m in mods}
        for i, layer in enumerate(layers(merged)):
            print("layer %d: %s" % (i, " ".join(layer)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
