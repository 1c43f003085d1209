from srp.client.endpoint import SRPClientParser

srpClientParser = SRPClientParser()
