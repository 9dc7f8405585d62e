/*
 * bench_sys - what this machine charges for the primitives the other figures are made of:
 * a system call, a first touch of a fresh anonymous page, and a memcpy.
 *
 *   bench_sys
 *
 * On bare metal a null system call costs well under a microsecond and a page fault on fresh
 * memory about a quarter of one; in some virtual machines both are ten to a hundred times
 * dearer, which moves every figure that makes system calls (the daemon) or allocates (the
 * copying loaders). BENCHMARKS.md quotes these so that the other numbers can be read.
 */
#include "bench_util.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FAULT_BYTES (64u << 20)

int main(void)
{
    /* Null system call: getppid through syscall(2), so libc cannot cache it. */
    double sc[7];
    for (int r = 0; r < 7; r++) {
        const int n = 20000;
        uint64_t t0 = bu_now_ns();
        for (int i = 0; i < n; i++)
            syscall(SYS_getppid);
        sc[r] = (double)(bu_now_ns() - t0) / n / 1e3;
    }
    /* First touch of fresh anonymous 4 KiB pages (THP off for this mapping), then memcpy
     * between two such buffers once they are resident. */
    double fault[5], copy[5];
    uint8_t *src =
        mmap(NULL, FAULT_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (src == MAP_FAILED)
        bu_die("mmap failed");
    memset(src, 1, FAULT_BYTES);
    for (int r = 0; r < 5; r++) {
        uint8_t *p =
            mmap(NULL, FAULT_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            bu_die("mmap failed");
        madvise(p, FAULT_BYTES, MADV_NOHUGEPAGE);
        uint64_t t0 = bu_now_ns();
        for (size_t i = 0; i < FAULT_BYTES; i += 4096)
            ((volatile uint8_t *)p)[i] = 1;
        fault[r] = (double)(bu_now_ns() - t0) / (FAULT_BYTES / 4096) / 1e3;
        t0 = bu_now_ns();
        memcpy(p, src, FAULT_BYTES);
        copy[r] = (double)FAULT_BYTES / ((double)(bu_now_ns() - t0) / 1e9) / 1e9;
        if (p[FAULT_BYTES / 2] != 1)
            bu_die("memcpy check");
        munmap(p, FAULT_BYTES);
    }
    munmap(src, FAULT_BYTES);
    printf("RESULT bench=sys syscall_us=%.3f fault_us=%.3f memcpy_gb_s=%.2f status=ok\n",
           bu_quantile(sc, 7, 0.5), bu_quantile(fault, 5, 0.5), bu_quantile(copy, 5, 0.5));
    return 0;
}
