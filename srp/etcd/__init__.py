"""etcd v3 over its JSON gateway, for the registry and election of large clusters."""
