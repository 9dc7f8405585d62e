/*
 * bench_adapters - many small models: worker processes that load and drop small safetensors
 * files (LoRA adapters) at random, as a server that hot-swaps adapters per request does, in
 * embedded mode against the daemon.
 *
 *   bench_adapters --dir DIR --generate [--count N] [--tensors N] [--bytes SIZE]
 *   bench_adapters --dir DIR --mode embedded|daemon|client [--procs N] [--seconds S]
 *                  [--socket PATH] [--hold K] [--seed N] [--daemon-pid PID] [--warm-all]
 *                  [--count N] [--tensors N] [--label TEXT]
 *
 * --generate writes DIR/adapter-NNNN.safetensors (N files, default 1000) with
 * td_save_safetensors: N tensors each (default 64) named like a PEFT adapter
 * (base_model.model.layers.K.self_attn.{q,v}_proj.lora_{A,B}.weight), 2-D, rank 16
 * (lora_A is 16 x F, lora_B is F x 16), F chosen so that the tensors add up to SIZE (default
 * 4M); even-numbered adapters are float16, odd ones float32. The contents are a deterministic
 * fill of small normal-looking weights. A file that is there already with the right tensor count
 * and tensor bytes (td_inspect: headers only) is kept.
 *
 * Otherwise the program forks --procs worker processes (default 8). Each first loads, untimed,
 * a slice of the adapters (worker i: adapters i, i + procs, i + 2 procs, ...; with --warm-all
 * every adapter), so that together they bring every file into the page cache and into the
 * daemon's cache, and then waits at a barrier. Once every worker is there, each loops for S
 * seconds (default 5): it picks an adapter at random (a PRNG of its own, from --seed and its
 * index), loads it, looks up 4 random tensors by name with td_dict_get and reads one random byte
 * of each, and frees the dict (td_dict_free). With --hold K it keeps the last K loads alive and
 * frees the oldest instead, as requests in flight would. A load is one of:
 *   embedded  td_load with TD_MODE_EMBEDDED: open, map and parse the file in this process;
 *   daemon    td_load with TD_MODE_DAEMON: a connection per load (connect, HELLO, LOAD with the
 *             descriptor, LOAD_OK, map); the lease ends when the dict is freed;
 *   client    td_client_load on one td_client per worker, kept for the whole run (freeing
 *             sends RELEASE on it).
 * Only the load call is timed; the latencies go to an anonymous shared mapping.
 *
 * Prints loads per second (loads completed / time from the start to the last completion), the
 * 50th and 99th percentile and maximum latency over every load of every worker, failures
 * (failed loads, and loads whose dict lacks a tensor), and CPU time per load: of the workers
 * (user + system over the timed loop, from getrusage; it covers the whole cycle, lookups and
 * frees included) and, with --daemon-pid, of the daemon (/proc/PID/stat over the same window).
 */
#include "tensord.h"

#include "bench_util.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PROCS  256
#define TOTAL_CAP  (16u << 20) /* latencies kept, over all workers */
#define RANK       16          /* LoRA rank: the short side of every tensor */
#define TOUCHES    4           /* tensors looked up per load */
#define NAME_BYTES 96

typedef enum bench_mode { MODE_EMBEDDED, MODE_DAEMON, MODE_CLIENT } bench_mode;
static const char *const mode_names[] = {"embedded", "daemon", "client"};

/* The run's settings, unpacked from the command line. */
typedef struct cfg {
    const char *dir, *label;
    unsigned count, tensors, procs, hold;
    uint64_t bytes, seed;
    double seconds;
    bench_mode mode;
    int warm_all;
    td_load_options opt;
    char **paths;              /* count adapter paths, owned */
    char (*names)[NAME_BYTES]; /* tensors tensor names, owned */
} cfg;

