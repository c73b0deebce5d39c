"""`presenter export MODEL --format onnx -o DIR`: ONNX graphs of the inference networks with meta.json."""
from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_export(args: argparse.Namespace) -> None:
    from presenter.errors import UserError
    from presenter.export.registry import NETWORKS, export_network, get_network

    if args.format != "onnx":
        raise UserError(f"--format {args.format}: only 'onnx' is written here; TensorRT plans are built from the "
                        f"ONNX graph on the GPU that runs them (presenter.engines.tensorrt)")
    names = list(NETWORKS) if args.model == "all" else [get_network(args.model).name]
    for name in names:
        onnx_path, meta_path = export_network(name, args.out, opset=args.opset, weights=args.weights,
                                              fp16=args.fp16, int8=args.int8)
        print(f"{name}: {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB), {meta_path}")


def add_export_command(sub: argparse._SubParsersAction, formatter: type) -> None:
    """Register `presenter export` on the top-level parser."""
    from presenter.export.graph import OPSET
    from presenter.export.registry import NETWORKS

    models = "\n".join(f"  {n.name:<17} {n.summary}" for n in NETWORKS.values())
    e = sub.add_parser("export", formatter_class=formatter, help="export an inference network to ONNX (+ meta.json)",
                       description="Export an inference network to ONNX: writes DIR/MODEL.onnx and DIR/MODEL.meta.json "
                                   "(opset, input/output names and shapes with dynamic axes and their ranges, sha256 "
                                   "of the source weights and of the graph, ONNX Runtime vs torch error), each to a "
                                   "temporary name, checked with onnx.checker and ONNX Runtime, then renamed.\n\n"
                                   f"Models:\n{models}\n  all               every model above\n\n"
                                   "Examples:\n  presenter export syncformer --format onnx -o engines-out\n"
                                   "  presenter export all -o ~/presenter-onnx\n"
                                   "  presenter export generator --weights ~/runs/gen/best -o out --opset 18")
    e.add_argument("model", choices=[*NETWORKS, "all"], metavar="MODEL", help="network to export (see Models above)")
    e.add_argument("-o", "--out", type=Path, required=True, help="output folder (created if missing)")
    e.add_argument("--format", default="onnx", help="output format (only onnx)")
    e.add_argument("--opset", type=int, default=OPSET, help="ONNX opset version (14 to 20)")
    e.add_argument("--weights", type=Path, default=None,
                   help="weights folder (config.json + model.safetensors; for whisper the folder of model.bin); "
                        "default: the shipped weights")
    e.add_argument("--fp16", action="store_true", help="fp16 graph (refused, with the reason: TensorRT makes fp16 "
                                                       "from the fp32 graph)")
    e.add_argument("--int8", action="store_true", help="int8 graph by ONNX Runtime static quantisation "
                                                       "(refused where parity fails, with the measured reason)")
    e.set_defaults(func=_cmd_export)
