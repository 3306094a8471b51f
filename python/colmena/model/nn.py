"""Neural forward passes: the swarm's agent networks, a single MLP and the VAE encoder.

The networks are trained in torch (VAE, gradient fine-tuning) or evolved (the swarm's genetic
algorithm); inference runs in the compiled core (``colmena._core``, ``cpp/src/mlp.cpp``) on
float32 without torch. A dense layer is torch's ``nn.Linear`` with its weight transposed:
``y = act(x @ W + b)``, ``W`` of shape ``[n_in, n_out]`` and ``b`` of shape ``[n_out]``; from a
torch layer ``lin`` that is ``(lin.weight.detach().numpy().T, lin.bias.detach().numpy())``.

Activations: ``"tanh"``, ``"relu"``, ``"gelu"`` (the exact erf form,
``x * Phi(x)`` with ``Phi`` the standard normal CDF; Hendrycks and Gimpel, 2016; torch's
default ``approximate="none"``) and ``"identity"``. tanh and gelu are vectorised approximations
within ``2e-7 * max(1, |f(x)|)`` of the exact functions, so outputs match a torch float32
forward pass of the same weights to about 1e-6 (the tests hold them to 1e-5).

Outputs are bit-identical at every SIMD level (``colmena.build_info()["simd_selected"]``), for
a row alone or inside any batch, and for any thread count: every output is computed by one
fixed sequence of float32 operations (``cpp/include/colmena/mlp.hpp``). The objects are safe to
use from several threads: forward passes run concurrently, and a weight update waits for them
and is seen whole or not at all.

Inputs are checked, never converted: float32 NumPy arrays, contiguous along the last axis (rows
may be any whole number of floats apart, so row slices of a bigger array pass without a copy).
NaN or infinite inputs are not rejected: they give NaN (or infinite) outputs in the rows they
reach, as in torch. Weights are checked when they are set: a non-finite weight or bias is a
ValueError that names the layer, the argument and the position. Weights are copied into the
core's packed storage, allocated once per object; replacing weights copies in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import numpy as np
from numpy.typing import NDArray

from colmena import _core

__all__ = ["MLP", "ActivationName", "Float32Array", "Swarm", "VAEEncoder"]

Float32Array = NDArray[np.float32]
#: Activation of hidden layers (and of an MLP's output layer).
ActivationName = Literal["tanh", "relu", "gelu", "identity"]
#: One dense layer, ``(W, b)``.
LayerWeights = tuple[Float32Array, Float32Array]


class Swarm:
    """The swarm's agents: ``n_agents`` MLPs of the same shape, each with its own weights.

    Agent ``k`` maps a market-state vector to a signal in [-1, 1]:
    ``h_0 = x``, ``h_{i+1} = act(h_i @ W_i[k] + b_i[k])`` for the hidden layers and
    ``tanh(h @ W_L[k] + b_L[k])`` for the output layer. All agents run in one call, over one
    state (a live tick) or a whole series (a backtest); this is ``torch.baddbmm`` on the stacked
    weights, evaluated in the compiled core on both the calling thread and the core's pool.

    Parameters
    ----------
    layers : sequence of (W, b)
        ``W`` float32 ``[n_agents, n_in, n_out]`` and ``b`` float32 ``[n_agents, n_out]`` per
        layer, input layer first; layer ``i``'s ``n_in`` is layer ``i - 1``'s ``n_out``, the
        first ``n_in`` is the number of features and the last ``n_out`` must be 1. Any memory
        layout; the values are copied. At least one layer.
    activation : {"tanh", "relu", "gelu", "identity"}
        Activation of the hidden layers (the output layer always uses tanh).

    Raises
    ------
    TypeError
        If ``layers`` is not a sequence of pairs, or a ``W`` or ``b`` is not a float32
        ``numpy.ndarray``.
    ValueError
        For shapes that do not chain, a last ``n_out`` other than 1, an empty dimension, an
        unknown activation, or a non-finite weight (the message names the layer, ``W`` or
        ``b``, and the position ``[agent, i, j]``).
    """

    __slots__ = ("_core",)

    def __init__(self, layers: Sequence[LayerWeights], activation: ActivationName = "tanh") -> None:
        self._core = _core.Swarm(layers, activation)

    def forward(self, x: Float32Array) -> Float32Array:
        """Every agent's signal for one state or for each step of a series.

        Parameters
        ----------
        x : numpy.ndarray, float32 [n_features] or [n_steps, n_features]
            Market state, features last; contiguous along the features (rows may be strided).
            Not copied.

        Returns
        -------
        numpy.ndarray, float32 [n_agents] or [n_agents, n_steps]
            Signals in [-1, 1]; ``out[k, t]`` is agent ``k`` at step ``t``. The single-state
            result equals the corresponding column of the series result bit for bit (same
            summation order), whatever the number of threads. A NaN in ``x[t]`` makes
            ``out[:, t]`` NaN.

        Raises
        ------
        TypeError
            If ``x`` is not a float32 ``numpy.ndarray``.
        ValueError
            If ``x`` is not 1-D or 2-D, its last axis is not ``n_features`` long or not
            contiguous, or its rows are not in increasing memory order.

        Notes
        -----
        Releases the GIL (except for tiny swarms, under about 32,000 multiply-adds a call) and
        uses the core's thread pool (``colmena.build_info()["max_threads"]``) when the work is
        large enough to repay waking it. For one state each thread keeps the same block of
        agents from call to call, so their weights stay in its core's cache.
        """
        return self._core.forward(x)

    @property
    def n_agents(self) -> int:
        """Number of agents."""
        return self._core.n_agents

    @property
    def n_features(self) -> int:
        """Width of the state vector, ``layer_sizes[0]``."""
        return self._core.layer_sizes[0]

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Widths ``(n_features, hidden_1, ..., 1)``: ``len(layers) + 1`` numbers."""
        return tuple(self._core.layer_sizes)

    @property
    def activation(self) -> str:
        """Activation of the hidden layers."""
        return self._core.activation

    @property
    def storage_address(self) -> int:
        """Address of the packed weights; constant for the object's life (updates copy in place)."""
        return self._core.storage_address

    def set_layer(self, index: int, W: Float32Array, b: Float32Array) -> None:  # noqa: N803
        """Replace layer ``index`` of every agent, in place.

        Parameters
        ----------
        index : int
            Layer number in ``[0, len(layer_sizes) - 1)``.
        W : numpy.ndarray, float32 [n_agents, n_in, n_out]
        b : numpy.ndarray, float32 [n_agents, n_out]
            The layer's shapes must not change.

        Raises
        ------
        IndexError
            For a layer number out of range.
        TypeError, ValueError
            As for the constructor; on error nothing is written.
        """
        self._core.set_layer(index, W, b)

    def set_weights(self, layers: Sequence[LayerWeights]) -> None:
        """Replace every layer of every agent (a new generation), in place.

        Parameters
        ----------
        layers : sequence of (W, b)
            Same count and shapes as the constructor's. All layers are checked before any is
            written: on error nothing changes.

        Raises
        ------
        TypeError, ValueError
            As for the constructor, or when the shapes differ from the swarm's.
        """
        self._core.set_weights(layers)

    def set_agent(self, agent: int, layers: Sequence[LayerWeights]) -> None:
        """Replace all weights of one agent (a child of crossover or mutation), in place.

        Parameters
        ----------
        agent : int
            Agent slot in ``[0, n_agents)``.
        layers : sequence of (W, b)
            One agent's weights: ``W`` float32 ``[n_in, n_out]``, ``b`` float32 ``[n_out]``
            per layer (the shapes of :meth:`get_agent`). Checked before anything is written.

        Raises
        ------
        IndexError
            For an agent slot out of range.
        TypeError, ValueError
            As for the constructor.
        """
        self._core.set_agent(agent, layers)

    def get_weights(self) -> list[LayerWeights]:
        """Copies of all weights, ``[(W [n_agents, n_in, n_out], b [n_agents, n_out]), ...]``."""
        return self._core.get_weights()

    def get_agent(self, agent: int) -> list[LayerWeights]:
        """Copies of one agent's weights, ``[(W [n_in, n_out], b [n_out]), ...]``.

        Raises
        ------
        IndexError
            For an agent slot outside ``[0, n_agents)``.
        """
        return self._core.get_agent(agent)

    def __repr__(self) -> str:
        sizes = " -> ".join(str(s) for s in self.layer_sizes)
        return f"Swarm(n_agents={self.n_agents}, layers={sizes}, activation={self.activation!r})"