typedef struct shared {
    uint64_t start_ns, deadline_ns;
    uint64_t cpu_us[MAX_PROCS]; /* user + system time of the timed loop */
    uint64_t minflt[MAX_PROCS]; /* minor page faults of the timed loop */
    uint64_t count[MAX_PROCS];
    uint64_t failures[MAX_PROCS];
    uint64_t last_ns[MAX_PROCS];
    uint64_t warm_ns[MAX_PROCS]; /* the untimed warm-up */
    uint64_t sink[MAX_PROCS];    /* the bytes read, so that the reads are not optimised away */
    uint32_t lat_ns[];           /* MAX_PROCS slices of cap entries */
} shared;

/* Tensor k of every adapter: four per layer (q_proj and v_proj, lora_A and lora_B). */
static void tensor_name(char *out, unsigned k)
{
    snprintf(out, NAME_BYTES, "base_model.model.layers.%u.self_attn.%s.%s.weight", k / 4,
             (k / 2) % 2 ? "v_proj" : "q_proj", k % 2 ? "lora_B" : "lora_A");
}

static td_dtype adapter_dtype(unsigned i)
{
    return i % 2 ? TD_FLOAT32 : TD_FLOAT16;
}

/* The long side F of every tensor of adapter i: RANK x F elements each, tensors of them within
 * c->bytes. 0 when c->bytes is too small. */
static uint64_t adapter_features(const cfg *c, unsigned i)
{
    return c->bytes / c->tensors / td_dtype_size(adapter_dtype(i)) / RANK;
}

/* float32 -> float16 bits, rounding to nearest even; tiny values become zero or subnormals. */
static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, mant = x & 0x7fffffu;
    int exp = (int)((x >> 23) & 0xff) - 127 + 15;
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00u); /* the fill never gets here */
    if (exp <= 0) {
        if (exp < -10)
            return (uint16_t)sign;
        mant |= 0x800000u;
        unsigned shift = (unsigned)(14 - exp);
        uint32_t h = mant >> shift, rest = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rest > half || (rest == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (mant >> 13), rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1)))
        h++; /* may carry into the exponent, which is the right result */
    return (uint16_t)(sign | h);
}

/* 1 when path holds adapter i as --generate would write it (tensor count and bytes). */
static int adapter_ok(const cfg *c, unsigned i, const char *path)
{
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode))
        return 0;
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = TD_MODE_EMBEDDED;
    td_inspect_result *r;
    td_error err;
    if (td_inspect(path, &o, &r, &err))
        return 0;
    uint64_t data = 0, want = (uint64_t)c->tensors * RANK * adapter_features(c, i) *
                              td_dtype_size(adapter_dtype(i));
    int ok =
        td_inspect_ntensors(r) == c->tensors && td_inspect_file_size(r) == (uint64_t)st.st_size;
    for (size_t k = 0; ok && k < td_inspect_ntensors(r); k++) {
        ok = td_inspect_tensor_dtype(r, k) == adapter_dtype(i);
        data += td_inspect_tensor_nbytes(r, k);
    }
    td_inspect_free(r);
    return ok && data == want;
}

