"""The checks ``conf/load.py`` runs on a configuration, one module per capability, named like
the ``conf/sections/`` module of the sections it checks:

- ``errors``: ``ConfigError`` and how it shows the value it found
- ``schema``: TOML tables into the dataclasses: unknown keys, types, ranges, required keys
- ``common``: what several sections share: tokens, names, addresses, status code lists
- ``node``: ``[node]``, ``[curve]``, ``[[peer]]``
- ``listen``: ``[[listen]]``, ``[tcp]``; ``tls``: their TLS keys and ``[tls]``
- ``bus``: ``[bus]`` (the hop between hosts: ``conf/bustcp.py``)
- ``routing``: ``[proxy]`` option tags, ``[[destination_set]]``, ``[[route]]``, ``[[trusted]]``
- ``route_rules``: what a ``[[route]]`` may say beyond where it sends (conditions on headers,
  rewrites, header edits, failure sets); also used by ``workers/routing/rules.py``
- ``prefix_tables``: ``[[prefix_table]]`` and the routes that name one
- ``registrar``: ``[registrar]``, ``[nat]``
- ``auth``: ``[auth]``, ``[[auth_realm]]``
- ``dialogs``: ``[dialogs]``, ``[[dialog_profile]]``
- ``protection``: ``[pike]``, ``[[ratelimit]]``
- ``stateplane``: ``[stateplane]`` peers, bind, relay, failover roles and members

Each check takes the file name and the whole ``Settings`` (rules span sections) and raises
``ConfigError`` naming the file, the key, what was expected and what was found.
"""
