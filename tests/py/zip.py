#!/usr/bin/python3
"""The other side of tests/unit/test_zip.c: Python's zipfile and a byte-exact zip builder.

    zip.py gen DIR            writes the archives test_zip reads into DIR, with good.txt (file,
                              member count, then "name i size method" per member; member i's
                              content is content(i, size)) and bad.txt (file, stage, error,
                              message part, tab-separated)
    zip.py check PATH SPEC... zipfile reads PATH (testzip, every member's name, method and bytes;
                              SPEC is name:i:size:method:align_at, align_at >= 0 for a stored
                              member whose data byte align_at must be 64-aligned)
    zip.py many PATH          PATH is test_zip's 70000-member archive
    zip.py huge PATH          PATH is test_zip's 4.3 GB archive (zip64 sizes and offsets)
"""
import os
import struct
import sys
import zipfile
import zlib


def content(i, n):
    return bytes((i * 7 + j * 13) % 251 for j in range(n))


def gen(out):
    def deflate(b):
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(b) + c.flush()
    exp = open(os.path.join(out, 'good.txt'), 'w')
    def expect(fn, members):
        exp.write('%s %d\n' % (fn, len(members)))
        for name, i, n, method in members:
            exp.write('%s %d %d %d\n' % (name, i, n, method))
    SIZES = [0, 1, 1000, 70000, 3]
    def std_members(methods):
        return [('m%d.bin' % i, i, n, methods[i % len(methods)]) for i, n in enumerate(SIZES)]
    class Stream:
        def __init__(s, f): s.f = f
        def write(s, b): return s.f.write(b)
        def flush(s): s.f.flush()
    def py_zip(fn, members, stream=False, force64=False, comment=None):
        f = open(os.path.join(out, fn), 'wb')
        zf = zipfile.ZipFile(Stream(f) if stream else f, 'w')
        for name, i, n, method in members:
            zi = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED if method == 8 else zipfile.ZIP_STORED
            with zf.open(zi, 'w', force_zip64=force64) as w:
                w.write(content(i, n))
        if comment is not None:
            zf.comment = comment
        zf.close()
        f.close()
        expect(fn, members)
    # Each twice: with a 70000-byte member (more than deflate's window), and small (_s) for the
    # tests that try every byte.
    for sfx, sizes in (('', SIZES), ('_s', [0, 1, 300, 3])):
        def ms(methods):
            return [('m%d.bin' % i, i, n, methods[i % len(methods)]) for i, n in enumerate(sizes)]
        py_zip('py_stored%s.zip' % sfx, ms([0]))
        py_zip('py_deflated%s.zip' % sfx, ms([8]))
        py_zip('py_force64%s.zip' % sfx, ms([8, 0]), force64=True)
        py_zip('py_stream%s.zip' % sfx, ms([0, 8]), stream=True)
        py_zip('py_stream64%s.zip' % sfx, ms([8, 0]), stream=True, force64=True)
    py_zip('py_comment.zip', std_members([0, 8]), comment=b'PK\x05\x06' * 20 + b'x' * 300)
    py_zip('py_empty.zip', [])
    many = [('d/m%d' % i, i, i % 4, 0) for i in range(66000)]
    py_zip('py_many.zip', many)

    # Hand-made archives: every field under control.
    def build(ms, comment=b'', z64eocd=False, eocd=None, z64=None, ghosts=()):
        out_b = bytearray()
        cds = []
        for m in ms:
            name = m['name'].encode() if isinstance(m['name'], str) else m['name']
            data = m.get('data', b'')
            method = m.get('method', 0)
            comp = m.get('comp', data if method == 0 else deflate(data))
            crc = m.get('crc', zlib.crc32(data))
            usize = m.get('usize', len(data))
            csize = m.get('csize', len(comp))
            flags = m.get('flags', 0)
            off = len(out_b)
            lname = m.get('lname', name)
            lextra = m.get('lextra', b'')
            l32 = m.get('l32', (csize, usize))
            out_b += struct.pack('<IHHHHHIIIHH', 0x04034b50, 20, m.get('lflags', flags),
                                 m.get('lmethod', method), 0, 0x21, m.get('lcrc', crc), l32[0], l32[1],
                                 len(lname), len(lextra)) + lname + lextra
            out_b += comp
            out_b += m.get('desc', b'')
            cds.append(dict(name=name, method=method, crc=crc, usize=usize, csize=csize, off=off,
                            flags=flags, m=m))
        for g in ghosts:
            cds.append(g)
        cd_off = len(out_b)
        for c in cds:
            m = c.get('m', {})
            cextra = m.get('cextra', b'')
            us, cs, off = c['usize'], c['csize'], m.get('coff', c['off'])
            if m.get('z64c'):
                cextra = struct.pack('<HHQQQ', 1, 24, us, cs, off) + cextra
                us = cs = off = 0xFFFFFFFF
            out_b += struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 0x314, 20, c['flags'],
                                 c['method'], 0, 0x21, c['crc'], cs, us, len(c['name']),
                                 len(cextra), 0, m.get('disk', 0), 0, 0, off) + c['name'] + cextra
        cd_size = len(out_b) - cd_off
        n = len(cds)
        e = dict(disk=0, cd_disk=0, n_disk=n, n=n, cd_size=cd_size, cd_off=cd_off)
        if z64eocd:
            z = dict(size=44, disk=0, cd_disk=0, n_disk=n, n=n, cd_size=cd_size, cd_off=cd_off,
                     loc_off=len(out_b), loc_disks=1)
            z.update(z64 or {})
            rec = struct.pack('<IQHHIIQQQQ', 0x06064b50, z['size'], 0x32d, 45, z['disk'],
                              z['cd_disk'], z['n_disk'], z['n'], z['cd_size'], z['cd_off'])
            out_b += rec
            out_b += struct.pack('<IIQI', 0x07064b50, 0, z['loc_off'], z['loc_disks'])
            e.update(n_disk=0xFFFF, n=0xFFFF, cd_size=0xFFFFFFFF, cd_off=0xFFFFFFFF)
        e.update(eocd or {})
        out_b += struct.pack('<IHHHHIIH', 0x06054b50, e['disk'], e['cd_disk'], e['n_disk'], e['n'],
                             e['cd_size'], e['cd_off'], len(comment)) + comment
        return bytes(out_b)
    def put(fn, b):
        open(os.path.join(out, fn), 'wb').write(b)
    def mem(i, n, method=0, **kw):
        d = dict(name='m%d.bin' % i, data=content(i, n), method=method)
        d.update(kw)
        return d

    # Good, hand-made: zip64 everywhere in the central directory and the end records.
    ms = [mem(0, 100, 0, z64c=True), mem(1, 900, 8, z64c=True), mem(2, 0, 8, z64c=True)]
    put('craft_z64.zip', build(ms, z64eocd=True))
    expect('craft_z64.zip', [('m0.bin', 0, 100, 0), ('m1.bin', 1, 900, 8), ('m2.bin', 2, 0, 8)])
    # Good: local zip64 extra (both sizes) with 0xffffffff local sizes, as numpy writes.
    d = content(3, 777)
    lz = struct.pack('<HHQQ', 1, 16, len(d), len(d))
    put('craft_local64.zip', build([dict(name='m3.bin', data=d, l32=(0xFFFFFFFF, 0xFFFFFFFF), lextra=lz)]))
    expect('craft_local64.zip', [('m3.bin', 3, 777, 0)])
    # Good: data descriptor without signature, 32-bit.
    d = content(4, 300)
    desc = struct.pack('<III', zlib.crc32(d), len(deflate(d)), len(d))
    put('craft_desc_nosig.zip', build([dict(name='m4.bin', data=d, method=8, flags=8, lcrc=0, l32=(0, 0), desc=desc)]))
    expect('craft_desc_nosig.zip', [('m4.bin', 4, 300, 8)])
    exp.close()

    bad = open(os.path.join(out, 'bad.txt'), 'w')
    def badf(fn, b, stage, code, sub):
        put(fn, b)
        bad.write('%s\t%s\t%s\t%s\n' % (fn, stage, code, sub))
    def pyzip_bytes(name, data, ctype):
        import io
        bio = io.BytesIO()
        with zipfile.ZipFile(bio, 'w') as zf:
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=ctype)
        return bio.getvalue()
    badf('bad_bzip2.zip', pyzip_bytes('a', b'x' * 100, zipfile.ZIP_BZIP2), 'open', 'TD_ENOTSUP', 'bzip2')
    badf('bad_lzma.zip', pyzip_bytes('a', b'x' * 100, zipfile.ZIP_LZMA), 'open', 'TD_ENOTSUP', 'lzma')
    badf('bad_dotdot.zip', pyzip_bytes('a/../../evil', b'x', zipfile.ZIP_STORED), 'open', 'TD_EFORMAT', "'..'")
    badf('bad_dotdot2.zip', pyzip_bytes('..', b'x', zipfile.ZIP_STORED), 'open', 'TD_EFORMAT', "'..'")
    badf('bad_abs.zip', pyzip_bytes('/etc/passwd', b'x', zipfile.ZIP_STORED), 'open', 'TD_EFORMAT', 'absolute')
    badf('bad_backslash.zip', pyzip_bytes('a' + chr(92) + 'b', b'x', zipfile.ZIP_STORED), 'open', 'TD_EFORMAT', 'backslash')
    badf('bad_nul.zip', build([dict(name=b'a\x00b', data=b'x')]), 'open', 'TD_EFORMAT', 'NUL')
    badf('bad_emptyname.zip', build([dict(name=b'', data=b'x')]), 'open', 'TD_EFORMAT', 'empty name')
    badf('bad_encrypted.zip', build([mem(0, 10, flags=1)]), 'open', 'TD_ENOTSUP', 'encrypted')
    badf('bad_encrypted_local.zip', build([mem(0, 10, lflags=1)]), 'open', 'TD_ENOTSUP', 'encrypted')
    badf('bad_strongenc.zip', build([mem(0, 10, flags=0x40)]), 'open', 'TD_ENOTSUP', 'encrypted')
    badf('bad_method99.zip', build([mem(0, 10, method=99, comp=b'x' * 10)]), 'open', 'TD_ENOTSUP', 'AES')
    # Overlap: member b's local header and data sit inside member a's data.
    bd = content(5, 50)
    b_local = struct.pack('<IHHHHHIIIHH', 0x04034b50, 20, 0, 0, 0, 0x21, zlib.crc32(bd), 50, 50, 1, 0) + b'b' + bd
    ghost = dict(name=b'b', method=0, crc=zlib.crc32(bd), usize=50, csize=50, off=30 + 1, flags=0)
    badf('bad_overlap.zip', build([dict(name='a', data=b_local)], ghosts=[ghost]), 'open', 'TD_EFORMAT', 'overlap')
    # Two directory entries for one local header.
    twin = dict(name=b'a', method=0, crc=zlib.crc32(b'hello'), usize=5, csize=5, off=0, flags=0)
    badf('bad_twin.zip', build([dict(name='a', data=b'hello')], ghosts=[twin]), 'open', 'TD_EFORMAT', 'overlap')
    badf('bad_offset.zip', build([mem(0, 10, coff=0x7fffffff)]), 'open', 'TD_EFORMAT', 'past the start of the central directory')
    badf('bad_offset64.zip', build([mem(0, 10, z64c=True, coff=1 << 62)]), 'open', 'TD_EFORMAT', 'past the start')
    z = deflate(bytes(100000))
    badf('bad_ratio.zip', build([mem(0, 0, 8, comp=z, usize=len(z) * 1033 + 2000, l32=(len(z), len(z) * 1033 + 2000))]),
         'open', 'TD_EFORMAT', '1032')
    badf('bad_ratio64.zip', build([mem(0, 0, 8, comp=z, usize=1 << 60, z64c=True, l32=(0xFFFFFFFF, 0xFFFFFFFF), lextra=struct.pack('<HHQQ', 1, 16, 1 << 60, len(z)))]),
         'open', 'TD_EFORMAT', '1032')
    d = content(6, 5000)
    badf('bad_bigger.zip', build([mem(6, 5000, 8, usize=4999, l32=(len(deflate(d)), 4999))]), 'verify', 'TD_EFORMAT', 'more than the declared')
    badf('bad_smaller.zip', build([mem(6, 5000, 8, usize=5001, l32=(len(deflate(d)), 5001))]), 'verify', 'TD_EFORMAT', 'inflates to 5000 bytes')
    badf('bad_crc.zip', build([mem(6, 5000, 8, crc=12345)]), 'verify', 'TD_ECHECKSUM', 'CRC-32')
    badf('bad_crc_stored.zip', build([mem(6, 5000, 0, crc=12345)]), 'verify', 'TD_ECHECKSUM', 'CRC-32')
    dz = deflate(d)
    badf('bad_trunc_stream.zip', build([mem(6, 5000, 8, comp=dz[:len(dz) // 2])]), 'verify', 'TD_ETRUNC', 'end before the deflate stream')
    badf('bad_corrupt_stream.zip', build([mem(6, 5000, 8, comp=b'\xff' * 64)]), 'verify', 'TD_EFORMAT', 'corrupt deflate')
    badf('bad_multidisk.zip', build([mem(0, 10)], eocd=dict(disk=1)), 'open', 'TD_ENOTSUP', 'multi-disk')
    badf('bad_multidisk_member.zip', build([mem(0, 10, disk=2)]), 'open', 'TD_ENOTSUP', 'disk 2')
    badf('bad_count.zip', build([mem(0, 10)], eocd=dict(n=1000, n_disk=1000)), 'open', 'TD_EFORMAT', 'holds at most')
    badf('bad_cd_past.zip', build([mem(0, 10)], eocd=dict(cd_off=5000)), 'open', 'TD_EFORMAT', 'runs past its end record')
    badf('bad_cd_sig.zip', build([mem(0, 10)], eocd=dict(cd_off=1)), 'open', 'TD_EFORMAT', 'signature')
    d = content(7, 300)
    bad_desc = struct.pack('<IIII', 0x08074b50, zlib.crc32(d) ^ 1, len(deflate(d)), len(d))
    badf('bad_descriptor.zip', build([mem(7, 300, 8, flags=8, lcrc=0, l32=(0, 0), desc=bad_desc)]), 'open', 'TD_EFORMAT', 'data descriptor')
    badf('bad_descriptor_missing.zip', build([mem(7, 300, 8, flags=8, lcrc=0, l32=(0, 0))]), 'open', 'TD_EFORMAT', 'data descriptor')
    badf('bad_localname.zip', build([mem(0, 10, lname=b'm9.bin')]), 'open', 'TD_EFORMAT', 'names another file')
    badf('bad_localmethod.zip', build([mem(0, 10, 8, lmethod=0)]), 'open', 'TD_EFORMAT', 'local header says method')
    badf('bad_localcrc.zip', build([mem(0, 10, lcrc=1)]), 'open', 'TD_EFORMAT', 'contradicts the central directory')
    badf('bad_localsize.zip', build([mem(0, 10, l32=(10, 11))]), 'open', 'TD_EFORMAT', 'contradicts the central directory')
    badf('bad_extra.zip', build([mem(0, 10, cextra=struct.pack('<HH', 0x7777, 40) + b'abc')]), 'open', 'TD_EFORMAT', 'extra field 0x7777')
    badf('bad_lextra.zip', build([mem(0, 10, lextra=struct.pack('<HH', 0x7777, 40))]), 'open', 'TD_EFORMAT', 'extra field 0x7777')
    badf('bad_z64short.zip', build([mem(0, 10, cextra=struct.pack('<HHQ', 1, 8, 10), csize=0xFFFFFFFF, usize=0xFFFFFFFF, l32=(10, 10))]),
         'open', 'TD_EFORMAT', 'lacks it')
    badf('bad_stored_sizes.zip', build([mem(0, 10, usize=11, l32=(10, 11))]), 'open', 'TD_EFORMAT', 'sizes differ')
    badf('bad_data_past.zip', build([mem(0, 10, csize=10000, usize=10000, l32=(10000, 10000))]), 'open', 'TD_EFORMAT', 'run past the start')
    ms = [mem(0, 100)]
    badf('bad_z64loc.zip', build(ms, z64eocd=True, z64=dict(loc_off=3)), 'open', 'TD_EFORMAT', 'no zip64 end record')
    badf('bad_z64loc_far.zip', build(ms, z64eocd=True, z64=dict(loc_off=1 << 40)), 'open', 'TD_EFORMAT', 'zip64 end record offset')
    badf('bad_z64count.zip', build(ms, z64eocd=True, z64=dict(n=1 << 40, n_disk=1 << 40)), 'open', 'TD_EFORMAT', 'holds at most')
    badf('bad_z64size.zip', build(ms, z64eocd=True, z64=dict(size=1 << 50)), 'open', 'TD_EFORMAT', 'zip64 end record at')
    badf('bad_z64disk.zip', build(ms, z64eocd=True, z64=dict(loc_disks=3)), 'open', 'TD_ENOTSUP', 'multi-disk')
    badf('bad_z64contra.zip', build(ms, z64eocd=True, eocd=dict(n=2, n_disk=2)), 'open', 'TD_EFORMAT', 'contradicts the zip64')
    badf('bad_noeocd.zip', b'PK\x03\x04' + bytes(100), 'open', 'TD_EFORMAT', 'no end of central directory')
    badf('bad_tiny.zip', b'PK\x05\x06', 'open', 'TD_ETRUNC', 'too short')
    badf('bad_comment_len.zip', build([mem(0, 10)], comment=b'abc')[:-1], 'open', 'TD_EFORMAT', 'no end of central directory')
    bad.close()


def check(path, *specs):
    spec = [s.split(':') for s in specs]
    z = zipfile.ZipFile(path)
    assert z.testzip() is None
    infos = z.infolist()
    assert len(infos) == len(spec), (len(infos), len(spec))
    raw = open(path, 'rb').read()
    for zi, (name, idx, size, method, at) in zip(infos, spec):
        idx, size, method, at = int(idx), int(size), int(method), int(at)
        assert zi.filename == name, (zi.filename, name)
        assert zi.compress_type == method
        data = z.read(zi)
        want = bytes((idx * 7 + j * 13) % 251 for j in range(size))
        assert data == want, name
        nl, xl = struct.unpack('<HH', raw[zi.header_offset + 26:zi.header_offset + 30])
        start = zi.header_offset + 30 + nl + xl
        if method == 0 and at >= 0:
            assert (start + at) % 64 == 0, (name, start, at)


def many(path):
    z = zipfile.ZipFile(path)
    assert len(z.infolist()) == 70000
    assert z.read('m69997') == bytes(((69997*7) % 251,))
    assert z.testzip() is None


def huge(path):
    z = zipfile.ZipFile(path)
    a, b = z.infolist()
    assert a.file_size == (4 << 30) + 4096 and b.header_offset > 2**32
    assert z.read('after.bin') == bytes((3*7 + j*13) % 251 for j in range(1000))
    c = 0
    with z.open(a) as f:
        while True:
            blk = f.read(1 << 26)
            if not blk: break
            c = zlib.crc32(blk, c)
    assert c == a.CRC


if __name__ == "__main__":
    cmds = {"gen": gen, "check": check, "many": many, "huge": huge}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