class MLP:
    """One dense network (torch's ``nn.Sequential`` of ``nn.Linear`` and activations).

    ``h_0 = x``, ``h_{i+1} = activation(h_i @ W_i + b_i)`` for the hidden layers and
    ``output_activation(h @ W_L + b_L)`` for the last one.

    Parameters
    ----------
    layers : sequence of (W, b)
        ``W`` float32 ``[n_in, n_out]`` and ``b`` float32 ``[n_out]`` per layer, input layer
        first, widths chaining. Any memory layout; the values are copied.
    activation : {"tanh", "relu", "gelu", "identity"}
        Activation of the hidden layers.
    output_activation : {"identity", "tanh", "relu", "gelu"}
        Activation of the last layer.

    Raises
    ------
    TypeError
        If ``layers`` is not a sequence of pairs of float32 ``numpy.ndarray``.
    ValueError
        For shapes that do not chain, an empty dimension, an unknown activation, or a
        non-finite weight (the message names the layer, ``W`` or ``b`` and the position).
    """

    __slots__ = ("_core",)

    def __init__(
        self,
        layers: Sequence[LayerWeights],
        activation: ActivationName = "tanh",
        output_activation: ActivationName = "identity",
    ) -> None:
        self._core = _core.MLP(layers, activation, output_activation)

    def forward(self, x: Float32Array) -> Float32Array:
        """The network's output for one input or a batch.

        Parameters
        ----------
        x : numpy.ndarray, float32 [n_features] or [n_rows, n_features]
            Contiguous along the features (rows may be strided). Not copied.

        Returns
        -------
        numpy.ndarray, float32 [n_out] or [n_rows, n_out]
            A NaN in a row makes that row's output NaN. A row alone gives bit for bit what it
            gives inside a batch.

        Raises
        ------
        TypeError
            If ``x`` is not a float32 ``numpy.ndarray``.
        ValueError
            For a shape other than ``[n_features]`` / ``[n_rows, n_features]`` or a last axis
            that is not contiguous.
        """
        return self._core.forward(x)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Widths ``(n_features, hidden_1, ..., n_out)``."""
        return tuple(self._core.layer_sizes)

    @property
    def activation(self) -> str:
        """Activation of the hidden layers."""
        return self._core.activation

    @property
    def output_activation(self) -> str:
        """Activation of the last layer."""
        return self._core.output_activation

    @property
    def storage_address(self) -> int:
        """Address of the packed weights; constant for the object's life (updates copy in place)."""
        return self._core.storage_address

    def set_layer(self, index: int, W: Float32Array, b: Float32Array) -> None:  # noqa: N803
        """Replace layer ``index`` in place: ``W`` float32 ``[n_in, n_out]``, ``b`` ``[n_out]``.

        Raises
        ------
        IndexError
            For a layer number out of range.
        TypeError, ValueError
            As for the constructor, or for a changed shape; on error nothing is written.
        """
        self._core.set_layer(index, W, b)

    def set_weights(self, layers: Sequence[LayerWeights]) -> None:
        """Replace every layer in place (same shapes); all are checked before any is written.

        Raises
        ------
        TypeError, ValueError
            As for the constructor, or for changed shapes.
        """
        self._core.set_weights(layers)

    def get_weights(self) -> list[LayerWeights]:
        """Copies of the weights, ``[(W [n_in, n_out], b [n_out]), ...]``."""
        return self._core.get_weights()

    def __repr__(self) -> str:
        sizes = " -> ".join(str(s) for s in self.layer_sizes)
        return (
            f"MLP(layers={sizes}, activation={self.activation!r}, "
            f"output_activation={self.output_activation!r})"
        )


