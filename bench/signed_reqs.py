#!/usr/bin/env python3
"""Signed request files for wrk beyond what the harness's gen_signed.py writes quickly.

Bodies and signatures are gen_signed's (make_requests, sign); what this adds:
- `unique`: COUNT requests whose signatures are all distinct (for a gateway with replay
  protection on), generated fast: each of up to max(2000, COUNT/200) bodies is signed under up
  to 200 successive timestamps ending now (a signature is the MAC of timestamp and body);
- `cover`: one request for each installation (to fill a gateway's cache with all of them);
- `write_lua`: the file wrk/signed.lua reads (`return { {method, path, {headers}, body}, ...
  }`, as gen_signed.write_lua writes it) in chunks of 2000 requests, since one Lua function
  holds at most 65536 constants (gen_signed's single table fails past ~30,000 requests), and
  escaping with str.replace instead of byte by byte.

  signed_reqs.py GEN_DIR INSTALLATIONS SECRET SHAPE OUT COUNT SEED [cover]
"""
import sys
import time

CHUNK = 2000


def unique(gen_signed, insts, secret, shape, count, seed):
    nb = min(count, max(2000, -(-count // 200)))
    bodies = gen_signed.make_requests(insts, secret, nb, shape, seed=seed)
    now = int(time.time())
    out = []
    for i in range(count):
        r = bodies[i % nb]
        ts = str(now - i // nb)
        h = dict(r["headers"], **{"X-Slack-Request-Timestamp": ts,
                                  "X-Slack-Signature": gen_signed.sign(secret, ts, r["body"])})
        out.append(dict(r, headers=h))
    return out


def cover(gen_signed, insts, secret, shape, seed):
    return [gen_signed.make_requests([i], secret, 1, shape, seed=seed)[0] for i in insts]


def _lua(s):
    return '"' + (s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                  .replace("\r", "\\r").replace("\0", "\\0")) + '"'


def write_lua(reqs, path):
    with open(path, "w", encoding="latin-1") as f:
        f.write("local all, chunks = {}, {}\n")
        for i, r in enumerate(reqs):
            if i % CHUNK == 0:
                f.write("%schunks[#chunks + 1] = function() return {\n" % ("} end\n" if i else ""))
            hs = ",".join("[%s]=%s" % (_lua(k), _lua(v)) for k, v in r["headers"].items())
            f.write("{%s,%s,{%s},%s},\n" % (_lua(r["method"]), _lua(r["path"]), hs,
                                            _lua(r["body"].decode("latin-1"))))
        if reqs:
            f.write("} end\n")
        f.write("for _, c in ipairs(chunks) do for _, r in ipairs(c()) do all[#all + 1] = r end end\n"
                "return all\n")


def main(argv):
    gen_dir, insts_path, secret, shape, out, count, seed = argv[:7]
    sys.path.insert(0, gen_dir)
    import gen_signed
    insts = gen_signed.load_installations(insts_path)
    if argv[7:] == ["cover"]:
        reqs = cover(gen_signed, insts, secret, shape, int(seed))
    else:
        reqs = unique(gen_signed, insts, secret, shape, int(count), int(seed))
    write_lua(reqs, out)


if __name__ == "__main__":
    main(sys.argv[1:])
