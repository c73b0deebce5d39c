"""`presenter avatar finetune`: the generator learns one person's footage and the pack keeps it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from presenter.errors import UserError
from presenter.train.finetune import FramePairs, split_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_footage_splits_into_trained_frames_and_a_held_out_tail() -> None:
    """The last 20 % is held out, at least one frame on each side; too little footage is refused."""
    assert split_frames(10) == (list(range(8)), [8, 9])
    trained, held = split_frames(201)
    assert trained == list(range(161)) and held == list(range(161, 201))
    with pytest.raises(UserError, match="at least 10"):
        split_frames(9)


def test_pairs_reconstruct_each_frame_from_its_own_mesh(astronaut_pack: Path) -> None:
    """Each item is its frame's mouth window with the lips masked over the mouth, its own mesh's
    guidance, and a loss weight that is raised on the lips."""
    from presenter.avatar.pack import load_pack

    pack = load_pack(astronaut_pack)
    pairs = FramePairs(pack, [0, 5], [3])
    assert len(pairs) == 2
    item = pairs[1]
    assert item["target"].shape == (3, 128, 128) and item["guidance"].shape == (4, 128, 128)
    assert item["mask"].shape == item["weight"].shape == (1, 128, 128)
    mask, cover = item["mask"][0].numpy(), item["guidance"][3].numpy()
    assert 0.02 < (mask > 0.5).mean() < 0.4                 # the lips, not the window
    assert (cover[mask > 0.5] > 0).mean() > 0.7             # on the mesh (its mouth opening is a hole)
    assert item["weight"].max() > 1 and item["weight"][0, mask > 0.5].mean() > 2
    assert float(item["target"].abs().max()) <= 1.0
    assert not np.allclose(item["reference"].numpy(), item["target"].numpy())


def _footage(pack_dir: Path, out: Path) -> Path:
    """The pack's idle loop as an H.264 video (its frames are the person's footage here)."""
    from presenter.avatar.pack import load_pack

    frames = load_pack(pack_dir).frames
    with av.open(str(out), "w") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt, st.options = frames.shape[2], frames.shape[1], "yuv420p", {"crf": "16"}
        for f in frames:
            for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    return out


def test_finetune_learns_the_footage_and_the_renderer_uses_it(astronaut_pack: Path, tmp_path: Path, speech_wav,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A few steps on a few seconds of footage raise the held-out mouth PSNR, the weights land in
    PACK/generator (hash-checked, with a report), the live renderer picks them over the shipped ones,
    and the footage's mouth motion becomes the pack's speaking style for the SyncFormer."""
    from presenter.avatar.pack import load_pack
    from presenter.cli import main
    from presenter.render.generator import GeneratorRenderer, pack_weights_dir

    monkeypatch.setenv("PRESENTER_HOME", str(tmp_path / "home"))
    pack = tmp_path / "pack"
    shutil.copytree(astronaut_pack, pack)
    video = _footage(pack, tmp_path / "talk.mp4")
    assert main(["avatar", "finetune", str(pack), "--video", str(video), "--steps", "12", "--threads", "1"]) == 0
    report = json.loads((pack / "generator" / "finetune.json").read_text())
    assert report["steps"] == 12 and report["frames_held_out"] >= 10
    assert report["after"]["psnr"] > report["before"]["psnr"], report
    assert pack_weights_dir(load_pack(pack)) == pack / "generator"
    r = GeneratorRenderer(load_pack(pack), impl="ref")
    assert r.styles.shape[0] == 1
    frame = r.render(0, np.zeros((468, 3), np.float32) + 0.01)
    assert frame.shape == load_pack(pack).frames[0].shape
    assert not list(pack.glob(".generator*"))                # nothing half-written left beside it
    # The idle loop's mouth does not talk: no speaking style is stored (the SyncFormer keeps its default).
    from presenter.avatar.pack import read_speaking_style

    assert report["style_frames"] == 0 and read_speaking_style(load_pack(pack)) is None


def test_a_packs_speaking_style_drives_the_live_syncformer(astronaut_pack: Path, tmp_path: Path, speech_wav) -> None:
    """A speaking style stored in a pack (talking motion, here the SyncFormer's own on real speech,
    made larger) is what the live pipeline's SyncFormer speaks in: the same speech moves the mouth
    differently from the default style, and wider."""
    from presenter.audio.io import read_wav, resample
    from presenter.avatar.pack import load_pack, read_speaking_style, write_speaking_style
    from presenter.stream.pipeline import load_pipeline

    pack = tmp_path / "pack"
    shutil.copytree(astronaut_pack, pack)
    pcm, rate = read_wav(speech_wav.path)
    speech = resample(pcm, rate, 16000)[:48000]
    default = load_pipeline(str(pack), "syncformer", "baseline").new_driver()
    talking = np.concatenate([default.push(speech), default.flush()])
    write_speaking_style(pack, 2.0 * talking[np.abs(talking).max(axis=(1, 2)) > 0])
    assert read_speaking_style(load_pack(pack)).shape[1:] == (468, 3)
    own = load_pipeline(str(pack), "syncformer", "baseline").new_driver()
    moved = np.concatenate([own.push(speech), own.flush()])
    assert np.abs(moved - talking).max() > 1e-3                            # not the default style
    p99 = [float(np.percentile(np.abs(m), 99)) for m in (moved, talking)]
    assert p99[0] > p99[1], p99                                           # the larger style moves more


def test_finetune_refuses_a_still_without_footage(astronaut_pack: Path) -> None:
    """A pack made from a photo has nothing to learn from: exit 2 with a message saying to pass --video."""
    from presenter.cli import main

    assert main(["avatar", "finetune", str(astronaut_pack), "--steps", "1"]) == 2
    assert not (astronaut_pack / "generator").exists()
