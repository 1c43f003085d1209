"""hypothesis strategies for srp's wire values."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from srp.wire import InstanceInfo, ViaAddress, ViaInfo
from srp.wire.cluster import (
    Activate,
    ActivateAck,
    Envelope,
    Join,
    KeepAlive,
    KeepAliveAck,
    Leave,
    Member,
    Notify,
    NotifyAck,
    Probe,
    Redirect,
    Register,
    RegisterAck,
    ReJoin,
    Resolve,
    ResolveReply,
    StatusQuery,
    StatusReply,
    Subscribe,
    Unregister,
)
from srp.wire.instances import Registration

_TOKEN = string.ascii_letters + string.digits + "_$#-.\\ "
tokens = st.text(_TOKEN, min_size=1, max_size=24)
instanceNames = st.text(string.ascii_letters + string.digits + "_$#", min_size=1, max_size=32)
ports = st.integers(1, 65535)
nics = st.text(string.ascii_letters + string.digits + ".", min_size=1, max_size=15)

vias = st.builds(
    ViaInfo,
    netbios=st.text(string.ascii_uppercase + string.digits, min_size=1, max_size=15),
    addresses=st.lists(st.builds(ViaAddress, nic=nics, port=ports), min_size=1, max_size=3)
    .map(tuple),
)

instances = st.builds(
    InstanceInfo,
    serverName=st.text(string.ascii_uppercase + string.digits + "-", min_size=1, max_size=63),
    instanceName=instanceNames,
    version=st.from_regex(r"\A[0-9]{1,2}\.[0-9]\.[0-9]{1,4}\.[0-9]{1,3}\Z"),
    isClustered=st.booleans(),
    tcp=st.none() | ports,
    np=st.none() | tokens.map(lambda t: "\\\\HOST\\pipe\\" + t),
    via=st.none() | vias,
    other=st.lists(st.tuples(st.sampled_from(["rpc", "spx", "adsp", "bv"]), tokens),
                   max_size=2, unique_by=lambda pair: pair[0]).map(tuple),
)

registrations = st.builds(
    Registration,
    info=instances,
    hidden=st.booleans(),
    dacPort=st.none() | ports,
    priority=st.integers(0, 0xFFFF),
    nodeId=st.integers(0, 2**64 - 1),
    down=st.booleans(),
    hideWhenDown=st.booleans(),
)

members = st.builds(
    Member,
    nodeId=st.integers(0, 2**64 - 1),
    host=st.sampled_from(["127.0.0.1", "10.231.0.2", "::1", "fe80::1"]),
    port=ports,
)

#: A Join part: a generation of 1 or more, a part number below the part count.
joinParts = st.integers(1, 0xFFFF).flatmap(lambda parts: st.builds(
    Join, st.lists(registrations, min_size=1, max_size=4).map(tuple),
    st.integers(1, 2**32 - 1), st.integers(0, parts - 1), st.just(parts)))

clusterMessages = st.one_of(
    st.just(Probe()), st.just(Leave()), st.just(ReJoin()), st.just(ActivateAck()),
    st.builds(StatusQuery, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(Join, st.lists(registrations, max_size=4).map(tuple)),
    joinParts,
    st.builds(ReJoin, st.integers(1, 2**32 - 1),
              st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40).map(tuple)),
    st.builds(KeepAlive, st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
              st.integers(0, 2**32 - 1)),
    st.builds(KeepAliveAck, st.lists(members, max_size=6).map(tuple),
              st.integers(0, 2**32 - 1)),
    st.lists(members, max_size=4).flatmap(lambda passives: st.builds(
        Activate, st.just(tuple(passives)), st.lists(registrations, max_size=4).map(tuple),
        st.lists(st.integers(0, 2**32 - 1), min_size=len(passives),
                 max_size=len(passives)).map(tuple),
        st.sampled_from(["", "srp-handover-1"]))),
    st.builds(Resolve, instanceNames),
    st.lists(st.tuples(registrations, st.sampled_from(["", "10.0.0.1", "::1"])),
             max_size=4).flatmap(lambda pairs: st.builds(
        ResolveReply, instanceNames, st.just(tuple(r for r, _ in pairs)),
        st.just(tuple(h for _, h in pairs)))),
    st.builds(StatusReply, st.text(max_size=50)),
    st.builds(Redirect, members),
    st.builds(Register, registrations, st.integers(0, 2**32 - 1),
              st.sampled_from(["", "10.0.0.1", "::1"])),
    st.builds(Unregister, instanceNames, st.integers(0, 0xFFFF)),
    st.builds(RegisterAck, st.integers(0, 0xFF), st.integers(0, 2**32 - 1),
              st.text(max_size=40)),
    st.builds(Subscribe, instanceNames, st.integers(0, 2**32 - 1)),
    st.lists(st.tuples(registrations, st.sampled_from(["", "10.0.0.1", "::1"])),
             max_size=4).flatmap(lambda pairs: st.builds(
        Notify, instanceNames, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
        st.just(tuple(r for r, _ in pairs)), st.just(tuple(h for _, h in pairs)))),
    st.builds(NotifyAck, instanceNames, st.integers(0, 2**32 - 1)),
)

envelopes = st.builds(
    Envelope,
    message=clusterMessages,
    cluster=st.integers(0, 2**32 - 1),
    sender=st.integers(0, 2**64 - 1),
    epoch=st.integers(0, 2**32 - 1),
    sequence=st.integers(0, 2**64 - 1),
)
