"""hypothesis strategies for srp's wire values."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from srp.wire import InstanceInfo, ViaAddress, ViaInfo

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
