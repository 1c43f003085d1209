"""
The cluster port of an etcd cluster where only the leader answers
(C{answer = "leader"}): the nodes of one host share its address.

The port is the mutex there too: a leader that is stopped (SIGSTOP, a
frozen container) still holds it when its lease expires and a successor
is elected.  So, as in the UDP cluster (L{srp.server.fencing}), the leader
offers duplicates of its sockets to the nodes of its host, each follower
there holds them without reading, and the follower elected next answers on
them: a stopped leader no longer gets the datagrams.  A leader that holds
no duplicates and cannot bind the port (a stopped leader nobody fenced,
another program) tries again every quarter TTL for as long as it leads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from srp.interfaces import HandedSocket
from srp.server.fencing import Fence
from srp.server.roles.active import ClusterPorts


class LeaderPort:
    """
    The cluster port while this node leads (L{ports}), tried until it is
    bound; duplicates of the leader's sockets while another node of this
    host leads (L{fence}).

    @ivar every: seconds between the tries of a leader without its port,
        and of a follower that could not take the leader's sockets yet (the
        leader may not have offered them when etcd told its followers).
    """

    log = Logger()

    def __init__(self, reactor: Any, fence: Fence, listen: Callable[[], ClusterPorts],
                 adopt: Callable[[Sequence[HandedSocket]], ClusterPorts | None],
                 counters: Counter[str], every: float) -> None:
        self.fence = fence
        self.listen = listen
        self.adopt = adopt
        self.counters = counters
        self.every = every
        #: The port this node answers on while it leads and has it.
        self.ports: ClusterPorts | None = None
        #: Whether this node leads.
        self.leading = False
        #: The leader whose sockets this node holds (or tries to), 0: none.
        self.following = 0
        #: How many tries in a row failed to get the port while leading.
        self.refused = 0
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor

    def start(self) -> None:
        """Start trying again what failed, every L{every} seconds."""
        self._ticker.start(self.every, now=False)

    def stop(self) -> None:
        """Stop answering, offering and holding."""
        if self._ticker.running:
            self._ticker.stop()
        self.stepDown()
        self.fence.release()
        self.following = 0

    def lead(self) -> None:
        """This node was elected: answer on the port (tried until it is bound)."""
        self.leading = True
        self.following = 0
        self._take()

    def stepDown(self) -> None:
        """This node no longer leads: stop answering on the port and offering it."""
        self.leading = False
        self.refused = 0
        if self.ports is not None:
            self.ports.release()
            self.ports = None

    def follow(self, leader: int) -> None:
        """
        Another node leads on this node's address: hold its sockets.  While
        none does (0), keep holding the last one's: they are what the
        next leader answers on, should the last one hang.
        """
        if self.leading or not leader or leader == self.following:
            return
        self.following = leader
        self.fence.follow(leader)

    def _tick(self) -> None:
        if self.leading:
            self._take()
        elif self.following:
            self.fence.follow(self.following, again=True)

    def _take(self) -> None:
        """Answer on the duplicates held, if they fit; else bind the port."""
        if self.ports is not None:
            return
        held, source = self.fence.sockets, self.fence.following
        ports = self.adopt(self.fence.surrender()) if held else None
        self.fence.release()
        if ports is not None:
            # Info, not a warning: the old leader may have stopped gracefully.
            self.log.info("Answering on the copies of leader {node:016x}'s cluster sockets "
                          "held for fencing: if it hangs, it gets no more datagrams",
                          node=source)
        else:
            try:
                ports = self.listen()
            except CannotListenError as e:
                self._refused(e)
                return
        if self.refused:
            self.log.info("Leader, and bound the port after {tries} tries", tries=self.refused + 1)
        self.refused = 0
        self.ports = ports
        ports.offer = self.fence.offer(ports.ports)

    def _refused(self, error: CannotListenError) -> None:
        self.refused += 1
        if self.refused == 1:  # once per streak, not per try
            self.counters["bind_failed"] += 1
            self.log.error("Leader, but cannot bind the port: {error}; trying again every "
                           "{every} s while leading", error=error, every=self.every)
