from srp.transports.via import EmulatedVIProvider

emulated = EmulatedVIProvider()
