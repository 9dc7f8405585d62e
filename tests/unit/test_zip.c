/*
 * test_zip.c - the zip layer: archives written by Python's zipfile (stored, deflated, zip64 on
 * every member as numpy writes, data descriptors from a non-seekable stream, 66000 members),
 * hand-made archives with every field under control (zip64 directory and end records, and
 * some 60 hostile variants, each with the error it must give), truncation at every length,
 * single-byte corruption at every position, and the writer, read back by our reader, Python's
 * zipfile and Info-ZIP's unzip.
 */
#include "common.h"
#include "testutil.h"
#include "writer.h"
#include "zip.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* The generator: writes good.txt (file, member count, then "name i size method" per member;
 * member i's content is content(i, size)) and bad.txt (file, stage, error, message part). */
static const char *gen_py =
    "import os, struct, sys, zipfile, zlib\n"
    "out = sys.argv[1]\n"
    "def content(i, n):\n"
    "    return bytes((i * 7 + j * 13) % 251 for j in range(n))\n"
    "def deflate(b):\n"
    "    c = zlib.compressobj(6, zlib.DEFLATED, -15)\n"
    "    return c.compress(b) + c.flush()\n"
    "exp = open(os.path.join(out, 'good.txt'), 'w')\n"
    "def expect(fn, members):\n"
    "    exp.write('%s %d\\n' % (fn, len(members)))\n"
    "    for name, i, n, method in members:\n"
    "        exp.write('%s %d %d %d\\n' % (name, i, n, method))\n"
    "SIZES = [0, 1, 1000, 70000, 3]\n"
    "def std_members(methods):\n"
    "    return [('m%d.bin' % i, i, n, methods[i % len(methods)]) for i, n in enumerate(SIZES)]\n"
    "class Stream:\n"
    "    def __init__(s, f): s.f = f\n"
    "    def write(s, b): return s.f.write(b)\n"
    "    def flush(s): s.f.flush()\n"
    "def py_zip(fn, members, stream=False, force64=False, comment=None):\n"
    "    f = open(os.path.join(out, fn), 'wb')\n"
    "    zf = zipfile.ZipFile(Stream(f) if stream else f, 'w')\n"
    "    for name, i, n, method in members:\n"
    "        zi = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))\n"
    "        zi.compress_type = zipfile.ZIP_DEFLATED if method == 8 else zipfile.ZIP_STORED\n"
    "        with zf.open(zi, 'w', force_zip64=force64) as w:\n"
    "            w.write(content(i, n))\n"
    "    if comment is not None:\n"
    "        zf.comment = comment\n"
    "    zf.close()\n"
    "    f.close()\n"
    "    expect(fn, members)\n"
    "# Each twice: with a 70000-byte member (more than deflate's window), and small (_s) for the\n"
    "# tests that try every byte.\n"
    "for sfx, sizes in (('', SIZES), ('_s', [0, 1, 300, 3])):\n"
    "    def ms(methods):\n"
    "        return [('m%d.bin' % i, i, n, methods[i % len(methods)]) for i, n in "
    "enumerate(sizes)]\n"
    "    py_zip('py_stored%s.zip' % sfx, ms([0]))\n"
    "    py_zip('py_deflated%s.zip' % sfx, ms([8]))\n"
    "    py_zip('py_force64%s.zip' % sfx, ms([8, 0]), force64=True)\n"
    "    py_zip('py_stream%s.zip' % sfx, ms([0, 8]), stream=True)\n"
    "    py_zip('py_stream64%s.zip' % sfx, ms([8, 0]), stream=True, force64=True)\n"
    "py_zip('py_comment.zip', std_members([0, 8]), comment=b'PK\\x05\\x06' * 20 + b'x' * 300)\n"
    "py_zip('py_empty.zip', [])\n"
    "many = [('d/m%d' % i, i, i % 4, 0) for i in range(66000)]\n"
    "py_zip('py_many.zip', many)\n"
    "\n"
    "# Hand-made archives: every field under control.\n"
    "def build(ms, comment=b'', z64eocd=False, eocd=None, z64=None, ghosts=()):\n"
    "    out_b = bytearray()\n"
    "    cds = []\n"
    "    for m in ms:\n"
    "        name = m['name'].encode() if isinstance(m['name'], str) else m['name']\n"
    "        data = m.get('data', b'')\n"
    "        method = m.get('method', 0)\n"
    "        comp = m.get('comp', data if method == 0 else deflate(data))\n"
    "        crc = m.get('crc', zlib.crc32(data))\n"
    "        usize = m.get('usize', len(data))\n"
    "        csize = m.get('csize', len(comp))\n"
    "        flags = m.get('flags', 0)\n"
    "        off = len(out_b)\n"
    "        lname = m.get('lname', name)\n"
    "        lextra = m.get('lextra', b'')\n"
    "        l32 = m.get('l32', (csize, usize))\n"
    "        out_b += struct.pack('<IHHHHHIIIHH', 0x04034b50, 20, m.get('lflags', flags),\n"
    "                             m.get('lmethod', method), 0, 0x21, m.get('lcrc', crc), l32[0], "
    "l32[1],\n"
    "                             len(lname), len(lextra)) + lname + lextra\n"
    "        out_b += comp\n"
    "        out_b += m.get('desc', b'')\n"
    "        cds.append(dict(name=name, method=method, crc=crc, usize=usize, csize=csize, "
    "off=off,\n"
    "                        flags=flags, m=m))\n"
    "    for g in ghosts:\n"
    "        cds.append(g)\n"
    "    cd_off = len(out_b)\n"
    "    for c in cds:\n"
    "        m = c.get('m', {})\n"
    "        cextra = m.get('cextra', b'')\n"
    "        us, cs, off = c['usize'], c['csize'], m.get('coff', c['off'])\n"
    "        if m.get('z64c'):\n"
    "            cextra = struct.pack('<HHQQQ', 1, 24, us, cs, off) + cextra\n"
    "            us = cs = off = 0xFFFFFFFF\n"
    "        out_b += struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 0x314, 20, c['flags'],\n"
    "                             c['method'], 0, 0x21, c['crc'], cs, us, len(c['name']),\n"
    "                             len(cextra), 0, m.get('disk', 0), 0, 0, off) + c['name'] + "
    "cextra\n"
    "    cd_size = len(out_b) - cd_off\n"
    "    n = len(cds)\n"
    "    e = dict(disk=0, cd_disk=0, n_disk=n, n=n, cd_size=cd_size, cd_off=cd_off)\n"
    "    if z64eocd:\n"
    "        z = dict(size=44, disk=0, cd_disk=0, n_disk=n, n=n, cd_size=cd_size, cd_off=cd_off,\n"
    "                 loc_off=len(out_b), loc_disks=1)\n"
    "        z.update(z64 or {})\n"
    "        rec = struct.pack('<IQHHIIQQQQ', 0x06064b50, z['size'], 0x32d, 45, z['disk'],\n"
    "                          z['cd_disk'], z['n_disk'], z['n'], z['cd_size'], z['cd_off'])\n"
    "        out_b += rec\n"
    "        out_b += struct.pack('<IIQI', 0x07064b50, 0, z['loc_off'], z['loc_disks'])\n"
    "        e.update(n_disk=0xFFFF, n=0xFFFF, cd_size=0xFFFFFFFF, cd_off=0xFFFFFFFF)\n"
    "    e.update(eocd or {})\n"
    "    out_b += struct.pack('<IHHHHIIH', 0x06054b50, e['disk'], e['cd_disk'], e['n_disk'], "
    "e['n'],\n"
    "                         e['cd_size'], e['cd_off'], len(comment)) + comment\n"
    "    return bytes(out_b)\n"
    "def put(fn, b):\n"
    "    open(os.path.join(out, fn), 'wb').write(b)\n"
    "def mem(i, n, method=0, **kw):\n"
    "    d = dict(name='m%d.bin' % i, data=content(i, n), method=method)\n"
    "    d.update(kw)\n"
    "    return d\n"
    "\n"
    "# Good, hand-made: zip64 everywhere in the central directory and the end records.\n"
    "ms = [mem(0, 100, 0, z64c=True), mem(1, 900, 8, z64c=True), mem(2, 0, 8, z64c=True)]\n"
    "put('craft_z64.zip', build(ms, z64eocd=True))\n"
    "expect('craft_z64.zip', [('m0.bin', 0, 100, 0), ('m1.bin', 1, 900, 8), ('m2.bin', 2, 0, 8)])\n"
    "# Good: local zip64 extra (both sizes) with 0xffffffff local sizes, as numpy writes.\n"
    "d = content(3, 777)\n"
    "lz = struct.pack('<HHQQ', 1, 16, len(d), len(d))\n"
    "put('craft_local64.zip', build([dict(name='m3.bin', data=d, l32=(0xFFFFFFFF, 0xFFFFFFFF), "
    "lextra=lz)]))\n"
    "expect('craft_local64.zip', [('m3.bin', 3, 777, 0)])\n"
    "# Good: data descriptor without signature, 32-bit.\n"
    "d = content(4, 300)\n"
    "desc = struct.pack('<III', zlib.crc32(d), len(deflate(d)), len(d))\n"
    "put('craft_desc_nosig.zip', build([dict(name='m4.bin', data=d, method=8, flags=8, lcrc=0, "
    "l32=(0, 0), desc=desc)]))\n"
    "expect('craft_desc_nosig.zip', [('m4.bin', 4, 300, 8)])\n"
    "exp.close()\n"
    "\n"
    "bad = open(os.path.join(out, 'bad.txt'), 'w')\n"
    "def badf(fn, b, stage, code, sub):\n"
    "    put(fn, b)\n"
    "    bad.write('%s\\t%s\\t%s\\t%s\\n' % (fn, stage, code, sub))\n"
    "def pyzip_bytes(name, data, ctype):\n"
    "    import io\n"
    "    bio = io.BytesIO()\n"
    "    with zipfile.ZipFile(bio, 'w') as zf:\n"
    "        zf.writestr(zipfile.ZipInfo(name), data, compress_type=ctype)\n"
    "    return bio.getvalue()\n"
    "badf('bad_bzip2.zip', pyzip_bytes('a', b'x' * 100, zipfile.ZIP_BZIP2), 'open', 'TD_ENOTSUP', "
    "'bzip2')\n"
    "badf('bad_lzma.zip', pyzip_bytes('a', b'x' * 100, zipfile.ZIP_LZMA), 'open', 'TD_ENOTSUP', "
    "'lzma')\n"
    "badf('bad_dotdot.zip', pyzip_bytes('a/../../evil', b'x', zipfile.ZIP_STORED), 'open', "
    "'TD_EFORMAT', \"'..'\")\n"
    "badf('bad_dotdot2.zip', pyzip_bytes('..', b'x', zipfile.ZIP_STORED), 'open', 'TD_EFORMAT', "
    "\"'..'\")\n"
    "badf('bad_abs.zip', pyzip_bytes('/etc/passwd', b'x', zipfile.ZIP_STORED), 'open', "
    "'TD_EFORMAT', 'absolute')\n"
    "badf('bad_backslash.zip', pyzip_bytes('a' + chr(92) + 'b', b'x', zipfile.ZIP_STORED), 'open', "
    "'TD_EFORMAT', 'backslash')\n"
    "badf('bad_nul.zip', build([dict(name=b'a\\x00b', data=b'x')]), 'open', 'TD_EFORMAT', 'NUL')\n"
    "badf('bad_emptyname.zip', build([dict(name=b'', data=b'x')]), 'open', 'TD_EFORMAT', 'empty "
    "name')\n"
    "badf('bad_encrypted.zip', build([mem(0, 10, flags=1)]), 'open', 'TD_ENOTSUP', 'encrypted')\n"
    "badf('bad_encrypted_local.zip', build([mem(0, 10, lflags=1)]), 'open', 'TD_ENOTSUP', "
    "'encrypted')\n"
    "badf('bad_strongenc.zip', build([mem(0, 10, flags=0x40)]), 'open', 'TD_ENOTSUP', "
    "'encrypted')\n"
    "badf('bad_method99.zip', build([mem(0, 10, method=99, comp=b'x' * 10)]), 'open', "
    "'TD_ENOTSUP', 'AES')\n"
    "# Overlap: member b's local header and data sit inside member a's data.\n"
    "bd = content(5, 50)\n"
    "b_local = struct.pack('<IHHHHHIIIHH', 0x04034b50, 20, 0, 0, 0, 0x21, zlib.crc32(bd), 50, 50, "
    "1, 0) + b'b' + bd\n"
    "ghost = dict(name=b'b', method=0, crc=zlib.crc32(bd), usize=50, csize=50, off=30 + 1, "
    "flags=0)\n"
    "badf('bad_overlap.zip', build([dict(name='a', data=b_local)], ghosts=[ghost]), 'open', "
    "'TD_EFORMAT', 'overlap')\n"
    "# Two directory entries for one local header.\n"
    "twin = dict(name=b'a', method=0, crc=zlib.crc32(b'hello'), usize=5, csize=5, off=0, flags=0)\n"
    "badf('bad_twin.zip', build([dict(name='a', data=b'hello')], ghosts=[twin]), 'open', "
    "'TD_EFORMAT', 'overlap')\n"
    "badf('bad_offset.zip', build([mem(0, 10, coff=0x7fffffff)]), 'open', 'TD_EFORMAT', 'past the "
    "start of the central directory')\n"
    "badf('bad_offset64.zip', build([mem(0, 10, z64c=True, coff=1 << 62)]), 'open', 'TD_EFORMAT', "
    "'past the start')\n"
    "z = deflate(bytes(100000))\n"
    "badf('bad_ratio.zip', build([mem(0, 0, 8, comp=z, usize=len(z) * 1033 + 2000, l32=(len(z), "
    "len(z) * 1033 + 2000))]),\n"
    "     'open', 'TD_EFORMAT', '1032')\n"
    "badf('bad_ratio64.zip', build([mem(0, 0, 8, comp=z, usize=1 << 60, z64c=True, "
    "l32=(0xFFFFFFFF, 0xFFFFFFFF), lextra=struct.pack('<HHQQ', 1, 16, 1 << 60, len(z)))]),\n"
    "     'open', 'TD_EFORMAT', '1032')\n"
    "d = content(6, 5000)\n"
    "badf('bad_bigger.zip', build([mem(6, 5000, 8, usize=4999, l32=(len(deflate(d)), 4999))]), "
    "'verify', 'TD_EFORMAT', 'more than the declared')\n"
    "badf('bad_smaller.zip', build([mem(6, 5000, 8, usize=5001, l32=(len(deflate(d)), 5001))]), "
    "'verify', 'TD_EFORMAT', 'inflates to 5000 bytes')\n"
    "badf('bad_crc.zip', build([mem(6, 5000, 8, crc=12345)]), 'verify', 'TD_ECHECKSUM', 'CRC-32')\n"
    "badf('bad_crc_stored.zip', build([mem(6, 5000, 0, crc=12345)]), 'verify', 'TD_ECHECKSUM', "
    "'CRC-32')\n"
    "dz = deflate(d)\n"
    "badf('bad_trunc_stream.zip', build([mem(6, 5000, 8, comp=dz[:len(dz) // 2])]), 'verify', "
    "'TD_ETRUNC', 'end before the deflate stream')\n"
    "badf('bad_corrupt_stream.zip', build([mem(6, 5000, 8, comp=b'\\xff' * 64)]), 'verify', "
    "'TD_EFORMAT', 'corrupt deflate')\n"
    "badf('bad_multidisk.zip', build([mem(0, 10)], eocd=dict(disk=1)), 'open', 'TD_ENOTSUP', "
    "'multi-disk')\n"
    "badf('bad_multidisk_member.zip', build([mem(0, 10, disk=2)]), 'open', 'TD_ENOTSUP', 'disk "
    "2')\n"
    "badf('bad_count.zip', build([mem(0, 10)], eocd=dict(n=1000, n_disk=1000)), 'open', "
    "'TD_EFORMAT', 'holds at most')\n"
    "badf('bad_cd_past.zip', build([mem(0, 10)], eocd=dict(cd_off=5000)), 'open', 'TD_EFORMAT', "
    "'runs past its end record')\n"
    "badf('bad_cd_sig.zip', build([mem(0, 10)], eocd=dict(cd_off=1)), 'open', 'TD_EFORMAT', "
    "'signature')\n"
    "d = content(7, 300)\n"
    "good_desc = struct.pack('<IIII', 0x08074b50, zlib.crc32(d), len(deflate(d)), len(d))\n"
    "bad_desc = struct.pack('<IIII', 0x08074b50, zlib.crc32(d) ^ 1, len(deflate(d)), len(d))\n"
    "badf('bad_descriptor.zip', build([mem(7, 300, 8, flags=8, lcrc=0, l32=(0, 0), "
    "desc=bad_desc)]), 'open', 'TD_EFORMAT', 'data descriptor')\n"
    "badf('bad_descriptor_missing.zip', build([mem(7, 300, 8, flags=8, lcrc=0, l32=(0, 0))]), "
    "'open', 'TD_EFORMAT', 'data descriptor')\n"
    "badf('bad_localname.zip', build([mem(0, 10, lname=b'm9.bin')]), 'open', 'TD_EFORMAT', 'names "
    "another file')\n"
    "badf('bad_localmethod.zip', build([mem(0, 10, 8, lmethod=0)]), 'open', 'TD_EFORMAT', 'local "
    "header says method')\n"
    "badf('bad_localcrc.zip', build([mem(0, 10, lcrc=1)]), 'open', 'TD_EFORMAT', 'contradicts the "
    "central directory')\n"
    "badf('bad_localsize.zip', build([mem(0, 10, l32=(10, 11))]), 'open', 'TD_EFORMAT', "
    "'contradicts the central directory')\n"
    "badf('bad_extra.zip', build([mem(0, 10, cextra=struct.pack('<HH', 0x7777, 40) + b'abc')]), "
    "'open', 'TD_EFORMAT', 'extra field 0x7777')\n"
    "badf('bad_lextra.zip', build([mem(0, 10, lextra=struct.pack('<HH', 0x7777, 40))]), 'open', "
    "'TD_EFORMAT', 'extra field 0x7777')\n"
    "badf('bad_z64short.zip', build([mem(0, 10, cextra=struct.pack('<HHQ', 1, 8, 10), "
    "csize=0xFFFFFFFF, usize=0xFFFFFFFF, l32=(10, 10))]),\n"
    "     'open', 'TD_EFORMAT', 'lacks it')\n"
    "badf('bad_stored_sizes.zip', build([mem(0, 10, usize=11, l32=(10, 11))]), 'open', "
    "'TD_EFORMAT', 'sizes differ')\n"
    "badf('bad_data_past.zip', build([mem(0, 10, csize=10000, usize=10000, l32=(10000, 10000))]), "
    "'open', 'TD_EFORMAT', 'run past the start')\n"
    "ms = [mem(0, 100)]\n"
    "badf('bad_z64loc.zip', build(ms, z64eocd=True, z64=dict(loc_off=3)), 'open', 'TD_EFORMAT', "
    "'no zip64 end record')\n"
    "badf('bad_z64loc_far.zip', build(ms, z64eocd=True, z64=dict(loc_off=1 << 40)), 'open', "
    "'TD_EFORMAT', 'zip64 end record offset')\n"
    "badf('bad_z64count.zip', build(ms, z64eocd=True, z64=dict(n=1 << 40, n_disk=1 << 40)), "
    "'open', 'TD_EFORMAT', 'holds at most')\n"
    "badf('bad_z64size.zip', build(ms, z64eocd=True, z64=dict(size=1 << 50)), 'open', "
    "'TD_EFORMAT', 'zip64 end record at')\n"
    "badf('bad_z64disk.zip', build(ms, z64eocd=True, z64=dict(loc_disks=3)), 'open', 'TD_ENOTSUP', "
    "'multi-disk')\n"
    "badf('bad_z64contra.zip', build(ms, z64eocd=True, eocd=dict(n=2, n_disk=2)), 'open', "
    "'TD_EFORMAT', 'contradicts the zip64')\n"
    "badf('bad_noeocd.zip', b'PK\\x03\\x04' + bytes(100), 'open', 'TD_EFORMAT', 'no end of central "
    "directory')\n"
    "badf('bad_tiny.zip', b'PK\\x05\\x06', 'open', 'TD_ETRUNC', 'too short')\n"
    "badf('bad_comment_len.zip', build([mem(0, 10)], comment=b'abc')[:-1], 'open', 'TD_EFORMAT', "
    "'no end of central directory')\n"
    "bad.close()\n";

