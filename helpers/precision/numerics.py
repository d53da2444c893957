"""Floating-point formats and non-finite values: what FP32/FP16/BF16 hold, and where a NaN is born.

- ``format_facts`` / ``format_table``: bit layout, largest value, smallest normal and subnormal,
  machine epsilon and the ``exp`` overflow point of a format, read from ``torch.finfo``.
- ``cast_report``: what casting real values to a format does to them (overflow to inf,
  underflow to zero, relative rounding error) — the reason loss scaling exists.
- ``NonFiniteDetector`` / ``first_nonfinite``: forward hooks on every submodule that name the
  first module whose output holds NaN or inf although its inputs were finite (the producer,
  not the modules the NaN merely flows through); ``nonfinite_gradients`` lists parameters whose
  gradient is not finite.
- ``precision_trial``: a short Adam run of a model under a chosen compute dtype that stops at
  the first non-finite loss and says which layer went non-finite first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

# (exponent bits, mantissa bits) of each format; the sign takes one more bit.
_LAYOUT: dict[torch.dtype, tuple[int, int]] = {
    torch.float64: (11, 52),
    torch.float32: (8, 23),
    torch.float16: (5, 10),
    torch.bfloat16: (8, 7),
}
FORMAT_NAMES: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "float64": torch.float64,
    "double": torch.float64,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
SHORT_NAMES: dict[torch.dtype, str] = {
    torch.float64: "fp64",
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float16`` from ``"fp16"``, ``"half"``, ``"float16"`` or the dtype itself.

    Raises ``ValueError`` listing the known names for anything else (integer dtypes included).
    """
    if isinstance(dtype, torch.dtype):
        if dtype not in _LAYOUT:
            raise ValueError(f"Unsupported dtype {dtype}; known: {sorted(SHORT_NAMES.values())}.")
        return dtype
    if isinstance(dtype, str) and dtype.lower() in FORMAT_NAMES:
        return FORMAT_NAMES[dtype.lower()]
    raise ValueError(
        f"Unknown floating-point format {dtype!r}; known names: {sorted(FORMAT_NAMES)}."
    )


@dataclass(frozen=True)
class FormatFacts:
    """The numbers that decide what a floating-point format can represent."""

    name: str
    bits: int
    exponent_bits: int
    mantissa_bits: int
    max: float  # largest finite value; anything larger rounds to inf
    smallest_normal: float  # 2**(1 - bias): below it precision drops (subnormals)
    smallest_subnormal: float  # below half of it a value rounds to 0
    eps: float  # gap between 1 and the next value: 2**-mantissa_bits
    decimal_digits: float  # log10(2**(mantissa_bits + 1))
    exp_overflow_at: float  # log(max): exp(x) is inf for x above this

    def as_dict(self) -> dict[str, Any]:
        """The facts as a plain dict (one row of ``format_table``)."""
        return asdict(self)


def format_facts(dtype: torch.dtype | str) -> FormatFacts:
    """Facts of one format (``"fp32"``, ``"fp16"``, ``"bf16"``, ``"fp64"`` or a torch dtype)."""
    dtype = resolve_dtype(dtype)
    info = torch.finfo(dtype)
    exponent_bits, mantissa_bits = _LAYOUT[dtype]
    return FormatFacts(
        name=SHORT_NAMES[dtype],
        bits=info.bits,
        exponent_bits=exponent_bits,
        mantissa_bits=mantissa_bits,
        max=float(info.max),
        smallest_normal=float(info.smallest_normal),
        smallest_subnormal=float(2.0 ** (math.log2(info.smallest_normal) - mantissa_bits)),
        eps=float(info.eps),
        decimal_digits=round((mantissa_bits + 1) * math.log10(2), 2),
        exp_overflow_at=math.log(float(info.max)),
    )


