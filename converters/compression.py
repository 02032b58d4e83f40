"""The compression recipe: pruning, low-rank factorisation and clustering, in a fixed order.

One typed value from a TOML file (``--recipe``) and/or flags (``--prune 0.5 --low-rank 0.9
--cluster 16``; a flag overrides the file's value). Pack applies the steps to the simplified
ONNX graph in this order, then quantizes:

    prune -> low_rank -> cluster -> quantize

Pruning first, so the factorisation and the codebooks are fitted to the weights that stay;
clustering last among them, since its codebook + indices are what the bundle stores. A
recipe file::

    [prune]
    sparsity = 0.5           # or per layer: sparsity = { "/0/Conv" = 0.5 }
    method = "channels"      # "channels" (removes them) or "magnitude" (zeros weights)
    scope = "layer"          # magnitude only: "layer" or "global"

    [low_rank]
    energy = 0.9             # or size = 0.5 (share of each layer's parameters)

    [cluster]
    clusters = 16

    [fine_tune]              # PyTorch sources with --train data: prune the module, retrain
    epochs = 5
    learning_rate = 0.003

After each step pack measures the model (parameters, stored bytes, numpy-runtime latency and
peak live memory, accuracy against the source) for the report and the manifest.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from converters import accuracy as acc
from converters.calibration import Samples, count, sample
from converters.optimise.cluster import CODEBOOK
from edgerun.errors import InputError

ORDER = ("prune", "low_rank", "cluster")
PRUNE_METHODS = ("channels", "magnitude")
PRUNE_SCOPES = ("layer", "global")


@dataclass(frozen=True)
class Prune:
    sparsity: float | tuple[tuple[str, float], ...]  # one target, or (layer, target) pairs
    method: str = "channels"
    scope: str = "layer"

    def target(self) -> float | dict[str, float]:
        return self.sparsity if isinstance(self.sparsity, float) else dict(self.sparsity)


@dataclass(frozen=True)
class LowRank:
    energy: float | None = None
    size: float | None = None


@dataclass(frozen=True)
class Cluster:
    clusters: int = 16


@dataclass(frozen=True)
class FineTune:
    epochs: int = 5
    learning_rate: float = 3e-3
    batch_size: int = 64


@dataclass(frozen=True)
class CompressionRecipe:
    prune: Prune | None = None
    low_rank: LowRank | None = None
    cluster: Cluster | None = None
    fine_tune: FineTune = field(default_factory=FineTune)

    def __bool__(self) -> bool:
        return any(getattr(self, step) is not None for step in ORDER)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.prune is not None:
            data["prune"]["sparsity"] = self.prune.target()
        return {"order": [s for s in ORDER if getattr(self, s) is not None], **data}


# ---- reading it ------------------------------------------------------------------------


def load_recipe(path: Path) -> CompressionRecipe:
    """A recipe TOML file, checked key by key (every mistake is one precise InputError)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--recipe {path}: no such file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--recipe {path}: not valid TOML: {exc}") from None
    return parse_recipe(data, f"--recipe {path}")


def parse_recipe(data: Mapping[str, Any], where: str) -> CompressionRecipe:
    _known(data, (*ORDER, "fine_tune"), where, "section")
    sections = {}
    for name in (*ORDER, "fine_tune"):
        section = data.get(name)
        if section is not None and not isinstance(section, Mapping):
            raise InputError(f"{where}: [{name}] must be a table")
        sections[name] = section
    return CompressionRecipe(
        prune=None if sections["prune"] is None else _prune(sections["prune"], where),
        low_rank=None if sections["low_rank"] is None else _low_rank(sections["low_rank"], where),
        cluster=None if sections["cluster"] is None else _cluster(sections["cluster"], where),
        fine_tune=FineTune()
        if sections["fine_tune"] is None
        else _fine_tune(sections["fine_tune"], where),
    )


def with_flags(
    recipe: CompressionRecipe,
    prune: float | None = None,
    low_rank: float | None = None,
    cluster: int | None = None,
) -> CompressionRecipe:
    """``recipe`` with the values given on the command line put over it."""
    if prune is not None:
        method = recipe.prune.method if recipe.prune else "channels"
        scope = recipe.prune.scope if recipe.prune else "layer"
        recipe = replace(
            recipe, prune=_prune({"sparsity": prune, "method": method, "scope": scope}, "--prune")
        )
    if low_rank is not None:
        recipe = replace(recipe, low_rank=_low_rank({"energy": low_rank}, "--low-rank"))
    if cluster is not None:
        recipe = replace(recipe, cluster=_cluster({"clusters": cluster}, "--cluster"))
    return recipe


