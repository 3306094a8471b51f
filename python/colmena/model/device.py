"""Where the core's operations run: the CPU core, or its CUDA twins, chosen by where the data lives.

One function per operation (:func:`swarm_forward`, :func:`vae_encode`, :func:`fracdiff`,
:func:`fracdiff_expanding`, :func:`proxy_scores`): a ``numpy.ndarray`` runs on the CPU core (the
default, unchanged); a CUDA array (CuPy, torch, anything with ``__cuda_array_interface__``, or a
DLPack capsule producer on a CUDA device) runs on the GPU that holds it, with no copy in or out.
The result is an array of the input's library on the input's device (CuPy in, CuPy out; torch
in, torch out; another producer gives CuPy). The work is enqueued on the given ``stream``, else on
the stream the producer names (``__cuda_array_interface__`` v3 ``stream``), else on the
library's current stream (``cupy.cuda.get_current_stream()``, ``torch.cuda.current_stream()``),
and the call returns without waiting for it (stream order keeps later work correct).

The GPU networks (:class:`CudaSwarm`, :class:`CudaVAEEncoder`) hold their weights in device
memory; they are built from the CPU models' weights (checked there first).

Tolerances of the CUDA twins against the CPU core on the same inputs (cpp/include/colmena/
device_ops.hpp): the forward passes repeat the CPU's float32 operations in the same order (the
same bits are expected; the contract is 2e-6 absolute); FracDiff agrees to 1e-9 times
``sum |w| * max |x|``; the proxy scores to 1e-9 relative.

Where the pipeline's forward passes run (``colmena train --device``, ``colmena backtest
--device``, the ``device`` argument of :func:`colmena.training.trainer.train` and
:func:`colmena.backtest.engine.backtest`): :func:`forward_backend` picks a
:class:`ForwardBackend`, the one place that builds the swarm's and the VAE encoder's forward
implementation (the CPU core's :class:`colmena.Swarm` / :class:`colmena.VAEEncoder`, or
:class:`CudaSwarm` / :class:`CudaVAEEncoder`). Only the forward passes move: market state,
consensus, fitness accounting, risk and the trading loop stay the CPU core's. Identical trades
need identical signals (the fitness ranking, the selection thresholds and the trading loop's
decisions are discontinuous in them): the pipeline relies on the CUDA forward passes giving the
CPU's bits, which their kernels are built to do and tests/test_cuda_pipeline.py checks on a
device (the per-operation contract of 2e-6 absolute alone would not guarantee it).

Errors: :class:`CudaUnavailableError` (a ``RuntimeError``) when the build has no CUDA backend
or no device is visible, naming which; ``TypeError`` for an array that is neither host nor CUDA
memory or has the wrong dtype; ``ValueError`` for a wrong shape or layout, or an array on
another device than the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from colmena import _core
from colmena.features.fractional_diff import Method, fracdiff_weights
from colmena.features.fractional_diff import fracdiff as _cpu_fracdiff
from colmena.features.fractional_diff import fracdiff_expanding as _cpu_fracdiff_expanding
from colmena.model.nn import ActivationName, LayerWeights, Swarm, VAEEncoder

__all__ = [
    "CPU_BACKEND",
    "CudaSwarm",
    "CudaUnavailableError",
    "CudaVAEEncoder",
    "DeviceArray",
    "DeviceNDArray",
    "EncoderForward",
    "ForwardBackend",
    "SwarmForward",
    "cuda_unavailable_reason",
    "describe_array",
    "forward_backend",
    "fracdiff",
    "fracdiff_expanding",
    "generation_scores",
    "host_copy",
    "proxy_scores",
    "require_cuda",
    "swarm_forward",
    "synchronize",
    "to_device",
    "vae_encode",
]

#: DLPack device types (dlpack.h): the host, and a CUDA device.
_DL_CPU = 1
_DL_CUDA = 2
_DL_CUDA_MANAGED = 13


class CudaUnavailableError(RuntimeError):
    """A GPU operation this build or this machine cannot run; the message says which is missing."""


def cuda_unavailable_reason(device: int = 0) -> str | None:
    """Why CUDA device ``device`` cannot run colmena's GPU operations, or None when it can.

    Returns
    -------
    str or None
        "colmena was built without CUDA (COLMENA_CUDA=OFF); ...", "no CUDA device is
        visible ...", "CUDA device 3 does not exist (1 visible)", or None.
    """
    try:
        _core.cuda_require("CUDA", device)
    except RuntimeError as exc:
        return str(exc).removeprefix("CUDA: ")
    return None


def require_cuda(what: str, device: int = 0) -> None:
    """Raise :class:`CudaUnavailableError` ("<what>: <reason>") unless device ``device`` can run.

    Raises
    ------
    CudaUnavailableError
        Without a CUDA build, without a visible device, or for a device index out of range.
    """
    try:
        _core.cuda_require(what, device)
    except RuntimeError as exc:
        raise CudaUnavailableError(str(exc)) from None


def synchronize(*, device: int = 0, stream: Any = None) -> None:
    """Wait for the GPU work enqueued on ``stream`` (an int ``cudaStream_t``, a CuPy or torch
    stream; default: the legacy default stream, which waits for every blocking stream).

    Raises
    ------
    CudaUnavailableError
        Without a CUDA build or device.
    """
    require_cuda("synchronize", device)
    _core.cuda_synchronize(device, 0 if stream is None else _stream_handle(stream))


@dataclass(frozen=True)
class DeviceArray:
    """A CUDA array as read from ``__cuda_array_interface__`` (after DLPack, if that was given).

    Attributes
    ----------
    obj : object
        The array (CuPy, torch, ...) that owns the memory; kept alive by this record.
    library : {"cupy", "torch", "other"}
    ptr : int
        Address of element 0 (device memory).
    shape : tuple of int
    strides : tuple of int
        In bytes (C-contiguous strides when the producer gave none).
    dtype : numpy.dtype
    device : int
        CUDA device index.
    stream : int or None
        The producer's stream (``__cuda_array_interface__`` v3), as a ``cudaStream_t``; None when
        it gave none.
    """

    obj: Any
    library: Literal["cupy", "torch", "other"]
    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype[Any]
    device: int
    stream: int | None

    def c_contiguous(self) -> bool:
        """True for C order (sizes 0 and 1 take any stride)."""
        expected = self.dtype.itemsize
        for size, stride in zip(reversed(self.shape), reversed(self.strides), strict=True):
            if size > 1 and stride != expected:
                return False
            expected *= size
        return True


class DeviceNDArray:
    """colmena's own minimal CUDA array (C order), for machines without CuPy or CUDA torch: it
    owns device memory, exposes ``__cuda_array_interface__`` (v3), and copies back with
    :meth:`get`. Results of GPU calls on these (and on producers other than CuPy and torch) are
    CuPy arrays when CuPy is installed, else DeviceNDArrays.

    Raises
    ------
    CudaUnavailableError
        Without a CUDA build or device.
    """

    __slots__ = ("_buffer", "dtype", "shape")

    def __init__(self, shape: tuple[int, ...], dtype: type[np.generic], *, device: int = 0) -> None:
        require_cuda("DeviceNDArray", device)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._buffer = _core.CudaBuffer(
            max(1, int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize), device
        )

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (self._buffer.ptr, False),
            "version": 3,
            "strides": None,
            "stream": None,
        }

    @property
    def device(self) -> int:
        """CUDA device index."""
        return int(self._buffer.device)

    def get(self, stream: Any = None) -> NDArray[Any]:
        """A host copy, after the work enqueued on ``stream`` (default: the legacy stream)."""
        out = np.empty(self.shape, dtype=self.dtype)
        self._buffer.download(out, 0 if stream is None else _stream_handle(stream))
        return out


def host_copy(x: Any) -> NDArray[Any]:
    """A numpy copy of a device array (DeviceNDArray, CuPy, torch), after the work enqueued on
    its stream; a host array is returned as numpy without a copy.

    Raises
    ------
    TypeError
        For a CUDA array of another library (copy it with that library).
    """
    if isinstance(x, DeviceNDArray):
        return x.get()
    arr = describe_array(x)
    if arr is None:
        return np.asarray(x)
    if arr.library == "cupy":
        return np.asarray(x.get())
    if arr.library == "torch":
        return np.asarray(x.detach().cpu().numpy())
    raise TypeError(f"cannot copy a {type(x).__name__} to the host; use its own library")


def to_device(x: Any, *, device: int = 0) -> DeviceNDArray:
    """A :class:`DeviceNDArray` copy of host array ``x`` (C order) on CUDA device ``device``."""
    host = np.ascontiguousarray(x)
    out = DeviceNDArray(host.shape, host.dtype.type, device=device)
    out._buffer.upload(host)
    return out


def _library(obj: Any) -> Literal["cupy", "torch", "other"]:
    module = type(obj).__module__.split(".")[0]
    if module == "cupy":
        return "cupy"
    if module == "torch":
        return "torch"
    return "other"  # DeviceNDArray, numba, ...


def _from_dlpack_cuda(obj: Any) -> Any:
    """A zero-copy CuPy (else torch) view of a CUDA DLPack producer."""
    try:
        import cupy  # type: ignore[import-not-found, unused-ignore]

        return cupy.from_dlpack(obj)
    except ImportError:
        pass
    try:
        import torch

        return torch.utils.dlpack.from_dlpack(obj)
    except ImportError:
        raise TypeError(
            f"a CUDA DLPack array ({type(obj).__name__}) can be read only through CuPy or torch, "
            "and neither is installed"
        ) from None


def describe_array(x: Any, name: str = "x") -> DeviceArray | None:
    """Where ``x`` lives: None for host memory (a ``numpy.ndarray``, or a DLPack producer on the
    CPU), a :class:`DeviceArray` for CUDA memory.

    Raises
    ------
    TypeError
        For an object that is no array, or a DLPack array on another device type (ROCm, ...).
    """
    if isinstance(x, np.ndarray):
        return None
    if not hasattr(x, "__cuda_array_interface__") and hasattr(x, "__dlpack_device__"):
        device_type, _ = x.__dlpack_device__()
        if int(device_type) == _DL_CPU:
            return None
        if int(device_type) not in (_DL_CUDA, _DL_CUDA_MANAGED):
            raise TypeError(
                f"{name} lives on DLPack device type {int(device_type)}; colmena runs on the "
                "CPU (numpy) or on CUDA devices only"
            )
        x = _from_dlpack_cuda(x)
    interface = getattr(x, "__cuda_array_interface__", None)
    if interface is None:
        raise TypeError(
            f"{name} must be a numpy.ndarray or a CUDA array (CuPy, torch, DLPack), "
            f"got {type(x).__name__}"
        )
    dtype = np.dtype(interface["typestr"])
    shape = tuple(int(s) for s in interface["shape"])
    strides_raw = interface.get("strides")
    if strides_raw is None:
        strides: list[int] = []
        step = dtype.itemsize
        for size in reversed(shape):
            strides.insert(0, step)
            step *= size
        strides_t = tuple(strides)
    else:
        strides_t = tuple(int(s) for s in strides_raw)
    library = _library(x)
    if library == "cupy":
        device = int(x.device.id)
    elif library == "torch":
        device = int(x.device.index or 0)
    elif isinstance(x, DeviceNDArray):
        device = x.device
    else:
        device = 0
    raw_stream = interface.get("stream")
    stream: int | None
    if raw_stream is None:
        stream = None
    elif int(raw_stream) == 1:  # the legacy default stream
        stream = 0
    else:  # 2 is cudaStreamPerThread, whose handle is 0x2 as well
        stream = int(raw_stream)
    return DeviceArray(
        obj=x,
        library=library,
        ptr=int(interface["data"][0]),
        shape=shape,
        strides=strides_t,
        dtype=dtype,
        device=device,
        stream=stream,
    )


def _stream_handle(stream: Any) -> int:
    if isinstance(stream, int):
        return stream
    for attr in ("ptr", "cuda_stream"):  # CuPy, torch
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    raise TypeError(
        f"stream must be an int (a cudaStream_t), a cupy.cuda.Stream or a torch.cuda.Stream, "
        f"got {type(stream).__name__}"
    )


def _stream_for(arr: DeviceArray, stream: Any) -> int:
    """The stream to run on: the caller's, else the producer's, else the library's current one."""
    if stream is not None:
        return _stream_handle(stream)
    if arr.stream is not None:
        return arr.stream
    if arr.library == "cupy":
        import cupy

        return int(cupy.cuda.get_current_stream().ptr)
    if arr.library == "torch":
        import torch

        return int(torch.cuda.current_stream(arr.device).cuda_stream)
    return 0


