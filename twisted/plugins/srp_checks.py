from srp.server.checks import ConnectCheck, NoCheck, TcpCheck

none, tcp, connect = NoCheck(), TcpCheck(), ConnectCheck()
