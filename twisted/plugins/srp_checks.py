from srp.server.checks import NoCheck, TcpCheck

none, tcp = NoCheck(), TcpCheck()
