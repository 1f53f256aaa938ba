# Mark the GLIBCXX_3.4.32 version requirement in an ELF64 .so as weak (VER_FLG_WEAK),
# so ld.so does not refuse to load it against an older libstdc++.
import struct, sys
p = sys.argv[1]; want = (sys.argv[2] if len(sys.argv) > 2 else "GLIBCXX_3.4.32").encode()
b = bytearray(open(p, "rb").read())
e_shoff, = struct.unpack_from("<Q", b, 0x28); e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", b, 0x3A)
secs = [struct.unpack_from("<IIQQQQIIQQ", b, e_shoff + i * e_shentsize) for i in range(e_shnum)]
SHT_GNU_verneed = 0x6ffffffe
n = 0
for s in secs:
    if s[1] != SHT_GNU_verneed: continue
    strtab = secs[s[6]]; stroff = strtab[4]
    off = s[4]
    while True:
        vn_version, vn_cnt, vn_file, vn_aux, vn_next = struct.unpack_from("<HHIII", b, off)
        a = off + vn_aux
        for _ in range(vn_cnt):
            h, flags, other, name, nxt = struct.unpack_from("<IHHII", b, a)
            nm = bytes(b[stroff + name: b.index(0, stroff + name)])
            if nm == want:
                struct.pack_into("<H", b, a + 4, flags | 0x2); n += 1
            if not nxt: break
            a += nxt
        if not vn_next: break
        off += vn_next
open(p, "wb").write(b); print("weakened", n, "entries in", p)
