"""A gRPC client that is not ours (Python grpcio), for tests/tls.rs.

Calls iysgate.v1.ConsentCheck/Check over TLS (optionally with a client certificate) and prints
one line: `OK <verdict number>` or `ERROR <status code name>`. Messages are encoded by hand
(three fields), so no generated code or grpc_tools is needed.

usage: tls_client.py ADDR CA_PEM API_KEY [CLIENT_CERT_PEM CLIENT_KEY_PEM]
       tls_client.py --metrics URL CA_PEM          (GET over HTTPS, prints the status)
"""
import sys


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def check_request(brand, recipient, channel):
    r = recipient.encode()
    return (b"\x08" + varint(brand) + b"\x12" + varint(len(r)) + r + b"\x18" + varint(channel))


def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def fields(buf):
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(buf, i)
        elif wire == 2:
            length, i = read_varint(buf, i)
            value, i = buf[i:i + length], i + length
        else:
            raise ValueError("unexpected wire type %d" % wire)
        yield number, value


def verdict(response):
    for number, value in fields(response):
        if number == 1:  # CheckResponse.decision
            for n, v in fields(value):
                if n == 1:  # Decision.verdict
                    return v
    return 0


def metrics(url, ca):
    import ssl
    import urllib.request
    context = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(url, context=context, timeout=10) as r:
        print("HTTP", r.status)


def main():
    if sys.argv[1] == "--metrics":
        metrics(sys.argv[2], sys.argv[3])
        return
    try:
        import grpc
    except ImportError:
        sys.exit("python3-grpcio is missing (apt-get install python3-grpcio)")
    addr, ca, key = sys.argv[1:4]
    cert = chain = None
    if len(sys.argv) > 5:
        chain = open(sys.argv[4], "rb").read()
        cert = open(sys.argv[5], "rb").read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=open(ca, "rb").read(), private_key=cert, certificate_chain=chain)
    with grpc.secure_channel(addr, credentials) as channel:
        call = channel.unary_unary("/iysgate.v1.ConsentCheck/Check")
        try:
            response = call(check_request(600001, "+905321234567", 2),
                            metadata=(("x-api-key", key),), timeout=10)
        except grpc.RpcError as e:
            print("ERROR", e.code().name)
            return
        print("OK", verdict(response))


main()
