"""The virtual listeners of a failover pair: bound while our state plane says "active".

Rules:
1. The node's state plane decides the role (Binary Star, ``stateplane/failover.py``) and says
   it in every ``HUGZ`` it publishes on ``stateplane-pub.ipc``, per virtual address. Each
   ingress subscribes to those heartbeats only, and holds the ``virtual = true`` listeners of
   an address exactly while the last heartbeat heard said that address is ``active``: one
   source of truth, no second protocol.
2. Fencing: when our own state plane falls silent for ``EXPIRY_HEARTBEATS`` intervals the
   ingress lets go of the address, because the peer takes over after the same silence (it
   hears the same heartbeats). Two nodes holding one address with SO_REUSEPORT would split
   its traffic between them.
3. ``RoleHold`` is the sans-IO part (time is an argument); ``VirtualListeners`` binds and
   releases the sockets through the ingress's own UDP and TCP code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import zmq

from conf import envelope as env
from conf.guard import GUARD
from stateplane import updates as up
from stateplane.bstar import EXPIRY_HEARTBEATS, decode_roles

log = structlog.get_logger()

_HUGZ = up.pack(up.Hugz("", 0, 0))[0]  # the kind frame a SUB filters on


class RoleHold:
    """Which virtual addresses should be held now (rules 1-2)."""

    __slots__ = ("heard_at", "held", "roles", "timeout_s")

    def __init__(self, heartbeat_s: float) -> None:
        self.timeout_s = EXPIRY_HEARTBEATS * heartbeat_s
        self.roles: dict[str, str] = {}
        self.heard_at = float("-inf")
        self.held: set[str] = set()

    def hugz(self, role: str, now: float) -> None:
        self.roles, self.heard_at = decode_roles(role), now

    def want(self, now: float) -> set[str]:
        if now - self.heard_at > self.timeout_s:
            return set()
        return {addr for addr, state in self.roles.items() if state == "active"}


Bind = Callable[[str], Awaitable[None]]


class VirtualListeners:
    """Follow the local state plane's heartbeats and bind or release (rule 3)."""

    def __init__(self, ctx: zmq.Context[Any], run_dir: str, heartbeat_s: float,
                 bind: Bind, release: Callable[[str], None]) -> None:  # fmt: skip
        self.loop = asyncio.get_running_loop()
        self.hold = RoleHold(heartbeat_s)
        self._bind, self._release = bind, release
        self._busy = False
        self._fence: asyncio.TimerHandle | None = None
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.rcvhwm = 64
        sub.setsockopt(zmq.MAXMSGSIZE, up.MAX_UPDATE_BYTES)
        sub.setsockopt(zmq.SUBSCRIBE, _HUGZ)
        sub.connect(f"ipc://{run_dir}/{env.STATEPLANE_PUB}")
        self.sub = sub
        self._reader = GUARD.add_reader(self.loop, sub.FD, "virtual", self._drain)

    def _drain(self) -> None:
        if self.sub.closed:
            return
        heard = False
        while True:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                msg = up.unpack(frames)
            except up.UpdateError:
                continue
            if isinstance(msg, up.Hugz):
                self.hold.hugz(msg.role, self.loop.time())
                heard = True
        if heard:
            if self._fence is not None:
                self._fence.cancel()
            # rule 2: look again just after the silence would have lasted too long
            self._fence = self.loop.call_later(self.hold.timeout_s * 1.01, self.check)
            self.check()

    def check(self) -> None:
        """Bind or release what the wanted set changed (also called on the fence timer)."""
        if self._busy:
            return
        want, held = self.hold.want(self.loop.time()), self.hold.held
        for addr in sorted(held - want):
            held.discard(addr)
            silent = self.loop.time() - self.hold.heard_at > self.hold.timeout_s
            log.warning("virtual_released", address=addr,
                        reason="stateplane_silent" if silent else "passive")  # fmt: skip
            self._release(addr)
        todo = sorted(want - held)
        if todo:
            self._busy = True
            self.loop.create_task(self._do_bind(todo))

    async def _do_bind(self, addrs: list[str]) -> None:
        failed = False
        try:
            for addr in addrs:
                try:
                    await self._bind(addr)
                except OSError as exc:  # not (yet) ours: tried again at the next heartbeat
                    log.error("virtual_bind_failed", address=addr, error=str(exc))
                    failed = True
                    continue
                self.hold.held.add(addr)
                log.info("virtual_bound", address=addr)
        finally:
            self._busy = False
        if not failed:  # the role may have changed meanwhile; a failure waits for the beat
            self.check()

    def close(self) -> None:
        if self._fence is not None:
            self._fence.cancel()
        if not self.sub.closed:
            self._reader.remove()
            self.sub.close(linger=0)
