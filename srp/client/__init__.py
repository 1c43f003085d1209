"""The client side: [MC-SQLR] queries and (later) the network access module."""
