"""The rewired style-based generator (ReSyncer): mesh guidance + masked target + reference -> mouth.

Legend: B batch, S crop side in pixels (the mouth window, `GeneratorConfig.crop_px`), R the side of
one synthesis resolution, C channels, N the total width of all per-layer style vectors.
Images are RGB in [-1, 1]; guidance is `presenter.face.guidance` (u, v, shade, coverage) in [0, 1];
the mask is 1 where the generator paints (lower face), 0 where the target is kept.

A StyleGAN2 synthesis network whose two inputs are rewired:
- style space: `ReferenceEncoder` turns a reference frame of the same person into a style code,
  and one affine per modulated convolution turns the code into that layer's style vector
  (`Generator.styles`). It runs once per avatar; the run-time graph takes the styles as an input.
- noise space: `GuidanceEncoder` reads the masked target, the mask and the guidance and gives a
  feature map per synthesis resolution; each one is added where StyleGAN2 adds per-pixel noise,
  through a learned per-channel scale (`FeatureInjection`). Synthesis starts from the encoder's
  lowest-resolution map, not from a learned constant.

Convolutions are modulated and demodulated (StyleGAN2) in the activation-scaling form
(x * s -> conv -> * d), which batches without grouped convolutions and exports to ONNX:
- `dense`: a standard 3x3 convolution (the `full` preset, for a GPU);
- `separable`: MobileStyleGAN's depthwise 3x3 + pointwise 1x1 (the `live` preset). Its
  demodulation is exact and cheap: the effective weight is pw[o, i] dw[i, k] s[i], so
  d[o] = rsqrt(sum_i pw[o, i]^2 |dw[i]|^2 s[i]^2), one (B, Cin) x (Cin, Cout) product per layer.
Output: StyleGAN2's skip ToRGB sum, optionally (`idwt_output`) as 4 Haar subbands per colour at
S/2 turned into S by a parameter-free inverse DWT. `Generator.forward` composites
`out * mask + target * (1 - mask)` so the exported graph does it too.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from presenter.errors import UserError
from presenter.face.guidance import GUIDANCE_CHANNELS
from presenter.models.util import assert_shape, config_from_json

IMAGE_CHANNELS = 3
ENCODER_INPUT = IMAGE_CHANNELS + 1 + GUIDANCE_CHANNELS   # masked target, mask, guidance


@dataclass(frozen=True)
class GeneratorConfig:
    crop_px: int = 128                                   # S: side of the mouth window, pixels
    channels: tuple[int, ...] = (16, 32, 64, 96, 128)    # widths at S, S/2, ... S/2^(L-1); synthesis starts at the last
    conv: str = "separable"                              # "separable" (depthwise + pointwise) or "dense" (3x3)
    idwt_output: bool = True                             # predict Haar subbands at S/2 and inverse-DWT to S (no convs at S)
    style_dim: int = 256                                 # reference style code width
    ref_channels: tuple[int, ...] = (16, 32, 64, 128, 256)    # reference encoder widths, one 2x2 pool each
    disc_channels: tuple[int, ...] = (16, 32, 64, 128)  # patch discriminator widths, stride 2 each

    def __post_init__(self) -> None:
        if self.conv not in ("separable", "dense"):
            raise ValueError(f"conv must be 'separable' or 'dense', got {self.conv!r}")
        if self.crop_px % 2 ** (len(self.channels) - 1):
            raise ValueError(f"crop_px {self.crop_px} is not divisible by 2^{len(self.channels) - 1} "
                             f"({len(self.channels)} resolutions)")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Synthesis resolutions, highest first: (S, S/2, ..., S/2^(L-1))."""
        return tuple(self.crop_px >> k for k in range(len(self.channels)))

    @classmethod
    def live(cls) -> "GeneratorConfig":
        """128 px lower-face window at MobileStyleGAN-type cost, for 2 CPU cores."""
        return cls()

    @classmethod
    def full(cls) -> "GeneratorConfig":
        """256 px at StyleGAN2 widths (channel multiplier 1) with dense modulated convs, for a GPU."""
        return cls(crop_px=256, channels=(64, 128, 256, 512, 512, 512), conv="dense", idwt_output=False, style_dim=512,
                   ref_channels=(64, 128, 256, 512, 512, 512), disc_channels=(64, 128, 256, 512, 512))

    @classmethod
    def tiny(cls) -> "GeneratorConfig":
        """A few thousand parameters at 64 px: tests and smoke runs only."""
        return cls(crop_px=64, channels=(8, 16, 16, 32), style_dim=32, ref_channels=(8, 16, 32),
                   disc_channels=(8, 16, 32))

    def to_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: Path) -> "GeneratorConfig":
        """Read config.json; an unknown or missing key is a UserError naming the key and the file."""
        return config_from_json(cls, path, "re-export the generator")