def _empty(like: DeviceArray, shape: tuple[int, ...], dtype: type[np.generic]) -> DeviceArray:
    """A new device array of ``like``'s library (CuPy for other producers) on its device."""
    if like.library == "torch":
        import torch

        torch_dtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
        out_t = torch.empty(shape, dtype=torch_dtype, device=like.obj.device)
        described = describe_array(out_t)
    else:
        try:
            import cupy
        except ImportError:
            out_own = DeviceNDArray(shape, dtype, device=like.device)
            described = describe_array(out_own)
        else:
            with cupy.cuda.Device(like.device):
                out_c = cupy.empty(shape, dtype=dtype)
            described = describe_array(out_c)
    assert described is not None
    return described


def _check(arr: DeviceArray, name: str, dtype: type[np.generic], device: int | None) -> None:
    if arr.dtype != np.dtype(dtype):
        raise TypeError(
            f"{name} must have dtype {np.dtype(dtype).name}, got {arr.dtype.name} "
            f"(convert it with .astype({np.dtype(dtype).name}) on the device)"
        )
    if device is not None and arr.device != device:
        raise ValueError(f"{name} is on CUDA device {arr.device}, expected CUDA device {device}")
    if not arr.c_contiguous():
        raise ValueError(f"{name} must be C-contiguous on the device (use cupy.ascontiguousarray)")


