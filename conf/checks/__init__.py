"""The checks ``conf/load.py`` runs on a configuration, one module per capability, named like
the ``conf/sections/`` module of the sections it checks:

- ``errors``: ``ConfigError`` and how it shows the value it found
- ``schema``: TOML tables into the dataclasses: unknown keys, types, ranges, required keys
- ``common``: what several sections share: tokens, names, addresses, status code lists
- ``node``: ``[node]``, ``[curve]``, ``[[peer]]``
- ``listen``: ``[[listen]]``, ``[tcp]`` (TLS: ``conf/tlscheck.py``)
- ``bus``: ``[bus]`` (the hop between hosts: ``conf/bustcp.py``)
- ``routing``: ``[proxy]`` option tags, ``[[destination_set]]``, ``[[route]]``, ``[[trusted]]``
  (a route's conditions, rewrites and edits: ``conf/routing.py``; ``[[prefix_table]]``:
  ``conf/prefix_tables.py``)
- ``registrar``: ``[registrar]``, ``[nat]``
- ``auth``: ``[auth]``, ``[[auth_realm]]``
- ``dialogs``: ``[dialogs]``, ``[[dialog_profile]]``
- ``protection``: ``[pike]``, ``[[ratelimit]]``
- ``stateplane``: ``[stateplane]`` peers, bind, relay, failover roles and members

Each check takes the file name and the whole ``Settings`` (rules span sections) and raises
``ConfigError`` naming the file, the key, what was expected and what was found.
"""
