from srp.server.checks import ConnectCheck, NoCheck

none, tcp = NoCheck(), ConnectCheck()
