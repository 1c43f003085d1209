from srp.server.checks import NoCheck, TcpCheck, TDSCheck

none, tcp, tds = NoCheck(), TcpCheck(), TDSCheck()
