"""The federated stage of ``dfflab pipeline``: the recipe search (optional), the five federated
baselines per seed, the fully federated path (federated SSL, then FedAvg from it and from the
centralized backbone) and the DP-FedAvg privacy-utility points; and the seed helpers every stage
of the pipeline uses. All runs of the stage share one SuperLink (:func:`flower_session`); the
baselines and DP points of every seed run as one batch, in one Flower run (:func:`run_batch`).
``p`` is the running :class:`dfflab.pipeline.Pipeline` (its config, store and earlier stages' runs).
"""

from __future__ import annotations

from dfflab.config import derive
from dfflab.runs import Run, find_run


def seeds_of(values: list) -> list[int]:
    from dfflab.config import ConfigError

    try:
        return [int(v) for v in values] or [0]
    except ValueError:
        raise ConfigError(f"pipeline seeds must be integers, got {values}") from None


def seed_key(name: str, seed: int, first: int) -> str:
    """The state key of one seed's run: the first seed keeps the plain name."""
    return name if seed == first else f"{name}@seed{seed}"


def stage_federated(p) -> dict:
    from dfflab.federated.launcher import flower_session

    with flower_session():  # one SuperLink for every Flower run of the stage
        return _federated_runs(p)


def _federated_runs(p) -> dict:
    from dfflab.federated.launcher import Job, run_batch
    from dfflab.federated.local_only import run_local_only
    from dfflab.federated.search import run_search

    out, store, seeds = {}, p.get_store(), seeds_of(p.cfg.pipeline.fl_seeds)
    parent = p.run_dir("centralized", "scratch")
    recipe: dict = {}
    if p.cfg.pipeline.fl_search:
        central = Run.open(parent) if parent else None
        found = run_search(p.cfg, store=store, central=central, progress=p.progress)
        recipe = found["recipe"]
        out.update({f"search:{r.record['name']}": r for r in found["runs"]})
    plan = [
        ("fedavg-source", {"fl.strategy": "fedavg", "fl.partitioning": "source"},
         "FedAvg with one generator per client: the federated counterpart of the centralized baseline."),
        ("fedprox-source", {"fl.strategy": "fedprox", "fl.partitioning": "source"},
         "FedProx: a proximal term keeps clients near the global model under source shift."),
        ("fedbn-source", {"fl.strategy": "fedbn", "fl.partitioning": "source"},
         "FedBN: BatchNorm stays local, the textbook answer to feature shift between clients."),
        ("fedavg-iid", {"fl.strategy": "fedavg", "fl.partitioning": "iid"},
         "FedAvg on an IID split: isolates the cost of federation from the cost of source shift."),
    ]
    # the four baselines and the DP points of every seed: one batch, one Flower run (Ray and the
    # client actors start once); runs that finished before a crash of this stage are kept, not
    # trained again (the IID run may be the search's accepted step, under its own name)
    jobs, keys = [], []

    def kept_or_queued(key: str, job: Job, name: str | None) -> Run | None:
        """The finished run of ``job``'s settings (named ``name``; None: any name), else queue the job."""
        found = find_run(job.cfg.results, "federated", name=name, cfg=job.cfg)
        if found:
            out[key] = found
        else:
            jobs.append(job)
            keys.append(key)
        return found

    bases = {seed: derive(p.cfg, {**recipe, "fl.strategy": "fedavg", "fl.partitioning": "source", "train.seed": seed})
             for seed in seeds}
    for seed in seeds:
        prev = parent
        for name, over, note in plan:
            # the search's accepted recipe, but each run keeps its own strategy and partitioning
            job = Job(derive(p.cfg, {**recipe, **over, "train.seed": seed}), name, prev,
                      note + _recipe_note(recipe, over))
            found = kept_or_queued(seed_key(name, seed, seeds[0]), job, None if name == "fedavg-iid" else name)
            prev = found.name if found else name
        fedavg = out.get(seed_key("fedavg-source", seed, seeds[0]))
        for key, job in _privacy_curve(p, bases[seed], seed, seeds[0],
                                       parent=fedavg.name if fedavg else "fedavg-source"):
            kept_or_queued(key, job, job.name)
    out.update(zip(keys, run_batch(jobs, progress=p.progress) if jobs else [], strict=True))
    for seed in seeds:
        cfg = derive(p.cfg, {**recipe, "fl.partitioning": "source", "train.seed": seed})
        out[seed_key("local-only", seed, seeds[0])] = find_run(cfg.results, "federated", name="local-only",
                                                           cfg=cfg) or run_local_only(
            cfg, name="local-only", parent=parent,
            note="Each client trains alone on its own generator: the lower bound federation must beat.",
            progress=p.progress)
        out.update(_fully_federated(p, bases[seed], seed, seeds[0]))
    return out


