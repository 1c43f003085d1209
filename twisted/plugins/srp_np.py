from srp.transports.np import PipeClientParser

npClientParser = PipeClientParser()
