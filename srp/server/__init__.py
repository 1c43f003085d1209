"""The server side: the [MC-SQLR] responder, its registry and the node service."""