class VAEEncoder:
    """Encoder of a variational autoencoder (Kingma and Welling, 2014): ``x -> (mu, logvar)``.

    A trunk of dense layers with ``activation``, then two linear heads that read the trunk's
    output: ``mu`` (the mean of ``q(z | x)``, used as the latent features) and optionally
    ``logvar`` (its log-variance). Inference only: no sampling.

    Parameters
    ----------
    layers : sequence of (W, b)
        Trunk, ``W`` float32 ``[n_in, n_out]`` and ``b`` float32 ``[n_out]`` per layer; may be
        empty (the heads then read the input).
    mu : (W, b)
        Mean head, ``W`` ``[trunk_out, n_latent]``, ``b`` ``[n_latent]``.
    logvar : (W, b), optional
        Log-variance head with the shapes of ``mu``.
    activation : {"relu", "tanh", "gelu", "identity"}
        Activation of the trunk layers.

    Raises
    ------
    TypeError
        If an argument is not a pair or list of pairs of float32 ``numpy.ndarray``.
    ValueError
        For shapes that do not chain, an empty dimension, an unknown activation, or a
        non-finite weight (the message names ``layers[i]``, ``mu`` or ``logvar``, ``W`` or ``b``,
        and the position).
    """

    __slots__ = ("_core",)

    def __init__(
        self,
        layers: Sequence[LayerWeights],
        mu: LayerWeights,
        logvar: LayerWeights | None = None,
        activation: ActivationName = "relu",
    ) -> None:
        self._core = _core.VAEEncoder(layers, mu, logvar, activation)

    @overload
    def encode(self, x: Float32Array, return_logvar: Literal[False] = False) -> Float32Array: ...

    @overload
    def encode(
        self, x: Float32Array, return_logvar: Literal[True]
    ) -> tuple[Float32Array, Float32Array]: ...

    def encode(
        self, x: Float32Array, return_logvar: bool = False
    ) -> Float32Array | tuple[Float32Array, Float32Array]:
        """Latent mean (and log-variance) of each input row.

        Parameters
        ----------
        x : numpy.ndarray, float32 [batch, n_features] or [n_features]
            Contiguous along the features (rows may be strided). Not copied.
        return_logvar : bool
            Also return the log-variance head (needs the ``logvar`` weights).

        Returns
        -------
        mu : numpy.ndarray, float32 [batch, n_latent] or [n_latent]
        logvar : numpy.ndarray, float32, same shape as ``mu``
            Only with ``return_logvar=True``, as ``(mu, logvar)``.

        Raises
        ------
        TypeError
            If ``x`` is not a float32 ``numpy.ndarray``.
        ValueError
            For a bad shape or layout of ``x``, or ``return_logvar=True`` without the
            ``logvar`` head.

        Notes
        -----
        Small inputs (one row) run in the calling thread with the GIL held and reuse the
        thread's scratch memory: the call costs little more than allocating the output. Inputs
        past about 32,000 multiply-adds release the GIL; large batches use the core's thread
        pool. A NaN in a row makes that
        row's outputs NaN.
        """
        return self._core.encode(x, return_logvar)

    @property
    def n_features(self) -> int:
        """Width of the input, ``layer_sizes[0]``."""
        return self._core.layer_sizes[0]

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Widths of the trunk ``(n_features, hidden_1, ...)``; the heads are not included."""
        return tuple(self._core.layer_sizes)

    @property
    def latent_size(self) -> int:
        """Width of ``mu`` (and ``logvar``), ``n_latent``."""
        return self._core.latent_size

    @property
    def has_logvar(self) -> bool:
        """Whether the encoder was given the log-variance head."""
        return self._core.has_logvar

    @property
    def activation(self) -> str:
        """Activation of the trunk layers."""
        return self._core.activation

    def __repr__(self) -> str:
        sizes = " -> ".join(str(s) for s in self.layer_sizes)
        return (
            f"VAEEncoder(layers={sizes}, latent_size={self.latent_size}, "
            f"has_logvar={self.has_logvar}, activation={self.activation!r})"
        )
