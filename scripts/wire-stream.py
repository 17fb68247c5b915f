#!/usr/bin/env python3
"""WIRE.md §7.1: a streamed download over NATS with a plain socket.

usage: wire-stream.py HOST PORT SERVICE PATH [parts]

Sends GET PATH to SERVICE with Httpbus-Reply-To and Httpbus-Stream, reads the
parts in order until Httpbus-End (granting credit every 8 parts or 1 MiB, in
parts and in bytes; with "parts", in parts only, every 8 parts), checks the
sequence, prints the response head, then decodes the whole HTTP/1.1 message
with Python's own http.client and prints the part count, the largest part,
the status and the body length.
"""
import http.client, io, socket, sys

host, port, service, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
in_bytes = sys.argv[5:] != ["parts"]

def hdrs(**h):
    return ("NATS/1.0\r\n" + "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in h.items()) + "\r\n").encode()

s = socket.create_connection((host, port))
f = s.makefile("rb")
f.readline()
s.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true,"protocol":1}\r\n')
s.sendall(b"SUB _INBOX.py.> 1\r\n")                     # the inbox and the reply subject
frame = f"GET {path} HTTP/1.1\r\nHost: {service}\r\n\r\n".encode()
h = hdrs(Content_Type="message/http", Httpbus_Version="1",
         Httpbus_Reply_To="_INBOX.py.in", Httpbus_Stream="s1")
s.sendall(b"HPUB httpbus.%s _INBOX.py.r %d %d\r\n" % (service.encode(), len(h), len(h) + len(frame)) + h + frame + b"\r\n")
parts, server, end = {}, None, False
consumed, credited = 0, (0, 0)                          # bytes taken; (parts, bytes) at the last credit
W = 2 << 20                                             # the window in bytes, as httpbus grants
while not end:
    line = f.readline()
    if not line.startswith(b"HMSG"):
        continue
    _, subj, _, *rest = line.split()
    hlen, tlen = int(rest[-2]), int(rest[-1])
    data = f.read(tlen + 2)[:tlen]
    head = dict(l.split(": ", 1) for l in data[:hlen].decode().split("\r\n")[1:] if ": " in l)
    server = head.get("Httpbus-Reply-To", server)
    if "Httpbus-Control" in head:                      # "continue": the handler runs long
        continue
    if "Httpbus-Seq" not in head:                       # a version-1 answer: the whole frame
        parts, end = {0: data[hlen:]}, True
        break
    seq = int(head["Httpbus-Seq"])
    assert seq == len(parts), "lost, duplicated or reordered part"
    parts[seq] = data[hlen:]
    end = head.get("Httpbus-End") == "1"
    consumed += len(parts[seq])
    if not end and (seq + 1 - credited[0] >= 8 or in_bytes and consumed - credited[1] >= W // 2):
        credited = (seq + 1, consumed)                  # credit: 16 parts and W bytes beyond what we consumed
        extra = {"Httpbus_Credit_Bytes": consumed + W} if in_bytes else {}
        c = hdrs(Httpbus_Version="2", Httpbus_Stream="s1", Httpbus_Control="credit",
                 Httpbus_Credit=seq + 1 + 16, Httpbus_Reply_To="_INBOX.py.in", **extra)
        s.sendall(b"HPUB %s %d %d\r\n" % (server.encode(), len(c), len(c)) + c + b"\r\n")
message = b"".join(parts[i] for i in range(len(parts)))
print(message[:message.index(b"\r\n\r\n")].decode())   # the head; the body follows, chunked

class Sock:                                             # http.client reads the message
    def makefile(self, *a, **k):
        return io.BytesIO(message)
r = http.client.HTTPResponse(Sock())
r.begin()
print(f"{len(parts)} parts, the largest {max(len(b) for b in parts.values())} bytes; http.client: {r.status}, {len(r.read())} body bytes")
