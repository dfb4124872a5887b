"""Duplicate groups across every pass without a global table: label propagation over edge files
partitioned by uid hash.

Each emitter (a sha256 partition, a leaf of clusters) writes its edges, both directions, to
EDGES/{p}/{emitter}.parquet with p = hash(node uid) % P; an edge carries both ends' keep keys
(rows.keep_keys) and direct-contamination flags. A row linked by sha256 in one partition and by
embedding in another is one node with edges from both. Then, per node, label = the smallest keep
key of its connected component, found by min-label propagation: pass 0 (`InitPartition`, one task
per p) sets each node's label to the smallest key among itself and its neighbours and sends it
along every edge; pass t (`Propagate`) lowers labels by the messages addressed to its nodes and
sends the nodes that changed on to their neighbours. Contamination rides along as an OR. Messages
are files MSGS/{t}/{target p}/{source p}.parquet, written only when non-empty, so the driver stops
at the first pass that sent none. Emitters make star edges (every member → its group's kept
row), so a component's diameter, and the number of passes, stays small. Memory per task is one
partition's nodes and edges, bounded by choosing P from the row count (`group_rows` a task).
`Scatter` finally files each node's label and taint by pool shard for the shard writers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import fsio
from curation.neardup.rows import list_parquet
from curation.runner import ShardContext, ShardTask, stable_bucket

EDGES_DIR, ADJACENCY_DIR, STATE_DIR, MSGS_DIR, RESULTS_DIR = (
    "edges",
    "groups/adjacency",
    "groups/state",
    "groups/msgs",
    "results",
)


def part_name(p: int) -> str:
    return f"{p:05d}"


def pass_name(t: int) -> str:
    return f"{t:03d}"


def partition_of(uids: list[str], partitions: int) -> np.ndarray:
    return np.array([stable_bucket(u, partitions) for u in uids], np.int64).reshape(-1)


def write_edges(
    ctx: ShardContext,
    emitter: str,
    nodes: pa.Table,
    src: np.ndarray,
    dst: np.ndarray,
    partitions: int,
) -> int:
    """Write edges src[i] - dst[i] between rows of `nodes` (uid, shard, key, taint), both
    directions, into their node's partition; return how many edges."""
    if len(src) == 0:
        return 0
    a = np.concatenate([src, dst])
    b = np.concatenate([dst, src])
    edges = pa.table(
        {
            "node": nodes["uid"].take(pa.array(a)),
            "node_shard": nodes["shard"].take(pa.array(a)),
            "node_key": nodes["key"].take(pa.array(a)),
            "node_taint": nodes["taint"].take(pa.array(a)),
            "peer": nodes["uid"].take(pa.array(b)),
            "peer_key": nodes["key"].take(pa.array(b)),
            "peer_taint": nodes["taint"].take(pa.array(b)),
        }
    )
    part = partition_of(edges["node"].to_pylist(), partitions)
    for p in np.unique(part):
        chunk = edges.filter(pa.array(part == p)).sort_by(
            [("node", "ascending"), ("peer", "ascending")]
        )
        ctx.write_parquet(f"{EDGES_DIR}/{part_name(int(p))}/{emitter}.parquet", chunk)
    return len(src)


