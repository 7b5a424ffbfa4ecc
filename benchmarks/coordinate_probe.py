"""What a flow-family checkpoint's coordinate head predicts: on validation crystals
corrupted at fixed times t, the rms of the predicted coordinate velocity against the
target's, and the squared error as a fraction of the target's variance (1: the head
explains nothing, as the zero velocity would).

    python benchmarks/coordinate_probe.py results/quality/models/flow/last.ckpt \\
        --val results/quality/data/mp20/val.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from curate_all import hardware  # noqa: E402

from onnes.crystals import read_table  # noqa: E402
from onnes.models.batch import CrystalDataset, Vocabulary  # noqa: E402
from onnes.sampling import load_model  # noqa: E402


def probe(checkpoint: Path, val: Path, crystals: int, times: list[float], seed: int) -> list[dict]:
    model, state = load_model(checkpoint)
    vocabulary = state["vocabulary"]
    vocabulary = vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary(vocabulary)
    dataset = CrystalDataset.from_table(read_table(val).head(crystals), max_atoms=model.settings["max_atoms"])
    batch = dataset.batch(list(range(len(dataset))), vocabulary)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for value in times:
        t = torch.full((batch.num_crystals, 1), value)
        state, (_, target, _) = model.corrupted(batch, t, gen)
        with torch.no_grad():
            _, predicted, _ = model.denoise(state, t, batch)
        predicted = predicted[:, : target.shape[-1]]
        rows.append({"t": value, "target_rms": float(target.pow(2).mean().sqrt()),
                     "predicted_rms": float(predicted.pow(2).mean().sqrt()),
                     "error_over_variance": float((predicted - target).pow(2).mean() / target.var())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--val", type=Path, required=True, help="validation split (parquet)")
    parser.add_argument("--crystals", type=int, default=512)
    parser.add_argument("--times", type=float, nargs="+", default=[0.1, 0.5, 0.8, 0.95])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(hardware())
    print("| t | target rms | predicted rms | squared error / target variance |\n|---:|---:|---:|---:|")
    for row in probe(args.checkpoint, args.val, args.crystals, args.times, args.seed):
        print(f"| {row['t']} | {row['target_rms']:.3f} | {row['predicted_rms']:.4f} | {row['error_over_variance']:.2f} |")


if __name__ == "__main__":
    main()
