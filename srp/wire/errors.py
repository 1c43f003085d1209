"""The one error type raised by every decoder and encoder in L{srp.wire}."""


class WireError(ValueError):
    """
    Bytes that are not a valid message, or values that cannot be encoded.

    The message says what is wrong, so that it can be logged as-is.
    """
