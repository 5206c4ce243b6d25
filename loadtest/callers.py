#!/usr/bin/env python3
"""Inclusive shares from `perf script` call stacks: callers.py STACKS [REGEX]

For each frame, the share of samples that have it anywhere on their stack;
lists the frames matching REGEX (default: the broker's own code and the
libraries it calls most), highest first. Used by profile-flows.sh with
BZT_CALLERS=1: a leaf profile of the broker is flat, and this is what points at
a caller, e.g. a `format!` that is cheap per call and made often.
"""
import collections
import re
import sys

DEFAULT = r"bzt|serde|redis::|hyper::proto|tokio_tungstenite|tracing|metrics|uuid|getrandom|Timestamp|sm3"


def stacks(path):
    current = []
    for line in open(path):
        if not line.strip():
            if current:
                yield current
            current = []
        elif line[0] in " \t":
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                current.append(re.sub(r"\+0x[0-9a-f]+ \(.*\)$", "", parts[1]))
    if current:
        yield current


def main():
    path = sys.argv[1]
    wanted = re.compile(sys.argv[2] if len(sys.argv) > 2 else DEFAULT)
    inclusive = collections.Counter()
    total = 0
    for stack in stacks(path):
        total += 1
        inclusive.update(set(stack))
    print(f"== {total} samples; share of samples with the frame on the stack ==")
    shown = [(f, n) for f, n in inclusive.most_common() if wanted.search(f)][:120]
    for frame, n in shown:
        print(f"{100 * n / max(total, 1):6.1f}%  {frame[:160]}")


if __name__ == "__main__":
    main()