# ---------------------------------------------------------------- networks
class CudaSwarm:
    """The swarm's agents on a CUDA device: the weights of a :class:`colmena.Swarm` in device
    memory, the forward pass as one fused kernel (every layer of an agent in one kernel).

    Parameters
    ----------
    layers : sequence of (W, b)
        As :class:`colmena.Swarm` (checked there: shapes, finiteness), float32 host arrays.
    activation : {"tanh", "relu", "gelu", "identity"}
    device : int
        CUDA device index.

    Raises
    ------
    CudaUnavailableError
        Without a CUDA build or device.
    TypeError, ValueError
        As :class:`colmena.Swarm`.
    """

    __slots__ = ("_core",)

    def __init__(
        self,
        layers: Sequence[LayerWeights],
        activation: ActivationName = "tanh",
        *,
        device: int = 0,
    ) -> None:
        require_cuda("CudaSwarm", device)
        checked = Swarm(layers, activation)  # every check and message of the CPU model
        self._core = _core.CudaSwarm(
            checked.n_agents, list(checked.layer_sizes), activation, device
        )
        self.set_weights(checked.get_weights())

    @classmethod
    def from_swarm(cls, swarm: Swarm, *, device: int = 0) -> CudaSwarm:
        """A device copy of a CPU swarm's weights."""
        return cls(swarm.get_weights(), swarm.activation, device=device)  # type: ignore[arg-type, unused-ignore]

    @property
    def n_agents(self) -> int:
        """Number of agents."""
        return int(self._core.n_agents)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """(n_features, hidden..., 1)."""
        return tuple(self._core.layer_sizes)

    @property
    def activation(self) -> ActivationName:
        """Activation of the hidden layers (the output layer uses tanh)."""
        name: ActivationName = self._core.activation  # type: ignore[assignment]
        return name

    @property
    def device(self) -> int:
        """The CUDA device holding the weights."""
        return int(self._core.device)

    def set_weights(self, layers: Sequence[LayerWeights]) -> None:
        """Replace every layer (host float32 arrays, shapes as :class:`colmena.Swarm`); waits for
        the forward passes already enqueued on the device."""
        Swarm(layers, self.activation)  # the CPU model's checks and messages
        for i, (w, b) in enumerate(layers):
            self._core.set_layer(i, np.ascontiguousarray(w), np.ascontiguousarray(b))

    def get_weights(self) -> list[LayerWeights]:
        """Every layer, copied to host arrays."""
        return [self._core.get_layer(i) for i in range(len(self.layer_sizes) - 1)]

    def forward(self, x: Any, *, stream: Any = None) -> Any:
        """Every agent's signal for each step: x [n_steps, n_features] float32 -> [n_agents,
        n_steps] float32.

        A ``numpy.ndarray`` is copied to the device and the result back (synchronously); a CUDA
        array (on this swarm's device, C-contiguous) is read in place and the result is a new
        array of its library, enqueued on ``stream`` (see the module's notes).

        Raises
        ------
        TypeError
            For a dtype other than float32, or no array.
        ValueError
            For a shape other than [n_steps, n_features], a non-contiguous array, or an array on
            another device.
        """
        arr = describe_array(x)
        n_features = self.layer_sizes[0]
        if arr is None:
            host = np.asarray(x)
            if host.dtype != np.float32:
                raise TypeError(f"x must have dtype float32, got {host.dtype}")
            if host.ndim != 2 or host.shape[1] != n_features:
                raise ValueError(f"x must be [n_steps, {n_features}], got shape {host.shape}")
            result: NDArray[np.float32] = self._core.forward(np.ascontiguousarray(host))
            return result
        _check(arr, "x", np.float32, self.device)
        if len(arr.shape) != 2 or arr.shape[1] != n_features:
            raise ValueError(f"x must be [n_steps, {n_features}], got shape {arr.shape}")
        out = _empty(arr, (self.n_agents, arr.shape[0]), np.float32)
        self._core.forward_ptr(arr.ptr, arr.shape[0], n_features, out.ptr, _stream_for(arr, stream))
        return out.obj