def format_table(names: Iterable[torch.dtype | str] = ("fp32", "fp16", "bf16")) -> pd.DataFrame:
    """``format_facts`` of several formats, one row each, indexed by the short name."""
    return pd.DataFrame([format_facts(n).as_dict() for n in names]).set_index("name")


def cast_report(values: torch.Tensor, dtype: torch.dtype | str) -> dict[str, float]:
    """What casting ``values`` to ``dtype`` does to them.

    Returns the fractions of the finite inputs that overflow (finite → ±inf), that underflow
    (non-zero → 0), that land among the subnormals (non-zero but below the smallest normal,
    where precision is lost), and the median relative error of the survivors.
    """
    dtype = resolve_dtype(dtype)
    x = values.detach().reshape(-1).to(torch.float64)
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        raise ValueError("cast_report needs at least one finite value.")
    cast = x.to(dtype).to(torch.float64)
    nonzero = x != 0
    overflow = torch.isinf(cast)
    underflow = nonzero & (cast == 0)
    subnormal = nonzero & (cast != 0) & (cast.abs() < torch.finfo(dtype).smallest_normal)
    ok = nonzero & ~overflow & ~underflow
    rel = ((cast[ok] - x[ok]).abs() / x[ok].abs()) if ok.any() else torch.zeros(1, dtype=x.dtype)
    n = x.numel()
    return {
        "overflow": overflow.sum().item() / n,
        "underflow": underflow.sum().item() / n,
        "subnormal": subnormal.sum().item() / n,
        "median_relative_error": rel.median().item(),
    }


# --------------------------------------------------------------------------- non-finite values


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every floating-point tensor inside ``obj`` (tensor, tuple/list, dict, or nested)."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            yield obj
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _nonfinite_counts(obj: Any) -> tuple[int, int, int]:
    """(number of NaNs, number of ±infs, number of elements) over the tensors in ``obj``."""
    nans = infs = numel = 0
    for tensor in _tensors(obj):
        t = tensor.detach()
        nans += int(torch.isnan(t).sum())
        infs += int(torch.isinf(t).sum())
        numel += t.numel()
    return nans, infs, numel


@dataclass(frozen=True)
class NonFiniteEvent:
    """A module whose forward output held NaN or inf."""

    module: str  # qualified name as in ``model.named_modules()`` ("" is the model itself)
    module_type: str
    call: int  # how many module calls of this pass had finished before it (0 = first)
    nans: int
    infs: int
    numel: int
    inputs_finite: bool  # True: this module produced the non-finite values itself

    @property
    def kind(self) -> str:
        """``"nan"``, ``"inf"`` or ``"nan+inf"``."""
        return "+".join(k for k, n in (("nan", self.nans), ("inf", self.infs)) if n)

    def __str__(self) -> str:
        where = repr(self.module) if self.module else "the model itself"
        origin = (
            "its inputs were finite" if self.inputs_finite else "its inputs were already non-finite"
        )
        return (
            f"first non-finite output: module {where} ({self.module_type}), "
            f"{self.kind} in {self.nans + self.infs}/{self.numel} values; {origin}"
        )


