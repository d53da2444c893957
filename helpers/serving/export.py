"""An exported CPU path: the GRU traced to TorchScript, frozen and optimised for inference.

Why TorchScript: it ships inside PyTorch (no extra package), runs the graph without the Python
interpreter between ops, and ``torch.jit.freeze`` folds the weights in as constants. The newer
``torch.export`` cannot capture this model (``pack_padded_sequence`` has data-dependent shapes),
and ONNX Runtime would add packages (``onnx``, ``onnxruntime``, and ``onnxscript`` for PyTorch's
current exporter, which is built on ``torch.export``) for the same job. PyTorch 2.13 marks
TorchScript deprecated (in favour of ``torch.export``/``torch.compile``); its deprecation
warnings are silenced here, and the notebook says so.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch


def export_torchscript(
    model: torch.nn.Module, example_tokens: torch.Tensor
) -> torch.jit.ScriptModule:
    """Trace ``model`` on ``example_tokens`` (a padded batch with varied lengths), freeze it and
    apply ``optimize_for_inference``. Tracing records the ops run for the example, so the
    example must take the same code path as every real input (here: always the packed GRU)."""
    model = model.eval()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example_tokens)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))


def max_output_diff(
    reference: torch.nn.Module, candidate: torch.nn.Module, batches: Iterable[torch.Tensor]
) -> float:
    """Largest |reference(x) - candidate(x)| over all ``batches`` (eager vs exported)."""
    worst = 0.0
    with torch.no_grad():
        for tokens in batches:
            worst = max(worst, float((reference(tokens) - candidate(tokens)).abs().max()))
    return worst


def save_torchscript(module: torch.jit.ScriptModule, path: str | Path) -> Path:
    """Write the exported module atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(module, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """Load an exported module on the CPU. A TorchScript archive holds TorchScript code and
    tensors, run by PyTorch's own interpreter — not arbitrary pickled Python objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No exported model at {path}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()
