"""
Records shared by the client and server sides.

The values that travel are defined with their codecs in L{srp.wire}; this
module gathers the ones both sides hold, under one import.
"""

from srp.wire.instances import InstanceInfo, Registration, ViaAddress, ViaInfo, instanceKey

__all__ = ["InstanceInfo", "Registration", "ViaAddress", "ViaInfo", "instanceKey"]
