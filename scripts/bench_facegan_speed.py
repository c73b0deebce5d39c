"""Speed model for the generator: MobileStyleGAN's synthesis network against a plain StyleGAN2-type stack.

Measures in one run, with ONNX Runtime on the CPU (2 intra-op threads, batch 1, fp32):
  1. the shipped MobileStyleGAN synthesis network (random-face's OpenVINO IR) at 1024 px, converted
     to ONNX by the small IR -> ONNX translator below (OpenVINO has no ONNX writer), checked
     against OpenVINO's own output, and also timed in OpenVINO with 2 threads;
  2. our PyTorch copy of that design (modulated depthwise-separable convolutions, Haar inverse-DWT
     upsampling, a wavelet-domain RGB head) with random weights: the full 1024 px widths (checks
     the copy against the IR's parameters and FLOPs), and cut-down copies at 256 px;
  3. a plain StyleGAN2-type block stack at 256 px (two modulated 3x3 convolutions per resolution,
     bilinear upsampling, skip toRGB) at the same widths.
FLOPs are counted, not estimated: for the IR from its static shapes (convolutions, transposed
convolutions, matrix products: 2 FLOPs per multiply-add), for the PyTorch models with
torch.utils.flop_counter.FlopCounterMode (same convention). Element-wise work is not counted.

Usage: nice -n 10 .venv/bin/python scripts/bench_facegan_speed.py [--repeats 10] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

THREADS = 2


# ---------------------------------------------------------------------------------------------
# OpenVINO IR -> ONNX (the op set of random-face's SynthesisNetwork.xml; static shapes only)
# ---------------------------------------------------------------------------------------------

def ir_to_onnx(xml: Path, out: Path) -> tuple[int, float]:
    """Translate an OpenVINO IR with static shapes to ONNX; returns (parameters, GFLOPs).

    Shape arithmetic (ShapeOf, Gather, Concat, ... on constants) is folded here in numpy, so the
    ONNX graph holds only the tensor work.
    """
    import onnx
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper

    model = ov.Core().read_model(str(xml))
    const: dict[str, np.ndarray] = {}      # folded values by output name
    nodes, inits = [], []
    params = 0
    macs = 0

    def name(v: "ov.Output") -> str:
        return f"{v.get_node().get_friendly_name()}:{v.get_index()}"

    def init(arr: np.ndarray, hint: str) -> str:
        n = f"init_{len(inits)}_{hint}"
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), n))
        return n

    def inp(op, i: int) -> str:
        v = op.input_value(i)
        n = name(v)
        if n in const:
            arr = const[n]
            return init(arr if arr.dtype != np.float64 else arr.astype(np.float32), "c")
        return n

    graph_inputs, graph_outputs = [], []
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        ins = [op.input_value(i) for i in range(op.get_input_size())]
        vals = [const.get(name(v)) for v in ins]
        out_names = [name(op.output(i)) for i in range(op.get_output_size())]
        out_shape = [list(op.get_output_shape(i)) for i in range(op.get_output_size())]
        a = op.get_attributes()
        if t == "Constant":
            const[out_names[0]] = op.get_data().copy()
            continue
        if t == "ShapeOf":
            const[out_names[0]] = np.array(list(ins[0].get_shape()), np.int64)
            continue
        if t == "Parameter":
            graph_inputs.append(helper.make_tensor_value_info(out_names[0], TensorProto.FLOAT, out_shape[0]))
            continue
        if t == "Result":
            graph_outputs.append(helper.make_tensor_value_info(inp(op, 0), TensorProto.FLOAT, out_shape[0]))
            continue
        if all(v is not None for v in vals):            # shape arithmetic on constants: fold it
            const[out_names[0]] = _fold(t, vals, a, out_shape)
            continue
        if t in ("Add", "Multiply"):
            nodes.append(helper.make_node({"Add": "Add", "Multiply": "Mul"}[t], [inp(op, 0), inp(op, 1)], out_names))
        elif t == "MatMul":
            b = vals[1]
            assert b is not None and not a["transpose_a"], "only x @ W with a constant W is expected"
            b = b.T if a["transpose_b"] else b
            params += b.size
            macs += int(np.prod(out_shape[0])) * b.shape[0]
            nodes.append(helper.make_node("MatMul", [inp(op, 0), init(b, "w")], out_names))
        elif t in ("Convolution", "GroupConvolution"):
            w = vals[1]
            assert w is not None
            group = 1
            if t == "GroupConvolution":                  # [G, Cout/G, Cin/G, kh, kw] -> [Cout, Cin/G, kh, kw]
                group = w.shape[0]
                w = w.reshape(-1, *w.shape[2:])
            params += w.size
            macs += int(np.prod(out_shape[0])) * int(np.prod(w.shape[1:]))
            nodes.append(helper.make_node("Conv", [inp(op, 0), init(w, "w")], out_names, group=group,
                                          strides=a["strides"], dilations=a["dilations"],
                                          pads=list(a["pads_begin"]) + list(a["pads_end"])))
        elif t == "GroupConvolutionBackpropData":
            w = vals[1]                                  # [G, Cin/G, Cout/G, kh, kw] -> [Cin, Cout/G, kh, kw]
            assert w is not None
            group = w.shape[0]
            w = w.reshape(-1, *w.shape[2:])
            params += w.size
            macs += int(np.prod(list(ins[0].get_shape()))) * int(np.prod(w.shape[1:]))
            nodes.append(helper.make_node("ConvTranspose", [inp(op, 0), init(w, "w")], out_names, group=group,
                                          strides=a["strides"], dilations=a["dilations"],
                                          pads=list(a["pads_begin"]) + list(a["pads_end"]),
                                          output_padding=a["output_padding"]))
        elif t == "PRelu":
            nodes.append(helper.make_node("PRelu", [inp(op, 0), inp(op, 1)], out_names))
        elif t == "Reshape":
            nodes.append(helper.make_node("Reshape", [inp(op, 0), init(np.array(out_shape[0], np.int64), "s")],
                                          out_names))
        elif t == "Squeeze":
            nodes.append(helper.make_node("Reshape", [inp(op, 0), init(np.array(out_shape[0], np.int64), "s")],
                                          out_names))
        elif t == "VariadicSplit":
            axis = int(vals[1])
            nodes.append(helper.make_node("Split", [inp(op, 0), init(np.array([s[axis] for s in out_shape], np.int64),
                                                                      "split")], out_names, axis=axis))
        elif t in ("Broadcast", "Tile"):
            assert t == "Broadcast" or list(ins[0].get_shape()) == out_shape[0], "only Tile by ones is expected"
            nodes.append(helper.make_node("Expand", [inp(op, 0), init(np.array(out_shape[0], np.int64), "s")],
                                          out_names))
        else:
            raise NotImplementedError(f"IR op {t} ({op.get_friendly_name()}) has no ONNX translation here")
    g = helper.make_graph(nodes, xml.stem, graph_inputs, graph_outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return params, 2 * macs / 1e9


def _fold(t: str, vals: list[np.ndarray], a: dict, out_shape: list[list[int]]) -> np.ndarray:
    """numpy evaluation of the constant subgraphs of the IR (shapes, indices, weight scaling)."""
    if t == "Gather":
        return np.take(vals[0], vals[1], axis=int(vals[2]))
    if t == "Unsqueeze":
        return np.reshape(vals[0], out_shape[0])
    if t == "Squeeze":
        return np.reshape(vals[0], out_shape[0])
    if t == "Concat":
        return np.concatenate([np.atleast_1d(v) for v in vals], axis=a["axis"])
    if t in ("Broadcast", "Tile", "Reshape"):
        return np.broadcast_to(vals[0], out_shape[0]).copy() if t != "Reshape" else vals[0].reshape(out_shape[0])
    if t == "Multiply":
        return vals[0] * vals[1]
    if t == "Add":
        return vals[0] + vals[1]
    raise NotImplementedError(f"cannot fold IR op {t}")


# ---------------------------------------------------------------------------------------------
# PyTorch copies: MobileStyleGAN-type (depthwise-separable modulated convs, inverse DWT) and
# a plain StyleGAN2-type stack
# ---------------------------------------------------------------------------------------------

def haar_idwt(x: Tensor) -> Tensor:
    """Inverse Haar DWT: (B, 4C, H, W) bands [LL, LH, HL, HH] -> (B, C, 2H, 2W)."""
    ll, lh, hl, hh = x.chunk(4, dim=1)
    # The four output sub-pixels (top-left, top-right, bottom-left, bottom-right) of each input pixel.
    tl, tr = (ll + lh + hl + hh) / 2, (ll - lh + hl - hh) / 2
    bl, br = (ll + lh - hl - hh) / 2, (ll - lh - hl + hh) / 2
    b, c, h, w = ll.shape
    return F.pixel_shuffle(torch.stack([tl, tr, bl, br], dim=2).reshape(b, 4 * c, h, w), 2)


class ModulatedDWSConv(nn.Module):
    """Style-modulated depthwise 3x3 + pointwise 1x1, demodulated, + noise + bias + leaky ReLU."""

    def __init__(self, cin: int, cout: int, style_dim: int = 512, *, activate: bool = True) -> None:
        super().__init__()
        self.affine = nn.Linear(style_dim, cin)
        self.dw = nn.Parameter(torch.randn(cin, 1, 3, 3) / 3)
        self.pw = nn.Parameter(torch.randn(cout, cin, 1, 1) / math.sqrt(cin))
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))
        self.noise_strength = nn.Parameter(torch.zeros(1))
        self.activate = activate

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        s = self.affine(w)                                               # (B, Cin)
        x = x * s[:, :, None, None]
        x = F.conv2d(x, self.dw, padding=1, groups=x.shape[1])
        x = F.conv2d(x, self.pw)
        # Demodulation: the expected output norm from the style and the pointwise weights.
        demod = torch.rsqrt((s[:, None, :] ** 2 * self.pw[None, :, :, 0, 0] ** 2).sum(-1) + 1e-8)   # (B, Cout)
        x = x * demod[:, :, None, None]
        if not self.activate:
            return x + self.bias
        noise = torch.randn(1, 1, *x.shape[2:])
        return F.leaky_relu(x + self.noise_strength * noise + self.bias, 0.2)


class ModulatedConv(nn.Module):
    """StyleGAN2's modulated/demodulated k x k convolution (batch 1: weights scaled directly)."""

    def __init__(self, cin: int, cout: int, k: int = 3, style_dim: int = 512, *, demod: bool = True,
                 activate: bool = True) -> None:
        super().__init__()
        self.affine = nn.Linear(style_dim, cin)
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k) / math.sqrt(cin * k * k))
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))
        self.noise_strength = nn.Parameter(torch.zeros(1))
        self.demod, self.activate, self.k = demod, activate, k

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        s = self.affine(w)                                               # (1, Cin)
        wt = self.weight * s[0][None, :, None, None]                     # (Cout, Cin, k, k)
        if self.demod:
            wt = wt * torch.rsqrt((wt ** 2).sum((1, 2, 3), keepdim=True) + 1e-8)
        x = F.conv2d(x, wt, padding=self.k // 2) + self.bias
        if not self.activate:
            return x
        return F.leaky_relu(x + self.noise_strength * torch.randn(1, 1, *x.shape[2:]), 0.2)


@dataclass(frozen=True)
class MobileConfig:
    widths: tuple[int, ...]   # block output widths at 8, 16, ... px (wavelet domain: 4 bands x width/4 next)
    base: int = 512           # constant input and 4 px conv width

    @classmethod
    def original_1024(cls) -> "MobileConfig":
        """random-face's network: blocks at 8 ... 512 px, RGB wavelets at 512 -> 1024 px."""
        return cls(widths=(512, 512, 512, 512, 256, 128, 64))


class MobileSynthesis(nn.Module):
    """MobileStyleGAN-type synthesis: w (1, 512) -> RGB (1, 3, 2 * 2^(2 + len(widths)))."""

    def __init__(self, cfg: MobileConfig) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.randn(1, cfg.base, 4, 4))
        self.conv0 = ModulatedConv(cfg.base, cfg.base)
        blocks, cin = [], cfg.base
        for c in cfg.widths:
            blocks.append(nn.ModuleList([ModulatedDWSConv(cin // 4, c), ModulatedDWSConv(c, c)]))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.to_wavelets = ModulatedConv(cin, 12, k=1, demod=False, activate=False)

    def forward(self, w: Tensor) -> Tensor:
        x = self.conv0(self.const, w)
        for conv1, conv2 in self.blocks:
            x = conv2(conv1(haar_idwt(x), w), w)          # upsample in the wavelet domain, then two convs
        return haar_idwt(self.to_wavelets(x, w))          # (1, 12, R/2, R/2) -> (1, 3, R, R)


class StyleGAN2Synthesis(nn.Module):
    """Plain StyleGAN2-type stack: per resolution two modulated 3x3 convs, bilinear up, skip toRGB."""

    def __init__(self, widths: dict[int, int]) -> None:
        super().__init__()
        res = sorted(widths)
        self.const = nn.Parameter(torch.randn(1, widths[4], 4, 4))
        self.conv0 = ModulatedConv(widths[4], widths[4])
        self.rgb0 = ModulatedConv(widths[4], 3, k=1, demod=False, activate=False)
        self.blocks = nn.ModuleList()
        for lo, hi in zip(res[:-1], res[1:]):
            self.blocks.append(nn.ModuleList([ModulatedConv(widths[lo], widths[hi]),
                                              ModulatedConv(widths[hi], widths[hi]),
                                              ModulatedConv(widths[hi], 3, k=1, demod=False, activate=False)]))

    def forward(self, w: Tensor) -> Tensor:
        x = self.conv0(self.const, w)
        rgb = self.rgb0(x, w)
        for conv1, conv2, to_rgb in self.blocks:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = conv2(conv1(x, w), w)
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + to_rgb(x, w)
        return rgb


def torch_flops(model: nn.Module, w: Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(w)
    return fc.get_total_flops() / 1e9


def export_torch(model: nn.Module, w: Tensor, path: Path) -> None:
    import warnings

    # The TorchScript exporter handles these plain graphs without onnxscript (not installed here).
    warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
    with torch.no_grad():
        torch.onnx.export(model, (w,), str(path), input_names=["style"], output_names=["img"],
                          opset_version=17, dynamo=False)


def ort_ms(path: Path, w: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: w}
    out = sess.run(None, feed)[0]
    sess.run(None, feed)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times)), out


def openvino_ms(xml: Path, w: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    import openvino as ov

    net = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": THREADS,
                                                     "INFERENCE_PRECISION_HINT": "f32"})
    out = np.asarray(net(w)[0])
    net(w)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        net(w)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times)), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10, help="timed runs per model (median reported)")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from presenter.data.facegan import model_dir

    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    rows = []
    w = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        xml = model_dir() / "SynthesisNetwork.xml"
        onnx_path = Path(tmp) / "msg1024.onnx"
        params, gflops = ir_to_onnx(xml, onnx_path)
        ms_ort, out_ort = ort_ms(onnx_path, w, args.repeats)
        ms_ov, out_ov = openvino_ms(xml, w, args.repeats)
        err = float(np.abs(out_ort - out_ov).max())
        rows.append({"model": "MobileStyleGAN synthesis (shipped IR -> ONNX)", "px": 1024, "params_M": params / 1e6,
                     "gflops": gflops, "ms_ort": ms_ort, "note": f"max |ORT - OpenVINO| = {err:.1e}"})
        rows.append({"model": "MobileStyleGAN synthesis (shipped IR, OpenVINO)", "px": 1024,
                     "params_M": params / 1e6, "gflops": gflops, "ms_openvino": ms_ov, "note": "OpenVINO, 2 threads"})
        wt = torch.from_numpy(w)
        models = [
            ("MobileStyleGAN-type copy, original widths", 1024, MobileSynthesis(MobileConfig.original_1024())),
            ("MobileStyleGAN-type cut-down, widths 512..256", 256,
             MobileSynthesis(MobileConfig(widths=(512, 512, 512, 512, 256)))),
            ("MobileStyleGAN-type cut-down, widths 256..64", 256,
             MobileSynthesis(MobileConfig(widths=(256, 256, 256, 128, 64), base=256))),
            ("MobileStyleGAN-type cut-down, widths 128..32", 256,
             MobileSynthesis(MobileConfig(widths=(128, 128, 128, 64, 32), base=128))),
            ("StyleGAN2-type stack, widths 512..128", 256,
             StyleGAN2Synthesis({4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128})),
            ("StyleGAN2-type stack, widths 256..32", 256,
             StyleGAN2Synthesis({4: 256, 8: 256, 16: 256, 32: 256, 64: 128, 128: 64, 256: 32})),
            ("StyleGAN2-type stack, widths 128..16", 256,
             StyleGAN2Synthesis({4: 128, 8: 128, 16: 128, 32: 128, 64: 64, 128: 32, 256: 16})),
        ]
        for label, px, model in models:
            model.eval()
            with torch.no_grad():
                assert tuple(model(wt).shape) == (1, 3, px, px), label
            path = Path(tmp) / f"m{len(rows)}.onnx"
            export_torch(model, wt, path)
            ms, _ = ort_ms(path, w, args.repeats)
            rows.append({"model": label, "px": px, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                         "gflops": torch_flops(model, wt), "ms_ort": ms, "note": "PyTorch copy, random weights"})
    print(f"ONNX Runtime, {THREADS} intra-op threads, batch 1, fp32; median of {args.repeats} runs; "
          f"GFLOPs = 2 x multiply-adds of convolutions and matrix products; cpu count {os.cpu_count()}")
    print("| model | px | params (M) | GFLOPs | ms/frame |")
    print("|---|---|---|---|---|")
    for r in rows:
        ms = f"{r['ms_ort']:.1f} (ORT)" if "ms_ort" in r else f"{r['ms_openvino']:.1f} (OpenVINO)"
        print(f"| {r['model']} | {r['px']} | {r['params_M']:.2f} | {r['gflops']:.2f} | {ms} |")
    for r in rows:
        if r.get("note", "").startswith("max"):
            print(f"IR -> ONNX check: {r['note']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
