"""Print the README's model table: parameters and forward FLOPs at 32x32 for every registered model.

python scripts/model_table.py                 # params and FLOPs
python scripts/model_table.py --time metaformer resnet56   # plus CPU fwd+bwd time at batch 128
"""

import argparse
import platform

import torch

import zoo
from zoo.profile import count_flops, count_params, time_train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pattern", default="*")
    parser.add_argument("--time", nargs="*", default=[], help="models to time (fwd+bwd, batch 128, CPU)")
    args = parser.parse_args()
    print("| model | params (M) | forward GFLOPs at 32x32 |")
    print("|---|---:|---:|")
    for name in zoo.list_models(args.pattern):
        model = zoo.create_model(name)
        print(f"| {name} | {count_params(model) / 1e6:.2f} | {count_flops(model) / 1e9:.3f} |")
    if args.time:
        print(
            f"\nCPU forward+backward, batch 128, fp32, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}, {platform.processor() or platform.machine()}:"
        )
        for name in args.time:
            seconds = time_train_step(zoo.create_model(name, drop_path_rate=0.1))
            print(f"  {name}: {seconds * 1000:.0f} ms per step ({128 / seconds:.0f} images/s)")


if __name__ == "__main__":
    main()
