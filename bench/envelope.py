"""Cost of ``conf.envelope.unpack`` per message: IN and OUT batches of 1 and 16 messages of
754 bytes, best of 9 runs of 20 000 unpacks (``time.perf_counter`` through ``timeit``).

    python bench/envelope.py                   # this tree
    python bench/envelope.py --tree /tmp/old   # the conf/envelope.py of another checkout
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import timeit
from pathlib import Path
from types import ModuleType

IN_META = ["udp", "127.0.0.1", 5070, 0, "127.0.0.1", 5060, 12345.678]
OUT_META = ["udp", "127.0.0.1", 5080, 0, "127.0.0.1", 5060]
PAYLOAD = b"x" * 754
RUNS, NUMBER = 9, 20_000


def load(tree: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_envelope", tree / "conf" / "envelope.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    env = load(ap.parse_args().tree)
    for n in (1, 16):
        for kind, meta, header in ((env.KIND_IN, IN_META, lambda m: ["ingress.1-1", m]),
                                   (env.KIND_OUT, OUT_META, lambda m: [m])):  # fmt: skip
            frames = env.pack(kind, header([list(meta) for _ in range(n)]), [PAYLOAD] * n)
            best = min(timeit.repeat(lambda f=frames: env.unpack(f), number=NUMBER, repeat=RUNS))
            print(f"{kind[1:].decode():3} batch {n:2}: {best / NUMBER / n * 1e6:.2f} µs/msg")


if __name__ == "__main__":
    main()
