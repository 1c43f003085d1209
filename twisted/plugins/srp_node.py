from twisted.application.service import ServiceMaker

srp = ServiceMaker("srp", "srp.tap", "srp node: a clustered SQL Server Browser", "srp")