class CudaVAEEncoder:
    """The VAE encoder on a CUDA device: the weights of a :class:`colmena.VAEEncoder` (the same
    arguments, checked there) in device memory, encoder and heads in one fused kernel.

    Parameters
    ----------
    layers, mu, logvar, activation
        As :class:`colmena.VAEEncoder` (host float32 arrays).
    device : int
        CUDA device index.

    Raises
    ------
    CudaUnavailableError
        Without a CUDA build or device.
    TypeError, ValueError
        As :class:`colmena.VAEEncoder`.
    """

    __slots__ = ("_core",)

    def __init__(
        self,
        layers: Sequence[LayerWeights],
        mu: LayerWeights,
        logvar: LayerWeights | None = None,
        activation: ActivationName = "relu",
        *,
        device: int = 0,
    ) -> None:
        require_cuda("CudaVAEEncoder", device)
        checked = VAEEncoder(layers, mu, logvar, activation)  # the CPU model's checks
        self._core = _core.CudaVAEEncoder(
            list(checked.layer_sizes), checked.latent_size, checked.has_logvar, activation, device
        )

        def host(pair: LayerWeights) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
            return (np.ascontiguousarray(pair[0]), np.ascontiguousarray(pair[1]))

        self._core.set_weights(
            [host(p) for p in layers], host(mu), None if logvar is None else host(logvar)
        )

    @property
    def device(self) -> int:
        """The CUDA device holding the weights."""
        return int(self._core.device)

    def encode(self, x: Any, *, return_logvar: bool = False, stream: Any = None) -> Any:
        """mu (and logvar) for x [batch, n_features] float32 -> [batch, latent] float32.

        Host arrays in, host arrays out (synchronously); CUDA arrays in, arrays of the same
        library out (stream-ordered), as :meth:`CudaSwarm.forward`.

        Raises
        ------
        TypeError, ValueError
            As :meth:`CudaSwarm.forward`; ValueError for ``return_logvar`` without the head.
        """
        arr = describe_array(x)
        n_features = int(self._core.layer_sizes[0])
        latent = int(self._core.latent_size)
        if return_logvar and not self._core.has_logvar:
            raise ValueError("return_logvar=True needs an encoder with the logvar head")
        if arr is None:
            host = np.asarray(x)
            if host.dtype != np.float32:
                raise TypeError(f"x must have dtype float32, got {host.dtype}")
            if host.ndim != 2 or host.shape[1] != n_features:
                raise ValueError(f"x must be [batch, {n_features}], got shape {host.shape}")
            return self._core.encode(np.ascontiguousarray(host), return_logvar)
        _check(arr, "x", np.float32, self.device)
        if len(arr.shape) != 2 or arr.shape[1] != n_features:
            raise ValueError(f"x must be [batch, {n_features}], got shape {arr.shape}")
        mu = _empty(arr, (arr.shape[0], latent), np.float32)
        logvar = _empty(arr, (arr.shape[0], latent), np.float32) if return_logvar else None
        self._core.encode_ptr(
            arr.ptr,
            arr.shape[0],
            n_features,
            mu.ptr,
            0 if logvar is None else logvar.ptr,
            _stream_for(arr, stream),
        )
        return (mu.obj, logvar.obj) if logvar is not None else mu.obj


