"""
srp's hello: the bytes with which a client confirms which instance a connection reached.

The client sends L{helloRequest}; srp's listener wrapper answers L{HELLO_YES}
or L{HELLO_NO}.  The leading NUL keeps a hello from being mistaken for the
first bytes of a text protocol, and TDS starts with 0x12.
"""

HELLO_MAGIC = b"\x00SRP-HELLO/1 "
HELLO_YES = b"\x00SRP-YES\n"
HELLO_NO = b"\x00SRP-NO\n"
#: The longest hello line (magic, a 32-byte name and the newline).
MAX_HELLO = len(HELLO_MAGIC) + 33


def helloRequest(instance: str) -> bytes:
    """The hello asking for C{instance}."""
    return HELLO_MAGIC + instance.encode("ascii") + b"\n"
