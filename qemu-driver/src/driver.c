/*
 * block-vitastor: the only code that touches QEMU's structs. It is compiled by build.rs
 * against the headers of the QEMU that runs it (Debian's qemu source package, see
 * scripts/fetch-qemu-source.sh) and talks to the cluster through the small C interface
 * that src/lib.rs exports (vitastor_qemu_*).
 *
 * Filenames (Vitastor's syntax):
 *   vitastor:etcd_host=HOST\:PORT:image=NAME
 *   vitastor:etcd_host=HOST:PORT:pool=P:inode=N[:size=S]      (an unescaped ':' inside
 *                                                             a value is kept)
 *   vitastor:...:etcd_prefix=/vitastor
 *   vitastor://?etcd_host=HOST:PORT&image=NAME                (URI form, %XX escapes)
 *   json:{"driver":"vitastor","etcd_host":"HOST:PORT","image":"NAME"}
 *
 * Requests run in coroutines. The client library completes them on its own threads; the
 * completion callback only stores the result and schedules a one-shot bottom half in the
 * AioContext the request was issued from, and that bottom half wakes the request's
 * coroutine (so the coroutine only ever resumes in its own AioContext).
 *
 * Loading: QEMU is built with a fixed list of protocol names it loads modules for, so this
 * library is preloaded (LD_PRELOAD). Its constructor registers the driver with QEMU's
 * MODULE_INIT_BLOCK list, exactly like a driver linked into QEMU.
 */
#include "qemu/osdep.h"
#include <dlfcn.h>
#include "block/block_int.h"
#include "block/block-io.h"
#include "qemu/cutils.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qobject/qdict.h"
#include "block/aio.h"
#include "qemu/coroutine.h"

/* ---- the Rust side (src/lib.rs) ---- */

typedef struct VitastorImage VitastorImage;
typedef void VitastorDone(void *opaque, long retval);

VitastorImage *vitastor_qemu_open(const char *etcd_host, const char *etcd_prefix,
    const char *image, uint64_t pool, uint64_t inode, char *error, size_t error_len);
void vitastor_qemu_close(VitastorImage *image);
uint64_t vitastor_qemu_size(VitastorImage *image);
int vitastor_qemu_readonly(VitastorImage *image);
uint64_t vitastor_qemu_object_size(VitastorImage *image);
void vitastor_qemu_read(VitastorImage *image, uint64_t offset, uint64_t len,
    const struct iovec *iov, int iovcnt, VitastorDone *done, void *opaque);
void vitastor_qemu_write(VitastorImage *image, uint64_t offset, uint64_t len,
    const struct iovec *iov, int iovcnt, int fua, VitastorDone *done, void *opaque);
void vitastor_qemu_sync(VitastorImage *image, VitastorDone *done, void *opaque);
void vitastor_qemu_discard(VitastorImage *image, uint64_t offset, uint64_t len,
    VitastorDone *done, void *opaque);
void vitastor_qemu_write_zeroes(VitastorImage *image, uint64_t offset, uint64_t len,
    VitastorDone *done, void *opaque);
void vitastor_qemu_resize(VitastorImage *image, uint64_t size, VitastorDone *done,
    void *opaque);

/* ---- options ---- */

#define VITASTOR_ALIGNMENT 4096

static const char *const vitastor_keys[] = {
    "etcd_host", "etcd_prefix", "image", "pool", "inode", "size", NULL,
};

static QemuOptsList vitastor_runtime_opts = {
    .name = "vitastor",
    .head = QTAILQ_HEAD_INITIALIZER(vitastor_runtime_opts.head),
    .desc = {
        { .name = "etcd_host", .type = QEMU_OPT_STRING,
          .help = "etcd address(es), host:port[,host:port...]" },
        { .name = "etcd_prefix", .type = QEMU_OPT_STRING,
          .help = "etcd key prefix (default /vitastor)" },
        { .name = "image", .type = QEMU_OPT_STRING, .help = "image name" },
        { .name = "pool", .type = QEMU_OPT_NUMBER, .help = "pool number" },
        { .name = "inode", .type = QEMU_OPT_NUMBER, .help = "inode number in the pool" },
        { .name = "size", .type = QEMU_OPT_SIZE,
          .help = "size to report (with pool/inode; default: the inode's size)" },
        { /* end of list */ }
    },
};

