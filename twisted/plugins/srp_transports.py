from srp.transports.np import PipeTransport
from srp.transports.tcp import TCPTransport
from srp.transports.via import VIATransport

tcp, np, via = TCPTransport(), PipeTransport(), VIATransport()
