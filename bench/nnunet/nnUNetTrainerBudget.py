"""nnU-Net v2's default trainer, fitted to a wall-clock budget (for CPU comparisons with medseg).

Copied by bench/nnunet/setup.sh into nnunetv2/training/nnUNetTrainer/ (the top level of that package:
see bench/nnunet/README.md) and used as ``nnUNetv2_train ... -tr nnUNetTrainerBudget -device cpu``.
Everything nnU-Net plans (network, batch size, patch size, augmentation, loss, SGD, poly schedule)
is kept; only the training length changes, set from the environment:

  NNUNET_BUDGET_MINUTES  wall time for run_training (network set-up and data loader start included)
  NNUNET_ITERS           training iterations per epoch (nnU-Net's default: 250)
  NNUNET_VAL_ITERS       validation iterations per epoch (default: 50)
  NNUNET_SKIP_FINAL_VAL  "1": skip the final sliding-window validation (it is not part of the score)

The first epoch is timed, then the number of epochs is chosen to fill what is left of the budget,
and chosen again after every epoch (the machine's load may change). The poly learning-rate schedule
(Isensee et al. 2021, nnU-Net, Nature Methods 18:203) is stretched to that number of epochs, so the
learning rate decays to about zero when the budget ends, as it would at the end of a full run.
The trainer stops early rather than overrun: an epoch starts only if it is expected to fit.
"""

import json
import math
import os
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value is None else float(value)


class nnUNetTrainerBudget(nnUNetTrainer):  # noqa: N801 (nnU-Net finds trainers by class name)
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_seconds = 60.0 * _env_float("NNUNET_BUDGET_MINUTES", math.inf)
        self.num_iterations_per_epoch = int(_env_float("NNUNET_ITERS", 250))
        self.num_val_iterations_per_epoch = int(_env_float("NNUNET_VAL_ITERS", 50))
        self.num_epochs = 10_000 if math.isfinite(self.budget_seconds) else self.num_epochs
        self.epoch_seconds: list[float] = []

    def _train_one_epoch(self) -> None:
        self.on_epoch_start()
        self.on_train_epoch_start()
        outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
        self.on_train_epoch_end(outputs)
        with torch.no_grad():
            self.on_validation_epoch_start()
            val = [
                self.validation_step(next(self.dataloader_val))
                for _ in range(self.num_val_iterations_per_epoch)
            ]
            self.on_validation_epoch_end(val)
        self.on_epoch_end()

    def _plan_epochs(self, done: int, elapsed: float) -> None:
        """Epochs that fit the budget, from the slower of the last epoch and the mean epoch."""
        per_epoch = max(self.epoch_seconds[-1], sum(self.epoch_seconds) / len(self.epoch_seconds))
        more = int(max(0.0, self.budget_seconds - elapsed) // per_epoch)
        self.num_epochs = done + more
        self.lr_scheduler.max_steps = max(self.num_epochs, done + 1)
        self.print_to_log_file(
            f"budget: {elapsed:.0f} of {self.budget_seconds:.0f} s used after {done} epochs "
            f"({per_epoch:.1f} s/epoch); planned epochs now {self.num_epochs}"
        )

    def run_training(self):
        t0 = time.monotonic()
        self.on_train_start()
        while self.current_epoch < self.num_epochs:
            t_epoch = time.monotonic()
            self._train_one_epoch()  # on_epoch_end advances self.current_epoch
            self.epoch_seconds.append(time.monotonic() - t_epoch)
            if math.isfinite(self.budget_seconds):
                self._plan_epochs(self.current_epoch, time.monotonic() - t0)
        self.on_train_end()
        self._write_budget_report(time.monotonic() - t0)

    def _write_budget_report(self, seconds: float) -> None:
        report = {
            "budget_seconds": self.budget_seconds if math.isfinite(self.budget_seconds) else None,
            "run_training_seconds": seconds,
            "epochs": self.current_epoch,
            "iterations_per_epoch": self.num_iterations_per_epoch,
            "val_iterations_per_epoch": self.num_val_iterations_per_epoch,
            "steps": self.current_epoch * self.num_iterations_per_epoch,
            "batch_size": self.configuration_manager.batch_size,
            "patch_size": list(self.configuration_manager.patch_size),
            "epoch_seconds": self.epoch_seconds,
        }
        if self.local_rank == 0:
            with open(os.path.join(self.output_folder, "budget_report.json"), "w") as fh:
                json.dump(report, fh, indent=2)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get("NNUNET_SKIP_FINAL_VAL") == "1":
            self.print_to_log_file("final validation skipped (NNUNET_SKIP_FINAL_VAL=1)")
            return
        return super().perform_actual_validation(save_probabilities)
