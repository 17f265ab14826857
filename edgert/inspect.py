"""What a model contains and what edgert can run of it: the data behind `edgert inspect`."""

from __future__ import annotations

from typing import Any

from edgert.kernels.registry import KernelRegistry, OpContext
from edgert.model.graph import Graph, Tensor


def tensor_summary(t: Tensor) -> dict[str, Any]:
    q = t.quantization
    return {
        "name": t.name,
        "index": t.index,
        "shape": list(t.shape),
        "shape_signature": list(t.shape_signature),
        "dtype": t.type_name.lower() if t.type_name in ("RESOURCE", "VARIANT", "STRING", "INT4", "BFLOAT16") else str(t.dtype),
        "quantization": None if q is None else {
            "scales": list(q.scales), "zero_points": list(q.zero_points), "quantized_dimension": q.quantized_dimension,
        },
    }


def inspect_graph(graph: Graph, registry: KernelRegistry | None) -> dict[str, Any]:
    """A JSON-ready summary of a graph; `registry` None skips the "can edgert run it" column."""
    ops: dict[tuple[str, int], dict[str, Any]] = {}
    for sg in graph.subgraphs:
        for op in sg.operators:
            row = ops.setdefault((op.name, op.version), {"op": op.name, "version": op.version, "count": 0,
                                                         "supported": True, "reason": None})
            row["count"] += 1
            if registry is not None:
                found = registry.find(OpContext.of(sg, op))
                if isinstance(found, str) and row["supported"]:
                    row["supported"], row["reason"] = False, found
            else:
                row["supported"] = None
    tensors = [t for sg in graph.subgraphs for t in sg.tensors]
    constants = [t for t in tensors if t.is_constant]
    activations = [t for t in tensors if not t.is_constant and not t.is_variable]
    histogram = sorted(ops.values(), key=lambda r: (-r["count"], r["op"], r["version"]))
    return {
        "model": graph.path,
        "sha256": graph.sha256,
        "file_bytes": graph.file_bytes,
        "schema_version": graph.schema_version,
        "description": graph.description,
        "subgraphs": [{"index": sg.index, "name": sg.name, "operators": len(sg.operators), "tensors": len(sg.tensors)}
                      for sg in graph.subgraphs],
        "inputs": [tensor_summary(graph.tensors[i]) for i in graph.inputs],
        "outputs": [tensor_summary(graph.tensors[i]) for i in graph.outputs],
        "operators": histogram,
        "supported": None if registry is None else all(r["supported"] for r in histogram),
        "tensor_counts": {"total": len(tensors), "constant": len(constants), "activation": len(activations),
                          "variable": sum(t.is_variable for t in tensors)},
        "weight_bytes": graph.weight_bytes,
        "activation_bytes_sum": sum(t.nbytes for t in activations),
        "metadata": sorted(graph.metadata),
    }


def format_inspect(info: dict[str, Any]) -> str:
    """The human-readable form of inspect_graph's result."""
    def spec(t: dict[str, Any]) -> str:
        q = t["quantization"]
        qs = ""
        if q:
            qs = (f"  q: scale={q['scales'][0]:.6g} zp={q['zero_points'][0]}" if len(q["scales"]) == 1
                  else f"  q: per-channel x{len(q['scales'])} (axis {q['quantized_dimension']})")
        return f"  {t['name']}: {t['dtype']}{t['shape']}{qs}"

    lines = [f"model   {info['model']}", f"sha256  {info['sha256']}",
             f"size    {info['file_bytes']:,} bytes, schema v{info['schema_version']}, "
             f"{len(info['subgraphs'])} subgraph(s)", "inputs:"]
    lines += [spec(t) for t in info["inputs"]]
    lines.append("outputs:")
    lines += [spec(t) for t in info["outputs"]]
    lines.append("operators:")
    for r in info["operators"]:
        mark = {True: "yes", False: "NO ", None: "   "}[r["supported"]]
        why = f"  ({r['reason']})" if r["reason"] else ""
        lines.append(f"  {mark} {r['op']:<28} v{r['version']:<3} x{r['count']}{why}")
    c = info["tensor_counts"]
    lines.append(f"tensors: {c['total']} ({c['constant']} constant, {c['activation']} activation, {c['variable']} variable)")
    lines.append(f"weights: {info['weight_bytes']:,} bytes (in the mapped file)")
    lines.append(f"activations: {info['activation_bytes_sum']:,} bytes if every tensor had its own buffer")
    if info["supported"] is not None:
        lines.append("edgert can run this model" if info["supported"] else "edgert cannot run this model yet (ops marked NO)")
    return "\n".join(lines)
