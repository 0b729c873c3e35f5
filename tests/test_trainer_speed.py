"""benchmarks/trainer_speed.py at a tiny size: both sides train, the table and the JSON carry what the
docs quote (correctness only; the timings of a tiny run mean nothing)."""

import json
import statistics

import numpy as np
import torch
from PIL import Image

from conftest import REPO, load_script


def load_bench():
    return load_script(REPO / "benchmarks" / "trainer_speed.py", "trainer_speed")


def test_trainer_speed_runs_both_loops_at_a_tiny_size(tmp_path, capsys, cifar10_archive, cifar10_cache):
    bench = load_bench()
    out = tmp_path / "speed.json"
    assert (
        bench.main(
            [
                "--tiny",
                "--models",
                "resnet8",
                "--data",
                str(cifar10_archive),
                "--cache-dir",
                str(cifar10_cache),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (r,) = json.loads(out.read_text())["results"]
    assert r["model"] == "resnet8" and len(r["zoo"]) == len(r["hand"]) == 1
    assert min(r["zoo"] + r["hand"]) > 0 and r["num_workers"] in (0, 1) and set(r["calibration"]) == {"0", "1"}
    assert r["ratio"] == statistics.median(z / h for z, h in zip(r["zoo"], r["hand"]))
    printed = capsys.readouterr().out
    assert "CPU " in printed and "torch " in printed and f"| resnet8 | {r['precision']} |" in printed


def test_the_hand_loop_sees_the_extracted_images_with_crop_flip_and_normalisation(tmp_path, cifar10_archive):
    bench = load_bench()
    folder = bench.extract(cifar10_archive, 20, tmp_path / "images")
    assert sorted(p.name for p in folder.iterdir()) == sorted(bench.CLASSES)
    assert all(len(list((folder / c).iterdir())) == 2 for c in bench.CLASSES)
    x, y = next(iter(bench.hand_loader(folder, 20, 0, cuda=False)))
    assert (
        x.shape == (20, 3, 32, 32) and x.dtype.is_floating_point and sorted(y.tolist()) == sorted(list(range(10)) * 2)
    )
    assert -3 < float(x.mean()) < 3 and x.min() < 0 < x.max()  # normalised, not in [0, 1]
    # Each view of one image is a 32x32 window of the normalised image padded by 4 (black, then
    # normalised), flipped or not; and the views differ.
    dataset = bench.hand_loader(folder, 20, 0, cuda=False).dataset
    image = torch.from_numpy(np.array(Image.open(dataset.samples[0][0]).convert("RGB"))).permute(2, 0, 1)
    padded = torch.nn.functional.pad(image.float() / 255, (4, 4, 4, 4))
    padded = (padded - torch.tensor(bench.MEAN).view(3, 1, 1)) / torch.tensor(bench.STD).view(3, 1, 1)
    windows = [padded[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)]
    windows += [w.flip(-1) for w in windows]
    torch.manual_seed(0)
    views = [dataset[0][0] for _ in range(8)]
    assert all(any(torch.allclose(v, w, atol=1e-5) for w in windows) for v in views)
    assert any(not torch.equal(views[0], v) for v in views[1:])
