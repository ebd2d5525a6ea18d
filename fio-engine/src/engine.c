/*
 * fio external engine glue: fio's structs (thread_data, io_u, fio_file, ioengine_ops,
 * fio_option) are only touched here, compiled against fio's own headers. All cluster work
 * goes through the client library's C ABI, reached through a table of function pointers
 * that the Rust side hands over when fio asks for the engine (get_ioengine), so this
 * object has no link-time references into Rust.
 *
 * Completions arrive on the client library's threads; they are queued under a mutex and
 * handed to fio by getevents/event.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/uio.h>

#include "fio.h"
#include "optgroup.h"

typedef void VitastorReadHandler(void *opaque, long retval, uint64_t version);
typedef void VitastorIOHandler(void *opaque, long retval);

/* The client library's C ABI (client/include/vitastor_c.h), as function pointers. */
struct vitastor_api {
    void *(*create)(const char *etcd_address, const char *etcd_prefix);
    void (*destroy)(void *client);
    void *(*open_image)(void *client, const char *name);
    void *(*open_inode)(void *client, uint64_t pool, uint64_t inode);
    void (*close_watch)(void *client, void *handle);
    uint64_t (*inode_get_size)(void *handle);
    uint64_t (*inode_get_num)(void *handle);
    void (*read)(void *client, uint64_t inode, uint64_t offset, uint64_t len, struct iovec *iov, int iovcnt, VitastorReadHandler cb, void *opaque);
    void (*write)(void *client, uint64_t inode, uint64_t offset, uint64_t len, uint64_t check_version, struct iovec *iov, int iovcnt, VitastorIOHandler cb, void *opaque);
    void (*sync)(void *client, VitastorIOHandler cb, void *opaque);
};

static struct vitastor_api api;

struct vitastor_options {
    void *pad; /* fio keeps the first pointer of engine options for itself */
    char *etcd;
    char *etcd_prefix;
    char *image;
    unsigned long long pool;
    unsigned long long inode;
    unsigned long long size;
};

struct vitastor_data {
    void *client;
    void *handle;
    uint64_t inode;
    uint64_t size;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct io_u **done;     /* completed, not yet reaped */
    unsigned done_count;
    struct io_u **reaped;   /* returned by getevents, handed out by event() */
    unsigned reaped_count;
    unsigned capacity;
};

struct request {
    struct vitastor_data *data;
    struct io_u *io_u;
    struct iovec iov;
};

static struct fio_option options[] = {
    {
        .name = "etcd",
        .lname = "etcd address",
        .type = FIO_OPT_STR_STORE,
        .off1 = offsetof(struct vitastor_options, etcd),
        .help = "etcd endpoints, host:port[/v3], comma-separated",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "etcd_prefix",
        .lname = "etcd prefix",
        .type = FIO_OPT_STR_STORE,
        .off1 = offsetof(struct vitastor_options, etcd_prefix),
        .help = "etcd key prefix (default /vitastor)",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "image",
        .lname = "image name",
        .type = FIO_OPT_STR_STORE,
        .off1 = offsetof(struct vitastor_options, image),
        .help = "image to test",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "pool",
        .lname = "pool id",
        .type = FIO_OPT_ULL,
        .off1 = offsetof(struct vitastor_options, pool),
        .help = "pool id (with -inode, instead of -image)",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "inode",
        .lname = "inode number",
        .type = FIO_OPT_ULL,
        .off1 = offsetof(struct vitastor_options, inode),
        .help = "inode number inside the pool (with -pool)",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "size_override",
        .lname = "image size",
        .type = FIO_OPT_ULL,
        .off1 = offsetof(struct vitastor_options, size),
        .help = "bytes to test (default: the image size)",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = NULL,
    },
};

/* Connects and opens the image or inode: 0, or 1 after logging why not. */
static int vitastor_connect(struct vitastor_options *o, void **client, void **handle)
{
    *client = api.create(o->etcd, o->etcd_prefix);
    if (!*client)
        return 1;
    *handle = o->image ? api.open_image(*client, o->image) : api.open_inode(*client, o->pool, o->inode);
    if (!*handle) {
        if (o->image)
            log_err("vitastor: image %s does not exist\n", o->image);
        else
            log_err("vitastor: pool %llu inode %llu does not exist\n", o->pool, o->inode);
        api.destroy(*client);
        return 1;
    }
    return 0;
}

/*
 * setup runs in fio's main process before it forks the jobs: it only learns the size
 * (the client's threads would not survive the fork); init, in the job, connects for real.
 */
static int vitastor_setup(struct thread_data *td)
{
    struct vitastor_options *o = td->eo;
    void *client, *handle;
    if (!api.create) {
        log_err("vitastor: the engine was not initialised (get_ioengine was not called)\n");
        return 1;
    }
    if (!o->etcd) {
        log_err("vitastor: -etcd=host:port is required\n");
        return 1;
    }
    if (!o->image && !(o->pool && o->inode)) {
        log_err("vitastor: give -image=NAME or -pool=N -inode=N\n");
        return 1;
    }
    if (vitastor_connect(o, &client, &handle))
        return 1;
    uint64_t size = o->size ? o->size : api.inode_get_size(handle);
    api.close_watch(client, handle);
    api.destroy(client);
    if (!td->files_index) {
        add_file(td, o->image ? o->image : "vitastor", 0, 0);
        td->o.nr_files = td->o.nr_files ? : 1;
        td->o.open_files++;
    }
    for (unsigned i = 0; i < td->files_index; i++) {
        struct fio_file *f = td->files[i];
        f->real_file_size = size;
        fio_file_set_size_known(f);
    }
    return 0;
}

