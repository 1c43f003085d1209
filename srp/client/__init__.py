"""
The client side: srp's network access module, and plain [MC-SQLR] queries.

L{srp.client.resolver} resolves C{cluster/instance} to the places the
instance can be reached, with a cache; L{srp.client.endpoint} is the C{srp:}
endpoint that connects there and L{srp.client.verifiers} confirm the
instance reached; L{srp.client.failover} keeps one logical connection across
fail-overs.  L{srp.client.browser} and L{srp.client.cluster} send single
[MC-SQLR] and cluster queries, for the C{srp} command.
"""