def _recipe_note(recipe: dict, over: dict) -> str:
    """What of the search's accepted recipe a run takes: its client settings; the run's own strategy
    replaces the search's (FedAvgM's server step is then not applied)."""
    if not recipe:
        return ""
    kept = {k: v for k, v in recipe.items() if k not in over}
    if recipe.get("fl.strategy") != over.get("fl.strategy", recipe.get("fl.strategy")):
        kept = {k: v for k, v in kept.items() if not k.startswith("fl.server-")}
        dropped = f" (the search's {recipe['fl.strategy']} server settings are not applied: this run is {over['fl.strategy']})"
    else:
        dropped = ""
    return f" From the search's accepted recipe: {kept}{dropped}."


def _federated(cfg, name: str, note: str, p, parent: str | None = None, stage: str = "federated") -> Run:
    """The finished run of ``name`` with ``cfg`` (kept from before a crash), else a new Flower run."""
    from dfflab.federated.launcher import run_federated

    return find_run(cfg.results, stage, name=name, cfg=cfg) or run_federated(
        cfg, name=name, parent=parent, note=note, progress=p.progress)


def _fully_federated(p, base, seed: int, first: int) -> dict:
    """Per ``pipeline.fl-ssl`` method: federated SSL, then FedAvg by source from its backbone, and
    from the centralized SSL backbone of the same method (scratch is ``fedavg-source``)."""
    from dfflab.federated.ssl_server import ssl_config

    out = {}
    for method in p.cfg.pipeline.fl_ssl:
        cfg = ssl_config(derive(base, {"ssl.method": method}))
        fed = _federated(cfg, f"ssl-{method}", f"Federated {method}: each client pretrains on its own unlabeled "
                         "images, the server averages the online network; no image is pooled.", p,
                         parent=p.run_dir("ssl", method), stage="federated-ssl")
        out[seed_key(f"ssl-{method}", seed, first)] = fed
        inits = {f"fedavg-source-fed{method}-init": (str(fed.dir), f"the federated {method} run")}
        if p.run_dir("ssl", method):
            inits[f"fedavg-source-{method}-init"] = (p.run_dir("ssl", method), f"the centralized {method} run")
        for name, (init, what) in inits.items():
            out[seed_key(name, seed, first)] = _federated(
                derive(base, {"train.init": init}), name, f"FedAvg by source, backbone from {what}: does "
                "pretraining help federated fine-tuning, and must it pool the images?", p, parent=fed.name)
    return out


def _privacy_curve(p, base, seed: int, first: int, parent: str) -> list[tuple[str, object]]:
    """DP-FedAvg by source at ``pipeline.dp-clip`` for each ``pipeline.dp-noises``: the privacy-utility
    curve, as (result key, batch job) pairs."""
    from dfflab.federated.launcher import Job

    out = []
    for z in p.cfg.pipeline.dp_noises:
        name = f"dp-fedavg-source-z{z}"
        cfg = derive(base, {"fl.dp-clip": p.cfg.pipeline.dp_clip, "fl.dp-noise": float(z)})
        out.append((seed_key(name, seed, first), Job(
            cfg, name, parent, f"DP-FedAvg: client updates clipped to {p.cfg.pipeline.dp_clip:g}, noise multiplier "
            f"{z}; epsilon per round from the RDP accountant.")))
    return out
