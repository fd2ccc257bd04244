#!/usr/bin/env python3
"""page_folios.py FILE: how the page cache holds FILE (needs root).

Maps FILE, touches every page, then looks each page's frame up in
/proc/kpageflags: pages of large folios are compound heads/tails. Used by
fs_bench.sh to show why a warm read through FUSE trails ext4 (4 KiB folios
versus large folios on the same kernel)."""
import mmap
import os
import struct
import sys

KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL = 15, 16


def main(path):
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    pages = (size + 4095) // 4096
    m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    for i in range(pages):
        m[i * 4096]  # fault the page in (from the page cache)
    start = None
    real = os.path.realpath(path)
    with open('/proc/self/maps') as maps:
        for line in maps:
            if line.rstrip().endswith(real):
                start = int(line.split('-')[0], 16)
                break
    if start is None:
        sys.exit(f'page_folios.py: mapping of {path} not found')
    large = small = absent = 0
    with open('/proc/self/pagemap', 'rb') as pm, open('/proc/kpageflags', 'rb') as kf:
        for i in range(pages):
            pm.seek((start // 4096 + i) * 8)
            entry = struct.unpack('Q', pm.read(8))[0]
            if not entry >> 63 & 1:
                absent += 1
                continue
            kf.seek((entry & ((1 << 55) - 1)) * 8)
            flags = struct.unpack('Q', kf.read(8))[0]
            if flags >> KPF_COMPOUND_HEAD & 1 or flags >> KPF_COMPOUND_TAIL & 1:
                large += 1
            else:
                small += 1
    print(f'{pages} pages: {large} in large folios, {small} in 4 KiB folios, {absent} not mapped')


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit('usage: page_folios.py FILE')
    main(sys.argv[1])
