from srp.transports.via import VIAClientParser, VIAServerParser

viaClientParser, viaServerParser = VIAClientParser(), VIAServerParser()
