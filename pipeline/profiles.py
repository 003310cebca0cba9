"""Named recipes of data size and training, selected with one param (`profile` in params.yaml).

A profile fills in the synthesize and train keys params.yaml does not write itself, as presets
fill in the physics: a key written explicitly always wins, and `demoire check-params --show` prints
what is in effect. Real moiré bands run tens of pixels wide, so the longer recipes train on larger
pairs and patches; their figures are in docs/benchmarks.md.

- `quick`: the CPU default; `make pipeline` in under 10 minutes on 2 cores; trained on each image's
  PSNR (`psnr` loss), changing only colour (`correction: chroma`), and of that only what is narrower than
  its 64-pixel patches show whole, plus a colour shift of the whole image (`correction_width: 16`).
- `cpu-long`: 11 minutes of training on 2 idle Sapphire Rapids cores, 34 on a 2-core AMD EPYC
  (docs/benchmarks.md); larger pairs and patches, the content itself photographed through the subpixel
  grid (`moire_model: render`, so its text edges alias as a real photo's do) and the luma corrected too
  (`correction: full`), the same loss and `correction_width`: with the mean over the image applied as a
  gain, the only recipe measured above the input on both real groups, raw and tone-aligned, with SSIM
  above the input's, at two seeds.
- `gpu`: hours on one GPU worker: 8192 fresh pairs an epoch rendered on the fly on the GPU, whole at the
  256² patch size (of the 2000 stored pairs of 512², the val and test splits are used), the multi-scale model,
  bf16 autocast and torch.compile; the content photographed through the subpixel grid as `cpu-long`'s is
  (the physics that measured best on real photos on CPU; the recipe itself is unmeasured).
"""

from __future__ import annotations

PROFILES: dict[str, dict[str, dict]] = {
    "quick": {
        "synthesize": {"n_pairs": 480, "size": 128},
        "train": {"model": "unet", "epochs": 30, "batch_size": 16, "patch_size": 64, "lr": 1e-3, "warmup_epochs": 1,
                  "loss": {"psnr": 1.0}, "correction": "chroma", "correction_width": 16.0},
    },
    "cpu-long": {
        "synthesize": {"n_pairs": 1200, "size": 192, "moire_model": "render"},
        "train": {"model": "unet", "epochs": 20, "batch_size": 8, "patch_size": 128, "lr": 1e-3, "warmup_epochs": 1,
                  "ema_decay": 0.999, "loss": {"psnr": 1.0}, "correction": "full", "correction_width": 16.0},
    },
    "gpu": {
        "synthesize": {"n_pairs": 2000, "size": 512, "moire_model": "render"},
        "train": {"model": "mscale", "epochs": 300, "batch_size": 32, "patch_size": 256, "lr": 4e-4, "warmup_epochs": 5,
                  "loss": {"charbonnier": 1.0, "fft": 0.05}, "ema_decay": 0.999, "synthetic_pairs_per_epoch": 8192,
                  "amp": "bf16", "compile": True,
                  "num_workers": 8},  # decoding the stored pairs, where synthetic_pairs_per_epoch is set to 0
    },
}


def profile_keys() -> dict[str, set[str]]:
    """Per section, every key some profile sets (params.yaml writes them as null: "from the profile")."""
    keys: dict[str, set[str]] = {}
    for profile in PROFILES.values():
        for section, values in profile.items():
            keys.setdefault(section, set()).update(values)
    return keys