static int vitastor_init(struct thread_data *td)
{
    struct vitastor_options *o = td->eo;
    struct vitastor_data *data = calloc(1, sizeof(*data));
    pthread_mutex_init(&data->lock, NULL);
    pthread_cond_init(&data->cond, NULL);
    if (vitastor_connect(o, &data->client, &data->handle)) {
        free(data);
        return 1;
    }
    data->inode = api.inode_get_num(data->handle);
    data->size = api.inode_get_size(data->handle);
    data->capacity = td->o.iodepth + 1;
    data->done = calloc(data->capacity, sizeof(struct io_u *));
    data->reaped = calloc(data->capacity, sizeof(struct io_u *));
    td->io_ops_data = data;
    return 0;
}

static void vitastor_cleanup(struct thread_data *td)
{
    struct vitastor_data *data = td->io_ops_data;
    if (!data)
        return;
    api.close_watch(data->client, data->handle);
    api.destroy(data->client);
    free(data->done);
    free(data->reaped);
    free(data);
    td->io_ops_data = NULL;
}

static void complete(void *opaque, long retval)
{
    struct request *request = opaque;
    struct vitastor_data *data = request->data;
    struct io_u *io_u = request->io_u;
    if (retval < 0) {
        io_u->error = (int)-retval;
    } else if (io_u->ddir != DDIR_SYNC && (unsigned long long)retval != io_u->xfer_buflen) {
        io_u->error = EIO;
    } else {
        io_u->error = 0;
    }
    free(request);
    pthread_mutex_lock(&data->lock);
    data->done[data->done_count++] = io_u;
    pthread_cond_signal(&data->cond);
    pthread_mutex_unlock(&data->lock);
}

static void read_complete(void *opaque, long retval, uint64_t version)
{
    (void)version;
    complete(opaque, retval);
}

static enum fio_q_status vitastor_queue(struct thread_data *td, struct io_u *io_u)
{
    struct vitastor_data *data = td->io_ops_data;
    struct request *request = calloc(1, sizeof(*request));
    request->data = data;
    request->io_u = io_u;
    request->iov.iov_base = io_u->xfer_buf;
    request->iov.iov_len = io_u->xfer_buflen;
    io_u->error = 0;
    switch (io_u->ddir) {
    case DDIR_READ:
        api.read(data->client, data->inode, io_u->offset, io_u->xfer_buflen, &request->iov, 1, read_complete, request);
        break;
    case DDIR_WRITE:
        api.write(data->client, data->inode, io_u->offset, io_u->xfer_buflen, 0, &request->iov, 1, complete, request);
        break;
    case DDIR_SYNC:
    case DDIR_DATASYNC:
        api.sync(data->client, complete, request);
        break;
    default:
        free(request);
        io_u->error = EINVAL;
        return FIO_Q_COMPLETED;
    }
    return FIO_Q_QUEUED;
}

static int vitastor_getevents(struct thread_data *td, unsigned int min, unsigned int max, const struct timespec *t)
{
    struct vitastor_data *data = td->io_ops_data;
    struct timespec deadline;
    if (t) {
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += t->tv_sec;
        deadline.tv_nsec += t->tv_nsec;
        if (deadline.tv_nsec >= 1000000000) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000;
        }
    }
    pthread_mutex_lock(&data->lock);
    while (data->done_count < min) {
        if (t) {
            if (pthread_cond_timedwait(&data->cond, &data->lock, &deadline) == ETIMEDOUT)
                break;
        } else {
            pthread_cond_wait(&data->cond, &data->lock);
        }
    }
    unsigned n = data->done_count < max ? data->done_count : max;
    memcpy(data->reaped, data->done, n * sizeof(struct io_u *));
    memmove(data->done, data->done + n, (data->done_count - n) * sizeof(struct io_u *));
    data->done_count -= n;
    data->reaped_count = n;
    pthread_mutex_unlock(&data->lock);
    return (int)n;
}

static struct io_u *vitastor_event(struct thread_data *td, int event)
{
    struct vitastor_data *data = td->io_ops_data;
    return data->reaped[event];
}

static int vitastor_open_file(struct thread_data *td, struct fio_file *f)
{
    return 0;
}

static int vitastor_invalidate(struct thread_data *td, struct fio_file *f)
{
    return 0;
}

static struct ioengine_ops ioengine = {
    .name = "vitastor",
    .version = FIO_IOOPS_VERSION,
    .flags = FIO_MEMALIGN | FIO_DISKLESSIO | FIO_NOEXTEND,
    .setup = vitastor_setup,
    .init = vitastor_init,
    .queue = vitastor_queue,
    .getevents = vitastor_getevents,
    .event = vitastor_event,
    .cleanup = vitastor_cleanup,
    .open_file = vitastor_open_file,
    .invalidate = vitastor_invalidate,
    .options = options,
    .option_struct_size = sizeof(struct vitastor_options),
};

/* Called from the Rust side of get_ioengine with the client library's entry points. */
struct ioengine_ops *vitastor_fio_engine(const struct vitastor_api *table)
{
    api = *table;
    return &ioengine;
}
