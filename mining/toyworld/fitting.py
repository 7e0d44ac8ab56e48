"""The optimisation the toy language models' trainers share (train_entity_lm, train_captioner): AdamW under a
warm-up then cosine schedule, clipped steps, a progress line every 200 steps."""
from __future__ import annotations

import time

import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup

from mining.logs import logger


class Fitting:
    def __init__(self, params, lr: float, steps: int, started: float) -> None:
        """`started`: epoch seconds the run began, which the progress lines count from."""
        self.optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        self.schedule = get_cosine_schedule_with_warmup(self.optimiser, max(1, steps // 20), steps)
        self.steps, self.losses, self.started = steps, [], started

    def step(self, step: int, loss: torch.Tensor, clipped) -> None:
        """One optimiser step on `loss`, the gradients of `clipped` (parameters) clipped to norm 1."""
        self.optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clipped, 1.0)
        self.optimiser.step()
        self.schedule.step()
        self.losses.append(loss.item())
        if step % 200 == 0 or step == self.steps - 1:
            logger.info("step %d/%d loss %.4f (%.0f s)", step, self.steps, self.recent_loss(),
                        time.time() - self.started)

    def recent_loss(self) -> float:
        return float(np.mean(self.losses[-50:]))
