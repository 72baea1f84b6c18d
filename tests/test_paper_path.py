"""The paper preset (vit_b16: open_clip "ViT-B-16-quickgelu") trains from a CLIP weights file given as
`python -m dpmpp train --pretrained FILE`, in each format users have ViT-B/16 in.

No CLIP weights are on this machine, so the files are written here from a randomly initialised ViT-B-16-quickgelu
(open_clip, pretrained=None) with two tensors set to recognisable values (`visual.proj`, `visual.class_embedding`):

- OpenAI's `ViT-B-16.pt`, as their `clip` package distributes it (and as resolve_pretrained finds it in
  ~/.cache/clip for the "openai" tag): a TorchScript archive. It is written by tracing open_clip's CLIP, which is
  OpenAI's architecture under OpenAI's parameter names, with `forward`, `encode_image` and `encode_text` traced,
  the text attention mask a constant of the graph, and the extras OpenAI's archives carry (`input_resolution`,
  `context_length`, `vocab_size` as tensors); linear, convolution and attention weights and both projections are
  float16, as OpenAI's convert_weights leaves them. Tracing takes seconds and about 1.5 GB, so the archive format
  itself is tested, not a state-dict stand-in. open_clip 3.x opens a file given as `pretrained` with its
  load_checkpoint (torch.load), never with load_openai_model (reached only by calling it directly), so this is the
  path a real ViT-B-16.pt takes.
- open_clip's `open_clip_model.safetensors` (the Hugging Face files of the "openai" tag).
- open_clip's `open_clip_pytorch_model.bin` (torch.save of the state dict). Its keys are OpenAI's names, so it is
  also the plain OpenAI-keyed state dict some users have. It reaches the same open_clip loader as the safetensors
  file, so it is loaded through create_clip (what the CLI calls) without a training run, to keep the time down.

The others each train one stage-1 and one stage-2 step on two identities at 64×32 (a 4×2 patch grid; the preset's
masked blocks 1, 3, 9, 11 all exist in ViT-B/16's 12), and the checkpoint's encoder must hold the file's weights moved
by at most that one Adam step at the encoder's rate.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.model import convert_weights_to_lp
from safetensors.torch import load_file, save_file

from dpmpp.config import load_preset
from dpmpp.model.backbone import create_clip

ROOT = Path(__file__).resolve().parents[1]
MODEL = "ViT-B-16-quickgelu"
LR_ENCODER = load_preset("vit_b16").train.lr_encoder
SMALL = [
    "data.height=64",
    "data.width=32",
    "data.num_pids=2",
    "data.num_instances=1",
    "data.num_workers=0",
    "train.stage1_epochs=1",
    "train.stage1_batch_size=2",
    "train.warmup_epochs=0",
    "train.eval_every=0",
    "eval.batch_size=8",
]
# The format tests train without the camera embedding (SIE), which the preset turns on, so that they check the
# weights alone; test_the_paper_preset_as_is_trains_and_evaluates keeps it on (and guards that a checkpoint with
# SIE can be written: the module is registered once, inside the tower).
NO_SIE = ["model.camera_embedding=false"]
CHECKED = [  # encoder tensors compared with the file's (the position embedding is resized, so it is not)
    "visual.proj",
    "visual.class_embedding",
    "visual.conv1.weight",
    "visual.transformer.resblocks.0.attn.in_proj_weight",
    "visual.transformer.resblocks.11.mlp.c_proj.weight",
    "visual.ln_post.weight",
]
RANDOM_INIT = ("initialized randomly", "initialized partially", "no pretrained weights")  # what open_clip logs


def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([sys.executable, "-m", "dpmpp", *args], capture_output=True, text=True, cwd=ROOT, env=env)


def train(weights, data: Path, out: Path, sets: list[str], *extra: str) -> subprocess.CompletedProcess:
    overrides = [item for s in sets for item in ("--set", s)]
    return run_cli(
        "train", "--config", "vit_b16", "--pretrained", str(weights), "--data", "manifest", "--root", str(data),
        "--epochs", "1", *overrides, *extra, "--out", str(out), "--quiet",
    )  # fmt: skip


def announces_random_init(stderr: str) -> bool:
    return any(phrase in stderr.lower() for phrase in RANDOM_INIT)


@pytest.fixture(scope="module")
def two_identities(small_data, tmp_path_factory) -> Path:
    """One training image for each of two identities (one stage-2 batch), and their query and gallery rows."""
    with open(small_data / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    pids = sorted({r["pid"] for r in rows if r["split"] == "train"}, key=int)[:2]
    chosen, taken = [], set()
    for row in rows:
        if row["pid"] not in pids or (row["split"] == "train" and row["pid"] in taken):
            continue
        if row["split"] == "train":
            taken.add(row["pid"])
        chosen.append(row)
    folder = tmp_path_factory.mktemp("two_identities")
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    assert sum(r["split"] == "train" for r in chosen) == 2
    assert {r["split"] for r in chosen} == {"train", "query", "gallery"}
    return folder


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> dict:
    """{format: (file, {name: the tensor the file holds, as float32})} of one random-init ViT-B-16-quickgelu."""
    folder = tmp_path_factory.mktemp("clip_weights")
    torch.manual_seed(0)
    model = open_clip.create_model(MODEL, pretrained=None).eval()
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():  # far from open_clip's init (zero mean, std 768 ** -0.5 = 0.036)
        model.visual.proj.copy_(0.5 + 0.1 * torch.randn(model.visual.proj.shape, generator=generator))
        model.visual.class_embedding.copy_(torch.linspace(-1.0, 1.0, model.visual.class_embedding.numel()))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    files = {}

    path = folder / "open_clip_model.safetensors"
    save_file(state, str(path))
    files["open_clip_safetensors"] = (path, state)

    path = folder / "open_clip_pytorch_model.bin"
    torch.save(state, path)
    files["open_clip_bin"] = (path, state)

    # OpenAI's TorchScript archive: their extras as tensors, the attention mask a graph constant, float16 weights
    for name, value in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
        if hasattr(model, name):
            delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    model.attn_mask = model._buffers.pop("attn_mask")
    convert_weights_to_lp(model, torch.float16)
    image = torch.zeros(1, 3, 224, 224, dtype=torch.float16)
    text = torch.zeros(1, 77, dtype=torch.long)
    with torch.no_grad():
        traced = torch.jit.trace_module(
            model, {"forward": (image, text), "encode_image": (image,), "encode_text": (text,)}, check_trace=False
        )
    path = folder / "ViT-B-16.pt"
    traced.save(str(path))
    archived = traced.state_dict()
    assert archived["visual.proj"].dtype == torch.float16 and archived["visual.ln_post.weight"].dtype == torch.float32
    assert {"input_resolution", "context_length", "vocab_size"} <= set(archived) and "attn_mask" not in archived
    files["openai_torchscript"] = (path, {k: archived[k].float() for k in CHECKED})
    return files


@pytest.mark.parametrize("fmt", ["openai_torchscript", "open_clip_safetensors"])
def test_the_paper_preset_trains_from_the_weights_file(fmt, weight_files, two_identities, tmp_path):
    path, held = weight_files[fmt]
    out = tmp_path / "ckpt"
    result = train(path, two_identities, out, SMALL + NO_SIE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not announces_random_init(result.stderr), result.stderr[-3000:]
    trained = load_file(str(out / "model.safetensors"))
    for name in CHECKED:
        start, end = held[name].float(), trained[f"encoder.{name}"]
        assert start.shape == end.shape, name
        moved = (end - start).abs().max().item()
        # one Adam step moves a weight by at most the learning rate; a re-initialised one would be ~0.01-1 away
        assert moved <= 1.01 * LR_ENCODER + 1e-7, (name, moved)
    assert (trained["encoder.visual.proj"] != held["visual.proj"]).any()  # and the saved encoder did train


def test_a_state_dict_file_loads_through_create_clip(weight_files):
    path, held = weight_files["open_clip_bin"]
    model = create_clip(MODEL, str(path), (64, 32))
    state = model.state_dict()
    for name in CHECKED:
        assert torch.equal(state[name], held[name]), name
    assert state["visual.positional_embedding"].shape == (1 + 4 * 2, 768)  # resized to the 4×2 grid


def test_the_paper_preset_as_is_trains_and_evaluates(weight_files, two_identities, tmp_path):
    """OpenAI's weights and the preset unchanged but for size (camera embedding on, cls tokens), then `eval`."""
    path, held = weight_files["openai_torchscript"]
    out = tmp_path / "ckpt"
    result = train(path, two_identities, out, SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = load_file(str(out / "model.safetensors"))
    assert (trained["encoder.visual.proj"] - held["visual.proj"]).abs().max() <= 1.01 * LR_ENCODER + 1e-7
    evaluated = run_cli("eval", "--checkpoint", str(out), "--data", "manifest", "--root", str(two_identities), "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert 0.0 <= json.loads(evaluated.stdout)["mAP"] <= 1.0


def test_random_init_is_announced_on_stderr(two_identities, tmp_path):
    """What the tests above look for is there when no weights load (the run then stops at a missing --init)."""
    result = train("none", two_identities, tmp_path / "ckpt", SMALL + NO_SIE, "--init", str(tmp_path / "missing"))
    assert announces_random_init(result.stderr), result.stderr[-3000:]
    assert result.returncode != 0


@pytest.mark.parametrize("fmt", ["openai_torchscript", "open_clip_safetensors"])
def test_a_truncated_weights_file_stops_the_run(fmt, weight_files, two_identities, tmp_path):
    """A non-zero exit, an error on stderr, no fallback to random init and no checkpoint."""
    source = weight_files[fmt][0]
    truncated = tmp_path / source.name
    with open(source, "rb") as handle:
        truncated.write_bytes(handle.read(1 << 20))
    out = tmp_path / "ckpt"
    result = train(truncated, two_identities, out, SMALL + NO_SIE)
    assert result.returncode != 0
    assert result.stderr.strip(), "no error message"
    assert not announces_random_init(result.stderr), result.stderr[-3000:]
    assert not (out / "model.safetensors").exists()
