/* Links libvitastor_client.so through include/vitastor_c.h: opens an image, writes 8 KiB,
 * reads it back, syncs, checks a read past the end fails. Prints "ok" on success. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vitastor_c.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int done;
static long result;

static void io_done(void *opaque, long retval) {
    (void)opaque;
    pthread_mutex_lock(&lock);
    result = retval;
    done = 1;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
}

static void read_done(void *opaque, long retval, uint64_t version) {
    (void)version;
    io_done(opaque, retval);
}

static long wait_done(void) {
    pthread_mutex_lock(&lock);
    while (!done)
        pthread_cond_wait(&cond, &lock);
    done = 0;
    pthread_mutex_unlock(&lock);
    return result;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s ETCD_ADDRESS IMAGE\n", argv[0]);
        return 2;
    }
    vitastor_c *client = vitastor_c_create(argv[1], NULL);
    if (!client)
        return 1;
    vitastor_c_watch_inode(client, "no-such-image", io_done, NULL);
    if (wait_done() != -ENOENT) {
        fprintf(stderr, "missing image: expected -ENOENT, got %ld\n", result);
        return 1;
    }
    vitastor_c_watch_inode(client, argv[2], io_done, NULL);
    long handle = wait_done();
    if (handle <= 0) {
        fprintf(stderr, "watch_inode failed: %ld\n", handle);
        return 1;
    }
    uint64_t inode = vitastor_c_inode_get_num((void *)handle);
    uint64_t size = vitastor_c_inode_get_size((void *)handle);
    char *out = malloc(8192), *in = calloc(1, 8192);
    for (int i = 0; i < 8192; i++)
        out[i] = (char)(i * 7 + 3);
    struct iovec wv[2] = {{out, 4096}, {out + 4096, 4096}};
    vitastor_c_write(client, inode, 65536, 8192, 0, wv, 2, io_done, NULL);
    if (wait_done() != 8192) {
        fprintf(stderr, "write: %ld\n", result);
        return 1;
    }
    vitastor_c_sync(client, io_done, NULL);
    if (wait_done() != 0) {
        fprintf(stderr, "sync: %ld\n", result);
        return 1;
    }
    struct iovec rv = {in, 8192};
    vitastor_c_read(client, inode, 65536, 8192, &rv, 1, read_done, NULL);
    if (wait_done() != 8192 || memcmp(in, out, 8192) != 0) {
        fprintf(stderr, "read back: %ld or data differs\n", result);
        return 1;
    }
    vitastor_c_read(client, inode, size, 4096, &rv, 1, read_done, NULL);
    if (wait_done() != -EINVAL) {
        fprintf(stderr, "read past the end: expected -EINVAL, got %ld\n", result);
        return 1;
    }
    vitastor_c_close_watch(client, (void *)handle);
    vitastor_c_destroy(client);
    free(out);
    free(in);
    printf("ok\n");
    return 0;
}