static char g_dir[64];

static void suite_setup(void)
{
    tu_tmpdir(g_dir);
    const char *args[] = {g_dir, NULL};
    ck_assert_int_eq(tu_python(gen_py, args), 0);
}

static void suite_teardown(void)
{
    tu_rmtree(g_dir);
}

static uint8_t content_byte(unsigned i, size_t j)
{
    return (uint8_t)((i * 7u + j * 13u) % 251u);
}

static uint8_t *content(unsigned i, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    for (size_t j = 0; j < n; j++)
        p[j] = content_byte(i, j);
    return p;
}

static uint8_t *load(const char *name, size_t *len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    uint8_t *p = tu_read_file(path, len);
    ck_assert_msg(p != NULL, "cannot read %s", path);
    return p;
}

/* Checks every member's bytes (stored: in place; deflated: td__zip_inflate) and td__zip_verify. */
static void check_members_content(const uint8_t *base, size_t len, const td__zip_archive *z)
{
    for (size_t i = 0; i < z->n; i++) {
        const td__zip_member *m = &z->members[i];
        ck_assert(m->data_offset + m->csize <= len);
        ck_assert(m->end_offset <= z->cd_offset);
        uint8_t *buf = malloc(m->usize ? m->usize : 1);
        uint32_t crc = 0;
        td_error err = {0};
        if (m->method == ZIP_METHOD_STORED) {
            memcpy(buf, base + m->data_offset, m->usize);
            crc = td__zip_crc32(0, buf, m->usize);
        } else {
            TU_OK(
                td__zip_inflate(base + m->data_offset, m->csize, 0, buf, m->usize, &crc, "t", &err),
                &err);
            /* the whole-buffer path (libdeflate when built with it) agrees */
            uint8_t *buf2 = malloc(m->usize ? m->usize : 1);
            uint32_t crc2 = 0;
            TU_OK(td__zip_inflate_whole(base + m->data_offset, m->csize, buf2, m->usize, &crc2, "t",
                                        &err),
                  &err);
            ck_assert_uint_eq(crc2, crc);
            ck_assert(memcmp(buf, buf2, m->usize) == 0);
            free(buf2);
        }
        ck_assert_uint_eq(crc, m->crc32);
        free(buf);
    }
}

