from srp.client.verifiers import HelloVerifier, NoVerifier, TDSVerifier

none, tds, hello = NoVerifier(), TDSVerifier(), HelloVerifier()