class ModulatedConv(nn.Module):
    """Style-modulated, demodulated conv: x (B, Cin, R, R), style (B, Cin) -> (B, Cout, R, R).

    kind "dense": one k x k conv; "separable": depthwise 3x3 then pointwise 1x1. kernel 1 with
    demodulate=False is StyleGAN2's ToRGB.
    """

    def __init__(self, c_in: int, c_out: int, *, kind: str, kernel: int = 3, demodulate: bool = True) -> None:
        super().__init__()
        self.c_in, self.c_out, self.kind, self.demodulate = c_in, c_out, kind, demodulate
        if kind == "separable" and kernel > 1:
            self.dw = nn.Parameter(torch.randn(c_in, 1, kernel, kernel) / kernel)
            self.weight = nn.Parameter(torch.randn(c_out, c_in, 1, 1) / math.sqrt(c_in))
        else:
            self.dw = None
            self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel) / math.sqrt(c_in * kernel * kernel))

    def _demod(self, style: Tensor) -> Tensor:
        """Per-sample output scale (B, Cout) that gives the modulated weight unit norm per output."""
        w2 = self.weight.square().sum((2, 3))                                   # (Cout, Cin)
        if self.dw is not None:
            w2 = w2 * self.dw.square().sum((1, 2, 3))[None, :]                  # |dw[i]|^2
        return torch.rsqrt(style.square() @ w2.t() + 1e-8)                     # (B, Cout)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        x = x * style[:, :, None, None]
        if self.dw is not None:
            x = F.conv2d(x, self.dw, padding=self.dw.shape[-1] // 2, groups=self.c_in)
        x = F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2)
        if self.demodulate:
            x = x * self._demod(style)[:, :, None, None]
        return x

    def extra_repr(self) -> str:
        return f"{self.c_in}, {self.c_out}, kind={self.kind}, demodulate={self.demodulate}"


