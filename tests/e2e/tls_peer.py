#!/usr/bin/python3
"""tls_peer.py — a receiving SMTP server for ringmail's TLS tests (Debian's
python3-aiosmtpd on Python's ssl, i.e. OpenSSL).

    tls_peer.py --port 0 --mode starttls|implicit|plain --cert C --key K
                --log FILE [--auth USER:PASS] [--auth-anywhere]
                [--tls-max 1.2] [--ciphers LIST]

Prints "READY <port>" once it accepts connections, then serves until
SIGTERM. Every protocol fact a test asserts is appended to --log as one JSON
object per line:
    {"event": "ehlo", "tls": false}
    {"event": "sni", "name": "mx.test"}           (null: the client sent none)
    {"event": "starttls", "version": "TLSv1.3", "reused": false}
    {"event": "auth", "user": "u", "ok": true, "tls": true}
    {"event": "message", "mail_from": ..., "rcpt_tos": [...], "tls": "TLSv1.3",
     "cipher": "TLS_AES_256_GCM_SHA384", "reused": false, "auth": "u"}
--tls-max/--ciphers make handshakes fail on purpose (a suite ringmail does
not offer). --auth-anywhere offers AUTH without TLS (to prove the client
refuses to use it).
"""
import argparse
import asyncio
import json
import signal
import socket
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)

    def write(self, **rec):
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()


def tls_facts(server):
    transport = server.transport
    obj = transport.get_extra_info("ssl_object") if transport is not None else None
    if obj is None:
        return None, None, None
    cipher = obj.cipher()
    return obj.version(), cipher[0] if cipher else None, obj.session_reused


class Handler:
    def __init__(self, log):
        self.log = log

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        version, _, _ = tls_facts(server)
        self.log.write(event="ehlo", tls=version is not None)
        return responses

    def handle_STARTTLS(self, server, session, envelope):
        version, cipher, reused = tls_facts(server)
        self.log.write(event="starttls", version=version, cipher=cipher, reused=reused)
        return True

    async def handle_DATA(self, server, session, envelope):
        version, cipher, reused = tls_facts(server)
        user = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            user = session.auth_data.login.decode()
        self.log.write(event="message", mail_from=envelope.mail_from,
                       rcpt_tos=list(envelope.rcpt_tos), size=len(envelope.content or b""),
                       tls=version, cipher=cipher, reused=reused, auth=user)
        return "250 2.0.0 Ok: queued"


class Authenticator:
    def __init__(self, log, user, password):
        self.log, self.user, self.password = log, user, password

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.user
              and auth_data.password.decode() == self.password)
        version, _, _ = tls_facts(server)
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else None
        self.log.write(event="auth", mechanism=mechanism, user=login, ok=ok,
                       tls=version is not None)
        # handled=False: aiosmtpd then answers a failure with 535 itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", choices=["starttls", "implicit", "plain"], required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--log", required=True)
    ap.add_argument("--auth")
    ap.add_argument("--auth-anywhere", action="store_true")
    ap.add_argument("--tls-max")
    ap.add_argument("--ciphers")
    args = ap.parse_args()

    log = Log(args.log)
    ctx = None
    if args.mode != "plain":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        if args.tls_max == "1.2":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if args.ciphers:
            ctx.set_ciphers(args.ciphers)

        def on_sni(ssl_obj, server_name, context):
            log.write(event="sni", name=server_name)

        ctx.sni_callback = on_sni

    smtp_kwargs = {"hostname": "peer.test", "ident": "tls_peer"}
    if args.mode == "starttls":
        smtp_kwargs["tls_context"] = ctx
    if args.auth:
        user, password = args.auth.split(":", 1)
        smtp_kwargs["authenticator"] = Authenticator(log, user, password)
        # Implicit TLS is TLS too, but aiosmtpd only knows about STARTTLS.
        smtp_kwargs["auth_require_tls"] = not (args.auth_anywhere or args.mode == "implicit")
        smtp_kwargs["auth_required"] = False

    handler = Handler(log)
    for attempt in range(20):
        port = args.port or free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port,
                                ssl_context=ctx if args.mode == "implicit" else None,
                                server_kwargs=smtp_kwargs)
        try:
            controller.start()
            break
        except Exception as e:  # port taken meanwhile: try another
            if args.port or attempt == 19:
                print("ERROR %s" % e, flush=True)
                return 1
    print("READY %d" % port, flush=True)

    stop = {"flag": False}

    def on_term(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while not stop["flag"]:
        signal.pause()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
