#!/usr/bin/env python3
"""Write a FOSSA checkpoint with deterministic fixture weights, in the published file layout.

Usage: fossa_fixture_checkpoint.py KEYFILE OUT.pth [--seed 1234]
The rule is in zedd_capture.fossa.fixture_weights (the shared fixture rule, reproduced exactly).
"""
import argparse

from zedd_capture.fossa.fixture_weights import write_fixture_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("keyfile", help="tab-separated key list (key, shape, dtype)")
    ap.add_argument("out", help="output .pth path")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    path = write_fixture_checkpoint(args.keyfile, args.out, args.seed)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