START_TEST(test_good_archives)
{
    char path[256];
    snprintf(path, sizeof path, "%s/good.txt", g_dir);
    FILE *f = fopen(path, "r");
    ck_assert(f != NULL);
    char fn[128];
    size_t count;
    int files = 0;
    while (fscanf(f, "%127s %zu", fn, &count) == 2) {
        size_t len;
        uint8_t *base = load(fn, &len);
        td__zip_archive z;
        td_error err = {0};
        int rc = td__zip_open(TD__RD_MEM(base, len, fn), &z, &err);
        ck_assert_msg(rc == 0, "%s: %s", fn, err.message);
        ck_assert_msg(z.n == count, "%s: %zu members, expected %zu", fn, z.n, count);
        for (size_t i = 0; i < count; i++) {
            char name[128];
            unsigned idx, method;
            size_t size;
            ck_assert_int_eq(fscanf(f, "%127s %u %zu %u", name, &idx, &size, &method), 4);
            const td__zip_member *m = &z.members[i];
            ck_assert_msg(m->name_len == strlen(name) && memcmp(m->name, name, m->name_len) == 0,
                          "%s: member %zu is '%.*s', expected '%s'", fn, i, (int)m->name_len,
                          m->name, name);
            ck_assert_uint_eq(m->usize, size);
            ck_assert_uint_eq(m->method, method);
            uint8_t *want = content(idx, size);
            uint8_t *got = malloc(size ? size : 1);
            uint32_t crc = 0;
            if (method == ZIP_METHOD_STORED) {
                ck_assert_uint_eq(m->csize, size);
                memcpy(got, base + m->data_offset, size);
            } else {
                TU_OK(td__zip_inflate(base + m->data_offset, m->csize, 0, got, size, &crc, name,
                                      &err),
                      &err);
                ck_assert_uint_eq(crc, m->crc32);
                /* and with a skip: the first bytes are dropped, the CRC still covers them */
                if (size > 10) {
                    uint32_t crc2 = 0;
                    TU_OK(td__zip_inflate(base + m->data_offset, m->csize, 10, got + 10, size - 10,
                                          &crc2, name, &err),
                          &err);
                    ck_assert_uint_eq(crc2, m->crc32);
                }
            }
            ck_assert_msg(memcmp(got, want, size) == 0, "%s: %s content differs", fn, name);
            free(got);
            free(want);
        }
        TU_OK(td__zip_verify(base, len, fn, &err), &err);
        if (strcmp(fn, "py_many.zip") == 0 || strcmp(fn, "craft_z64.zip") == 0)
            ck_assert_msg(z.zip64, "%s should have zip64 end records", fn);
        td__zip_close(&z);
        free(base);
        files++;
    }
    fclose(f);
    ck_assert_int_ge(files, 16);
}
END_TEST

