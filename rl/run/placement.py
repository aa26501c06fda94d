"""Where the engines and trainer ranks run: one Ray placement group built from the config.

Every bundle is reserved before any actor starts. A request the cluster can never hold fails at once, naming the
resource that is short; one that could fit but does not become ready within `cluster.timeout_s` fails the same
way. Nothing waits forever.
"""

from __future__ import annotations

from dataclasses import dataclass


class PlacementError(RuntimeError):
    """The cluster cannot hold the engines and trainer ranks the config asks for."""


@dataclass
class Plan:
    bundles: list[dict[str, float]]
    engine_bundles: list[int]  # bundle index of each engine
    rank_bundles: list[int]  # bundle index of each trainer rank (empty when the trainer runs in the driver)
    share: float  # fraction of its bundle an actor asks for: 1 split, 1/2 colocated (engine and rank share it)


def _res(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}


def plan(num_engines: int, engine_cpus: float, engine_gpus: float, ranks: int, rank_cpus: float, rank_gpus: float,
         colocate: bool) -> Plan:
    """Split: one bundle per engine, then one per trainer rank. Colocated: max(engines, ranks) bundles, each
    large enough for either; engine i and rank i share bundle i, each asking for half of it. (vLLM's sleep mode,
    which would free an engine's GPU memory while its rank trains, is not wired in: it is GPU-only.)"""
    remote_ranks = ranks if ranks > 1 else 0  # one rank trains in the driver process
    if not colocate or not remote_ranks:
        bundles = [_res(engine_cpus, engine_gpus)] * num_engines + [_res(rank_cpus, rank_gpus)] * remote_ranks
        return Plan(bundles, list(range(num_engines)), list(range(num_engines, num_engines + remote_ranks)), 1.0)
    n = max(num_engines, remote_ranks)
    bundles = [_res(max(engine_cpus, rank_cpus), max(engine_gpus, rank_gpus))] * n
    return Plan(bundles, list(range(num_engines)), list(range(remote_ranks)), 0.5)


def check_fits(bundles: list[dict[str, float]], strategy: str, nodes: list[dict[str, float]]) -> None:
    """Raises PlacementError when `bundles` can never be placed on nodes with these total resources."""
    for key in sorted({k for b in bundles for k in b}):
        want = sum(b.get(key, 0.0) for b in bundles)
        have = sum(n.get(key, 0.0) for n in nodes)
        if want > have + 1e-9:
            raise PlacementError(f"placement needs {want:g} {key} in all, the cluster has {have:g} "
                                 f"({len(nodes)} node(s)); lower rollout.num_engines/engine_* or trainer.ranks/rank_*, "
                                 f"or add nodes")
    for b in bundles:
        if not any(all(n.get(k, 0.0) + 1e-9 >= v for k, v in b.items()) for n in nodes):
            raise PlacementError(f"no node can hold a bundle of {b}; the largest nodes have "
                                 f"{max(nodes, key=lambda n: n.get('CPU', 0.0)) if nodes else {}}")
    if strategy == "STRICT_SPREAD" and len(bundles) > len(nodes):
        raise PlacementError(f"cluster.strategy=STRICT_SPREAD puts each of {len(bundles)} bundles on its own node; "
                             f"the cluster has {len(nodes)}")


def reserve(bundles: list[dict[str, float]], strategy: str, timeout_s: float):
    """A ready placement group, or PlacementError."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    check_fits(bundles, strategy, nodes)
    pg = placement_group(bundles, strategy=strategy)
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        raise PlacementError(f"placement of {len(bundles)} bundles {bundles} (strategy {strategy}) was not ready "
                             f"after {timeout_s:g} s; free now: {ray.available_resources()}") from None
    return pg


def actor_options(pg, bundle: int, plan: Plan) -> dict:
    """Ray actor options that put an actor in `bundle` of `pg`, asking for its share of the bundle."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    res = plan.bundles[bundle]
    return {"num_cpus": res["CPU"] * plan.share, "num_gpus": res.get("GPU", 0.0) * plan.share,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=bundle)}
