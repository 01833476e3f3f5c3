#!/usr/bin/env python3
"""Prints the import graph between a crate's top-level modules and any cycle in it.

    scripts/module-graph.py crates/core/src   # exits 1 when modules import each other in a circle
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "crates/core/src"
edges = {}
for directory, _, files in os.walk(root):
    for name in files:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(directory, name)
        top = os.path.relpath(path, root).split(os.sep)[0].removesuffix(".rs")
        if top in ("lib", "main"):
            continue
        text = open(path, encoding="utf-8").read()
        # Doc comments and comments may name other modules freely.
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
        for used in re.findall(r"crate::(\w+)", code):
            if used != top:
                edges.setdefault(top, set()).add(used)
        edges.setdefault(top, set())

for module in sorted(edges):
    print(f"{module} -> {', '.join(sorted(edges[module])) or '(nothing)'}")

# Tarjan's strongly connected components: any with more than one module is a cycle.
index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in edges.get(v, ()):
        if w not in edges:
            continue
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            component.append(w)
            if w == v:
                break
        if len(component) > 1:
            cycles.append(sorted(component))


sys.setrecursionlimit(10000)
for v in sorted(edges):
    if v not in index:
        visit(v)
for cycle in cycles:
    print(f"cycle: {' <-> '.join(cycle)}", file=sys.stderr)
sys.exit(1 if cycles else 0)