class FeatureInjection(nn.Module):
    """StyleGAN2's NoiseInjection with the encoder's features as the noise: x + scale[c] * feat."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # Starts at 1, not StyleGAN's 0: these features carry the pose and mouth shape, not noise.
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor, feat: Tensor) -> Tensor:
        return x + self.scale[None, :, None, None] * feat


class StyledConv(nn.Module):
    """Modulated conv, feature injection, bias, leaky ReLU: (B, Cin, R, R) -> (B, Cout, R, R).

    With upsample, (B, Cin, R/2, R/2) in: the conv runs at R/2 and its Cout channels are upsampled
    (a quarter of the conv cost, and Cout < Cin going up). No StyleGAN activation gain: the next
    layer's demodulation undoes any scale.
    """

    def __init__(self, c_in: int, c_out: int, *, kind: str, upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv = ModulatedConv(c_in, c_out, kind=kind)
        self.inject = FeatureInjection(c_out)
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: Tensor, style: Tensor, feat: Tensor) -> Tensor:
        x = self.conv(x, style)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.inject(x, feat)
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2)


class ToRGB(nn.Module):
    """Modulated 1x1 conv, no demodulation: (B, C, R, R) -> (B, K, R, R), K = 3 (or 12 Haar subbands)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = ModulatedConv(c_in, c_out, kind="dense", kernel=1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        return self.conv(x, style) + self.bias[None, :, None, None]


def inverse_haar(x: Tensor) -> Tensor:
    """Inverse one-level Haar DWT: subbands (B, 4*C, R, R) as (LL, LH, HL, HH) per colour -> (B, C, 2R, 2R).

    Parameter-free: a fixed mixing of the four subbands into the four pixels of each 2x2 block,
    then a pixel shuffle (both export to ONNX).
    """
    B, C4, R, _ = x.shape
    ll, lh, hl, hh = x.view(B, C4 // 4, 4, R, R).unbind(2)                   # (B, C, R, R) each
    a = (ll + lh + hl + hh) / 2                                               # top-left
    b = (ll + lh - hl - hh) / 2                                               # top-right
    c = (ll - lh + hl - hh) / 2                                               # bottom-left
    d = (ll - lh - hl + hh) / 2                                               # bottom-right
    return F.pixel_shuffle(torch.stack([a, b, c, d], 2).flatten(1, 2), 2)    # (B, C, 2R, 2R)


class GuidanceEncoder(nn.Module):
    """Masked target, mask, guidance (B, 8, S, S) -> feature maps [(B, C_l, S/2^l, S/2^l)], l = 0..L-1.

    A 3x3 conv at S, then per lower resolution a 2x2 mean pool and a 3x3 conv (as cheap as a
    stride-2 conv forward, half its cost backward on CPU); each map's width is the synthesis width
    at its resolution.
    """

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        ch = cfg.channels
        self.stem = nn.Conv2d(ENCODER_INPUT, ch[0], 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(ch[k - 1], ch[k], 3, padding=1) for k in range(1, len(ch)))

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.stem(x)]
        for conv in self.down:
            feats.append(conv(F.avg_pool2d(F.leaky_relu(feats[-1], 0.2), 2)))
        return feats


class ReferenceEncoder(nn.Module):
    """Reference frame(s) (B, 3, S, S) -> style code (B, style_dim). (2x2 mean pool, 3x3 conv) per level, mean, linear."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        layers, c_prev = [], IMAGE_CHANNELS
        for c in cfg.ref_channels:
            layers += [nn.AvgPool2d(2), nn.Conv2d(c_prev, c, 3, padding=1), nn.LeakyReLU(0.2)]
            c_prev = c
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(c_prev, cfg.style_dim)

    def forward(self, ref: Tensor) -> Tensor:
        return self.head(self.convs(ref).mean((2, 3)))


class Generator(nn.Module):
    """Masked target + guidance + per-layer styles -> composited mouth window.

    forward(target (B, 3, S, S), mask (B, 1, S, S), guidance (B, 4, S, S), styles (B, N)) -> (B, 3, S, S);
    styles(reference (B, 3, S, S)) -> (B, N) (cache it per avatar).
    """

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch, kind = cfg.channels, cfg.conv
        self.encoder = GuidanceEncoder(cfg)
        self.reference = ReferenceEncoder(cfg)
        # Synthesis from the lowest resolution up; with idwt_output the last (full-size) level is
        # produced by the inverse DWT instead of convolutions.
        top = 1 if cfg.idwt_output else 0
        self.levels = list(range(len(ch) - 1, top - 1, -1))                 # indices into ch, low -> high
        self.convs = nn.ModuleList()
        self.to_rgb = nn.ModuleList()
        for n, lv in enumerate(self.levels):
            c_in = ch[lv] if n == 0 else ch[self.levels[n - 1]]
            self.convs.append(StyledConv(c_in, ch[lv], kind=kind, upsample=n > 0))
            self.convs.append(StyledConv(ch[lv], ch[lv], kind=kind))
            self.to_rgb.append(ToRGB(ch[lv], 4 * IMAGE_CHANNELS if cfg.idwt_output else IMAGE_CHANNELS))
        style_widths = [m.conv.c_in for m in self.convs] + [m.conv.c_in for m in self.to_rgb]
        self.style_widths = style_widths
        self.affine = nn.Linear(cfg.style_dim, sum(style_widths))
        nn.init.zeros_(self.affine.weight)
        with torch.no_grad():                     # StyleGAN2: style bias 1, so every layer starts unmodulated
            self.affine.bias.fill_(1.0)

    @property
    def style_width(self) -> int:
        """N: the width of the concatenated per-layer style vectors."""
        return sum(self.style_widths)

    def styles(self, reference: Tensor) -> Tensor:
        """Reference frame(s) (B, 3, S, S) -> all layers' style vectors (B, N)."""
        S = self.cfg.crop_px
        assert_shape(reference, (None, IMAGE_CHANNELS, S, S))
        return self.affine(self.reference(reference))

    def forward(self, target: Tensor, mask: Tensor, guidance: Tensor, styles: Tensor) -> Tensor:
        B, S = target.shape[0], self.cfg.crop_px
        assert_shape(target, (B, IMAGE_CHANNELS, S, S))
        assert_shape(mask, (B, 1, S, S))
        assert_shape(guidance, (B, GUIDANCE_CHANNELS, S, S))
        assert_shape(styles, (B, self.style_width))
        feats = self.encoder(torch.cat([target * (1 - mask), mask, guidance], 1))   # [(B, C_l, R_l, R_l)]
        per_layer = list(torch.split(styles, self.style_widths, dim=1))
        conv_styles, rgb_styles = per_layer[:len(self.convs)], per_layer[len(self.convs):]
        x, rgb = feats[self.levels[0]], None
        for n, lv in enumerate(self.levels):
            x = self.convs[2 * n](x, conv_styles[2 * n], feats[lv])
            x = self.convs[2 * n + 1](x, conv_styles[2 * n + 1], feats[lv])
            y = self.to_rgb[n](x, rgb_styles[n])
            rgb = y if rgb is None else y + F.interpolate(rgb, scale_factor=2.0, mode="bilinear", align_corners=False)
        if self.cfg.idwt_output:
            rgb = inverse_haar(rgb)
        out = torch.tanh(rgb)
        return assert_shape(out * mask + target * (1 - mask), (B, IMAGE_CHANNELS, S, S))


class PatchDiscriminator(nn.Module):
    """Image (B, 3, S, S) with its mask and guidance (B, 5, S, S) -> real/fake logits per patch (B, 1, S/2^K, S/2^K).

    Seeing the guidance, it can reject a mouth that does not follow the mesh, not only one that looks fake.
    """

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        layers, c_prev = [], IMAGE_CHANNELS + 1 + GUIDANCE_CHANNELS
        for c in cfg.disc_channels:
            layers += [nn.Conv2d(c_prev, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_prev = c
        layers.append(nn.Conv2d(c_prev, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: Tensor, mask: Tensor, guidance: Tensor) -> Tensor:
        return self.net(torch.cat([image, mask, guidance], 1))


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_generator(g: Generator, out_dir: Path, card: str) -> None:
    """Write model.safetensors, model.sha256 (its hash), config.json and MODEL_CARD.md into out_dir,
    each to a temporary name, then renamed."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in g.state_dict().items()}
    save_file(state, str(out_dir / ".model.safetensors.tmp"))
    texts = {"model.sha256": _sha256(out_dir / ".model.safetensors.tmp") + "\n",
             "config.json": json.dumps(asdict(g.cfg), indent=2) + "\n", "MODEL_CARD.md": card}
    os.replace(out_dir / ".model.safetensors.tmp", out_dir / "model.safetensors")
    for name, text in texts.items():
        (out_dir / f".{name}.tmp").write_text(text)
        os.replace(out_dir / f".{name}.tmp", out_dir / name)


def load_generator(weights_dir: Path) -> Generator:
    """Build from config.json, check model.safetensors against model.sha256 and load it strictly
    -> Generator in eval mode, no grads."""
    from safetensors.torch import load_file

    d = Path(weights_dir)
    cfg_path, w_path, h_path = d / "config.json", d / "model.safetensors", d / "model.sha256"
    if not all(p.is_file() for p in (cfg_path, w_path, h_path)):
        raise UserError(f"no generator in {d} (need config.json, model.safetensors and model.sha256); "
                        f"train one with 'presenter train generator'")
    expected, seen = h_path.read_text().split()[0], _sha256(w_path)
    if seen != expected:
        raise UserError(f"{w_path}: sha256 {seen[:12]}... does not match model.sha256 ({expected[:12]}...); "
                        f"the weights are damaged or were replaced: reinstall or re-export them")
    g = Generator(GeneratorConfig.from_json(cfg_path))
    g.load_state_dict(load_file(str(w_path)), strict=True)
    return g.eval().requires_grad_(False)
