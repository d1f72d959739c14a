"""The SAM-Mix trainer: MONAI's ``SupervisedTrainer`` with a labelled and an unlabelled step.

Each iteration (one optimiser step):

1. **labelled batch** from ``train_data_loader`` (the N slices with masks, and the known-empty
   slices ``data.empty_per_labelled`` adds, cycled): the weak geometry on image and mask (optional);
   ``L_seg = Dice + BCE`` on the chosen mask, SAM's IoU regression, ``L_cls = CE`` on the class logits;
2. **unlabelled batch** from ``unlabelled_data_loader`` (its own cycled loader): a weak view (flip,
   shift) and a strong view built on it (affine + RandAugment-like intensity operations + Cutout).
   The strong view is supervised by the known image label where there is one, else by the weak
   view's class prediction kept where its confidence reaches the threshold (0.7) (FixMatch, weight
   0.25); known image labels of unlabelled slices supervise the weak view too; optionally the weak
   view's mask (warped with the strong geometry) supervises the strong view's mask.

**One classifier batch** (``one_classifier_batch``, off by default; FixMatch's reference forwards
``cat(x, u_w, u_s)`` once): the labelled slices, the weak and the strong views go through the
classifier together, in one call of the network (``SAMMix.forward(image, extra=views)``), so batch
norm normalises and updates its statistics with one batch per step; the prompts (GradCAM) and SAM
then run on the labelled part only. When every segmentation weight is 0 (a frozen, pretrained SAM:
only the prompt path learns) the call runs the classifier alone (``classify_only=True``): a plain
concatenation. Off by default because on the real-CT config the eval-mode running statistics of the
one batch broke the gate (see ``TrainConfig.one_classifier_batch``). Off, and always with the mask
consistency term (``loss.seg_consistency > 0``: the strong view's target is the weak view's mask,
so the views run the whole network in turn), the classifier sees three batches per step: labelled,
then weak + strong (classification only) or weak, then strong. A network without classifier (U-Net,
SAM-PP) has only the labelled forward (and the consistency one). The labelled forward always goes
through ``net`` (the DDP wrapper, if any), so that DDP prepares the gradient reduction of every
parameter the step uses (the classifier-only mode used to call the bare classifier: no reduction).

Class balance (``loss.balanced_cls``, default on): ``cls`` and ``unlabelled_cls`` are each
class-balanced with weights from the known labels of their part of the batch (the labelled part
holds positives and known-empty slices); ``pseudo_cls`` too with ``loss.balanced_pseudo``. Those
weights and every mean over a subset (:mod:`.losses`) are global over the ranks, so K processes
compute the one-process loss; what stays per rank is the batch-norm statistics of a CPU run
(``SyncBatchNorm``, used on CUDA, is CUDA-only in torch).

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
from sam_mix_monai.engines.batch import network_size, prepare_slices, resize_batch, run_network, unwrap
from sam_mix_monai.engines.decoder_tuning import decoder_loss
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
            global batch's random views, so K processes train like one (up to per-rank batch-norm
            statistics without ``SyncBatchNorm``, i.e. on CPU).
        resize_to_network: train at the network's input size (resize batches once, before augmenting).
        one_classifier_batch: labelled slices and FixMatch views in one classifier batch (see above).
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
        one_classifier_batch: bool = False,
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
        self.one_classifier_batch = bool(one_classifier_batch)
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

    def _unlabelled_image(self, engine: Engine) -> tuple[torch.Tensor, torch.Tensor]:
        """The next unlabelled batch at the network size: ``(image, label)`` (label -1: withheld)."""
        image, target = prepare_slices(self._next_unlabelled(engine), self.state.device, self.non_blocking)
        image, _ = resize_batch(image, None, network_size(self.network) if self.resize_to_network else None)
        return image, target["label"]

    def _one_batch(self) -> bool:
        """Whether the unlabelled views join the labelled batch in the classifier (FixMatch): the
        network has a classifier, an unlabelled classification term is on and the mask
        consistency term (whose strong target needs the weak view's mask first) is off."""
        loss: SAMMixLoss = self.loss_function
        return (self.one_classifier_batch and self.unlabelled_data_loader is not None
                and getattr(unwrap(self.network), "classifier", None) is not None
                and loss.wants("unlabelled_cls", "pseudo_cls") and not loss.wants("seg_consistency"))

    def _fixmatch_views(self, engine: Engine, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(views, label)``: the weak view of the unlabelled batch, followed by its strong view when
        ``pseudo_cls`` is on, concatenated (the classifier's ``extra`` slices)."""
        image, label = self._unlabelled_image(engine)
        aug = self.augment
        with self._views():
            weak = aug.weak(image, seed=self.iteration_seed(iteration, 2), part=self.part)["image"] if aug is not None else image
            views = [weak]
            if self.loss_function.wants("pseudo_cls"):
                views.append(aug.strong({"image": weak}, seed=self.iteration_seed(iteration, 3), part=self.part)["image"]
                             if aug is not None else weak)
        return torch.cat(views), label

    def _fixmatch_terms(self, logits: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unlabelled classification terms from the class logits of :meth:`_fixmatch_views`' views."""
        loss: SAMMixLoss = self.loss_function
        weak_logits, strong_logits = logits[: len(label)], logits[len(label):]
        terms: dict[str, torch.Tensor] = {}
        if loss.wants("unlabelled_cls"):
            terms["unlabelled_cls"] = masked_cross_entropy(weak_logits, label, loss.balanced_cls)
        if loss.wants("pseudo_cls"):
            terms["pseudo_cls"], terms["pseudo_mask_rate"] = fixmatch_loss(
                weak_logits, strong_logits, loss.pseudo_threshold, label, loss.balanced_pseudo)
        return terms

    def _unlabelled_terms(self, engine: Engine, iteration: int) -> dict[str, torch.Tensor]:
        """The unlabelled step as its own forwards (the labelled forward already ran): classification
        only, the weak and strong views in one classifier batch of their own; with the mask consistency
        term, the views through the whole network in turn (the strong view's target is the weak view's mask)."""
        loss: SAMMixLoss = self.loss_function
        net = self.network
        has_classifier = getattr(unwrap(net), "classifier", None) is not None
        want_known = has_classifier and loss.wants("unlabelled_cls")
        want_pseudo = has_classifier and loss.wants("pseudo_cls")
        if not loss.wants("seg_consistency"):
            if not (want_known or want_pseudo):
                return {}
            views, label = self._fixmatch_views(engine, iteration)
            # the bare module: DDP's reduction was prepared by the labelled forward through the wrapper,
            # whose graph holds every classifier parameter (a second wrapper forward before one backward is not allowed)
            return self._fixmatch_terms(unwrap(net)(views, classify_only=True, with_head=False)["class_logits"], label)
        image, label = self._unlabelled_image(engine)
        aug = self.augment
        with self._views():
            weak = aug.weak(image, seed=self.iteration_seed(iteration, 2), part=self.part)["image"] if aug is not None else image
        terms: dict[str, torch.Tensor] = {}
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
                weak_logits, strong_out["class_logits"], loss.pseudo_threshold, label, loss.balanced_pseudo)
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
            if getattr(unwrap(net), "classifier", None) is not None:  # SAM-Mix
                # One classifier batch: labelled slices, then the unlabelled weak and strong views
                # (FixMatch). Called through ``net`` (the DDP wrapper, if any) so that DDP prepares the
                # gradient reduction; no segmentation term: the classifier alone (no prompts, no SAM).
                extra, unl_label = self._fixmatch_views(engine, it) if self._one_batch() else (None, None)
                out = net(image, extra=extra, classify_only=not seg_terms)
            else:
                extra = None
                out = run_network(net, image, mask, training=True, generator=point_rng)
            engine.state.output[Keys.PRED] = out
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            terms = loss.supervised(out, mask, label)
            if loss.wants("decoder") and getattr(unwrap(net), "classifier", None) is not None:
                box_rng = torch.Generator().manual_seed(self.iteration_seed(it, 4) + self.rank)
                terms["decoder"] = decoder_loss(unwrap(net), image, mask, box_rng, loss.decoder_jitter,
                                                loss.decoder_evidence_share, out.get("head_logits"))
            if extra is not None:
                terms.update(self._fixmatch_terms(out["extra_class_logits"], unl_label))
            elif self.unlabelled_data_loader is not None:
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
