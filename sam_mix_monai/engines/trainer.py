"""The SAM-Mix trainer: MONAI's ``SupervisedTrainer`` with a labelled and an unlabelled step.

Each iteration (one optimiser step):

1. **labelled step** on a batch from ``train_data_loader`` (the N slices with masks, cycled): the
   weak geometry on image and mask (optional), a forward pass, and
   ``L_seg = Dice + BCE`` on the chosen mask, SAM's IoU regression, ``L_cls = CE`` on the class logits;
   when every segmentation weight is 0 (a frozen, pretrained SAM: only the prompt path learns) the
   step runs the classifier alone;
2. **unlabelled step** on a batch from ``unlabelled_data_loader`` (its own cycled loader):
   a weak view (flip, shift) and a strong view built on it (affine + RandAugment-like intensity
   operations + Cutout), classified in one batch (FixMatch). The strong view is supervised by the
   known image label where there is one, else by the weak view's class prediction kept where its
   confidence reaches the threshold (0.7) (FixMatch, weight 0.25); known image labels of unlabelled
   slices supervise the weak view too (class-balanced); optionally the weak view's mask (warped with
   the strong geometry) supervises the strong view's mask.

The two losses are summed and back-propagated once; a NaN or infinite total stops training before
the optimiser step (:class:`~sam_mix_monai.utils.errors.InputError` without a path, which the run
reports with its directory and last good checkpoint). Every random draw of an iteration comes from
seeds derived from ``(seed, iteration)``, so a run resumed at an epoch boundary repeats the
uninterrupted one exactly (on CPU), and K processes draw the views of the global batch that one
process would (the K per-rank batches of a step together are the one-process batch). Precision: ``fp32``, ``fp16``
(autocast with gradient scaling, CUDA) or ``bf16`` (autocast); see :mod:`sam_mix_monai.utils.precision`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from sam_mix_monai.engines.augment import WeakStrongAugment
from sam_mix_monai.engines.batch import classify, network_size, prepare_slices, resize_batch, run_network, unwrap
from sam_mix_monai.engines.losses import SAMMixLoss, consistency_loss, fixmatch_loss, masked_cross_entropy
from sam_mix_monai.utils.errors import InputError
from sam_mix_monai.utils.precision import autocast, normalize_precision

__all__ = ["SAMMixTrainer"]


class SAMMixTrainer(SupervisedTrainer):
    """Semi-supervised SAM-Mix trainer (also trains the U-Net and SAM-PP baselines, labelled step only).

    Args:
        device: training device.
        max_epochs: epochs to run.
        train_data_loader: labelled batches, e.g. an :class:`~sam_mix_monai.engines.loaders.EpochStream`
            (``set_epoch`` is called at every epoch start).
        network: SAM-Mix, U-Net or SAM-PP (possibly DDP-wrapped).
        optimizer: optimiser of the trainable parameters.
        loss_function: the weighted objective.
        unlabelled_data_loader: unlabelled batches, e.g. an ``EpochStream`` (``None``: supervised only).
        augment: weak/strong views (``None``: no augmentation; then FixMatch compares identical views).
        augment_labelled: apply the weak geometry to labelled batches.
        labelled_flip: allow the weak view's flip on labelled batches.
        epoch_length: iterations per epoch (default: ``len(train_data_loader)``).
        precision: ``fp32``, ``fp16`` or ``bf16`` (``amp`` = ``fp16``).
        grad_clip: gradient-norm clip (``None``: off).
        seed: base seed of the per-iteration random draws.
        rank, world_size: this process and the number of processes: a rank draws its share of the
            global batch's random views, so K processes train like one (up to batch-norm statistics).
        resize_to_network: train at the network's input size (resize batches once, before augmenting).
        train_handlers: handlers to attach (MONAI convention).
        non_blocking: asynchronous host-to-device copies.
        kwargs: further :class:`monai.engines.SupervisedTrainer` arguments.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: Optimizer,
        loss_function: SAMMixLoss,
        unlabelled_data_loader: Iterable | DataLoader | None = None,
        augment: WeakStrongAugment | None = None,
        augment_labelled: bool = True,
        labelled_flip: bool = False,
        epoch_length: int | None = None,
        precision: str = "fp32",
        grad_clip: float | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        resize_to_network: bool = True,
        train_handlers: Sequence | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> None:
        precision = normalize_precision(precision)
        super().__init__(
            device=device, max_epochs=max_epochs, train_data_loader=train_data_loader, network=network,
            optimizer=optimizer, loss_function=loss_function, epoch_length=epoch_length, non_blocking=non_blocking,
            prepare_batch=prepare_slices, train_handlers=train_handlers, amp=False, decollate=False,
            optim_set_to_none=True, **kwargs,
        )
        self.unlabelled_data_loader = unlabelled_data_loader
        self.augment = augment
        self.augment_labelled = augment_labelled
        self.labelled_flip = labelled_flip
        self.precision = precision
        self.grad_clip = grad_clip
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.resize_to_network = resize_to_network
        use_scaler = precision == "fp16" and torch.device(device).type == "cuda"
        self.grad_scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.unlabelled_wait = 0.0  # seconds spent waiting for unlabelled batches (benchmarks)
        self._unl_iter: Any = None
        self.add_event_handler(Events.EPOCH_STARTED, self._start_epoch)

    # -- randomness and data streams -------------------------------------------------------

    def iteration_seed(self, iteration: int, stream: int) -> int:
        """Seed of one random stream of one iteration (the same on every rank; see ``part``)."""
        return int(np.random.SeedSequence([self.seed, int(iteration), int(stream)]).generate_state(1)[0])

    @property
    def part(self) -> tuple[int, int]:
        """``(rank, world_size)``: which share of the global batch this process holds."""
        return self.rank, self.world_size

    def _start_epoch(self, engine: Engine) -> None:
        """Point the training streams at this epoch (their batches depend only on seed and epoch)."""
        for stream in (self.data_loader, self.unlabelled_data_loader):
            if hasattr(stream, "set_epoch"):
                stream.set_epoch(engine.state.epoch)
        self._unl_iter = iter(self.unlabelled_data_loader) if self.unlabelled_data_loader is not None else None

    def _next_unlabelled(self, engine: Engine) -> dict[str, Any]:
        t0 = time.perf_counter()
        if self._unl_iter is None:
            self._start_epoch(engine)
        try:
            batch = next(self._unl_iter)
        except StopIteration:  # a plain loader shorter than the epoch: start it again
            self._unl_iter = iter(self.unlabelled_data_loader)
            batch = next(self._unl_iter)
        self.unlabelled_wait += time.perf_counter() - t0
        return batch

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.state.device)

    def _views(self) -> contextlib.AbstractContextManager:
        """Autocast off: the weak / strong views are built in fp32 (MONAI's intensity transforms
        cannot take bfloat16, and augmentation is data preparation, not network compute)."""
        return torch.autocast(device_type=self.state.device.type, enabled=False)

    # -- the iteration ---------------------------------------------------------------------------

    def _unlabelled_terms(self, engine: Engine, iteration: int) -> dict[str, torch.Tensor]:
        loss: SAMMixLoss = self.loss_function
        net = self.network
        want_known = loss.wants("unlabelled_cls")
        want_pseudo = loss.wants("pseudo_cls")
        want_cons = loss.wants("seg_consistency")
        if not (want_known or want_pseudo or want_cons):
            return {}
        image, target = prepare_slices(self._next_unlabelled(engine), self.state.device, self.non_blocking)
        label = target["label"]
        image, _ = resize_batch(image, None, network_size(net) if self.resize_to_network else None)
        aug = self.augment
        with self._views():
            weak = aug.weak(image, seed=self.iteration_seed(iteration, 2), part=self.part)["image"] if aug is not None else image
        want_known = want_known and bool((label >= 0).any())
        has_classifier = getattr(unwrap(net), "classifier", None) is not None
        if not has_classifier:  # a network without classifier (U-Net): only the mask consistency applies
            want_known = want_pseudo = False
        terms: dict[str, torch.Tensor] = {}
        if not want_cons:
            # Classification only: weak and strong views through the classifier in one batch, as
            # FixMatch does (one set of batch-norm statistics for both views).
            if not (want_known or want_pseudo):
                return {}
            views = [weak]
            if want_pseudo:
                with self._views():
                    strong = aug.strong({"image": weak}, seed=self.iteration_seed(iteration, 3), part=self.part)["image"] \
                        if aug is not None else weak
                views.append(strong)
            logits = classify(net, torch.cat(views))
            weak_logits, strong_logits = logits[: len(weak)], logits[len(weak):]
            if want_known:
                terms["unlabelled_cls"] = masked_cross_entropy(weak_logits, label, loss.balanced_cls)
            if want_pseudo:
                terms["pseudo_cls"], terms["pseudo_mask_rate"] = fixmatch_loss(
                    weak_logits, strong_logits, loss.pseudo_threshold, label)
            return terms
        # Mask consistency: the strong view's target is the weak view's prediction, so the views run in turn.
        with torch.set_grad_enabled(want_known):
            weak_out = run_network(unwrap(net), weak)
        weak_logits = weak_out.get("class_logits")
        if want_known:
            terms["unlabelled_cls"] = masked_cross_entropy(weak_logits, label, loss.balanced_cls)
        prob = torch.sigmoid(weak_out["mask_logits"].detach().float())
        prob = torch.where((label == 0).view(-1, 1, 1, 1), torch.zeros_like(prob), prob)  # known liver-free
        gate = torch.ones_like(label, dtype=torch.bool)
        if weak_logits is not None:
            conf = torch.softmax(weak_logits.detach().float(), 1).amax(1)
            gate = (label >= 0) | (conf >= loss.pseudo_threshold)
        views = {"image": weak, "target": prob}
        with self._views():
            strong = aug.strong(views, seed=self.iteration_seed(iteration, 3), part=self.part) if aug is not None else {
                **views, "valid": torch.ones_like(weak)}
        strong_out = run_network(unwrap(net), strong["image"])
        valid = strong["valid"] * gate.view(-1, 1, 1, 1).float()
        terms["seg_consistency"] = consistency_loss(strong_out["mask_logits"], strong["target"], valid,
                                                    loss.seg_consistency_threshold)
        if want_pseudo:
            terms["pseudo_cls"], terms["pseudo_mask_rate"] = fixmatch_loss(
                weak_logits, strong_out["class_logits"], loss.pseudo_threshold, label)
        return terms

    def _iteration(self, engine: Engine, batchdata: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimiser step: labelled step + unlabelled step, one backward pass.

        Returns:
            ``{"loss": total, <term>: value, ...}`` as floats (also in ``engine.state.output``).
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        it = engine.state.iteration
        net = engine.network
        loss: SAMMixLoss = engine.loss_function
        image, target = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        mask, label = target["mask"], target["label"]
        image, mask = resize_batch(image, mask, network_size(net) if self.resize_to_network else None)
        if self.augment is not None and self.augment_labelled:
            view = self.augment.weak(image, mask, seed=self.iteration_seed(it, 0), flip=self.labelled_flip, part=self.part)
            image, mask = view["image"], view["mask"]
        engine.state.output = {Keys.IMAGE: image, Keys.LABEL: mask}
        net.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        point_rng = torch.Generator().manual_seed(self.iteration_seed(it, 1) + self.rank)
        seg_terms = loss.wants("seg_dice", "seg_bce", "iou")
        with self._autocast():
            logits = None if seg_terms else classify(net, image)
            if logits is not None:  # no segmentation term: the classifier alone (no SAM forward)
                out = {"class_logits": logits}
            else:
                out = run_network(net, image, mask, training=True, generator=point_rng)
            engine.state.output[Keys.PRED] = out
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            terms = loss.supervised(out, mask, label)
            if self.unlabelled_data_loader is not None:
                terms.update(self._unlabelled_terms(engine, it))
            total = loss.total(terms)
        if not bool(torch.isfinite(total.detach())):  # stop before the step: the weights stay the last good ones
            bad = ", ".join(f"{k} {float(v):g}" for k, v in terms.items() if not bool(torch.isfinite(v.detach())))
            raise InputError(None, f"loss is {float(total):g} at epoch {engine.state.epoch}, iteration {it}"
                                   + (f" ({bad})" if bad else ""))
        engine.state.output[Keys.LOSS] = total
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        self.grad_scaler.scale(total).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if self.grad_clip is not None:
            self.grad_scaler.unscale_(engine.optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in engine.optimizer.param_groups for p in g["params"]], self.grad_clip)
        self.grad_scaler.step(engine.optimizer)
        self.grad_scaler.update()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        engine.state.output = {Keys.LOSS: float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
        return engine.state.output