def star_edges(group: np.ndarray, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Edges from every member of each group (same `group` value, more than one member) to the
    member with the smallest key."""
    if len(group) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((np.array(keys, dtype=object).astype(str), group))
    sorted_group = group[order]
    first = np.r_[True, sorted_group[1:] != sorted_group[:-1]]
    head = order[first][np.cumsum(first) - 1]  # each row's group head (smallest key)
    members = order[~first]
    return members, head[~first]


def _send(ctx: ShardContext, t: int, source: int, table: pa.Table, partitions: int) -> int:
    """Reduce messages (node, label, taint) per node and file them by target partition."""
    if table.num_rows == 0:
        return 0
    table = _reduce(table, ("label", "taint")).sort_by("node")
    target = partition_of(table["node"].to_pylist(), partitions)
    for q in np.unique(target):
        ctx.write_parquet(
            f"{MSGS_DIR}/{pass_name(t)}/{part_name(int(q))}/{part_name(source)}.parquet",
            table.filter(pa.array(target == q)),
        )
    return table.num_rows


def _reduce(table: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """One row per node: the smallest shard / label, any taint."""
    how = {"shard": "min", "label": "min", "taint": "any"}
    reduced = table.group_by("node", use_threads=False).aggregate([(c, how[c]) for c in columns])
    return pa.table({"node": reduced["node"], **{c: reduced[f"{c}_{how[c]}"] for c in columns}})


def _messages_along(adjacency: pa.Table, state: pa.Table) -> pa.Table:
    """For each edge node → peer whose node is in `state`: (peer, node's label, node's taint)."""
    position = pc.index_in(adjacency["node"], value_set=state["node"])
    hit = pc.is_valid(position)
    edges = adjacency.filter(hit)
    position = position.filter(hit)
    return pa.table(
        {
            "node": edges["peer"],
            "label": state["label"].take(position),
            "taint": state["taint"].take(position),
        }
    )


@dataclass(frozen=True)
class InitPartition:
    """Pass 0 for partition p (task id = part_name(p))."""

    work: str
    partitions: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        p = int(task.shard_id)
        files = list_parquet(fsio.join(self.work, EDGES_DIR, task.shard_id))
        edges = pa.concat_tables([fsio.read_parquet(url) for url in files]) if files else None
        if edges is None or edges.num_rows == 0:
            ctx.stats.extra["messages"] = 0
            ctx.write_parquet(f"{STATE_DIR}/{pass_name(0)}/{task.shard_id}.parquet", _empty_state())
            ctx.write_parquet(f"{ADJACENCY_DIR}/{task.shard_id}.parquet", _empty_adjacency())
            return
        ctx.stats.rows_in = edges.num_rows
        candidates = pa.table(
            {
                "node": pa.concat_arrays(
                    [edges["node"].combine_chunks(), edges["node"].combine_chunks()]
                ),
                "shard": pa.concat_arrays(
                    [edges["node_shard"].combine_chunks(), edges["node_shard"].combine_chunks()]
                ),
                "label": pa.concat_arrays(
                    [edges["node_key"].combine_chunks(), edges["peer_key"].combine_chunks()]
                ),
                "taint": pa.concat_arrays(
                    [edges["node_taint"].combine_chunks(), edges["peer_taint"].combine_chunks()]
                ),
            }
        )
        state = _reduce(candidates, ("shard", "label", "taint")).sort_by("node")
        adjacency = (
            edges.select(["node", "peer"])
            .group_by(["node", "peer"], use_threads=False)
            .aggregate([])
            .sort_by([("node", "ascending"), ("peer", "ascending")])
        )
        ctx.stats.rows_out = state.num_rows
        ctx.write_parquet(f"{ADJACENCY_DIR}/{task.shard_id}.parquet", adjacency)
        ctx.write_parquet(f"{STATE_DIR}/{pass_name(0)}/{task.shard_id}.parquet", state)
        ctx.stats.extra["messages"] = _send(
            ctx, 1, p, _messages_along(adjacency, state), self.partitions
        )


@dataclass(frozen=True)
class Propagate:
    """Pass t >= 1 for partition p: apply the messages, send the changes on."""

    work: str
    partitions: int
    t: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        p = int(task.shard_id)
        state = fsio.read_parquet(
            fsio.join(self.work, STATE_DIR, pass_name(self.t - 1), f"{task.shard_id}.parquet")
        )
        files = list_parquet(fsio.join(self.work, MSGS_DIR, pass_name(self.t), task.shard_id))
        changed = np.zeros(state.num_rows, dtype=bool)
        if files:
            inbox = pa.concat_tables([fsio.read_parquet(url) for url in files])
            inbox = _reduce(inbox, ("label", "taint"))
            position = pc.index_in(state["node"], value_set=inbox["node"])
            has = pc.is_valid(position).to_numpy(zero_copy_only=False)
            label = state["label"].to_numpy(zero_copy_only=False).astype(object)
            taint = state["taint"].to_numpy(zero_copy_only=False).copy()
            where = np.flatnonzero(has)
            got = position.to_numpy(zero_copy_only=False)[where].astype(np.int64)
            new_label = inbox["label"].to_numpy(zero_copy_only=False).astype(object)[got]
            new_taint = inbox["taint"].to_numpy(zero_copy_only=False)[got]
            lower = new_label < label[where]
            raised = new_taint & ~taint[where]
            label[where[lower]] = new_label[lower]
            taint[where[raised]] = True
            changed[where[lower | raised]] = True
            state = state.set_column(2, "label", pa.array(label.tolist(), pa.string()))
            state = state.set_column(3, "taint", pa.array(taint, pa.bool_()))
        ctx.stats.rows_in = state.num_rows
        ctx.stats.rows_out = int(changed.sum())
        ctx.write_parquet(f"{STATE_DIR}/{pass_name(self.t)}/{task.shard_id}.parquet", state)
        sent = 0
        if changed.any():
            adjacency = fsio.read_parquet(
                fsio.join(self.work, ADJACENCY_DIR, f"{task.shard_id}.parquet")
            )
            moved = state.filter(pa.array(changed))
            sent = _send(ctx, self.t + 1, p, _messages_along(adjacency, moved), self.partitions)
        ctx.stats.extra["messages"] = sent


@dataclass(frozen=True)
class Scatter:
    """File partition p's final labels by pool shard: RESULTS/{shard}/{p}.parquet."""

    work: str
    final_pass: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        state = fsio.read_parquet(
            fsio.join(self.work, STATE_DIR, pass_name(self.final_pass), f"{task.shard_id}.parquet")
        )
        ctx.stats.rows_in = state.num_rows
        kept = pc.equal(pc.utf8_slice_codeunits(state["label"], 8), state["node"])
        ctx.stats.extra["groups"] = int(pc.sum(kept).as_py() or 0)
        ctx.stats.extra["tainted_groups"] = int(pc.sum(pc.and_(kept, state["taint"])).as_py() or 0)
        shards = state["shard"]
        for shard in pc.unique(shards).to_pylist():
            part = state.filter(pc.equal(shards, shard)).select(["node", "label", "taint"])
            ctx.write_parquet(f"{RESULTS_DIR}/{shard}/{task.shard_id}.parquet", part)


def _empty_state() -> pa.Table:
    return pa.table(
        {
            "node": pa.array([], pa.string()),
            "shard": pa.array([], pa.string()),
            "label": pa.array([], pa.string()),
            "taint": pa.array([], pa.bool_()),
        }
    )


def _empty_adjacency() -> pa.Table:
    return pa.table({"node": pa.array([], pa.string()), "peer": pa.array([], pa.string())})