typedef struct BDRVVitastorState {
    VitastorImage *image;
    char *etcd_host;
    char *etcd_prefix;
    char *name;
    uint64_t pool;
    uint64_t inode;
    uint64_t size_override;
} BDRVVitastorState;

/* g_free by a local name: taking g_free's address would bind it when the library loads. */
static void vitastor_free(gpointer pointer)
{
    g_free(pointer);
}

static bool vitastor_known_key(const char *key)
{
    for (int i = 0; vitastor_keys[i]; i++) {
        if (!strcmp(vitastor_keys[i], key)) {
            return true;
        }
    }
    return false;
}

static int vitastor_hex(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Decodes %XX (and '+' as a space) of one URI query component. */
static char *vitastor_uri_decode(const char *text, size_t len, Error **errp)
{
    char *out = g_malloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '%') {
            int hi = i + 2 < len ? vitastor_hex(text[i + 1]) : -1;
            int lo = i + 2 < len ? vitastor_hex(text[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                error_setg(errp, "vitastor: bad %%-escape in URI");
                g_free(out);
                return NULL;
            }
            out[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (text[i] == '+') {
            out[n++] = ' ';
        } else {
            out[n++] = text[i];
        }
    }
    out[n] = 0;
    return out;
}

static bool vitastor_put_option(QDict *options, const char *key, const char *value,
                                Error **errp)
{
    if (!vitastor_known_key(key)) {
        error_setg(errp, "vitastor: unknown option '%s' (known: etcd_host, etcd_prefix, "
                   "image, pool, inode, size)", key);
        return false;
    }
    if (qdict_haskey(options, key)) {
        error_setg(errp, "vitastor: option '%s' given twice", key);
        return false;
    }
    qdict_put_str(options, key, value);
    return true;
}

/* vitastor://?key=value&key=value */
static void vitastor_parse_uri(const char *query, QDict *options, Error **errp)
{
    while (*query) {
        const char *end = strchr(query, '&');
        size_t len = end ? (size_t)(end - query) : strlen(query);
        const char *eq = memchr(query, '=', len);
        if (len > 0) {
            if (!eq) {
                error_setg(errp, "vitastor: URI parameter without '=': %.*s", (int)len,
                           query);
                return;
            }
            g_autofree char *key = vitastor_uri_decode(query, eq - query, errp);
            if (!key) {
                return;
            }
            g_autofree char *value =
                vitastor_uri_decode(eq + 1, len - (eq + 1 - query), errp);
            if (!value || !vitastor_put_option(options, key, value, errp)) {
                return;
            }
        }
        query += len + (end ? 1 : 0);
    }
}

/*
 * vitastor:key=value:key=value. '\:' is a literal ':' (and '\\' a backslash). A segment
 * without '=' continues the previous value (so etcd_host=127.0.0.1:2379 works unescaped).
 */
static void vitastor_parse_filename(const char *filename, QDict *options, Error **errp)
{
    const char *rest;
    if (!strstart(filename, "vitastor:", &rest)) {
        error_setg(errp, "vitastor: filename must start with 'vitastor:'");
        return;
    }
    if (strstart(rest, "//", &rest)) {
        /* no host part: vitastor://?... or vitastor:///?... */
        const char *query = rest[0] == '/' ? rest + 1 : rest;
        if (query[0] != '?') {
            error_setg(errp, "vitastor: the URI form is vitastor://?etcd_host=HOST:PORT"
                       "&image=NAME");
            return;
        }
        vitastor_parse_uri(query + 1, options, errp);
        return;
    }
    g_autoptr(GPtrArray) segments = g_ptr_array_new_with_free_func(vitastor_free);
    GString *current = g_string_new(NULL);
    for (const char *p = rest;; p++) {
        if (*p == '\\' && (p[1] == ':' || p[1] == '\\')) {
            g_string_append_c(current, p[1]);
            p++;
        } else if (*p == ':' || *p == 0) {
            g_ptr_array_add(segments, g_string_free(current, false));
            if (*p == 0) {
                break;
            }
            current = g_string_new(NULL);
        } else {
            g_string_append_c(current, *p);
        }
    }
    g_autofree char *key = NULL;
    GString *value = NULL;
    for (guint i = 0; i <= segments->len; i++) {
        const char *segment = i < segments->len ? g_ptr_array_index(segments, i) : NULL;
        const char *eq = segment ? strchr(segment, '=') : NULL;
        if (segment && !eq && key) {
            /* an unescaped ':' inside a value */
            g_string_append_c(value, ':');
            g_string_append(value, segment);
            continue;
        }
        if (key) {
            bool ok = vitastor_put_option(options, key, value->str, errp);
            g_string_free(value, true);
            value = NULL;
            g_free(key);
            key = NULL;
            if (!ok) {
                return;
            }
        }
        if (!segment) {
            break;
        }
        if (!eq) {
            if (*segment) {
                error_setg(errp, "vitastor: '%s' is not key=value", segment);
                return;
            }
            continue;
        }
        key = g_strndup(segment, eq - segment);
        value = g_string_new(eq + 1);
    }
}

/* ---- open / close ---- */

static int vitastor_open(BlockDriverState *bs, QDict *options, int flags, Error **errp)
{
    BDRVVitastorState *s = bs->opaque;
    QemuOpts *opts = qemu_opts_create(&vitastor_runtime_opts, NULL, 0, errp);
    int ret = -EINVAL;
    if (!opts) {
        return ret;
    }
    if (!qemu_opts_absorb_qdict(opts, options, errp)) {
        goto out;
    }
    s->etcd_host = g_strdup(qemu_opt_get(opts, "etcd_host"));
    s->etcd_prefix = g_strdup(qemu_opt_get(opts, "etcd_prefix"));
    s->name = g_strdup(qemu_opt_get(opts, "image"));
    s->pool = qemu_opt_get_number(opts, "pool", 0);
    s->inode = qemu_opt_get_number(opts, "inode", 0);
    s->size_override = qemu_opt_get_size(opts, "size", 0);
    if (!s->etcd_host) {
        error_setg(errp, "vitastor: etcd_host is required");
        goto out;
    }
    if (!s->name && (!s->pool || !s->inode)) {
        error_setg(errp, "vitastor: give image=NAME or pool=P:inode=N");
        goto out;
    }
    char message[512] = "";
    s->image = vitastor_qemu_open(s->etcd_host, s->etcd_prefix, s->name, s->pool, s->inode,
                                  message, sizeof(message));
    if (!s->image) {
        error_setg(errp, "vitastor: %s", message);
        ret = -EIO;
        goto out;
    }
    if (vitastor_qemu_readonly(s->image)) {
        ret = bdrv_apply_auto_read_only(bs, "the vitastor image is read-only", errp);
        if (ret < 0) {
            goto out;
        }
    }
    bs->supported_write_flags = BDRV_REQ_FUA;
    bs->supported_zero_flags = BDRV_REQ_MAY_UNMAP;
    bs->supported_truncate_flags = BDRV_REQ_ZERO_WRITE;
    ret = 0;
out:
    qemu_opts_del(opts);
    if (ret < 0) {
        if (s->image) {
            vitastor_qemu_close(s->image);
            s->image = NULL;
        }
        g_free(s->etcd_host);
        g_free(s->etcd_prefix);
        g_free(s->name);
        s->etcd_host = s->etcd_prefix = s->name = NULL;
    }
    return ret;
}

static void vitastor_close(BlockDriverState *bs)
{
    BDRVVitastorState *s = bs->opaque;
    vitastor_qemu_close(s->image);
    s->image = NULL;
    g_free(s->etcd_host);
    g_free(s->etcd_prefix);
    g_free(s->name);
}

static void vitastor_refresh_limits(BlockDriverState *bs, Error **errp)
{
    BDRVVitastorState *s = bs->opaque;
    uint64_t object = vitastor_qemu_object_size(s->image);
    bs->bl.request_alignment = VITASTOR_ALIGNMENT;
    if (object > 0 && object <= INT32_MAX) {
        bs->bl.pdiscard_alignment = (uint32_t)object;
    }
}

/* Appends ":key=value" with ':' and '\' escaped. */
static void vitastor_filename_part(GString *out, const char *key, const char *value)
{
    g_string_append_printf(out, ":%s=", key);
    for (const char *p = value; *p; p++) {
        if (*p == ':' || *p == '\\') {
            g_string_append_c(out, '\\');
        }
        g_string_append_c(out, *p);
    }
}

static void vitastor_refresh_filename(BlockDriverState *bs)
{
    BDRVVitastorState *s = bs->opaque;
    g_autoptr(GString) name = g_string_new("vitastor");
    vitastor_filename_part(name, "etcd_host", s->etcd_host);
    if (s->etcd_prefix) {
        vitastor_filename_part(name, "etcd_prefix", s->etcd_prefix);
    }
    if (s->name) {
        vitastor_filename_part(name, "image", s->name);
    } else {
        g_string_append_printf(name, ":pool=%" PRIu64 ":inode=%" PRIu64, s->pool, s->inode);
        if (s->size_override) {
            g_string_append_printf(name, ":size=%" PRIu64, s->size_override);
        }
    }
    if (name->len < sizeof(bs->exact_filename)) {
        pstrcpy(bs->exact_filename, sizeof(bs->exact_filename), name->str);
    } else {
        bs->exact_filename[0] = 0;
    }
}

/* ---- requests ---- */

typedef struct VitastorTask {
    AioContext *ctx;
    Coroutine *co;
    long retval;
    bool done;
} VitastorTask;

static void vitastor_task_bh(void *opaque)
{
    VitastorTask *task = opaque;
    task->done = true;
    aio_co_wake(task->co);
}

/* Runs on one of the client library's threads. */
static void vitastor_task_done(void *opaque, long retval)
{
    VitastorTask *task = opaque;
    task->retval = retval;
    aio_bh_schedule_oneshot(task->ctx, vitastor_task_bh, task);
}

static void coroutine_fn vitastor_task_init(BlockDriverState *bs, VitastorTask *task)
{
    task->ctx = bdrv_get_aio_context(bs);
    task->co = qemu_coroutine_self();
    task->retval = 0;
    task->done = false;
}

static int coroutine_fn vitastor_task_wait(VitastorTask *task)
{
    while (!task->done) {
        qemu_coroutine_yield();
    }
    return task->retval < 0 ? (int)task->retval : 0;
}

static int coroutine_fn vitastor_co_preadv(BlockDriverState *bs, int64_t offset,
                                           int64_t bytes, QEMUIOVector *qiov,
                                           BdrvRequestFlags flags)
{
    BDRVVitastorState *s = bs->opaque;
    VitastorTask task;
    vitastor_task_init(bs, &task);
    vitastor_qemu_read(s->image, offset, bytes, qiov->iov, qiov->niov, vitastor_task_done,
                       &task);
    return vitastor_task_wait(&task);
}

static int coroutine_fn vitastor_co_pwritev(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, QEMUIOVector *qiov,
                                            BdrvRequestFlags flags)
{
    BDRVVitastorState *s = bs->opaque;
    VitastorTask task;
    vitastor_task_init(bs, &task);
    vitastor_qemu_write(s->image, offset, bytes, qiov->iov, qiov->niov,
                        (flags & BDRV_REQ_FUA) ? 1 : 0, vitastor_task_done, &task);
    return vitastor_task_wait(&task);
}

static int coroutine_fn vitastor_co_flush(BlockDriverState *bs)
{
    BDRVVitastorState *s = bs->opaque;
    VitastorTask task;
    vitastor_task_init(bs, &task);
    vitastor_qemu_sync(s->image, vitastor_task_done, &task);
    return vitastor_task_wait(&task);
}

static int coroutine_fn vitastor_co_pdiscard(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes)
{
    BDRVVitastorState *s = bs->opaque;
    VitastorTask task;
    vitastor_task_init(bs, &task);
    vitastor_qemu_discard(s->image, offset, bytes, vitastor_task_done, &task);
    return vitastor_task_wait(&task);
}

static int coroutine_fn vitastor_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                  int64_t bytes, BdrvRequestFlags flags)
{
    BDRVVitastorState *s = bs->opaque;
    VitastorTask task;
    vitastor_task_init(bs, &task);
    vitastor_qemu_write_zeroes(s->image, offset, bytes, vitastor_task_done, &task);
    return vitastor_task_wait(&task);
}

static int64_t coroutine_fn vitastor_co_getlength(BlockDriverState *bs)
{
    BDRVVitastorState *s = bs->opaque;
    return s->size_override ? (int64_t)s->size_override
                            : (int64_t)vitastor_qemu_size(s->image);
}

static int coroutine_fn vitastor_co_truncate(BlockDriverState *bs, int64_t offset,
                                             bool exact, PreallocMode prealloc,
                                             BdrvRequestFlags flags, Error **errp)
{
    BDRVVitastorState *s = bs->opaque;
    if (prealloc != PREALLOC_MODE_OFF) {
        error_setg(errp, "vitastor: preallocation is not supported");
        return -ENOTSUP;
    }
    if (s->size_override) {
        error_setg(errp, "vitastor: cannot resize an image opened with size=");
        return -ENOTSUP;
    }
    if (!exact && (uint64_t)offset <= vitastor_qemu_size(s->image)) {
        /* "at least this big" (image creation on an existing image) */
        return 0;
    }
    if (offset % VITASTOR_ALIGNMENT) {
        error_setg(errp, "vitastor: the size must be a multiple of %d",
                   VITASTOR_ALIGNMENT);
        return -EINVAL;
    }
    VitastorTask task;
    vitastor_task_init(bs, &task);
    vitastor_qemu_resize(s->image, offset, vitastor_task_done, &task);
    int ret = vitastor_task_wait(&task);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "vitastor: resize to %" PRId64 " failed", offset);
    }
    return ret;
}

