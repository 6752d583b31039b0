"""DKIM-signed sample messages and their sender's DNS zone, for bench/compare's `auth` chain.

make_samples(tmp) makes a 2048-bit RSA key with `openssl genpkey`, writes N messages from
bench@authsender.test into tmp/auth-samples/*.eml, each signed (rsa-sha256, relaxed/relaxed,
h=from:to:subject:date: smtp-loadtest prepends its own Message-ID and X-Loadtest-Seq, which
are therefore not signed) with `openssl dgst -sha256 -sign`, and returns (directory, zone text)
where the zone `authsender.test` holds what the chain asks: MX and A (resolvable_fromhost),
SPF with one include, the DKIM key (selector `bench`) and a DMARC record (p=none).
"""

import base64
import email.utils
import hashlib
import os
import re
import subprocess

DOMAIN = "authsender.test"
FROM = f"bench@{DOMAIN}"
SELECTOR = "bench"
SIGNED = ("from", "to", "subject", "date")


def relaxed_body(body):
    """RFC 6376 §3.4.4."""
    lines = [re.sub(r"[ \t]+", " ", line).rstrip(" ") for line in body.split("\r\n")]
    while lines and lines[-1] == "":
        lines.pop()
    return "".join(line + "\r\n" for line in lines)


def relaxed_field(name, value):
    """RFC 6376 §3.4.2, without the final CRLF."""
    value = re.sub(r"[ \t]+", " ", re.sub(r"\r\n(?=[ \t])", "", value)).strip(" ")
    return f"{name.lower().strip()}:{value}"


def sign(key, head, body):
    """The DKIM-Signature field (with its CRLF) for a message of `head` fields and `body`."""
    bh = base64.b64encode(hashlib.sha256(relaxed_body(body).encode()).digest()).decode()
    fields = {}
    for line in head.split("\r\n"):
        name, value = line.split(":", 1)
        fields.setdefault(name.lower(), value)
    value = (f" v=1; a=rsa-sha256; c=relaxed/relaxed; d={DOMAIN}; s={SELECTOR};"
             f" h={':'.join(SIGNED)}; bh={bh}; b=")
    data = "".join(relaxed_field(n, fields[n]) + "\r\n" for n in SIGNED)
    data += relaxed_field("DKIM-Signature", value)
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=data.encode(),
                         capture_output=True, check=True).stdout
    return f"DKIM-Signature:{value}{base64.b64encode(sig).decode()}\r\n"


def make_samples(tmp, n=8):
    key = os.path.join(tmp, "auth-dkim.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", key], capture_output=True, check=True)
    spki = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"],
                          capture_output=True, check=True).stdout
    directory = os.path.join(tmp, "auth-samples")
    os.makedirs(directory, exist_ok=True)
    text = ("Hello,\r\n\r\nthis message is signed with DKIM by its sender's domain, which also "
            "publishes SPF and DMARC\r\nrecords, so that the receiving chain checks all three "
            "before the message is queued.\r\n\r\n")
    for i in range(n):
        head = (f"From: Bench Sender <{FROM}>\r\nTo: rcpt@example.com\r\n"
                f"Subject: auth bench sample {i}\r\nDate: {email.utils.formatdate()}")
        body = text + "".join(f"Line {j:02} of sample {i}, padding the message to about a kilobyte.\r\n"
                              for j in range(8))
        with open(os.path.join(directory, f"sample{i}.eml"), "w", newline="") as f:
            f.write(sign(key, head, body) + head + "\r\n\r\n" + body)
    p = base64.b64encode(spki).decode()
    record = " ".join(f'"{part}"' for part in
                      ["v=DKIM1; k=rsa; "] + [f"p={p}"[i:i + 200] for i in range(0, len(p) + 2, 200)])
    zone = f"""$ORIGIN {DOMAIN}.
$TTL 300
@         SOA   ns.example.test. hostmaster.example.test. 1 3600 600 86400 60
@         NS    ns.example.test.
@         MX    10 mail.example.test.
@         A     127.0.0.1
@         TXT   "v=spf1 include:_spf.{DOMAIN} -all"
_spf      TXT   "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc    TXT   "v=DMARC1; p=none"
{SELECTOR}._domainkey TXT {record}
"""
    return directory, zone
