#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets that read binary or
structured input built here rather than typed by hand:

  corpus/dns_answer_fuzz/        DNS responses (RFC 1035), hostile ones too
  corpus/spool_record_fuzz/      spool segments, records and payloads
  corpus/config_fuzz/            TOML configurations, valid and broken
  corpus/delivery_session_fuzz/  SMTP server reply scripts

Usage: tests/fuzz/gen_seeds.py            (rewrites those four directories)

The input layouts (the leading selector bytes) are documented at the top
of each target's .cc file; keep the two in step. Seeds are committed; this
script only makes them reproducible and reviewable.
"""
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in seeds:
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print("%-24s %d seeds" % (target, len(seeds)))


# --- DNS -------------------------------------------------------------------

QTYPES = {"MX": 0, "A": 1, "AAAA": 2, "CNAME": 3, "TXT": 4, "SOA": 5}
QNAMES = ["example.com", "Example.COM.", "mx.example.net", "a.b.c.d.e", "x"]
T = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}


def sel(qtype, qname_idx=0, small=False):
    hi = qname_idx + 10 if small else qname_idx
    return bytes([QTYPES[qtype] | (hi << 4)])


def name(n):
    out = b""
    n = n.rstrip(".")
    if n:
        for label in n.split("."):
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def header(an=0, ns=0, rcode=0, tc=False, qr=True, qd=1, ident=0x1234):
    flags = (0x8000 if qr else 0) | 0x0100 | 0x0080 | (0x0200 if tc else 0) | rcode
    return struct.pack(">HHHHHH", ident, flags, qd, an, ns, 0)


def question(qname, qtype):
    return name(qname) + struct.pack(">HH", T[qtype], 1)


def rr(owner, rtype, ttl, rdata):
    o = owner if isinstance(owner, bytes) else name(owner)
    return o + struct.pack(">HHIH", T[rtype], 1, ttl, len(rdata)) + rdata


def mx(pref, exch):
    return struct.pack(">H", pref) + (exch if isinstance(exch, bytes) else name(exch))


def soa(ttl_min):
    return name("ns1.example.com") + name("hostmaster.example.com") + struct.pack(
        ">IIIII", 2024010101, 7200, 3600, 1209600, ttl_min)


PTR_Q = b"\xc0\x0c"  # the question name


def dns_seeds():
    s = []
    q = question("example.com", "MX")
    s.append(("mx_two_compressed", sel("MX") + header(an=2) + q +
              rr(PTR_Q, "MX", 3600, mx(10, "mx1.example.com")) +
              rr(PTR_Q, "MX", 300, mx(20, b"\x03mx2\xc0\x0c"))))
    s.append(("null_mx", sel("MX") + header(an=1) + q + rr(PTR_Q, "MX", 3600, mx(0, b"\x00"))))
    qa = question("mx.example.net", "A")
    s.append(("a_two", sel("A", 2) + header(an=2) + qa +
              rr(PTR_Q, "A", 60, bytes([192, 0, 2, 1])) + rr(PTR_Q, "A", 120, bytes([127, 0, 0, 1]))))
    s.append(("aaaa", sel("AAAA", 2) + header(an=1) + question("mx.example.net", "AAAA") +
              rr(PTR_Q, "AAAA", 60, bytes(15) + b"\x01")))
    s.append(("cname_then_mx", sel("MX") + header(an=3) + q +
              rr(PTR_Q, "CNAME", 600, name("alias.example.org")) +
              rr("alias.example.org", "CNAME", 500, name("final.example.org")) +
              rr("final.example.org", "MX", 400, mx(5, "mx.final.example.org"))))
    s.append(("cname_loop", sel("MX") + header(an=2) + q +
              rr(PTR_Q, "CNAME", 600, name("b.example.com")) +
              rr("b.example.com", "CNAME", 600, name("example.com"))))
    chain = b""
    for i in range(10):
        owner = "example.com" if i == 0 else "c%d.example.com" % i
        chain += rr(owner, "CNAME", 60, name("c%d.example.com" % (i + 1)))
    s.append(("cname_chain_10", sel("A") + header(an=10) + question("example.com", "A") + chain))
    s.append(("cname_chain_small_limits", sel("A", 0, True) + header(an=10) +
              question("example.com", "A") + chain))
    s.append(("nxdomain_soa", sel("MX") + header(ns=1, rcode=3) + q +
              rr("example.com", "SOA", 900, soa(300))))
    s.append(("nodata_soa", sel("A") + header(ns=1) + question("example.com", "A") +
              rr("example.com", "SOA", 100, soa(3600))))
    s.append(("servfail", sel("MX") + header(rcode=2) + q))
    s.append(("refused", sel("A") + header(rcode=5) + question("example.com", "A")))
    s.append(("truncated_tc", sel("MX") + header(an=1, tc=True) + q))
    s.append(("pointer_self_loop", sel("MX") + header(an=1) + q + b"\xc0\x1d" +
              struct.pack(">HHIH", 15, 1, 60, 3) + b"\x00\x01\x00"))
    s.append(("pointer_forward", sel("MX") + header(an=1) + q +
              rr(PTR_Q, "MX", 60, mx(1, b"\xc0\xff"))))
    long_name = b"".join(bytes([63]) + b"a" * 63 for _ in range(5)) + b"\x00"
    s.append(("name_over_255", sel("MX") + header(an=1) + q + rr(PTR_Q, "MX", 60, mx(1, long_name))))
    s.append(("label_type_0x40", sel("MX") + header(an=1) + q + b"\x41abc\x00" +
              struct.pack(">HHIH", 15, 1, 60, 3) + b"\x00\x01\x00"))
    s.append(("rdata_truncated", sel("A") + header(an=1) + question("example.com", "A") +
              PTR_Q + struct.pack(">HHIH", 1, 1, 60, 40) + b"\x7f\x00"))
    s.append(("mx_short_rdlen", sel("MX") + header(an=1) + q + rr(PTR_Q, "MX", 60, b"\x00\x01")))
    s.append(("a_wrong_size", sel("A") + header(an=1) + question("example.com", "A") +
              rr(PTR_Q, "A", 60, b"\x7f\x00\x00")))
    s.append(("ttl_high_bit", sel("A") + header(an=1) + question("example.com", "A") +
              rr(PTR_Q, "A", 0x80000010, bytes([10, 0, 0, 1]))))
    many = b"".join(rr(PTR_Q, "A", 60, bytes([10, 0, i // 256, i % 256])) for i in range(100))
    s.append(("a_100_records", sel("A") + header(an=100) + question("example.com", "A") + many))
    s.append(("a_100_small_limits", sel("A", 0, True) + header(an=100) +
              question("example.com", "A") + many))
    s.append(("uppercase_names", sel("MX", 1) + header(an=1) + question("EXAMPLE.com", "MX") +
              rr("EXAMPLE.COM", "MX", 60, mx(10, "MX.EXAMPLE.COM"))))
    s.append(("not_a_response", sel("MX") + header(an=1, qr=False) + q +
              rr(PTR_Q, "MX", 60, mx(1, "a.example"))))
    s.append(("short_header", sel("MX") + b"\x12\x34\x81"))
    s.append(("other_owner_ignored", sel("MX") + header(an=2) + q +
              rr("other.example", "MX", 60, mx(1, "x.example")) + rr(PTR_Q, "TXT", 60, b"\x03abc")))
    s.append(("counts_lie", sel("MX") + header(an=40, ns=9) + q +
              rr(PTR_Q, "MX", 60, mx(10, "mx1.example.com"))))
    s.append(("damaged_authority", sel("MX") + header(an=1, ns=1) + q +
              rr(PTR_Q, "MX", 60, mx(10, "mx1.example.com")) + b"\x07exa"))
    s.append(("root_qname_x", sel("TXT", 4) + header(an=1) + question("x", "TXT") +
              rr(PTR_Q, "TXT", 60, b"\x05hello")))
    return s


# --- spool -----------------------------------------------------------------

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def u(v, n):
    return int(v).to_bytes(n, "little", signed=False)


def s32(b):
    if isinstance(b, str):
        b = b.encode()
    return u(len(b), 4) + b


def job_payload(job_id=0x0001000000000001, rcpts=(("a@example.org", 2, 0, 0, 0),),
                body=b"Subject: hi\r\n\r\nhello\r\n", batch="b1", sender="s@example.com",
                auth="", utf8=0, pool=0, accepted=1700000000000):
    p = u(job_id, 8) + u(utf8, 4) + u(pool, 4) + u(accepted, 8)
    p += s32(batch) + s32(sender) + s32(auth) + s32(body) + u(len(rcpts), 4)
    for addr, doff, attempts, state, nxt in rcpts:
        p += s32(addr) + u(doff, 2) + u(attempts, 2) + u(state, 1) + u(nxt, 8)
    return p


def state_payload(job_id=0x0001000000000001, kind=1, attempts=0, nxt=0, idx=(0,)):
    return u(job_id, 8) + u(kind, 1) + u(attempts, 2) + u(nxt, 8) + u(len(idx), 4) + \
        b"".join(u(i, 4) for i in idx)


def record(rtype, payload):
    hdr = bytes([rtype, 0, 0, 0])
    return u(len(payload), 4) + hdr + u(crc32c(payload, crc32c(hdr)), 4) + payload


JOB, STATE, COMMIT, RETIRE = 1, 2, 3, 4


def seg_header(version=1):
    return b"RMSPOOL\x00" + u(version, 4) + u(3, 4) + u(42, 8) + u(1700000000000, 8)


def spool_seeds():
    s = []
    j = job_payload(rcpts=(("a@example.org", 2, 0, 0, 0), ("bob@example.net", 4, 3, 0, 1700000060000)))
    good = record(JOB, j) + record(STATE, state_payload(idx=(1,))) + \
        record(STATE, state_payload(kind=2, attempts=2, nxt=1700000600000, idx=(0,))) + \
        record(COMMIT, u(200, 8)) + record(RETIRE, u(0x0001000000000001, 8))
    s.append(("scan_all_types", b"\x00" + good))
    s.append(("scan_empty", b"\x00"))
    s.append(("scan_torn_tail", b"\x05" + good[:-5]))
    flipped = bytearray(good)
    flipped[20] ^= 0x10
    s.append(("scan_bit_flip_resync", b"\x0a" + bytes(flipped)))
    s.append(("scan_garbage_then_record", b"\x0f" + b"\xff" * 13 + record(COMMIT, u(7, 8))))
    s.append(("scan_bad_header_flags", b"\x14" + u(8, 4) + b"\x03\x01\x00\x00" + u(0, 4) + u(1, 8)))
    s.append(("scan_length_beyond", b"\x19" + u(0x7fffffff, 4) + b"\x01\x00\x00\x00" + u(0, 4)))
    s.append(("job_valid", b"\x01" + j))
    s.append(("job_utf8_auth", b"\x06" + job_payload(utf8=1, auth="alice", pool=3, sender="é@example.com",
                                                     rcpts=(("ü@example.org", 3, 1, 1, 5),))))
    s.append(("job_truncated", b"\x0b" + j[:-7]))
    no_rcpts = job_payload(rcpts=())
    s.append(("job_count_lies", b"\x10" + no_rcpts[:-4] + u(0xffffffff, 4)))
    s.append(("job_bad_domain_off", b"\x15" + job_payload(rcpts=(("a@example.org", 0, 0, 0, 0),))))
    s.append(("job_bad_state", b"\x1a" + job_payload(rcpts=(("a@example.org", 2, 0, 7, 0),))))
    s.append(("job_trailing", b"\x1f" + j + b"x"))
    s.append(("job_empty_body_null_sender", b"\x24" + job_payload(body=b"", sender="")))
    s.append(("state_final", b"\x02" + state_payload(idx=(0, 1, 2, 99))))
    s.append(("state_deferred", b"\x07" + state_payload(kind=2, attempts=65535, nxt=2**63, idx=())))
    s.append(("state_bad_kind", b"\x0c" + state_payload(kind=3)))
    s.append(("state_count_mismatch", b"\x11" + state_payload(idx=(1, 2))[:-2]))
    s.append(("segment_header", b"\x03" + seg_header()))
    s.append(("segment_header_v2", b"\x08" + seg_header(2)))
    s.append(("segment_header_bad_magic", b"\x0d" + b"RMSP00L\x00" + seg_header()[8:]))
    s.append(("framed_job", b"\x04" + b"\x00" + b"\x00" + b"\x00" + j))
    s.append(("framed_state_after_garbage", b"\x09" + b"\x01" + b"\x05ABCDE" + b"\x00" +
              state_payload(idx=(3,))))
    s.append(("framed_job_torn", b"\x0e" + b"\x00" + b"\x00" + b"\x8a" + j))
    s.append(("framed_commit", b"\x13" + b"\x02" + b"\x00" + b"\x00" + u(4096, 8)))
    s.append(("framed_retire", b"\x18" + b"\x03" + b"\x00" + b"\x00" + u(12345, 8)))
    # A JOB whose body holds a complete, CRC-correct forged RETIRE record:
    # what a message author controls (see the resynchronisation note in
    # docs/reliability.md).
    forged = record(RETIRE, u(0x0001000000000001, 8))
    evil = job_payload(job_id=0x0001000000000002, body=b"Subject: x\r\n\r\n" + forged + b"\r\n")
    s.append(("scan_forged_record_in_torn_body", b"\x1e" + (good + record(JOB, evil))[:-4]))
    return s


# --- configuration -----------------------------------------------------------

CONFIGS = {
    "empty": "",
    "minimal": 'log_level = "debug"\n',
    "engine_ingest": '[engine]\nshards = 2\nring_entries = 4096\nshutdown_grace = "2s"\n'
                     '[ingest]\nsocket = "/run/ringmail.sock"\nsocket_mode = "0600"\n'
                     'max_frame_bytes = "1MiB"\nmax_message_bytes = 65536\nmax_recipients = 10\n'
                     'max_connections = 4\nframe_timeout = "1s"\nmax_subscriber_backlog = "64KiB"\n',
    "delivery_timeouts": '[delivery]\nehlo_name = "mta.example.com"\nport = 2525\nmax_rcpts_per_txn = 1000\n'
                         'max_pipelined_txns = 8\npipelining = false\nchunking = false\n'
                         'msg_rate = "100/s"\nconnect_rate = "6000/m"\nbackoff = "0s"\ntls = "required"\n'
                         '[delivery.timeouts]\nconnect = "250ms"\ngreeting = "1s"\nehlo = "1s"\n'
                         'mail = "1s"\nrcpt = "1s"\ndata_init = "1s"\ndata_block = "500ms"\n'
                         'data_done = "10m"\nrset = "1s"\nquit = "1s"\nidle = "100ms"\n',
    "routing": '[routing]\ndefault = "mx"\n[routing.domains]\n"example.com" = "[smtp.example.net]:587"\n'
               '"*.example.org" = "192.0.2.10:25, [2001:db8::1]:2525, relay.example.net"\n',
    "dns": '[dns]\nservers = ["127.0.0.1:5353", "::1"]\ntimeout = "250ms"\ntries = 1\n'
           'ttl_floor = "1s"\nttl_ceiling = "1h"\nnegative_ttl = "1m"\nerror_ttl = "5s"\n'
           'prefer = "ipv6_only"\nmax_mx = 2\nmax_addresses = 2\nallow_loopback = true\n'
           'max_inflight = 10\ncache_size = 100\n',
    "retry_bounces_limits": '[retry]\nschedule = ["1s", "5m", "2h", "5d"]\nmax_age = "2d"\n'
                            'jitter_percent = 0\n[bounces]\ndsn = true\ndsn_delay = "0s"\n'
                            '[limits]\nmax_queued_recipients = 1\nmax_queued_bytes = "1MiB"\n',
    "spool": '[spool]\nmode = "async"\ndir = "/var/spool/ringmail"\nsegment_size = "1MiB"\n'
             'async_interval = "10ms"\ngroup_delay = "1ms"\ncompact_percent = 50\n',
    "shaping": '[[shaping]]\nmatch = "*"\nmax_connections = 2\nretry_schedule = ["10s"]\n'
               '[[shaping]]\nmatch = "*.example.com"\ntls = "verify"\nmax_age = "1h"\n'
               '[[shaping]]\nmatch = "smart.example"\nimplicit_tls = true\nauth_user = "u"\n'
               'auth_password = "p"\nauth_plaintext = false\nmsg_rate = "1/s"\n',
    "egress": '[[sources]]\nname = "a"\nipv4 = "127.0.0.2"\nehlo_name = "a.example"\n'
              '[[sources]]\nname = "b"\nipv6 = "::1"\n'
              '[[pools]]\nname = "p1"\nsources = ["a", "b"]\n'
              '[[pools]]\nname = "p2"\nsources = ["b"]\n'
              '[[pool_rules]]\nsender_domain = "*.news.example"\npool = "p2"\n',
    "submission_tls": '[tls]\nca_file = "/etc/ssl/certs/ca-certificates.crt"\nmin_version = "1.3"\n'
                      'handshake_timeout = "2s"\nsession_resumption = false\n'
                      '[submission]\nhostname = "sub.example"\ncredentials_file = "creds"\n'
                      'trusted_networks = ["127.0.0.0/8", "::1/128"]\nmax_message_bytes = "1MiB"\n'
                      'max_recipients = 5\nmax_line = 512\nmax_commands = 100\nmax_errors = 3\n'
                      'idle_timeout = "1s"\nmax_sessions = 10\nmax_sessions_per_ip = 2\n'
                      'auth_fail_limit = 1\nauth_fail_window = "1m"\n'
                      '[[submission.listeners]]\nlisten = "127.0.0.1:587"\ntls = "starttls"\n'
                      'cert_file = "c.pem"\nkey_file = "k.pem"\n'
                      '[[submission.listeners]]\nlisten = "[::1]:25"\ntls = "none"\n',
    "dkim_suppression": '[[dkim]]\ndomain = "example.com"\nselector = "s1"\nkey_file = "k.pem"\n'
                        'canonicalization = "relaxed/simple"\nheaders = ["From", "Subject"]\n'
                        'expire = "7d"\nbody_length = false\n'
                        '[suppression]\nenabled = true\ninvalid_ttl = "30d"\nunsubscribe_ttl = "0s"\n'
                        'file = "supp.txt"\n',
    "bad_unknown_key": "[delivery]\nmax_rcpt_per_txn = 5\n",
    "bad_range": "[delivery]\nmax_rcpts_per_txn = 0\n",
    "bad_type": '[engine]\nshards = "two"\n',
    "bad_duration": '[delivery.timeouts]\nconnect = "30 parsecs"\n',
    "bad_route": '[routing]\ndefault = "[::1:25"\n',
    "bad_toml_syntax": "[delivery\nport = = 25\n",
    "bad_duplicate_table": "[engine]\nshards = 1\n[engine]\nshards = 2\n",
    "bad_pool_unknown_source": '[[pools]]\nname = "p"\nsources = ["nope"]\n',
    "huge_numbers": "[ingest]\nmax_recipients = 99999999999999999999\n[engine]\nring_entries = -1\n",
    "unicode_and_escapes": 'log_level = "\\u0069nfo"\n[delivery]\nehlo_name = "m\\u00fcnchen.example"\n',
    "inline_tables": 'engine = { shards = 1 }\ndelivery = { timeouts = { connect = "1s" } }\n',
    "retry_empty_schedule": "[retry]\nschedule = []\n",
}


def config_seeds():
    seeds = [(k, v) for k, v in sorted(CONFIGS.items())]
    # The built-in default configuration, as engine/config.cc embeds it.
    with open(os.path.join(HERE, "..", "..", "engine", "config.cc")) as f:
        src = f.read()
    start = src.index('kDefaultConfig = R"(') + len('kDefaultConfig = R"(')
    seeds.append(("builtin_default", src[start:src.index(')";', start)]))
    return seeds


# --- delivery session --------------------------------------------------------

def dsess(opt, shape, seed, timeout_at, script):
    return bytes([opt, shape, seed, timeout_at]) + script.encode("latin-1")


NOPIPE = 0x01 | 0x02     # no PIPELINING, no CHUNKING use
EHLO_PLAIN = "250-mx.example\r\n250 8BITMIME\r\n"
EHLO_PIPE = "250-mx.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
EHLO_CHUNK = "250-mx.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n"
G = "220 mx.example ESMTP\r\n"


def delivery_seeds():
    s = []
    ok_txn = "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n250 2.0.0 queued\r\n"
    s.append(("plain_data_delivered", dsess(NOPIPE, 0x10, 1, 0, G + EHLO_PLAIN + ok_txn + "221 bye\r\n")))
    s.append(("pipelined_two_txns", dsess(0x00 | 0x02 | 0x04, 0x05, 3, 0, G + EHLO_PIPE +
              "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued 1\r\n"
              "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued 2\r\n")))
    s.append(("bdat_two_txns", dsess(0x04, 0x01, 5, 0, G + EHLO_CHUNK +
              "250 ok\r\n250 ok\r\n250 2.0.0 chunk 1\r\n250 ok\r\n550 5.1.1 no\r\n250 2.0.0 chunk 2\r\n")))
    s.append(("rcpt_mixed", dsess(NOPIPE, 0x08, 2, 0, G + EHLO_PLAIN +
              "250 ok\r\n250 ok\r\n550 5.1.1 unknown user\r\n451 4.7.1 greylisted\r\n354 go\r\n250 ok\r\n")))
    s.append(("mail_550", dsess(NOPIPE, 0x04, 1, 0, G + EHLO_PLAIN + "550 5.7.1 sender refused\r\n")))
    s.append(("data_554", dsess(NOPIPE, 0x00, 1, 0, G + EHLO_PLAIN + "250 ok\r\n250 ok\r\n554 5.6.0 no\r\n")))
    s.append(("body_451", dsess(NOPIPE, 0x00, 1, 0, G + EHLO_PLAIN +
              "250 ok\r\n250 ok\r\n354 go\r\n451 4.3.0 try later\r\n")))
    s.append(("rcpt_421", dsess(NOPIPE, 0x04, 1, 0, G + EHLO_PLAIN +
              "250 ok\r\n421 4.7.0 too busy, closing\r\n")))
    s.append(("greeting_554", dsess(0, 0, 0, 0, "554 5.7.1 go away\r\n")))
    s.append(("greeting_421", dsess(0, 0, 0, 0, "421 4.3.2 not now\r\n")))
    s.append(("ehlo_502_helo", dsess(NOPIPE, 0, 1, 0, G + "502 5.5.1 EHLO not implemented\r\n"
              "250 mx.example\r\n" + ok_txn)))
    s.append(("mixed_codes_lines", dsess(NOPIPE, 0, 1, 0, G + EHLO_PLAIN + "250-ok\r\n550 end\r\n")))
    s.append(("many_lines", dsess(NOPIPE, 0x80, 1, 0, G + "250-x\r\n" * 40 + "250 y\r\n")))
    s.append(("bare_lf", dsess(NOPIPE, 0, 1, 0, "220 mx\n250 mx\n250 ok\n250 ok\n354 go\n250 ok\n")))
    s.append(("nul_in_reply", dsess(NOPIPE, 0, 1, 0, G + "250 mx\x00evil\r\n250 o\x00k\r\n")))
    s.append(("premature_250_after_354", dsess(NOPIPE, 0, 0, 0, G + EHLO_PLAIN +
              "250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 premature\r\n")))
    s.append(("extra_reply", dsess(NOPIPE, 0, 1, 0, G + EHLO_PLAIN +
              "250 ok\r\n550 5.1.1 extra\r\n250 ok\r\n354 go\r\n250 ok\r\n")))
    s.append(("starttls_ok", dsess(0x10, 0, 1, 0, G + "250-mx\r\n250 STARTTLS\r\n220 2.0.0 go\r\n" +
              EHLO_PIPE + "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")))
    s.append(("starttls_injection", dsess(0x20, 0, 0, 0, G + "250-mx\r\n250 STARTTLS\r\n"
              "220 2.0.0 go\r\n250 injected\r\n")))
    s.append(("starttls_handshake_fails", dsess(0x10 | 0x40, 0, 1, 0, G + "250-mx\r\n250 STARTTLS\r\n220 go\r\n")))
    s.append(("required_no_starttls", dsess(0x20, 0, 1, 0, G + EHLO_PLAIN + "221 bye\r\n")))
    s.append(("auth_plain_235", dsess(0x80, 0x00, 0x81, 0, G + "250-mx\r\n250 AUTH PLAIN LOGIN\r\n"
              "235 2.7.0 ok\r\n" + ok_txn)))
    s.append(("auth_login", dsess(0x80, 0x00, 0x82, 0, G + "250-mx\r\n250 AUTH LOGIN\r\n"
              "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 ok\r\n" + ok_txn)))
    s.append(("auth_535", dsess(0x80, 0, 0x81, 0, G + "250-mx\r\n250 AUTH PLAIN\r\n"
              "535 5.7.8 bad credentials\r\n221 bye\r\n")))
    s.append(("size_too_small", dsess(NOPIPE, 0x40, 1, 0, G + "250-mx\r\n250 SIZE 100\r\n221 bye\r\n")))
    s.append(("no_smtputf8", dsess(NOPIPE, 0x24, 1, 0, G + EHLO_PLAIN + "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")))
    s.append(("timeout_waiting_mail", dsess(NOPIPE, 0, 1, 9, G + EHLO_PLAIN + "250 ok\r\n" + " " * 40)))
    s.append(("line_too_long", dsess(NOPIPE, 0x80, 1, 0, G + "250 " + "x" * 200 + "\r\n")))
    s.append(("rcpt_503_552", dsess(NOPIPE, 0x08, 1, 0, G + EHLO_PLAIN +
              "250 ok\r\n503 5.5.1 bad sequence\r\n552 5.2.2 mailbox full\r\n")))
    s.append(("garbage_codes", dsess(NOPIPE, 0, 1, 0, G + "2500 x\r\n199 y\r\nabc\r\n")))
    return s


if __name__ == "__main__":
    write("dns_answer_fuzz", dns_seeds())
    write("spool_record_fuzz", spool_seeds())
    write("config_fuzz", config_seeds())
    write("delivery_session_fuzz", delivery_seeds())