/* Writes every adapter that is not there yet. */
static void generate(const cfg *c)
{
    if (mkdir(c->dir, 0777) && errno != EEXIST)
        bu_die("mkdir %s: %s", c->dir, strerror(errno));
    for (unsigned i = 0; i < c->count; i++)
        if (!adapter_features(c, i))
            bu_die("--bytes %llu is too small for %u tensors of rank %d",
                   (unsigned long long)c->bytes, c->tensors, RANK);
    float *tmp = NULL;
    unsigned made = 0, kept = 0;
    uint64_t t0 = bu_now_ns(), written = 0;
    for (unsigned i = 0; i < c->count; i++) {
        if (adapter_ok(c, i, c->paths[i])) {
            kept++;
            continue;
        }
        td_dtype dt = adapter_dtype(i);
        int64_t f = (int64_t)adapter_features(c, i);
        size_t elems = (size_t)f * RANK;
        if (dt == TD_FLOAT16 && !tmp && !(tmp = malloc(elems * sizeof *tmp)))
            bu_die("out of memory");
        td_dict *d = td_dict_new();
        td_meta *m = td_meta_new();
        td_error err;
        if (!d || !m || td_meta_set_string(m, "format", "pt", 2, &err))
            bu_die("out of memory");
        for (unsigned k = 0; k < c->tensors; k++) {
            /* lora_A: rank x in_features; lora_B: out_features x rank. */
            int64_t shape[2] = {k % 2 ? f : RANK, k % 2 ? RANK : f};
            td_array *a;
            if (td_array_new(dt, 2, shape, NULL, &a, &err))
                bu_die("%s", err.message);
            uint64_t seed = (uint64_t)i * 65536 + k;
            if (dt == TD_FLOAT32) {
                bu_fill_bytes(td_array_data_mut(a), elems * 4, BU_FILL_WEIGHTS, seed);
            } else {
                bu_fill_bytes(tmp, elems * 4, BU_FILL_WEIGHTS, seed);
                uint16_t *h = td_array_data_mut(a);
                for (size_t e = 0; e < elems; e++)
                    h[e] = f32_to_f16(tmp[e]);
            }
            if (td_dict_set(d, c->names[k], a, &err))
                bu_die("%s", err.message);
            td_array_release(a); /* the dict holds its own reference */
            written += elems * td_dtype_size(dt);
        }
        if (td_save_safetensors(c->paths[i], d, m, &err))
            bu_die("%s", err.message);
        td_dict_free(d);
        td_meta_free(m);
        made++;
    }
    free(tmp);
    double s = (double)(bu_now_ns() - t0) / 1e9;
    printf("bench_adapters: %u adapters in %s: %u written (%.0f MiB in %.1f s), %u kept\n",
           c->count, c->dir, made, (double)written / 1048576.0, s, kept);
    printf("RESULT bench=adapters_generate dir=%s count=%u tensors=%u bytes=%llu written=%u "
           "kept=%u seconds=%.3f status=ok\n",
           c->dir, c->count, c->tensors, (unsigned long long)c->bytes, made, kept, s);
}

static int load(const cfg *c, td_client *cl, unsigned i, td_dict **d, td_error *err)
{
    return cl ? td_client_load(cl, c->paths[i], &c->opt, d, NULL, err)
              : td_load(c->paths[i], &c->opt, d, NULL, err);
}

/* Looks up TOUCHES random tensors of d by name and reads a random byte of each into *sink.
 * 0, or -1 (with a message) when one is missing. */
static int touch(const cfg *c, const td_dict *d, unsigned i, uint64_t *rng, uint64_t *sink)
{
    for (int t = 0; t < TOUCHES; t++) {
        unsigned k = (unsigned)(bu_rand(rng) % c->tensors);
        const td_array *a = td_dict_get(d, c->names[k]);
        if (!a) {
            fprintf(stderr, "bench_adapters: %s: no tensor '%s'\n", c->paths[i], c->names[k]);
            return -1;
        }
        uint64_t n = td_array_nbytes(a);
        if (n)
            *sink += ((const volatile uint8_t *)td_array_data(a))[bu_rand(rng) % n];
    }
    return 0;
}

static uint64_t rusage_us(const struct rusage *a, const struct rusage *b)
{
    return (uint64_t)((b->ru_utime.tv_sec - a->ru_utime.tv_sec) * 1000000 +
                      (b->ru_utime.tv_usec - a->ru_utime.tv_usec) +
                      (b->ru_stime.tv_sec - a->ru_stime.tv_sec) * 1000000 +
                      (b->ru_stime.tv_usec - a->ru_stime.tv_usec));
}

