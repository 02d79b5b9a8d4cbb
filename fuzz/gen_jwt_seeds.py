#!/usr/bin/env python3
"""Writes fuzz/seeds/jwt_verify/: HS256 tokens signed with the fuzz secret (src/lib.rs SECRET),
issued in 2020 and expiring in 2191, so they stay valid for the jwt_verify target (which allows a
200-year lifetime), plus a few near-misses. Run from anywhere: python3 fuzz/gen_jwt_seeds.py"""
import base64, hashlib, hmac, json, os

SECRET = b"onlychat-fuzz-secret-0123456789-abcdefghij"
ISS, AUD = "onlychat-fuzz-iss", "onlychat-fuzz-aud"
IAT, EXP = 1577836800, 7000000000
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "jwt_verify")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(header, claims, secret=SECRET, sign=True):
    msg = b64(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    sig = b64(hmac.new(secret, msg.encode(), hashlib.sha256).digest()) if sign else ""
    return msg + "." + sig


def claims(**over):
    c = {"sub": "0190a2b4-user", "name": "alice", "sid": "0190a2b4-session", "iat": IAT,
         "nbf": IAT, "exp": EXP, "jti": "0190a2b4-jti", "iss": ISS, "aud": AUD, "roles": []}
    c.update(over)
    return c


HS = {"alg": "HS256", "typ": "JWT"}
seeds = {
    "valid": token(HS, claims()),
    "valid_no_typ": token({"alg": "HS256"}, claims()),
    "valid_roles_unicode": token(HS, claims(name="zoë 名前", roles=["admin", "mod"])),
    "valid_extra_claims": token(HS, claims(extra={"a": [1, 2]}, scope="x")),
    "expired": token(HS, claims(exp=1600000000)),
    "wrong_key": token(HS, claims(), secret=b"x" * 32),
    "wrong_aud": token(HS, claims(aud="someone-else")),
    "aud_list": token(HS, claims(aud=[AUD])),
    "with_kid": token({"alg": "HS256", "kid": "k1"}, claims()),
    "alg_none": token({"alg": "none", "typ": "JWT"}, claims(), sign=False),
    "alg_rs256": token({"alg": "RS256", "typ": "JWT"}, claims()),
    "no_exp": token(HS, {k: v for k, v in claims().items() if k != "exp"}),
    "float_exp": token(HS, claims(exp=7000000000.5)),
}
os.makedirs(OUT, exist_ok=True)
for name, text in seeds.items():
    with open(os.path.join(OUT, name), "w") as f:
        f.write(text)
