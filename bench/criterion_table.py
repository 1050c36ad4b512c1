#!/usr/bin/env python3
"""Print criterion results (mean point estimates) from target/criterion as a table.

Usage: python3 bench/criterion_table.py GROUP [GROUP...]
Reads target/criterion/<group>/<bench>/<param>/new/estimates.json (or without <param>).
"""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"


def fmt(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


for group in sys.argv[1:]:
    for est in sorted((root / group).glob("**/new/estimates.json")):
        name = str(est.parent.parent.relative_to(root))
        mean = json.loads(est.read_text())["mean"]["point_estimate"]
        print(f"{name}\t{mean:.1f}\t{fmt(mean)}")
