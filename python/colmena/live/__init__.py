"""Live: the swarm trading a candle feed, one candle at a time, with the backtest's own stages.

- :mod:`colmena.live.trader`: :class:`SwarmTrader`, one candle in, one decision out (streaming
  market state, VAE, swarm, consensus, trading loop), equal to the batch backtest bit for bit.
- :mod:`colmena.live.wire`: the wire contract of the services, every NATS subject and its
  message (MessagePack, versioned, with idempotency keys); :mod:`colmena.live.contract`
  generates its language-neutral form, ``proto/asyncapi.json``.
"""

from colmena.live.trader import CandleResult, SignalResult, SignalStage, SwarmTrader

__all__ = ["CandleResult", "SignalResult", "SignalStage", "SwarmTrader"]