/* Worker idx: warm-up, barrier, timed loop. Never returns. */
static void worker(const cfg *c, shared *sh, size_t cap, unsigned idx, int ready, int go)
{
    td_dict *d;
    td_error err = {0};
    td_client *cl = NULL;
    if (c->mode == MODE_CLIENT && td_client_connect(c->opt.socket_path, &cl, &err)) {
        fprintf(stderr, "bench_adapters: worker %u: %s\n", idx, err.message);
        _exit(1);
    }
    uint64_t rng = (c->seed + 1) * 0x9E3779B97F4A7C15ull + idx * 0xBF58476D1CE4E5B9ull + 1;
    uint64_t sink = 0, w0 = bu_now_ns();
    for (unsigned i = c->warm_all ? 0 : idx; i < c->count; i += c->warm_all ? 1 : c->procs) {
        if (load(c, cl, i, &d, &err)) {
            fprintf(stderr, "bench_adapters: worker %u: warm-up: %s\n", idx, err.message);
            _exit(1);
        }
        if (touch(c, d, i, &rng, &sink))
            _exit(1);
        td_dict_free(d);
    }
    sh->warm_ns[idx] = bu_now_ns() - w0;
    td_dict **held = c->hold ? calloc(c->hold, sizeof *held) : NULL;
    if (c->hold && !held)
        _exit(4);
    char ch = 'y';
    if (write(ready, &ch, 1) != 1)
        _exit(3);
    while (read(go, &ch, 1) < 0 && errno == EINTR)
        ;
    uint32_t *lat = sh->lat_ns + (size_t)idx * cap;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t n = 0, fails = 0, slot = 0, now = bu_now_ns(), deadline = sh->deadline_ns;
    while (now < deadline) {
        unsigned i = (unsigned)(bu_rand(&rng) % c->count);
        uint64_t t0 = now;
        int rc = load(c, cl, i, &d, &err);
        now = bu_now_ns();
        if (rc) {
            if (++fails < 5)
                fprintf(stderr, "bench_adapters: worker %u: %s\n", idx, err.message);
            continue;
        }
        uint64_t dt = now - t0;
        if (touch(c, d, i, &rng, &sink)) {
            fails++;
            td_dict_free(d);
            now = bu_now_ns();
            continue;
        }
        if (c->hold) {
            td_dict_free(held[slot]); /* the oldest of the last K loads; NULL at first */
            held[slot] = d;
            slot = (slot + 1) % c->hold;
        } else {
            td_dict_free(d);
        }
        if (n < cap)
            lat[n] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
        n++;
        sh->last_ns[idx] = now;
        now = bu_now_ns();
    }
    getrusage(RUSAGE_SELF, &ru1);
    sh->cpu_us[idx] = rusage_us(&ru0, &ru1);
    sh->minflt[idx] = (uint64_t)(ru1.ru_minflt - ru0.ru_minflt);
    sh->count[idx] = n;
    sh->failures[idx] = fails;
    sh->sink[idx] = sink;
    for (unsigned k = 0; k < c->hold; k++)
        td_dict_free(held[k]);
    free(held);
    td_client_close(cl);
    _exit(0);
}