START_TEST(test_bad_archives)
{
    char path[256];
    snprintf(path, sizeof path, "%s/bad.txt", g_dir);
    FILE *f = fopen(path, "r");
    ck_assert(f != NULL);
    char line[512];
    int files = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *fn = strtok(line, "\t"), *stage = strtok(NULL, "\t"), *code = strtok(NULL, "\t"),
             *sub = strtok(NULL, "\t");
        ck_assert(fn && stage && code && sub);
        size_t len;
        uint8_t *base = load(fn, &len);
        td__zip_archive z;
        td_error err = {0};
        int rc = td__zip_open(TD__RD_MEM(base, len, fn), &z, &err);
        if (strcmp(stage, "verify") == 0) {
            ck_assert_msg(rc == 0, "%s: open failed: %s", fn, err.message);
            /* inflating alone must fail too, except for a bad CRC, which only the CRC shows */
            for (size_t i = 0; i < z.n; i++) {
                const td__zip_member *m = &z.members[i];
                if (m->method != ZIP_METHOD_DEFLATE)
                    continue;
                uint8_t *buf = malloc(m->usize ? m->usize : 1);
                uint32_t crc;
                td_error e2 = {0};
                int r2 = td__zip_inflate(base + m->data_offset, m->csize, 0, buf, m->usize, &crc,
                                         fn, &e2);
                if (strcmp(code, "TD_ECHECKSUM") == 0)
                    ck_assert(r2 == 0 && crc != m->crc32);
                else
                    ck_assert_msg(r2 != 0, "%s: inflate passed", fn);
                /* the whole-buffer path fails the same way, with the same message */
                td_error e3 = {0};
                uint32_t crc3;
                int r3 = td__zip_inflate_whole(base + m->data_offset, m->csize, buf, m->usize,
                                               &crc3, fn, &e3);
                ck_assert_int_eq(r3, r2);
                ck_assert_str_eq(e3.message, e2.message);
                if (r2 == 0)
                    ck_assert_uint_eq(crc3, crc);
                free(buf);
            }
            td__zip_close(&z);
            rc = td__zip_verify(base, len, fn, &err);
        } else if (rc == 0) {
            td__zip_close(&z);
        }
        ck_assert_msg(rc != 0, "%s: accepted", fn);
        ck_assert_msg(strcmp(td_err_name(rc), code) == 0, "%s: %s (%s), expected %s", fn,
                      td_err_name(rc), err.message, code);
        ck_assert_msg(strstr(err.message, sub) != NULL, "%s: message '%s' lacks '%s'", fn,
                      err.message, sub);
        ck_assert_msg(strstr(err.message, fn) != NULL, "%s: message '%s' lacks the file name", fn,
                      err.message);
        free(base);
        files++;
    }
    fclose(f);
    ck_assert_int_ge(files, 49);
}
END_TEST

