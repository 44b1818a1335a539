"""Placeholder demo: encode a frame and parse it back (replaced once the node exists)."""

from trio_chirp._protocol import FrameParser, encode_frame, encode_handshake

stream = encode_handshake(2998, bytes(16)) + encode_frame(bytes(16), 1, 1, b"", b"hello")
parser = FrameParser(1024)
parser.receive_data(stream)
for _ in range(3):
    print(parser.next_event())