def _known(section: Mapping[str, Any], keys: tuple[str, ...], where: str, what: str) -> None:
    unknown = sorted(set(section) - set(keys))
    if unknown:
        raise InputError(f"{where}: unknown {what} {unknown[0]!r} (known: {', '.join(keys)})")


def _fraction(value: Any, where: str, low_open: bool = False, high_open: bool = True) -> float:
    interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where} must be a number in {interval}, not {value!r}")
    value = float(value)
    too_low = value <= 0.0 if low_open else value < 0.0
    too_high = value >= 1.0 if high_open else value > 1.0
    if too_low or too_high:
        raise InputError(f"{where} must be in {interval}, not {value:g}")
    return value


def _choice(section: Mapping[str, Any], key: str, choices: tuple[str, ...], where: str) -> str:
    value = section.get(key, choices[0])
    if value not in choices:
        raise InputError(f"{where}: {key} must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def _prune(section: Mapping[str, Any], where: str) -> Prune:
    where = where if where.startswith("--prune") else f"{where}: [prune]"
    _known(section, ("sparsity", "method", "scope"), where, "key")
    if "sparsity" not in section:
        raise InputError(f"{where} needs sparsity (a number, or a table of layer = number)")
    raw = section["sparsity"]
    sparsity: float | tuple[tuple[str, float], ...]
    if isinstance(raw, Mapping):
        sparsity = tuple((str(k), _fraction(v, f"{where} sparsity.{k}")) for k, v in raw.items())
    else:
        sparsity = _fraction(raw, f"{where} sparsity")
    method = _choice(section, "method", PRUNE_METHODS, where)
    scope = _choice(section, "scope", PRUNE_SCOPES, where)
    if scope == "global" and (method != "magnitude" or not isinstance(sparsity, float)):
        raise InputError(f"{where}: scope 'global' takes method 'magnitude' and one sparsity")
    return Prune(sparsity, method, scope)


def _low_rank(section: Mapping[str, Any], where: str) -> LowRank:
    where = where if where.startswith("--") else f"{where}: [low_rank]"
    _known(section, ("energy", "size"), where, "key")
    if ("energy" in section) == ("size" in section):
        raise InputError(f"{where} takes one of energy (kept share of SVD energy) or size")
    if "energy" in section:
        return LowRank(energy=_fraction(section["energy"], f"{where} energy", True, False))
    return LowRank(size=_fraction(section["size"], f"{where} size", True, False))


def _cluster(section: Mapping[str, Any], where: str) -> Cluster:
    where = where if where.startswith("--") else f"{where}: [cluster]"
    _known(section, ("clusters",), where, "key")
    clusters = section.get("clusters", 16)
    if isinstance(clusters, bool) or not isinstance(clusters, int) or not 2 <= clusters <= 256:
        raise InputError(f"{where} clusters must be a whole number from 2 to 256, not {clusters!r}")
    return Cluster(clusters)


def _fine_tune(section: Mapping[str, Any], where: str) -> FineTune:
    where = f"{where}: [fine_tune]"
    _known(section, ("epochs", "learning_rate", "batch_size"), where, "key")
    tune = FineTune(**section)
    for key in ("epochs", "batch_size"):
        value = getattr(tune, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (key == "batch_size"):
            raise InputError(f"{where} {key} must be a whole number >= {int(key == 'batch_size')}")
    rate = tune.learning_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
        raise InputError(f"{where} learning_rate must be a positive number, not {rate!r}")
    return tune


def check_for(
    recipe: CompressionRecipe | None,
    scheme: str | None,
    model_format: str,
    train: Path | None = None,
    student: str | None = None,
) -> None:
    """The recipe fits the pack: ONNX graphs, no int8 over a codebook, --train with pruning
    or a student (``scheme`` None: chosen later by --choose)."""
    if student is not None and train is None:
        raise InputError("--student needs --train: labelled samples (an .npz with 'label')")
    if train is not None and student is None and (recipe is None or recipe.prune is None):
        raise InputError(
            "--train fine-tunes after channel pruning (--prune) or trains a --student; give one"
        )
    if recipe is None:
        return
    if train is not None and recipe.prune is not None and recipe.prune.method != "channels":
        raise InputError("--train fine-tunes after channel pruning, not magnitude pruning")
    if model_format != "onnx":
        raise InputError(
            "pruning, low-rank factorisation and clustering work on ONNX graphs; "
            "pass --format onnx with them"
        )
    if recipe.cluster is not None and scheme in ("dynamic", "int8"):
        raise InputError(
            f"--cluster stores weights as a codebook and indices, which {scheme} quantization "
            "would replace; pass --quantize none (or fp16) with it"
        )


# ---- applying it -----------------------------------------------------------------------

Measure = Callable[[Any], dict[str, Any]]


@dataclass
class Compressed:
    """What the recipe did: one row per step with the model measured after it."""

    recipe: CompressionRecipe
    steps: list[dict[str, Any]]
    measure: Measure

    def measure_quantized(self, model: Any, scheme: str) -> None:
        self.steps.append({"step": f"quantize ({scheme})", **self.measure(model)})

    def to_json(self) -> dict[str, Any]:
        return {"recipe": self.recipe.to_json(), "steps": self.steps}


Retrain = Callable[[], tuple[Any, dict[str, Any]]]  # -> (pruned, fine-tuned ONNX, report)


def compress(
    model: Any,
    recipe: CompressionRecipe,
    data: Any,
    reference: acc.Runner,
    retrain: Retrain | None = None,
) -> tuple[Any, Compressed]:
    """The model after each step of ``recipe`` in ``ORDER``, measured on ``data.validation``
    against the source (``reference``); ``retrain`` (from ``retrainer``) replaces the graph
    pruning step by pruning the source module and fine-tuning it."""
    from converters.optimise import cluster, lowrank, prune

    expected = acc.collect(reference, data.validation)
    measure = measurer(data.validation, expected, data.labels)
    done = Compressed(recipe, [{"step": "baseline", **measure(model)}], measure)
    if recipe.prune is not None and retrain is not None:
        model, report = retrain()
        done.steps.append({"step": "prune + fine-tune", "report": report, **measure(model)})
    elif recipe.prune is not None:
        p = recipe.prune
        if p.method == "channels":
            model, report = prune.channels(model, p.target())
        else:
            model, report = prune.magnitude(model, p.target(), p.scope)
        done.steps.append({"step": "prune", "report": report, **measure(model)})
    if recipe.low_rank is not None:
        model, report = lowrank.factorise(model, recipe.low_rank.energy, recipe.low_rank.size)
        done.steps.append({"step": "low_rank", "report": report, **measure(model)})
    if recipe.cluster is not None:
        model, report = cluster.cluster(model, recipe.cluster.clusters)
        done.steps.append({"step": "cluster", "report": report, **measure(model)})
    return model, done


def retrainer(
    source: Any, specs: list[Any], train: Path, recipe: CompressionRecipe, opset: int | None
) -> Retrain:
    """Prune the PyTorch source's channels, fine-tune on ``train``, export and simplify."""
    from converters.calibration import load_samples

    if source.framework != "torch" or recipe.prune is None:
        raise InputError(f"--train fine-tunes PyTorch models; this one is {source.framework}")
    samples, labels = load_samples(train, specs, "--train")
    if labels is None:
        raise InputError(f"--train {train}: needs a 'label' array (one class index per sample)")
    prune = recipe.prune
    tune = recipe.fine_tune

    def run() -> tuple[Any, dict[str, Any]]:
        from converters.optimise import prune_torch
        from converters.optimise.simplify import simplify
        from converters.torch_frontend import torch_to_onnx

        module, report = prune_torch.channels(source.model, prune.target())
        losses = prune_torch.fine_tune(
            module,
            [samples[s.name] for s in specs],
            labels,
            tune.epochs,
            tune.learning_rate,
            tune.batch_size,
        )
        report["fine_tune"] = {**asdict(tune), "samples": len(labels), "losses": losses}
        model, _ = simplify(torch_to_onnx(module, specs, opset))
        return model, report

    return run


def measurer(
    validation: Samples,
    expected: acc.Outputs,
    labels: np.ndarray | None,
    runs: int = 30,
) -> Measure:
    """Measure a model as pack stores it: on the numpy runtime, against the source."""

    def measure(model: Any) -> dict[str, Any]:
        from converters.optimise.graph import parameters

        with tempfile.TemporaryDirectory(prefix="edgerun-compress-") as tmp:
            path = _write_model(model, Path(tmp) / "model")
            stored = sum(f.stat().st_size for f in path.parent.iterdir())
            figures = speed(path, validation, runs)
            figures.update(accuracy_of(path, validation, expected, labels))
        return {"parameters": parameters(model), "bytes": stored, **figures}

    return measure


def speed(path: Path, validation: Samples, runs: int) -> dict[str, Any]:
    """Median latency of one sample on the numpy runtime, and the runtime's peak live bytes."""
    import edgerun

    session = edgerun.load(path, backend="numpy")
    feeds = sample(validation, 0)
    for _ in range(3):
        session.run(feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(feeds)
        times.append(time.perf_counter() - start)
    return {
        "latency_ms": round(1e3 * statistics.median(times), 4),
        "peak_live_bytes": _peak(session, feeds),
    }


def _peak(session: Any, feeds: dict[str, np.ndarray]) -> int | None:
    """Peak bytes of live tensors in one run: the profiler's own figure."""
    from edgerun.feeds import check_feeds
    from edgerun.profiler import LiveBytes

    plan = session.plan
    if plan is None:
        return None
    feeds = check_feeds(session.inputs, feeds)
    live = LiveBytes(plan, feeds)
    plan.run(feeds, hook=lambda step, _seconds, results: live.observe(step, results))
    return int(live.peak)


def accuracy_of(
    path: Path,
    validation: Samples,
    expected: acc.Outputs,
    labels: np.ndarray | None,
    backend: str = "numpy",
) -> dict[str, Any]:
    import edgerun

    session = edgerun.load(path, backend=backend)
    names = [s.name for s in session.outputs]
    outputs = acc.collect(lambda feeds: list(session.run(feeds).values()), validation)
    report = acc.report(names, expected, {backend: outputs}, labels)
    ours = report["backends"][backend]
    first = ours["outputs"][names[0]]
    return {
        "label_accuracy": ours["label_accuracy"],
        "source_label_accuracy": report["source_label_accuracy"],
        "top1_agreement": first["top1_agreement"],
        "mean_cosine": first["mean_cosine"],
        "drop": report["drop"],
        "samples": count(validation),
    }


# ---- --choose fastest ------------------------------------------------------------------

CHOICES = ("fastest",)

SCHEMES = ("none", "fp16", "dynamic", "int8")
DEFAULT_BUDGET = 1.0  # points of accuracy, when --max-accuracy-drop is not given
# A quantized variant must beat float by this share to be chosen: closer is timing noise,
# and float keeps the source's accuracy
MARGIN = 0.03


def check_choice(choice: str, quantize: str | None, model_format: str) -> None:
    if choice not in CHOICES:
        raise InputError(f"--choose {choice!r}: choose one of {', '.join(CHOICES)}")
    if quantize is not None:
        raise InputError("--choose fastest picks the quantization itself; drop --quantize")
    if model_format != "onnx":
        raise InputError("--choose measures ONNX variants; pass --format onnx with it")


def choose_fastest(
    model: Any,
    recipe: Any,
    data: Any,
    reference: acc.Runner,
    budget: float | None,
    backend: str = "numpy",
    device: str | None = None,
    rounds: int = 15,
    runs: int = 10,
) -> tuple[Any, Any, dict[str, Any]]:
    """Quantize ``model`` every way, measure each here on ``backend`` (or, with "estimate",
    take the roofline estimate for ``device``'s profile, for packing off the board), keep the
    fastest whose accuracy drop stays within ``budget`` (float always qualifies). Returns the
    model, its recipe and the record of every candidate for the manifest."""
    from dataclasses import replace as with_scheme

    from converters.quantize import quantize_onnx

    budget = DEFAULT_BUDGET if budget is None else budget
    expected = acc.collect(reference, data.validation)
    built: dict[str, Any] = {}
    rows: dict[str, dict[str, Any]] = {}
    clustered = any(t.name.endswith(CODEBOOK) for t in model.graph.initializer)
    for scheme in SCHEMES:
        if clustered and scheme in ("dynamic", "int8"):
            rows[scheme] = {"status": "not built: clustered weights keep their codebook"}
            continue
        if scheme == "int8" and data.calibration is None:
            rows[scheme] = {"status": "not built: static int8 needs --calibration samples"}
            continue
        candidate = with_scheme(recipe, scheme=scheme)
        try:
            built[scheme] = (quantize_onnx(model, candidate, data.calibration), candidate)
        except Exception as exc:  # one scheme failing must not stop the others
            rows[scheme] = {"status": f"not built: {str(exc).splitlines()[0][:200]}"}
    with tempfile.TemporaryDirectory(prefix="edgerun-choose-") as tmp:
        paths = {s: _write_model(m, Path(tmp) / s) for s, (m, _) in built.items()}
        run_on = "numpy" if backend == "estimate" else backend
        if backend == "estimate":
            from edgerun.estimate import estimate

            latency = {
                s: round(estimate(p, device or "this").total_ms, 4) for s, p in paths.items()
            }
            backend = f"estimate for {device}"
        else:
            latency = race(paths, sample(data.validation, 0), backend, rounds, runs)
        for scheme, path in paths.items():
            rows[scheme] = {
                "latency_ms": latency[scheme],
                "bytes": sum(f.stat().st_size for f in path.parent.iterdir()),
                **accuracy_of(path, data.validation, expected, data.labels, run_on),
            }
    floor = rows["none"]["latency_ms"] * (1.0 - MARGIN)
    eligible = [
        s
        for s in built
        if s == "none" or ((rows[s]["drop"] or 0.0) <= budget and rows[s]["latency_ms"] < floor)
    ]
    chosen = min(eligible, key=lambda s: rows[s]["latency_ms"])
    for scheme, row in rows.items():
        if "status" not in row:
            row["status"] = _status(scheme, chosen, rows, budget)
    ordered = {s: rows[s] for s in SCHEMES}
    record = {"backend": backend, "budget": budget, "chosen": chosen, "candidates": ordered}
    return built[chosen][0], built[chosen][1], record


def _status(scheme: str, chosen: str, rows: dict[str, dict[str, Any]], budget: float) -> str:
    if scheme == chosen:
        if scheme == "none" and any(
            r.get("latency_ms", 1e30) < _float_latency(rows) for r in rows.values()
        ):
            return f"chosen: nothing within the accuracy budget is {100 * MARGIN:g}% faster"
        return "chosen: the fastest within the accuracy budget"
    drop = rows[scheme]["drop"] or 0.0
    if drop > budget and scheme != "none":
        return f"rejected: accuracy drop {drop:.2f} > {budget:g} points"
    if chosen == "none" and rows[scheme]["latency_ms"] <= rows["none"]["latency_ms"]:
        return f"rejected: not {100 * MARGIN:g}% faster than float"
    slower = rows[scheme]["latency_ms"] / rows[chosen]["latency_ms"]
    note = " (slower than float)" if rows[scheme]["latency_ms"] > rows["none"]["latency_ms"] else ""
    return f"rejected: {slower:.2f}x the chosen one's latency{note}"


def _float_latency(rows: dict[str, dict[str, Any]]) -> float:
    return float(rows["none"]["latency_ms"])


def _write_model(model: Any, folder: Path) -> Path:
    from converters.layout import WEIGHTS, externalize

    folder.mkdir(parents=True)
    model_bytes, weights = externalize(model)
    (folder / "model.onnx").write_bytes(model_bytes)
    if weights:
        (folder / WEIGHTS).write_bytes(weights)
    return folder / "model.onnx"


def race(
    paths: Mapping[str, Path], feeds: dict[str, np.ndarray], backend: str, rounds: int, runs: int
) -> dict[str, float]:
    """Median latency (ms) of each model, timed in interleaved rounds in this process so
    that the load of the machine falls on every contestant alike."""
    import edgerun

    sessions = {k: edgerun.load(p, backend=backend) for k, p in paths.items()}
    for session in sessions.values():
        for _ in range(3):
            session.run(feeds)
    medians: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                session.run(feeds)
                times.append(time.perf_counter() - start)
            medians[name].append(statistics.median(times))
    return {k: round(1e3 * statistics.median(v), 4) for k, v in medians.items()}