@dataclass
class NonFiniteDetector:
    """Context manager that finds the first module producing NaN/inf in a forward pass.

    A forward hook on every submodule checks its output (and, once the output is bad, its
    inputs). Hooks fire when a module *finishes*, so children report before their parents: the
    first event is the innermost module in which the non-finite values appeared. ``events``
    keeps every module with a non-finite output, in order, until ``max_events``; ``first`` is
    the first one whose inputs were finite (``None`` while all is well).

    Use it around a forward pass, or around a whole training loop (call ``reset()`` each step
    to keep only the current step's events). The checks synchronise with the device and cost
    time: measure before leaving it on in production.
    """

    model: nn.Module
    max_events: int = 32
    events: list[NonFiniteEvent] = field(default_factory=list)
    _handles: list[Any] = field(default_factory=list, repr=False)
    _calls: int = field(default=0, repr=False)

    def __enter__(self) -> NonFiniteDetector:
        names = {module: name for name, module in self.model.named_modules()}
        for module, name in names.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            call = self._calls
            self._calls += 1
            if len(self.events) >= self.max_events:
                return
            nans, infs, numel = _nonfinite_counts(output)
            if nans or infs:
                in_nans, in_infs, _ = _nonfinite_counts(inputs)
                self.events.append(
                    NonFiniteEvent(
                        module=name,
                        module_type=type(module).__name__,
                        call=call,
                        nans=nans,
                        infs=infs,
                        numel=numel,
                        inputs_finite=not (in_nans or in_infs),
                    )
                )

        return hook

    @property
    def first(self) -> NonFiniteEvent | None:
        """The first module that turned finite inputs into a non-finite output, if any.

        If the model's input itself was non-finite there is no such module; then the first
        event (with ``inputs_finite=False``) is returned so the caller still sees where it went.
        """
        for event in self.events:
            if event.inputs_finite:
                return event
        return self.events[0] if self.events else None

    def reset(self) -> None:
        """Forget the events and the call count (e.g. at the start of each training step)."""
        self.events.clear()
        self._calls = 0


def first_nonfinite(model: nn.Module, *inputs: Any, **kwargs: Any) -> NonFiniteEvent | None:
    """Run ``model(*inputs, **kwargs)`` once without gradients; the first producer of NaN/inf."""
    with NonFiniteDetector(model) as detector, torch.no_grad():
        model(*inputs, **kwargs)
    return detector.first


def nonfinite_gradients(model: nn.Module) -> list[str]:
    """Names of the parameters whose ``.grad`` holds NaN or inf (empty when all are finite)."""
    return [
        name
        for name, p in model.named_parameters()
        if p.grad is not None and not bool(torch.isfinite(p.grad).all())
    ]


# --------------------------------------------------------------------------- a stability trial


def _warmup_factor(warmup_steps: int):
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def precision_trial(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    dtype: torch.dtype | str = "fp32",
    lr: float = 1e-3,
    batch_size: int = 128,
    warmup_steps: int = 0,
    steps: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``model`` with Adam on random mini-batches under a compute dtype; stop at a NaN.

    ``dtype`` ``"fp32"`` runs plainly; ``"fp16"``/``"bf16"`` run the forward pass under
    ``torch.autocast`` (weights, optimizer and loss stay FP32, as in mixed precision; no loss
    scaling, so a non-finite loss is never hidden by skipped steps). The LR warms up linearly
    over ``warmup_steps``. Returns the step of the first non-finite loss (``None`` if none), the
    layer the detector blamed, the last finite loss, the accuracy on ``inputs`` in FP32, and
    the largest absolute activation seen (the number to compare with the format's ``max``).
    """
    dtype = resolve_dtype(dtype)
    device = inputs.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_factor(warmup_steps))
    loss_fn = nn.CrossEntropyLoss()
    largest = 0.0
    first_bad, culprit, last_loss = None, None, math.nan

    def watch(module: nn.Module, args: Any, output: Any) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            largest = max(largest, output.detach().abs().float().max().item())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(watch) for m in leaves]
    model.train()
    try:
        with NonFiniteDetector(model) as detector:
            for step in range(steps):
                detector.reset()
                index = torch.randint(0, len(inputs), (batch_size,), generator=generator)
                index = index.to(device)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    logits = model(inputs[index])
                loss = loss_fn(logits.float(), targets[index])
                if not torch.isfinite(loss):
                    first_bad = step
                    culprit = detector.first
                    break
                last_loss = loss.item()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
    finally:
        for handle in handles:
            handle.remove()
    model.eval()
    with torch.no_grad():
        accuracy = (model(inputs).argmax(1) == targets).float().mean().item()
    return {
        "nonfinite_step": first_bad,
        "culprit": culprit.module if culprit is not None else None,
        "last_finite_loss": last_loss,
        "accuracy": accuracy,
        "max_abs_activation": largest,
    }