/* Small good archives for the exhaustive tests. */
static const char *small_files[] = {"py_stored_s.zip",   "py_deflated_s.zip",    "py_force64_s.zip",
                                    "py_stream_s.zip",   "py_stream64_s.zip",    "craft_z64.zip",
                                    "craft_local64.zip", "craft_desc_nosig.zip", "py_empty.zip"};

/* Opens p[0..n) from an exact-size heap copy, so that ASan sees any read past the end. */
static int open_exact(const uint8_t *p, size_t n, td__zip_archive *z, td_error *err)
{
    uint8_t *c = malloc(n ? n : 1);
    memcpy(c, p, n);
    int rc = td__zip_open(TD__RD_MEM(c, n, "cut.zip"), z, err);
    if (rc == 0) {
        check_members_content(c, n, z);
        td__zip_close(z);
    }
    free(c);
    return rc;
}

START_TEST(test_truncation_everywhere)
{
    for (size_t k = 0; k < sizeof small_files / sizeof small_files[0]; k++) {
        size_t len;
        uint8_t *base = load(small_files[k], &len);
        td__zip_archive z;
        td_error err = {0};
        /* Every prefix (sampled inside the one long member's data): the end record is gone
         * or cut. */
        for (size_t n = 0; n < len; n++) {
            err.message[0] = '\0';
            ck_assert_msg(open_exact(base, n, &z, &err) != 0, "%s cut at %zu accepted",
                          small_files[k], n);
            ck_assert(err.message[0] != '\0');
        }
        /* The end records kept, everything from position c up to them dropped: central
         * directory entries, local headers and data cut at every byte. (None of these
         * files has a comment, so the end record is the last 22 bytes.) */
        size_t keep = 22;
        if (len >= 42 && memcmp(base + len - 42, "PK\x06\x07", 4) == 0)
            keep = len - (size_t)td__le64(base + len - 42 + 8);
        uint8_t *buf = malloc(len);
        for (size_t c = 0; c + keep < len; c++) {
            memcpy(buf, base, c);
            memcpy(buf + c, base + len - keep, keep);
            ck_assert_msg(open_exact(buf, c + keep, &z, &err) != 0,
                          "%s: cut at %zu with end records kept: accepted", small_files[k], c);
        }
        free(buf);
        free(base);
    }
}
END_TEST

START_TEST(test_corruption_everywhere)
{
    static const uint8_t flips[] = {0x01, 0x80, 0xff};
    long opened = 0, refused = 0;
    for (size_t k = 0; k < sizeof small_files / sizeof small_files[0]; k++) {
        size_t len;
        uint8_t *base = load(small_files[k], &len);
        /* Headers, descriptors and the directory are corrupted at every byte; member data
         * (which td__zip_open never reads) only near its ends. */
        td__zip_archive z;
        td_error err = {0};
        TU_OK(td__zip_open(TD__RD_MEM(base, len, small_files[k]), &z, &err), &err);
        uint8_t *in_data = calloc(len, 1);
        for (size_t i = 0; i < z.n; i++)
            for (uint64_t b = z.members[i].data_offset;
                 b < z.members[i].data_offset + z.members[i].csize; b++)
                in_data[b] = b - z.members[i].data_offset >= 16 &&
                             z.members[i].data_offset + z.members[i].csize - b > 16;
        td__zip_close(&z);
        for (size_t pos = 0; pos < len; pos++) {
            if (in_data[pos])
                continue;
            for (size_t f = 0; f < sizeof flips; f++) {
                uint8_t *c = malloc(len);
                memcpy(c, base, len);
                c[pos] ^= flips[f];
                int rc = td__zip_open(TD__RD_MEM(c, len, "mut.zip"), &z, &err);
                if (rc == 0) {
                    opened++;
                    for (size_t i = 0; i < z.n; i++) {
                        ck_assert(z.members[i].data_offset <= len);
                        ck_assert(z.members[i].csize <= len - z.members[i].data_offset);
                        ck_assert(z.members[i].end_offset <= z.cd_offset);
                    }
                    td__zip_close(&z);
                    td__zip_verify(c, len, "mut.zip", &err); /* may pass or fail; must not crash */
                } else {
                    refused++;
                    ck_assert(err.message[0] != '\0');
                }
                free(c);
            }
        }
        free(in_data);
        free(base);
    }
    ck_assert_int_gt(refused, 1000);
    printf("corruption: %ld mutated archives refused, %ld opened\n", refused, opened);
}
END_TEST

