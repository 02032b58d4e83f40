"""Conformance report: onnx's backend node test suite on edgerun's numpy runtime, with onnx's
ReferenceEvaluator on the same cases beside it.

    python bench/conformance.py                 # the whole suite, summary
    python bench/conformance.py --op Conv -v    # one op's cases, each failure's reason
    python bench/conformance.py --failures out.txt   # every failing case and why
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnx
from onnx.backend.test.loader import load_node_model_tests
from onnx.backend.test.runner import Runner

from tests.runtime.onnx_backend import EdgerunBackend


def _normalize(item: object) -> object:
    if isinstance(item, onnx.TensorProto):
        return onnx.numpy_helper.to_array(item)
    return item


def check_case(backend: type, case: object) -> str | None:
    """None when the backend reproduces every data set of ``case``, else the reason."""
    try:
        rep = backend.prepare(case.model, "CPU")
        for inputs, expected in case.data_sets:
            outputs = rep.run([_normalize(i) for i in inputs])
            assert_similar([_normalize(e) for e in expected], outputs, case.rtol, case.atol)
    except Exception as exc:  # a failing case is data here, whatever raised
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"{type(exc).__name__}: {first[:200]}"
    return None


def assert_similar(expected: list, outputs: list, rtol: float, atol: float) -> None:
    """onnx's own comparison, applied per element to sequence outputs: onnx's runner
    recurses into sequences itself but fails on 0-d tensors inside them."""
    assert len(expected) == len(outputs), "wrong number of outputs"
    for want, got in zip(expected, outputs, strict=True):
        if isinstance(want, list):
            assert isinstance(got, list) and len(got) == len(want), "sequence length differs"
            for w, g in zip(want, got, strict=True):
                Runner.assert_similar_outputs([w], [g], rtol=rtol, atol=atol)
        else:
            Runner.assert_similar_outputs([want], [got], rtol=rtol, atol=atol)


class ReferenceBackend:
    class _Rep:
        def __init__(self, model: onnx.ModelProto) -> None:
            from onnx.reference import ReferenceEvaluator

            self.ref = ReferenceEvaluator(model)
            self.names = [i.name for i in model.graph.input]

        def run(self, inputs: list) -> list:
            return self.ref.run(None, dict(zip(self.names, inputs, strict=False)))

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str) -> _Rep:
        return cls._Rep(model)


def op_of(case: object) -> str:
    ops = [n.op_type for n in case.model.graph.node if n.op_type != "Constant"]
    return ops[0] if ops else "Constant"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", help="only cases whose first node is this op (regex)")
    parser.add_argument("--name", help="only cases whose name matches this regex")
    parser.add_argument("--no-reference", action="store_true", help="skip ReferenceEvaluator")
    parser.add_argument("--failures", type=Path, help="write every failing case and reason here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    np.seterr(all="ignore")
    cases = load_node_model_tests()
    if args.op:
        cases = [c for c in cases if re.fullmatch(args.op, op_of(c))]
    if args.name:
        cases = [c for c in cases if re.search(args.name, c.name)]
    start = time.perf_counter()
    ours = {c.name: check_case(EdgerunBackend, c) for c in cases}
    took = time.perf_counter() - start
    passed = sum(r is None for r in ours.values())
    print(f"edgerun numpy runtime: {passed} / {len(cases)} node-suite cases pass ({took:.0f} s)")
    if not args.no_reference:
        reference = sum(check_case(ReferenceBackend, c) is None for c in cases)
        print(f"onnx ReferenceEvaluator: {reference} / {len(cases)} on the same cases")
    failing = Counter(op_of(c) for c in cases if ours[c.name] is not None)
    print("failing cases by op:", ", ".join(f"{op} {n}" for op, n in failing.most_common()))
    lines = [f"{name}\t{reason}" for name, reason in sorted(ours.items()) if reason]
    if args.verbose:
        print("\n".join(lines))
    if args.failures:
        args.failures.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
