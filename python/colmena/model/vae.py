"""Variational autoencoder of the market state, trained in torch, run in the compiled core.

A beta-VAE (Kingma & Welling, "Auto-Encoding Variational Bayes", 2014; Higgins et al.,
"beta-VAE", ICLR 2017) compresses one standardized window of market features
(:meth:`colmena.state.MarketState.windows`, ``state_bars * 4`` numbers) into a latent mean
``mu`` of ``latent_dim`` numbers. Training needs torch (:data:`TORCH_HINT`);
inference does not: :meth:`TrainedVAE.encoder` hands the encoder weights to
:class:`colmena.VAEEncoder`, the C++ forward pass.

Loss per sample: ``sum((x - x_hat)^2) + beta * KL(N(mu, exp(logvar)) || N(0, 1))``, averaged over
the batch. The last ``validation_fraction`` of the samples in time order is held out; training
stops when the validation loss has not improved for ``patience`` epochs, and the weights of the
best epoch are kept (early stopping).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

import msgspec
import numpy as np
from numpy.typing import NDArray

__all__ = ["TORCH_HINT", "TrainedVAE", "VAEConfig", "require_torch", "train_vae"]

#: How to install what training needs, without a multi-GB CUDA download on a CPU machine.
TORCH_HINT = (
    "training needs torch; install its CPU build with "
    "`pip install torch --index-url https://download.pytorch.org/whl/cpu` "
    "(or `pip install 'colmena-swarm[train]'`, which may fetch a CUDA build of several GB)"
)


def require_torch() -> None:
    """Check that torch imports, before any long download or computation.

    Raises
    ------
    ImportError
        With :data:`TORCH_HINT` when torch is not installed.
    """
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise ImportError(TORCH_HINT)


#: Widest hidden layer a VAE may have (a bound on the weights allocated before training).
MAX_HIDDEN_WIDTH: Final = 65_536


class VAEConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """VAE architecture and training settings.

    Attributes
    ----------
    hidden : tuple of int
        Encoder hidden widths (the decoder mirrors them), each in [1, 65536].
    latent_dim : int
        Size of ``mu`` (and ``logvar``).
    beta : float
        Weight of the KL term (beta-VAE), >= 0.
    epochs : int
        Maximum training epochs.
    batch_size : int
        Samples per Adam step.
    learning_rate : float
        Adam learning rate.
    patience : int
        Epochs without validation improvement before stopping.
    validation_fraction : float
        Share of samples (the latest in time) held out for early stopping, in (0, 0.5].
    max_samples_per_epoch : int
        Random training samples drawn per epoch (all of them when fewer).
    """

    hidden: tuple[Annotated[int, msgspec.Meta(ge=1, le=MAX_HIDDEN_WIDTH)], ...] = (128, 64)
    latent_dim: Annotated[int, msgspec.Meta(ge=1)] = 16
    beta: Annotated[float, msgspec.Meta(ge=0.0)] = 0.5
    epochs: Annotated[int, msgspec.Meta(ge=1)] = 20
    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 512
    learning_rate: Annotated[float, msgspec.Meta(gt=0.0)] = 1e-3
    patience: Annotated[int, msgspec.Meta(ge=1)] = 3
    validation_fraction: Annotated[float, msgspec.Meta(gt=0.0, le=0.5)] = 0.1
    max_samples_per_epoch: Annotated[int, msgspec.Meta(ge=1)] = 100_000

    def __post_init__(self) -> None:
        # Decoding checks the Meta bounds; plain construction does not.
        if any(isinstance(w, bool) or not 1 <= w <= MAX_HIDDEN_WIDTH for w in self.hidden):
            raise ValueError(
                f"hidden widths must be in [1, {MAX_HIDDEN_WIDTH}], got {self.hidden!r}"
            )


@dataclass(frozen=True)
class TrainedVAE:
    """Encoder weights of a trained VAE in the core's layout, with its training history.

    Attributes
    ----------
    layers : list of (W, b)
        Hidden layers, ``W`` float32 [in, out], ``b`` float32 [out]; activation ReLU.
    mu, logvar : (W, b)
        Output heads, ``W`` float32 [hidden[-1], latent_dim]; ``logvar`` is None for a resumed
        run whose checkpoint does not hold it (inference reads only ``mu``).
    epochs_run : int
        Epochs trained (early stopping may end before ``VAEConfig.epochs``).
    best_epoch : int
        Epoch (1-based) whose weights were kept.
    history : list of dict
        Per epoch: ``train_loss``, ``val_loss``, ``reconstruction``, ``kl``.
    module : torch.nn.Module or None
        The trained torch model (best epoch), for decoding or further training; not stored in
        the training state (None for a resumed run).
    """

    layers: list[tuple[NDArray[np.float32], NDArray[np.float32]]]
    mu: tuple[NDArray[np.float32], NDArray[np.float32]]
    logvar: tuple[NDArray[np.float32], NDArray[np.float32]] | None
    epochs_run: int
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    module: Any = None

    def encoder(self) -> Any:
        """The C++ encoder (:class:`colmena.VAEEncoder`) with these weights."""
        from colmena.model.nn import VAEEncoder

        return VAEEncoder(self.layers, self.mu, self.logvar, activation="relu")


def _build(input_dim: int, config: VAEConfig) -> Any:
    import torch
    from torch import nn

    class BetaVAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = [input_dim, *config.hidden]
            enc: list[nn.Module] = []
            for a, b in itertools.pairwise(widths):
                enc += [nn.Linear(a, b), nn.ReLU()]
            self.encoder = nn.Sequential(*enc)
            self.mu = nn.Linear(widths[-1], config.latent_dim)
            self.logvar = nn.Linear(widths[-1], config.latent_dim)
            back = [config.latent_dim, *reversed(config.hidden)]
            dec: list[nn.Module] = []
            for a, b in itertools.pairwise(back):
                dec += [nn.Linear(a, b), nn.ReLU()]
            dec.append(nn.Linear(back[-1], input_dim))
            self.decoder = nn.Sequential(*dec)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            h = self.encoder(x)
            mu, logvar = self.mu(h), self.logvar(h)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return self.decoder(z), mu, logvar

    return BetaVAE()


def train_vae(
    samples: NDArray[np.float32],
    config: VAEConfig | None = None,
    *,
    seed: int = 0,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainedVAE:
    """Train a beta-VAE on market-state windows.

    Parameters
    ----------
    samples : numpy.ndarray of float32, shape [n_samples, input_dim]
        Standardized state windows in time order (valid bars only).
    config : VAEConfig, optional
    seed : int
        Seeds torch and the sampling; the same seed and data give the same weights.
    on_epoch : callable, optional
        Called after every epoch with ``(epoch, metrics)`` (progress bars).

    Returns
    -------
    TrainedVAE

    Raises
    ------
    ImportError
        Without torch (:data:`TORCH_HINT`).
    ValueError
        If ``samples`` is not 2-D, not finite, or too few to split (fewer than 10).
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError(TORCH_HINT) from exc

    config = config or VAEConfig()
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"samples must be 2-D [n_samples, input_dim], got shape {x.shape}")
    if x.shape[0] < 10:
        raise ValueError(f"need at least 10 samples to train the VAE, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError("samples hold NaN or infinite values")

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_val = max(1, round(x.shape[0] * config.validation_fraction))
    train_x = torch.from_numpy(x[:-n_val])
    val_x = torch.from_numpy(x[-n_val:])
    model = _build(x.shape[1], config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)

    def loss_terms(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recon, mu, logvar = model(batch)
        rec = ((batch - recon) ** 2).sum(dim=1).mean()
        kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)).mean()
        return rec, kl

    best_state: dict[str, torch.Tensor] | None = None
    best_val = float("inf")
    best_epoch = 0
    stale = 0
    history: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        n_train = train_x.shape[0]
        take = min(n_train, config.max_samples_per_epoch)
        order = torch.from_numpy(rng.permutation(n_train)[:take])
        total = 0.0
        for start in range(0, take, config.batch_size):
            batch = train_x[order[start : start + config.batch_size]]
            rec, kl = loss_terms(batch)
            loss = rec + config.beta * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += float(loss.detach()) * batch.shape[0]
        model.eval()
        with torch.no_grad():
            torch.manual_seed(seed + epoch)  # fixed noise for a comparable validation loss
            rec, kl = loss_terms(val_x)
            val = float(rec + config.beta * kl)
        metrics = {
            "train_loss": total / take,
            "val_loss": val,
            "reconstruction": float(rec),
            "kl": float(kl),
        }
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if val < best_val - 1e-9:
            best_val, best_epoch, stale = val, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)

    def pair(linear: Any) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        w = linear.weight.detach().numpy().T.astype(np.float32, copy=True)
        b = linear.bias.detach().numpy().astype(np.float32, copy=True)
        return np.ascontiguousarray(w), b

    layers = [pair(m) for m in model.encoder if isinstance(m, torch.nn.Linear)]
    return TrainedVAE(
        layers=layers,
        mu=pair(model.mu),
        logvar=pair(model.logvar),
        epochs_run=epoch,
        best_epoch=best_epoch,
        history=history,
        module=model,
    )
