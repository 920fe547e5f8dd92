#!/usr/bin/python3
"""check_layers: the broker's modules must form layers that point one way.

A module is a pair src/NAME.c + src/NAME.h (or one of them). Two graphs
between modules are built from the source text alone:

  includes  a file has #include "OTHER.h" (between files)
  calls     NAME.c calls a function that OTHER.h declares (between modules)

Each must be free of cycles. It also checks that no module reads the
fields of another module's state: a struct that OTHER.h defines with its
fields and hands out from a constructor (a function named *_new or *_load
returning a pointer to it) is OTHER's state, and `x->field` or `x.field`
on a variable, parameter or call result of that type is a reach-in
anywhere but in OTHER.c and OTHER.h. (Records passed between modules, such
as peer_t or envelope_t, have no constructor of their own and are not
state.) The types are tracked from declarations, one function at a time:
a heuristic for this code base, not a C parser.

Prints every cycle and reach-in found and exits 1, or prints the layers
(each module after everything it uses) and exits 0.

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
    # (a comment keeps its line breaks, so that line numbers stay right)
    text = LEXEMES.sub(lambda m: (" " + "\n" * m.group(0).count("\n")) if m.group(0)[0] == "/"
                       else '""', text)
    return re.sub(r"@INCLUDE(\d+)@", lambda m: keep[int(m.group(1))], text)


def modules(src, raw=None):
    mods = {}
    for f in sorted(os.listdir(src)):
        stem, ext = os.path.splitext(f)
        if ext in (".c", ".h") and os.path.isfile(os.path.join(src, f)):
            with open(os.path.join(src, f), encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            mods.setdefault(stem, {})[ext] = strip(text)
            if raw is not None:
                raw[stem + ext] = text
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


STRUCT_BODY = re.compile(
    r'(?:typedef\s+)?struct\s+(\w+)?\s*\{((?:[^{}]|\{[^{}]*\})*)\}\s*(\w+)?\s*;', re.S)
FIELD = re.compile(r'\b([A-Za-z_]\w*)\s*(?:\[[^\]]*\]\s*)*(?=[;,):])')
TYPED_FIELD = re.compile(r'^\s*(?:const\s+)?(struct\s+\w+|\w+)\s*[\s*]\s*(?:const\s+)?\**\s*(\w+)\s*(?:\[|$)')
CTOR = re.compile(r'\b(\w+)\s*\*\s*\w+_(?:new|load)\s*\(')
RETURNS = re.compile(r'^[ \t]*(?:const\s+)?(struct\s+\w+|\w+)\s*\*\s*([a-z_]\w*)\s*\(', re.M)
KEYWORDS = {"const", "struct", "unsigned", "signed", "volatile"}


def header_structs(mods):
    """{type name: (module, {field: its struct type or None}, is state)} for
    every struct a header defines; a struct is its module's state when the
    header hands it out from a constructor (*_new, *_load)."""
    found = {}
    for m, files in mods.items():
        h = files.get(".h", "")
        ctors = set(CTOR.findall(h))
        for tag, body, typedef in STRUCT_BODY.findall(h):
            names = [n for n in (typedef, "struct " + tag if tag else None) if n]
            fields = {f: None for f in FIELD.findall(body) if f not in KEYWORDS}
            for stmt in re.sub(r'\{[^{}]*\}', ' ', body).split(";"):
                t = TYPED_FIELD.match(stmt.replace("\n", " "))
                if t and t.group(2) in fields:
                    fields[t.group(2)] = t.group(1)
            state = any(n in ctors for n in names)
            for n in names:
                found[n] = (m, fields, state)
    # `typedef struct x x_t;` names the struct of that tag, wherever defined
    for m, files in mods.items():
        for tag, name in re.findall(r'typedef\s+struct\s+(\w+)\s+(\w+)\s*;', files.get(".h", "")):
            if "struct " + tag in found and name not in found:
                found[name] = found["struct " + tag]
    return found


def functions(text):
    """The text split into its top-level pieces (a function each, mostly)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                out.append((start, text[start:i + 1]))
                start = i + 1
    out.append((start, text[start:]))
    return out


def call_end(text, open_paren):
    depth = 0
    for i in range(open_paren, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


CHAIN = re.compile(r'(?:\s*(?:->|\.)\s*[A-Za-z_]\w*(?:\s*\[[^\]]*\])?)+')


def reach_ins(mods, raw):
    """[(file, line, what)] for every read of another module's state fields:
    a chain such as b->registry->peers is followed field by field."""
    types = header_structs(mods)
    returns = {fn: t for files in mods.values()
               for t, fn in RETURNS.findall(files.get(".h", "")) if t in types}
    plain = sorted((t for t in types if not t.startswith("struct ")), key=len, reverse=True)
    tags = [t[7:] for t in types if t.startswith("struct ")]
    decl = re.compile(r'(?:\b(%s)|\bstruct\s+(%s))\b\s*(?:const\s*)?\**\s*(?:const\s+)?(\w+)\s*[,;=)\[]'
                      % ("|".join(map(re.escape, plain)) or "(?!)",
                         "|".join(map(re.escape, tags)) or "(?!)"))
    out = set()

    def walk(m, t, chain, where):
        for field in re.findall(r'(?:->|\.)\s*([A-Za-z_]\w*)', chain):
            if t not in types:
                return
            owner, fields, state = types[t]
            if field not in fields:
                return
            if state and owner != m:
                where(owner, t, field)
            t = fields[field]

    for m, files in mods.items():
        for ext, text in files.items():
            for start, piece in functions(text):
                var_type = {}
                for tname, tag, var in decl.findall(piece):
                    var_type[var] = tname or "struct " + tag

                def where(owner, t, field, pos=0):
                    line = text.count("\n", 0, start + pos) + 1
                    out.add(("%s%s" % (m, ext), line, "%s reads %s's %s field %s: %s"
                             % (m, owner, t, field, raw[m + ext].splitlines()[line - 1].strip())))
                for mm in re.finditer(r'\b([A-Za-z_]\w*)(?=\s*(?:->|\.))', piece):
                    if mm.group(1) in var_type and (mm.start() == 0 or piece[mm.start() - 1] not in ".>"):
                        chain = CHAIN.match(piece, mm.end())
                        walk(m, var_type[mm.group(1)], chain.group(0),
                             lambda o, t, f, p=mm.start(): where(o, t, f, p))
                for fn, t in returns.items():
                    for mm in re.finditer(r'\b%s\s*\(' % re.escape(fn), piece):
                        end = call_end(piece, mm.end() - 1)
                        chain = CHAIN.match(piece, end)
                        if chain:
                            walk(m, t, chain.group(0), lambda o, t_, f, p=mm.start(): where(o, t_, f, p))
    return sorted(out)


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
    raw = {}
    mods = modules(args.src, raw)
    inc, call = graphs(mods)
    bad = False
    for path, line, what in reach_ins(mods, raw):
        bad = True
        print("reach-in: src/%s:%d: %s" % (path, line, what))
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
