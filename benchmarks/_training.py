"""Shared pieces of the training benchmarks: realistic collated batches and a trainer to step with."""

from __future__ import annotations

import numpy as np
import torch

from rlq.data.recolor import PALETTES, synthetic_label
from rlq.engine.trainer import Trainer
from rlq.spec import LossSpec, TADSpec


def target_batch(b: int, h: int, w: int, num_ids: int, num_clothes: int, seed: int = 0,
                 num_poses: int = 15) -> dict[str, torch.Tensor]:
    """A collated TrainSet batch with recolour ingredients (what the loader hands the step)."""
    g = np.random.default_rng(seed)
    labels = np.zeros((b, h, w), np.uint8)
    labels[:, h // 8 : h // 2, w // 4 : 3 * w // 4] = 5  # upper clothes
    labels[:, h // 2 : 7 * h // 8, w // 4 : 3 * w // 4] = 9  # pants
    pal = np.asarray(PALETTES["default"], np.uint8)
    pids = np.repeat(np.arange(b // 4) % num_ids, 4)
    lo, up = g.integers(0, 9, b), g.integers(0, 9, b)
    def box() -> list[list[int]]:
        return [[int(g.integers(0, h // 2)), int(g.integers(0, w // 2)), h // 4, w // 4] for _ in range(b)]

    return {
        "img": torch.from_numpy(g.integers(0, 256, (b, 3, h, w), dtype=np.uint8)),
        "erase": torch.tensor(box()),
        "pid": torch.from_numpy(pids),
        "camid": torch.zeros(b, dtype=torch.long),
        "clothes": torch.from_numpy(g.integers(0, num_clothes, b)),
        "gender": torch.from_numpy(g.integers(0, 2, b)),
        "pose": torch.from_numpy(g.integers(0, num_poses, b)),  # < the model's pose clusters (15, docs/method.md)
        "index": torch.arange(b),
        "copy_img": torch.from_numpy(g.integers(0, 256, (b, 3, h, w), dtype=np.uint8)),
        "copy_labels": torch.from_numpy(labels),
        "copy_erase": torch.tensor(box()),
        "copy_upper": torch.from_numpy(pal[up]),
        "copy_lower": torch.from_numpy(pal[lo]),
        "copy_faulty": torch.zeros(b, dtype=torch.bool),
        "copy_enabled": torch.ones(b, dtype=torch.bool),
        "copy_clothes": torch.tensor([synthetic_label(num_clothes, int(p), int(a), int(c), 9) for p, a, c in zip(pids, lo, up)]),
    }


def external_batch(b: int, h: int, w: int, src: tuple[int, int] = (256, 128), seed: int = 0) -> dict[str, torch.Tensor]:
    """A collated ExternalSet batch (HQ view + LQ ingredients, LTCC mix of artifacts)."""
    from rlq.lq.mix import draw_lq, mix_for_dataset

    g = np.random.default_rng(seed)
    draws = [draw_lq(g, mix_for_dataset("ltcc")) for _ in range(b)]
    return {
        "hq": torch.from_numpy(g.integers(0, 256, (b, 3, h, w), dtype=np.uint8)),
        "hq_erase": torch.tensor([[-1, -1, 0, 0]] * b),
        "lq_src": torch.from_numpy(g.integers(0, 256, (b, 3, *src), dtype=np.uint8)),
        "lq_crop": torch.tensor([[-1, -1]] * b),
        "lq_flip": torch.zeros(b, dtype=torch.bool),
        "lq_erase": torch.tensor([[-1, -1, 0, 0]] * b),
        "lq_artifact": torch.tensor([d[0] for d in draws]),
        "lq_params": torch.from_numpy(np.stack([d[1] for d in draws])),
        "pid": torch.zeros(b, dtype=torch.long),
        "index": torch.arange(b),
    }


def stepper(model, method, device: torch.device, amp: str = "off", channels_last: bool = False) -> Trainer:
    """A Trainer without loaders, used only for its optimizer step (`Trainer.step`)."""
    return Trainer(model=model, method=method, loaders={}, run_dir="/tmp/rlq-bench-unused", epochs=1, device=device,
                   amp=amp, channels_last=channels_last, tensorboard=False, progress=False)


def reid_method(name: str, num_ids: int, num_clothes: int):
    from rlq.methods.reid import ReIDMethod

    p2c = np.zeros((num_ids, num_clothes), bool)
    for c in range(num_clothes):
        p2c[c % num_ids, c] = True
    return ReIDMethod(name, num_ids=num_ids, pid2clothes=p2c, palette_size=9, loss=LossSpec(),
                      clothes_lr=3.5e-4, weight_decay=5e-4)


def tad_method(name: str, num_ids: int, num_clothes: int, teacher, h: int, w: int, cls=None):
    from rlq.methods.tad import TADMethod

    cls = cls or TADMethod
    p2c = np.zeros((num_ids, num_clothes), bool)
    for c in range(num_clothes):
        p2c[c % num_ids, c] = True
    return cls(name, teacher=teacher, tad=TADSpec(source_height=256, source_width=128), height=h, width=w,
                     num_ids=num_ids, pid2clothes=p2c, palette_size=9, loss=LossSpec(), clothes_lr=3.5e-4,
                     weight_decay=5e-4)


def plain_ce_step(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device, *,
                  channels_last: bool = False, dtype: torch.dtype | None = None):
    """The baseline of the train-step ratios: one Adam (3.5e-4, wd 5e-4) cross-entropy step of a plain network on
    uint8 ``images`` (moved to ``device``), under autocast ``dtype`` (None: fp32). Returns the step function."""
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=3.5e-4, weight_decay=5e-4)
    images, labels = images.to(device), labels.to(device)

    def step() -> None:
        x = images.float().div(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(net(x).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step
