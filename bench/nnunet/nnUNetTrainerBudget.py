"""nnU-Net v2's default trainer, fitted to a wall-clock budget (for CPU comparisons with medseg).

Copied by bench/nnunet/setup.sh into nnunetv2/training/nnUNetTrainer/ (the top level of that package:
see bench/nnunet/README.md) and used as ``nnUNetv2_train ... -tr nnUNetTrainerBudget -device cpu``.
Everything nnU-Net plans (network, batch size, patch size, augmentation, loss, SGD) is kept; only
the training length and the time axis of the learning-rate schedule change, set from the environment:

  NNUNET_BUDGET_MINUTES  wall time of the training loop, counted from the first training step
                         (after network set-up and data-loader start, like medseg's --budget)
  NNUNET_ITERS           training iterations per epoch (nnU-Net's default: 250)
  NNUNET_VAL_ITERS       validation iterations per epoch (default: 50)
  NNUNET_TORCH_THREADS   torch intra-op threads (nnUNetv2_train otherwise sets one per CPU of the machine)
  NNUNET_SKIP_FINAL_VAL  "1": skip the final sliding-window validation (it is not part of the score)

nnU-Net's poly schedule, lr = lr0 (1 - epoch / num_epochs)^0.9 (Isensee et al. 2021, nnU-Net,
Nature Methods 18:203), is applied before every iteration with the fraction of the budget used in
place of epoch / num_epochs, so the learning rate reaches zero when the budget ends, as at the end
of a full run. Training stops at the first iteration past the budget; that epoch's validation
iterations and end-of-epoch bookkeeping still run, and checkpoint_final.pth is written.
(A first version timed the first epoch and fitted whole epochs to the rest; on a loaded machine a
slow first epoch then left up to an epoch of the budget unused, so the schedule follows time now.)
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
        if os.environ.get("NNUNET_TORCH_THREADS"):
            torch.set_num_threads(int(os.environ["NNUNET_TORCH_THREADS"]))
        self.budget_seconds = 60.0 * _env_float("NNUNET_BUDGET_MINUTES", math.inf)
        self.num_iterations_per_epoch = int(_env_float("NNUNET_ITERS", 250))
        self.num_val_iterations_per_epoch = int(_env_float("NNUNET_VAL_ITERS", 50))
        self.epoch_seconds: list[float] = []
        self.steps_done = 0

    def _poly_lr(self, used: float) -> float:
        return self.initial_lr * max(0.0, 1.0 - used) ** 0.9

    def _train_one_epoch(self, t0: float) -> bool:
        """One epoch, cut short when the budget runs out; returns False once it has."""
        self.on_epoch_start()
        self.on_train_epoch_start()
        outputs = []
        for _ in range(self.num_iterations_per_epoch):
            used = (time.monotonic() - t0) / self.budget_seconds
            if used >= 1.0 and outputs:
                break
            for group in self.optimizer.param_groups:
                group["lr"] = self._poly_lr(used)
            outputs.append(self.train_step(next(self.dataloader_train)))
        self.steps_done += len(outputs)
        self.print_to_log_file(
            f"{len(outputs)} steps, last learning rate {self.optimizer.param_groups[0]['lr']:.5f}"
        )
        self.on_train_epoch_end(outputs)
        with torch.no_grad():
            self.on_validation_epoch_start()
            val = [
                self.validation_step(next(self.dataloader_val))
                for _ in range(self.num_val_iterations_per_epoch)
            ]
            self.on_validation_epoch_end(val)
        self.on_epoch_end()
        return time.monotonic() - t0 < self.budget_seconds

    def run_training(self):
        if not math.isfinite(self.budget_seconds):
            return super().run_training()
        self.on_train_start()
        t0 = time.monotonic()
        more = True
        while more:
            t_epoch = time.monotonic()
            more = self._train_one_epoch(t0)
            self.epoch_seconds.append(time.monotonic() - t_epoch)
        loop_seconds = time.monotonic() - t0
        self.print_to_log_file(
            f"budget: {loop_seconds:.0f} of {self.budget_seconds:.0f} s, {self.steps_done} steps"
        )
        self.on_train_end()
        self._write_budget_report(loop_seconds)

    def _write_budget_report(self, seconds: float) -> None:
        report = {
            "budget_seconds": self.budget_seconds if math.isfinite(self.budget_seconds) else None,
            "train_loop_seconds": seconds,
            "epochs": self.current_epoch,
            "iterations_per_epoch": self.num_iterations_per_epoch,
            "val_iterations_per_epoch": self.num_val_iterations_per_epoch,
            "steps": self.steps_done,
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