static BlockDriver bdrv_vitastor = {
    .format_name = "vitastor",
    .protocol_name = "vitastor",
    .instance_size = sizeof(BDRVVitastorState),
    .bdrv_parse_filename = vitastor_parse_filename,
    .bdrv_open = vitastor_open,
    .bdrv_close = vitastor_close,
    .bdrv_refresh_limits = vitastor_refresh_limits,
    .bdrv_refresh_filename = vitastor_refresh_filename,
    .bdrv_co_preadv = vitastor_co_preadv,
    .bdrv_co_pwritev = vitastor_co_pwritev,
    .bdrv_co_flush_to_disk = vitastor_co_flush,
    .bdrv_co_pdiscard = vitastor_co_pdiscard,
    .bdrv_co_pwrite_zeroes = vitastor_co_pwrite_zeroes,
    .bdrv_co_getlength = vitastor_co_getlength,
    .bdrv_co_truncate = vitastor_co_truncate,
    .strong_runtime_opts = vitastor_keys,
};

static void vitastor_block_init(void)
{
    /*
     * An image is created with vitastor-cli; `qemu-img create`/`convert` without -n then
     * use an existing image, as with host devices (QEMU's generic "simple" creation: open,
     * grow if smaller). Looked up here, inside QEMU, so the library still loads elsewhere.
     */
    bdrv_vitastor.create_opts = dlsym(RTLD_DEFAULT, "bdrv_create_opts_simple");
    bdrv_vitastor.bdrv_co_create_opts = dlsym(RTLD_DEFAULT, "bdrv_co_create_opts_simple");
    if (!bdrv_vitastor.create_opts || !bdrv_vitastor.bdrv_co_create_opts) {
        bdrv_vitastor.create_opts = NULL;
        bdrv_vitastor.bdrv_co_create_opts = NULL;
    }
    bdrv_register(&bdrv_vitastor);
}

/*
 * What block_init() does for a driver linked into QEMU: queue the registration for
 * module_call_init(MODULE_INIT_BLOCK), which QEMU runs at start. Looked up first, so the
 * library does nothing in a process that is not QEMU (a preload inherited by a child).
 */
static void __attribute__((constructor)) vitastor_preload_init(void)
{
    void (*register_init)(void (*)(void), module_init_type) =
        dlsym(RTLD_DEFAULT, "register_module_init");
    if (register_init) {
        register_init(vitastor_block_init, MODULE_INIT_BLOCK);
    }
}
