"""Where a VAE's evaluated features come from, and how they are scaled: the kNN top-1 (k=20, T=0.1, cosine, on
the held-out split, as ``sslrun finetune`` and the kNN monitor) of a pretrained ``method=vae`` run's pooled trunk
(what sslrun evaluates), the trunk centred, the trunk standardised per feature, and the posterior mean ``mu``.
Prints one JSON line.

    python scripts/vae_features.py runs/curves/vae-e8-s0
"""

from __future__ import annotations

import argparse
import contextlib
import json

import torch
from omegaconf import OmegaConf

from sslrun.data import SSLDataModule
from sslrun.eval.features import extract_features, knn_predict, topk_accuracy
from sslrun.methods import METHODS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a pretrain run dir of method=vae")
    args = parser.parse_args()
    ckpt = torch.load(f"{args.run}/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    hp = ckpt["hyper_parameters"]
    model = METHODS.get("vae")(hp["cfg"], hp["in_channels"], hp["image_size"], hp["num_classes"], hp["normalization"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    cfg = OmegaConf.create(hp["cfg"])
    data = SSLDataModule(cfg.data, stage="finetune", seed=cfg.seed)
    data.bound_evaluation(cfg.eval.max_train_images, cfg.eval.max_val_images)
    train_loader, val_loader = data.eval_dataloaders()

    def embed(loader):
        feats, labels = extract_features(model.backbone, loader, torch.device("cpu"), contextlib.nullcontext, False)
        return feats.float(), labels

    bank, bank_labels = embed(train_loader)
    queries, labels = embed(val_loader)

    def knn(b: torch.Tensor, q: torch.Tensor) -> float:
        return topk_accuracy(knn_predict(b, bank_labels, q, data.num_classes, 20, 0.1), labels, 1)

    mean, std = bank.mean(0), bank.std(0)
    std = std.clamp_min(1e-6 * std.max())
    with torch.no_grad():
        mu_bank, mu_queries = model.mu(bank), model.mu(queries)
    print(
        json.dumps(
            {
                "run": args.run,
                "knn_trunk": knn(bank, queries),
                "knn_trunk_centred": knn(bank - mean, queries - mean),
                "knn_trunk_standardised": knn((bank - mean) / std, (queries - mean) / std),
                "knn_mu": knn(mu_bank, mu_queries),
                "trunk_std_max_over_median": (std.max() / std.median()).item(),
                "trunk_mean_norm_over_std_norm": (mean.norm() / std.norm()).item(),
            }
        )
    )


if __name__ == "__main__":
    main()
