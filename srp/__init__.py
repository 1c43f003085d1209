"""
srp: the Server Resolution Protocol for Twisted.

An [MC-SQLR] (SQL Server Browser) responder, clustered SRP nodes and a
client that resolves C{cluster/instance} names and follows instances as they
move.  See C{docs/} for the tutorial and the protocol specification.
"""

__version__ = "0.1.0"