/* Writer ---------------------------------------------------------------------------------- */

typedef struct wmember {
    const char *name;
    unsigned idx;
    size_t size;
    unsigned method;
    uint64_t align_at; /* stored: data byte that must be 64-aligned */
} wmember;

/* Writes members with td__zip_writer into a memory writer, piece by piece (uneven pieces). */
static uint8_t *write_zip(const wmember *ms, size_t n, int force64, size_t *len)
{
    td__writer w;
    td_error err = {0};
    TU_OK(td__writer_init(&w, -1, "mem.zip", &err), &err);
    td__zip_writer zw;
    td__zip_writer_init(&zw, &w, "mem.zip");
    zw.force_zip64 = force64;
    for (size_t i = 0; i < n; i++) {
        uint8_t *d = content(ms[i].idx, ms[i].size);
        TU_OK(td__zip_writer_begin(&zw, ms[i].name, ms[i].method, -1, ms[i].size, 64,
                                   ms[i].align_at, &err),
              &err);
        size_t off = 0, piece = 1;
        while (off < ms[i].size) {
            size_t k = ms[i].size - off < piece ? ms[i].size - off : piece;
            /* the last piece through td__zip_writer_data_last: with libdeflate, a deflated member
             * is then zlib blocks (flushed) followed by libdeflate blocks */
            if (off + k == ms[i].size)
                TU_OK(td__zip_writer_data_last(&zw, d + off, k, &err), &err);
            else
                TU_OK(td__zip_writer_data(&zw, d + off, k, &err), &err);
            off += k;
            piece = piece * 3 + 1;
        }
        TU_OK(td__zip_writer_end(&zw, &err), &err);
        free(d);
    }
    TU_OK(td__zip_writer_finish(&zw, &err), &err);
    td__zip_writer_destroy(&zw);
    uint8_t *p = td__writer_take(&w, len);
    td__writer_destroy(&w);
    return p;
}

static const char *check_py =
    "import sys, zipfile\n"
    "path = sys.argv[1]\n"
    "spec = [s.split(':') for s in sys.argv[2:]]\n"
    "z = zipfile.ZipFile(path)\n"
    "assert z.testzip() is None\n"
    "infos = z.infolist()\n"
    "assert len(infos) == len(spec), (len(infos), len(spec))\n"
    "raw = open(path, 'rb').read()\n"
    "import struct\n"
    "for zi, (name, idx, size, method, at) in zip(infos, spec):\n"
    "    idx, size, method, at = int(idx), int(size), int(method), int(at)\n"
    "    assert zi.filename == name, (zi.filename, name)\n"
    "    assert zi.compress_type == method\n"
    "    data = z.read(zi)\n"
    "    want = bytes((idx * 7 + j * 13) % 251 for j in range(size))\n"
    "    assert data == want, name\n"
    "    nl, xl = struct.unpack('<HH', raw[zi.header_offset + 26:zi.header_offset + 30])\n"
    "    start = zi.header_offset + 30 + nl + xl\n"
    "    if method == 0 and at >= 0:\n"
    "        assert (start + at) % 64 == 0, (name, start, at)\n";

/* Checks a written archive with our reader, Python's zipfile and Info-ZIP's unzip. */
static void check_written(const uint8_t *p, size_t len, const wmember *ms, size_t n)
{
    td__zip_archive z;
    td_error err = {0};
    TU_OK(td__zip_open(TD__RD_MEM(p, len, "mem.zip"), &z, &err), &err);
    ck_assert_uint_eq(z.n, n);
    for (size_t i = 0; i < n; i++) {
        const td__zip_member *m = &z.members[i];
        ck_assert(m->name_len == strlen(ms[i].name) && !memcmp(m->name, ms[i].name, m->name_len));
        ck_assert_uint_eq(m->usize, ms[i].size);
        ck_assert_uint_eq(m->method, ms[i].method);
        if (ms[i].method == ZIP_METHOD_STORED)
            ck_assert_msg((m->data_offset + ms[i].align_at) % 64 == 0,
                          "%s: data at %llu, +%llu not aligned", ms[i].name,
                          (unsigned long long)m->data_offset, (unsigned long long)ms[i].align_at);
    }
    check_members_content(p, len, &z);
    td__zip_close(&z);
    TU_OK(td__zip_verify(p, len, "mem.zip", &err), &err);

    char dir[64], path[128];
    tu_tmpdir(dir);
    snprintf(path, sizeof path, "%s/w.zip", dir);
    ck_assert_int_eq(tu_write_file(path, p, len), 0);
    const char **args = calloc(n + 2, sizeof *args);
    char(*specs)[160] = calloc(n + 1, sizeof *specs);
    args[0] = path;
    for (size_t i = 0; i < n; i++) {
        snprintf(specs[i], sizeof specs[i], "%s:%u:%zu:%u:%lld", ms[i].name, ms[i].idx, ms[i].size,
                 ms[i].method, (long long)ms[i].align_at);
        args[i + 1] = specs[i];
    }
    ck_assert_msg(tu_python(check_py, args) == 0, "Python's zipfile disagrees with %s", path);
    ck_assert_msg(access("/usr/bin/unzip", X_OK) == 0,
                  "/usr/bin/unzip is missing: apt-get install unzip (scripts/install-deps.sh)");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "/usr/bin/unzip -tqq %s >/dev/null 2>&1", path);
    ck_assert_msg(system(cmd) == 0, "unzip -t refuses %s", path);
    free(args);
    free(specs);
    tu_rmtree(dir);
}

START_TEST(test_writer_roundtrip)
{
    const wmember ms[] = {
        {"a.npy", 1, 1000, ZIP_METHOD_STORED, 128},
        {"b.npy", 2, 0, ZIP_METHOD_STORED, 0},
        {"dir/c.npy", 3, 100000, ZIP_METHOD_DEFLATE, 0},
        {"d.npy", 4, 7, ZIP_METHOD_STORED, 3},
        {"e.npy", 5, 0, ZIP_METHOD_DEFLATE, 0},
        {"f\xc3\xa9.npy", 6, 333, ZIP_METHOD_STORED, 64},
        {"g.npy", 7, 65536, ZIP_METHOD_STORED, 1},
    };
    size_t n = sizeof ms / sizeof ms[0];
    for (int force = 0; force <= 1; force++) {
        size_t len;
        uint8_t *p = write_zip(ms, n, force, &len);
        check_written(p, len, ms, n);
        td__zip_archive z;
        td_error err = {0};
        TU_OK(td__zip_open(TD__RD_MEM(p, len, "mem.zip"), &z, &err), &err);
        ck_assert_int_eq(z.zip64, force);
        td__zip_close(&z);
        /* Saving the same members twice gives the same bytes (fixed timestamps). */
        size_t len2;
        uint8_t *p2 = write_zip(ms, n, force, &len2);
        ck_assert(len == len2 && memcmp(p, p2, len) == 0);
        free(p2);
        free(p);
    }
}
END_TEST