def swarm_forward(swarm: Swarm | CudaSwarm, x: Any, *, stream: Any = None) -> Any:
    """A swarm's forward pass where ``x`` lives: a CPU :class:`colmena.Swarm` on host ``x``, a
    :class:`CudaSwarm` on host or device ``x``.

    Raises
    ------
    ValueError
        For a CUDA ``x`` and a CPU swarm (the message says to use :meth:`CudaSwarm.from_swarm`).
    """
    if isinstance(swarm, CudaSwarm):
        return swarm.forward(x, stream=stream)
    arr = describe_array(x)
    if arr is not None:
        raise ValueError(
            f"x is on CUDA device {arr.device} but the swarm's weights are in host memory; "
            "move them with CudaSwarm.from_swarm(swarm)"
        )
    return swarm.forward(x)


def vae_encode(
    encoder: VAEEncoder | CudaVAEEncoder, x: Any, *, return_logvar: bool = False, stream: Any = None
) -> Any:
    """An encoder's mu (and logvar) where ``x`` lives, as :func:`swarm_forward`."""
    if isinstance(encoder, CudaVAEEncoder):
        return encoder.encode(x, return_logvar=return_logvar, stream=stream)
    arr = describe_array(x)
    if arr is not None:
        raise ValueError(
            f"x is on CUDA device {arr.device} but the encoder's weights are in host memory; "
            "move them with CudaVAEEncoder(encoder)"
        )
    if return_logvar:
        return encoder.encode(x, return_logvar=True)
    return encoder.encode(x)


