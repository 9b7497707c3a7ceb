"""The sections of the configuration file, one module per capability, each holding the frozen
dataclasses of its TOML tables (``conf/settings.py`` has the rules they follow and the root
``Settings`` that gathers them; import them from there):

- ``node``: ``[node]``, ``[curve]``, ``[[peer]]``: identity, run directory, keys, trusted nodes
- ``listen``: ``[[listen]]``, ``[tcp]``, ``[tls]``: the ingress's sockets and their limits
- ``bus``: ``[bus]``: the hop between ingress and worker processes, within and across hosts
- ``proxy``: ``[proxy]``, ``[transactions]``: how workers proxy; the stateful proxy's timers
- ``routing``: ``[[destination_set]]``, ``[[route]]``, ``[[trusted]]``, ``[[prefix_table]]``
- ``registrar``: ``[registrar]``, ``[nat]``: the location service and its cacheDB; NAT
- ``dns``: ``[dns]``: host name resolution and its cache
- ``auth``: ``[auth]``, ``[[auth_realm]]``: Digest authentication
- ``dialogs``: ``[dialogs]``, ``[[dialog_profile]]``: dialogs, CDRs, profiles, call limits
- ``timers``: ``[timers]``: the timer service
- ``log``: ``[log]``: what every process logs
- ``protection``: ``[pike]``, ``[[ratelimit]]``: floods and rate limits
- ``stateplane``: ``[stateplane]``: replication, persistence, failover

What a type cannot say (names resolve, addresses parse) is checked in ``conf/checks/``, in
the module of the same name.
"""