START_TEST(test_writer_alignment_every_offset)
{
    /* A first member of every size from 0 to 130 moves the second member's header through
     * every residue mod 64; the second member's data must land aligned each time. */
    for (size_t s = 0; s <= 130; s++) {
        const wmember ms[] = {
            {"pad.bin", 1, s, ZIP_METHOD_STORED, 0},
            {"x.npy", 2, 200, ZIP_METHOD_STORED, 128},
        };
        size_t len;
        uint8_t *p = write_zip(ms, 2, 0, &len);
        td__zip_archive z;
        td_error err = {0};
        TU_OK(td__zip_open(TD__RD_MEM(p, len, "mem.zip"), &z, &err), &err);
        ck_assert_uint_eq((z.members[0].data_offset) % 64, 0);
        ck_assert_uint_eq((z.members[1].data_offset + 128) % 64, 0);
        check_members_content(p, len, &z);
        td__zip_close(&z);
        free(p);
    }
    /* and once through the outside readers */
    const wmember ms[] = {{"pad.bin", 1, 3, ZIP_METHOD_STORED, 0},
                          {"x.npy", 2, 200, ZIP_METHOD_STORED, 128}};
    size_t len;
    uint8_t *p = write_zip(ms, 2, 0, &len);
    check_written(p, len, ms, 2);
    free(p);
}
END_TEST

START_TEST(test_writer_many_members)
{
    /* 70000 members: more than a classic end record can count, so zip64 end records. */
    size_t n = 70000;
    wmember *ms = calloc(n, sizeof *ms);
    char(*names)[16] = calloc(n, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "m%zu", i);
        ms[i] = (wmember){names[i], (unsigned)i, i % 3, i % 2 ? ZIP_METHOD_DEFLATE : 0, 0};
    }
    size_t len;
    uint8_t *p = write_zip(ms, n, 0, &len);
    td__zip_archive z;
    td_error err = {0};
    TU_OK(td__zip_open(TD__RD_MEM(p, len, "mem.zip"), &z, &err), &err);
    ck_assert_uint_eq(z.n, n);
    ck_assert_int_eq(z.zip64, 1);
    check_members_content(p, len, &z);
    td__zip_close(&z);
    char dir[64], path[128];
    tu_tmpdir(dir);
    snprintf(path, sizeof path, "%s/many.zip", dir);
    ck_assert_int_eq(tu_write_file(path, p, len), 0);
    const char *args[] = {path, NULL};
    ck_assert_int_eq(tu_python("import sys, zipfile\n"
                               "z = zipfile.ZipFile(sys.argv[1])\n"
                               "assert len(z.infolist()) == 70000\n"
                               "assert z.read('m69997') == bytes(((69997*7) % 251,))\n"
                               "assert z.testzip() is None\n",
                               args),
                     0);
    tu_rmtree(dir);
    free(p);
    free(names);
    free(ms);
}
END_TEST

START_TEST(test_writer_misuse)
{
    td__writer w;
    td_error err = {0};
    TU_OK(td__writer_init(&w, -1, "mem.zip", &err), &err);
    td__zip_writer zw;
    td__zip_writer_init(&zw, &w, "mem.zip");
    static const char *bad_names[] = {"", "../x.npy", "a/../../x", "/abs.npy", "a\\b.npy", ".."};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++)
        ck_assert_int_eq(td__zip_writer_begin(&zw, bad_names[i], 0, -1, 1, 64, 0, &err),
                         TD_EFORMAT);
    ck_assert_int_eq(td__zip_writer_begin(&zw, "ok", 12, -1, 1, 64, 0, &err), TD_EINVAL);
    ck_assert_int_eq(td__zip_writer_begin(&zw, "ok", 0, -1, 1, 48, 0, &err), TD_EINVAL);
    ck_assert_int_eq(td__zip_writer_data(&zw, "x", 1, &err), TD_EINVAL);
    TU_OK(td__zip_writer_begin(&zw, "ok", 8, -1, 3, 64, 0, &err), &err);
    ck_assert_int_eq(td__zip_writer_begin(&zw, "again", 8, -1, 3, 64, 0, &err), TD_EINVAL);
    ck_assert_int_eq(td__zip_writer_data(&zw, "abcd", 4, &err), TD_EINVAL); /* more than declared */
    TU_OK(td__zip_writer_data(&zw, "ab", 2, &err), &err);
    ck_assert_int_eq(td__zip_writer_end(&zw, &err), TD_EINVAL); /* fewer than declared */
    ck_assert_int_eq(td__zip_writer_finish(&zw, &err), TD_EINVAL);
    td__zip_writer_destroy(&zw); /* mid-member, with zlib state: must not leak (ASan) */
    td__writer_destroy(&w);
}
END_TEST