# ---------------------------------------------------------------- the pipeline's backend
class SwarmForward(Protocol):
    """What the pipeline needs of a swarm: :class:`colmena.Swarm` and :class:`CudaSwarm` are
    both one (host float32 arrays in and out)."""

    @property
    def n_agents(self) -> int:
        """Number of agents."""
        ...

    def forward(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """x [n_steps, n_features] float32 -> every agent's signal [n_agents, n_steps]."""
        ...

    def set_weights(self, layers: Sequence[LayerWeights]) -> None:
        """Replace every layer (stacked [n_agents, in, out] / [n_agents, out] float32)."""
        ...


class EncoderForward(Protocol):
    """What the pipeline needs of a VAE encoder: :class:`colmena.VAEEncoder` and
    :class:`CudaVAEEncoder` are both one (host float32 arrays in and out)."""

    def encode(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """mu of x [batch, n_features] float32 -> [batch, latent] float32."""
        ...


class ForwardBackend:
    """Where the training loop's and the backtest's forward passes run: this base class is the
    CPU core (:class:`colmena.Swarm`, :class:`colmena.VAEEncoder`); :func:`forward_backend`
    gives the CUDA one. A subclass overrides :meth:`swarm` and :meth:`encoder`; the objects they
    return take and give host numpy arrays, so nothing else in the pipeline changes.

    Attributes
    ----------
    name : str
        "cpu", "cuda:0", ...
    """

    name: str = "cpu"

    def swarm(self, layers: Sequence[LayerWeights], activation: ActivationName) -> SwarmForward:
        """A swarm with these stacked weights (``layers`` as :class:`colmena.Swarm`).

        Raises
        ------
        TypeError, ValueError
            As :class:`colmena.Swarm`.
        """
        return Swarm(layers, activation)

    def encoder(
        self,
        layers: Sequence[LayerWeights],
        mu: LayerWeights,
        logvar: LayerWeights | None = None,
        activation: ActivationName = "relu",
    ) -> EncoderForward:
        """A VAE encoder with these weights (arguments as :class:`colmena.VAEEncoder`).

        Raises
        ------
        TypeError, ValueError
            As :class:`colmena.VAEEncoder`.
        """
        return VAEEncoder(layers, mu, logvar, activation)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _CudaBackend(ForwardBackend):
    """The forward passes on CUDA device ``device`` (:class:`CudaSwarm`, :class:`CudaVAEEncoder`:
    host arrays are copied in and out synchronously)."""

    def __init__(self, device: int) -> None:
        require_cuda(f"device 'cuda:{device}'", device)
        self.device = device
        self.name = f"cuda:{device}"

    def swarm(self, layers: Sequence[LayerWeights], activation: ActivationName) -> SwarmForward:
        return CudaSwarm(layers, activation, device=self.device)

    def encoder(
        self,
        layers: Sequence[LayerWeights],
        mu: LayerWeights,
        logvar: LayerWeights | None = None,
        activation: ActivationName = "relu",
    ) -> EncoderForward:
        return CudaVAEEncoder(layers, mu, logvar, activation, device=self.device)


#: The CPU core (the default everywhere).
CPU_BACKEND: ForwardBackend = ForwardBackend()


def forward_backend(device: str | ForwardBackend = "cpu") -> ForwardBackend:
    """The forward implementation for ``device``: "cpu" (the CPU core), "cuda" (CUDA device 0)
    or "cuda:N"; a :class:`ForwardBackend` is returned as it is (tests inject their own).

    Raises
    ------
    ValueError
        For another string.
    CudaUnavailableError
        For "cuda" / "cuda:N" without a CUDA build, without a visible device, or for an index
        out of range (the message says which).
    """
    if isinstance(device, ForwardBackend):
        return device
    if device == "cpu":
        return CPU_BACKEND
    if device == "cuda":
        return _CudaBackend(0)
    if device.startswith("cuda:") and device[5:].isdigit():
        return _CudaBackend(int(device[5:]))
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


# ---------------------------------------------------------------- features
def _device_series(x: Any) -> DeviceArray | None:
    arr = describe_array(x)
    if arr is None:
        return None
    require_cuda("fracdiff on a CUDA array", arr.device)
    _check(arr, "x", np.float64, None)
    if len(arr.shape) != 1:
        raise ValueError(f"x must be 1-D, got shape {arr.shape}")
    return arr


def fracdiff(
    x: Any,
    d: float,
    *,
    threshold: float | None = None,
    window: int | None = None,
    method: Method = "auto",
    stream: Any = None,
) -> Any:
    """FFD (:func:`colmena.fracdiff`) where ``x`` lives.

    A host ``x`` runs :func:`colmena.fracdiff` unchanged. A CUDA float64 ``x`` [n] gives a device
    array [n - W + 1] of its library: "direct" is one thread per output; "fft" is cuFFT
    overlap-save (needs a build with cuFFT: ``colmena._core.cuda_has_cufft()``); "auto" takes the
    FFT from ``colmena._core.cuda_fft_crossover()`` weights on when cuFFT is there. NaN rules as
    on the CPU.

    Raises
    ------
    CudaUnavailableError, TypeError, ValueError
        See the module's notes; ValueError as :func:`colmena.fracdiff` for bad arguments.
    """
    arr = _device_series(x)
    if arr is None:
        return _cpu_fracdiff(x, d, threshold=threshold, window=window, method=method)
    weights = fracdiff_weights(d, threshold=threshold, window=window)
    n = arr.shape[0]
    if n < weights.size:
        raise ValueError(
            f"x has {n} values, fewer than the FFD window of {weights.size} weights (d={d})"
        )
    out = _empty(arr, (n - weights.size + 1,), np.float64)
    _core.cuda_fracdiff_ffd(
        arr.ptr, n, weights, out.ptr, method, arr.device, _stream_for(arr, stream)
    )
    return out.obj


def fracdiff_expanding(
    x: Any, d: float, *, threshold: float = 0.01, method: Method = "auto", stream: Any = None
) -> Any:
    """Expanding-window FracDiff (:func:`colmena.fracdiff_expanding`) where ``x`` lives; a CUDA
    float64 ``x`` [n] gives a device array [n] (NaN head and NaN rules as on the CPU).

    Raises
    ------
    CudaUnavailableError, TypeError, ValueError
        As :func:`fracdiff`.
    """
    arr = _device_series(x)
    if arr is None:
        return _cpu_fracdiff_expanding(x, d, threshold=threshold, method=method)
    if not (0.0 <= d <= 2.0):
        raise ValueError(f"d must be in [0, 2], got {d}")
    n = arr.shape[0]
    out = _empty(arr, (n,), np.float64)
    _core.cuda_fracdiff_expanding(
        arr.ptr,
        n,
        float(d),
        float(threshold),
        out.ptr,
        method,
        arr.device,
        _stream_for(arr, stream),
    )
    return out.obj


# ---------------------------------------------------------------- fitness
def proxy_scores(
    signals: Any,
    returns: Any,
    tradable: Any,
    *,
    cost: float,
    long_only: bool,
    periods_per_year: float,
    stream: Any = None,
) -> Any:
    """The population's proxy fitness where the signals live (cpp/include/colmena/
    device_ops.hpp): with ``p_k = tradable_k ? (long_only ? max(s_k, 0) : s_k) : 0`` and
    ``g_k = p_k r_k - cost |p_k - p_{k-1}|`` (``p_{-1} = 0``), every agent's
    ``sqrt(periods_per_year) * mean(g) / sqrt(var(g, ddof=1) + 1e-12)``: the objective the
    evolution's Adam fine-tuning maximises (:func:`colmena.training.evolution.finetune_adam`).

    Parameters
    ----------
    signals : float32 [n_agents, n_steps]
        The agents' targets at consecutive decisions (host or device).
    returns : float64 [n_steps]
        Log return from each decision to the next, same memory as ``signals``.
    tradable : bool or uint8 [n_steps]
        Same memory as ``signals``.
    cost : float
        One-way cost per unit of position change, a fraction (fee + slippage).
    long_only : bool
    periods_per_year : float
        Decisions per year (annualisation).

    Returns
    -------
    float64 [n_agents]
        numpy for host inputs, an array of the signals' library for device inputs; 0 with fewer
        than two steps.

    Raises
    ------
    CudaUnavailableError, TypeError, ValueError
    """
    arr = describe_array(signals, "signals")
    if arr is None:
        result: NDArray[np.float64] = _core.proxy_scores(
            np.ascontiguousarray(signals, dtype=np.float32),
            np.ascontiguousarray(returns, dtype=np.float64),
            np.ascontiguousarray(tradable, dtype=np.uint8),
            float(cost),
            bool(long_only),
            float(periods_per_year),
        )
        return result
    require_cuda("proxy_scores on CUDA arrays", arr.device)
    _check(arr, "signals", np.float32, None)
    if len(arr.shape) != 2:
        raise ValueError(f"signals must be [n_agents, n_steps], got shape {arr.shape}")
    n_agents, n_steps = arr.shape
    r = describe_array(returns, "returns")
    t = describe_array(tradable, "tradable")
    if r is None or t is None:
        raise ValueError("signals are on a CUDA device; returns and tradable must be there too")
    _check(r, "returns", np.float64, arr.device)
    if t.dtype not in (np.dtype(np.bool_), np.dtype(np.uint8)):
        raise TypeError(f"tradable must have dtype bool or uint8, got {t.dtype.name}")
    _check(t, "tradable", t.dtype.type, arr.device)
    if r.shape != (n_steps,) or t.shape != (n_steps,):
        raise ValueError(f"returns and tradable must be [{n_steps}], got {r.shape} and {t.shape}")
    out = _empty(arr, (n_agents,), np.float64)
    _core.cuda_proxy_scores(
        arr.ptr,
        n_agents,
        n_steps,
        r.ptr,
        t.ptr,
        float(cost),
        bool(long_only),
        float(periods_per_year),
        out.ptr,
        arr.device,
        _stream_for(arr, stream),
    )
    return out.obj


def generation_scores(
    swarm: CudaSwarm,
    x: Any,
    returns: Any,
    tradable: Any,
    *,
    cost: float,
    long_only: bool,
    periods_per_year: float,
    stream: Any = None,
) -> tuple[Any, Any]:
    """One generation's evaluation on the device: the forward pass of every agent over the
    decision states ``x`` [n_steps, n_features] and their proxy scores, without leaving the
    device (device arrays in; (signals [n_agents, n_steps], scores [n_agents]) out).

    Raises
    ------
    ValueError
        For host arrays (use :func:`swarm_forward` and :func:`proxy_scores` there).
    """
    if describe_array(x) is None:
        raise ValueError("generation_scores runs on device arrays; x is in host memory")
    signals = swarm.forward(x, stream=stream)
    scores = proxy_scores(
        signals,
        returns,
        tradable,
        cost=cost,
        long_only=long_only,
        periods_per_year=periods_per_year,
        stream=stream,
    )
    return signals, scores
