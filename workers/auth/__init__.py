"""Digest authentication of SIP requests (RFC 3261 §22, RFC 7616), sans-IO.

Modules, each owning one thing:

- ``header``: reading a Digest credentials header (hostile input: bounded, never raises
  anything but ``CredentialsError``) and writing a challenge.
- ``digest``: the hash algorithms (MD5, SHA-256) and the ``response`` computation.
- ``nonce``: stateless HMAC-signed nonces with their issue time, and the bounded per-nonce
  nonce-count tracker that refuses replays.
- ``credentials``: HA1 per (realm, user, algorithm) from a file, and the cacheDB key of one.
- ``gate``: the decision for one request: no authentication needed, a challenge (401/407),
  a refusal (400, 403) or verified credentials.
- ``store``: the HA1 tables of a worker (files in memory, cacheDB answers kept a while).
- ``admit``: the proxy's adapter, verdicts as SIP errors and the edit that strips our
  credentials; not sans-IO only in that ``store`` may hold cacheDB clients.

Time is an argument everywhere (``now``, wall-clock seconds, since nonces travel between
processes); the adapter (the worker) passes ``time.time()``. See ``docs/auth.md``.
"""