START_TEST(test_writer_fd)
{
    /* Through a real file descriptor: the local headers are patched with pwrite. */
    int fds = tu_count_fds();
    char dir[64], path[128];
    tu_tmpdir(dir);
    snprintf(path, sizeof path, "%s/fd.zip", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    td__writer w;
    td_error err = {0};
    TU_OK(td__writer_init(&w, fd, path, &err), &err);
    td__zip_writer zw;
    td__zip_writer_init(&zw, &w, path);
    const wmember ms[] = {{"a.npy", 1, 3000000, ZIP_METHOD_STORED, 128},
                          {"b.npy", 2, 2000000, ZIP_METHOD_DEFLATE, 0}};
    for (size_t i = 0; i < 2; i++) {
        uint8_t *d = content(ms[i].idx, ms[i].size);
        TU_OK(td__zip_writer_begin(&zw, ms[i].name, ms[i].method, -1, ms[i].size, 64,
                                   ms[i].align_at, &err),
              &err);
        TU_OK(td__zip_writer_data(&zw, d, ms[i].size, &err), &err);
        TU_OK(td__zip_writer_end(&zw, &err), &err);
        free(d);
    }
    TU_OK(td__zip_writer_finish(&zw, &err), &err);
    TU_OK(td__writer_flush(&w), &err);
    td__zip_writer_destroy(&zw);
    td__writer_destroy(&w);
    close(fd);
    size_t len;
    uint8_t *p = tu_read_file(path, &len);
    check_written(p, len, ms, 2);
    free(p);
    tu_rmtree(dir);
    ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(test_inflate_prefix)
{
    size_t len;
    uint8_t *base = load("py_deflated.zip", &len);
    td__zip_archive z;
    td_error err = {0};
    TU_OK(td__zip_open(TD__RD_MEM(base, len, "py_deflated.zip"), &z, &err), &err);
    const td__zip_member *m = &z.members[3]; /* 70000 bytes */
    ck_assert_uint_eq(m->usize, 70000);
    uint8_t buf[100];
    size_t got;
    TU_OK(td__zip_inflate_prefix(base + m->data_offset, m->csize, buf, 37, &got, "p", &err), &err);
    ck_assert_uint_eq(got, 37);
    for (size_t j = 0; j < 37; j++)
        ck_assert_uint_eq(buf[j], content_byte(3, j));
    /* a stream shorter than the cap ends early */
    m = &z.members[1]; /* 1 byte */
    TU_OK(td__zip_inflate_prefix(base + m->data_offset, m->csize, buf, 100, &got, "p", &err), &err);
    ck_assert_uint_eq(got, 1);
    /* a cut stream is refused */
    m = &z.members[3];
    ck_assert_int_eq(td__zip_inflate_prefix(base + m->data_offset, 3, buf, 100, &got, "p", &err),
                     TD_ETRUNC);
    td__zip_close(&z);
    free(base);
}
END_TEST

/* More than 4 GiB: a member whose size and a member whose offset need zip64, through a real
 * file. Writes about 4.3 GB into $TMPDIR: its own ctest test, test_zip_huge (label `slow`). */
START_TEST(test_writer_huge)
{
    char dir[64], path[128];
    tu_tmpdir(dir);
    struct statvfs vfs;
    ck_assert_int_eq(statvfs(dir, &vfs), 0);
    ck_assert_msg((uint64_t)vfs.f_bavail * vfs.f_frsize > (4ull << 30) + (256u << 20),
                  "test_writer_huge needs 4.4 GB free in %s (TMPDIR), it has %llu MB", dir,
                  (unsigned long long)((uint64_t)vfs.f_bavail * vfs.f_frsize >> 20));
    snprintf(path, sizeof path, "%s/huge.zip", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    td__writer w;
    td_error err = {0};
    TU_OK(td__writer_init(&w, fd, path, &err), &err);
    td__zip_writer zw;
    td__zip_writer_init(&zw, &w, path);
    uint64_t big = (4ull << 30) + 4096;
    size_t chunk = 64u << 20;
    uint8_t *d = content(9, chunk);
    TU_OK(td__zip_writer_begin(&zw, "big.bin", ZIP_METHOD_STORED, -1, big, 64, 0, &err), &err);
    for (uint64_t off = 0; off < big; off += chunk) {
        size_t k = big - off < chunk ? (size_t)(big - off) : chunk;
        TU_OK(td__zip_writer_data(&zw, d, k, &err), &err);
    }
    TU_OK(td__zip_writer_end(&zw, &err), &err);
    uint8_t *small = content(3, 1000);
    TU_OK(td__zip_writer_begin(&zw, "after.bin", ZIP_METHOD_DEFLATE, -1, 1000, 64, 0, &err), &err);
    TU_OK(td__zip_writer_data(&zw, small, 1000, &err), &err);
    TU_OK(td__zip_writer_end(&zw, &err), &err);
    TU_OK(td__zip_writer_finish(&zw, &err), &err);
    TU_OK(td__writer_flush(&w), &err);
    td__zip_writer_destroy(&zw);
    td__writer_destroy(&w);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    uint8_t *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    ck_assert(base != MAP_FAILED);
    td__zip_archive z;
    TU_OK(td__zip_open(TD__RD_MEM(base, (size_t)st.st_size, path), &z, &err), &err);
    ck_assert_uint_eq(z.n, 2);
    ck_assert_uint_eq(z.members[0].usize, big);
    ck_assert_uint_gt(z.members[1].local_offset, 0xffffffffull);
    ck_assert_int_eq(z.zip64, 1);
    td__zip_close(&z);
    TU_OK(td__zip_verify(base, (size_t)st.st_size, path, &err), &err);
    munmap(base, (size_t)st.st_size);
    close(fd);
    const char *args[] = {path, NULL};
    ck_assert_int_eq(
        tu_python("import sys, zipfile, zlib\n"
                  "z = zipfile.ZipFile(sys.argv[1])\n"
                  "a, b = z.infolist()\n"
                  "assert a.file_size == (4 << 30) + 4096 and b.header_offset > 2**32\n"
                  "assert z.read('after.bin') == bytes((3*7 + j*13) % 251 for j in "
                  "range(1000))\n"
                  "c = 0\n"
                  "with z.open(a) as f:\n"
                  "    while True:\n"
                  "        blk = f.read(1 << 26)\n"
                  "        if not blk: break\n"
                  "        c = zlib.crc32(blk, c)\n"
                  "assert c == a.CRC\n",
                  args),
        0);
    free(small);
    free(d);
    tu_rmtree(dir);
}
END_TEST

static Suite *zip_suite(void)
{
    Suite *s = suite_create("zip");
    TCase *tc = tcase_create("zip");
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_good_archives);
    tcase_add_test(tc, test_bad_archives);
    tcase_add_test(tc, test_truncation_everywhere);
    tcase_add_test(tc, test_corruption_everywhere);
    tcase_add_test(tc, test_writer_roundtrip);
    tcase_add_test(tc, test_writer_alignment_every_offset);
    tcase_add_test(tc, test_writer_many_members);
    tcase_add_test(tc, test_writer_misuse);
    tcase_add_test(tc, test_writer_fd);
    tcase_add_test(tc, test_inflate_prefix);
    suite_add_tcase(s, tc);
    /* the 4.3 GB archive: tag `huge`, run by ctest as test_zip_huge */
    TCase *huge = tcase_create("huge");
    tcase_set_tags(huge, "huge");
    tcase_set_timeout(huge, 600);
    tcase_add_test(huge, test_writer_huge);
    suite_add_tcase(s, huge);
    return s;
}

int main(void)
{
    printf("deflate engine: %s\n", td__zip_deflate_engine());
    SRunner *sr = srunner_create(zip_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