/* Forks the workers, runs them and prints the figures. */
static void run(const cfg *c, int daemon_pid)
{
    for (unsigned i = 0; i < c->count; i++)
        if (access(c->paths[i], R_OK))
            bu_die("%s: %s (make the adapters with --generate first)", c->paths[i],
                   strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    size_t cap = TOTAL_CAP / c->procs;
    size_t size = sizeof(shared) + (size_t)c->procs * cap * sizeof(uint32_t);
    shared *sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        bu_die("mmap: %s", strerror(errno));
    sh->deadline_ns = UINT64_MAX;
    int ready[2], go[2];
    if (pipe(ready) || pipe(go))
        bu_die("pipe: %s", strerror(errno));
    fflush(stdout);
    pid_t pids[MAX_PROCS];
    uint64_t w0 = bu_now_ns();
    for (unsigned i = 0; i < c->procs; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            bu_die("fork: %s", strerror(errno));
        if (pids[i] == 0) {
            close(ready[0]);
            close(go[1]);
            worker(c, sh, cap, i, ready[1], go[0]);
        }
    }
    close(ready[1]);
    close(go[0]);
    for (unsigned i = 0; i < c->procs; i++) {
        char ch;
        ssize_t k;
        while ((k = read(ready[0], &ch, 1)) < 0 && errno == EINTR)
            ;
        if (k != 1)
            bu_die("a worker failed its warm-up");
    }
    double warm_s = (double)(bu_now_ns() - w0) / 1e9;
    long long dcpu0 = daemon_pid > 0 ? bu_proc_cpu_us(daemon_pid) : -1;
    sh->start_ns = bu_now_ns();
    sh->deadline_ns = sh->start_ns + (uint64_t)(c->seconds * 1e9);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    close(go[1]); /* everyone goes */
    int bad = 0;
    for (unsigned i = 0; i < c->procs; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
        bad += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    long long dcpu1 = daemon_pid > 0 ? bu_proc_cpu_us(daemon_pid) : -1;
    if (bad)
        bu_die("%d workers failed", bad);
    uint64_t total = 0, fails = 0, end = sh->start_ns, cpu = 0, minflt = 0;
    for (unsigned i = 0; i < c->procs; i++) {
        total += sh->count[i];
        cpu += sh->cpu_us[i];
        minflt += sh->minflt[i];
        fails += sh->failures[i];
        if (sh->last_ns[i] > end)
            end = sh->last_ns[i];
    }
    size_t kept = 0;
    double *v = malloc((total ? total : 1) * sizeof *v);
    if (!v)
        bu_die("out of memory");
    for (unsigned i = 0; i < c->procs; i++) {
        uint64_t n = sh->count[i] < cap ? sh->count[i] : cap;
        for (uint64_t k = 0; k < n; k++)
            v[kept++] = (double)sh->lat_ns[(size_t)i * cap + k] / 1e3;
    }
    double window = (double)(end - sh->start_ns) / 1e9;
    double p50 = bu_quantile(v, kept, 0.5), p99 = bu_quantile(v, kept, 0.99);
    double mx = kept ? v[kept - 1] : 0;
    double dcpu = total && dcpu0 >= 0 && dcpu1 >= 0 ? (double)(dcpu1 - dcpu0) / (double)total : -1;
    printf("bench_adapters: %s, %u workers, %u adapters, hold %u: warm-up (every adapter loaded "
           "once, untimed%s) %.2f s; %llu loads in %.2f s\n",
           mode_names[c->mode], c->procs, c->count, c->hold,
           c->warm_all ? ", by every worker" : ", by one worker each", warm_s,
           (unsigned long long)total, window);
    printf("RESULT bench=adapters label=%s mode=%s procs=%u count=%u tensors=%u hold=%u "
           "loads=%llu failures=%llu seconds=%.3f loads_per_s=%.1f p50_us=%.1f p99_us=%.1f "
           "max_us=%.1f client_cpu_us_per_load=%.1f daemon_cpu_us_per_load=%.1f "
           "minflt_per_load=%.1f warmup_s=%.3f status=ok\n",
           c->label, mode_names[c->mode], c->procs, c->count, c->tensors, c->hold,
           (unsigned long long)total, (unsigned long long)fails, window,
           window > 0 ? (double)total / window : 0, p50, p99, mx,
           total ? (double)cpu / (double)total : 0, dcpu,
           total ? (double)minflt / (double)total : 0, warm_s);
    free(v);
    munmap(sh, size);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_adapters --dir DIR --generate [--count N] [--tensors N] [--bytes SIZE]\n"
            "       bench_adapters --dir DIR --mode embedded|daemon|client [--procs N] "
            "[--seconds S]\n"
            "                      [--socket PATH] [--hold K] [--seed N] [--daemon-pid PID] "
            "[--warm-all]\n"
            "                      [--count N] [--tensors N] [--label TEXT]\n");
    exit(2);
}

/* A whole number in [lo, hi], or usage(). */
static unsigned parse_uint(const char *s, unsigned lo, unsigned hi)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "bench_adapters: '%s' is not a number from %u to %u\n", s, lo, hi);
        usage();
    }
    return (unsigned)v;
}

int main(int argc, char **argv)
{
    cfg c = {.label = "-",
             .count = 1000,
             .tensors = 64,
             .procs = 8,
             .bytes = 4u << 20,
             .seed = 1,
             .seconds = 5,
             .mode = MODE_EMBEDDED,
             .opt = TD_LOAD_OPTIONS_INIT};
    int gen = 0, have_mode = 0, daemon_pid = 0;
    static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
                                         {"generate", no_argument, 0, 'g'},
                                         {"count", required_argument, 0, 'n'},
                                         {"tensors", required_argument, 0, 't'},
                                         {"bytes", required_argument, 0, 'b'},
                                         {"procs", required_argument, 0, 'P'},
                                         {"seconds", required_argument, 0, 'S'},
                                         {"mode", required_argument, 0, 'm'},
                                         {"socket", required_argument, 0, 's'},
                                         {"hold", required_argument, 0, 'H'},
                                         {"seed", required_argument, 0, 'r'},
                                         {"daemon-pid", required_argument, 0, 'p'},
                                         {"warm-all", no_argument, 0, 'w'},
                                         {"label", required_argument, 0, 'l'},
                                         {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'd':
            c.dir = optarg;
            break;
        case 'g':
            gen = 1;
            break;
        case 'n':
            c.count = parse_uint(optarg, 1, 1000000);
            break;
        case 't':
            c.tensors = parse_uint(optarg, 1, 100000);
            break;
        case 'b':
            if (bu_parse_size(optarg, &c.bytes) || !c.bytes)
                usage();
            break;
        case 'P':
            c.procs = parse_uint(optarg, 1, MAX_PROCS);
            break;
        case 'S':
            c.seconds = atof(optarg);
            break;
        case 'm':
            have_mode = 1;
            if (!strcmp(optarg, "embedded"))
                c.mode = MODE_EMBEDDED;
            else if (!strcmp(optarg, "daemon"))
                c.mode = MODE_DAEMON;
            else if (!strcmp(optarg, "client"))
                c.mode = MODE_CLIENT;
            else
                usage();
            break;
        case 's':
            c.opt.socket_path = optarg;
            break;
        case 'H':
            c.hold = parse_uint(optarg, 0, 4096);
            break;
        case 'r':
            c.seed = parse_uint(optarg, 0, UINT32_MAX);
            break;
        case 'p':
            daemon_pid = (int)parse_uint(optarg, 1, INT32_MAX);
            break;
        case 'w':
            c.warm_all = 1;
            break;
        case 'l':
            c.label = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc || !c.dir || gen == have_mode || c.seconds <= 0)
        usage();
    c.opt.mode = c.mode == MODE_EMBEDDED ? TD_MODE_EMBEDDED : TD_MODE_DAEMON;

    c.paths = calloc(c.count, sizeof *c.paths);
    c.names = calloc(c.tensors, sizeof *c.names);
    if (!c.paths || !c.names)
        bu_die("out of memory");
    for (unsigned i = 0; i < c.count; i++) {
        size_t len = strlen(c.dir) + 40;
        if (!(c.paths[i] = malloc(len)))
            bu_die("out of memory");
        snprintf(c.paths[i], len, "%s/adapter-%04u.safetensors", c.dir, i);
    }
    for (unsigned k = 0; k < c.tensors; k++)
        tensor_name(c.names[k], k);

    if (gen)
        generate(&c);
    else
        run(&c, daemon_pid);

    for (unsigned i = 0; i < c.count; i++)
        free(c.paths[i]);
    free(c.paths);
    free(c.names);
    return 0;
}
